"""The trading journal: every order, fill and position change, in SQLite, written before it is acted on.

The live broker records each change here first and applies it in memory only
once the record is durable. A process killed at any instant therefore leaves
a journal that is at most *ahead* of memory, never behind it. Reopening the
file restores orders, fills and positions, and reconciling with the broker's
order book brings in whatever happened at the exchange meanwhile.

    journal = Journal(Journal.default_path("nifty-scalper"))
    journal.record("intent", order={...})          # one transaction, fsync'd before it returns
    journal.orders(); journal.fills(); journal.positions(); journal.events()

Storage decisions:

* WAL mode, ``synchronous=FULL``: a commit returns only once the WAL is on
  disk, so a record survives a power cut, not just a killed process
  (``NORMAL`` would survive ``kill -9`` too, but a power cut could lose the
  last commits, and those are the orders that just went out). Orders are
  rare (Angel One allows 20/s); a commit costs about a millisecond here
  (see ``commit_latency()``), paid on the order threads, never on the tick path.
* Four tables: ``events`` is the append-only audit trail (what arrived, raw);
  ``orders`` and ``positions`` hold the current state, upserted in the same
  transaction; ``fills`` is append-only. A reader never sees half a change.
* Secrets never reach it: the broker writes no credentials, and every string
  written is scrubbed of registered keys and tokens anyway
  (``kit.sdk_adapter.redactor.redact_values``; numbers are never touched, so a
  short PIN or TOTP code can never corrupt a price or an order id).
* The default path is outside the working directory: ``$SMARTAPI_KIT_DATA``
  or the user data directory, one file per trader name per IST trading day.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path

from .instruments import APP_NAME, today_ist
from .sdk_adapter import redactor

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


def data_dir() -> Path:
    """Where journals live: ``$SMARTAPI_KIT_DATA`` or the user data directory (never the cwd)."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


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


class Journal:
    """An append-first SQLite journal; thread-safe (one connection behind a lock).

    ``synchronous``: "FULL" (default, durable across power loss) or "NORMAL"
    (durable across a process crash only).
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL"):
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (time.strftime("%Y-%m-%dT%H:%M:%S%z"),))
        self.synchronous = synchronous.upper()
        self._commit_ns: deque[int] = deque(maxlen=10_000)
        self.records = 0

    @staticmethod
    def default_path(name: str, day=None) -> Path:
        """``<data dir>/journals/<name>-<YYYY-MM-DD>.sqlite`` for the IST trading day."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "default"
        return data_dir() / "journals" / f"{safe}-{(day or today_ist()).isoformat()}.sqlite"

    # ------------------------------------------------------------------ writing
    def record(self, kind: str, *, client_id: str | None = None, payload: dict | None = None,
               order: dict | None = None, fill: dict | None = None, position: dict | None = None) -> int:
        """Append one event, and the order / fill / position it changes, as one durable transaction.

        Returns the event's sequence number once the commit is on disk.
        ``order`` needs ``client_id``, ``broker_order_id`` and ``status``;
        ``position`` needs ``exchange_type``, ``token``, ``qty``, ``avg_price``, ``realized_pnl``.
        """
        now = time.time_ns()
        client_id = client_id or (order or {}).get("client_id") or (fill or {}).get("order_id")
        event = _dumps(payload if payload is not None else {})
        with self._lock:
            started = time.perf_counter_ns()
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("INSERT INTO events (ts_ns, kind, client_id, payload) VALUES (?, ?, ?, ?)",
                            (now, kind, client_id, event))
                seq = cur.lastrowid
                if order is not None:
                    cur.execute("INSERT INTO orders (client_id, broker_order_id, status, updated_ns, data) "
                                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET "
                                "broker_order_id=excluded.broker_order_id, status=excluded.status, "
                                "updated_ns=excluded.updated_ns, data=excluded.data",
                                (order["client_id"], order.get("broker_order_id") or None, order["status"], now,
                                 _dumps(order)))
                if fill is not None:
                    cur.execute("INSERT INTO fills (client_id, data) VALUES (?, ?)", (fill["order_id"], _dumps(fill)))
                if position is not None:
                    cur.execute("INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(exchange_type, token) "
                                "DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price, "
                                "realized_pnl=excluded.realized_pnl, updated_ns=excluded.updated_ns",
                                (position["exchange_type"], position["token"], position["qty"],
                                 position["avg_price"], position["realized_pnl"], now))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._commit_ns.append(time.perf_counter_ns() - started)
            self.records += 1
            return seq

    # ------------------------------------------------------------------ reading
    def _rows(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

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
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"<Journal {self.path} synchronous={self.synchronous}>"
