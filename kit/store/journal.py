"""The trading journal: every order, fill and position change, in SQLite, written before it is acted on.

The live broker records each change here first and applies it in memory only
once the record is durable. A process killed at any instant therefore leaves
a journal that is at most *ahead* of memory, never behind it. Reopening the
file restores orders, fills and positions, and reconciling with the broker's
order book brings in whatever happened at the exchange meanwhile.

    journal = Journal(Journal.default_path("nifty-scalper", client_code="A123"), owner="nifty-scalper")
    journal.record("intent", order={...})          # one transaction, fsync'd before it returns
    journal.orders(); journal.fills(); journal.positions(); journal.events()
    journal.trading_day                            # the IST day the file was created for
    journal.close()                                # frees the file for the next writer

Storage decisions:

* WAL mode, ``synchronous=FULL`` for what only the kit knows: an order's
  *intent* (``record(..., durable=True)``, the default) is on disk before the
  request leaves, so it survives a power cut, not just a killed process.
  What the exchange can tell again (its acknowledgement, order updates,
  fills, adopted positions) is written ``durable=False``: committed at
  ``NORMAL`` (it survives ``kill -9``; a power cut may lose it, and the next
  start reads it back from the order book by the order's ``ordertag`` and
  from ``getPosition``), and on disk with the next intent's fsync anyway.
  An fsync costs ~0.2 ms of kernel CPU here (``commit_latency()``); one per
  order instead of four keeps that off the tick path's cores.
* Four tables: ``events`` is the append-only audit trail (what arrived, raw);
  ``orders`` and ``positions`` hold the current state, upserted in the same
  transaction; ``fills`` is append-only. A reader never sees half a change.
* Secrets never reach it: the broker writes no credentials, and every string
  written is scrubbed of registered keys and tokens anyway
  (``kit.angel.sdk.redactor.redact_values``; numbers are never touched, so a
  short PIN or TOTP code can never corrupt a price or an order id).
* The default path is outside the working directory: ``$SMARTAPI_KIT_DATA``
  or the user data directory, one file per trader name per IST trading day,
  in a directory per client code when one is given.

Rules a Journal enforces:

* **One writer per file.** Opening takes an exclusive ``flock`` on the sidecar
  ``<file>.lock`` and holds it until ``close()`` (or garbage collection, or
  the process's death: the kernel drops the lock with the process, so a
  crash never leaves a stale lock). A second Journal on the file, in this
  process or another, raises ``JournalLocked`` naming the file and the holder
  (pid, host, program, trader name), which the holder writes into the
  sidecar once it has the lock. The sidecar stays after close, emptied:
  deleting it would let two processes lock two different files. Two brokers
  therefore never share a file, and a broker's order ids (each continues
  after the highest in its journal) are unique per journal.
  ``flock`` is used, not ``lockf``: a POSIX record lock does not conflict
  within one process, and two traders in one kernel must exclude each other
  too. It assumes a local filesystem.
* **A forked child cannot write.** A child made by ``os.fork`` (e.g.
  multiprocessing's "fork" start method) inherits the lock, so every
  operation checks that it runs in the process that opened the journal and
  raises ``JournalError`` otherwise. The child drops its copy of the lock
  descriptor at fork (so a lingering child never keeps the file locked after
  the parent closes it) and never touches the inherited SQLite connection,
  not even to close it: SQLite forbids using a connection across a fork.
* **The schema version is checked.** ``meta.schema_version`` must equal
  ``SCHEMA_VERSION``; another version, a SQLite file that is not a journal,
  or a file that is not SQLite at all raises ``JournalSchemaError`` naming
  the file, which is left untouched.
* **Every error names the file.** SQLite errors (disk full, read-only, no
  permission) come out as ``JournalError`` with the path and the operation,
  chained to nothing; a failed ``record()`` is rolled back whole.
* **Owner-only permissions.** The database, its ``-wal`` and ``-shm`` (SQLite
  gives them the database's mode) and the ``.lock`` sidecar are 0600 whatever
  the umask; directories the journal creates are 0700.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from datetime import date, datetime
from pathlib import Path

from kit.angel.instruments import APP_NAME

from kit.core.market import IST, today_ist
from kit.angel.sdk import redactor

DATA_DIR_ENV = "SMARTAPI_KIT_DATA"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    client_id TEXT,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY,
    broker_order_id TEXT,
    status TEXT NOT NULL,
    updated_ns INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    fill_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    exchange_type INTEGER NOT NULL,
    token TEXT NOT NULL,
    qty INTEGER NOT NULL,
    avg_price REAL NOT NULL,
    realized_pnl REAL NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (exchange_type, token)
);
CREATE INDEX IF NOT EXISTS orders_by_broker_id ON orders (broker_order_id);
"""

