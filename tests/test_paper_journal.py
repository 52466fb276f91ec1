"""Paper trading with a journal: a restarted kernel gets its paper orders, fills and positions back.

Real SQLite files under tmp_path, no mocks. Prices are exact in binary, so P&L compares with ==.
"""
from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.broker.paper import CANCELLED, COMPLETE, OPEN, REJECTED, PaperBroker, _Instrument
from kit.research.examples import SmaCross
from kit.store.journal import Journal, data_dir
from kit.store.recording import table_to_frame
from kit.bench.replay import synthetic_ticks
from kit.core.strategy import BUY, SELL, Signal
from kit.core.tick import SNAP_QUOTE, Quote, Tick
from kit.core.market import NSE_CM, NSE_FO

CHILD = Path(__file__).resolve().parent / "paper_crash_child.py"


def tick_maker():
    """``tick(ltp, ...)`` numbering its ticks 1, 2, 3...: two sessions made alike get alike ticks."""
    seq = itertools.count(1)

    def tick(ltp: float, token: str = "2885", exchange_type: int = NSE_CM, quote: Quote | None = None) -> Tick:
        return Tick(token, exchange_type, SNAP_QUOTE if quote else 1, next(seq), 0, ltp, quote=quote)
    return tick


def fake_clock():
    now = itertools.count(1_700_000_000_000_000_000, 1_000)
    return lambda: next(now)


def trading_morning(broker: PaperBroker):
    """Market and limit orders filled on later ticks, a cancel, a circuit rejection; one limit left open.

    Each instrument's last tick is a fill, so a restored position is marked where the original was.
    Returns the tick maker, to go on with the same tick numbers.
    """
    tick = tick_maker()
    a = tick(100.0)
    broker.on_tick(a)
    broker.submit(Signal.buy(a, qty=64), a)                          # P000001 market
    broker.submit(Signal.buy(a, qty=16, limit=98.0), a)              # P000002 rests, fills later
    broker.submit(Signal.sell(a, qty=64, limit=110.0), a)            # P000003 cancelled
    broker.on_tick(tick(100.5))                                      # P1 fills at 100.5
    assert broker.cancel("P000003")

    band = Quote(0, 50.0, 0, 0.0, 0.0, 50.0, 50.0, 50.0, 50.0, upper_circuit=55.0, lower_circuit=45.0)
    b = tick(50.0, token="1594", exchange_type=NSE_FO, quote=band)
    broker.on_tick(b)
    assert broker.submit(Signal.buy(b, qty=25, limit=60.0), b).status == REJECTED   # P000004
    broker.submit(Signal.sell(b, qty=25), b)                         # P000005 market short
    broker.on_tick(tick(49.5, token="1594", exchange_type=NSE_FO))   # P5 fills at 49.5

    broker.on_tick(tick(97.5))                                       # P2 crossed: fills at its limit, 98.0
    c = tick(99.0)
    broker.on_tick(c)
    broker.submit(Signal.sell(c, qty=40, limit=101.0), c)            # P000006: stays open over the restart
    broker.submit(Signal.sell(c, qty=20), c)                         # P000007 market
    broker.on_tick(tick(99.25))                                      # P7 fills; P6 rests
    return tick


def frames(broker: PaperBroker) -> dict:
    return {"orders": broker.orders_df(), "fills": broker.fills_df(), "positions": broker.positions_df(),
            "pnl": broker.pnl()}


def assert_same_book(got: dict, expected: dict) -> None:
    for table in ("orders", "fills", "positions"):
        pd.testing.assert_frame_equal(got[table], expected[table], check_exact=True, obj=table)
    assert got["pnl"] == expected["pnl"]


