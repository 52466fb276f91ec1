"""Recording ticks to Parquet, and reading a recording back.

    recorder = trader.start_recording("data/ticks")    # or TraderConfig(record="data/ticks")
    ...
    trader.stop_recording()                             # or trader.stop(): files closed and merged
    df = kit.research.backtest.read_recording("data/ticks", days="2026-01-05", tokens=["43650"])

**What is recorded: the ticks the engine handled, in the order it handled
them.** The recorder is a tick listener (``LiveTrader.add_tick_listener``):
it runs after ``LiveTrader._on_tick``, on the tick's thread. So a recording
is exactly the strategy's input, and a replay of it (lossless, in order)
reproduces the session's signals even when the live queue overflowed. Ticks
the queue dropped never reached the strategy; they are counted in
``trader.status["dropped"]`` (and in ``recorder.stats["dropped_while_recording"]``)
and are not in the recording. To record the whole market, run the recording
trader in callback mode or with a queue that does not overflow.

**The hot path only appends.** The listener is ``collections.deque.append``,
a C call of ~50 ns. A writer thread wakes every ``flush_interval`` seconds,
turns the new ticks into Arrow columns and files them by partition; every
``roll_interval`` seconds it writes each partition's rows as a complete
Parquet file (so a crash loses at most that much). ``stop()`` writes the
rest and merges the session's files into one file per partition.

Layout (hive-style, so ``pyarrow.dataset`` prunes by day and instrument)::

    ROOT/day=2026-01-05/exchange_type=2/token=43650/<session_id>.parquet

``day`` is the IST date of the exchange timestamp. Columns of a file (the
partition keys are in the path only): ``session_id`` (the recorder's start,
epoch ns) and ``rec_seq`` (the handling order within the session), the Tick
fields ``mode, seq, exchange_ts, ltp, recv_ns``, ``recv_epoch_ns`` (recv_ns
on the wall clock), and the Quote fields, null for ticks without a quote;
``best_buy`` / ``best_sell`` are flattened into ``best_buy_price``,
``best_buy_qty``, ``best_buy_orders`` (lists, best level first) and the same
for ``best_sell``.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import os
import threading
import time
from collections import deque
from datetime import date, datetime
from pathlib import Path
from time import perf_counter_ns
from urllib.parse import quote as _quote_path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kit.core.market import IST_ZONE
from kit.core.tick import LTP, Quote, Tick

log = logging.getLogger(__name__)

IST_OFFSET_MS = 19_800_000          # +05:30
SLICE_TICKS = 512                   # ticks the writer converts per hold of the GIL (~1 ms)
DAY_MS = 86_400_000

PARTITIONING = pa.schema([("day", pa.string()), ("exchange_type", pa.int16()), ("token", pa.string())])

TICK_FIELDS = [("mode", pa.int8()), ("seq", pa.int64()), ("exchange_ts", pa.int64()),
               ("ltp", pa.float64()), ("recv_ns", pa.int64())]
_LEVELS = [("best_buy_price", pa.list_(pa.float64())), ("best_buy_qty", pa.list_(pa.int64())),
           ("best_buy_orders", pa.list_(pa.int64())), ("best_sell_price", pa.list_(pa.float64())),
           ("best_sell_qty", pa.list_(pa.int64())), ("best_sell_orders", pa.list_(pa.int64()))]
QUOTE_SCALARS = [("last_traded_qty", pa.int64()), ("avg_price", pa.float64()), ("volume", pa.int64()),
                 ("total_buy_qty", pa.float64()), ("total_sell_qty", pa.float64()),
                 ("open", pa.float64()), ("high", pa.float64()), ("low", pa.float64()),
                 ("close", pa.float64()), ("last_traded_ts", pa.int64()), ("open_interest", pa.int64()),
                 ("oi_change_pct", pa.int64()), ("upper_circuit", pa.float64()),
                 ("lower_circuit", pa.float64()), ("high_52w", pa.float64()), ("low_52w", pa.float64())]
QUOTE_COLUMNS = [name for name, _ in QUOTE_SCALARS] + [name for name, _ in _LEVELS]

FILE_SCHEMA = pa.schema([("session_id", pa.int64()), ("rec_seq", pa.int64()), *TICK_FIELDS,
                         ("recv_epoch_ns", pa.int64()), *QUOTE_SCALARS, *_LEVELS])
# What the writer builds from ticks (the partition keys as columns), and what a read returns.
RECORD_SCHEMA = pa.schema([("token", pa.string()), ("exchange_type", pa.int16()), ("day", pa.string()),
                           *FILE_SCHEMA])
READ_SCHEMA = pa.schema([*FILE_SCHEMA, *PARTITIONING])

# The columns read_recording returns, in this order (quote columns only when some tick had a quote).
TICK_COLUMNS = ["token", "exchange_type", "mode", "seq", "exchange_ts", "ltp", "recv_ns"]
BOOKKEEPING_COLUMNS = ["recv_epoch_ns", "day", "session_id", "rec_seq"]

_tick_row = operator.attrgetter("token", "exchange_type", "mode", "seq", "exchange_ts", "ltp", "recv_ns", "quote")
_quote_row = operator.attrgetter(*(name for name, _ in QUOTE_SCALARS))
_NO_QUOTE = (None,) * len(QUOTE_SCALARS)


# =========================================================================== Tick -> Arrow
def ticks_to_table(ticks: list[Tick], *, epoch_offset_ns: int = 0, session_id: int = 0,
                   first_rec_seq: int = 0) -> pa.Table:
    """Ticks as one Arrow table with the recording's columns plus ``token``, ``exchange_type`` and ``day``.

    ``epoch_offset_ns`` turns ``recv_ns`` (``perf_counter_ns``) into wall-clock ``recv_epoch_ns``.
    """
    n = len(ticks)
    if n == 0:
        return RECORD_SCHEMA.empty_table()
    token, exchange_type, mode, seq, exchange_ts, ltp, recv_ns, quotes = zip(*map(_tick_row, ticks))
    recv = np.fromiter(recv_ns, dtype=np.int64, count=n)
    exch = np.fromiter(exchange_ts, dtype=np.int64, count=n)
    recv_epoch = recv + epoch_offset_ns
    # The day an exchange timestamp falls on in IST; the receive time when the packet has none.
    ms = np.where(exch > 0, exch, recv_epoch // 1_000_000)
    day_number = (ms + IST_OFFSET_MS) // DAY_MS
    days = np.datetime_as_string(day_number.astype("datetime64[D]"))
    cols = {
        "token": pa.array(token, pa.string()),
        "exchange_type": pa.array(exchange_type, pa.int16()),
        "day": pa.array(days, pa.string()),
        "session_id": pa.array(np.full(n, session_id, dtype=np.int64)),
        "rec_seq": pa.array(np.arange(first_rec_seq, first_rec_seq + n, dtype=np.int64)),
        "mode": pa.array(mode, pa.int8()),
        "seq": pa.array(seq, pa.int64()),
        "exchange_ts": pa.array(exch),
        "ltp": pa.array(ltp, pa.float64()),
        "recv_ns": pa.array(recv),
        "recv_epoch_ns": pa.array(recv_epoch),
    }
    if quotes.count(None) == n:
        for name, typ in QUOTE_SCALARS + _LEVELS:
            cols[name] = pa.nulls(n, typ)
    else:
        scalars = list(zip(*(_NO_QUOTE if q is None else _quote_row(q) for q in quotes)))
        for (name, typ), values in zip(QUOTE_SCALARS, scalars):
            cols[name] = pa.array(values, typ)
        for side in ("best_buy", "best_sell"):
            levels = [None if q is None else getattr(q, side) for q in quotes]
            for i, part in enumerate(("price", "qty", "orders")):
                name = f"{side}_{part}"
                cols[name] = pa.array([None if lv is None else [level[i] for level in lv] for lv in levels],
                                      dict(_LEVELS)[name])
    return pa.table(cols, schema=RECORD_SCHEMA)


# =========================================================================== Arrow -> Tick
def _pylist(column) -> list:
    """A column as a Python list, fast for the common types (shared str objects for dictionaries)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type) and column.null_count == 0:
        values = np.asarray(column.dictionary.to_pylist(), dtype=object)
        return values[column.indices.to_numpy(zero_copy_only=False)].tolist()
    if column.null_count == 0 and (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return column.to_numpy(zero_copy_only=False).tolist()
    return column.to_pylist()


def _quotes(batch: pa.RecordBatch) -> list | None:
    """One ``Quote`` (or None) per row, or None when no row of the batch has a quote."""
    names = batch.schema.names
    if "last_traded_qty" not in names or batch.column(names.index("last_traded_qty")).null_count == len(batch):
        return None
    present = _pylist(batch.column(names.index("last_traded_qty")))
    scalars = [_pylist(batch.column(names.index(name))) if name in names else [None] * len(batch)
               for name, _ in QUOTE_SCALARS]
    sides = []
    for side in ("best_buy", "best_sell"):
        parts = [_pylist(batch.column(names.index(f"{side}_{p}"))) if f"{side}_{p}" in names else [None] * len(batch)
                 for p in ("price", "qty", "orders")]
        sides.append([None if price is None else tuple(zip(price, qty, orders))
                      for price, qty, orders in zip(*parts)])
    out = []
    for i, has in enumerate(present):
        if has is None:
            out.append(None)
            continue
        (ltq, avg, vol, tbq, tsq, o, h, lo, c, ltt, oi, oic, uc, lc, h52, l52) = (col[i] for col in scalars)
        out.append(Quote(ltq, avg, vol, tbq, tsq, o, h, lo, c, ltt, oi, oic, sides[0][i], sides[1][i],
                         uc, lc, h52, l52))
    return out


# The fast path below sets these slots by hand; a new Tick field must be added there too.
_TICK_SLOTS = ("token", "exchange_type", "mode", "seq", "exchange_ts", "ltp", "recv_ns", "quote")
assert tuple(f.name for f in dataclasses.fields(Tick)) == _TICK_SLOTS, "update batch_ticks for Tick's fields"


def _stamped_ticks(token, exchange_type, mode, seq, exchange_ts, ltp, clock):
    # Tick.__new__ plus slot stores skips the dataclass __init__ frame: ~10% of a replay's cost per tick.
    new = Tick.__new__
    for tok, ex, md, sq, ts, price in zip(token, exchange_type, mode, seq, exchange_ts, ltp):
        tick = new(Tick)
        tick.token = tok
        tick.exchange_type = ex
        tick.mode = md
        tick.seq = sq
        tick.exchange_ts = ts
        tick.ltp = price
        tick.recv_ns = clock()
        tick.quote = None
        yield tick


def batch_ticks(batch: pa.RecordBatch, clock=None):
    """The rows of ``batch`` as Ticks, built lazily one by one (an iterator).

    ``clock``: e.g. ``time.perf_counter_ns``, called as each tick is built to
    stamp its ``recv_ns``: how a replay stamps at emission. None keeps the
    recorded ``recv_ns`` column.
    """
    names = batch.schema.names
    cols = [_pylist(batch.column(names.index(name))) for name in
            ("token", "exchange_type", "mode", "seq", "exchange_ts", "ltp")]
    quotes = _quotes(batch)
    if clock is not None:
        if quotes is None:
            return _stamped_ticks(*cols, clock)
        return map(Tick, *cols, iter(clock, None), quotes)
    recv_ns = _pylist(batch.column(names.index("recv_ns"))) if "recv_ns" in names else [0] * len(batch)
    if quotes is None:
        return map(Tick, *cols, recv_ns)
    return map(Tick, *cols, recv_ns, quotes)


def table_to_ticks(table: pa.Table) -> list[Tick]:
    """Every row as a Tick, keeping the recorded ``recv_ns`` (for inspection and tests)."""
    table = normalize_ticks(table)
    out: list[Tick] = []
    for batch in table.to_batches():
        out.extend(batch_ticks(batch))
    return out


# =========================================================================== tick tables in, validated
REQUIRED = ("token", "ltp")
DEFAULTS = {"exchange_type": 1, "mode": LTP, "exchange_ts": 0, "recv_ns": 0}


def normalize_ticks(data) -> pa.Table:
    """A DataFrame or Arrow table of ticks, checked and typed as a replay needs it.

    Required columns: ``token`` and ``ltp``. Optional: ``exchange_type`` (default 1),
    ``mode`` (default LTP), ``seq`` (default 1, 2, ... per token), ``exchange_ts``
    (epoch ms; default: from a DatetimeIndex, else 0), ``recv_ns``, ``recv_epoch_ns``
    and the Quote columns. Rows keep their order. Rows with no token or no ltp
    are dropped, counted in ``table.schema.metadata[b"dropped_rows"]`` and logged.
    """
    if isinstance(data, pa.Table):
        table = data
    else:
        import pandas as pd
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"ticks must be a pandas DataFrame or a pyarrow Table, not {type(data).__name__}")
        frame = data
        if "exchange_ts" not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
            stamps = frame.index if frame.index.tz is not None else frame.index.tz_localize(IST_ZONE)
            frame = frame.assign(exchange_ts=stamps.as_unit("ns").asi8 // 1_000_000)
        table = pa.Table.from_pandas(frame, preserve_index=False)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"a tick table needs the columns {list(REQUIRED)}; missing {missing} "
                         f"(it has {table.column_names})")
    n = table.num_rows
    valid = pc.and_(pc.is_valid(table["token"]), pc.is_valid(table["ltp"]))
    dropped = n - pc.sum(valid.cast(pa.int64())).as_py() if n else 0
    if dropped:
        log.warning("replay: %d of %d rows have no token or no ltp; skipped", dropped, n)
        table = table.filter(valid)
        n = table.num_rows

    def put(name, array):
        nonlocal table
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)

    token = table["token"]
    if pa.types.is_dictionary(token.type):
        token = token.cast(token.type.value_type)
    token = pc.cast(token, pa.string())
    if "seq" in table.column_names:
        put("seq", pc.cast(pc.fill_null(table["seq"], 0), pa.int64()))
    else:   # 1, 2, ... per token, in row order
        import pandas as pd
        names = token.to_pandas()
        put("seq", pa.array(names.groupby(names).cumcount().to_numpy(dtype=np.int64) + 1))
    # Dictionary-encoded, so building ticks shares one str object per token.
    put("token", pc.dictionary_encode(token))
    put("ltp", pc.cast(table["ltp"], pa.float64()))
    for name, default in DEFAULTS.items():
        typ = pa.int64() if name != "mode" else pa.int8()
        if name in table.column_names:
            put(name, pc.cast(pc.fill_null(table[name], default), typ))
        else:
            put(name, pa.array(np.full(n, default, dtype=typ.to_pandas_dtype())))
    meta = dict(table.schema.metadata or {})
    meta[b"dropped_rows"] = str(dropped).encode()
    return table.replace_schema_metadata(meta)


