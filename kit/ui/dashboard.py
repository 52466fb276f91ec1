"""The notebook cockpit: ``kit.dashboard(trader)``, controls and streaming charts in one widget.

    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", sim=kit.SimConfig(rate=10), name="quickstart"))
    dash = kit.dashboard(trader)      # display it: the last expression of a cell
    dash.refresh()                    # one refresh by hand (the background thread does this ≤ 10×/s)
    dash.close()                      # stop the refresh thread, detach from the trader

What it shows: a paper/live badge; the dispatch mode (queue / callback /
poll) as a toggle; Start, Stop, the kill switch, Flatten and Resume; a status
line (connected, ticks/s, queue depth, drops, strategy errors, reconnects,
net P&L after charges with gross and charges beside it, a halt and its
reason); the last strategy error's traceback, folded; and three plotly
``FigureWidget`` charts: the price of one instrument (by trading symbol) with
its buy and sell signals and a labelled line per open order price (a stop's
trigger, a resting limit, a bracket's target) and per waiting GTT rule,
latency per stage per mode (p50 bar, p99 whisker, over each mode's last
ticks) and throughput. Times are IST.

The parts: ``figures`` (the charts and their data), ``status`` (the words),
``controls`` (the buttons and what a click does), ``refresh`` (the thread
that writes every widget).

Threads. The tick thread only appends each ``Tick`` to one bounded deque:
the listener it calls is the deque's own ``append``, a C call with no Python
frame (a Python listener cost a replay a quarter of its speed). Everything
else happens on **one** refresh thread, the only writer of every widget.
Click handlers run on the kernel's thread, act on the trader and post a
message; the refresh they trigger at once shows it.

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

import threading
import time
from collections import deque

import ipywidgets as widgets

from kit.research import palette
from kit.ui import figures, status as words
from kit.ui.controls import Controls
from kit.ui.refresh import MIN_INTERVAL, SLOW_CHARTS_INTERVAL, Refresher

MAX_KEPT_TICKS = 50_000     # the last ticks handled, over all tokens, that the price chart draws from (a few MB)
MODE_COLORS = palette.MODE_COLORS
MODE_ORDER = palette.MODE_ORDER

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


class Dashboard(Controls, Refresher, widgets.VBox):
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
        self._init_refresh(interval, history)

        # ---- buffers the tick thread appends to (bounded; one append per tick)
        self._ticks: deque = deque(maxlen=MAX_KEPT_TICKS)
        self._signals: deque = deque(maxlen=1000)      # (signal, rejection reason or None)
        # perf_counter_ns (the tick stamps) -> epoch ns; the charts show it in IST.
        self._clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._applied_mode = trader.mode
        # Bound methods are created anew on each attribute access; keep the ones
        # registered so remove_*_listener finds them by identity.
        self._tick_listener = self._ticks.append
        self._signal_listener = self._record_signal

        tokens = _configured_tokens(trader)
        self._token = token or (tokens[0][1] if tokens else None)
        if self._token is not None and self._token not in [t for _, t in tokens]:
            tokens.insert(0, (None, self._token))
        self._exchange_of = {t: e for e, t in tokens}

        live = not trader.config.paper
        feed = trader.venue.describe() if trader.venue is not None else "replay"
        self.badge = widgets.HTML(words.badge("LIVE" if live else "PAPER", palette.SELL if live else palette.BUY, feed))
        controls = self._build_controls(trader, MODE_ORDER, [(self._name(t, e), t) for e, t in tokens], self._token)
        controls.children = (self.badge, *controls.children)
        self.status_line = widgets.HTML()
        self.status_line.add_class("kit-status")
        # Folded until a person opens it; hidden while the strategy has never raised.
        self.errors_box = widgets.Accordion([widgets.HTML()], layout=widgets.Layout(display="none"))
        self.errors_box.add_class("kit-error")
        self.price_fig = figures.price_figure()
        self.latency_fig = figures.latency_figure(latency_window)
        self.throughput_fig = figures.throughput_figure()
        for fig, css in ((self.price_fig, "kit-price"), (self.latency_fig, "kit-latency"),
                         (self.throughput_fig, "kit-throughput")):
            fig.add_class(css)
        charts = widgets.HBox([self.latency_fig, self.throughput_fig])
        super().__init__([controls, self.status_line, self.errors_box, self.message, self.price_fig, charts])
        self.add_class("kit-dashboard")

        trader.add_tick_listener(self._tick_listener)
        trader.add_signal_listener(self._signal_listener)
        self._attached = True
        self.refresh()
        if interval is not None:
            self._thread = threading.Thread(target=self._run, name=f"kit-dashboard-{trader.config.name}",
                                            daemon=True)
            self._thread.start()

    # tick thread: append only
    def _record_signal(self, signal, reason) -> None:
        self._signals.append((signal, reason))

    def _refresh_soon(self) -> None:
        """Wake the refresh thread now: it redraws every chart, the slow ones too."""
        self._wake.set()

    def _name(self, token, exchange_type=None) -> str:
        """The instrument's trading symbol (NIFTY, NIFTY 27NOV 24000 CE); its token if unknown."""
        if token is None:
            return "(no instrument)"
        return self.trader.instrument_name(token, exchange_type if exchange_type is not None
                                           else self._exchange_of.get(token))

    # lifecycle
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
            for child in (self.badge, *self._control_widgets(), self.status_line, *self.errors_box.children,
                          self.errors_box,
                          self.price_fig, self.latency_fig, self.throughput_fig, *self.children):
                child.close()
        super().close()

    def __repr__(self) -> str:
        state = "refreshing" if self.refreshing else "not refreshing"
        return f"<Dashboard for {self.trader!r}, {state}>"


def _configured_tokens(trader) -> list[tuple[int, str]]:
    """``(exchange type, token)`` of every instrument the trader subscribes, in the config's order."""
    tokens = trader.config.tokens
    if tokens is None and trader.venue is not None:
        tokens = trader.venue.default_tokens()
    if not isinstance(tokens, dict):      # a list of symbols, before the engine resolved them
        return [(None, str(t)) for t in tokens or ()]
    return [(exchange, str(t)) for exchange, listed in tokens.items() for t in listed]


__all__ = ["dashboard", "Dashboard", "MIN_INTERVAL", "SLOW_CHARTS_INTERVAL", "MAX_KEPT_TICKS"]
