"""The paper broker's stop-loss orders, brackets, GTT rules and modify; charges on every fill; slippage
models; the margin account; and a journal round trip of all of it. Driven by hand-made ticks.

The rules are the simulated exchange's (``kit.core.orders``): a stop waits for the first later tick
that reaches its trigger, a bracket's legs come from ``bracket_legs`` and cancel each other, a GTT
rule fires once when a tick crosses its trigger from where the price was at creation. Prices are
exact in binary where P&L is compared with ==.
"""
from __future__ import annotations

import itertools
import logging

import pandas as pd
import pytest

from kit.angel.instruments import InstrumentMaster
from kit.core.charges import Charges
from kit.broker.gtt import GTT_CANCELLED, GTT_COLUMNS, GTT_FIRED, GTT_NEW
from kit.core.margin import MarginAccount, margin_required
from kit.broker.paper import CANCELLED, COMPLETE, NO_FILLS, OPEN, POSITION_COLUMNS, REJECTED, PaperBroker
from kit.broker.risk import RiskLimits, RiskManager
from kit.broker.slippage import FixedTicks, LatencyTicks, NoSlippage, SpreadFraction
from kit.core.market import NSE_CM, NSE_FO
from kit.core.orders import bracket_legs
from kit.core.strategy import BUY, LIMIT, MARKET, ROBO, SELL, STOPLOSS, STOPLOSS_LIMIT, STOPLOSS_MARKET, Signal
from kit.core.tick import SNAP_QUOTE, Quote, Tick
from kit.store.journal import Journal

_seq = itertools.count(1)

OPTION, FUTURE = "43650", "35001"         # NFO tokens in the test master: an option (tick 0.05), a future (0.10)


def tick(ltp: float, token: str = "2885", exchange_type: int = NSE_CM, quote: Quote | None = None) -> Tick:
    return Tick(token, exchange_type, SNAP_QUOTE if quote else 1, next(_seq), 0, ltp, quote=quote)


def fake_clock():
    now = itertools.count(1_700_000_000_000_000_000, 1_000)
    return lambda: next(now)


def depth(bid: float, ask: float) -> Quote:
    """A SNAP_QUOTE with one level each side (and no circuit band)."""
    return Quote(0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, best_buy=((bid, 100, 1),), best_sell=((ask, 100, 1),))


def master() -> InstrumentMaster:
    return InstrumentMaster([
        {"token": OPTION, "symbol": "NIFTY25NOV2524000CE", "name": "NIFTY", "exch_seg": "NFO",
         "instrumenttype": "OPTIDX", "expiry": "25NOV2025", "strike": "2400000", "lotsize": "65", "tick_size": "5"},
        {"token": FUTURE, "symbol": "NIFTY25NOVFUT", "name": "NIFTY", "exch_seg": "NFO",
         "instrumenttype": "FUTIDX", "expiry": "25NOV2025", "strike": "-1", "lotsize": "65", "tick_size": "10"},
        {"token": "2885", "symbol": "RELIANCE-EQ", "name": "RELIANCE", "exch_seg": "NSE",
         "instrumenttype": "", "expiry": "", "strike": "-1", "lotsize": "1", "tick_size": "5"},
    ])


@pytest.fixture
def broker() -> PaperBroker:
    return PaperBroker(clock_ns=fake_clock(), charges=None)


def at(broker: PaperBroker, ltp: float, token: str = "2885", exchange_type: int = NSE_CM) -> Tick:
    """Feed one tick and return it (to submit against)."""
    t = tick(ltp, token, exchange_type)
    broker.on_tick(t)
    return t


def order(broker: PaperBroker, order_id: str):
    (row,) = [o for o in broker.orders_df().itertuples() if o.order_id == order_id]
    return row


# -- stop-loss orders ----------------------------------------------------------------

def test_a_stop_market_waits_for_the_first_later_tick_that_reaches_its_trigger_and_fills_at_its_ltp(broker):
    t = at(broker, 100.0)
    stop = broker.submit(Signal.stop_sell(t, qty=10, trigger=98.0), t)
    assert (stop.status, stop.order_type, stop.trigger_price, stop.variety) == (OPEN, STOPLOSS_MARKET, 98.0, STOPLOSS)
    assert broker.on_tick(tick(99.0)) == ()
    assert broker.on_tick(tick(98.5)) == ()
    (fill,) = broker.on_tick(tick(97.5))                       # gapped through: the tick's ltp, not the trigger
    assert (fill.order_id, fill.side, fill.price) == (stop.order_id, SELL, 97.5)
    assert broker.position("2885").qty == -10

    t = at(broker, 100.0)
    buy_stop = broker.submit(Signal.stop_buy(t, qty=10, trigger=101.0), t)
    assert broker.on_tick(tick(100.5)) == ()
    (fill,) = broker.on_tick(tick(101.0))                      # at the trigger counts as reached
    assert (fill.order_id, fill.price) == (buy_stop.order_id, 101.0)


