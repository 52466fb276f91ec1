"""The market-data feed: the real SDK client on a background thread, kept connected.

``SmartFeed`` owns one ``KitWebSocketV2`` and a thread that runs its blocking
``connect()``. When the socket closes for any reason other than ``stop()``, the
thread waits (exponential backoff with jitter, capped) and connects again; the
SDK client's own ``resubscribe()`` restores every subscription. A second
thread sends Angel One's text ``ping`` heartbeat, watches for stalls (no tick
for ``stall_timeout`` seconds while subscribed: disconnect, then reconnect) and
samples the feed lag (wall clock minus the exchange timestamp of the newest
tick: a backlog in the socket buffers, which the receive stamp cannot see).

After a reconnect, the first tick of each instrument is compared with the last
one before the drop; a hole in the sequence numbers is reported as a ``Gap``
(``feed.gaps``, ``on_gap``). Only those first ticks pay for the check: the
feed swaps in the checking callback on reconnect and swaps it out once every
instrument has ticked again.

    feed = SmartFeed(url, creds, {kit.LTP: {2: ["43650"]}}, on_tick=print)
    feed.start(); ...; feed.stop()

Callbacks are named for events, as in pykiteconnect's ticker: ``on_tick``,
``on_connect``, ``on_disconnect``, ``on_error_frame``, ``on_gap``.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import websocket

from kit.angel.sdk import KitWebSocketV2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedCredentials:
    """What the market-data socket's handshake needs. ``repr`` never shows the values."""
    auth_token: str = field(repr=False)
    api_key: str = field(repr=False)
    client_code: str
    feed_token: str = field(repr=False)


@dataclass
class ReconnectPolicy:
    """Backoff between reconnect attempts: ``min(max_delay, initial * 2**n)`` with ±``jitter``.

    ``jitter`` is a fraction: 0.25 spreads each delay over ±25 %, so many
    clients dropped at once do not reconnect in lockstep. A connection that
    stayed up ``reset_after`` seconds starts the next backoff from
    ``initial_delay`` again; one that dies sooner (a server that accepts and
    drops) keeps growing it, so a flapping endpoint is not hammered.

    ``connect_timeout`` bounds each attempt: the TCP connect, TLS, and each
    read of the server's answer to the WebSocket upgrade wait at most that
    many seconds. A server that accepts and never answers is then a failed
    connect like any other (``stats.failed_connects``, ``stats.last_error``
    "... timed out after N s"), retried by this policy. ``None`` waits forever.
    Both kit sockets (market feed and order updates) take it from here.

        kit.ReconnectPolicy(initial_delay=0.5, max_delay=10, jitter=0.2, connect_timeout=5)
    """
    enabled: bool = True
    initial_delay: float = 0.2
    max_delay: float = 30.0
    jitter: float = 0.25
    max_attempts: int | None = None  # None: forever (a market day is long)
    reset_after: float = 5.0
    connect_timeout: float | None = 10.0

    def next_attempt(self, attempt: int, up_for: float | None) -> int:
        """The attempt number after a drop: 1 again if the connection stayed up ``reset_after`` s, else one more.

        ``up_for``: how long the dropped connection was open (None: it never opened).
        """
        return 1 if up_for is not None and up_for >= self.reset_after else attempt + 1

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_delay, self.initial_delay * (2 ** max(0, attempt - 1)))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True, slots=True)
class Gap:
    """Ticks of one instrument the feed never received, found after a reconnect.

    ``missed`` is ``first_seq_after - last_seq_before - 1``: exact when the
    feed numbers each instrument's ticks consecutively (the simulator does);
    otherwise it is the distance in sequence numbers. ``seconds`` is the
    exchange time between the last tick before and the first tick after.
    """
    token: str
    exchange_type: int
    last_seq_before: int
    first_seq_after: int
    missed: int
    seconds: float
    reconnect: int = 0        # the feed's reconnect count when the gap was found
    detected_at: float = 0.0  # epoch seconds
    recv_ns: int = 0          # receive stamp of the first tick after the gap


