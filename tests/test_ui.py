"""The notebook cockpit without a browser: real widgets, a real trader on the real simulator.

Clicks go through ``Button.click()`` (what the front end's click message
triggers), mode changes through the toggle's ``value``, and the charts are
read back from the FigureWidgets after ``refresh()``.
"""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import kit
from kit.core.strategy import Signal, Strategy
from tests.conftest import wait_until

TOKEN = "43650"


class EveryFifth(Strategy):
    """Buys on ticks 5, 15, 25, ... and sells on 10, 20, 30, ... of one token: signals we can predict."""

    def __init__(self):
        self.n = 0
        self.prices = {"BUY": [], "SELL": []}   # the ltp of each tick that got a signal

    def on_tick(self, tick):
        self.n += 1
        if self.n % 10 == 5:
            self.prices["BUY"].append(tick.ltp)
            return Signal.buy(tick, qty=65, reason="fifth")
        if self.n % 10 == 0:
            self.prices["SELL"].append(tick.ltp)
            return Signal.sell(tick, qty=65, reason="tenth")
        return None


class RestingBids(Strategy):
    """A limit bid 20 % under the price on every tick: orders that stay open until cancelled."""

    def on_tick(self, tick):
        return Signal.buy(tick, qty=65, limit=round(tick.ltp * 0.8 / 0.05) * 0.05, reason="rest")


@pytest.fixture
def trader(request):
    t = kit.LiveTrader(kit.TraderConfig(feed="sim", sim=kit.SimConfig(rate=0), tokens={2: [TOKEN]},
                                        name=f"ui-{request.node.name}"))
    yield t
    board = kit.ui.dashboard._dashboards.get(t.config.name)
    if board is not None:
        board.close()
    t.close()


def publish(trader, n):
    before = trader.ticks_processed
    trader.venue.simulator.wait_for_subscribers(1)
    trader.venue.simulator.publish(n)
    assert wait_until(lambda: trader.ticks_processed == before + n, 15)


def dashboard_threads(name):
    return [t for t in threading.enumerate() if t.name == f"kit-dashboard-{name}" and t.is_alive()]