def test_a_stop_the_last_price_already_reached_is_rejected_at_submit(broker):
    t = at(broker, 100.0)
    for signal in (Signal.stop_sell(t, qty=1, trigger=100.0), Signal.stop_buy(t, qty=1, trigger=99.5),
                   Signal.stop_sell(t, qty=1, trigger=101.0, limit=100.5)):
        rejected = broker.submit(signal, t)
        assert rejected.status == REJECTED and "already reached by the last price 100.0" in rejected.status_message
    # A notebook's first order, before the broker saw a tick: the tick it answers is the price.
    fresh = PaperBroker(charges=None)
    first = tick(50.0, token="1594")
    assert fresh.submit(Signal.stop_buy(first, qty=1, trigger=49.0), first).status == REJECTED
    assert broker.open_orders() == [] and broker.on_tick(tick(90.0)) is NO_FILLS


def test_nothing_fills_on_the_tick_an_order_was_submitted_on(broker):
    t = at(broker, 100.0)
    market = broker.submit(Signal.buy(t, qty=1), t)
    limit = broker.submit(Signal.buy(t, qty=1, limit=100.0), t)
    stop = broker.submit(Signal.stop_sell(t, qty=1, trigger=99.0), t)
    assert {o.status for o in (market, limit, stop)} == {OPEN}
    fills = broker.on_tick(tick(99.0))                          # the next tick: all three trade on it
    assert [(f.order_id, f.price) for f in fills] == [(market.order_id, 99.0), (limit.order_id, 99.0),
                                                     (stop.order_id, 99.0)]


def test_a_stop_limit_that_gaps_past_its_limit_rests_and_fills_at_the_limit_later(broker):
    t = at(broker, 100.0)
    stop = broker.submit(Signal.stop_sell(t, qty=10, trigger=98.0, limit=97.5), t)
    assert stop.order_type == STOPLOSS_LIMIT
    assert broker.on_tick(tick(97.0)) == ()                      # triggered, but 97.0 is below a SELL's 97.5
    assert broker.on_tick(tick(97.25)) == ()                     # still below: resting
    (fill,) = broker.on_tick(tick(98.0))                         # crossed: a resting order trades at its limit
    assert (fill.order_id, fill.price) == (stop.order_id, 97.5)


def test_a_stop_limit_marketable_on_its_triggering_tick_fills_at_that_ltp(broker):
    t = at(broker, 100.0)
    sell = broker.submit(Signal.stop_sell(t, qty=10, trigger=98.0, limit=97.5), t)
    buy = broker.submit(Signal.stop_buy(t, qty=10, trigger=102.0, limit=103.0), t)
    (fill,) = broker.on_tick(tick(97.75))                        # reaches 98.0 and is through 97.5
    assert (fill.order_id, fill.price) == (sell.order_id, 97.75)
    (fill,) = broker.on_tick(tick(102.5))
    assert (fill.order_id, fill.price) == (buy.order_id, 102.5)
    # Once triggered a stop-limit is a LIMIT: no trigger left to modify.
    t = at(broker, 100.0)
    late = broker.submit(Signal.stop_buy(t, qty=1, trigger=101.0, limit=101.0), t)
    assert broker.on_tick(tick(101.5)) == ()                     # triggered, above its limit: rests
    assert not broker.modify(late.order_id, trigger=102.0)
    (fill,) = broker.on_tick(tick(100.5))
    assert fill.price == 101.0


# -- brackets ----------------------------------------------------------------------------

def test_a_brackets_legs_are_placed_at_bracket_legs_prices_and_the_first_to_fill_cancels_the_other():
    broker = PaperBroker(clock_ns=fake_clock(), charges=None, instruments=master())
    t = at(broker, 100.0, FUTURE, NSE_FO)
    entry = broker.submit(Signal.buy(t, qty=65, target=2.0, stoploss=1.03), t)
    assert (entry.variety, entry.target, entry.stoploss, entry.order_type) == (ROBO, 2.0, 1.03, MARKET)
    (fill,) = broker.on_tick(tick(100.3, FUTURE, NSE_FO))
    target, stop = broker.open_orders()
    want = bracket_legs(BUY, 65, 100.3, 2.0, 1.03, 0.10)            # on the future's 0.10 grid
    assert (target.side, target.qty, target.order_type, target.limit_price) == (SELL, 65, LIMIT, want[0].limit_price)
    assert (stop.side, stop.qty, stop.order_type, stop.trigger_price) == (SELL, 65, STOPLOSS_MARKET,
                                                                        want[1].trigger_price)
    assert (target.limit_price, stop.trigger_price) == (102.3, 99.3)
    assert target.parent_id == stop.parent_id == entry.order_id and target.variety == stop.variety == ROBO
    # Only the stop counts as open exposure: the two exits are one-cancels-other.
    assert broker.exposure(FUTURE, NSE_FO) == 0

    assert broker.on_tick(tick(101.0, FUTURE, NSE_FO)) == ()
    (exit_fill,) = broker.on_tick(tick(99.2, FUTURE, NSE_FO))
    assert (exit_fill.order_id, exit_fill.price) == (stop.order_id, 99.2)
    cancelled = order(broker, target.order_id)
    assert cancelled.status == CANCELLED
    assert cancelled.status_message == f"bracket {entry.order_id}: its other leg {stop.order_id} filled at 99.2"
    assert broker.open_orders() == [] and broker.exposure(FUTURE, NSE_FO) == 0
    assert broker.position(FUTURE).realized_pnl == pytest.approx((99.2 - 100.3) * 65)
    assert broker.on_tick(tick(103.0, FUTURE, NSE_FO)) is NO_FILLS       # the target is gone