_INSERT_EVENT = "INSERT INTO events (ts_ns, kind, client_id, payload) VALUES (?, ?, ?, ?)"
_UPSERT_ORDER = ("INSERT INTO orders (client_id, broker_order_id, status, updated_ns, data) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET "
                 "broker_order_id=excluded.broker_order_id, status=excluded.status, "
                 "updated_ns=excluded.updated_ns, data=excluded.data")
_INSERT_FILL = "INSERT INTO fills (client_id, data) VALUES (?, ?)"
_UPSERT_POSITION = ("INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(exchange_type, token) "
                    "DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price, "
                    "realized_pnl=excluded.realized_pnl, updated_ns=excluded.updated_ns")

_OWNER_ONLY = 0o600


class JournalError(RuntimeError):
    """A journal could not be opened, read or written; the message names the file (``path``)."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class JournalLocked(JournalError):
    """Another Journal, in this process or another, has the file open; ``holder`` is what it said of itself."""

    def __init__(self, message: str, path: Path | None = None, holder: dict | None = None):
        super().__init__(message, path)
        self.holder = holder or {}


class JournalSchemaError(JournalError):
    """The file is not a journal this kit can read: another schema version, or not a journal at all."""


def data_dir() -> Path:
    """Where journals live: ``$SMARTAPI_KIT_DATA`` or the user data directory (never the cwd)."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "default"


def _scrub(obj):
    """Strings with any long registered secret (API key, JWT, tokens) masked; numbers untouched."""
    if isinstance(obj, str):
        return redactor.redact_values(obj)
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj


def _dumps(obj) -> str:
    return json.dumps(_scrub(obj), separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------- files and permissions
def _make_dirs(directory: Path) -> None:
    """Create the missing directories 0700 whatever the umask; existing ones are left as they are."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)


def _owner_only(fd: int) -> None:
    """0600 whatever the umask (or an older kit) made it; a file someone else owns is left to them."""
    try:
        if os.fstat(fd).st_mode & 0o777 != _OWNER_ONLY:
            os.fchmod(fd, _OWNER_ONLY)
    except OSError:
        pass


def _open_owner_only(file: Path, path: Path, what: str) -> int:
    """``file`` opened read-write (created if missing) and made 0600; ``JournalError`` naming the journal if not."""
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _OWNER_ONLY)
    except OSError as exc:
        raise JournalError(f"{path}: cannot open {what}: {exc.strerror}", path) from None
    _owner_only(fd)
    return fd


def _process_started() -> str | None:
    """This process's start time (Linux), which tells a reused pid from the holder it names."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), IST).isoformat(timespec="seconds")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _holder(owner: str) -> dict:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else sys.executable
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_started(),
            "program": redactor.redact_values(program), "owner": owner,
            "since": datetime.now(IST).isoformat(timespec="seconds")}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another Journal (which has not written who it is yet)"
    if holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        who = f"this process, pid {holder['pid']}"
    else:
        who = f"pid {holder['pid']} on {holder.get('host')}"
    details = [f"{holder['program']}" if holder.get("program") else "",
               f"started {holder['started']}" if holder.get("started") else "",
               f"trader {holder['owner']!r}" if holder.get("owner") else "",
               f"open since {holder['since']}" if holder.get("since") else ""]
    details = ", ".join(d for d in details if d)
    return f"{who} ({details})" if details else who


