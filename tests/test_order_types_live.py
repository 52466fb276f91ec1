"""Stop-loss, bracket and GTT orders, margins and charges, live: the kit's real clients against the simulator.

The price path is set tick by tick (``Simulator.trade_at``, the simulator at rate 0), so each test knows
which tick crosses which trigger.
"""
from __future__ import annotations

import time

import pytest

import kit
from conftest import wait_until
from kit.broker.gtt import GTT_CANCELLED, GTT_FIRED, GTT_NEW
from kit.broker.gtt_live import GttRefused
from kit.broker.live import PENDING
from kit.broker.risk import RiskLimits
from kit.store.journal import Journal

pytestmark = pytest.mark.timeout(180)

TOKEN, EX, LOT = "43650", 2, 65
CASH = "2885"          # RELIANCE-EQ, NSE
LIMITS = RiskLimits(max_daily_loss=1_000_000, enforce_hours="never", price_collar=None)


def live_trader(sim, journal, *, tokens=None, **config) -> kit.LiveTrader:
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, tokens=tokens or {EX: [TOKEN]}, risk=LIMITS,
                                             journal=kit.JournalConfig(str(journal)),
                                             name=f"types-{time.monotonic_ns()}", **config),
                            venue=kit.SimVenue(simulator=sim))
    trader.start()
    assert trader.wait_connected(10) and trader.broker.wait_ready(10)
    sim.wait_for_subscribers(1)
    trader.arm_live(confirm=sim.rest.credentials.client_code)
    return trader


def trade_at(sim, trader, price, token=TOKEN, ex=EX):
    """One tick at ``price``, seen by the trader before this returns."""
    before = trader.ticks_processed
    sim.trade_at(ex, token, price)
    assert wait_until(lambda: trader.ticks_processed > before, 10)


def a_tick(sim, token=TOKEN, ex=EX) -> kit.Tick:
    return kit.Tick(token, ex, 1, 0, 0, sim.last_price(ex, token))


def status_is(broker, order_id, status) -> bool:
    order = broker.order(order_id)
    return order is not None and order.status == status


def at_exchange(sim, broker_order_id) -> dict:
    return next(o for o in sim.orders.order_book() if o["orderid"] == broker_order_id)


@pytest.fixture
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("journal") / "journal.sqlite"