def test_cancelling_one_exit_leg_cancels_both_and_leaves_the_position(broker):
    t = at(broker, 100.0)
    entry = broker.submit(Signal.buy(t, qty=10, target=2.0, stoploss=1.0), t)
    broker.on_tick(tick(100.0))
    target, stop = broker.open_orders()
    assert broker.cancel(stop.order_id)
    assert broker.open_orders() == [] and order(broker, target.order_id).status == CANCELLED
    assert order(broker, target.order_id).status_message == (
        f"bracket {entry.order_id}: its other leg {stop.order_id} was cancelled")
    assert broker.position("2885").qty == 10 and broker.exposure("2885", NSE_CM) == 10
    assert broker.on_tick(tick(98.0)) is NO_FILLS and broker.on_tick(tick(103.0)) is NO_FILLS


def test_a_sell_brackets_target_fills_and_its_stop_is_cancelled(broker):
    t = at(broker, 100.0)
    broker.submit(Signal.sell(t, qty=10, limit=100.5, target=1.5, stoploss=0.5), t)
    assert broker.on_tick(tick(100.25)) == ()                      # below a SELL's limit: rests
    (fill,) = broker.on_tick(tick(101.0))                          # crossed while resting: at its limit
    assert fill.price == 100.5
    target, stop = broker.open_orders()
    assert (target.side, target.limit_price, stop.side, stop.trigger_price) == (BUY, 99.0, BUY, 101.0)
    (fill,) = broker.on_tick(tick(99.0))
    assert fill.order_id == target.order_id and order(broker, stop.order_id).status == CANCELLED
    assert broker.position("2885").qty == 0 and broker.pnl()["realized"] == 15.0


def test_a_brackets_legs_are_judged_from_the_tick_after_the_entrys_fill(broker):
    t = at(broker, 100.0)
    entry = broker.submit(Signal.buy(t, qty=1, limit=100.0, target=0.5, stoploss=1.0), t)
    assert broker.on_tick(tick(100.25)) == ()                      # above a BUY's limit: rests
    # A gap down through the limit fills the entry at 100.0; the tick is already below the
    # stop leg's trigger (99.0), but the leg did not exist when it printed.
    (fill,) = broker.on_tick(tick(98.0))
    assert (fill.order_id, fill.price) == (entry.order_id, 100.0)
    assert len(broker.open_orders()) == 2
    (fill,) = broker.on_tick(tick(98.0))
    assert fill.price == 98.0 and order(broker, fill.order_id).order_type == STOPLOSS_MARKET


def test_cancelling_a_bracket_entry_before_it_fills_cancels_it_and_places_no_legs(broker):
    t = at(broker, 100.0)
    entry = broker.submit(Signal.buy(t, qty=1, limit=99.0, target=1.0, stoploss=1.0), t)
    assert broker.cancel(entry.order_id)
    assert broker.on_tick(tick(98.0)) is NO_FILLS
    assert broker.open_orders() == [] and len(broker.orders_df()) == 1


# -- GTT rules ------------------------------------------------------------------------------

