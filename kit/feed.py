"""The market-data feed: the real SDK client on a background thread, kept connected.

``SmartFeed`` owns one ``KitWebSocketV2`` and a thread that runs its blocking
``connect()``. When the socket closes for any reason other than ``stop()``, the
thread waits (exponential backoff with jitter, capped) and connects again; the
SDK client's own ``resubscribe()`` restores every subscription. A second
thread sends Angel One's text ``ping`` heartbeat and watches for stalls.

    feed = SmartFeed(url, creds, {kit.LTP: {2: ["43650"]}}, on_tick=print)
    feed.start(); ...; feed.stop()

Callbacks are named for events, as in pykiteconnect's ticker: ``on_tick``,
``on_connect``, ``on_disconnect``, ``on_error_frame``.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import websocket

from .sdk_adapter import KitWebSocketV2

log = logging.getLogger("kit.feed")


@dataclass(frozen=True)
class FeedCredentials:
    """What the market-data socket's handshake needs. ``repr`` never shows the values."""
    auth_token: str = field(repr=False)
    api_key: str = field(repr=False)
    client_code: str
    feed_token: str = field(repr=False)


@dataclass
class ReconnectPolicy:
    """Backoff between reconnect attempts: ``min(max_delay, initial * 2**n)`` with ±``jitter``."""
    enabled: bool = True
    initial_delay: float = 0.2
    max_delay: float = 30.0
    jitter: float = 0.25
    max_attempts: int | None = None  # None: forever (a market day is long)

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_delay, self.initial_delay * (2 ** max(0, attempt - 1)))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass
class FeedStats:
    """Counters the feed thread writes (single writer) and anyone may read."""
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    frames: int = 0
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


