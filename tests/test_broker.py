"""The paper broker: when orders fill, at what price, the P&L that follows, and threads.

Prices are chosen exact in binary (x.0, x.5, x.25) so P&L compares with ==.
"""
from __future__ import annotations

import itertools
import random
import sys
import threading
import time

import pytest

from kit.broker.paper import (CANCELLED, COMPLETE, FILL_COLUMNS, NO_FILLS, OPEN, ORDER_COLUMNS,
                        POSITION_COLUMNS, REJECTED, Fill, PaperBroker)
from kit.core.strategy import BUY, LIMIT, SELL, Signal
from kit.core.tick import SNAP_QUOTE, Quote, Tick
from kit.core.market import NSE_CM, NSE_FO

_seq = itertools.count(1)


def tick(ltp: float, token: str = "2885", exchange_type: int = NSE_CM, quote: Quote | None = None) -> Tick:
    return Tick(token, exchange_type, SNAP_QUOTE if quote else 1, next(_seq), 0, ltp, quote=quote)


def fake_clock():
    """A wall clock that advances 1 µs per reading."""
    now = itertools.count(1_700_000_000_000_000_000, 1_000)
    return lambda: next(now)


@pytest.fixture
def broker() -> PaperBroker:
    return PaperBroker(clock_ns=fake_clock())


def trade(broker: PaperBroker, side: str, qty: int, price: float, token: str = "2885") -> Fill:
    """Submit a market order and fill it with one tick at ``price``."""
    broker.submit(Signal(token, side, qty), None)
    (fill,) = broker.on_tick(tick(price, token))
    return fill


# -- when and where orders fill ------------------------------------------------

def test_market_order_fills_at_the_next_tick_of_its_own_instrument(broker):
    submitted_on = tick(100.0)
    assert broker.on_tick(submitted_on) is NO_FILLS
    order = broker.submit(Signal.buy(submitted_on, qty=65, reason="breakout"), submitted_on)
    assert (order.order_id, order.status, order.tick_seq) == ("P000001", OPEN, submitted_on.seq)

    assert broker.on_tick(tick(50.0, token="1594")) == ()          # another token
    assert broker.on_tick(tick(50.0, exchange_type=NSE_FO)) == ()  # same token, other exchange
    assert broker.open_orders()[0].order_id == "P000001"

    next_tick = tick(100.5)
    (fill,) = broker.on_tick(next_tick)
    assert (fill.order_id, fill.side, fill.qty, fill.price, fill.tick_seq) == (
        "P000001", BUY, 65, 100.5, next_tick.seq)
    assert broker.on_tick(tick(101.0)) == ()                        # filled exactly once
    assert broker.open_orders() == []
    row = broker.orders_df().iloc[0]
    assert (row.status, row.filled_qty, row.avg_price, row.reason) == (COMPLETE, 65, 100.5, "breakout")


def test_acknowledgement_is_a_copy_taken_at_acceptance(broker):
    order = broker.submit(Signal("2885", BUY, 1), None)
    order.qty = 1_000                       # a caller scribbling on it changes nothing
    broker.on_tick(tick(100.0))
    assert order.status == OPEN
    assert broker.position("2885").qty == 1


def test_no_pending_orders_is_the_allocation_free_fast_path(broker):
    assert broker.on_tick(tick(100.0, token="never-ordered")) is NO_FILLS
    trade(broker, BUY, 1, 100.0)
    assert broker.on_tick(tick(101.0)) is NO_FILLS
    assert broker.position("2885").last_price == 101.0   # still marked


def test_buy_limit_rests_until_crossed_then_fills_at_the_limit(broker):
    broker.submit(Signal("2885", BUY, 10, LIMIT, 99.5), None)
    assert broker.on_tick(tick(100.0)) == ()     # not crossed: now resting
    assert broker.on_tick(tick(99.75)) == ()
    (fill,) = broker.on_tick(tick(99.25))        # gaps through the limit
    assert fill.price == 99.5
    assert broker.position("2885").avg_price == 99.5


def test_marketable_buy_limit_fills_at_the_better_ltp(broker):
    broker.submit(Signal("2885", BUY, 10, LIMIT, 101.0), None)
    (fill,) = broker.on_tick(tick(100.0))
    assert fill.price == 100.0


