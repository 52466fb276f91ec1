"""``LiveTrader``: feed -> dispatch -> strategy -> risk -> broker -> positions, measured.

    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", mode="queue"))
    trader.strategy = MyStrategy()          # swappable while running
    trader.use_direct_callbacks = True      # same as trader.mode = "callback"
    trader.start(); ...; trader.stop()      # idempotent; start/stop/start works

A tick's whole path is ``TickPath._on_tick`` (``kit.engine.tick_path``),
top to bottom; a ``LiveTrader`` is a ``TickPath`` with a venue, a feed, a
dispatcher and a lifecycle.

This module keeps the lifecycle; the rest of the trader is
in its parts' modules: the config (``kit.engine.config``), the venue that owns
the connection (``kit.engine.venues``; none for a replay), the broker
(``kit.engine.brokers``), the live controls (``kit.engine.controls``),
``status`` (``kit.engine.status``), the gaps told to the strategy
(``kit.engine.gaps``), the check of what ``on_tick`` returned
(``kit.engine.signals``) and the recording (``kit.engine.recording``).

Creating a trader with the same ``name`` as a live one closes the old one
first, so re-running a notebook cell never leaves two feeds running.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
import time
import weakref
from dataclasses import replace

from kit.broker.risk import RiskManager
from kit.core.strategy import Signal
from kit.engine.brokers import connect_broker, make_broker
from kit.engine.config import TraderConfig
from kit.engine.controls import LiveControls
from kit.engine.heap import frozen_heap
from kit.engine.tick_path import TickPath
from kit.engine.metrics import LatencyMetrics
from kit.engine.recording import RecordingTap
from kit.engine.square_off import INTRADAY_PRODUCTS, SquareOffRunner
from kit.engine.instrument_names import InstrumentNames
from kit.engine.status import trader_status
from kit.engine.venues import Venue, venue_for
from kit.feed.dispatch import CALLBACK, QUEUE, Dispatcher
from kit.feed import shards
from kit.feed.live import SmartFeed
from kit.feed.shards import ShardedFeed

log = logging.getLogger(__name__)

_live_traders: "weakref.WeakValueDictionary[str, LiveTrader]" = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


class LiveTrader(TickPath):
    """Runs one strategy on one feed. See the module docstring, and README's table of its public names.

    ``venue``: where the ticks come from and live orders go; by default the one
    ``config.feed`` names (``kit.engine.venues.venue_for``). Pass
    ``venue=kit.SimVenue(simulator=sim)`` to share a running simulator.
    ``overrides``: TraderConfig fields, e.g. ``LiveTrader(name="b")``.
    ``clock``: epoch seconds for the trading hours and the square-off (tests inject one).
    """

    def __init__(self, config: TraderConfig | None = None, *, venue: Venue | None = None, clock=time.time,
                 **overrides):
        config = replace(config or TraderConfig(), **overrides)
        if venue is None:
            venue = venue_for(config)
        elif venue.feed != config.feed:
            raise ValueError(f"a {type(venue).__name__} serves feed={venue.feed!r}, and this config says "
                             f"feed={config.feed!r}")
        with _registry_lock:
            previous = _live_traders.pop(config.name, None)
        if previous is not None:
            # First, so its feed, simulator and journal lock are released before this one takes them.
            log.info("closing the previous trader named %r", config.name)
            previous.close()
        self.config = config
        self.venue = venue
        self.live = not config.paper
        # A replay (no venue) judges the hours by its ticks' time, live trading by the clock.
        risk = RiskManager(config.risk.for_live() if self.live else config.risk, clock=clock,
                           tick_time=venue is None)
        super().__init__(risk, make_broker(config, risk, venue), LatencyMetrics(config.metrics.window),
                         measure_latency=config.metrics.latency, signals_kept=config.signals_kept,
                         error_budget=config.error_budget)
        self._names = InstrumentNames(venue, config.connection.instruments_url)
        self._controls = LiveControls(self.risk, self.broker, venue)
        self._clock = clock
        self.square_off = self._square_off_runner()
        self.dispatcher = Dispatcher(self._on_tick, config.mode, maxsize=config.dispatch.queue_size,
                                     poll_interval=config.dispatch.poll_interval)
        self.feed = None                    # a SmartFeed, or a ReplayFeed
        self._recording = RecordingTap(self.dispatcher, self._tick_listeners)
        self._lifecycle_lock = threading.RLock()
        self._holds_frozen_heap = False
        self.started_at: float | None = None
        # Registered only once whole: a trader whose construction failed is never closed by the next one.
        with _registry_lock:
            _live_traders[config.name] = self

    # ================================================================== dispatch mode
    @property
    def mode(self) -> str:
        return self.dispatcher.mode

    @mode.setter
    def mode(self, mode: str) -> None:
        """Switch while ticks flow; queued ticks are handled first, in order."""
        self.dispatcher.mode = mode

    @property
    def use_direct_callbacks(self) -> bool:
        """The seed document's toggle: True is callback mode, False is queue mode."""
        return self.dispatcher.mode == CALLBACK

    @use_direct_callbacks.setter
    def use_direct_callbacks(self, on: bool) -> None:
        self.dispatcher.mode = CALLBACK if on else QUEUE

    # ================================================================== lifecycle
    @property
    def running(self) -> bool:
        return self._running

    def start(self, *, consumer_thread: bool = True) -> "LiveTrader":
        """Connect the feed and begin dispatching. Idempotent.

        ``consumer_thread=False`` leaves the queue consumer to the caller
        (``run()`` uses it to consume on a script's main thread).
        """
        with self._lifecycle_lock:
            if self._running:
                return self
            tokens = None
            if self.venue is not None:
                # A restart keeps the venue's session and the live broker's connection: stop() stops the feed only.
                self.venue.start()
                tokens = self._listed_tokens()
                connect_broker(self.broker, self.venue, self.config)
                if getattr(self.venue, "keeper", None) is not None:
                    # A session that cannot be renewed halts trading, with the reason, until it is.
                    self.venue.keeper.add_gate(self.risk.gate)
            self.feed = self._open_feed(tokens, finish_dispatcher=not consumer_thread)
            self._gap_book.clear_pending()
            if self.config.record and self.recorder is None:
                self.start_recording(self.config.record)
            if self.config.freeze_heap and not self._holds_frozen_heap:
                frozen_heap.acquire()
                self._holds_frozen_heap = True
            with self._strategy_lock:
                if self._strategy is not None:
                    self._call_hook(self._strategy, "on_start")
                self._running = True
            self.risk.gate.open("stopped")
            if self.square_off is not None:
                if self.venue is None:
                    self._square_off_at_ms = 0          # a replay: by the ticks' time, from the first one
                else:
                    self.square_off.watch(self._clock)
            if consumer_thread:
                self.dispatcher.start_consumer_thread(name=f"kit-consumer-{self.config.name}")
            self.feed.start()
            self.started_at = time.time()
            return self

    def _listed_tokens(self) -> dict[int, list[str]]:
        """The config's tokens (or the venue's default ones) as ``{exchange_type: [token]}``, each listed
        by the venue's instrument master; anything else is a ValueError naming it."""
        tokens = self.config.tokens or self.venue.default_tokens()
        if not tokens:
            raise ValueError(f"tokens are required for the {self.config.feed} feed, e.g. tokens={{2: ['43650']}} "
                             "or tokens=['NIFTY']")
        master = self._names.required()
        if not self.broker.live and self.broker.instruments is None:
            self.broker.instruments = master     # paper checks orders against the same master
        return self._names.resolve(tokens, master)

    def _open_feed(self, tokens: dict | None, *, finish_dispatcher: bool):
        """A ``ReplayFeed`` (no venue), or a ``SmartFeed`` on the started venue's feed target; not yet started."""
        cfg = self.config
        if self.venue is None:
            # The replay thread takes the socket thread's place; everything downstream is the same.
            from kit.feed.replay import ReplayFeed
            return ReplayFeed(cfg.replay.source, self.dispatcher, speed=cfg.replay.speed,
                              progress=cfg.replay.progress, name=f"kit-replay-{cfg.name}",
                              finish_dispatcher=finish_dispatcher)
        url, credentials = self.venue.feed_target()
        c = cfg.connection
        subscriptions = {cfg.subscription_mode: tokens}
        # Beyond one connection's 1,000 subscriptions, up to three connections (kit.feed.shards).
        feed_class = ShardedFeed if shards.count(subscriptions) > shards.MAX_PER_CONNECTION else SmartFeed
        feed = feed_class(url, credentials, subscriptions, self.dispatcher.submit,
                          parser=c.parser, reconnect=c.reconnect, heartbeat_interval=c.heartbeat_interval,
                          stall_timeout=c.stall_timeout, name=f"kit-feed-{cfg.name}",
                          session=getattr(self.venue, "keeper", None))
        feed.on_gap = self._gap_book.found
        return feed

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.feed is not None and self.feed.wait_connected(timeout)

    def run(self, duration: float | None = None) -> None:
        """Start, consume on the calling thread until ``duration`` elapses (or Ctrl-C), stop.

        With ``feed="replay"`` it also returns once every replayed tick was handled.
        On the main thread, the first Ctrl-C (or a kernel interrupt) ends the run
        cleanly, at any moment, starting included; a second one interrupts at once.
        """
        with self.ctrl_c_stops_run():
            try:
                self.start(consumer_thread=False)
                until = None if duration is None else time.monotonic() + duration
                self.dispatcher.consume(until=until)
            except KeyboardInterrupt:
                log.info("interrupted; stopping")
            finally:
                self.stop()

    def ctrl_c_stops_run(self):
        """While inside, the first SIGINT makes ``run()`` return instead of raising KeyboardInterrupt.

        See ``ctrl_c_finishes``; off the main thread it does nothing.
        """
        return ctrl_c_finishes(self.dispatcher, lambda: self._running)

    def stop(self) -> None:
        """Stop the feed, handle what is already queued, then stop the strategy. Idempotent."""
        with self._lifecycle_lock:
            if not self._running:
                return
            # First of all: no order reaches the exchange after stop() returns. Orders queued
            # for the sender are cancelled, and a request in flight finishes before this returns.
            self.risk.gate.close("stopped", "the trader is stopped")
            if self.square_off is not None:
                self.square_off.unwatch()
            if self.feed is not None:
                self.feed.stop()
            self.dispatcher.stop()
            if self.recorder is not None:
                self.stop_recording()
            with self._strategy_lock:
                if self._strategy is not None:
                    self._call_hook(self._strategy, "on_stop")
                self._running = False
            if self._holds_frozen_heap:
                self._holds_frozen_heap = False
                frozen_heap.release()

    def close(self) -> None:
        """Stop, close the broker (and its journal, paper or live), and close the venue (a simulator it started)."""
        self.stop()
        self.broker.close()
        if self.venue is not None:
            self.venue.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _square_off_runner(self) -> SquareOffRunner | None:
        """The intraday square-off (``kit.engine.square_off``), when it applies to this trader."""
        cfg = self.config
        enforce = self.risk.limits.enforce_hours
        if (cfg.square_off is None or cfg.product not in INTRADAY_PRODUCTS
                or not (enforce == "always" or (enforce == "live" and self.broker.live))):
            return None
        return SquareOffRunner(cfg.square_off, self.risk.calendar, self.risk, self._controls,
                               live=self.broker.live, name=cfg.name)

    # ================================================================== recording (kit.engine.recording)
    def start_recording(self, path, **options):
        """Record every tick this trader handles to Parquet under ``path``; returns the ``TickRecorder``.

        ``stop_recording()`` (or ``stop()``) writes the rest and closes the files.
        ``options`` go to ``kit.store.recording.TickRecorder``.
        """
        with self._lifecycle_lock:
            return self._recording.start(path, **options)

    def stop_recording(self):
        """Stop recording, write every recorded tick and close the files; returns the recorder (or None)."""
        with self._lifecycle_lock:
            return self._recording.stop()

    @property
    def recorder(self):
        """The ``TickRecorder`` while recording, else None."""
        return self._recording.recorder

    # ================================================================== live controls (kit.engine.controls)
    def arm_live(self, confirm: str) -> None:
        """The second opt-in for real orders; ``confirm`` is the client code. See ``LiveControls.arm``."""
        self._controls.arm(confirm)

    def disarm_live(self) -> None:
        """Refuse every later live order; those queued and not yet sent are cancelled before this returns."""
        self._controls.disarm()

    def resume(self) -> None:
        """Lift the kill switch, the daily-loss stop and the error budget's halt; each stays until this is called."""
        self._controls.resume()
        self._errors.resume()

    def submit(self, signal: Signal, tick=None):
        """A manual order through the strategy's risk checks: ``(order, None)`` or ``(None, reason)``."""
        return self._controls.submit(signal, tick)

    def kill(self, reason: str = "kill switch", *, flatten: bool = True, timeout: float = 10.0) -> dict:
        """Halt, cancel every open order, and (``flatten``) close every position. See ``LiveControls.kill``."""
        return self._controls.kill(reason, flatten=flatten, timeout=timeout)

    # ================================================================== what the user looks at
    def instrument_name(self, token: str, exchange_type: int | None = None) -> str:
        """The token's trading symbol, as the venue's instrument master spells it ("Nifty 50",
        "NIFTY25NOV2524000CE"); the token itself when unknown. Never raises; cached."""
        return self._names.name(token, exchange_type)

    @property
    def status(self) -> dict:
        """Counters and state of every part, as one flat dict (``kit.engine.status``)."""
        return trader_status(self)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<LiveTrader {self.config.name!r} feed={self.config.feed} mode={self.mode} {state}>"


@contextlib.contextmanager
def ctrl_c_finishes(dispatcher, running):
    """While inside, the first SIGINT only asks ``dispatcher``'s main-thread consumer to finish.

    A KeyboardInterrupt lands between any two bytecodes: just after a lock was
    taken, say, which ``stop()`` then waits for forever. So the first Ctrl-C
    only puts a stop marker on the dispatcher's ``SimpleQueue`` (whose ``put``
    is safe in a signal handler); the second restores Python's handler and
    interrupts for real. Off the main thread, where signal handlers cannot be
    set, it does nothing. ``running()``: whether the trader still runs on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first_ctrl_c(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        dispatcher.finish()

    signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if not running():
            # A Ctrl-C that came while stopping left a marker that would end the next run at once.
            dispatcher.discard_stop_markers()


def current_trader(name: str = "default") -> "LiveTrader | None":
    """The trader created last under ``name``, or None. An older trader of that name was closed.

    The dashboard uses it to refuse restarting a trader a re-run cell has replaced.
    """
    return _live_traders.get(name)


@atexit.register
def _close_all_traders() -> None:
    for trader in list(_live_traders.values()):
        try:
            trader.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