def test_a_gtt_rule_is_created_listed_modified_fired_once_and_its_order_judged_on_the_firing_tick(broker):
    with pytest.raises(ValueError, match="no price seen yet for token 2885"):
        broker.gtt.create("2885", NSE_CM, BUY, 10, trigger=101.0, price=101.5)
    at(broker, 100.0)
    with pytest.raises(ValueError, match="GTT rule refused: qty"):
        broker.gtt.create("2885", NSE_CM, BUY, 0, trigger=101.0, price=101.5)
    first = broker.gtt.create("2885", NSE_CM, BUY, 10, trigger=101.0, price=101.5)
    second = broker.gtt.create("2885", NSE_CM, SELL, 5, trigger=95.0, price=94.5, product="INTRADAY")
    assert [r.rule_id for r in broker.gtt.rules()] == [second, first]          # newest first
    assert list(broker.gtt.rules_df().columns) == GTT_COLUMNS
    assert broker.gtt.rules()[1].status == GTT_NEW and broker.gtt.rules()[0].product == "INTRADAY"

    broker.gtt.modify(first, trigger=102.0, price=102.5)
    assert broker.on_tick(tick(101.5)) is NO_FILLS and broker.gtt.rules((GTT_NEW,))[1].rule_id == first
    # Crosses upwards: the rule fires and its order, placed at once as the exchange does, is marketable
    # at this tick's price and fills there.
    (fill,) = broker.on_tick(tick(102.0))
    (fired,) = broker.gtt.rules((GTT_FIRED,))
    placed = order(broker, fired.order_id)
    assert (fired.rule_id, placed.order_type, placed.side, placed.qty, placed.limit_price, placed.status) == (
        first, LIMIT, BUY, 10, 102.5, COMPLETE)
    assert (fill.order_id, fill.price) == (fired.order_id, 102.0)
    assert broker.on_tick(tick(102.25)) is NO_FILLS                  # fired once
    with pytest.raises(ValueError, match=f"GTT rule {first} is SENTTOEXCHANGE .*only a waiting"):
        broker.gtt.modify(first, trigger=103.0)
    with pytest.raises(ValueError, match="SENTTOEXCHANGE"):
        broker.gtt.cancel(first)

    broker.gtt.cancel(second)
    assert broker.gtt.rules((GTT_CANCELLED,))[0].rule_id == second
    assert broker.on_tick(tick(90.0)) is NO_FILLS                    # a cancelled rule never fires
    with pytest.raises(ValueError, match="CANCELLED"):
        broker.gtt.cancel(second)
    with pytest.raises(ValueError, match="unknown"):
        broker.gtt.modify("G999999", qty=1)


def test_a_gtt_rule_fires_downwards_when_its_trigger_was_below_the_price(broker):
    at(broker, 100.0)
    rule = broker.gtt.create("2885", NSE_CM, SELL, 5, trigger=95.0, price=94.5)
    assert broker.on_tick(tick(105.0)) is NO_FILLS and broker.gtt.rules()[0].status == GTT_NEW
    broker.on_tick(tick(94.0))
    (fired,) = broker.gtt.rules()
    assert fired.status == GTT_FIRED and fired.order_id
    # Placed when the price was 94.0, below the SELL's 94.5: it rests, and a tick through it fills it at 94.5.
    (fill,) = broker.on_tick(tick(94.75))
    assert fill.price == 94.5
    assert broker.gtt.cancel_created() == 0
    other = broker.gtt.create("2885", NSE_CM, BUY, 1, trigger=99.0, price=99.0)
    assert broker.gtt.cancel_created() == 1 and broker.gtt.rules((GTT_NEW,)) == []
    assert rule != other


def test_a_gtt_rule_leaves_other_instruments_on_the_lock_free_path(broker):
    at(broker, 100.0)
    broker.gtt.create("2885", NSE_CM, BUY, 1, trigger=110.0, price=110.0)
    at(broker, 50.0, token="1594")
    assert broker.on_tick(tick(50.5, token="1594")) is NO_FILLS
    assert broker.submit(Signal("2885", BUY, 1), None).status == OPEN
    assert broker.cancel_all() == 1 and len(broker.gtt.rules((GTT_NEW,))) == 1    # rules are not orders


# -- modify --------------------------------------------------------------------------------

def test_modify_a_stops_trigger_changes_when_it_fires(broker, caplog):
    t = at(broker, 100.0)
    stop = broker.submit(Signal.stop_sell(t, qty=10, trigger=95.0), t)
    assert broker.on_tick(tick(97.0)) == ()
    assert broker.modify(stop.order_id, trigger=96.5)                  # trail it up: still below the price
    (fill,) = broker.on_tick(tick(96.5))
    assert (fill.order_id, fill.price) == (stop.order_id, 96.5)
    assert order(broker, stop.order_id).trigger_price == 96.5

    t = at(broker, 100.0)
    stop = broker.submit(Signal.stop_sell(t, qty=10, trigger=95.0), t)
    with caplog.at_level(logging.WARNING, logger="kit.broker.paper"):
        assert not broker.modify(stop.order_id, trigger=100.5)         # the price already reached it
        assert not broker.modify(stop.order_id, price=94.0)            # a stop-market has no limit
        assert not broker.modify("P999999", qty=5)
        assert not broker.modify(stop.order_id)
    assert "already reached by the last price 100.0" in caplog.text
    assert "a STOPLOSS_MARKET order has no limit price" in caplog.text
    assert broker.open_orders()[0].trigger_price == 95.0


def test_modify_a_limits_price_and_quantity(broker):
    t = at(broker, 100.0)
    limit = broker.submit(Signal.buy(t, qty=10, limit=98.0), t)
    assert broker.on_tick(tick(99.0)) == ()                            # resting
    assert broker.modify(limit.order_id, qty=20) and broker.exposure("2885", NSE_CM) == 20
    assert not broker.modify(limit.order_id, trigger=97.0)              # a LIMIT has no trigger
    assert not broker.modify(limit.order_id, qty=0)
    assert broker.modify(limit.order_id, price=99.5)                    # now marketable: judged as new
    (fill,) = broker.on_tick(tick(99.0))
    assert (fill.qty, fill.price) == (20, 99.0)
    assert not broker.modify(limit.order_id, price=99.0)               # filled: nothing to modify