def test_sell_limit_rests_until_crossed_then_fills_at_the_limit(broker):
    broker.submit(Signal("2885", SELL, 10, LIMIT, 101.0), None)
    assert broker.on_tick(tick(100.0)) == ()
    (fill,) = broker.on_tick(tick(101.5))
    assert (fill.side, fill.price) == (SELL, 101.0)
    assert broker.position("2885").qty == -10


def test_marketable_sell_limit_fills_at_the_better_ltp(broker):
    broker.submit(Signal("2885", SELL, 10, LIMIT, 99.0), None)
    (fill,) = broker.on_tick(tick(100.0))
    assert fill.price == 100.0


def test_one_tick_fills_several_orders_in_submission_order(broker):
    broker.submit(Signal("2885", BUY, 1), None)
    broker.submit(Signal("2885", SELL, 2, LIMIT, 200.0), None)
    broker.submit(Signal("2885", BUY, 3, LIMIT, 100.0), None)
    fills = broker.on_tick(tick(100.0))
    assert [f.order_id for f in fills] == ["P000001", "P000003"]
    assert [o.order_id for o in broker.open_orders()] == ["P000002"]


def test_limit_outside_the_circuit_band_is_rejected(broker):
    band = Quote(0, 100.0, 0, 0.0, 0.0, 100.0, 100.0, 100.0, 100.0,
                 upper_circuit=110.0, lower_circuit=90.0)
    on = tick(100.0, quote=band)
    too_high = broker.submit(Signal.buy(on, qty=1, limit=110.5), on)
    too_low = broker.submit(Signal.sell(on, qty=1, limit=89.5), on)
    inside = broker.submit(Signal.buy(on, qty=1, limit=110.0), on)
    assert (too_high.status, too_low.status, inside.status) == (REJECTED, REJECTED, OPEN)
    assert "upper circuit" in too_high.status_message
    assert [f.order_id for f in broker.on_tick(tick(100.0))] == [inside.order_id]


# -- positions and P&L ---------------------------------------------------------

def test_scaling_in_then_out_to_flat_realizes_pnl(broker):
    trade(broker, BUY, 10, 100.0)
    trade(broker, BUY, 10, 102.0)
    assert (broker.position("2885").qty, broker.position("2885").avg_price) == (20, 101.0)

    trade(broker, SELL, 5, 104.0)                 # closes 5 at +3
    position = broker.position("2885")
    assert (position.qty, position.avg_price, position.realized_pnl) == (15, 101.0, 15.0)

    trade(broker, SELL, 15, 100.0)                # closes 15 at -1
    position = broker.position("2885")
    assert (position.qty, position.avg_price, position.realized_pnl) == (0, 0.0, 0.0)
    assert (position.unrealized_pnl, position.total_pnl) == (0.0, 0.0)


def test_long_to_short_flip_opens_the_remainder_at_the_fill_price(broker):
    trade(broker, BUY, 10, 100.0)
    trade(broker, SELL, 15, 110.0)                # +100 on 10, then short 5 @ 110
    position = broker.position("2885")
    assert (position.qty, position.avg_price, position.realized_pnl) == (-5, 110.0, 100.0)

    broker.on_tick(tick(108.0))
    assert broker.position("2885").unrealized_pnl == 10.0

    trade(broker, BUY, 5, 105.0)                  # short covered 5 below entry
    position = broker.position("2885")
    assert (position.qty, position.realized_pnl) == (0, 125.0)


def test_unrealized_pnl_marks_with_the_last_tick(broker):
    trade(broker, BUY, 10, 100.0)
    broker.on_tick(tick(103.5))
    position = broker.position("2885")
    assert (position.last_price, position.unrealized_pnl, position.total_pnl) == (103.5, 35.0, 35.0)
    trade(broker, SELL, 4, 104.0, token="1594")   # another instrument, short
    broker.on_tick(tick(105.0, token="1594"))
    pnl = broker.pnl()
    assert {k: pnl[k] for k in ("realized", "unrealized", "total")} == {"realized": 0.0, "unrealized": 31.0,
                                                                        "total": 31.0}
    assert pnl["charges"] > 0 and pnl["net"] == 31.0 - pnl["charges"]     # total is gross; net after charges


