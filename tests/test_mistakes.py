"""A user's mistakes with strategies and configs: each gets one clear message at the moment it is made.

Against the real simulator on 127.0.0.1 and the real SDK client, as a notebook runs them.
"""
from __future__ import annotations

import logging
import threading
import time

import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.feed.dispatch import CALLBACK, QUEUE

TOKEN = "43650"


class Breakout(kit.Strategy):
    """A working strategy: buys one lot on every tick it is told to."""

    def __init__(self, buy: bool = False):
        self.buy = buy
        self.ticks = 0

    def on_tick(self, tick):
        self.ticks += 1
        if self.buy:
            return kit.Signal.buy(tick, qty=65)


def make_trader(sim, **overrides) -> kit.LiveTrader:
    settings = {"tokens": {2: [TOKEN]}, "name": f"mistakes-{time.monotonic_ns()}", **overrides}
    return kit.LiveTrader(kit.TraderConfig(feed="sim", **settings), venue=kit.SimVenue(simulator=sim))


def started(trader, sim):
    trader.start()
    assert trader.wait_connected(10)
    sim.wait_for_subscribers(1)
    return trader


# --------------------------------------------------------------------------- strategies, at assignment
def test_a_class_instead_of_an_instance(sim, in_tmp_cwd):
    trader = make_trader(sim)
    with pytest.raises(TypeError) as err:
        trader.strategy = Breakout
    assert str(err.value) == "Breakout is a class; assign an instance: trader.strategy = Breakout()"
    assert trader.strategy is None
    with pytest.raises(TypeError, match=r"kit.backtest\(Breakout\(\), ticks\)"):
        kit.backtest(Breakout, pd.DataFrame())
    trader.close()


def test_a_strategy_without_on_tick(sim, in_tmp_cwd):
    class Forgetful(kit.Strategy):
        def on_start(self):
            pass

    trader = make_trader(sim)
    with pytest.raises(TypeError, match=r"^Forgetful does not define on_tick: a kit.Strategy subclass must define "
                                        r"on_tick\(self, tick\)"):
        trader.strategy = Forgetful()
    with pytest.raises(TypeError, match=r"^object has no on_tick method: define on_tick\(self, tick\)"):
        trader.strategy = object()
    with pytest.raises(TypeError, match="Strategy does not define on_tick"):
        kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(pd.DataFrame()), name="m-base")) \
            .strategy = kit.Strategy()
    trader.close()


def test_a_wrong_on_tick_signature_also_when_swapped_into_a_running_trader(sim, in_tmp_cwd):
    class NoTickArgument(kit.Strategy):
        def on_tick(self):
            return None

    class TwoTicks(kit.Strategy):
        def on_tick(self, tick, previous):
            return None

    trader = make_trader(sim)
    good = trader.strategy = Breakout()
    started(trader, sim)
    try:
        with pytest.raises(TypeError) as err:
            trader.strategy = NoTickArgument()
        assert str(err.value).startswith("NoTickArgument.on_tick() cannot be called as the engine calls it, "
                                         "on_tick(tick): it must take one argument, the tick besides self")
        with pytest.raises(TypeError, match=r"TwoTicks.on_tick\(tick, previous\) cannot be called"):
            trader.strategy = TwoTicks()
        # The running trader kept its strategy: ticks still reach it, and nothing failed.
        assert trader.strategy is good
        sim.publish(20)
        assert wait_until(lambda: good.ticks == 20, 20), trader.status
        assert trader.strategy_errors == 0
    finally:
        trader.close()


def test_a_hook_of_the_wrong_shape(sim, in_tmp_cwd):
    class GapWithoutGap(Breakout):
        def on_gap(self):
            pass

    class StartWithArgument(Breakout):
        def on_start(self, when):
            pass

    trader = make_trader(sim)
    with pytest.raises(TypeError, match=r"GapWithoutGap.on_gap\(\) cannot be called as the engine calls it, "
                                        r"on_gap\(gap\): it must take one argument, the gap"):
        trader.strategy = GapWithoutGap()
    with pytest.raises(TypeError, match=r"StartWithArgument.on_start\(when\) cannot be called .* on_start\(\): "
                                        r"it must take no argument"):
        trader.strategy = StartWithArgument()
    trader.close()


