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
    assert dash.price_fig.layout.title.text.startswith(trader.instrument_name(TOKEN, 2) + " ")

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
    assert len(latency["poll"].x) == len(latency["poll"].y) == 0      # no tick went through poll: no bar

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
    dash.refresh()
    assert "5 open order(s) cancelled" in dash.message.value

    publish(trader, 3)                          # the feed keeps running, new signals are refused
    assert trader.rejected_signals == 3
    assert len(trader.broker.orders_df()) == 5
    dash.refresh()
    assert dash.kill_button.disabled and dash.kill_button.description == "Halted"
    assert "TRADING HALTED" in dash.status_line.value
    assert len(dash.price_fig.data[3].x) == 3   # rejected signals are drawn as such

    assert not dash.resume_button.disabled
    dash.resume_button.click()
    assert not trader.risk.halted
    dash.refresh()
    assert not dash.kill_button.disabled and dash.resume_button.disabled
    assert "TRADING HALTED" not in dash.status_line.value and "resumed" in dash.message.value


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
        assert not trader.running
        assert wait_until(lambda: "replaced" in old_dash.message.value, 10)
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


# ---------------------------------------------------------------------- honest charts
class BuyOnce(Strategy):
    """Buys one lot on the first tick, then nothing: a position to flatten."""

    def __init__(self):
        self.bought = False

    def on_tick(self, tick):
        if not self.bought:
            self.bought = True
            return Signal.buy(tick, qty=65, reason="open")
        return None


def fails_on_tick(tick):
    raise ValueError(f"no price model for {tick.token}")


class Raises(Strategy):
    def on_tick(self, tick):
        return fails_on_tick(tick)


def bars(dash) -> dict:
    """Per mode: (orientation, number of x values, number of y values) of its latency trace."""
    return {t.name: (t.orientation, len(t.x or ()), len(t.y or ())) for t in dash.latency_fig.data}


def test_a_dashboard_created_after_start_draws_vertical_bars_only_for_modes_with_data(trader):
    trader.strategy = kit.examples.Null()        # no signal, so no order stage
    trader.start()
    publish(trader, 30)
    dash = kit.dashboard(trader, interval=None)  # as notebook 03 does: the trader already runs
    assert bars(dash) == {"poll": ("v", 0, 0), "queue": ("v", 3, 3), "callback": ("v", 0, 0)}
    assert list(dash.latency_fig.data[1].x) == ["dispatch", "strategy", "total"]

    dash.mode_toggle.value = "callback"
    publish(trader, 30)
    dash.refresh()
    assert bars(dash) == {"poll": ("v", 0, 0), "queue": ("v", 3, 3), "callback": ("v", 3, 3)}

    again = kit.dashboard(trader, interval=None)  # the cell is run again
    assert bars(again) == {"poll": ("v", 0, 0), "queue": ("v", 3, 3), "callback": ("v", 3, 3)}


def test_time_axes_are_ist_whatever_the_machines_zone(trader):
    from datetime import datetime, timedelta, timezone
    trader.start()
    dash = kit.dashboard(trader, interval=None)
    publish(trader, 5)
    dash.refresh()
    ist_now = datetime.now(timezone.utc) + timedelta(hours=5, minutes=30)
    for fig in (dash.price_fig, dash.throughput_fig):
        assert fig.layout.xaxis.title.text == "IST"
        shown = datetime.fromisoformat(str(fig.data[0].x[-1]))
        assert abs(shown - ist_now.replace(tzinfo=None)) < timedelta(seconds=30), (shown, ist_now)


def test_a_pause_in_the_feed_is_a_break_in_the_price_line(trader):
    import math
    from kit.ui.figures import with_gaps
    x, y = with_gaps([0, 1_000_000_000, 10_000_000_000, 11_000_000_000], [1.0, 2.0, 3.0, 4.0])
    assert list(x) == sorted(x) and len(x) == 5 and math.isnan(y[2])     # 9 s apart: a break between
    assert [v for v in y if not math.isnan(v)] == [1.0, 2.0, 3.0, 4.0]

    trader.start()
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    publish(trader, 5)
    dash.refresh()
    assert not any(math.isnan(v) for v in dash.price_fig.data[0].y)
    trader.stop()                      # a stop and a start, however quick, break the line
    trader.start()
    publish(trader, 5)
    dash.refresh()
    line = list(dash.price_fig.data[0].y)
    assert len(line) == 11 and math.isnan(line[5]) and not any(math.isnan(v) for v in line[:5] + line[6:])


def test_instruments_are_shown_by_trading_symbol(trader):
    trader.start()
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    publish(trader, 3)
    dash.refresh()
    symbol = trader.instrument_name(TOKEN, 2)
    assert symbol != TOKEN and symbol.startswith("NIFTY")
    assert (symbol, TOKEN) in dash.token_select.options and dash.token_select.value == TOKEN
    assert dash.price_fig.layout.title.text.startswith(symbol)


