"""The refresh thread: the one writer of the dashboard's charts, status, messages and buttons.

At most ``1 / MIN_INTERVAL`` refreshes a second, one ``batch_update`` per
figure per refresh, and only what changed is sent: the price chart's line
and markers when a tick of its instrument arrived, its order lines when the
set of open order prices and waiting GTT rules of its instrument changed,
the latency and throughput charts at most once a second (their percentiles
are most of a refresh's cost) and the latency bars of a mode only when that
mode handled ticks since.

What a refresh reads of the broker costs no request, paper or live:
``open_orders()``, ``pnl()`` and the GTT rules as last seen
(``broker.gtt.seen()``; never a live broker's ``gtt.rules()``, which is a
request to the exchange).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from kit.broker.gtt import GTT_NEW
from kit.engine.metrics import STAGES
from kit.research import palette
from kit.ui import figures, status as words

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.1          # seconds between refreshes, at least: 10 Hz at most
SLOW_CHARTS_INTERVAL = 1.0  # latency and throughput charts: at most once a second (percentiles cost CPU)


class Refresher:
    """Mixin for ``Dashboard``: reads the trader and writes every widget, on one thread."""

    def _init_refresh(self, interval, history: float) -> None:
        self._stop = getattr(self, "_stop", threading.Event())
        self._wake = getattr(self, "_wake", threading.Event())
        steps = max(2, int(history / (interval or 0.25)))
        self._throughput: deque = deque(maxlen=steps)  # (epoch ns, ticks/s, queue depth)
        self._counts: deque = deque(maxlen=steps)      # (monotonic s, ticks processed)
        self._latency_cache: dict[str, tuple[int, list]] = {}
        self._slow_charts_at = 0.0
        self._price_version = None
        self._order_lines = ()                        # order_line_key of the lines drawn
        self._breaks: deque = deque(maxlen=100)       # recv_ns after which a new connection began
        self._connects = None
        self._newest_recv = 0
        self._errors_shown = 0
        self._errors_at = float("-inf")
        self._relabelling = False
        self._deepest_shown = None
        self.refreshes = 0
        self.refresh_errors = 0

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
        """Read the trader once and update every chart, the status line and the message line.

        The background thread calls this; call it by hand only when the
        dashboard was made with ``interval=None`` (one writer per widget).
        """
        self._refresh(slow_charts=True)

    def _refresh(self, *, slow_charts: bool) -> None:
        trader = self.trader
        status = trader.status
        now = time.monotonic()
        self._counts.append((now, status["ticks_processed"]))
        rate = self._rate()
        self._throughput.append((time.time_ns(), rate, status["queue_depth"]))
        connection = (id(trader.feed), status["connects"])   # a start makes a new feed, a reconnect counts
        if connection != self._connects:
            # A new connection (Start, a reconnect): the price line breaks after the last tick seen.
            if self._connects is not None and self._newest_recv:
                self._breaks.append(self._newest_recv)
            self._connects = connection
        self._sync_controls(status)
        self.status_line.value = words.status_html(status, rate, trader, self._replaced(), trader.broker.pnl())
        self._refresh_errors(status["strategy_errors"])
        self._refresh_price()
        if slow_charts:
            self._slow_charts_at = time.monotonic()
            self._relabel_instruments()
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

    def _relabel_instruments(self) -> None:
        """The instrument choice by trading symbol, once the names are known (the venue's
        instrument master may load only when the trader starts)."""
        select = self.token_select
        labels = tuple((self._name(token), token) for _, token in select.options)
        if labels != tuple(select.options):
            value = select.value
            self._relabelling = True     # new options reset the value for a moment: not a user's choice
            try:
                select.options = labels
                select.value = value
            finally:
                self._relabelling = False

    def _refresh_errors(self, count: int) -> None:
        """The last strategy error in the folded box; at most once a second while errors stream
        (building ``trader.errors`` costs more than the rest of a refresh). The box is an
        Accordion, so a person's unfolding survives the rewrite."""
        if count == self._errors_shown or time.monotonic() - self._errors_at < SLOW_CHARTS_INTERVAL:
            return
        self._errors_shown, self._errors_at = count, time.monotonic()
        line, trace = words.last_error(self.trader)
        box = self.errors_box
        box.children[0].value = words.errors_html(trace, self.trader.errors)
        box.set_title(0, words.error_title(count, line))
        box.layout.display = None if count else "none"

    def _refresh_price(self) -> None:
        token = self._token
        broker = self.trader.broker
        lines = figures.order_line_key(broker.open_orders(), waiting_gtt_rules(broker), token,
                                       self._exchange_of.get(token))
        new_lines = lines != self._order_lines
        kept = self._ticks
        newest = kept[-1] if kept else None
        if newest is not None:
            self._newest_recv = newest.recv_ns
        signals = [(s, r) for s, r in _copy(self._signals) if s.token == token]
        version = (token, self._newest_recv, len(signals), len(self._breaks))
        if version == self._price_version:
            if new_lines:
                self._draw_order_lines(lines)
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
        line_x, line_y = figures.with_gaps(recv, ltp, breaks_ns=np.fromiter(self._breaks, dtype=np.int64))
        fig = self.price_fig
        with fig.batch_update():
            if new_lines:
                self._draw_order_lines(lines)
            fig.data[0].x, fig.data[0].y = self._ist(line_x), line_y
            for trace, key in zip(fig.data[1:], ("BUY", "SELL", None)):
                xs, ys = marks[key]
                trace.x, trace.y = self._ist(np.array(xs, dtype=np.int64)), np.array(ys, dtype=np.float64)
            last = f"  {ltp[-1]:,.2f}" if len(ltp) else "  (no ticks yet)"
            fig.layout.title.text = f"{self._name(token)}{last}"

    def _draw_order_lines(self, lines: tuple) -> None:
        """The order lines of ``lines`` (``figures.order_line_key``) replace the ones drawn; inside the
        price chart's ``batch_update`` when its data changes too, so one message carries both."""
        shapes, notes = figures.order_line_layout(lines)
        fig = self.price_fig
        with fig.batch_update():
            fig.layout.shapes = shapes
            fig.layout.annotations = notes
        self._order_lines = lines

    def _refresh_latency(self) -> None:
        metrics = self.trader.metrics
        changed = []
        for mode in palette.MODE_ORDER:
            n = metrics.count(mode)
            cached = self._latency_cache.get(mode)
            if cached is not None and cached[0] == n:
                continue
            rows = []
            for stage in STAGES:
                s = metrics.samples(mode, stage, last=self.latency_window)
                if s.size:
                    p50, p99 = np.percentile(s, (50, 99)) / 1e3
                    rows.append((float(p50), float(p99), int(s.size)))
                else:
                    rows.append((None, None, 0))
            self._latency_cache[mode] = (n, rows)
            changed.append(mode)
        if not changed:
            return
        fig = self.latency_fig
        with fig.batch_update():
            for trace, mode in zip(fig.data, palette.MODE_ORDER):
                if mode in changed:
                    trace.update(figures.latency_trace_values(self._latency_cache[mode][1]))

    def _refresh_throughput(self) -> None:
        points = list(self._throughput)
        wall = figures.ist_strings(np.array([p[0] for p in points], dtype=np.int64))
        deepest = max((p[2] for p in points), default=0)
        fig = self.throughput_fig
        with fig.batch_update():
            fig.data[0].x, fig.data[0].y = wall, [p[1] for p in points]
            fig.data[1].x, fig.data[1].y = wall, [p[2] for p in points]
            axis = figures.depth_axis(deepest)
            if axis != self._deepest_shown:
                self._deepest_shown = axis
                fig.layout.yaxis2.update(axis)

    def _ist(self, recv_ns: np.ndarray) -> np.ndarray:
        return figures.ist_strings(recv_ns + self._clock_offset_ns)


def waiting_gtt_rules(broker) -> list:
    """The broker's GTT rules that wait (NEW), as last seen (``gtt.seen()``): never a request to the
    exchange, which a live broker's ``gtt.rules()`` is."""
    return [r for r in broker.gtt.seen() if r.status == GTT_NEW]


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