# --------------------------------------------------------------------------- strategies, while trading
def test_on_tick_returning_buy_is_one_counted_strategy_error_not_a_traceback_per_tick(sim, in_tmp_cwd, caplog):
    class Shouty(kit.Strategy):
        def on_tick(self, tick):
            return "BUY"

    trader = make_trader(sim, mode=QUEUE, error_budget=None)
    trader.strategy = Shouty()
    started(trader, sim)
    try:
        with caplog.at_level(logging.ERROR):
            sim.publish(200)
            assert wait_until(lambda: trader.ticks_processed == 200, 20), trader.status
        assert trader.strategy_errors == 200 and trader.signal_count == 0
        message = ("TypeError: on_tick returned str 'BUY'; return a kit.Signal, None, or a list of Signals, "
                   "e.g. kit.Signal.buy(tick, qty=...)")
        assert trader.last_strategy_error == message
        errors = trader.errors
        assert len(errors) == 200 and set(errors["hook"]) == {"output"}
        # The log: the first ten errors, one line each, and a word on where the rest are; no traceback.
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert 10 <= len(logged) <= 12, [r.getMessage() for r in logged]
        assert "Traceback" not in caplog.text and "on_tick returned str 'BUY'" in caplog.text
        assert "trader.errors has the last 500" in caplog.text
    finally:
        trader.close()


def test_errors_show_the_traceback_of_an_error_raised_on_the_socket_thread(sim, in_tmp_cwd):
    threads = []

    def price_of(tick):
        raise ValueError(f"no price for {tick.token}")

    class Broken(kit.Strategy):
        def on_tick(self, tick):
            threads.append(threading.current_thread().name)
            return price_of(tick)

    trader = make_trader(sim, mode=CALLBACK)
    assert trader.last_strategy_traceback == "" and trader.errors.empty
    assert list(trader.errors.columns) == ["time", "token", "symbol", "hook", "exception", "message", "traceback"]
    trader.strategy = Broken()
    started(trader, sim)
    try:
        sim.publish(3)
        assert wait_until(lambda: trader.strategy_errors == 3, 20), trader.status
        assert set(threads) == {f"kit-feed-{trader.config.name}"}      # the socket thread, not this one
        errors = trader.errors
        assert len(errors) == 3
        last = errors.iloc[-1]
        assert str(errors["time"].dt.tz) == "Asia/Kolkata"
        assert abs(pd.Timestamp.now(tz="Asia/Kolkata") - last["time"]) < pd.Timedelta(minutes=1)
        master_symbol = trader.venue.instruments().get(TOKEN, 2).symbol
        assert (last["token"], last["symbol"], last["hook"]) == (TOKEN, master_symbol, "on_tick")
        assert (last["exception"], last["message"]) == ("ValueError", f"no price for {TOKEN}")
        assert last["traceback"].startswith("Traceback (most recent call last)")
        assert "in price_of" in last["traceback"] and "ValueError: no price for 43650" in last["traceback"]
        assert trader.last_strategy_traceback == last["traceback"]
        assert trader.last_strategy_error == f"ValueError: no price for {TOKEN}"
    finally:
        trader.close()


def test_the_error_budget_halts_new_orders_says_why_and_resume_reopens(sim, in_tmp_cwd, caplog):
    class FailsWhenTold(kit.Strategy):
        def __init__(self):
            self.failing = True

        def on_tick(self, tick):
            if self.failing:
                raise RuntimeError("index out of range")
            return kit.Signal.buy(tick, qty=65)

    assert kit.TraderConfig().error_budget == kit.ErrorBudget(max_errors=20, window_s=10.0)   # on by default
    trader = make_trader(sim, mode=QUEUE)
    strategy = trader.strategy = FailsWhenTold()
    started(trader, sim)
    try:
        with caplog.at_level(logging.ERROR):
            sim.publish(30)
            assert wait_until(lambda: trader.ticks_processed == 30, 20), trader.status
        reason = "more than 20 strategy errors in 10 s: new orders halted; fix the strategy, then trader.resume()"
        status = trader.status
        assert status["strategy_halt"] == reason and status["orders_blocked"] == reason
        assert status["strategy_errors"] == 30 and status["running"]
        assert caplog.text.count("ERROR BUDGET") == 1
        # The stream goes on; the strategy, fixed, signals, and the signals are refused with the reason.
        strategy.failing = False
        sim.publish(5)
        assert wait_until(lambda: trader.ticks_processed == 35, 20), trader.status
        assert trader.signal_count == 5 and trader.rejected_signals == 5
        assert trader.risk.last_rejection == reason
        # A new strategy does not reopen the gate by itself.
        trader.strategy = Breakout(buy=True)
        assert trader.status["orders_blocked"] == reason
        trader.resume()
        assert trader.status["orders_blocked"] == "" and trader.status["strategy_halt"] == ""
        sim.publish(3)
        assert wait_until(lambda: trader.ticks_processed == 38, 20), trader.status
        assert trader.signal_count == 8 and trader.rejected_signals == 5
    finally:
        trader.close()