@dataclass
class FeedStats:
    """Counters the feed thread writes (single writer) and anyone may read."""
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    ticks: int = 0
    malformed: int = 0
    error_frames: int = 0
    unknown_text: int = 0
    pongs: int = 0
    heartbeats_sent: int = 0
    stalls: int = 0
    socket_errors: int = 0
    auth_failed: bool = False
    last_error: str = ""
    last_error_frame: dict | None = None
    disconnects: int = 0              # connections that were open and closed (not by stop())
    failed_connects: int = 0          # attempts that never opened
    last_disconnect_reason: str = ""  # "stall: ...", "dropped: ...", "closed by server: ...", "requested"
    last_disconnect_at: float | None = None   # epoch seconds
    connected_since: float | None = None      # epoch seconds
    next_retry_in: float | None = None        # the backoff being waited, while reconnecting
    gaps: int = 0
    missed_ticks: int = 0
    unsubscribed_ticks: int = 0       # ticks for instruments nobody subscribed: counted, dropped
    lag_ms: float | None = None       # wall clock - exchange ts of the newest tick, last sample
    max_lag_ms: float = 0.0

    @property
    def frames(self) -> int:
        """Every frame received: ticks, malformed and text frames (derived: the tick path writes one counter)."""
        return self.ticks + self.malformed + self.pongs + self.error_frames + self.unknown_text