# -- charges --------------------------------------------------------------------------------

def test_every_fill_carries_for_fills_charges_and_pnl_net_is_total_less_charges():
    broker = PaperBroker(clock_ns=fake_clock())                         # charges on by default
    model = Charges()
    t = at(broker, 120.5, OPTION, NSE_FO)
    broker.submit(Signal.buy(t, qty=65), t)
    (buy,) = broker.on_tick(tick(120.5, OPTION, NSE_FO))
    assert buy.charges == model.for_fill(NSE_FO, OPTION, BUY, 65, 120.5).total == pytest.approx(26.633899305)
    t = tick(140.0, OPTION, NSE_FO)
    broker.on_tick(t)
    broker.submit(Signal.sell(t, qty=65), t)
    (sell,) = broker.on_tick(tick(140.0, OPTION, NSE_FO))
    assert sell.charges == model.for_fill(NSE_FO, OPTION, SELL, 65, 140.0).total

    pnl = broker.pnl()
    assert pnl["total"] == pnl["realized"] == pytest.approx((140.0 - 120.5) * 65)
    assert pnl["charges"] == pytest.approx(buy.charges + sell.charges)
    assert pnl["net"] == pnl["total"] - pnl["charges"]
    position = broker.position(OPTION)
    assert position.charges == pnl["charges"] and position.total_pnl == pnl["total"]
    assert POSITION_COLUMNS[-1] == "charges"
    assert broker.positions_df()["charges"].iloc[0] == pnl["charges"]
    assert broker.fills_df()["charges"].tolist() == [buy.charges, sell.charges]


def test_the_product_and_the_masters_instrument_type_pick_the_charges_segment():
    model = Charges()
    delivery = PaperBroker(product="DELIVERY")
    t = at(delivery, 1500.0)
    delivery.submit(Signal.buy(t, qty=100), t)
    (fill,) = delivery.on_tick(tick(1500.0))
    assert fill.charges == model.for_fill(NSE_CM, "2885", BUY, 100, 1500.0, "DELIVERY").total
    assert fill.charges != model.for_fill(NSE_CM, "2885", BUY, 100, 1500.0, "INTRADAY").total

    futures = PaperBroker(instruments=master())
    t = at(futures, 24000.0, FUTURE, NSE_FO)
    futures.submit(Signal.sell(t, qty=65), t)
    (fill,) = futures.on_tick(tick(24000.0, FUTURE, NSE_FO))
    assert fill.charges == model.for_fill(NSE_FO, "NFO_FUT", SELL, 65, 24000.0).total

    off = PaperBroker(charges=None)
    t = at(off, 100.0)
    off.submit(Signal.buy(t, qty=1), t)
    (fill,) = off.on_tick(tick(100.0))
    assert fill.charges == 0.0 and off.pnl()["net"] == off.pnl()["total"]


def test_the_daily_loss_limit_counts_charges():
    risk = RiskManager(RiskLimits(max_daily_loss=1_000))
    broker = PaperBroker()
    t = at(broker, 100.0)
    broker.submit(Signal.buy(t, qty=65), t)
    broker.on_tick(tick(100.0))
    broker.on_tick(tick(84.75))                                     # gross -15.25 x 65 = -991.25: inside the limit
    pnl = broker.pnl()
    assert pnl["total"] > -1_000 > pnl["net"]                       # ... but not after the entry's charges
    assert risk.check(Signal.buy(tick(84.75), 65), None, broker).startswith(f"daily loss {-pnl['net']:,.2f}")


# -- slippage -------------------------------------------------------------------------------

def test_fixed_ticks_slips_market_and_triggered_stop_fills_but_never_a_limit():
    broker = PaperBroker(charges=None, slippage=FixedTicks(2))
    t = at(broker, 100.0)
    buy = broker.submit(Signal.buy(t, qty=1), t)
    sell = broker.submit(Signal.sell(t, qty=1), t)
    limit = broker.submit(Signal.buy(t, qty=1, limit=100.0), t)
    prices = {f.order_id: f.price for f in broker.on_tick(tick(100.0))}
    assert prices == {buy.order_id: 100.1, sell.order_id: 99.9, limit.order_id: 100.0}    # 2 × ₹0.05
    t = at(broker, 100.0)
    stop = broker.submit(Signal.stop_sell(t, qty=1, trigger=99.0), t)
    resting = broker.submit(Signal.sell(t, qty=1, limit=100.5), t)
    assert broker.on_tick(tick(100.25)) == ()
    fills = {f.order_id: f.price for f in broker.on_tick(tick(100.75))}
    assert fills == {resting.order_id: 100.5}                        # a resting limit: its own price
    (fill,) = broker.on_tick(tick(98.75))
    assert (fill.order_id, fill.price) == (stop.order_id, 98.65)

    # The master's tick size when it has one: the future's ₹0.10.
    graded = PaperBroker(charges=None, slippage=FixedTicks(1), instruments=master())
    t = at(graded, 24000.0, FUTURE, NSE_FO)
    graded.submit(Signal.buy(t, qty=65), t)
    (fill,) = graded.on_tick(tick(24000.0, FUTURE, NSE_FO))
    assert fill.price == 24000.1