def test_the_error_budget_is_checked_when_configured():
    with pytest.raises(ValueError, match="ErrorBudget.max_errors is a count of errors"):
        kit.ErrorBudget(max_errors=-1)
    with pytest.raises(ValueError, match="ErrorBudget.window_s is seconds"):
        kit.ErrorBudget(window_s=0)
    with pytest.raises(TypeError, match="error_budget takes a kit.ErrorBudget or None, not int"):
        kit.TraderConfig(error_budget=20)
    assert kit.TraderConfig(error_budget=None).error_budget is None


# --------------------------------------------------------------------------- names for people
def test_instrument_names_come_from_the_venue_master(sim, in_tmp_cwd):
    trader = make_trader(sim)
    assert trader.instrument_name("99926000", 1) == "Nifty 50"
    option = trader.venue.instruments().get(TOKEN, 2)
    assert trader.instrument_name(TOKEN) == trader.instrument_name(TOKEN, 2) == option.symbol
    assert trader.instrument_name("12345678", 2) == "12345678"          # unknown: the token itself
    trader.close()


# --------------------------------------------------------------------------- config shapes
@pytest.mark.parametrize("tokens, error, message", [
    ("NIFTY", TypeError, r"^tokens='NIFTY' is one string; tokens takes \{exchange_type: \[token, \.\.\.\]\}, "
                         r"e.g. tokens=\{2: \['43650', '43651'\], 1: \['99926000'\]\}, or a list of trading symbols, "
                         r"e.g. tokens=\['NIFTY', 'BANKNIFTY'\] \(tokens=\['NIFTY'\]\)$"),
    ({2: "43650"}, TypeError, r"^tokens\[2\] is '43650': each exchange type takes a list of tokens, "
                              r"e.g. tokens=\{2: \['43650'\]\}"),
    ({"NFO": ["43650"]}, ValueError, r"^tokens has the key 'NFO': keys are exchange types, ints among"),
    ([43650], TypeError, r"43650 is not one \(a token needs its exchange type: tokens=\{2: \['43650'\]\}\)"),
    ([], ValueError, r"^tokens is empty; tokens takes"),
    (43650, TypeError, r"^tokens is a int; tokens takes"),
])
def test_tokens_of_the_wrong_shape_fail_when_the_config_is_built(tokens, error, message):
    with pytest.raises(error, match=message):
        kit.TraderConfig(feed="sim", tokens=tokens)


def test_tokens_in_either_shape_are_kept_canonical():
    assert kit.TraderConfig(tokens={2: [43650, "43651"], 1: ("99926000",)}).tokens == \
        {2: ["43650", "43651"], 1: ["99926000"]}
    assert kit.TraderConfig(tokens=("NIFTY", "SBIN-EQ")).tokens == ["NIFTY", "SBIN-EQ"]


def test_symbols_are_resolved_through_the_venue_master_at_start(sim, in_tmp_cwd):
    option = next(i for i in kit.SimVenue(simulator=sim).instruments().options("NIFTY", spot=24_000, width=0))
    trader = make_trader(sim, tokens=["NIFTY", "SBIN", option.symbol], mode=QUEUE)
    seen = set()
    trader.add_tick_listener(lambda tick: seen.add((tick.exchange_type, tick.token)))
    started(trader, sim)
    try:
        sim.publish(2)
        assert wait_until(lambda: len(seen) == 3, 20), trader.status
        assert seen == {(1, "99926000"), (1, "3045"), (2, option.token)}
    finally:
        trader.close()


def test_unknown_symbols_and_tokens_fail_at_start_on_the_simulator_too(sim, in_tmp_cwd):
    trader = make_trader(sim, tokens=["NIFTY", "NIFTYY"])
    with pytest.raises(ValueError, match=r"^'NIFTYY' is not a trading symbol in the instrument master \(http://127"):
        trader.start()
    assert not trader.running and trader.feed is None
    trader.close()
    trader = make_trader(sim, tokens={2: ["43650", "99999"]})
    with pytest.raises(ValueError, match=r"^'99999' \(exchange type 2\) is not in the instrument master"):
        trader.start()
    assert not trader.running
    trader.close()
    # The same on an embedded simulator the trader starts itself: no invented prices for an unknown token.
    own = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens={1: ["123"]}, name="mistakes-own-sim"))
    try:
        with pytest.raises(ValueError, match=r"^'123' \(exchange type 1\) is not in the instrument master"):
            own.start()
        assert not own.running and own.ticks_processed == 0
    finally:
        own.close()