class SmartFeed:
    """Keeps one SmartAPI market-data connection alive on a background thread."""

    GAP_HISTORY = 10_000   # gaps kept in ``feed.gaps``; the counters in ``stats`` keep counting

    def __init__(self, url: str, credentials: FeedCredentials, subscriptions: dict, on_tick, *,
                 parser: str = "fast", reconnect: ReconnectPolicy | None = None,
                 heartbeat_interval: float = 10.0, stall_timeout: float | None = None,
                 verify_tls: bool = True, name: str = "kit-feed"):
        """``subscriptions``: ``{mode: {exchange_type: [token, ...]}}``."""
        self.url = url
        self.credentials = credentials
        self._initial_subscriptions = {m: {e: list(t) for e, t in ex.items()} for m, ex in subscriptions.items()}
        self.on_tick = on_tick
        self.on_connect = None          # fn(resubscribed: bool)
        self.on_disconnect = None       # fn(code, reason)
        self.on_error_frame = None      # fn(payload: dict)
        self.on_gap = None              # fn(gap: Gap), socket thread, just before the tick that revealed it
        self.parser = parser
        self.reconnect = reconnect or ReconnectPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.stall_timeout = stall_timeout
        self.verify_tls = verify_tls
        self.name = name
        self.stats = FeedStats()
        self.gaps: deque[Gap] = deque(maxlen=self.GAP_HISTORY)
        self._rng = random.Random()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._ws: KitWebSocketV2 | None = None
        # Subscriptions not yet sent on a connection ({mode: {exchange_type: [token]}});
        # once sent, the SDK client's own record (``input_request_dict``) holds them.
        self._pending = {m: {e: list(t) for e, t in ex.items()} for m, ex in self._initial_subscriptions.items()}
        self._subs_lock = threading.Lock()
        self._handler_lock = threading.Lock()     # serialises swaps of the client's on_tick
        # The last tick of each instrument, {exchange_type: {token: Tick}}: written on the
        # hot path (one dict store), read for gaps after a reconnect and for lag samples.
        self._last: defaultdict = defaultdict(dict)
        # {exchange_type: frozenset(tokens)} subscribed in any mode: a tick for anything else is
        # counted and dropped, so no per-token state grows for instruments nobody asked for.
        self._wanted: dict[int, frozenset] = _wanted(self._initial_subscriptions)
        # After a reconnect: the instruments not yet seen again, with their last tick before the drop.
        self._baseline: dict = {}
        self._opened_at = 0.0
        self._closing_reason: str | None = None   # set when the kit itself closes the socket
        self._close_info: tuple | None = None      # (code, reason) the close carried
        self._error_since_open: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "SmartFeed":
        if self.running:
            return self
        self._stop.clear()
        self._connected.clear()
        self.stats.auth_failed = False
        c = self.credentials
        with self._subs_lock:
            if self._ws is not None:   # a restart keeps what the last connection had subscribed
                for mode, by_exchange in self._ws.subscriptions().items():
                    _merge(self._pending, mode, by_exchange)
            self._ws = KitWebSocketV2(self.url, c.auth_token, c.api_key, c.client_code, c.feed_token,
                                      parser=self.parser, verify_tls=self.verify_tls,
                                      connect_timeout=self.reconnect.connect_timeout)
        self._ws.on_tick = self._on_tick
        self._ws.on_text = self._on_text
        self._ws.on_malformed = self._on_malformed
        self._ws.on_connect = self._on_connect
        self._ws.on_disconnect = self._on_disconnect
        self._ws.on_socket_error = self._on_socket_error
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-heartbeat", daemon=True)
        self._watchdog.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection with the close handshake and end both threads.

        A connect still in progress is cut short rather than waited out, so a
        server that never answers the upgrade does not hold ``stop()``.
        """
        self._stop.set()
        self._closing_reason = "stopped"
        ws = self._ws
        if ws is not None:
            # From now on no tick reaches on_tick: a backlog still in the socket buffers
            # is discarded, not handed to a strategy that was told to stop.
            with self._handler_lock:
                ws.on_tick = _discard
            # The adapter's close (10, 11): only the close frame is sent here; the feed thread,
            # the one reader, returns, and a timer aborts the socket if no reply comes.
            ws.close_connection()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            join_closing(thread, ws, timeout)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)
        self._thread = self._watchdog = None
        self.stats.connected = False
        self.stats.next_retry_in = None

    def disconnect(self, reason: str = "requested") -> None:
        """Drop the current connection at once, as if the network had; the feed reconnects.

        ``reason`` becomes ``stats.last_disconnect_reason``.
        """
        ws = self._ws
        app = ws.wsapp if ws is not None else None
        sock = app.sock if app is not None else None
        if sock is not None and sock.connected:
            self._closing_reason = reason
            sock.abort()   # shutdown(SHUT_RDWR): the reading feed thread wakes with EOF at once

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, tokens: dict, mode: int = 1) -> None:
        """``tokens``: ``{exchange_type: [token, ...]}``; sent now if connected, and kept for reconnects."""
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        with self._subs_lock:
            if self._ws is not None and self.stats.connected:
                try:
                    self._ws.subscribe("kit", mode, token_list)
                except Exception as exc:
                    # The SDK records the request before sending it, so the reconnect restores it.
                    log.warning("feed %s: subscribe not sent (%s); it will be sent on reconnect", self.name, exc)
            else:
                _merge(self._pending, mode, tokens)
        self._wanted = _wanted(self.subscriptions())

    def unsubscribe(self, tokens: dict, mode: int = 1) -> None:
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        with self._subs_lock:
            _remove(self._pending, mode, tokens)
            if self._ws is not None and self._ws.input_request_dict:
                try:
                    self._ws.unsubscribe("kit", mode, token_list)   # updates the record, then sends
                except Exception as exc:
                    log.info("feed %s: unsubscribe recorded, not sent (%s)", self.name, exc)
        self._wanted = _wanted(self.subscriptions())
        # No gap is owed for an instrument nobody listens to any more.
        for e, toks in tokens.items():
            for store in (self._last.get(e), self._baseline.get(e)):
                if store is not None:
                    for t in toks:
                        store.pop(t, None)

    def subscriptions(self) -> dict:
        """{mode: {exchange_type: [tokens]}}: what the feed keeps subscribed, sent or still to send."""
        with self._subs_lock:
            out = self._ws.subscriptions() if self._ws is not None else {}
            for mode, by_exchange in self._pending.items():
                _merge(out, mode, by_exchange)
        return out

    # ------------------------------------------------------------------ the feed thread
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            connects_before = self.stats.connects
            self._closing_reason = self._close_info = self._error_since_open = None
            try:
                self._ws.connect()  # blocks until the socket closes
            except Exception as exc:  # connect() should not raise; never let the thread die
                self._on_socket_error(exc)
            self.stats.connected = False
            self._connected.clear()
            opened = self.stats.connects > connects_before
            if self._stop.is_set():
                break
            if opened:
                self.stats.disconnects += 1
                self.stats.last_disconnect_reason = self._disconnect_reason()
                self.stats.last_disconnect_at = time.time()
            else:
                self.stats.failed_connects += 1
            if self.stats.auth_failed or not self.reconnect.enabled:
                log.error("feed %s: not reconnecting (%s)", self.name,
                          "credentials refused" if self.stats.auth_failed else "reconnect disabled")
                break
            attempt = self.reconnect.next_attempt(attempt, time.monotonic() - self._opened_at if opened else None)
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                log.error("feed %s: gave up after %d reconnect attempts", self.name, attempt - 1)
                break
            delay = self.reconnect.delay(attempt, self._rng)
            log.warning("feed %s: %s; reconnect %d in %.2fs", self.name,
                        self.stats.last_disconnect_reason if opened else f"connect failed ({self.stats.last_error})",
                        attempt, delay)
            self.stats.next_retry_in = delay
            if self._stop.wait(delay):
                break
            self.stats.next_retry_in = None
            self.stats.reconnects += 1
            self._ws.RESUBSCRIBE_FLAG = bool(self._ws.input_request_dict)
        self.stats.next_retry_in = None

    def _disconnect_reason(self) -> str:
        if self._closing_reason:
            return self._closing_reason
        code, text = self._close_info or (None, None)
        if code is not None:
            return f"closed by server: {code} {text or ''}".rstrip()
        if self._error_since_open:
            return f"dropped: {self._error_since_open}"
        return "closed"

    def _watch(self) -> None:
        """Heartbeat (text ``ping``), stall detection and lag samples, on their own small thread."""
        period = min(1.0, self.heartbeat_interval, (self.stall_timeout or 4.0) / 4)
        next_beat = time.monotonic() + self.heartbeat_interval
        # Stalls are judged by the tick counter, so the hot path pays nothing for them.
        # Ticks, not frames: a server that answers pings but sends no market data is stalled.
        ticks_seen, last_change, lag_seen_ns = -1, time.monotonic(), 0
        while not self._stop.wait(period):
            now = time.monotonic()
            if not self.stats.connected:
                ticks_seen, last_change = -1, now
                continue
            if self.stats.ticks != ticks_seen:
                ticks_seen, last_change = self.stats.ticks, now
                lag_seen_ns = self._sample_lag(lag_seen_ns)
            if now >= next_beat:
                if self._ws.send_heartbeat():
                    self.stats.heartbeats_sent += 1
                next_beat = now + self.heartbeat_interval
            if self.stall_timeout and self._ws.input_request_dict and now - last_change > self.stall_timeout:
                self.stats.stalls += 1
                silent = now - last_change
                log.warning("feed %s: no tick for %.1fs while subscribed; reconnecting", self.name, silent)
                ticks_seen, last_change = -1, now  # one stall, one reconnect
                self.disconnect(f"stall: no tick for {silent:.1f}s")

    def _sample_lag(self, after_ns: int) -> int:
        """Lag of the newest tick: its receive time on the wall clock minus its exchange timestamp.

        The receive stamp starts when the socket thread reads a frame, so a
        backlog waiting in socket buffers (a slow callback-mode strategy) is
        invisible to it; the exchange timestamp shows it. On Angel One's feed
        the timestamp has about 1 s resolution, so read this to the second.
        """
        newest = None
        try:
            for by_token in list(self._last.values()):
                for tick in list(by_token.values()):
                    if newest is None or tick.recv_ns > newest.recv_ns:
                        newest = tick
        except RuntimeError:   # resized by the socket thread while we looked; sample next time
            return after_ns
        if newest is None or newest.recv_ns <= after_ns or newest.exchange_ts <= 0:
            return after_ns
        wall_offset_ns = time.time_ns() - time.perf_counter_ns()
        lag = (newest.recv_ns + wall_offset_ns) / 1e6 - newest.exchange_ts
        self.stats.lag_ms = lag
        if lag > self.stats.max_lag_ms:
            self.stats.max_lag_ms = lag
        return newest.recv_ns

    # ------------------------------------------------------------------ events from the SDK client
    def _on_tick(self, tick) -> None:
        self.stats.ticks += 1
        tokens = self._wanted.get(tick.exchange_type)
        if tokens is None or tick.token not in tokens:
            self._unsubscribed(tick)
            return
        self._last[tick.exchange_type][tick.token] = tick
        self.on_tick(tick)

    def _unsubscribed(self, tick) -> None:
        stats = self.stats
        stats.unsubscribed_ticks += 1
        if stats.unsubscribed_ticks <= 10 or stats.unsubscribed_ticks % 1000 == 0:
            log.warning("feed %s: dropped tick #%d for %s/%s, which is not subscribed", self.name,
                        stats.unsubscribed_ticks, tick.exchange_type, tick.token)

    def _on_tick_after_reconnect(self, tick) -> None:
        """``_on_tick`` plus the gap check, in place only until every instrument has ticked again."""
        baseline = self._baseline
        by_token = baseline.get(tick.exchange_type)
        if by_token is not None:
            before = by_token.pop(tick.token, None)
            if before is not None:
                if not by_token:
                    baseline.pop(tick.exchange_type, None)
                if tick.seq > before.seq + 1:
                    self._report_gap(before, tick)
        if not baseline:
            with self._handler_lock:
                if not self._stop.is_set():
                    self._ws.on_tick = self._on_tick
        self._on_tick(tick)

    def _report_gap(self, before, after) -> None:
        stats = self.stats
        gap = Gap(after.token, after.exchange_type, before.seq, after.seq, after.seq - before.seq - 1,
                  (after.exchange_ts - before.exchange_ts) / 1000, stats.reconnects, time.time(),
                  after.recv_ns)
        stats.gaps += 1
        stats.missed_ticks += gap.missed
        self.gaps.append(gap)
        if stats.gaps <= 10 or stats.gaps % 1000 == 0:
            log.warning("feed %s: gap #%d on %s/%s: seq %d -> %d, %d missed over %.1fs", self.name, stats.gaps,
                        gap.exchange_type, gap.token, gap.last_seq_before, gap.first_seq_after, gap.missed,
                        gap.seconds)
        if self.on_gap:
            try:
                self.on_gap(gap)
            except Exception:
                log.exception("feed %s: on_gap handler failed", self.name)

    def _on_text(self, kind: str, payload) -> None:
        stats = self.stats
        if kind == "pong":
            stats.pongs += 1
        elif kind == "error":
            stats.error_frames += 1
            stats.last_error_frame = payload
            if stats.error_frames <= 10 or stats.error_frames % 1000 == 0:
                # A server may send anything: an oversized message is cut short in the log.
                log.warning("feed %s: server error frame #%d %.40s: %.200s", self.name, stats.error_frames,
                            payload.get("errorCode"), payload.get("errorMessage"))
            if self.on_error_frame:
                self.on_error_frame(payload)
        else:
            stats.unknown_text += 1
            if stats.unknown_text <= 10 or stats.unknown_text % 1000 == 0:
                log.warning("feed %s: unexpected text frame #%d %.80r", self.name, stats.unknown_text, payload)

    def _on_malformed(self, frame, exc) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= 10 or self.stats.malformed % 1000 == 0:
            log.warning("feed %s: skipped malformed frame #%d (%d bytes): %s",
                        self.name, self.stats.malformed, len(frame), exc)

    def _on_connect(self, resubscribed: bool) -> None:
        stats = self.stats
        self._opened_at = time.monotonic()
        stats.connected_since = time.time()
        with self._subs_lock:
            stats.connected = True
            stats.connects += 1
            for mode, by_exchange in self._pending.items():
                if by_exchange:
                    self._ws.subscribe("kit", mode, [{"exchangeType": e, "tokens": list(t)}
                                                     for e, t in by_exchange.items()])
            self._pending.clear()
        # What each instrument last carried before the drop: its first tick now is checked against it.
        baseline = {e: dict(by_token) for e, by_token in list(self._last.items()) if by_token}
        if baseline:
            self._baseline = baseline
            with self._handler_lock:
                if not self._stop.is_set():
                    self._ws.on_tick = self._on_tick_after_reconnect
        self._connected.set()
        if self.on_connect:
            self.on_connect(resubscribed)

    def _on_disconnect(self, code, reason) -> None:
        self.stats.connected = False
        self._connected.clear()
        self._close_info = (code, reason)
        if self.on_disconnect:
            self.on_disconnect(code, reason)

    def _on_socket_error(self, exc) -> None:
        if self._closing_reason and self.stats.connected:
            return   # the kit closed this connection itself (stall, disconnect, stop): no error
        self.stats.socket_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if self.stats.connected:
            self._error_since_open = self.stats.last_error
        if isinstance(exc, websocket.WebSocketBadStatusException) and exc.status_code in (401, 403):
            self.stats.auth_failed = True
            log.error("feed %s: the server refused the credentials (HTTP %s)", self.name, exc.status_code)
        elif not self._stop.is_set():
            log.warning("feed %s: socket error: %s", self.name, self.stats.last_error)


def _discard(tick) -> None:
    """The client's tick handler once the feed is stopping."""