def test_spread_fraction_pays_part_of_the_quoted_spread_when_the_tick_has_depth():
    broker = PaperBroker(charges=None, slippage=SpreadFraction(0.5))
    t = at(broker, 100.0)
    buy = broker.submit(Signal.buy(t, qty=1), t)
    sell = broker.submit(Signal.sell(t, qty=1), t)
    fills = broker.on_tick(tick(100.0, quote=depth(99.75, 100.25)))    # spread 0.5
    assert {f.order_id: f.price for f in fills} == {buy.order_id: 100.25, sell.order_id: 99.75}
    t = at(broker, 100.0)
    broker.submit(Signal.buy(t, qty=1), t)
    (fill,) = broker.on_tick(tick(100.5))                               # no depth: the printed price
    assert fill.price == 100.5


def test_latency_ticks_judges_an_order_n_ticks_of_its_instrument_after_submission():
    broker = PaperBroker(charges=None, slippage=LatencyTicks(3))
    t = at(broker, 100.0)
    market = broker.submit(Signal.buy(t, qty=1), t)
    limit = broker.submit(Signal.sell(t, qty=1, limit=100.0), t)
    assert broker.on_tick(tick(101.0)) == ()                            # 1st
    assert broker.on_tick(tick(50.0, token="1594")) is NO_FILLS         # another instrument's tick: not counted
    assert broker.on_tick(tick(101.5)) == ()                            # 2nd
    fills = broker.on_tick(tick(100.5))                                 # 3rd: both judged, as on a next tick
    assert {f.order_id: f.price for f in fills} == {market.order_id: 100.5, limit.order_id: 100.5}
    # LatencyTicks(n, then=...) is late and priced by the other model.
    both = PaperBroker(charges=None, slippage=LatencyTicks(2, then=FixedTicks(1)))
    t = at(both, 100.0)
    both.submit(Signal.buy(t, qty=1), t)
    assert both.on_tick(tick(100.0)) == ()
    assert both.on_tick(tick(100.0))[0].price == 100.05
    assert PaperBroker().slippage == NoSlippage()
    with pytest.raises(ValueError):
        LatencyTicks(0)
    with pytest.raises(TypeError, match="slippage takes"):
        PaperBroker(slippage="fast")


# -- the margin account --------------------------------------------------------------------

def test_the_margin_account_refuses_what_it_cannot_carry_and_always_lets_an_exit_through():
    broker = PaperBroker(charges=None, capital=10_000)
    t = at(broker, 100.0)
    assert broker.account() == {"capital": 10_000, "blocked": 0.0, "pnl_net": 0.0, "available": 10_000}
    too_big = broker.submit(Signal.buy(t, qty=600), t)                   # 20 % of ₹60,000 = ₹12,000
    assert too_big.status == REJECTED
    assert too_big.status_message == MarginAccount(10_000).shortfall(12_000, 0.0, 0.0)
    assert too_big.status_message.startswith("insufficient margin: the order needs ₹12,000.00")

    held = broker.submit(Signal.buy(t, qty=400), t)                      # ₹8,000 of margin
    assert held.status == OPEN
    resting = broker.submit(Signal.buy(t, qty=100, limit=90.0), t)       # another ₹1,800 while open
    assert resting.status == OPEN and broker.account()["blocked"] == pytest.approx(9_800)
    assert broker.submit(Signal.buy(t, qty=20), t).status == REJECTED    # ₹400 more than the ₹200 left
    broker.on_tick(tick(100.0))
    assert broker.cancel(resting.order_id)

    broker.on_tick(tick(60.0))                                           # -₹16,000: less than nothing available
    account = broker.account()
    assert account["pnl_net"] == -16_000 and account["available"] == 10_000 - 16_000 - 8_000
    t = tick(60.0)
    broker.on_tick(t)
    assert broker.submit(Signal.buy(t, qty=1), t).status == REJECTED
    exit_order = broker.submit(Signal.sell(t, qty=400), t)               # an exit needs no margin
    assert exit_order.status == OPEN
    flip = broker.submit(Signal.sell(t, qty=10), t)                      # the open exit covers the position:
    assert flip.status == REJECTED                                       # this one would open a short
    assert margin_required(NSE_CM, "INTRADAY", SELL, 10, 60.0) == 120.0