def test_importing_kit_loads_no_ui_and_patches_no_event_loop():
    code = ("import asyncio, sys, kit, kit.engine.trader, kit.feed.live, kit.feed.dispatch, kit.broker.paper\n"
            "assert not [m for m in ('ipywidgets', 'plotly', 'anywidget', 'kit.ui.dashboard') if m in sys.modules], sys.modules\n"
            "import kit.ui.dashboard\n"
            "assert not hasattr(asyncio, '_nest_patched'), 'asyncio was patched globally'\n"
            "assert kit.dashboard is kit.ui.dashboard.dashboard\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_start_stop_start_buttons_drive_the_trader(trader):
    dash = kit.dashboard(trader, interval=None)
    assert not dash.start_button.disabled and dash.stop_button.disabled
    dash.start_button.click()
    assert trader.running and trader.wait_connected(10)
    dash.refresh()
    assert dash.start_button.disabled and not dash.stop_button.disabled
    publish(trader, 30)
    dash.refresh()
    assert "● connected" in dash.status_line.value
    assert "<b class='kit-ticks'>30</b>" in dash.status_line.value

    dash.stop_button.click()
    assert not trader.running
    dash.refresh()
    assert not dash.start_button.disabled and dash.stop_button.disabled
    assert "not connected" in dash.status_line.value and "stopped" in dash.status_line.value

    dash.start_button.click()           # start / stop / start works
    assert trader.running and trader.wait_connected(10)
    publish(trader, 10)
    dash.refresh()
    assert "<b class='kit-ticks'>40</b>" in dash.status_line.value
    assert "started" in dash.message.value


def test_mode_toggle_switches_the_trader_while_ticks_flow_and_follows_code(trader):
    trader.strategy = EveryFifth()
    trader.start()
    dash = kit.dashboard(trader, interval=None)
    publish(trader, 20)
    assert trader.metrics.count("queue") == 20

    dash.mode_toggle.value = "callback"
    assert trader.mode == "callback"
    publish(trader, 20)
    assert wait_until(lambda: trader.metrics.count("callback") > 0)
    dash.mode_toggle.value = "poll"
    assert trader.mode == "poll"
    publish(trader, 20)
    assert trader.metrics.count("poll") > 0
    assert trader.ticks_processed == 60         # nothing lost across two switches

    trader.mode = "queue"                       # a change made in code shows on the toggle
    dash.refresh()
    assert dash.mode_toggle.value == "queue"
    assert trader.mode == "queue"


def test_charts_hold_the_ticks_and_signals_after_a_refresh(trader):
    trader.strategy = EveryFifth()
    trader.start()
    dash = kit.dashboard(trader, interval=None, window=50)
    publish(trader, 40)
    dash.refresh()

    price, buys, sells, rejected = dash.price_fig.data
    assert len(price.x) == len(price.y) == 40
    buy_ticks = [s for s in trader.signals if s.side == "BUY"]
    sell_ticks = [s for s in trader.signals if s.side == "SELL"]
    assert len(buys.x) == len(buy_ticks) == 4 and len(sells.x) == len(sell_ticks) == 4
    assert len(rejected.x) == 0
    # each marker sits on the price of the tick that produced its signal, at that tick's time
    assert list(buys.y) == trader.strategy.prices["BUY"] and list(sells.y) == trader.strategy.prices["SELL"]
    assert set(buys.x) | set(sells.x) <= set(price.x)
    assert TOKEN in dash.price_fig.layout.title.text

    publish(trader, 30)                         # the window is rolling: the oldest points leave
    dash.refresh()
    price = dash.price_fig.data[0]
    assert len(price.x) == 50
    assert list(price.y)[-1] == pytest.approx(trader.broker.position(TOKEN).last_price)

    latency = {trace.name: trace for trace in dash.latency_fig.data}
    assert list(latency) == ["poll", "queue", "callback"]
    queue = latency["queue"]
    assert list(queue.x) == ["dispatch", "strategy", "order", "total"]
    assert all(v is not None and v > 0 for v in queue.y)
    assert all(e >= 0 for e in queue.error_y.array)      # p99 >= p50
    assert all(v is None for v in latency["poll"].y)      # no tick went through poll

    ticks_per_s, depth = dash.throughput_fig.data
    assert len(ticks_per_s.y) == dash.refreshes and len(depth.y) == dash.refreshes
    assert max(ticks_per_s.y) > 0


def test_kill_switch_halts_trading_and_cancels_open_orders(trader):
    trader.strategy = RestingBids()
    trader.start()
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    publish(trader, 5)
    assert (trader.broker.orders_df()["status"] == "OPEN").sum() == 5

    dash.kill_button.click()
    assert trader.risk.halted
    assert (trader.broker.orders_df()["status"] == "CANCELLED").sum() == 5
    assert "5 open order(s) cancelled" in dash.message.value

    publish(trader, 3)                          # the feed keeps running, new signals are refused
    assert trader.rejected_signals == 3
    assert len(trader.broker.orders_df()) == 5
    dash.refresh()
    assert dash.kill_button.disabled and dash.kill_button.description == "Halted"
    assert "TRADING HALTED" in dash.status_line.value
    assert len(dash.price_fig.data[3].x) == 3   # rejected signals are drawn as such

    trader.risk.resume()
    dash.refresh()
    assert not dash.kill_button.disabled


def test_refresh_thread_streams_and_rerunning_the_cell_leaves_one_writer(trader):
    name = trader.config.name
    first = kit.dashboard(trader, interval=0.1)
    trader.start()
    publish(trader, 10)
    assert wait_until(lambda: "<b class='kit-ticks'>10</b>" in first.status_line.value, 10)
    assert wait_until(lambda: len(first.price_fig.data[0].x) == 10, 10)
    assert first.refreshing and len(dashboard_threads(name)) == 1

    second = kit.dashboard(trader, interval=0.1)          # the cell is run again
    assert not first.refreshing
    assert len(dashboard_threads(name)) == 1
    assert trader._tick_listeners.current == (second._tick_listener,)
    assert trader._signal_listeners.current == (second._signal_listener,)
    refreshes = first.refreshes
    publish(trader, 5)
    assert wait_until(lambda: "<b class='kit-ticks'>15</b>" in second.status_line.value, 10)
    assert first.refreshes == refreshes                   # the old one wrote nothing more

    second.close()
    assert not second.refreshing and trader._tick_listeners.current == ()
    assert dashboard_threads(name) == []


def test_a_new_trader_with_the_same_name_and_its_dashboard_replace_the_old_ones(trader):
    old_dash = kit.dashboard(trader, interval=0.1)
    trader.start()
    new_trader = kit.LiveTrader(trader.config)            # the trader cell is run again
    try:
        assert not trader.running
        assert wait_until(lambda: "REPLACED" in old_dash.status_line.value, 10)
        old_dash.start_button.click()                     # must not bring the old feed back
        assert not trader.running and "replaced" in old_dash.message.value
        new_dash = kit.dashboard(new_trader, interval=0.1)
        assert not old_dash.refreshing and trader._tick_listeners.current == ()
        assert new_dash.refreshing and len(dashboard_threads(trader.config.name)) == 1
    finally:
        kit.ui.dashboard._dashboards.get(new_trader.config.name).close()
        new_trader.close()


def test_refresh_rate_is_bounded():
    t = kit.LiveTrader(kit.TraderConfig(feed="sim", name="ui-bounded"))
    try:
        with pytest.raises(ValueError, match="at least 0.1"):
            kit.dashboard(t, interval=0.05)
    finally:
        t.close()