class SmartFeed:
    """Keeps one SmartAPI market-data connection alive on a background thread."""

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
        self.parser = parser
        self.reconnect = reconnect or ReconnectPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.stall_timeout = stall_timeout
        self.verify_tls = verify_tls
        self.name = name
        self.stats = FeedStats()
        self._rng = random.Random()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._ws: KitWebSocketV2 | None = None

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
        self._ws = KitWebSocketV2(self.url, c.auth_token, c.api_key, c.client_code, c.feed_token,
                                  parser=self.parser, verify_tls=self.verify_tls)
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
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close_connection()
        for t in (self._thread, self._watchdog):
            if t is not None and t is not threading.current_thread():
                t.join(timeout)
        self._thread = self._watchdog = None
        self.stats.connected = False

    def disconnect(self) -> None:
        """Drop the current connection as if the network had; the feed reconnects."""
        ws = self._ws
        if ws is not None:
            ws.drop_connection()

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, tokens: dict, mode: int = 1) -> None:
        """``tokens``: ``{exchange_type: [token, ...]}``; sent now if connected, kept for reconnects."""
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        if self._ws is not None and self.stats.connected:
            self._ws.subscribe("kit", mode, token_list)
        else:
            slot = self._initial_subscriptions.setdefault(mode, {})
            for e, t in tokens.items():
                slot.setdefault(e, []).extend(x for x in t if x not in slot.get(e, []))

    def unsubscribe(self, tokens: dict, mode: int = 1) -> None:
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        if self._ws is not None and self.stats.connected:
            self._ws.unsubscribe("kit", mode, token_list)

    def subscriptions(self) -> dict:
        return self._ws.subscriptions() if self._ws is not None else {}

    # ------------------------------------------------------------------ the feed thread
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            connects_before = self.stats.connects
            try:
                self._ws.connect()  # blocks until the socket closes
            except Exception as exc:  # connect() should not raise; never let the thread die
                self._on_socket_error(exc)
            self.stats.connected = False
            self._connected.clear()
            if self._stop.is_set():
                break
            if self.stats.auth_failed or not self.reconnect.enabled:
                log.error("feed %s: not reconnecting (%s)", self.name,
                          "credentials refused" if self.stats.auth_failed else "reconnect disabled")
                break
            # A connection that opened resets the backoff; failed attempts grow it.
            attempt = 1 if self.stats.connects > connects_before else attempt + 1
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                log.error("feed %s: gave up after %d reconnect attempts", self.name, attempt - 1)
                break
            delay = self.reconnect.delay(attempt, self._rng)
            log.warning("feed %s: disconnected (%s); reconnect %d in %.2fs",
                        self.name, self.stats.last_error or "closed", attempt, delay)
            if self._stop.wait(delay):
                break
            self.stats.reconnects += 1
            self._ws.RESUBSCRIBE_FLAG = bool(self._ws.input_request_dict)

    def _watch(self) -> None:
        """Heartbeat (text ``ping``) and stall detection, on their own small thread."""
        period = min(1.0, self.heartbeat_interval, (self.stall_timeout or 4.0) / 4)
        next_beat = time.monotonic() + self.heartbeat_interval
        # Stalls are judged by the frame counter, so the hot path pays nothing for them.
        frames_seen, last_change = -1, time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            if not self.stats.connected:
                frames_seen, last_change = -1, now
                continue
            if self.stats.frames != frames_seen:
                frames_seen, last_change = self.stats.frames, now
            if now >= next_beat:
                if self._ws.send_heartbeat():
                    self.stats.heartbeats_sent += 1
                next_beat = now + self.heartbeat_interval
            if self.stall_timeout and self._ws.input_request_dict and now - last_change > self.stall_timeout:
                self.stats.stalls += 1
                log.warning("feed %s: no data for %.1fs while subscribed; reconnecting",
                            self.name, now - last_change)
                frames_seen, last_change = -1, now  # one stall, one reconnect
                self.disconnect()

    # ------------------------------------------------------------------ events from the SDK client
    def _on_tick(self, tick) -> None:
        stats = self.stats
        stats.frames += 1
        stats.ticks += 1
        self.on_tick(tick)

    def _on_text(self, kind: str, payload) -> None:
        self.stats.frames += 1
        if kind == "pong":
            self.stats.pongs += 1
        elif kind == "error":
            self.stats.error_frames += 1
            self.stats.last_error_frame = payload
            log.warning("feed %s: server error frame %s: %s", self.name,
                        payload.get("errorCode"), payload.get("errorMessage"))
            if self.on_error_frame:
                self.on_error_frame(payload)
        else:
            self.stats.unknown_text += 1
            log.warning("feed %s: unexpected text frame %.80r", self.name, payload)

    def _on_malformed(self, frame, exc) -> None:
        self.stats.frames += 1
        self.stats.malformed += 1
        if self.stats.malformed <= 10 or self.stats.malformed % 1000 == 0:
            log.warning("feed %s: skipped malformed frame #%d (%d bytes): %s",
                        self.name, self.stats.malformed, len(frame), exc)

    def _on_connect(self, resubscribed: bool) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        if not resubscribed:
            for mode, by_exchange in self._initial_subscriptions.items():
                if by_exchange:
                    self._ws.subscribe("kit", mode, [{"exchangeType": e, "tokens": list(t)}
                                                     for e, t in by_exchange.items()])
        self._connected.set()
        if self.on_connect:
            self.on_connect(resubscribed)

    def _on_disconnect(self, code, reason) -> None:
        self.stats.connected = False
        self._connected.clear()
        if self.on_disconnect:
            self.on_disconnect(code, reason)

    def _on_socket_error(self, exc) -> None:
        self.stats.socket_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, websocket.WebSocketBadStatusException) and exc.status_code in (401, 403):
            self.stats.auth_failed = True
            log.error("feed %s: the server refused the credentials (HTTP %s)", self.name, exc.status_code)
        elif not self._stop.is_set():
            log.warning("feed %s: socket error: %s", self.name, self.stats.last_error)
