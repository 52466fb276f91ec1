"""``LiveTrader``: feed -> dispatch -> strategy -> risk -> broker -> positions, measured.

    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", mode="queue"))
    trader.strategy = MyStrategy()          # swappable while running
    trader.use_direct_callbacks = True      # same as trader.mode = "callback"
    trader.start(); ...; trader.stop()      # idempotent; start/stop/start works

A tick's whole path is ``LiveTrader._on_tick`` below, top to bottom. It runs on
the socket thread (callback mode) or on the consumer thread (queue / poll
mode), never on two at once: ``kit.feed.dispatch`` guarantees the ordering and the
strategy lock guarantees that a strategy swap from the notebook waits for the
tick in progress.

Creating a trader with the same ``name`` as a live one closes the old one
first, so re-running a notebook cell never leaves two feeds running.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from time import perf_counter_ns

import pandas as pd

from kit.broker.paper import PaperBroker
from kit.feed.dispatch import CALLBACK, MODES, QUEUE, Dispatcher
from kit.feed.live import FeedCredentials, Gap, ReconnectPolicy, SmartFeed
from kit.engine.heap import frozen_heap
from kit.engine.metrics import LatencyMetrics
from kit.broker.risk import RiskLimits, RiskManager
from kit.core.listeners import Listeners
from kit.core.strategy import Signal, Strategy
from kit.core.tick import LTP, MODE_NAMES

log = logging.getLogger(__name__)

FEEDS = ("sim", "smartapi", "replay")


@dataclass
class TraderConfig:
    """Everything a ``LiveTrader`` needs; every field has a working offline default.

    tokens: ``{exchange_type: [token, ...]}``; ``None`` means the simulator's
    default instruments (the NIFTY index and a strip of NIFTY options).
    """
    feed: str = "sim"
    tokens: dict | None = None
    subscription_mode: int = LTP
    mode: str = QUEUE
    queue_size: int = 1000
    poll_interval: float = 0.05
    paper: bool = True
    parser: str = "fast"
    # embedded simulator
    sim_rate: float = 2.0            # ticks per second per token
    sim_seed: int = 7
    sim_delay_ms: float = 0.0
    sim_port: int = 0                # 0: any free port on 127.0.0.1
    # real feed ("smartapi"): URLs default to Angel One's; credentials from env / .env
    feed_url: str | None = None
    rest_url: str | None = None
    env_file: str | None = ".env"
    # resilience
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    heartbeat_interval: float = 10.0
    stall_timeout: float | None = 30.0
    risk: RiskLimits = field(default_factory=RiskLimits)
    metrics_window: int = 100_000
    # Leave the objects that existed at start() out of the cyclic GC while trading (kit/heap.py):
    # a full collection over a notebook's heap is a pause of tens of ms on the tick thread.
    freeze_heap: bool = True
    # False skips the per-tick latency stamps and metrics.record (signals, fills and
    # positions are unaffected): for an as-fast-as-possible replay, where latency means little.
    latency_metrics: bool = True
    # feed="replay" (kit/replay.py): a recording directory, or a DataFrame of ticks.
    replay: object = field(default=None, repr=False, compare=False)
    replay_speed: float | None = None   # None: as fast as possible; x: the recorded pace sped up x times
    replay_progress: bool = True        # a tqdm.auto progress bar
    # A directory: every tick the engine handles is recorded there (kit/recording.py).
    record: str | None = None
    name: str = "default"
    # The last signals kept in trader.signals (a ring): the full history is in the journal or
    # the recording, and a strategy signalling on every tick must not grow memory without bound.
    signals_kept: int = 10_000
    # live orders (paper=False): see kit.broker.live. Live risk always keeps Angel One's
    # order-rate caps (RiskLimits.for_live).
    product: str = "INTRADAY"
    # The SQLite journal (kit.store.journal) that keeps orders, fills and positions across a restart.
    # Live: always, at this path or kit.store.journal.Journal.default_path(name). Paper: only when a
    # path is given (opt-in), so backtests and replays write no files.
    journal: str | None = None
    journal_sync: str = "FULL"
    order_update_url: str | None = None      # default: $SMARTAPI_ORDER_UPDATE_URL or Angel One's
    instruments_url: str | None = None       # default: $SMARTAPI_MASTER_URL or Angel One's

    def __post_init__(self):
        if self.feed not in FEEDS:
            raise ValueError(f"feed must be one of {FEEDS}, not {self.feed!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.subscription_mode not in MODE_NAMES:
            raise ValueError(f"subscription_mode must be one of {sorted(MODE_NAMES)}")
        if self.feed == "replay" and self.replay is None:
            raise ValueError('feed="replay" needs replay=<recording directory or DataFrame of ticks>')
        if self.replay_speed is not None and not self.replay_speed > 0:
            raise ValueError("replay_speed must be None (as fast as possible) or > 0")
        if not (isinstance(self.signals_kept, int) and self.signals_kept > 0):
            raise ValueError(f"signals_kept must be a positive int, not {self.signals_kept!r}")


class _RejectionLog:
    """Rejected signals in the log at a bounded rate: a few lines a second, then a count of the rest.

    A strategy that signals on every tick while halted would otherwise write
    a WARNING per tick (tens of MB a minute).
    """
    LINES_PER_SECOND = 5

    def __init__(self):
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0
        self._last = ""

    def log(self, reason: str, signal) -> None:
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self._suppressed:
                log.warning("%d more signals rejected in the last %.0f s (the last: %s)", self._suppressed,
                            now - self._window, self._last)
            self._window, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.LINES_PER_SECOND:
            self._logged += 1
            log.warning("signal rejected: %s (%s)", reason, signal)
        else:
            self._suppressed += 1
            self._last = reason


_live_traders: "weakref.WeakValueDictionary[str, LiveTrader]" = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


class LiveTrader:
    """Runs one strategy on one feed. See the module docstring for the API."""

    def __init__(self, config: TraderConfig | None = None, **overrides):
        config = replace(config or TraderConfig(), **overrides)
        with _registry_lock:
            previous = _live_traders.pop(config.name, None)
        if previous is not None:
            # First, so its feed, simulator and journal lock are released before this one takes them.
            log.info("closing the previous trader named %r", config.name)
            previous.close()
        self.config = config
        self.metrics = LatencyMetrics(config.metrics_window)
        self.live = not config.paper
        self.session = None
        self.simulator = None
        self.risk = RiskManager(config.risk.for_live() if self.live else config.risk)
        self.broker = self._paper_broker() if config.paper else self._live_broker()
        self.dispatcher = Dispatcher(self._on_tick, config.mode, maxsize=config.queue_size,
                                     poll_interval=config.poll_interval)
        self._measure_latency = config.latency_metrics
        self.feed: SmartFeed | None = None
        self._strategy: Strategy | None = None
        self._strategy_lock = threading.Lock()
        self._lifecycle_lock = threading.RLock()
        self._running = False
        self._holds_frozen_heap = False
        self._tick_listeners = Listeners()
        self._signal_listeners = Listeners()
        self.signals: deque[Signal] = deque(maxlen=config.signals_kept)
        self.signal_count = 0
        self._rejections = _RejectionLog()
        self.ticks_processed = 0
        self.strategy_errors = 0
        self.last_strategy_error: str = ""
        self.rejected_signals = 0
        self.started_at: float | None = None
        self.recorder = None
        # Gaps in the feed (issue 7): every one found, and those the strategy has yet to hear of.
        self.gaps: deque[Gap] = deque(maxlen=SmartFeed.GAP_HISTORY)
        self._pending_gaps: dict = {}       # (exchange_type, token) -> [Gap, ...]
        self._gaps_lock = threading.Lock()
        # Registered only once whole: a trader whose construction failed is never closed by the next one.
        with _registry_lock:
            _live_traders[config.name] = self

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
            # 0. gap hook (issue 7): a hole in the feed is told before the first tick after it.
            #    One truthiness test per tick; the rest runs only while a gap awaits delivery.
            if self._pending_gaps:
                self._deliver_gaps(tick)
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
                for signal in self._signals_of(signals, strategy, tick):
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

    # ---- gaps (issue 7) -------------------------------------------------------------
    def _gap_found(self, gap: Gap) -> None:
        """The feed found ``gap`` (socket thread), just before dispatching the tick after it."""
        self.gaps.append(gap)
        with self._gaps_lock:
            self._pending_gaps.setdefault((gap.exchange_type, gap.token), []).append(gap)

    def _deliver_gaps(self, tick) -> None:
        """Call ``strategy.on_gap`` for the gaps that end at or before ``tick`` (strategy lock held).

        A gap is due at the first tick of its instrument received after it was
        found; ticks received before the drop, still queued, pass without it.
        If that very tick was dropped by a full queue, the next one delivers it.
        """
        with self._gaps_lock:
            key = (tick.exchange_type, tick.token)
            waiting = self._pending_gaps.get(key)
            if not waiting:
                return
            due = [gap for gap in waiting if gap.recv_ns <= tick.recv_ns]
            if not due:
                return
            kept = [gap for gap in waiting if gap.recv_ns > tick.recv_ns]
            if kept:
                self._pending_gaps[key] = kept
            else:
                del self._pending_gaps[key]
        strategy = self._strategy
        on_gap = getattr(strategy, "on_gap", None)
        if on_gap is None:
            return
        for gap in due:
            try:
                on_gap(gap)
            except Exception as exc:
                self._strategy_failed(strategy, tick, exc)

    def _signals_of(self, returned, strategy, tick):
        """What ``on_tick`` returned, as Signals: one, any iterable of them, or a counted strategy error."""
        if isinstance(returned, Signal):
            return (returned,)
        if isinstance(returned, (list, tuple)):
            batch = returned
        elif isinstance(returned, (str, bytes, dict)) or not hasattr(returned, "__iter__"):
            self._strategy_failed(strategy, tick, TypeError(
                f"on_tick returned {type(returned).__name__} {returned!r:.60}; return a kit.Signal, None, "
                "or a list of Signals"))
            return ()
        else:
            try:
                batch = list(returned)          # a generator runs the strategy's code: under its lock, here
            except Exception as exc:
                self._strategy_failed(strategy, tick, exc)
                return ()
        good = [s for s in batch if isinstance(s, Signal)]
        if len(good) != len(batch):
            bad = next(s for s in batch if not isinstance(s, Signal))
            self._strategy_failed(strategy, tick, TypeError(
                f"on_tick returned {type(bad).__name__} {bad!r:.60} among its signals; each must be a kit.Signal "
                "(the others were kept)"))
        return good

    def _strategy_failed(self, strategy, tick, exc) -> None:
        self.strategy_errors += 1
        self.last_strategy_error = f"{type(exc).__name__}: {exc}"
        if self.strategy_errors <= 10 or self.strategy_errors % 1000 == 0:
            log.error("%s.on_tick raised on %r (error #%d)", type(strategy).__name__, tick,
                      self.strategy_errors, exc_info=exc)

    # ================================================================== strategy and mode
    @property
    def strategy(self) -> Strategy | None:
        return self._strategy

    @strategy.setter
    def strategy(self, new: Strategy | None) -> None:
        """Swap between two ticks: the tick in progress finishes with the old strategy."""
        if new is not None and not callable(getattr(new, "on_tick", None)):
            raise TypeError(f"{new!r} has no on_tick(tick) method")
        with self._strategy_lock:
            old = self._strategy
            if old is new:
                return
            if self._running and old is not None:
                self._call_hook(old, "on_stop")
            if self._running and new is not None:
                self._call_hook(new, "on_start")
            self._strategy = new

    @staticmethod
    def _call_hook(strategy, hook: str) -> None:
        fn = getattr(strategy, hook, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                log.exception("%s.%s raised", type(strategy).__name__, hook)

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

    # ================================================================== observers
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
            if self.config.feed == "replay":
                # The replay thread takes the socket thread's place; everything downstream is the same.
                from kit.feed.replay import ReplayFeed
                self.feed = ReplayFeed(self.config.replay, self.dispatcher, speed=self.config.replay_speed,
                                       progress=self.config.replay_progress, name=f"kit-replay-{self.config.name}",
                                       finish_dispatcher=not consumer_thread)
            else:
                url, credentials = self._connect_target()
                tokens = self.config.tokens or self._default_tokens()
                self.feed = SmartFeed(
                    url, credentials, {self.config.subscription_mode: tokens}, self.dispatcher.submit,
                    parser=self.config.parser, reconnect=self.config.reconnect,
                    heartbeat_interval=self.config.heartbeat_interval, stall_timeout=self.config.stall_timeout,
                    name=f"kit-feed-{self.config.name}")
                self.feed.on_gap = self._gap_found
            with self._gaps_lock:
                self._pending_gaps.clear()   # a new feed: holes in the last one were told or are moot
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
            if consumer_thread:
                self.dispatcher.start_consumer_thread(name=f"kit-consumer-{self.config.name}")
            self.feed.start()
            self.started_at = time.time()
            return self

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

    @contextlib.contextmanager
    def ctrl_c_stops_run(self):
        """While inside, the first SIGINT makes ``run()`` return instead of raising KeyboardInterrupt.

        A KeyboardInterrupt lands between any two bytecodes: just after a lock was
        taken, say, which ``stop()`` then waits for forever. So the first Ctrl-C
        only asks the main-thread consumer to finish (a stop marker put on the
        ``SimpleQueue``, whose ``put`` is safe in a signal handler); the second
        restores Python's handler and interrupts for real. Off the main thread,
        where signal handlers cannot be set, it does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def first_ctrl_c(signum, frame):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.dispatcher.finish()

        signal.signal(signal.SIGINT, first_ctrl_c)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            if not self._running:
                # A Ctrl-C that came while stopping left a marker that would end the next run at once.
                self.dispatcher.discard_stop_markers()

    def stop(self) -> None:
        """Stop the feed, handle what is already queued, then stop the strategy. Idempotent."""
        with self._lifecycle_lock:
            if not self._running:
                return
            # First of all: no order reaches the exchange after stop() returns. Orders queued
            # for the sender are cancelled, and a request in flight finishes before this returns.
            self.risk.gate.close("stopped", "the trader is stopped")
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

    # ================================================================== recording
    def start_recording(self, path, **options):
        """Record every tick this trader handles to Parquet under ``path``; returns the ``TickRecorder``.

        The tick thread only appends to a deque (a tick listener); a writer
        thread writes the files. ``stop_recording()`` (or ``stop()``) writes
        the rest. ``options`` go to ``kit.store.recording.TickRecorder``.
        """
        from kit.store.recording import TickRecorder
        with self._lifecycle_lock:
            if self.recorder is not None:
                return self.recorder
            self.recorder = TickRecorder(path, **options).start()
            self._dropped_at_record_start = self.dispatcher.dropped
            self.add_tick_listener(self.recorder.append)
            return self.recorder

    def stop_recording(self):
        """Stop recording, write every recorded tick and close the files; returns the recorder (or None)."""
        with self._lifecycle_lock:
            recorder, self.recorder = self.recorder, None
            if recorder is None:
                return None
            self.remove_tick_listener(recorder.append)
            recorder.stop()
            if recorder.stats["pending"]:   # a tick thread was inside the old listener tuple
                recorder.flush()
            recorder.dropped_while_recording = self.dispatcher.dropped - self._dropped_at_record_start
            if recorder.dropped_while_recording:
                log.warning("the queue dropped %d ticks while recording to %s: the strategy never saw them "
                            "and they are not in the recording", recorder.dropped_while_recording, recorder.path)
            return recorder

    def close(self) -> None:
        """Stop, close the broker (and its journal, paper or live), and stop the embedded simulator too."""
        self.stop()
        self.broker.close()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ================================================================== feed selection
    def _connect_target(self) -> tuple[str, FeedCredentials]:
        cfg = self.config
        if cfg.feed == "sim":
            if self.simulator is None:
                from kit.sim.server import Simulator
                self.simulator = Simulator(port=cfg.sim_port, tokens=cfg.tokens, rate=cfg.sim_rate,
                                           seed=cfg.sim_seed, delay_ms=cfg.sim_delay_ms)
            self.simulator.start()
            if self.live and not self.broker.connected:
                self._connect_live()
            self._give_paper_the_master(self.simulator.orders.master_url)
            c = self.simulator.credentials
            return self.simulator.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token)
        from kit.angel.session import ANGEL_FEED_URL, FEED_URL_ENV, Credentials, login
        # A restart keeps the session and the live broker's connection: stop() stops the feed only.
        if self.session is None:
            self.session = login(Credentials.from_env(cfg.env_file), root=cfg.rest_url)
        session = self.session
        if self.live and not self.broker.connected:
            self._connect_live()
        self._give_paper_the_master(cfg.instruments_url)
        return cfg.feed_url or os.environ.get(FEED_URL_ENV) or ANGEL_FEED_URL, session.feed

    def _default_tokens(self) -> dict:
        if self.config.feed == "sim":
            from kit.sim.server import DEFAULT_TOKENS
            return DEFAULT_TOKENS
        raise ValueError("tokens are required for the smartapi feed, e.g. tokens={2: ['43650']}")

    # ================================================================== the brokers
    def _paper_broker(self) -> PaperBroker:
        cfg = self.config
        collar = self.risk.limits.price_collar
        if cfg.journal is None:
            return PaperBroker(price_collar=collar)
        from kit.store.journal import Journal
        journal = Journal(cfg.journal, synchronous=cfg.journal_sync, owner=cfg.name)
        try:
            return PaperBroker(journal=journal, price_collar=collar)
        except BaseException:       # e.g. the file is a live trader's journal: leave it unlocked
            journal.close()
            raise

    # ================================================================== live orders and the kill switch
    def _live_broker(self):
        from kit.broker.live import SmartApiBroker
        from kit.store.journal import Journal
        cfg = self.config
        path = cfg.journal or Journal.default_path(cfg.name, client_code=self._client_code())
        journal = Journal(path, synchronous=cfg.journal_sync, owner=cfg.name)
        try:
            return SmartApiBroker(journal, product=cfg.product, name=cfg.name, gate=self.risk.gate,
                                  price_collar=self.risk.limits.price_collar)
        except BaseException:
            journal.close()
            raise

    def _connect_live(self) -> None:
        """Log in for orders (the embedded simulator's REST when feed="sim") and connect the live broker."""
        from kit.angel.instruments import MASTER_URL_ENV, InstrumentMaster
        from kit.angel.order_updates import ANGEL_ORDER_UPDATE_URL, ORDER_UPDATE_URL_ENV
        cfg = self.config
        if cfg.feed == "sim":
            from kit.angel.session import Credentials, login
            rc = self.simulator.rest.credentials
            self.session = login(Credentials(rc.api_key, rc.client_code, rc.pin, rc.totp_secret),
                                 root=self.simulator.rest.url)
            updates_url, master_url = self.simulator.orders.url, self.simulator.orders.master_url
        else:
            updates_url = cfg.order_update_url or os.environ.get(ORDER_UPDATE_URL_ENV) or ANGEL_ORDER_UPDATE_URL
            master_url = cfg.instruments_url or os.environ.get(MASTER_URL_ENV) or None
        self.broker.connect(self.session.client, self.session.feed, updates_url, InstrumentMaster.load(master_url),
                            reconnect=cfg.reconnect)

    def _give_paper_the_master(self, master_url: str | None) -> None:
        """Paper refuses what live would (unknown tokens, odd lots, off-tick prices): it needs the master."""
        if self.live or self.broker.instruments is not None:
            return
        from kit.angel.instruments import InstrumentMaster
        self.broker.instruments = InstrumentMaster.load(master_url)

    def _client_code(self) -> str:
        if self.session is not None:
            return self.session.client_code
        if self.config.feed == "sim":
            from kit.sim.server import SimCredentials
            return (self.simulator.credentials if self.simulator is not None else SimCredentials()).client_code
        from kit.angel.session import Credentials
        return Credentials.from_env(self.config.env_file).client_code

    def arm_live(self, confirm: str) -> None:
        """The second opt-in for real orders: ``confirm`` must be the client code this trader trades.

        Needs ``paper=False`` in the config (the first opt-in) and a
        ``max_daily_loss`` in the risk limits. Until armed, every live signal is
        rejected with a reason saying so.

            trader = kit.LiveTrader(kit.TraderConfig(feed="smartapi", paper=False, tokens=...,
                                                     risk=kit.RiskLimits.live_defaults(max_daily_loss=5_000)))
            trader.arm_live(confirm="A123456")
        """
        if not self.live:
            raise RuntimeError("this trader is paper trading (TraderConfig(paper=True)): there is nothing to arm")
        if self.risk.limits.max_daily_loss is None:
            raise ValueError("set a max_daily_loss in the risk limits before arming live trading, e.g. "
                             "TraderConfig(risk=RiskLimits.live_defaults(max_daily_loss=5_000))")
        if str(confirm).strip() != self._client_code():
            raise ValueError("arm_live(confirm=...) takes the client code of the account this trader logs into; "
                             "that is not it. Nothing was armed.")
        self.risk.arm()
        log.warning("LIVE TRADING ARMED for client %s: signals now become real orders", confirm)

    def disarm_live(self) -> None:
        """Refuse every later live order. Orders queued and not yet sent are cancelled before this
        returns; orders already at the exchange are left there (``kill()`` cancels them)."""
        self.risk.disarm()

    def resume(self) -> None:
        """Lift the kill switch and the daily-loss stop; both stay until this is called."""
        self.risk.resume()

    def submit(self, signal: Signal, tick=None):
        """A manual order from the notebook, through the same risk checks as the strategy's.

        Returns ``(order, None)`` or ``(None, reason)``.
        """
        reason = self.risk.check(signal, tick, self.broker)
        if reason is not None:
            return None, reason
        order = self.broker.submit(signal, tick)
        return order, (order.status_message if order.status == "REJECTED" else None)

    def kill(self, reason: str = "kill switch", *, flatten: bool = True, timeout: float = 10.0) -> dict:
        """Halt, cancel every open order, and (``flatten=True``) close every position with MARKET orders.

        New signals are rejected with ``reason`` until ``trader.risk.resume()``.
        Live: waits up to ``timeout`` seconds for the cancels, then for the
        flattening fills. Paper: flattening orders fill on the next tick.
        Returns what it did.
        """
        self.risk.halt(reason)          # closes the gate: orders queued for the exchange are cancelled now
        log.warning("KILL SWITCH: %s", reason)
        cancelled = self.broker.cancel_all()
        settled = self.broker.wait_settled(timeout) if self.live else True
        orders, error = [], ""
        if flatten:
            # Live: from the broker's positions read now, never from the journal's belief.
            try:
                orders = self.broker.flatten(reason)
            except Exception as exc:
                error = f"could not flatten: {type(exc).__name__}: {exc}"
                log.error("KILL SWITCH: %s", error)
            if self.live and orders:
                settled = self.broker.wait_settled(timeout) and settled
        return {"halted": True, "reason": reason, "cancelled": cancelled, "settled": settled, "error": error,
                "flatten_orders": [o.order_id for o in orders],
                "open_orders": len(self.broker.open_orders()),
                "positions": {key: p.qty for key, p in self.broker.positions.items() if p.qty}}

    # ================================================================== what the user looks at
    @property
    def status(self) -> dict:
        feed = self.feed.stats if self.feed is not None else None
        d = self.dispatcher
        pnl = self.broker.pnl()
        return {
            "running": self._running,
            "connected": bool(feed and feed.connected),
            "mode": d.mode,
            "active_mode": d.active_mode,
            "ticks_received": feed.ticks if feed else 0,
            "ticks_processed": self.ticks_processed,
            "queue_depth": d.depth,
            "max_queue_depth": d.max_depth,
            "dropped": d.dropped,
            "strategy_errors": self.strategy_errors,
            "signals": self.signal_count,
            "rejected_signals": self.rejected_signals,
            "malformed_frames": feed.malformed if feed else 0,
            "error_frames": feed.error_frames if feed else 0,
            "reconnects": feed.reconnects if feed else 0,
            "stalls": feed.stalls if feed else 0,
            "auth_failed": bool(feed and feed.auth_failed),
            # resilience (issue 7); keys are only ever added
            "connects": feed.connects if feed else 0,
            "disconnects": feed.disconnects if feed else 0,
            "failed_connects": feed.failed_connects if feed else 0,
            "last_disconnect_reason": feed.last_disconnect_reason if feed else "",
            "last_disconnect_at": feed.last_disconnect_at if feed else None,
            "connected_since": feed.connected_since if feed else None,
            "next_retry_in": feed.next_retry_in if feed else None,
            "gaps": feed.gaps if feed else 0,
            "missed_ticks": feed.missed_ticks if feed else 0,
            "heartbeats_sent": feed.heartbeats_sent if feed else 0,
            "pongs": feed.pongs if feed else 0,
            "unknown_text_frames": feed.unknown_text if feed else 0,
            "socket_errors": feed.socket_errors if feed else 0,
            "last_error": feed.last_error if feed else "",
            "feed_lag_ms": feed.lag_ms if feed else None,
            "max_feed_lag_ms": feed.max_lag_ms if feed else 0.0,
            "live": self.live,
            "armed": self.risk.armed,
            "halted": self.risk.halted,
            "halt_reason": self.risk.halt_reason,
            # Why an order would be refused now ("" when trading is allowed), and the daily-loss stop.
            "orders_blocked": self.risk.gate.refusal(ignore=frozenset() if self.live else frozenset({"disarmed"}))
            or "",
            "loss_stop": self.risk.loss_stop,
            "last_rejection": self.risk.last_rejection,
            "open_orders": len(self.broker.open_orders()),
            "bad_marks": self.broker.bad_marks,
            **(self._live_status() if self.live else {}),
            "realized_pnl": pnl["realized"],
            "unrealized_pnl": pnl["unrealized"],
            "pnl": pnl["total"],
        }

    def _live_status(self) -> dict:
        broker = self.broker
        return {"orders_queued": broker.queued, "journal_error": broker.journal_error,
                "position_differences": broker.stats["position_differences"],
                "positions_checked_at": broker.positions_checked_at}

    def signals_df(self) -> pd.DataFrame:
        return pd.DataFrame([s.as_row() for s in list(self.signals)],
                            columns=["token", "side", "qty", "order_type", "limit_price",
                                     "exchange_type", "tick_seq", "reason"])

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<LiveTrader {self.config.name!r} feed={self.config.feed} mode={self.mode} {state}>"


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