def join_closing(thread: threading.Thread, client, timeout: float, every: float = 0.05) -> None:
    """Join a socket thread whose client was told to close, telling it again while the thread lives.

    One ``close_connection()`` cannot reach a connect that had no socket yet
    (still in its TCP connect) or that began just after it (the thread was
    between its stop check and ``connect()``); repeating it does, as soon as
    that socket exists. Each repeat is a no-op once the close frame is out.
    """
    deadline = time.monotonic() + timeout
    while True:
        thread.join(min(every, max(0.0, deadline - time.monotonic())))
        if not thread.is_alive() or time.monotonic() >= deadline:
            return
        if client is not None:
            client.close_connection()


def _wanted(subscriptions: dict) -> dict[int, frozenset]:
    """{mode: {exchange_type: [tokens]}} -> {exchange_type: frozenset(tokens in any mode)}."""
    out: dict[int, set] = {}
    for by_exchange in subscriptions.values():
        for e, tokens in by_exchange.items():
            out.setdefault(e, set()).update(str(t) for t in tokens)
    return {e: frozenset(t) for e, t in out.items()}


def _merge(target: dict, mode: int, by_exchange: dict) -> None:
    """Add ``{exchange_type: [token]}`` to ``target[mode]``, keeping order, without duplicates."""
    slot = target.setdefault(mode, {})
    for e, toks in by_exchange.items():
        have = slot.setdefault(e, [])
        have.extend(t for t in toks if t not in have)


def _remove(target: dict, mode: int, by_exchange: dict) -> None:
    slot = target.get(mode)
    if not slot:
        return
    for e, toks in by_exchange.items():
        kept = [t for t in slot.get(e, []) if t not in toks]
        if kept:
            slot[e] = kept
        else:
            slot.pop(e, None)
    if not slot:
        target.pop(mode, None)