def test_a_new_broker_on_the_journal_continues_the_paper_session_as_if_never_restarted(tmp_path):
    path = tmp_path / "paper.sqlite"
    clock = fake_clock()
    first = PaperBroker(journal=Journal(path), clock_ns=clock)
    assert first.restored == {"orders": 0, "active": 0, "fills": 0, "positions": 0}
    tick = trading_morning(first)
    before = frames(first)
    first.close()
    assert before["positions"].set_index("token")["qty"].to_dict() == {"2885": 60, "1594": -25}
    assert before["pnl"]["realized"] != 0

    # The same session in memory only, never interrupted: what the restored broker must go on to match.
    control = PaperBroker(clock_ns=fake_clock())
    control_tick = trading_morning(control)
    assert_same_book(before, frames(control))

    restored = PaperBroker(journal=Journal(path), clock_ns=clock)
    assert restored.restored == {"orders": 7, "active": 1, "fills": 4, "positions": 2}
    assert_same_book(frames(restored), before)
    assert [o.order_id for o in restored.open_orders()] == ["P000006"]
    statuses = dict(zip(before["orders"]["order_id"], before["orders"]["status"]))
    assert statuses == {"P000001": COMPLETE, "P000002": COMPLETE, "P000003": CANCELLED, "P000004": REJECTED,
                        "P000005": COMPLETE, "P000006": OPEN, "P000007": COMPLETE}

    # The open limit order still fills, at its limit (it has been resting), and ids carry on.
    for broker, tick in ((restored, tick), (control, control_tick)):
        (fill,) = broker.on_tick(tick(101.5))
        assert (fill.order_id, fill.side, fill.qty, fill.price) == ("P000006", SELL, 40, 101.0)
        assert broker.submit(Signal("2885", BUY, 5), None).order_id == "P000008"
        broker.on_tick(tick(101.0))
    assert_same_book(frames(restored), frames(control))
    restored.close()

    # The journal itself agrees, and a third broker sees all of it.
    again = PaperBroker(journal=Journal(path))
    assert again.restored == {"orders": 8, "active": 0, "fills": 6, "positions": 2}
    ids = again.orders_df()["order_id"]
    assert ids.is_unique and ids.iloc[-1] == "P000008"
    assert again.submit(Signal("2885", SELL, 5), None).order_id == "P000009"
    again.close()


def test_a_closed_journaled_broker_refuses_orders_instead_of_forgetting_them(tmp_path):
    broker = PaperBroker(journal=Journal(tmp_path / "paper.sqlite"))
    broker.close()
    order = broker.submit(Signal("2885", BUY, 1), None)
    assert order.status == REJECTED and "closed" in order.status_message
    assert broker.orders_df().empty and broker.open_orders() == []


def test_a_live_journal_is_not_taken_for_a_paper_one(tmp_path):
    path = tmp_path / "live.sqlite"
    live = Journal(path)
    live.record("intent", order={"client_id": "k1a2b3c000001", "order_id": "k1a2b3c000001", "status": "PENDING"})
    live.close()
    with pytest.raises(ValueError, match="not a paper order"):
        PaperBroker(journal=Journal(path))


def test_without_a_journal_paper_trading_writes_no_file(in_tmp_cwd):
    broker = PaperBroker()
    trading_morning(broker)
    broker.close()                                   # a no-op, and the broker keeps working
    assert broker.submit(Signal("2885", BUY, 1), None).status == OPEN
    ticks = table_to_frame(synthetic_ticks(2000, tokens=2))
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False),
                                             name="paper-no-journal"))
    trader.strategy = SmaCross(3, 8)
    trader.run()
    trader.close()
    assert len(trader.broker.fills_df()) > 10
    assert list(in_tmp_cwd.iterdir()) == []
    assert not data_dir().exists() or list(data_dir().rglob("*")) == []


# -- through the engine ----------------------------------------------------------------------------------