def test_one_palette_for_the_dashboard_and_the_research_charts(trader):
    from kit.research import charts, palette
    trader.start()
    publish(trader, 10)
    trader.mode = "callback"
    publish(trader, 10)
    dash = kit.dashboard(trader, interval=None)
    dashboard_colours = {t.name: t.marker.color for t in dash.latency_fig.data}
    cdf = charts.latency_cdf_figure(trader.metrics)
    cdf_colours = {t.name.split()[0]: t.line.color for t in cdf.data}
    assert dashboard_colours == palette.MODE_COLORS
    assert cdf_colours == {m: palette.MODE_COLORS[m] for m in ("queue", "callback")}   # poll has no data


def test_queue_depth_axis_has_integer_ticks(trader):
    dash = kit.dashboard(trader, interval=None)
    axis = dash.throughput_fig.layout.yaxis2
    assert axis.tickformat == "d" and axis.dtick >= 1 and axis.rangemode == "tozero"


# ---------------------------------------------------------------------- Flatten, Resume, errors, messages
def test_flatten_closes_the_position_and_resume_reopens_the_gate(trader):
    trader.strategy = BuyOnce()
    trader.start()
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    publish(trader, 2)                     # the buy, then its fill
    assert trader.broker.position(TOKEN).qty == 65
    dash.refresh()
    assert dash.resume_button.disabled and not dash.flatten_button.disabled

    dash.flatten_button.click()            # off the kernel thread: wait for its report
    assert wait_until(lambda: "closing order(s) sent" in dash._message[0], 15)
    assert trader.risk.halted
    publish(trader, 1)                     # paper: the closing order fills on the next tick
    assert trader.broker.position(TOKEN).qty == 0
    dash.refresh()
    assert "1 closing order(s) sent" in dash.message.value and "TRADING HALTED" in dash.status_line.value
    assert not dash.resume_button.disabled and dash.kill_button.disabled

    dash.resume_button.click()
    assert not trader.risk.halted
    dash.refresh()
    assert dash.resume_button.disabled and "TRADING HALTED" not in dash.status_line.value


def test_a_strategy_error_on_the_tick_thread_shows_its_traceback(trader):
    trader.start()
    dash = kit.dashboard(trader, interval=None)
    dash.refresh()
    assert dash.errors_box.layout.display == "none"     # nothing to show until the strategy raises
    trader.strategy = Raises()
    publish(trader, 3)
    dash.refresh()
    assert dash.errors_box.layout.display != "none" and dash.errors_box.selected_index is None   # folded
    assert dash.errors_box.get_title(0).startswith("strategy error #3: ValueError: no price model for")
    inside = dash.errors_box.children[0].value
    assert "Traceback" in inside and "fails_on_tick" in inside      # the frame that raised, not only its message
    assert inside.count("<tr>") == 1 + 3 and trader.instrument_name(TOKEN, 2) in inside   # the errors, by symbol


def test_the_message_line_clears_on_the_next_action(trader, tmp_path):
    dash = kit.dashboard(trader, interval=None)
    dash.export_button.click()             # no strategy: an error
    dash.refresh()
    assert "export failed" in dash.message.value or "no strategy" in dash.message.value
    dash.mode_toggle.value = "callback"
    dash.refresh()
    assert "no strategy" not in dash.message.value and "mode callback" in dash.message.value


def test_the_error_budget_halt_shows_in_the_status_line_and_resume_lifts_it(trader):
    trader.start()
    dash = kit.dashboard(trader, interval=None)
    trader.strategy = Raises()
    budget = trader.config.error_budget
    publish(trader, budget.max_errors + 2)        # more errors than the budget allows, within its window
    assert trader.status["strategy_halt"]
    dash.refresh()
    assert "TRADING HALTED" in dash.status_line.value and not dash.resume_button.disabled
    dash.resume_button.click()
    dash.refresh()
    assert not trader.status["strategy_halt"] and "TRADING HALTED" not in dash.status_line.value


def test_the_badge_names_where_the_feed_comes_from(sim, monkeypatch):
    """A SmartAPI trader pointed at 127.0.0.1 does not claim to be on Angel One's feed."""
    import kit
    from kit.engine.venues import AngelVenue
    local = AngelVenue(kit.ConnectionConfig(env_file=None, feed_url=sim.url))
    assert local.describe() == "SmartAPI at 127.0.0.1"
    trader = kit.LiveTrader(kit.TraderConfig(feed="smartapi", tokens={2: ["43650"]}, name="badge",
                                             connection=local.connection))
    try:
        dash = kit.dashboard(trader, interval=None)
        assert "SmartAPI at 127.0.0.1" in dash.badge.value and "Angel One" not in dash.badge.value
        dash.close()
    finally:
        trader.close()
    monkeypatch.delenv("SMARTAPI_FEED_URL", raising=False)
    assert AngelVenue(kit.ConnectionConfig(env_file=None)).describe() == "Angel One"


