"""``TickPath``: one tick's whole path, top to bottom, in ``_on_tick``.

gaps told -> paper fills -> strategy -> signals checked -> risk -> broker ->
latency recorded -> observers. It runs on the socket thread (callback mode)
or on the consumer thread (queue / poll mode), never on two at once:
``kit.feed.dispatch`` guarantees the ordering and the strategy lock
guarantees that a strategy swap from the notebook waits for the tick in
progress. ``kit.engine.trader.LiveTrader`` is a ``TickPath`` with a venue, a
feed, a dispatcher and a lifecycle.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from time import perf_counter_ns

import pandas as pd

from kit.broker.base import Broker
from kit.broker.risk import RiskManager
from kit.core.listeners import Listeners
from kit.core.strategy import Signal, Strategy
from kit.engine.errors import StrategyErrors
from kit.engine.gaps import GapBook
from kit.engine.metrics import LatencyMetrics
from kit.engine.square_off import NEVER_MS
from kit.engine.signals import RejectionLog, signals_of
from kit.engine.strategy_check import check_strategy

log = logging.getLogger(__name__)


class TickPath:
    """One tick's path: gaps told -> paper fills -> strategy -> risk -> broker -> metrics and observers.

    ``_on_tick`` reads everything it needs straight off ``self``: the strategy
    and its lock, the risk manager and broker, the signal ring and counters,
    the listeners, the gaps waiting for the strategy. ``LiveTrader`` adds the
    feed, the venue, the dispatcher and the lifecycle.
    """

    def __init__(self, risk: RiskManager, broker: Broker, metrics: LatencyMetrics, *, measure_latency: bool,
                 signals_kept: int, error_budget=None):
        self.risk = risk
        self.broker: Broker = broker
        self.metrics = metrics
        self._measure_latency = measure_latency
        self._strategy: Strategy | None = None
        self._strategy_lock = threading.Lock()
        self._running = False
        self._tick_listeners = Listeners()
        self._signal_listeners = Listeners()
        self.signals: deque[Signal] = deque(maxlen=signals_kept)
        self.signal_count = 0
        self._rejections = RejectionLog()
        self.ticks_processed = 0
        self._errors = StrategyErrors(risk.gate, error_budget)
        self.rejected_signals = 0
        self._gap_book = GapBook()
        self.gaps = self._gap_book.history          # every gap found in the feed
        self._pending_gaps = self._gap_book.pending  # those the strategy has yet to hear of
        self.square_off = None                       # a SquareOffRunner, when the square-off applies
        self._square_off_at_ms = NEVER_MS           # a replay's ticks from this exchange time poll it

    # ================================================================== the tick path
    def _on_tick(self, tick, via: str) -> None:
        # Written for speed without changing what it does: a replay runs it a million
        # times a second. acquire/try/finally is the `with` statement minus its two
        # method calls; the clock is read only when latency is measured.
        measured = self._measure_latency
        dispatched = perf_counter_ns() if measured else 0
        decided = acked = 0
        lock = self._strategy_lock
        lock.acquire()
        try:
            # 0. a hole in the feed is told to the strategy before the first tick after it.
            #    One truthiness test per tick; the rest runs only while a gap awaits delivery.
            if self._pending_gaps:
                self._deliver_gaps(tick)
            # 0b. a replay's intraday square-off, by its ticks' time: one comparison per tick
            if tick.exchange_ts >= self._square_off_at_ms:
                self._square_off_due(tick)
            # 1. paper orders waiting for "the next tick" fill at this one
            self.broker.on_tick(tick)
            # 2. the strategy
            strategy = self._strategy
            signals = None
            if strategy is not None:
                try:
                    signals = strategy.on_tick(tick)
                except Exception as exc:
                    self._strategy_failed(strategy, tick, exc)
            if measured:
                decided = perf_counter_ns()
            # 3. signal -> risk -> broker, one signal at a time: a bad one never drops its siblings
            if signals is not None:
                for signal in signals_of(signals, strategy, tick, self._strategy_failed):
                    signal.tick_seq, signal.tick_recv_ns = tick.seq, tick.recv_ns
                    self.signals.append(signal)
                    self.signal_count += 1
                    try:
                        reason = self.risk.check(signal, tick, self.broker)
                        if reason is None:
                            order = self.broker.submit(signal, tick)
                            if order.status == "REJECTED":
                                reason = order.status_message or "rejected by the broker"
                    except Exception as exc:
                        reason = f"the order could not be made ({type(exc).__name__}: {exc})"
                    if reason is not None:
                        self.rejected_signals += 1
                        self._rejections.log(reason, signal)
                    for listener in self._signal_listeners.current:
                        listener(signal, reason)
                if measured:
                    acked = perf_counter_ns()
            self.ticks_processed += 1
        finally:
            lock.release()
        # 4. measurements and observers, outside the lock
        if measured:
            self.metrics.record(via, tick.recv_ns, dispatched, decided, acked)
        for listener in self._tick_listeners.current:
            listener(tick)

    def _square_off_due(self, tick) -> None:
        """Square off what is due at ``tick``'s exchange time; its flattening orders fill from this tick on."""
        runner = self.square_off
        runner.poll(tick.exchange_ts / 1000)
        self._square_off_at_ms = runner.next_at_ms

    def _deliver_gaps(self, tick) -> None:
        """Call ``strategy.on_gap`` for the gaps that end at or before ``tick`` (strategy lock held)."""
        due = self._gap_book.due(tick)
        strategy = self._strategy
        on_gap = getattr(strategy, "on_gap", None)
        if on_gap is None:
            return
        for gap in due:
            try:
                on_gap(gap)
            except Exception as exc:
                self._strategy_failed(strategy, tick, exc, "on_gap")

    def _strategy_failed(self, strategy, tick, exc, hook: str = "on_tick") -> None:
        """The slow path of every strategy error (strategy lock held): kept, logged, held to the budget."""
        self._errors.record(strategy, tick, exc, hook)

    def _call_hook(self, strategy, hook: str) -> None:
        """``strategy.on_start()`` / ``on_stop()``, if it has one, with the strategy lock held."""
        fn = getattr(strategy, hook, None)
        if fn is not None:
            try:
                fn()
            except Exception as exc:
                self._strategy_failed(strategy, None, exc, hook)

    # ================================================================== strategy errors (kit.engine.errors)
    @property
    def strategy_errors(self) -> int:
        """How many strategy errors so far (exceptions in its hooks, bad values from ``on_tick``)."""
        return self._errors.count

    @property
    def last_strategy_error(self) -> str:
        """The last strategy error, "Type: message" ("" when none)."""
        return self._errors.last

    @property
    def last_strategy_traceback(self) -> str:
        """The last strategy error's formatted traceback ("" when none), whatever thread it happened on."""
        return self._errors.last_traceback

    @property
    def errors(self) -> pd.DataFrame:
        """The last strategy errors, newest last: time (IST), token, symbol, hook, exception, message, traceback.

        ``hook`` is "on_tick", "on_gap", "on_start", "on_stop", or "output" for a
        bad value returned by ``on_tick``.
        """
        return self._errors.frame(self.instrument_name)

    def instrument_name(self, token: str, exchange_type: int | None = None) -> str:
        """The token's trading symbol (as the instrument master spells it); the token itself when unknown."""
        return str(token)

    # ================================================================== the strategy and observers
    @property
    def strategy(self) -> Strategy | None:
        return self._strategy

    @strategy.setter
    def strategy(self, new: Strategy | None) -> None:
        """Swap between two ticks: the tick in progress finishes with the old strategy.

        A strategy that cannot run (a class, no ``on_tick``, a wrong signature) is a
        TypeError here, and the trader keeps the strategy it had.
        """
        check_strategy(new)
        with self._strategy_lock:
            old = self._strategy
            if old is new:
                return
            if self._running and old is not None:
                self._call_hook(old, "on_stop")
            self._errors.restart_window()
            if self._running and new is not None:
                self._call_hook(new, "on_start")
            self._strategy = new
            halted = self._errors.halted
        if halted:
            log.warning("new strategy assigned; new orders stay halted (%s) until trader.resume()", halted)

    def add_tick_listener(self, fn) -> None:
        """``fn(tick)`` after each processed tick, on the tick's thread. Keep it cheap."""
        self._tick_listeners.add(fn)

    def remove_tick_listener(self, fn) -> None:
        self._tick_listeners.remove(fn)

    def add_signal_listener(self, fn) -> None:
        """``fn(signal, rejection_reason_or_None)`` for every signal."""
        self._signal_listeners.add(fn)

    def remove_signal_listener(self, fn) -> None:
        self._signal_listeners.remove(fn)

    def signals_df(self) -> pd.DataFrame:
        return pd.DataFrame([s.as_row() for s in list(self.signals)],
                            columns=["token", "side", "qty", "order_type", "limit_price", "trigger_price",
                                     "target", "stoploss", "exchange_type", "tick_seq", "reason"])