def _take_lock(lock_path: Path, path: Path, owner: str) -> int:
    """The exclusive flock on ``lock_path``, with the holder's description written in; its descriptor."""
    fd = _open_owner_only(lock_path, path, f"its lock file {lock_path}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            raise JournalLocked(f"{path} is in use by {_describe(holder)}: a journal has one writer; close "
                                "that trader first, or give this one a journal of its own", path, holder) from None
        except OSError as exc:
            raise JournalError(f"{path}: cannot lock {lock_path}: {exc.strerror}", path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder(owner)).encode() + b"\n", 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Held:
    """What an open Journal holds: released by close() or garbage collection, in its own process only."""

    __slots__ = ("db", "lock_fd", "pid")

    def __init__(self, db, lock_fd: int, pid: int):
        self.db, self.lock_fd, self.pid = db, lock_fd, pid


def _release(held: _Held) -> None:
    """Close the connection, then free the lock (never the other way round: nobody may open it in between)."""
    if held.pid != os.getpid():
        return
    db, fd = held.db, held.lock_fd
    held.db = held.lock_fd = None
    try:
        if db is not None:
            db.close()
    finally:
        if fd is not None:
            try:
                os.ftruncate(fd, 0)             # nobody holds it now
            except OSError:
                pass
            os.close(fd)                        # the kernel drops the flock with the last descriptor


_open_journals: "weakref.WeakSet[Journal]" = weakref.WeakSet()


def _disown_after_fork() -> None:
    """In a forked child: drop the inherited lock descriptor and never touch the inherited connections.

    Closing the child's copy of the descriptor leaves the parent's lock in place
    (a flock lives until its last descriptor closes; ``LOCK_UN`` would release it
    for the parent too). SQLite forbids using a connection across a fork, and
    closing it counts, so the connection object is pinned: its refcount never
    reaches zero in the child.
    """
    for journal in list(_open_journals):
        held = journal._held
        if held.lock_fd is not None:
            try:
                os.close(held.lock_fd)
            except OSError:
                pass
        if held.db is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(held.db))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_after_fork)


def _day_of(created: str | None) -> date | None:
    """The IST day of a ``created`` stamp: the trading day of a journal made before it was recorded."""
    try:
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").astimezone(IST).date()
    except (TypeError, ValueError):
        return None