def test_a_stop_loss_triggers_on_the_tick_that_crosses_it_and_a_modified_trigger_reaches_the_exchange(
        sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    broker = trader.broker
    try:
        trade_at(sim, trader, 300.0)
        stop, reason = trader.submit(kit.Signal.stop_sell(a_tick(sim), LOT, trigger=295.0))
        assert reason is None and stop.status == PENDING and stop.variety == "STOPLOSS"
        assert wait_until(lambda: status_is(broker, stop.order_id, "OPEN") and broker.order(stop.order_id).broker_order_id)
        row = at_exchange(sim, broker.order(stop.order_id).broker_order_id)
        assert (row["variety"], row["ordertype"], row["triggerprice"]) == ("STOPLOSS", "STOPLOSS_MARKET", 295.0)

        assert broker.modify(stop.order_id, trigger=297.0)
        assert wait_until(lambda: broker.order(stop.order_id).trigger_price == 297.0), broker.orders_df()
        assert at_exchange(sim, broker.order(stop.order_id).broker_order_id)["triggerprice"] == 297.0
        assert not broker.modify(stop.order_id, trigger=301.0)          # already reached: refused before sending

        trade_at(sim, trader, 297.5)          # above the new trigger: still waiting
        assert broker.order(stop.order_id).status == "OPEN" and not broker.fills_df().shape[0]
        trade_at(sim, trader, 296.9)          # the first tick at or below 297.00
        assert wait_until(lambda: status_is(broker, stop.order_id, "COMPLETE"))
        fill = broker.fills_df().iloc[0]
        assert (fill.side, fill.qty, fill.price) == ("SELL", LOT, 296.9)
        assert fill.charges > 0 and broker.position(TOKEN, EX).qty == -LOT
    finally:
        trader.close()


def test_a_stop_already_through_the_market_is_refused_before_it_is_sent(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    try:
        trade_at(sim, trader, 300.0)
        order, reason = trader.submit(kit.Signal.stop_buy(a_tick(sim), LOT, trigger=299.0))
        assert order.status == "REJECTED" and "already reached" in order.status_message
        assert sim.orders.order_book() == []
    finally:
        trader.close()


def test_a_brackets_target_and_stop_cancel_each_other(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    broker = trader.broker
    try:
        trade_at(sim, trader, 300.0)
        entry, reason = trader.submit(kit.Signal.buy(a_tick(sim), LOT, limit=299.0, target=3.0, stoploss=2.0))
        assert reason is None
        assert wait_until(lambda: status_is(broker, entry.order_id, "OPEN") and broker.order(entry.order_id).broker_order_id)
        trade_at(sim, trader, 298.9)          # the entry rests at 299.00 and fills there
        legs = lambda: [o for o in broker.orders_df().itertuples() if o.parent_id == entry.order_id]  # noqa: E731
        assert wait_until(lambda: len(legs()) == 2 and all(o.status == "OPEN" for o in legs())), broker.orders_df()
        by_type = {o.order_type: o for o in legs()}
        assert by_type["LIMIT"].limit_price == 302.0 and by_type["STOPLOSS_MARKET"].trigger_price == 297.0
        assert broker.exposure(TOKEN, EX) == 0          # one of the two exits counts, not both
        trade_at(sim, trader, 302.1)          # the target fills at 302.00; the stop is cancelled
        assert wait_until(lambda: {o.order_type: o.status for o in legs()} ==
                          {"LIMIT": "COMPLETE", "STOPLOSS_MARKET": "CANCELLED"}), broker.orders_df()
        assert broker.position(TOKEN, EX).qty == 0
        pnl = broker.pnl()
        assert pnl["realized"] == pytest.approx(3.0 * LOT) and pnl["net"] == pytest.approx(pnl["total"] - pnl["charges"])
        trade_at(sim, trader, 296.0)          # the cancelled stop stays cancelled
        assert broker.position(TOKEN, EX).qty == 0
        # A second bracket: cancelling one exit leg cancels both, as on paper; the position stays.
        again, _ = trader.submit(kit.Signal.buy(a_tick(sim), LOT, limit=295.5, target=3.0, stoploss=2.0))
        assert wait_until(lambda: status_is(broker, again.order_id, "OPEN") and broker.order(again.order_id).broker_order_id)
        trade_at(sim, trader, 295.0)
        assert wait_until(lambda: broker.order(f"{again.order_id}-S") is not None
                          and broker.order(f"{again.order_id}-S").status == "OPEN")
        assert broker.cancel(f"{again.order_id}-S")
        assert wait_until(lambda: all(broker.order(f"{again.order_id}-{leg}").status == "CANCELLED" for leg in "ST"))
        assert broker.position(TOKEN, EX).qty == LOT
    finally:
        trader.close()
    # The legs were journaled as kit orders: a restart knows them.
    restored = {o["order_id"] for o in Journal(journal).orders()}
    assert {f"{entry.order_id}-T", f"{entry.order_id}-S"} <= restored


def test_a_gtt_rule_is_created_listed_modified_fired_and_another_cancelled(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    gtt = trader.broker.gtt
    try:
        trade_at(sim, trader, 300.0)
        take_profit = gtt.create(TOKEN, EX, "SELL", LOT, trigger=305.0, price=304.5, product="INTRADAY")
        stop = gtt.create(TOKEN, EX, "SELL", LOT, trigger=290.0, price=289.5, product="INTRADAY")
        listed = {r.rule_id: r for r in gtt.rules()}
        assert listed[take_profit].status == GTT_NEW and listed[take_profit].trigger_price == 305.0
        gtt.modify(take_profit, trigger=304.0, price=303.5)
        assert float(gtt.details(take_profit)["triggerprice"]) == 304.0
        gtt.cancel(stop)
        assert {r.rule_id for r in gtt.rules((GTT_CANCELLED,))} == {stop}
        with pytest.raises(GttRefused, match="only a waiting"):
            gtt.modify(stop, trigger=291.0)

        trade_at(sim, trader, 303.9)          # not yet
        assert gtt.rules((GTT_NEW,))[0].rule_id == take_profit
        trade_at(sim, trader, 304.2)          # crosses 304.00: the rule places SELL LIMIT 303.50, marketable
        assert wait_until(lambda: any(o.order_id == f"gtt{take_profit}" and o.status == "COMPLETE"
                                      for o in trader.broker.orders_df().itertuples())), trader.broker.orders_df()
        assert {r.rule_id: r.status for r in gtt.rules()}[take_profit] == GTT_FIRED
        assert trader.broker.position(TOKEN, EX).qty == -LOT          # the kit's own book moved with the fill
        assert trader.broker.fills_df().iloc[0].price == 304.2
    finally:
        trader.close()


def test_no_gtt_rule_is_created_after_stop_and_the_kill_switch_cancels_this_journals_rules(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    gtt = trader.broker.gtt
    try:
        trade_at(sim, trader, 300.0)
        mine = gtt.create(TOKEN, EX, "BUY", LOT, trigger=280.0, price=280.5, product="INTRADAY")
        report = trader.kill("test")
        assert report["gtt_cancelled"] == 1
        assert {r.rule_id: r.status for r in gtt.rules()}[mine] == GTT_CANCELLED
        with pytest.raises(GttRefused, match="not sent"):
            gtt.create(TOKEN, EX, "BUY", LOT, trigger=280.0, price=280.5)
    finally:
        trader.close()


def test_a_margin_shortfall_is_refused_with_the_brokers_figures(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal, tokens={1: [CASH]}, margin_check=True)
    broker = trader.broker
    try:
        trade_at(sim, trader, 2900.0, CASH, 1)
        # 20 % of 20,000 × 2,900 is 11.6 million rupees: more than the simulated account's 10 million.
        big, _ = trader.submit(kit.Signal.buy(a_tick(sim, CASH, 1), 20_000))
        assert wait_until(lambda: status_is(broker, big.order_id, "REJECTED"))
        assert broker.order(big.order_id).status_message.startswith("insufficient margin: Angel One's margin API")
        assert sim.orders.order_book() == []          # never sent
        small, _ = trader.submit(kit.Signal.buy(a_tick(sim, CASH, 1), 100))
        assert wait_until(lambda: status_is(broker, small.order_id, "COMPLETE"))
        assert broker.stats["margin_checks"] == 2 and broker.stats["margin_refused"] == 1
        # Two orders back to back, each needing 5.8 million: the second is refused before it is sent,
        # the funds the first blocks counted whether or not getRMS is read again in between.
        first, _ = trader.submit(kit.Signal.buy(a_tick(sim, CASH, 1), 10_000))
        second, _ = trader.submit(kit.Signal.buy(a_tick(sim, CASH, 1), 10_000))
        assert wait_until(lambda: status_is(broker, first.order_id, "COMPLETE")
                          and status_is(broker, second.order_id, "REJECTED"))
        assert broker.order(second.order_id).status_message.startswith("insufficient margin: Angel One's")
        assert len(sim.orders.order_book()) == 2          # the small order and the first
        # An exit needs no margin: selling it all back passes whatever the funds.
        out, _ = trader.submit(kit.Signal.sell(a_tick(sim, CASH, 1), 10_100))
        assert wait_until(lambda: status_is(broker, out.order_id, "COMPLETE"))
    finally:
        trader.close()


def test_the_models_charges_are_shown_beside_the_brokers_estimate(sim, journal, in_tmp_cwd):
    sim.orders.estimate_bias = 0.05
    trader = live_trader(sim, journal)
    broker = trader.broker
    try:
        trade_at(sim, trader, 300.0)
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), LOT))
        assert wait_until(lambda: status_is(broker, order.order_id, "COMPLETE"))
        table = broker.charges_df()
        row = table.iloc[0]
        model = broker.fills_df().charges.sum()
        assert row.model == pytest.approx(model) and row.broker == pytest.approx(model * 1.05, rel=1e-6)
        assert row.difference == pytest.approx(row.broker - row.model)
    finally:
        trader.close()