def test_margin_uses_the_masters_instrument_type_and_strike():
    broker = PaperBroker(charges=None, capital=50_000, instruments=master())
    t = at(broker, 120.0, OPTION, NSE_FO)
    bought = broker.submit(Signal.buy(t, qty=65), t)                     # an option buy: the premium, ₹7,800
    assert bought.status == OPEN and broker.account()["blocked"] == pytest.approx(7_800)
    t = tick(120.0, OPTION, NSE_FO)
    broker.on_tick(t)                                                    # held at 120: still ₹7,800
    assert broker.account()["blocked"] == pytest.approx(7_800)
    sold = broker.submit(Signal.sell(t, qty=130), t)                     # 65 of it closes; 65 written: strike
    assert sold.status == REJECTED and "needs ₹234,000.00" in sold.status_message   # 15 % × 24,000 × 65


# -- the journal ------------------------------------------------------------------------------

class FlakyJournal:
    """A journal that refuses the record kinds in ``refuse`` (as a full disk would)."""

    def __init__(self, journal: Journal, refuse: set[str]):
        self.journal, self.refuse = journal, refuse

    def record(self, kind, **changes):
        if kind in self.refuse:
            raise OSError(f"no space left for {kind}")
        return self.journal.record(kind, **changes)

    def __getattr__(self, name):
        return getattr(self.journal, name)


def test_a_bracket_its_legs_charges_a_triggered_stop_and_gtt_rules_survive_a_restart(tmp_path):
    path = tmp_path / "paper.sqlite"
    first = PaperBroker(clock_ns=fake_clock(), journal=Journal(path, synchronous="NORMAL"))
    t = at(first, 100.0)
    entry = first.submit(Signal.buy(t, qty=10, target=2.0, stoploss=1.0), t)
    first.on_tick(tick(100.0))                                           # entry fills; legs 102 / 99
    stop_limit = first.submit(Signal.stop_sell(t, qty=5, trigger=99.5, limit=99.25), t)
    first.on_tick(tick(99.1))                                            # triggered, below its limit: rests
    trailing = first.submit(Signal.stop_buy(t, qty=5, trigger=101.5), t)
    assert first.modify(trailing.order_id, trigger=101.0)
    rule = first.gtt.create("2885", NSE_CM, BUY, 3, trigger=101.5, price=101.75)
    assert first.on_tick(tick(99.2)) == ()                               # crosses nothing: the mark
    before = {"orders": first.orders_df(), "fills": first.fills_df(), "positions": first.positions_df(),
              "pnl": first.pnl(), "rules": first.gtt.rules()}
    assert first.fills_df()["charges"].gt(0).all()
    first.close()

    again = PaperBroker(clock_ns=fake_clock(), journal=Journal(path, synchronous="NORMAL"))
    assert again.restored == {"orders": 5, "active": 4, "fills": 1, "positions": 1, "gtt_rules": 1}
    assert again.on_tick(tick(99.2)) == ()                               # marked where the first one was
    pd.testing.assert_frame_equal(again.orders_df(), before["orders"])
    pd.testing.assert_frame_equal(again.fills_df(), before["fills"])
    pd.testing.assert_frame_equal(again.positions_df(), before["positions"])
    assert again.pnl() == pytest.approx(before["pnl"]) and again.pnl()["charges"] > 0
    assert again.gtt.rules() == before["rules"]
    legs = [o for o in again.open_orders() if o.parent_id == entry.order_id]
    assert [(o.order_type, o.limit_price, o.trigger_price) for o in legs] == [(LIMIT, 102.0, None),
                                                                              (STOPLOSS_MARKET, None, 99.0)]
    fills = again.on_tick(tick(99.5))                      # the stop-limit stayed triggered: crossed, at its limit
    assert [(f.order_id, f.price) for f in fills] == [(stop_limit.order_id, 99.25)]
    fills = again.on_tick(tick(101.0))                     # the modified trigger; the rule is not crossed yet
    assert [(f.order_id, f.price) for f in fills] == [(trailing.order_id, 101.0)]
    fills = again.on_tick(tick(102.0))                     # the target (the stop is cancelled); the rule fires
    assert [f.order_id for f in fills] == [legs[0].order_id]
    assert order(again, legs[1].order_id).status == CANCELLED
    (fired,) = again.gtt.rules()
    assert fired.rule_id == rule and fired.status == GTT_FIRED and fired.order_id == "P000006"
    again.close()

    third = PaperBroker(clock_ns=fake_clock(), journal=Journal(path, synchronous="NORMAL"))
    assert third.gtt.rules()[0].status == GTT_FIRED and third.open_orders()[0].order_id == "P000006"
    assert third.pnl() == pytest.approx(again.pnl())
    third.close()