# ---------------------------------------------------------------------- open orders and net P&L
class Scripted(Strategy):
    """Sends, on its n-th tick, what ``plan[n](tick)`` makes (a signal or a list of them)."""

    def __init__(self, plan: dict):
        self.plan, self.n = plan, 0

    def on_tick(self, tick):
        self.n += 1
        make = self.plan.get(self.n)
        return make(tick) if make else None


@pytest.fixture
def priced_trader(request):
    """A paper trader on a rate=0 simulator whose prices a test sets tick by tick (``trade``)."""
    from kit.broker.risk import RiskLimits
    limits = RiskLimits(max_daily_loss=1_000_000, enforce_hours="never", price_collar=None)
    t = kit.LiveTrader(kit.TraderConfig(feed="sim", sim=kit.SimConfig(rate=0), tokens={2: [TOKEN]}, risk=limits,
                                        name=f"ui-{request.node.name}"))
    yield t
    board = kit.ui.dashboard._dashboards.get(t.config.name)
    if board is not None:
        board.close()
    t.close()


def trade(trader, price):
    """One tick at ``price``, handled to the end (signals submitted, paper fills made)."""
    before = trader.ticks_processed
    trader.venue.simulator.wait_for_subscribers(1)
    trader.venue.simulator.trade_at(2, TOKEN, price)
    assert wait_until(lambda: trader.ticks_processed == before + 1, 15)


def order_lines(dash) -> dict:
    """The price chart's order lines, label -> (price, colour), as the figure holds them."""
    return {s.name: (s.y0, s.line.color) for s in dash.price_fig.layout.shapes}


def test_open_orders_and_waiting_gtt_rules_are_lines_on_the_price_chart(priced_trader):
    from kit.research import palette
    from kit.ui.status import rupees
    trader = priced_trader
    trader.strategy = Scripted({
        1: lambda t: Signal.buy(t, qty=65, target=2.0, stoploss=3.0, reason="bracket"),   # fills on tick 2
        2: lambda t: [Signal.stop_sell(t, qty=65, trigger=295.0, reason="stop"),
                      Signal.buy(t, qty=65, limit=299.0, reason="rest")],
    })
    trader.start()
    assert trader.wait_connected(10)
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    for price in (300.0, 300.0, 300.1):
        trade(trader, price)
    broker = trader.broker
    rule = broker.gtt.create(TOKEN, 2, "SELL", 65, trigger=305.0, price=304.5)
    waiting = broker.gtt.create(TOKEN, 2, "BUY", 65, trigger=290.0, price=290.5)
    broker.gtt.cancel(waiting)                  # a cancelled rule draws nothing
    dash.refresh()

    stops = {o.trigger_price: o for o in broker.open_orders() if o.order_type == "STOPLOSS_MARKET"}
    assert stops[297.0].parent_id and not stops[295.0].parent_id   # the bracket's stop, and the plain stop
    assert order_lines(dash) == {
        "GTT SELL 65 @305.00": (305.0, palette.ORDER_LINES["gtt"]),
        "target SELL 65 @302.00": (302.0, palette.ORDER_LINES["target"]),
        "BUY 65 LMT 299.00": (299.0, palette.ORDER_LINES["limit"]),
        "SL SELL 65 @297.00": (297.0, palette.ORDER_LINES["stop"]),
        "SL SELL 65 @295.00": (295.0, palette.ORDER_LINES["stop"]),
    }
    labels = {a.text: a.y for a in dash.price_fig.layout.annotations}
    assert labels == {label: y for label, (y, _) in order_lines(dash).items()}
    assert {s.xref for s in dash.price_fig.layout.shapes} == {"paper"}    # across the plot, whatever the time

    # Net P&L after charges, beside gross and charges, as the broker counts them (one fill so far).
    pnl = broker.pnl()
    assert pnl["charges"] > 0 and pnl["net"] == pytest.approx(pnl["total"] - pnl["charges"])
    status = dash.status_line.value
    assert "<b class='kit-net' " in status and f">{rupees(pnl['net'])}</b>" in status
    assert f"<span class='kit-gross'>{rupees(pnl['total'])}</span>" in status
    assert f"<span class='kit-charges'>{rupees(pnl['charges'])}</span>" in status

    # Cancelled: their lines go; the bracket's legs stay.
    broker.cancel(stops[295.0].order_id)
    broker.cancel(next(o.order_id for o in broker.open_orders() if o.limit_price == 299.0 and not o.parent_id))
    broker.gtt.cancel(rule)
    dash.refresh()
    assert set(order_lines(dash)) == {"target SELL 65 @302.00", "SL SELL 65 @297.00"}
    assert {a.text for a in dash.price_fig.layout.annotations} == set(order_lines(dash))

    # The target fills: the bracket's stop is cancelled with it, and no line is left.
    trade(trader, 302.1)
    trade(trader, 302.1)
    assert broker.open_orders() == [] and broker.position(TOKEN).qty == 0
    dash.refresh()
    assert order_lines(dash) == {} and not dash.price_fig.layout.annotations
    pnl = broker.pnl()
    assert pnl["realized"] > 0 and pnl["charges"] > 0
    assert f">{rupees(pnl['net'])}</b>" in dash.status_line.value
    assert f"<span class='kit-charges'>{rupees(pnl['charges'])}</span>" in dash.status_line.value


