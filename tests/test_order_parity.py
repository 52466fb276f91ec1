"""Paper and live agree, order type by order type: the same strategy on the same ticks makes the same
orders, the same fills at the same prices and the same net P&L after charges.

Live: the real SmartConnect and order-update clients against the simulator, the price path set tick by
tick (``Simulator.trade_at``), each tick handled to the end (orders acknowledged, updates applied) before
the next. Paper: the recording of what the live strategy saw, replayed through a paper trader.
Prices keep orders from being marketable on arrival: a MARKET order fills at the price on arrival at the
exchange and at the next tick's price on paper, by design (the README says so).
"""
from __future__ import annotations

import time

import pytest

import kit
from conftest import wait_until
from kit.broker.order_state import ANGEL_STATUS
from kit.broker.risk import RiskLimits
from kit.research.backtest import replay

pytestmark = pytest.mark.timeout(180)

TOKEN, EX, LOT = "43650", 2, 65
LIMITS = RiskLimits(max_daily_loss=1_000_000, enforce_hours="never", price_collar=None)


class Scripted(kit.Strategy):
    """Sends, on its n-th tick, the signal ``plan[n](tick)`` makes."""

    def __init__(self, plan: dict):
        self.plan, self.n = plan, 0

    def on_tick(self, tick):
        self.n += 1
        make = self.plan.get(self.n)
        return make(tick) if make else None


ENTRY = {1: lambda t: kit.Signal.buy(t, LOT, limit=299.0)}          # rests; fills at 299.00 on 298.90
SCENARIOS = {
    "stop-market": ({**ENTRY, 3: lambda t: kit.Signal.stop_sell(t, LOT, trigger=297.0)},
                    [300.0, 298.9, 299.5, 298.0, 296.8, 296.5]),
    # Triggered by a gap below its limit: it rests, then fills at its limit.
    "stop-limit": ({**ENTRY, 3: lambda t: kit.Signal.stop_sell(t, LOT, trigger=297.0, limit=296.5)},
                   [300.0, 298.9, 299.5, 296.0, 296.6, 296.0]),
    "stop-buy": ({1: lambda t: kit.Signal.stop_buy(t, LOT, trigger=301.0),
                  4: lambda t: kit.Signal.sell(t, LOT, limit=301.5)},
                 [300.0, 300.5, 301.2, 301.0, 301.6]),
    "bracket-target": ({1: lambda t: kit.Signal.buy(t, LOT, limit=299.0, target=3.0, stoploss=2.0)},
                       [300.0, 298.9, 300.5, 302.1, 297.0]),
    "bracket-stop": ({1: lambda t: kit.Signal.sell(t, LOT, limit=301.0, target=3.0, stoploss=2.0)},
                     [300.0, 301.1, 300.5, 303.2, 297.0]),
}


def quiet(trader, sim, n: int) -> bool:
    """The n-th tick was handled, and every order of the kit agrees with the exchange's order book."""
    if trader.ticks_processed < n:
        return False
    book = {o["orderid"]: o for o in sim.orders.order_book()}
    mine = trader.broker.orders_df()
    if (mine["status"] == "PENDING").any() or len(book) != (mine["broker_order_id"] != "").sum():
        return False
    return all(ANGEL_STATUS[book[o.broker_order_id]["status"]] == o.status
               and int(book[o.broker_order_id]["filledshares"]) == o.filled_qty
               for o in mine.itertuples())


def price(value):
    return None if value is None or value != value else round(value, 2)      # NaN (no price) as None


def orders(frame):
    """What each order was and became, ids aside (paper and live name them differently), in a fixed order."""
    return sorted(((o.side, o.qty, o.order_type, price(o.limit_price), price(o.trigger_price), o.status, o.variety,
                    bool(o.parent_id), o.filled_qty, price(o.avg_price)) for o in frame.itertuples()), key=repr)


def fills(frame):
    return [(f.side, f.qty, round(f.price, 2), round(f.charges, 6)) for f in frame.itertuples()]


def run_live(sim, tmp_path, path, *, strategy=None, record=None, after_first=None):
    """A live trader on the simulator, the price set tick by tick along ``path``, each tick handled to the
    end before the next (``after_first(trader)`` once the first was); its orders, fills and P&L."""
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, tokens={EX: [TOKEN]}, risk=LIMITS,
                                             record=str(record) if record else None,
                                             journal=kit.JournalConfig(str(tmp_path / "j.sqlite")),
                                             name=f"parity-{time.monotonic_ns()}"),
                            venue=kit.SimVenue(simulator=sim))
    if strategy is not None:
        trader.strategy = strategy
    trader.start()
    try:
        assert trader.wait_connected(10) and trader.broker.wait_ready(10)
        sim.wait_for_subscribers(1)
        trader.arm_live(confirm=sim.rest.credentials.client_code)
        for n, price in enumerate(path, 1):
            sim.trade_at(EX, TOKEN, price)
            assert wait_until(lambda: quiet(trader, sim, n), 15), (n, trader.broker.orders_df())
            if n == 1 and after_first is not None:
                after_first(trader)
        return trader.broker.orders_df(), trader.broker.fills_df(), trader.broker.pnl()
    finally:
        trader.close()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_paper_and_live_make_the_same_orders_fills_and_net_pnl(scenario, sim, tmp_path_factory, in_tmp_cwd):
    plan, path = SCENARIOS[scenario]
    tmp_path = tmp_path_factory.mktemp("parity")
    rec = tmp_path / "rec"
    live_orders, live_fills, live_pnl = run_live(sim, tmp_path, path, strategy=Scripted(plan), record=rec)

    paper, _ = replay(Scripted(plan), str(rec), risk=LIMITS)
    assert orders(paper.broker.orders_df()) == orders(live_orders)
    assert fills(paper.broker.fills_df()) == fills(live_fills)
    assert len(live_fills) >= 2, "the scenario should open and close a position"
    assert paper.broker.pnl()["net"] == pytest.approx(live_pnl["net"], abs=1e-6)
    assert live_pnl["charges"] > 0 and live_pnl["net"] == pytest.approx(live_pnl["total"] - live_pnl["charges"])


def test_gtt_rules_fire_and_fill_alike_on_paper_and_live(sim, tmp_path_factory, in_tmp_cwd):
    """Three rules over one price path: one fires marketable (fills at the firing tick's price), one fires
    and rests (fills at its price later), one fires downwards."""
    from kit.broker.paper import PaperBroker
    rules = [("SELL", 304.0, 303.5), ("SELL", 303.5, 304.0), ("BUY", 303.2, 303.0)]
    path = [300.0, 303.9, 304.2, 303.0, 303.6]

    def create_rules(trader):
        for side, trigger, limit in rules:
            trader.broker.gtt.create(TOKEN, EX, side, LOT, trigger=trigger, price=limit, product="INTRADAY")

    _, live_fills, live_pnl = run_live(sim, tmp_path_factory.mktemp("gtt"), path, after_first=create_rules)

    paper = PaperBroker()
    for n, price in enumerate(path, 1):
        paper.on_tick(kit.Tick(TOKEN, EX, 1, n, 0, price))
        if n == 1:
            for side, trigger, limit in rules:
                paper.gtt.create(TOKEN, EX, side, LOT, trigger=trigger, price=limit, product="INTRADAY")
    assert fills(paper.fills_df()) == fills(live_fills)
    assert [f[2] for f in fills(live_fills)] == [304.0, 304.2, 303.0]      # rested; marketable; downwards
    assert paper.pnl()["net"] == pytest.approx(live_pnl["net"], abs=1e-6) and live_pnl["charges"] > 0