def test_a_restart_mends_a_bracket_the_journal_left_half_done(tmp_path):
    path = tmp_path / "paper.sqlite"
    journal = Journal(path, synchronous="NORMAL")
    # The legs of the first bracket never reach the journal; the second's sibling cancel does not either.
    broker = PaperBroker(clock_ns=fake_clock(), journal=FlakyJournal(journal, {"paper_bracket_leg"}))
    t = at(broker, 100.0)
    first = broker.submit(Signal.buy(t, qty=1, target=5.0, stoploss=5.0), t)
    broker.on_tick(tick(100.0))
    assert len(broker.open_orders()) == 2                                  # kept in memory all the same
    broker.journal = FlakyJournal(journal, {"paper_cancel"})
    second = broker.submit(Signal.sell(t, qty=1, target=1.0, stoploss=1.0), tick(100.0))
    broker.on_tick(tick(100.0))
    broker.on_tick(tick(99.0))                                             # the second's target fills
    assert [o.parent_id for o in broker.open_orders()] == [first.order_id] * 2
    journal.close()

    again = PaperBroker(clock_ns=fake_clock(), journal=Journal(path, synchronous="NORMAL"))
    mended = again.open_orders()
    assert [(o.parent_id, o.order_type) for o in mended] == [(first.order_id, LIMIT),
                                                             (first.order_id, STOPLOSS_MARKET)]
    assert (mended[0].limit_price, mended[1].trigger_price) == (105.0, 95.0)
    assert [o.status for o in again.orders_df().itertuples() if o.parent_id == second.order_id] == [
        COMPLETE, CANCELLED]
    (fill,) = again.on_tick(tick(106.0))
    assert fill.order_id == mended[0].order_id and order(again, mended[1].order_id).status == CANCELLED
    again.close()


# -- the engine -------------------------------------------------------------------------------

def test_trader_config_hands_capital_charges_and_slippage_to_the_paper_broker(in_tmp_cwd):
    import kit
    from kit.bench.replay import synthetic_ticks
    from kit.store.recording import table_to_frame

    ticks = table_to_frame(synthetic_ticks(200, tokens=1))
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False),
                                             slippage=FixedTicks(2), capital=250_000, charges=None,
                                             product="DELIVERY"))
    try:
        broker = trader.broker
        assert broker.slippage == FixedTicks(2) and broker.charges is None and broker.product == "DELIVERY"
        assert broker.account()["capital"] == 250_000
    finally:
        trader.close()
    default = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False)))
    try:
        assert isinstance(default.broker.charges, Charges) and default.broker.slippage == NoSlippage()
        assert default.broker.margin_account is None and default.broker.account()["available"] is None
    finally:
        default.close()
    with pytest.raises(ValueError, match="capital"):
        kit.TraderConfig(capital=0)
    with pytest.raises(TypeError, match="slippage takes"):
        kit.TraderConfig(slippage=2)


def test_a_backtest_reports_the_brokers_own_charges(in_tmp_cwd):
    from kit.bench.replay import synthetic_ticks
    from kit.research.backtest import backtest
    from kit.research.examples import SmaCross
    from kit.store.recording import table_to_frame

    ticks = table_to_frame(synthetic_ticks(1500, tokens=2))
    result = backtest(SmaCross(3, 8), ticks, progress=False)
    report = result.pnl_after_charges()
    assert report["charges"] == result.pnl["charges"] == pytest.approx(result.fills["charges"].sum())
    assert report["net"] == result.pnl["net"] == result.net_pnl
    assert result.summary()["net_pnl"] == result.pnl["net"]
    assert result.equity["net"].iloc[-1] == pytest.approx(result.pnl["net"])
    assert sum(report[c] for c in ("brokerage", "stt", "exchange", "ipft", "sebi", "stamp", "gst")) == \
        pytest.approx(report["charges"])

    slipped = backtest(SmaCross(3, 8), ticks, progress=False, charges=None, slippage=FixedTicks(1))
    assert slipped.pnl["charges"] == 0 and slipped.pnl_after_charges()["net"] == slipped.pnl["total"]
    assert len(slipped.fills) == len(result.fills)
    assert ((slipped.fills["price"] - result.fills["price"]).abs().round(2) == 0.05).all()


def test_a_limit_the_price_does_not_reach_when_placed_rests_at_once_as_at_the_exchange(broker):
    t = at(broker, 100.0)
    away = broker.submit(Signal.buy(t, qty=1, limit=99.0), t)            # 100 > 99: rests on arrival
    through = broker.submit(Signal.buy(t, qty=1, limit=101.0), t)        # marketable: the next tick's ltp
    fills = broker.on_tick(tick(98.5))                                    # a gap through both
    assert {f.order_id: f.price for f in fills} == {away.order_id: 99.0, through.order_id: 98.5}
    # A bracket's target is placed at the fill, away from the price: a gap through it earns nothing either.
    t = at(broker, 100.0)
    broker.submit(Signal.sell(t, qty=1, target=1.0, stoploss=1.0), t)
    broker.on_tick(tick(100.0))
    (fill,) = broker.on_tick(tick(98.0))
    assert (order(broker, fill.order_id).order_type, fill.price) == (LIMIT, 99.0)
