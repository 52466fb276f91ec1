"""The replay feed: a recording played into the engine on a thread, in the socket thread's place.

    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay="data/ticks", mode="callback",
                                             replay_speed=None))    # None: as fast as possible
    trader.strategy = MyStrategy()
    trader.run()              # returns when every tick was handled; or start() + feed.wait_finished()

``LiveTrader`` builds a ``ReplayFeed`` instead of a ``SmartFeed`` when
``feed="replay"``; the dispatcher, the three dispatch modes, ``_on_tick``,
the broker, risk, metrics and listeners are the same objects as live. The
replay thread calls ``Dispatcher.submit_many`` (``submit`` for a run of
ticks), so in callback mode the strategy runs on the replay thread exactly as
it runs on the socket thread live.

Rules:

* Each tick is built and stamped (``recv_ns = perf_counter_ns()``) at the
  moment it is emitted, so latency is measured from emission, as live from
  receipt. ``exchange_ts``, ``seq`` and every other field are as recorded.
* A replay never drops a tick: when the queue is full it waits for room (the
  producer is the only one filling it). Every recorded tick reaches the
  strategy, in recorded order, whatever the mode or the machine's speed.
* ``speed=None`` emits as fast as the engine takes ticks. ``speed=x`` keeps
  the recorded pace divided by x, from the recorded wall-clock receive times
  (``recv_epoch_ns``; ``exchange_ts`` when absent). Recorded gaps longer than
  ``MAX_GAP_S`` (a night, a lunch break in the recording) are skipped.
* A progress bar (``tqdm.auto``: a widget in a notebook, text elsewhere)
  shows emitted ticks; ``progress=False`` hides it.
"""
from __future__ import annotations

import logging
import threading
import time
from itertools import islice
from pathlib import Path
from time import perf_counter, perf_counter_ns

import pyarrow as pa

from kit.feed.live import FeedStats
from kit.store.recording import REQUIRED, batch_ticks, normalize_ticks, read_recording_table

log = logging.getLogger(__name__)

MAX_GAP_S = 60.0          # a longer pause in the recording is replayed as no pause
CHUNK_ROWS = 65_536       # ticks built per Arrow batch


def load_ticks(source) -> pa.Table:
    """A replay source as a checked Arrow table in replay order.

    ``source``: a recording directory (or one of its files), a pandas
    DataFrame of ticks (``read_recording``'s columns; at least ``token`` and
    ``ltp``), or a pyarrow Table of the same.
    """
    if isinstance(source, (str, Path)):
        return normalize_ticks(read_recording_table(source))
    return normalize_ticks(source)


