"""The notebook cockpit: ``kit.dashboard(trader)``, controls and streaming charts in one widget.

    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", sim=kit.SimConfig(rate=10), name="quickstart"))
    dash = kit.dashboard(trader)      # display it: the last expression of a cell
    dash.refresh()                    # one refresh by hand (the background thread does this ≤ 10×/s)
    dash.close()                      # stop the refresh thread, detach from the trader

What it shows: a paper/live badge; the dispatch mode (queue / callback /
poll) as a toggle; Start, Stop and a kill switch; a status line (connected,
ticks/s, queue depth, drops, strategy errors, reconnects, P&L); and three
plotly ``FigureWidget`` charts: the price of one token with its buy and sell
signals, latency per stage per mode (p50 bar, p99 whisker, over each mode's
last ticks) and throughput.

Threads. The tick thread only appends each ``Tick`` to one bounded deque:
the listener it calls is the deque's own ``append``, a C call with no Python
frame (a Python listener cost a replay a quarter of its speed). The refresh
thread picks the charted token's ticks out of that deque. Everything else
happens on **one** refresh thread, the only writer of the charts, the status
line and the button states, at most ``1 / MIN_INTERVAL`` times a second, with
one ``batch_update`` per figure per refresh. The latency and throughput
charts are redrawn at most once a second (and at once after a click): their
percentiles are most of a refresh's cost, and a second is live enough to
see a mode switch. Click handlers run on the
kernel's thread and act on the trader only (plus the message line, which
nothing else writes); what they change shows up at the next refresh, which
they trigger at once.

Why a thread and not a task on the kernel's asyncio loop: a synchronous cell
(``time.sleep(10)``, a backtest, a slow ``DataFrame`` join) holds that loop
until it ends, so a loop task would freeze the charts exactly when a trader
looks at them. A thread keeps streaming through such cells (ipykernel sends
comm messages from threads safely from 7.1 on; 7.0.x is excluded in
``pyproject.toml``). Clicks are messages to the kernel's loop, so they still
wait for a long synchronous cell to finish; the trader itself runs on its own
threads and is not affected.

Re-running the cell that creates a dashboard closes the previous dashboard of
the same trader name first: its refresh thread stops and its listeners are
detached, so there is never a second writer.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from collections import deque

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from kit.feed.dispatch import CALLBACK, POLL, QUEUE
from kit.engine.trader import current_trader
from kit.engine.metrics import STAGES

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.1          # seconds between refreshes, at least: 10 Hz at most
SLOW_CHARTS_INTERVAL = 1.0  # latency and throughput charts: at most once a second (percentiles cost CPU)
MAX_KEPT_TICKS = 50_000     # the last ticks handled, over all tokens, that the price chart draws from (a few MB)
MODE_COLORS = {POLL: "#d62728", QUEUE: "#1f77b4", CALLBACK: "#2ca02c"}
MODE_ORDER = (POLL, QUEUE, CALLBACK)   # the seed's baseline first, as the toggle shows them

# trader name -> the dashboard watching it; re-creating one closes the old one.
_dashboards: dict[str, "Dashboard"] = {}
_registry_lock = threading.Lock()


def dashboard(trader, *, token: str | None = None, interval: float | None = 0.25, window: int = 600,
              latency_window: int = 2000, history: float = 60.0) -> "Dashboard":
    """The cockpit for ``trader``, as one ipywidgets layout (display it as a cell's last expression).

    token: the instrument whose price is charted first (a dropdown switches it).
    interval: seconds between refreshes (≥ 0.1); ``None`` starts no refresh
      thread, and ``refresh()`` is then called by hand.
    window: price points drawn, at most: the token's last ticks among the
      last ``MAX_KEPT_TICKS`` the trader handled. latency_window: each mode's last
      ticks that the latency percentiles cover. history: seconds of throughput.

        dash = kit.dashboard(trader)
        dash.start_button.click()       # what the Start button does
        dash.mode_toggle.value = "callback"
    """
    name = trader.config.name
    with _registry_lock:
        previous = _dashboards.pop(name, None)
    if previous is not None:
        previous.close()
    board = Dashboard(trader, token=token, interval=interval, window=window,
                      latency_window=latency_window, history=history)
    with _registry_lock:
        _dashboards[name] = board
    return board


class Dashboard(widgets.VBox):
    """One trader's cockpit. Build it with ``kit.dashboard(trader)``; see the module docstring."""

    def __init__(self, trader, *, token: str | None = None, interval: float | None = 0.25,
                 window: int = 600, latency_window: int = 2000, history: float = 60.0):
        # First, so that close() (which ipywidgets' __del__ calls) works on a half-built dashboard.
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._attached = False
        if interval is not None and interval < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s (10 refreshes a second)")
        if window < 2 or latency_window < 1:
            raise ValueError("window must be >= 2 and latency_window >= 1")
        self.trader = trader
        self.interval = interval
        self.window = window
        self.latency_window = latency_window
        self.refreshes = 0
        self.refresh_errors = 0

        # ---- buffers the tick thread appends to (bounded; one append per tick)
        self._ticks: deque = deque(maxlen=MAX_KEPT_TICKS)
        self._signals: deque = deque(maxlen=1000)      # (signal, rejection reason or None)
        steps = max(2, int(history / (interval or 0.25)))
        self._throughput: deque = deque(maxlen=steps)  # (wall ns, ticks/s, queue depth), refresh thread only
        self._counts: deque = deque(maxlen=steps)      # (monotonic s, ticks processed), refresh thread only
        # perf_counter_ns (the tick stamps) -> local wall-clock time, for the time axes.
        self._clock_offset_ns = time.time_ns() - time.perf_counter_ns() + time.localtime().tm_gmtoff * 10**9
        self._latency_cache: dict[str, tuple[int, list]] = {}
        self._slow_charts_at = 0.0
        self._price_version = None
        self._applied_mode = trader.mode
        # Bound methods are created anew on each attribute access; keep the ones
        # registered so remove_*_listener finds them by identity.
        self._tick_listener = self._ticks.append
        self._signal_listener = self._record_signal

        tokens = _configured_tokens(trader)
        self._token = token or (tokens[0] if tokens else None)
        if self._token is not None and self._token not in tokens:
            tokens.insert(0, self._token)

        # ---- widgets
        live = not trader.config.paper
        feed = "Angel One feed" if trader.config.feed == "smartapi" else "simulator"
        self.badge = widgets.HTML(_badge("LIVE" if live else "PAPER", "#c62828" if live else "#2e7d32", feed))
        self.mode_toggle = widgets.ToggleButtons(options=list(MODE_ORDER), value=trader.mode,
                                                 tooltips=["the seed's get_nowait + sleep(50 ms) baseline",
                                                           "bounded queue, blocking get on a consumer thread",
                                                           "strategy runs on the socket thread"],
                                                 style={"button_width": "78px"})
        self.start_button = widgets.Button(description="Start", icon="play", button_style="success",
                                           layout=widgets.Layout(width="90px"))
        self.stop_button = widgets.Button(description="Stop", icon="stop", layout=widgets.Layout(width="90px"))
        self.kill_button = widgets.Button(description="Kill switch", icon="power-off", button_style="danger",
                                          tooltip="halt trading: reject every new signal, cancel open orders",
                                          layout=widgets.Layout(width="120px"))
        self.export_button = widgets.Button(description="Export", icon="file-export",
                                            tooltip="write the current strategy to a standalone script",
                                            layout=widgets.Layout(width="90px"))
        self.export_path = widgets.Text(value="", placeholder="strategies/<strategy>.py",
                                        layout=widgets.Layout(width="210px"))
        self.token_select = widgets.Dropdown(options=tokens, value=self._token, description="token",
                                             layout=widgets.Layout(width="190px"))
        self.status_line = widgets.HTML()
        self.status_line.add_class("kit-status")
        self.message = widgets.HTML()          # written by the click handlers only
        self.message.add_class("kit-message")
        self.price_fig = _price_figure()
        self.latency_fig = _latency_figure(latency_window)
        self.throughput_fig = _throughput_figure()
        for fig, name in ((self.price_fig, "kit-price"), (self.latency_fig, "kit-latency"),
                          (self.throughput_fig, "kit-throughput")):
            fig.add_class(name)
        self._sync_controls(trader.status)

        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(self._on_stop)
        self.kill_button.on_click(self._on_kill)
        self.export_button.on_click(self._on_export)
        self.mode_toggle.observe(self._on_mode, names="value")
        self.token_select.observe(self._on_token, names="value")

        controls = widgets.HBox([self.badge, self.mode_toggle, self.start_button, self.stop_button,
                                 self.kill_button, self.token_select, self.export_button, self.export_path],
                                layout=widgets.Layout(align_items="center", flex_flow="row wrap"))
        charts = widgets.HBox([self.latency_fig, self.throughput_fig])
        super().__init__([controls, self.status_line, self.message, self.price_fig, charts])
        self.add_class("kit-dashboard")

        trader.add_tick_listener(self._tick_listener)
        trader.add_signal_listener(self._signal_listener)
        self._attached = True
        self.refresh()
        if interval is not None:
            self._thread = threading.Thread(target=self._run, name=f"kit-dashboard-{trader.config.name}",
                                            daemon=True)
            self._thread.start()

    # ================================================================== tick thread: append only
    def _record_signal(self, signal, reason) -> None:
        self._signals.append((signal, reason))

    # ================================================================== kernel thread: clicks
    def _on_start(self, _button=None) -> None:
        if self._replaced():
            self._say("this trader was replaced by a newer one of the same name; "
                      "run kit.dashboard(trader) for the new one", error=True)
            return
        try:
            self.trader.start()
            self._say(f"started on the {self.trader.config.feed} feed, mode {self.trader.mode}")
        except Exception as exc:   # shown, not raised: a click has no cell to raise into
            log.exception("start failed")
            self._say(f"start failed: {type(exc).__name__}: {exc}", error=True)
        self._refresh_soon()

    def _on_stop(self, _button=None) -> None:
        try:
            self.trader.stop()
            self._say("stopped")
        except Exception as exc:
            log.exception("stop failed")
            self._say(f"stop failed: {type(exc).__name__}: {exc}", error=True)
        self._refresh_soon()

    def _on_kill(self, _button=None) -> None:
        """Halt trading first (no new order can pass), then cancel what is still open."""
        try:
            # The engine's kill switch, without flattening and without waiting for the exchange.
            report = self.trader.kill("kill switch pressed in the dashboard", flatten=False, timeout=0)
            self._say(f"KILL SWITCH: trading halted, {report['cancelled']} open order(s) cancelled; "
                      "the feed keeps running. Resume in code with trader.resume()", error=True)
        except Exception as exc:
            log.exception("kill switch failed")
            self._say(f"kill switch failed: {type(exc).__name__}: {exc}", error=True)
        self._refresh_soon()

    def _on_export(self, _button=None) -> None:
        """Write the running strategy's class, with what it uses from the notebook, to a script."""
        from kit.research.export import ExportError, default_script_path, export_strategy
        strategy = self.trader.strategy
        if strategy is None:
            self._say("no strategy to export: assign trader.strategy first", error=True)
            return
        path = self.export_path.value.strip() or str(default_script_path(type(strategy)))
        try:
            written = export_strategy(type(strategy), path)
            self._say(f"exported {type(strategy).__name__} to {written}; run: python {written} --feed sim")
        except ExportError as exc:
            self._say(f"export failed: {exc}", error=True)
        except Exception as exc:
            log.exception("export failed")
            self._say(f"export failed: {type(exc).__name__}: {exc}", error=True)

    def _on_mode(self, change) -> None:
        # trader.mode first, then _applied_mode: a refresh in between sees the
        # trader already in the new mode and leaves the toggle as it is.
        self.trader.mode = change["new"]
        self._applied_mode = change["new"]
        self._refresh_soon()

    def _on_token(self, change) -> None:
        self._token = change["new"]
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Wake the refresh thread now: it redraws every chart, the slow ones too."""
        self._wake.set()

    def _replaced(self) -> bool:
        return current_trader(self.trader.config.name) is not self.trader

    def _say(self, text: str, *, error: bool = False) -> None:
        color = "#c62828" if error else "#555"
        self.message.value = f'<span style="color:{color}">{time.strftime("%H:%M:%S")} {html.escape(text)}</span>'

    # ================================================================== refresh thread: the one writer
    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            clicked = self._wake.wait(self.interval)    # set by a click (or by close, which stops us)
            self._wake.clear()
            pause = last + MIN_INTERVAL - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            if self._stop.is_set():
                break
            last = time.monotonic()
            try:
                self._refresh(slow_charts=clicked or last - self._slow_charts_at >= SLOW_CHARTS_INTERVAL)
            except Exception:
                self.refresh_errors += 1
                if self.refresh_errors <= 5 or self.refresh_errors % 100 == 0:
                    log.exception("dashboard refresh failed (#%d)", self.refresh_errors)

    def refresh(self) -> None:
        """Read the trader once and update every chart and the status line.

        The background thread calls this; call it by hand only when the
        dashboard was made with ``interval=None`` (one writer per widget).
        """
        self._refresh(slow_charts=True)

    def _refresh(self, *, slow_charts: bool) -> None:
        """The price chart and status every time; latency and throughput charts when ``slow_charts``."""
        trader = self.trader
        status = trader.status
        now = time.monotonic()
        self._counts.append((now, status["ticks_processed"]))
        rate = self._rate()
        self._throughput.append((time.time_ns() + time.localtime().tm_gmtoff * 10**9, rate, status["queue_depth"]))
        self._sync_controls(status)
        self.status_line.value = _status_html(status, rate, trader, self._replaced())
        self._refresh_price()
        if slow_charts:
            self._slow_charts_at = time.monotonic()
            self._refresh_latency()
            self._refresh_throughput()
        self.refreshes += 1

    def _rate(self) -> float:
        """Ticks processed per second over the last second (or the time there is)."""
        counts = self._counts
        newest_t, newest_n = counts[-1]
        t, n = newest_t, newest_n
        for t, n in reversed(counts):
            if newest_t - t >= 1.0:
                break
        return (newest_n - n) / (newest_t - t) if newest_t > t else 0.0

    def _sync_controls(self, status: dict) -> None:
        running = status["running"]
        self.start_button.disabled = running
        self.stop_button.disabled = not running
        halted = bool(getattr(self.trader.risk, "halted", False))
        self.kill_button.disabled = halted
        self.kill_button.description = "Halted" if halted else "Kill switch"
        mode = self.trader.mode
        if mode != self._applied_mode:      # changed in code: follow it
            self._applied_mode = mode
            self.mode_toggle.value = mode

    def _refresh_price(self) -> None:
        token = self._token
        kept = self._ticks
        newest = kept[-1] if kept else None
        signals = [(s, r) for s, r in _copy(self._signals) if s.token == token]
        version = (token, newest.recv_ns if newest is not None else 0, len(signals))
        if version == self._price_version:
            return
        self._price_version = version
        ticks = _last_of_token(_copy(kept), token, self.window)
        recv = np.fromiter((t.recv_ns for t in ticks), dtype=np.int64, count=len(ticks))
        ltp = np.fromiter((t.ltp for t in ticks), dtype=np.float64, count=len(ticks))
        marks = {"BUY": ([], []), "SELL": ([], []), None: ([], [])}
        for signal, reason in signals:
            i = int(np.searchsorted(recv, signal.tick_recv_ns))
            if i < len(recv) and recv[i] == signal.tick_recv_ns:   # else it left the window
                xs, ys = marks[None if reason is not None else signal.side]
                xs.append(recv[i])
                ys.append(ltp[i])
        fig = self.price_fig
        with fig.batch_update():
            fig.data[0].x, fig.data[0].y = self._wall(recv), ltp
            for trace, key in zip(fig.data[1:], ("BUY", "SELL", None)):
                xs, ys = marks[key]
                trace.x, trace.y = self._wall(np.array(xs, dtype=np.int64)), np.array(ys, dtype=np.float64)
            last = f"  {ltp[-1]:,.2f}" if len(ltp) else "  (no ticks yet)"
            fig.layout.title.text = f"{token}{last}"

    def _refresh_latency(self) -> None:
        metrics = self.trader.metrics
        changed = False
        for mode in MODE_ORDER:
            n = metrics.count(mode)
            cached = self._latency_cache.get(mode)
            if cached is not None and cached[0] == n:
                continue
            changed = True
            rows = []
            for stage in STAGES:
                s = metrics.samples(mode, stage, last=self.latency_window)
                if s.size:
                    p50, p99 = np.percentile(s, (50, 99)) / 1e3
                    rows.append((p50, p99, s.size))
                else:
                    rows.append((None, None, 0))
            self._latency_cache[mode] = (n, rows)
        if not changed:
            return
        fig = self.latency_fig
        with fig.batch_update():
            for trace, mode in zip(fig.data, MODE_ORDER):
                rows = self._latency_cache[mode][1]
                trace.y = [r[0] for r in rows]
                trace.error_y.array = [None if r[0] is None else r[1] - r[0] for r in rows]
                trace.customdata = [[r[1], r[2]] for r in rows]

    def _refresh_throughput(self) -> None:
        points = list(self._throughput)
        wall = _local_time_strings(np.array([p[0] for p in points], dtype=np.int64))
        fig = self.throughput_fig
        with fig.batch_update():
            fig.data[0].x, fig.data[0].y = wall, [p[1] for p in points]
            fig.data[1].x, fig.data[1].y = wall, [p[2] for p in points]

    def _wall(self, recv_ns: np.ndarray) -> np.ndarray:
        return _local_time_strings(recv_ns + self._clock_offset_ns)

    # ================================================================== lifecycle
    @property
    def refreshing(self) -> bool:
        """True while the background refresh thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop refreshing, detach from the trader and close the widgets. The trader keeps running."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._thread = None
        if self._attached:
            self._attached = False
            self.trader.remove_tick_listener(self._tick_listener)
            self.trader.remove_signal_listener(self._signal_listener)
            with _registry_lock:
                if _dashboards.get(self.trader.config.name) is self:
                    del _dashboards[self.trader.config.name]
            for child in (self.badge, self.mode_toggle, self.start_button, self.stop_button, self.kill_button,
                          self.export_button, self.export_path,
                          self.token_select, self.status_line, self.message, self.price_fig,
                          self.latency_fig, self.throughput_fig, *self.children):
                child.close()
        super().close()

    def __repr__(self) -> str:
        state = "refreshing" if self.refreshing else "not refreshing"
        return f"<Dashboard for {self.trader!r}, {state}>"


# ====================================================================== helpers
def _copy(buffer) -> list:
    """A snapshot of a deque another thread appends to."""
    if buffer is None:
        return []
    while True:
        try:
            return list(buffer)
        except RuntimeError:    # "deque mutated during iteration": take it again
            continue


def _last_of_token(ticks: list, token: str, n: int) -> list:
    """The last ``n`` of ``ticks`` (oldest first) whose token is ``token``, oldest first."""
    picked = []
    for tick in reversed(ticks):
        if tick.token == token:
            picked.append(tick)
            if len(picked) == n:
                break
    picked.reverse()
    return picked


def _local_time_strings(wall_ns: np.ndarray) -> np.ndarray:
    """ISO strings to the millisecond. The front end reads strings as dates; a datetime64
    array would reach it as plain integers, and a numeric "date" axis reverts to linear."""
    return wall_ns.astype("datetime64[ns]").astype("datetime64[ms]").astype(str)


def _configured_tokens(trader) -> list[str]:
    tokens = trader.config.tokens
    if tokens is None and trader.venue is not None:
        tokens = trader.venue.default_tokens()
    return [str(t) for exchange in (tokens or {}).values() for t in exchange]


def _badge(text: str, color: str, detail: str) -> str:
    return (f'<span style="background:{color};color:white;font-weight:bold;padding:3px 8px;'
            f'border-radius:4px">{text}</span> <span style="color:#555">{html.escape(detail)}</span>')


def _status_html(status: dict, rate: float, trader, replaced: bool) -> str:
    connected = ('<b style="color:#2e7d32">● connected</b>' if status["connected"]
                 else '<b style="color:#c62828">○ not connected</b>')
    state = "running" if status["running"] else "stopped"
    pnl = status["pnl"]
    pnl_color = "#2e7d32" if pnl >= 0 else "#c62828"
    parts = [
        connected, state,
        f"mode <b>{status['mode']}</b>",
        f"ticks <b class='kit-ticks'>{status['ticks_processed']:,}</b> · <b>{rate:,.1f}</b>/s",
        f"queue {status['queue_depth']} (max {status['max_queue_depth']}) · dropped {status['dropped']:,}",
        f"signals {status['signals']:,} (rejected {status['rejected_signals']:,})",
        f"strategy errors {status['strategy_errors']:,}",
        f"reconnects {status['reconnects']:,}",
        f"P&amp;L <b style='color:{pnl_color}'>₹{pnl:,.2f}</b> "
        f"(realized {status['realized_pnl']:,.2f})",
    ]
    if status["strategy_errors"]:
        parts.append(f"<span style='color:#c62828'>last error: {html.escape(trader.last_strategy_error[:120])}</span>")
    if replaced:
        parts.insert(0, "<b style='color:#c62828'>REPLACED: a newer trader of this name exists;"
                        " run kit.dashboard(trader) again</b>")
    if getattr(trader.risk, "halted", False):
        reason = html.escape(getattr(trader.risk, "halt_reason", ""))
        parts.append(f"<b style='color:#c62828'>TRADING HALTED ({reason})</b>")
    elif status["orders_blocked"] and status["running"]:
        # Why orders are refused now: not armed, a journal that cannot be written, positions unchecked.
        parts.append(f"<b style='color:#c62828'>ORDERS BLOCKED: {html.escape(status['orders_blocked'][:160])}</b>")
    return '<div style="font-family:monospace;font-size:12px">' + " | ".join(parts) + "</div>"


def _price_figure() -> go.FigureWidget:
    fig = go.FigureWidget(
        data=[go.Scatter(name="ltp", mode="lines", line={"color": "#455a64", "width": 1.5}),
              go.Scatter(name="buy", mode="markers",
                         marker={"symbol": "triangle-up", "size": 11, "color": "#2e7d32"}),
              go.Scatter(name="sell", mode="markers",
                         marker={"symbol": "triangle-down", "size": 11, "color": "#c62828"}),
              go.Scatter(name="rejected", mode="markers",
                         marker={"symbol": "x", "size": 9, "color": "#9e9e9e"})],
        layout={"height": 280, "margin": {"l": 60, "r": 20, "t": 36, "b": 30}, "title": {"text": "price"},
                "uirevision": "keep zoom", "legend": {"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
                "xaxis": {"type": "date"}, "yaxis": {"tickformat": ",.2f"}, "width": 980})
    return fig


def _latency_figure(latency_window: int) -> go.FigureWidget:
    traces = [go.Bar(name=mode, x=list(STAGES), y=[None] * len(STAGES), marker_color=MODE_COLORS[mode],
                     error_y={"type": "data", "symmetric": False, "array": [None] * len(STAGES),
                              "arrayminus": [0] * len(STAGES), "color": "#333"},
                     hovertemplate=f"{mode} %{{x}}: p50 %{{y:,.1f}} µs, p99 %{{customdata[0]:,.1f}} µs"
                                   f" (%{{customdata[1]}} ticks)<extra></extra>")
              for mode in MODE_ORDER]
    return go.FigureWidget(
        data=traces,
        layout={"height": 300, "width": 520, "barmode": "group", "margin": {"l": 60, "r": 10, "t": 40, "b": 30},
                "title": {"text": f"latency per stage, µs (p50 bar, p99 whisker; last {latency_window:,} ticks per mode)",
                          "font": {"size": 12}},
                "yaxis": {"type": "log", "title": {"text": "µs"}}, "uirevision": "keep zoom",
                "legend": {"orientation": "h", "y": -0.15}})


def _throughput_figure() -> go.FigureWidget:
    return go.FigureWidget(
        data=[go.Scatter(name="ticks/s", mode="lines", line={"color": "#1f77b4"}),
              go.Scatter(name="queue depth", mode="lines", line={"color": "#ff7f0e", "dash": "dot"}, yaxis="y2")],
        layout={"height": 300, "width": 460, "margin": {"l": 50, "r": 50, "t": 40, "b": 30},
                "title": {"text": "throughput", "font": {"size": 12}}, "uirevision": "keep zoom",
                "xaxis": {"type": "date"},
                "yaxis": {"title": {"text": "ticks/s"}, "rangemode": "tozero"},
                "yaxis2": {"title": {"text": "queue depth"}, "overlaying": "y", "side": "right",
                           "rangemode": "tozero", "showgrid": False, "tickformat": ",d"},
                "legend": {"orientation": "h", "y": -0.15}})
