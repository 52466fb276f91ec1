"""Pre-trade risk: one rejection per limit, each with a reason; the kill switch; the trading window.

The brokers are real (PaperBroker driven with real Tick objects); only the
clocks are injected, so the time-based limits are tested without waiting.
"""
from __future__ import annotations

from datetime import datetime

import pytest

import kit
from conftest import wait_until
from kit.broker.paper import PaperBroker
from kit.core.market import IST
from kit.broker.risk import RiskLimits, RiskManager
from kit.core.strategy import Signal
from kit.core.tick import Tick

TOKEN = "43650"


def tick(ltp: float, seq: int = 1, token: str = TOKEN) -> Tick:
    return Tick(token, 2, 1, seq, 0, ltp)


def at(text: str) -> float:
    """Epoch seconds of an IST wall-clock time, e.g. "2026-11-26 10:00" (a Thursday)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=IST).timestamp()


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def fill(broker: PaperBroker, signal: Signal, price: float, seq: int) -> None:
    broker.submit(signal, tick(price, seq))
    broker.on_tick(tick(price, seq + 1))


def test_max_qty_per_order():
    risk = RiskManager(RiskLimits(max_qty_per_order=130))
    broker = PaperBroker()
    assert risk.check(Signal.buy(tick(100), 130), None, broker) is None
    reason = risk.check(Signal.buy(tick(100), 195), None, broker)
    assert reason == "qty 195 exceeds max_qty_per_order 130"
    assert risk.rejections == 1 and risk.last_rejection == reason
    assert risk.rejection_log[-1]["qty"] == 195


def test_max_lots_per_order_uses_the_lot_size_and_refuses_an_unknown_one():
    risk = RiskManager(RiskLimits(max_lots_per_order=2), lot_size=lambda token, ex: 65 if token == TOKEN else None)
    broker = PaperBroker()
    assert risk.check(Signal.buy(tick(100), 130), None, broker) is None
    assert "3 lots (qty 195, lot size 65) exceeds max_lots_per_order 2" in risk.check(Signal.buy(tick(100), 195), None, broker)
    assert "lot size of token 999 " in risk.check(Signal.buy(tick(100, token="999"), 1), None, broker)


def test_max_position_counts_holdings_and_open_orders_and_lets_exposure_shrink():
    risk = RiskManager(RiskLimits(max_position_per_token=130))
    broker = PaperBroker()
    fill(broker, Signal.buy(tick(100), 65), 100, 1)                          # hold +65
    broker.submit(Signal.buy(tick(100), 65, limit=90.0), tick(100, 3))       # +65 resting, unfilled
    reason = risk.check(Signal.buy(tick(100), 65), None, broker)
    assert reason == ("position in 43650 would reach +195 (held and open +130), "
                      "beyond max_position_per_token 130")
    assert risk.check(Signal.sell(tick(100), 65), None, broker) is None     # shrinking is always allowed
    assert risk.check(Signal.sell(tick(100), 390), None, broker) is not None  # -260: a breach the other way


def test_max_daily_loss_stops_new_exposure_but_not_exits():
    risk = RiskManager(RiskLimits(max_daily_loss=1_000))
    broker = PaperBroker()
    fill(broker, Signal.buy(tick(100), 65), 100, 1)
    assert risk.check(Signal.buy(tick(100), 65), None, broker) is None
    broker.on_tick(tick(84, 5))                                              # -16 x 65 = -1,040
    assert broker.pnl()["total"] == pytest.approx(-1_040)
    net = broker.pnl()["net"]                                                # the limit counts the charges too
    assert net == pytest.approx(-1_040 - broker.pnl()["charges"]) and net < -1_040
    reason = risk.check(Signal.buy(tick(84), 65), None, broker)
    assert reason.startswith(f"daily loss {-net:,.2f} has reached max_daily_loss 1,000.00")
    assert risk.check(Signal.sell(tick(84), 65), None, broker) is None      # closing the loser is allowed
    with pytest.raises(ValueError):
        RiskLimits(max_daily_loss=-5)


def test_orders_per_second_and_per_minute_count_accepted_orders_only():
    clock = Clock(1000.0)
    risk = RiskManager(RiskLimits(max_orders_per_second=3, max_orders_per_minute=5, max_qty_per_order=100),
                       monotonic=clock)
    broker = PaperBroker()
    ok = Signal.buy(tick(100), 1)
    assert [risk.check(ok, None, broker) for _ in range(3)] == [None] * 3
    assert risk.check(ok, None, broker) == "3 orders in the last second: max_orders_per_second 3"
    assert risk.check(Signal.buy(tick(100), 500), None, broker).startswith("qty 500")   # rejected: not counted
    clock.t += 1.0
    assert [risk.check(ok, None, broker) for _ in range(2)] == [None] * 2
    assert risk.check(ok, None, broker) == "5 orders in the last minute: max_orders_per_minute 5"
    clock.t += 59.5
    assert risk.check(ok, None, broker) is None                              # the first three aged out


class LiveLike(PaperBroker):
    """A paper broker that says it is live, to test what applies to live brokers only."""
    live = True


def test_trading_hours_apply_to_live_by_default_and_never_block_paper():
    clock = Clock(at("2026-11-28 11:00"))                                    # a Saturday
    risk = RiskManager(RiskLimits(), clock=clock)
    risk.arm()
    signal = Signal.buy(tick(100), 1)
    assert risk.check(signal, None, PaperBroker()) is None                   # paper: any hour, any day
    assert risk.check(signal, None, LiveLike()) == "closed: NFO does not trade on Saturdays (2026-11-28)"
    clock.t = at("2026-11-26 09:14")
    assert risk.check(signal, None, LiveLike()) == "outside NFO hours 09:15–15:30 IST on 2026-11-26: it is 09:14 IST"
    clock.t = at("2026-11-26 09:15")
    assert risk.check(signal, None, LiveLike()) is None
    clock.t = at("2026-11-26 15:30")
    assert risk.check(signal, None, LiveLike()) is not None                  # the close is exclusive
    clock.t = at("2026-11-26 10:30")
    always = RiskManager(RiskLimits(trading_hours=("10:00", "10:30"), enforce_hours="always"), clock=clock)
    assert always.check(signal, None, PaperBroker()) == \
        "outside RiskLimits.trading_hours 10:00–10:30 IST (Mon, Tue, Wed, Thu, Fri): it is Thu 10:30 IST"
    with pytest.raises(ValueError):
        RiskLimits(enforce_hours="sometimes")


def test_a_live_broker_needs_arming_and_the_kill_switch_beats_everything():
    risk = RiskManager(RiskLimits(enforce_hours="never"))
    signal = Signal.buy(tick(100), 1)
    assert risk.check(signal, None, LiveLike()).startswith("live trading is not armed")
    risk.arm()
    assert risk.check(signal, None, LiveLike()) is None
    risk.halt("manual stop")
    assert risk.check(signal, None, LiveLike()) == "trading halted: manual stop"
    assert risk.check(signal, None, PaperBroker()) == "trading halted: manual stop"
    risk.resume()
    assert risk.check(signal, None, PaperBroker()) is None


def make_trader(sim, **overrides) -> kit.LiveTrader:
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens={2: [TOKEN]}, name=f"risk-{id(sim)}", **overrides),
                            venue=kit.SimVenue(simulator=sim))
    return trader


def test_the_engine_reports_why_a_signal_was_rejected(sim, in_tmp_cwd):
    class Big(kit.Strategy):
        def on_tick(self, t):
            return kit.Signal.buy(t, 650)

    trader = make_trader(sim, risk=RiskLimits(max_qty_per_order=65))
    trader.strategy = Big()
    seen = []
    trader.add_signal_listener(lambda s, reason: seen.append(reason))
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(3)
        assert wait_until(lambda: len(seen) == 3, 10)
    finally:
        trader.stop()
    assert seen == ["qty 650 exceeds max_qty_per_order 65"] * 3
    assert trader.status["rejected_signals"] == 3 and trader.status["last_rejection"] == seen[0]
    assert trader.broker.orders_df().empty


def test_paper_kill_switch_cancels_flattens_and_halts(sim, in_tmp_cwd):
    class Trade(kit.Strategy):
        def __init__(self):
            self.n = 0

        def on_tick(self, t):
            self.n += 1
            if self.n == 1:
                return [kit.Signal.buy(t, 130), kit.Signal.buy(t, 65, limit=round(t.ltp * 0.8 / 0.05) * 0.05)]
            if self.n >= 3:
                return kit.Signal.buy(t, 65)       # would keep buying, but the kill switch stops it

    trader = make_trader(sim)
    trader.strategy = Trade()
    rejected = []
    trader.add_signal_listener(lambda s, reason: reason and rejected.append(reason))
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(1)
        assert wait_until(lambda: trader.ticks_processed == 1, 10)
        sim.publish(1)                              # the MARKET fills; the half-price LIMIT rests
        assert wait_until(lambda: trader.ticks_processed == 2, 10)
        held = trader.broker.position(TOKEN).qty
        report = trader.kill("drawdown")
        assert report["cancelled"] == 1 and len(report["flatten_orders"]) == 1
        sim.publish(3)                              # the flattening order fills on the next tick
        assert wait_until(lambda: trader.ticks_processed == 5, 10)
    finally:
        trader.stop()
    assert held == 130
    assert trader.broker.position(TOKEN).qty == 0
    assert trader.broker.open_orders() == []
    assert rejected == ["trading halted: drawdown"] * 3
    assert trader.status["halted"] and trader.status["halt_reason"] == "drawdown"


def test_a_waiting_stop_counts_as_triggered_and_a_brackets_exits_count_once():
    broker = PaperBroker(charges=None)
    risk = RiskManager(RiskLimits(max_position_per_token=100))
    t = tick(100.0)
    broker.on_tick(t)
    stop = Signal.stop_buy(t, 100, trigger=101.0)
    assert risk.check(stop, t, broker) is None and broker.submit(stop, t).status == "OPEN"
    # Not triggered yet, but it may: another 10 would make 110.
    assert "beyond max_position_per_token 100" in risk.check(Signal.buy(t, 10), t, broker)
    broker.cancel_all()

    entry = Signal.buy(t, 100, target=2.0, stoploss=1.0)
    assert risk.check(entry, t, broker) is None
    broker.submit(entry, t)
    broker.on_tick(tick(100.0, 2))          # the entry fills; a target and a stop wait to sell 100
    assert len(broker.open_orders()) == 2 and broker.exposure(TOKEN, 1) == 0
    # The two exits can take the position to 0, never to -100: a new buy of 100 still fits.
    assert risk.check(Signal.buy(tick(100.0, 3), 100), tick(100.0, 3), broker) is None