class Journal:
    """An append-first SQLite journal; thread-safe (one connection behind a lock); one writer per file.

    ``synchronous``: "FULL" (default, durable across power loss) or "NORMAL"
    (durable across a process crash only). ``owner``: who writes (a trader's
    name), shown to anyone who finds the file locked.
    Raises ``JournalLocked`` if another Journal has the file open,
    ``JournalSchemaError`` if it is not a journal of this schema version,
    ``JournalError`` if it cannot be opened.

    Attributes: ``path``, ``owner`` ("" if not given), ``trading_day`` (the IST
    day the file was created for, a ``date``; a live broker compares it with
    today to spot a journal carried over), ``created`` (its creation stamp),
    ``lock_path`` (the sidecar), ``closed``.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", owner: str | None = None):
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path).expanduser()
        self.synchronous = synchronous.upper()
        self._sync_now = self.synchronous      # the connection's level: NORMAL while a durable=False record commits
        self.owner = owner or ""
        # Locked by its real path, so two spellings (relative, symlinked) of one file still exclude each other.
        self.lock_path = Path(os.path.realpath(self.path) + ".lock")
        try:
            _make_dirs(self.path.parent)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot create its directory: {exc.strerror}", self.path) from None
        lock_fd = _take_lock(self.lock_path, self.path, self.owner)
        held = _Held(None, lock_fd, os.getpid())
        self._held = held
        self._finalizer = weakref.finalize(self, _release, held)
        # Not at exit: an order thread may still be mid-commit then, and the kernel frees the lock anyway.
        self._finalizer.atexit = False
        try:
            held.db = self._connect()
        except BaseException:
            self._finalizer()
            raise
        self._lock = threading.Lock()
        self._commit_ns: deque[int] = deque(maxlen=10_000)
        self.records = 0
        _open_journals.add(self)

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        os.close(_open_owner_only(path, path, "it for writing"))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            new = self._check_schema(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            day = today_ist() if new else _day_of(meta.get("created"))
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (time.strftime("%Y-%m-%dT%H:%M:%S%z"),))
            if day is not None:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('trading_day', ?)", (day.isoformat(),))
            db.execute("COMMIT")
            meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            db.close()
            if "not a database" in str(exc):
                raise JournalSchemaError(f"{path} is not a journal: it is not an SQLite database", path) from None
            raise JournalError(f"{path}: cannot open the journal: {exc}", path) from None
        except BaseException:
            db.close()
            raise
        self.created = meta.get("created")
        try:
            self.trading_day: date | None = date.fromisoformat(meta["trading_day"])
        except (KeyError, ValueError):
            self.trading_day = None
        # SQLite gives -wal and -shm the database's mode; made sure of here by path. Never open and
        # close them: closing any descriptor of a file drops this process's POSIX locks on it, SQLite's
        # included, and another reader could then reset the shared memory under this writer.
        for suffix in ("-wal", "-shm"):
            try:
                if os.stat(f"{path}{suffix}").st_mode & 0o777 != _OWNER_ONLY:
                    os.chmod(f"{path}{suffix}", _OWNER_ONLY)
            except OSError:
                continue
        return db

    def _check_schema(self, db: sqlite3.Connection) -> bool:
        """True for a new (empty) file; raises unless it is a journal of ``SCHEMA_VERSION``. Reads only."""
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return True
        if "meta" not in tables:
            raise JournalSchemaError(f"{self.path} is not a journal: an SQLite database without a meta table",
                                     self.path)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = row[0] if row else "unknown"
        if found != str(SCHEMA_VERSION):
            raise JournalSchemaError(f"{self.path} has journal schema version {found}; this kit reads version "
                                     f"{SCHEMA_VERSION}: open it with the kit that wrote it, or start a new journal",
                                     self.path)
        return False

    @staticmethod
    def default_path(name: str, day: date | None = None, client_code: str | None = None) -> Path:
        """``<data dir>/journals/[<client_code>/]<name>-<YYYY-MM-DD>.sqlite`` for the IST trading day.

        With a client code, two accounts' traders of one name never share a file.
        """
        folder = data_dir() / "journals"
        if client_code:
            folder = folder / _safe_name(client_code)
        return folder / f"{_safe_name(name)}-{(day or today_ist()).isoformat()}.sqlite"

    @property
    def closed(self) -> bool:
        return self._held.db is None

    def _usable(self) -> sqlite3.Connection:
        """The connection, if this process may use it; call with ``self._lock`` held."""
        if self._held.db is None:
            raise JournalError(f"{self.path} is closed", self.path)
        return self._held.db

    def _same_process(self) -> None:
        """Checked before taking ``self._lock``: a forked child may have inherited it held."""
        if self._held.pid != os.getpid():
            raise JournalError(f"{self.path} belongs to process {self._held.pid}"
                               f"{f' (trader {self.owner!r})' if self.owner else ''}; this process "
                               f"({os.getpid()}) was forked from it and may not use it: open a journal of its own",
                               self.path)

    # ------------------------------------------------------------------ writing
    def record(self, kind: str, *, client_id: str | None = None, payload: dict | None = None,
               order: dict | None = None, fill: dict | None = None, position: dict | None = None,
               durable: bool = True) -> int:
        """Append one event, and the order / fill / position it changes, as one transaction.

        Returns the event's sequence number once the commit is on disk
        (``durable``) or committed at ``synchronous=NORMAL`` (``durable=False``:
        for facts the exchange can tell again; see the module's notes).
        ``order`` needs ``client_id``, ``broker_order_id`` and ``status``;
        ``position`` needs ``exchange_type``, ``token``, ``qty``, ``avg_price``, ``realized_pnl``.
        Raises ``JournalError`` (naming the file) if SQLite fails; nothing of the change is then written.
        """
        self._same_process()
        now = time.time_ns()
        client_id = client_id or (order or {}).get("client_id") or (fill or {}).get("order_id")
        try:
            writes = [(_INSERT_EVENT, (now, kind, client_id, _dumps(payload if payload is not None else {})))]
            if order is not None:
                writes.append((_UPSERT_ORDER, (order["client_id"], order.get("broker_order_id") or None,
                                               order["status"], now, _dumps(order))))
            if fill is not None:
                writes.append((_INSERT_FILL, (fill["order_id"], _dumps(fill))))
            if position is not None:
                writes.append((_UPSERT_POSITION, (position["exchange_type"], position["token"], position["qty"],
                                                  position["avg_price"], position["realized_pnl"], now)))
        except KeyError as exc:
            raise ValueError(f"{self.path}: a {kind!r} record lacks {exc.args[0]!r}") from None
        with self._lock:
            db = self._usable()
            started = time.perf_counter_ns()
            try:
                sync = self.synchronous if durable or self.synchronous == "NORMAL" else "NORMAL"
                if sync != self._sync_now:
                    db.execute(f"PRAGMA synchronous={sync}")     # outside a transaction, as SQLite requires
                    self._sync_now = sync
                db.execute("BEGIN IMMEDIATE")
                try:
                    seq = db.execute(*writes[0]).lastrowid
                    for sql, args in writes[1:]:
                        db.execute(sql, args)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: could not record {kind!r}: {exc} "
                                   f"({getattr(exc, 'sqlite_errorname', type(exc).__name__)})", self.path) from None
            self._commit_ns.append(time.perf_counter_ns() - started)
            self.records += 1
            return seq

    # ------------------------------------------------------------------ reading
    def _rows(self, sql: str, args=()) -> list[tuple]:
        self._same_process()
        with self._lock:
            db = self._usable()
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: could not read it: {exc}", self.path) from None

    def orders(self) -> list[dict]:
        """The latest state of every order, oldest first."""
        return [json.loads(d) for (d,) in self._rows("SELECT data FROM orders ORDER BY rowid")]

    def fills(self) -> list[dict]:
        return [json.loads(d) for (d,) in self._rows("SELECT data FROM fills ORDER BY fill_seq")]

    def positions(self) -> list[dict]:
        cols = ("exchange_type", "token", "qty", "avg_price", "realized_pnl", "updated_ns")
        return [dict(zip(cols, r)) for r in self._rows(f"SELECT {', '.join(cols)} FROM positions")]

    def events(self, kind: str | None = None) -> list[dict]:
        sql = "SELECT seq, ts_ns, kind, client_id, payload FROM events"
        rows = self._rows(sql + " WHERE kind = ? ORDER BY seq", (kind,)) if kind else self._rows(sql + " ORDER BY seq")
        return [{"seq": s, "ts_ns": t, "kind": k, "client_id": c, "payload": json.loads(p)} for s, t, k, c, p in rows]

    def commit_latency(self) -> dict:
        """p50 / p99 / max of this process's commits, in microseconds."""
        samples = sorted(self._commit_ns)
        if not samples:
            return {"commits": 0}
        pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1e3  # noqa: E731
        return {"commits": len(samples), "p50_us": pick(0.5), "p99_us": pick(0.99), "max_us": samples[-1] / 1e3,
                "synchronous": self.synchronous}

    def close(self) -> None:
        """Close the file and free it for the next writer; idempotent. In a forked child, a no-op."""
        if self._held.pid != os.getpid():
            return
        with self._lock:
            try:
                self._finalizer()
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: could not close it cleanly: {exc}", self.path) from None

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        owner = f" owner={self.owner!r}" if self.owner else ""
        return f"<Journal {self.path}{owner} synchronous={self.synchronous}{state}>"