# =========================================================================== reading a recording
def _files(root: Path) -> list[str]:
    # Files in progress start with "." and are ignored, as pyarrow's discovery ignores them.
    return sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))


def _readable(files: list[str]) -> tuple[list[str], list[str]]:
    """Files whose Parquet footer reads, and the others (logged): one bad file must not hide the rest."""
    good, bad = [], []
    for f in files:
        try:
            pq.read_metadata(f)
            good.append(f)
        except Exception as exc:
            bad.append(f)
            log.warning("recording: skipped unreadable file %s (%s)", f, exc)
    return good, bad


def _with_skipped(table: pa.Table, skipped: list[str]) -> pa.Table:
    if not skipped:
        return table
    meta = dict(table.schema.metadata or {})
    meta[b"skipped_files"] = "\n".join(skipped).encode()
    return table.replace_schema_metadata(meta)


def _day_strings(days) -> list[str] | None:
    if days is None:
        return None
    if isinstance(days, (str, date, datetime)):
        days = [days]
    out = []
    for d in days:
        if isinstance(d, datetime):
            d = d.date()
        out.append(d.isoformat() if isinstance(d, date) else str(d))
    return out


def read_recording_table(path, *, days=None, tokens=None, exchange_type: int | None = None) -> pa.Table:
    """A recording as one Arrow table, in recorded order (session, then handling order).

    Rows present twice (a crash while merging files) are kept once.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no recording at {root}")
    if root.is_file() and "token" in pq.read_schema(root).names:
        table = pq.read_table(root)     # a tick table saved by hand, not by the recorder
    else:
        # A recorder file or any directory level of a recording: the hive segments
        # (day=, exchange_type=, token=) in the path name the partition columns.
        files = [str(root)] if root.is_file() else _files(root)
        files, skipped = _readable(files)
        if not files:
            return _with_skipped(READ_SCHEMA.empty_table(), skipped)
        dataset = ds.dataset(files, format="parquet", schema=READ_SCHEMA,
                             partitioning=ds.partitioning(PARTITIONING, flavor="hive"),
                             partition_base_dir=root.anchor)
        condition = None
        for expr in (ds.field("day").isin(_day_strings(days)) if days is not None else None,
                     ds.field("token").isin([str(t) for t in ([tokens] if isinstance(tokens, str) else tokens)])
                     if tokens is not None else None,
                     (ds.field("exchange_type") == exchange_type) if exchange_type is not None else None):
            if expr is not None:
                condition = expr if condition is None else condition & expr
        table = _with_skipped(dataset.to_table(filter=condition), skipped)
    return in_recorded_order(table, root)


def in_recorded_order(table: pa.Table, source="") -> pa.Table:
    """Rows of a recording read in any order, in recorded order (session, then handling order).

    Rows present twice (a crash while merging files) are kept once.
    """
    if "session_id" in table.column_names and "rec_seq" in table.column_names:
        table = table.sort_by([("session_id", "ascending"), ("rec_seq", "ascending")])
        if table.num_rows > 1:
            sid = table["session_id"].to_numpy()
            seq = table["rec_seq"].to_numpy()
            repeat = np.zeros(len(sid), dtype=bool)
            repeat[1:] = (sid[1:] == sid[:-1]) & (seq[1:] == seq[:-1])
            if repeat.any():
                log.info("recording %s: %d duplicated rows (an interrupted merge) kept once", source, repeat.sum())
                table = table.filter(pa.array(~repeat))
    return table


def read_recording(path, *, days=None, tokens=None, exchange_type: int | None = None):
    """A recording as a pandas DataFrame, one row per tick, in the order the engine handled them.

        df = read_recording("data/ticks")                              # everything
        df = read_recording("data/ticks", days="2026-01-05", tokens=["43650", "43651"])

    ``days``: an ISO date string, a ``date``, or a list of them; ``tokens``: a
    token or a list. Columns: ``TICK_COLUMNS``, then the Quote columns that
    any selected tick has (nullable integers are pandas ``Int64``), then
    ``BOOKKEEPING_COLUMNS``. The frame replays as it is:
    ``TraderConfig(feed="replay", replay=df)``. Files that cannot be read
    (corrupt, not Parquet) are skipped with a warning and listed in
    ``df.attrs["skipped_files"]``.
    """
    table = read_recording_table(path, days=days, tokens=tokens, exchange_type=exchange_type)
    frame = table_to_frame(table)
    skipped = (table.schema.metadata or {}).get(b"skipped_files")
    frame.attrs["skipped_files"] = skipped.decode().split("\n") if skipped else []
    return frame


def table_to_frame(table: pa.Table):
    import pandas as pd
    data = {}
    order = TICK_COLUMNS + QUOTE_COLUMNS + BOOKKEEPING_COLUMNS
    for name in order + [c for c in table.column_names if c not in order]:
        if name not in table.column_names:
            continue
        column = table[name]
        if name in QUOTE_COLUMNS and column.null_count == len(column):
            continue    # an LTP recording has no quote columns
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if column.null_count and pa.types.is_integer(column.type):
            data[name] = column.to_pandas(types_mapper={column.type: pd.Int64Dtype()}.get)
        else:
            data[name] = column.to_pandas()
    return pd.DataFrame(data)


# =========================================================================== the recorder
class TickRecorder:
    """Appends ticks on the hot path; a writer thread files them as Parquet.

        recorder = TickRecorder("data/ticks").start()
        trader.add_tick_listener(recorder.append)      # what trader.start_recording does
        recorder.flush()                               # write what is buffered now (files readable)
        recorder.stop()                                # write the rest, merge this session's files

    ``append`` is ``deque.append``: safe from any thread, ~50 ns, never blocks.
    ``stats`` counts what was written, and failures (a failed write is logged,
    counted and retried at the next wake-up; nothing is dropped).
    """

    def __init__(self, path, *, flush_interval: float = 1.0, roll_interval: float = 60.0,
                 file_rows: int = 1_000_000, compression: str = "zstd"):
        if flush_interval <= 0 or roll_interval <= 0 or file_rows < 1:
            raise ValueError("flush_interval and roll_interval must be > 0 and file_rows >= 1")
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.roll_interval = roll_interval
        self.file_rows = file_rows
        self.compression = compression
        self.session_id = time.time_ns()
        # recv_ns is perf_counter_ns; this turns it into wall-clock time, off the hot path.
        self._epoch_offset = time.time_ns() - perf_counter_ns()
        self._buffer: deque = deque()
        self.append = self._buffer.append
        self._pending: dict[tuple, list[pa.Table]] = {}   # partition -> tables not yet in a file
        self._pending_rows: dict[tuple, int] = {}
        self._unsaved: list[pa.Table] = []                 # converted but not yet partitioned (a failure)
        self._next_rec_seq = 0
        self._part = 0
        self._touched: set[Path] = set()
        self._lock = threading.Lock()                      # writer thread vs flush()/stop() callers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_roll = time.monotonic()
        self.ticks_written = 0
        self.files_written = 0
        self.write_errors = 0
        self.last_error = ""
        self.dropped_while_recording = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "TickRecorder":
        if self.running:
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kit-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything appended so far, merge this session's files per partition, end the thread."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join(timeout)
            self._thread = None
        with self._lock:
            self._write_all()
            self._merge_session_files()

    def flush(self) -> None:
        """Write every tick appended so far into complete files now (``read_recording`` sees them)."""
        with self._lock:
            self._write_all()

    @property
    def stats(self) -> dict:
        return {"path": str(self.path), "session_id": self.session_id, "pending": len(self._buffer),
                "ticks_written": self.ticks_written, "files_written": self.files_written,
                "write_errors": self.write_errors, "last_error": self.last_error,
                "dropped_while_recording": self.dropped_while_recording}

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            with self._lock:
                try:
                    self._collect()
                    if time.monotonic() - self._last_roll >= self.roll_interval:
                        self._write_pending()
                except Exception as exc:   # never let the writer die; the data stays queued
                    self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.write_errors <= 10 or self.write_errors % 100 == 0:
            log.error("recorder %s: write failed (#%d), will retry: %s", self.path, self.write_errors, self.last_error)

    def _collect(self) -> None:
        """Move buffered ticks into per-partition Arrow tables; write partitions that grew large."""
        buffer = self._buffer
        n = len(buffer)
        slices = []
        try:
            while n:
                # In slices, yielding the GIL between them: converting a second's worth of ticks
                # in one go would hold it for milliseconds and delay the tick thread by as much.
                popleft = buffer.popleft
                ticks = [popleft() for _ in range(min(n, SLICE_TICKS))]
                try:
                    slices.append(ticks_to_table(ticks, epoch_offset_ns=self._epoch_offset,
                                                 session_id=self.session_id, first_rec_seq=self._next_rec_seq))
                except Exception:
                    buffer.extendleft(reversed(ticks))     # back in front, in order: retried next time
                    raise
                self._next_rec_seq += len(ticks)
                n -= len(ticks)
                time.sleep(0)
        finally:
            if slices:
                self._unsaved.append(pa.concat_tables(slices).combine_chunks())
        while self._unsaved:
            self._partition(self._unsaved[0])
            self._unsaved.pop(0)
        for key, rows in list(self._pending_rows.items()):
            if rows >= self.file_rows:
                self._write_partition(key)

    def _partition(self, table: pa.Table) -> None:
        import pandas as pd
        keys = pd.DataFrame({"day": table["day"].to_pandas(), "exchange_type": table["exchange_type"].to_pandas(),
                             "token": table["token"].to_pandas()})
        body = table.drop_columns(["day", "exchange_type", "token"])
        for (day, exchange_type, token), rows in keys.groupby(["day", "exchange_type", "token"], sort=False).indices.items():
            part = (str(day), int(exchange_type), str(token))
            self._pending.setdefault(part, []).append(body.take(pa.array(rows)))
            self._pending_rows[part] = self._pending_rows.get(part, 0) + len(rows)

    def _write_all(self) -> None:
        try:
            self._collect()
            self._write_pending()
        except Exception as exc:
            self._failed(exc)

    def _write_pending(self) -> None:
        for key in list(self._pending):
            self._write_partition(key)
        self._last_roll = time.monotonic()

    def _directory(self, key: tuple) -> Path:
        day, exchange_type, token = key
        return self.path / f"day={day}" / f"exchange_type={exchange_type}" / f"token={_quote_path(token, safe='')}"

    def _write_partition(self, key: tuple) -> None:
        tables = self._pending.get(key)
        if not tables:
            return
        directory = self._directory(key)
        directory.mkdir(parents=True, exist_ok=True)
        self._part += 1
        name = f"{self.session_id}-{self._part:06d}.parquet"
        _write_atomically(pa.concat_tables(tables).combine_chunks(), directory / name, self.compression)
        rows = self._pending_rows.pop(key)
        del self._pending[key]
        self._touched.add(directory)
        self.ticks_written += rows
        self.files_written += 1

    def _merge_session_files(self) -> None:
        """One file per partition for this session: fewer, larger files for every later read."""
        for directory in sorted(self._touched):
            target = directory / f"{self.session_id}.parquet"
            parts = sorted(directory.glob(f"{self.session_id}-*.parquet"))
            if not parts:
                continue
            try:
                if len(parts) == 1 and not target.exists():
                    os.replace(parts[0], target)
                    continue
                # A recorder restarted after stop() already has a merged file: keep its rows first.
                sources = ([target] if target.exists() else []) + parts
                merged = pa.concat_tables([pq.ParquetFile(p).read() for p in sources])
                # Renamed into place before the parts go: a crash in between leaves rows
                # twice, which read_recording keeps once (session_id, rec_seq).
                _write_atomically(merged, target, self.compression)
                for p in parts:
                    p.unlink()
            except Exception as exc:
                self._failed(exc)
        self._touched.clear()


def _write_atomically(table: pa.Table, final: Path, compression: str) -> None:
    tmp = final.with_name("." + final.name + ".inprogress")
    pq.write_table(table.cast(FILE_SCHEMA), tmp, compression=compression)
    os.replace(tmp, final)