def test_order_lines_are_rewritten_only_when_they_change(priced_trader):
    trader = priced_trader
    trader.strategy = Scripted({1: lambda t: Signal.stop_sell(t, qty=65, trigger=295.0)})
    trader.start()
    assert trader.wait_connected(10)
    dash = kit.dashboard(trader, interval=None, token=TOKEN)
    drawn = []
    draw = dash._draw_order_lines
    dash._draw_order_lines = lambda lines: (drawn.append(lines), draw(lines))
    trade(trader, 300.0)
    for _ in range(3):
        dash.refresh()
    trade(trader, 300.5)                         # a new price, the same orders: no rewrite
    dash.refresh()
    assert len(drawn) == 1 and list(order_lines(dash)) == ["SL SELL 65 @295.00"]
    stop = trader.broker.open_orders()[0]
    assert trader.broker.modify(stop.order_id, trigger=296.0)
    dash.refresh()
    dash.refresh()
    assert len(drawn) == 2 and list(order_lines(dash)) == ["SL SELL 65 @296.00"]


def test_order_line_labels_and_which_orders_and_rules_get_one():
    from kit.broker.gtt import GttRule
    from kit.core.orders import Order
    from kit.ui.figures import order_line_key, order_line_label, order_line_layout

    def order(order_type, side, qty, limit=None, trigger=None, parent="", token=TOKEN, filled=0):
        return Order("O", token, 2, side, qty, order_type, limit, "OPEN", filled, 0.0, "", 0, 0,
                     trigger_price=trigger, parent_id=parent)

    orders = [order("MARKET", "BUY", 65),                                       # no price to draw
              order("STOPLOSS_LIMIT", "SELL", 65, limit=296.5, trigger=297.0),
              order("LIMIT", "BUY", 130, limit=299.0, filled=65),               # 65 left
              order("LIMIT", "SELL", 65, limit=302.0, parent="P1"),
              order("LIMIT", "SELL", 65, limit=310.0, token="99999")]           # another instrument
    rules = [GttRule("G1", TOKEN, 2, "SELL", 65, 305.0, 304.5, "NEW"),
             GttRule("G2", TOKEN, 2, "BUY", 65, 290.0, 290.5, "SENTTOEXCHANGE"),   # fired: its order shows
             GttRule("G3", TOKEN, 2, "BUY", 65, 288.0, 288.5, "CANCELLED"),
             GttRule("G4", TOKEN, 1, "BUY", 65, 287.0, 287.5, "NEW")]               # same token, other exchange
    key = order_line_key(orders, rules, TOKEN, 2)
    assert [order_line_label(line) for line in key] == [
        "GTT SELL 65 @305.00", "target SELL 65 @302.00", "BUY 65 LMT 299.00", "SL SELL 65 @297.00 LMT 296.50"]
    assert len(order_line_key(orders, rules, TOKEN)) == 5        # exchange unknown: every rule of the token
    # Two lines at one price share one label.
    shapes, notes = order_line_layout(order_line_key([order("LIMIT", "BUY", 65, limit=299.0)] * 2, [], TOKEN, 2))
    assert len(shapes) == 2 and [n["text"] for n in notes] == ["BUY 65 LMT 299.00 · BUY 65 LMT 299.00"]


def test_gtt_rules_are_read_as_last_seen_never_asked_of_the_exchange():
    from types import SimpleNamespace

    from kit.broker.gtt import GttRule
    from kit.ui.refresh import waiting_gtt_rules

    def asked(*_):
        raise AssertionError("gtt.rules() is a request to the exchange")

    rules = [GttRule("G1", TOKEN, 2, "SELL", 65, 305.0, 304.5, "NEW"),
             GttRule("G2", TOKEN, 2, "SELL", 65, 306.0, 305.5, "CANCELLED")]
    live = SimpleNamespace(live=True, gtt=SimpleNamespace(seen=lambda: rules, rules=asked))
    assert waiting_gtt_rules(live) == rules[:1]