class ReplayFeed:
    """Plays ticks into ``dispatcher`` from its own thread. Same surface as ``SmartFeed``.

    ``stats.ticks`` counts emitted ticks; ``total`` is known once loaded.
    ``finish_dispatcher=True`` makes the dispatcher's ``consume()`` return
    after the last tick (what ``LiveTrader.run`` needs).
    """

    def __init__(self, source, dispatcher, *, speed: float | None = None, progress: bool = True,
                 name: str = "kit-replay", finish_dispatcher: bool = False, chunk_rows: int = CHUNK_ROWS):
        if speed is not None and not speed > 0:
            raise ValueError("speed must be None (as fast as possible) or > 0")
        if isinstance(source, (str, Path)):
            if not Path(source).exists():
                raise FileNotFoundError(f"no recording at {source}")
        else:
            columns = getattr(source, "column_names", None) or list(getattr(source, "columns", []))
            missing = [c for c in REQUIRED if c not in columns]
            if missing:     # fail in start(), in the caller's cell, not later on the replay thread
                raise ValueError(f"replay ticks need the columns {list(REQUIRED)}; missing {missing}")
        self.source = source
        self.dispatcher = dispatcher
        self.speed = speed
        self.progress = progress
        self.name = name
        self.finish_dispatcher = finish_dispatcher
        self.chunk_rows = chunk_rows
        self.stats = FeedStats()
        self.table: pa.Table | None = None     # the replayed ticks, once loaded
        self.total: int | None = None
        self.error: str = ""
        self.elapsed_s: float = 0.0
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None

    # ------------------------------------------------------------------ lifecycle (SmartFeed's surface)
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "ReplayFeed":
        if self.running:
            return self
        self._stop.clear()
        self._finished.clear()
        # The bar is created here, on the caller's thread, so in a notebook it
        # appears under the cell that started the replay.
        if self.progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=self._count_hint(), unit="tick", unit_scale=True, desc=self.name,
                             mininterval=0.25)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once the ticks are loaded and emission has begun."""
        return self._loaded.wait(timeout)

    def wait_finished(self, timeout: float | None = None) -> bool:
        """True once every tick was emitted *and handled* (or the replay was stopped or failed)."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def _count_hint(self) -> int | None:
        src = self.source
        try:
            if isinstance(src, (str, Path)):
                return None
            return len(src)
        except TypeError:
            return None

    # ------------------------------------------------------------------ the replay thread
    def _run(self) -> None:
        d = self.dispatcher
        handled_before = d.handled_by_consumer + d.handled_direct + d.dropped
        started = perf_counter()
        try:
            table = self.table if self.table is not None else load_ticks(self.source)
            self.table, self.total = table, table.num_rows
            self.stats.malformed = int((table.schema.metadata or {}).get(b"dropped_rows", b"0"))
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()
            self.stats.connected = True
            self.stats.connects += 1
            self._loaded.set()
            started = perf_counter()
            if self.speed is None:
                self._emit_fast(table)
            else:
                self._emit_paced(table)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.stats.last_error = self.error
            log.exception("replay %s failed", self.name)
        finally:
            self.stats.connected = False
            if self.finish_dispatcher:
                d.finish()
            # Finished means handled: wait until the consumer has caught up with what we emitted.
            target = handled_before + self.stats.ticks
            while (d.handled_by_consumer + d.handled_direct + d.dropped < target
                   and not self._stop.wait(0.001)):
                pass
            self.elapsed_s = perf_counter() - started
            if self._bar is not None:
                self._bar.close()
            self._finished.set()
            self._loaded.set()

    def _wait_for_room(self, wanted: int) -> int:
        """How many ticks may be submitted without the queue dropping one (0 if stopping)."""
        d = self.dispatcher
        enough = min(wanted, max(1, d.maxsize // 2))   # wait for a worthwhile batch, not one slot
        while not self._stop.is_set():
            room = d.maxsize - d.depth
            if room >= enough:
                return min(room, wanted)
            time.sleep(0.0002)   # the consumer is draining; only we fill the queue
        return 0

    def _emit_fast(self, table: pa.Table) -> None:
        submit_many = self.dispatcher.submit_many
        stats, bar = self.stats, self._bar
        for batch in table.to_batches(self.chunk_rows):
            # Built lazily: each Tick is created and stamped as submit_many pulls it.
            ticks = batch_ticks(batch, perf_counter_ns)
            left = len(batch)
            while left:
                k = self._wait_for_room(left)
                if not k:
                    return
                submit_many(islice(ticks, k))
                stats.ticks += k
                left -= k
                if bar is not None:
                    bar.update(k)

    def _emit_paced(self, table: pa.Table) -> None:
        submit = self.dispatcher.submit
        stats, bar, speed = self.stats, self._bar, self.speed
        clock = "recv_epoch_ns" if "recv_epoch_ns" in table.column_names and table["recv_epoch_ns"].null_count == 0 \
            else None
        max_gap_ns = MAX_GAP_S * 1e9
        origin_rec = None      # recorded time that maps to origin_wall
        origin_wall = perf_counter()
        previous = None
        shown = 0
        for batch in table.to_batches(self.chunk_rows):
            if clock:
                stamps = batch.column(batch.schema.names.index(clock)).to_numpy().tolist()
            else:
                stamps = [ms * 1_000_000 for ms in batch.column(batch.schema.names.index("exchange_ts")).to_numpy().tolist()]
            ticks = batch_ticks(batch, perf_counter_ns)
            for recorded in stamps:
                if origin_rec is None or recorded - previous > max_gap_ns or recorded < previous:
                    origin_rec, origin_wall = recorded, perf_counter()
                previous = recorded
                delay = origin_wall + (recorded - origin_rec) / 1e9 / speed - perf_counter()
                if delay > 0.0002 and self._stop.wait(delay):
                    return
                if not self._wait_for_room(1):
                    return
                submit(next(ticks))      # built and stamped now, after the wait
                stats.ticks += 1
                if bar is not None and stats.ticks - shown >= 256:
                    bar.update(stats.ticks - shown)
                    shown = stats.ticks
            if self._stop.is_set():
                return
        if bar is not None:
            bar.update(stats.ticks - shown)