def test_position_lookup_by_token_and_exchange(broker):
    assert broker.position("2885") is None
    broker.submit(Signal("2885", BUY, 1), None)
    assert broker.position("2885") is None         # ordered is not traded
    broker.on_tick(tick(100.0))
    broker.submit(Signal("2885", SELL, 2, exchange_type=NSE_FO), None)
    broker.on_tick(tick(50.0, exchange_type=NSE_FO))
    with pytest.raises(ValueError, match="pass exchange_type"):
        broker.position("2885")
    assert broker.position("2885", NSE_CM).qty == 1
    assert broker.position("2885", NSE_FO).qty == -2
    assert set(broker.positions) == {(NSE_CM, "2885"), (NSE_FO, "2885")}


# -- cancelling ----------------------------------------------------------------

def test_cancel(broker):
    order = broker.submit(Signal("2885", BUY, 1, LIMIT, 99.0), None)
    assert broker.cancel(order.order_id) is True
    assert broker.cancel(order.order_id) is False   # no longer open
    assert broker.cancel("P999999") is False        # unknown
    assert broker.on_tick(tick(98.0)) == ()
    assert broker.orders_df().status.tolist() == [CANCELLED]

    filled = broker.submit(Signal("2885", BUY, 1), None)
    broker.on_tick(tick(98.0))
    assert broker.cancel(filled.order_id) is False


def test_cancel_all(broker):
    broker.submit(Signal("2885", BUY, 1, LIMIT, 90.0), None)
    broker.submit(Signal("2885", SELL, 1, LIMIT, 110.0), None)
    broker.submit(Signal("1594", BUY, 1), None)
    trade(broker, BUY, 1, 100.0, token="11536")
    assert broker.cancel_all() == 3
    assert broker.open_orders() == []
    assert broker.cancel_all() == 0
    assert broker.on_tick(tick(80.0)) == () and broker.on_tick(tick(80.0, token="1594")) == ()
    assert broker.orders_df().status.tolist() == [CANCELLED] * 3 + [COMPLETE]


# -- tables and listeners ------------------------------------------------------

def test_dataframes_have_the_columns_even_when_empty(broker):
    assert list(broker.orders_df().columns) == ORDER_COLUMNS
    assert list(broker.fills_df().columns) == FILL_COLUMNS
    assert list(broker.positions_df().columns) == POSITION_COLUMNS
    assert len(broker.orders_df()) == len(broker.fills_df()) == len(broker.positions_df()) == 0
    for required in ("order_id", "token", "exchange_type", "side", "qty", "order_type", "limit_price",
                     "status", "filled_qty", "avg_price", "reason", "submit_ns", "tick_seq"):
        assert required in ORDER_COLUMNS
    for required in ("order_id", "token", "side", "qty", "price", "fill_ns", "tick_seq"):
        assert required in FILL_COLUMNS
    for required in ("token", "exchange_type", "qty", "avg_price", "last_price",
                     "realized_pnl", "unrealized_pnl", "total_pnl"):
        assert required in POSITION_COLUMNS


def test_dataframes_hold_one_row_per_order_fill_and_position(broker):
    trade(broker, BUY, 10, 100.0)
    trade(broker, SELL, 4, 101.0)
    broker.submit(Signal("1594", BUY, 1, LIMIT, 50.0), None)

    orders = broker.orders_df()
    assert orders.order_id.tolist() == ["P000001", "P000002", "P000003"]
    assert orders.status.tolist() == [COMPLETE, COMPLETE, OPEN]
    assert orders.submit_ns.is_monotonic_increasing

    fills = broker.fills_df()
    assert fills[["order_id", "side", "qty", "price"]].values.tolist() == [
        ["P000001", BUY, 10, 100.0], ["P000002", SELL, 4, 101.0]]

    positions = broker.positions_df()
    assert len(positions) == 1                      # 1594 was only ordered
    row = positions.iloc[0]
    assert (row.token, row.qty, row.avg_price, row.realized_pnl, row.unrealized_pnl) == (
        "2885", 6, 100.0, 4.0, 6.0)