def test_a_trader_recreated_on_the_same_journal_restores_its_positions(tmp_path, in_tmp_cwd):
    path = tmp_path.parent / f"{tmp_path.name}-journal" / "paper.sqlite"    # outside the checked cwd
    ticks = table_to_frame(synthetic_ticks(3000, tokens=3))
    config = kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False),
                              journal=kit.JournalConfig(str(path), sync="NORMAL"), name="paper-journal")
    trader = kit.LiveTrader(config)
    assert trader.broker.journal.synchronous == "NORMAL"
    trader.strategy = SmaCross(3, 8)
    trader.run()
    positions = trader.broker.positions_df()[["token", "qty", "avg_price", "realized_pnl"]]
    orders, fills = trader.broker.orders_df(), trader.broker.fills_df()
    assert len(fills) > 20 and positions["realized_pnl"].abs().sum() > 0
    trader.close()

    second = kit.LiveTrader(config)
    assert second.broker.restored["fills"] == len(fills)
    pd.testing.assert_frame_equal(second.broker.positions_df()[positions.columns], positions, check_exact=True)
    pd.testing.assert_frame_equal(second.broker.orders_df(), orders, check_exact=True)

    # Re-running the cell without closing: the registry closes `second`, and the file opens cleanly again.
    third = kit.LiveTrader(config)
    assert second.broker.submit(Signal("43650", BUY, 1, exchange_type=2), None).status == REJECTED
    pd.testing.assert_frame_equal(third.broker.positions_df()[positions.columns], positions, check_exact=True)
    order = third.broker.submit(Signal("43650", BUY, 1, exchange_type=2), None)
    assert order.status == OPEN and order.order_id not in set(orders["order_id"])
    third.close()
    assert Journal(path).orders()[-1]["order_id"] == order.order_id


# -- kill -9 mid-stream ----------------------------------------------------------------------------------

def _fill_count(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM fills").fetchone()[0]
    except sqlite3.OperationalError:       # not created yet
        return 0


@pytest.mark.timeout(120)
def test_kill_9_mid_stream_leaves_a_consistent_paper_book(tmp_path, in_tmp_cwd):
    path = tmp_path.parent / f"{tmp_path.name}-journal" / "paper.sqlite"
    child = subprocess.Popen([sys.executable, str(CHILD), str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=in_tmp_cwd)
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")), daemon=True)
               for s, into in ((child.stdout, out), (child.stderr, err))]
    for r in readers:
        r.start()
    try:
        assert wait_until(lambda: _fill_count(path) >= 300 or child.poll() is not None, 90), "".join(err[-20:])
        assert child.poll() is None, "".join(err[-40:])        # still trading when killed
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    for r in readers:
        r.join(10)

    journal = Journal(path)
    orders = {o["order_id"]: o for o in journal.orders()}
    fills = journal.fills()
    positions = {(p["exchange_type"], p["token"]): p for p in journal.positions()}
    assert len(fills) >= 300 and any(o["status"] == OPEN for o in orders.values())

    # Nothing was in the child's memory only: every fill its listener saw (after the fact) is journaled.
    seen = [line.split()[1] for line in out if line.startswith("FILL ")]
    assert len(seen) >= 250 and set(seen) <= {f["order_id"] for f in fills}

    # Every fill has its order COMPLETE at the fill's price; every COMPLETE order has exactly one fill.
    filled = {}
    for f in fills:
        order = orders[f["order_id"]]
        assert (order["status"], order["filled_qty"], order["avg_price"]) == (COMPLETE, f["qty"], f["price"])
        filled[f["order_id"]] = filled.get(f["order_id"], 0) + 1
    assert filled == {oid: 1 for oid, o in orders.items() if o["status"] == COMPLETE}

    # Each position is its fills, summed in journal order.
    expected = {}
    for f in fills:
        key = (f["exchange_type"], f["token"])
        expected.setdefault(key, _Instrument(f["token"], f["exchange_type"])).apply_fill(f["side"], f["qty"], f["price"])
    assert set(positions) == set(expected)
    for key, inst in expected.items():
        p = positions[key]
        assert p["qty"] == sum(f["qty"] if f["side"] == BUY else -f["qty"] for f in fills
                               if (f["exchange_type"], f["token"]) == key)
        assert (p["qty"], p["avg_price"], p["realized_pnl"]) == (inst.qty, inst.avg_price, inst.realized_pnl)
    journal.close()

    # A restarted broker takes the book as it is and carries on with fresh ids.
    broker = PaperBroker(journal=Journal(path))
    assert broker.restored["orders"] == len(orders) and broker.restored["fills"] == len(fills)
    assert {key: p.qty for key, p in broker.positions.items()} == {key: p["qty"] for key, p in positions.items()}
    highest = max(int(oid[1:]) for oid in orders)
    assert broker.submit(Signal("43650", BUY, 1, exchange_type=2), None).order_id == f"P{highest + 1:06d}"
    broker.close()