def test_fill_listeners_are_called_after_each_fill(broker, caplog):
    heard = []

    def broken(fill):
        raise RuntimeError("journal is down")

    broker.add_fill_listener(broken)
    broker.add_fill_listener(heard.append)
    broker.submit(Signal("2885", BUY, 1), None)
    broker.submit(Signal("2885", BUY, 2), None)
    fills = broker.on_tick(tick(100.0))
    assert heard == list(fills) and len(heard) == 2
    assert "journal is down" in caplog.text

    broker.remove_fill_listener(heard.append)
    trade(broker, SELL, 3, 101.0)
    assert len(heard) == 2


def test_a_listener_may_call_back_into_the_broker(broker):
    """Listeners run outside the lock, so this must not deadlock."""
    seen = []
    broker.add_fill_listener(lambda fill: seen.append(broker.position(fill.token).qty))
    trade(broker, BUY, 7, 100.0)
    assert seen == [7]


# -- threads -------------------------------------------------------------------

@pytest.fixture
def eager_thread_switching():
    """Switch threads every 10 µs instead of 5 ms, so they interleave inside the broker."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.timeout(60)
def test_concurrent_submits_while_ticks_flow_fill_every_order_exactly_once(eager_thread_switching):
    """Four strategy threads submit, one feed thread ticks, one notebook thread reads."""
    broker = PaperBroker()
    tokens = ("2885", "1594")
    orders_per_thread = 500
    heard: list[Fill] = []
    broker.add_fill_listener(heard.append)
    expected_qty = {token: 0 for token in tokens}
    expected_lock = threading.Lock()
    start = threading.Barrier(4 + 2)
    submitters_done = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(body):
        def run():
            try:
                body()
            except BaseException as exc:  # surfaced by the main thread
                errors.append(exc)
                stop.set()
        return run

    def submitter(number: int):
        token = tokens[number % 2]
        rng = random.Random(number)
        start.wait()
        signed_total = 0
        for number_sent in range(orders_per_thread):
            side, qty = rng.choice((BUY, SELL)), rng.randint(1, 5)
            broker.submit(Signal(token, side, qty), None)
            signed_total += qty if side == BUY else -qty
            if number_sent % 5 == 0:
                time.sleep(0)   # let the feed fill some while the others keep submitting
        with expected_lock:
            expected_qty[token] += signed_total

    filled_while_submitting = []

    def feeder():
        start.wait()
        prices = itertools.cycle((100.0, 100.5, 99.75, 101.25))
        seq = itertools.count(1)
        while not stop.is_set():
            for token in tokens:
                fills = broker.on_tick(Tick(token, NSE_CM, 1, next(seq), 0, next(prices)))
                if fills and not submitters_done.is_set():
                    filled_while_submitting.extend(fills)
            if submitters_done.is_set() and not broker.open_orders():
                return

    def notebook():
        start.wait()
        while not stop.is_set() and not submitters_done.is_set():
            broker.pnl()
            broker.orders_df()
            broker.positions_df()
            time.sleep(0.001)

    workers = [threading.Thread(target=guarded(lambda n=n: submitter(n))) for n in range(4)]
    feed = threading.Thread(target=guarded(feeder))
    reader = threading.Thread(target=guarded(notebook))
    for thread in [*workers, feed, reader]:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    submitters_done.set()
    feed.join(timeout=30)
    stop.set()
    reader.join(timeout=30)
    assert not any(t.is_alive() for t in [*workers, feed, reader]), "a thread hung"
    assert not errors, errors

    orders, fills = broker.orders_df(), broker.fills_df()
    assert len(orders) == 4 * orders_per_thread
    assert (orders.status == COMPLETE).all()
    assert fills.order_id.is_unique and set(fills.order_id) == set(orders.order_id)
    assert [f.order_id for f in heard] == fills.order_id.tolist()
    assert filled_while_submitting, "the feed never filled while orders were coming in"
    for token in tokens:
        position = broker.position(token)
        assert position.qty == expected_qty[token]
        # The accounting agrees with plain cash flow: P&L = -Σ signed qty × price + qty × last.
        mine = fills[fills.token == token]
        signed = mine.qty.where(mine.side == BUY, -mine.qty)
        cash_pnl = -(signed * mine.price).sum() + position.qty * position.last_price
        # Compared to a paisa's millionth: both sides are float sums in a different order, and the
        # true P&L is often exactly zero, where approx()'s default 1e-12 absolute slack is too tight.
        assert position.total_pnl == pytest.approx(cash_pnl, abs=1e-6)
