"""The order-update stream: Angel One's ``smart-order-update`` socket on a background thread, kept connected.

``OrderUpdateStream`` owns one ``KitOrderUpdateSocket`` (the SDK's client with
its defects contained) and a thread that runs its blocking ``connect()``. A
dropped connection is reconnected with the feed's backoff policy; a refused
token (HTTP 401/403) stops the stream, since retrying cannot fix it. A second
thread sends Angel One's text ``ping`` every ``heartbeat_interval`` seconds
and reconnects when no ``pong`` came back for three intervals.

Updates sent while the socket was down are lost (the server does not replay
them), so ``on_connect`` fires after every (re)connect: the live broker
reconciles against the order book then.

    stream = OrderUpdateStream(url, creds, on_update=print)
    stream.on_connect = lambda: print("connected")
    stream.start(); stream.wait_connected(10); ...; stream.stop()
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

import websocket

from kit.feed.live import FeedCredentials, ReconnectPolicy, join_closing
from kit.angel.sdk import KitOrderUpdateSocket

log = logging.getLogger(__name__)

ANGEL_ORDER_UPDATE_URL = "wss://tns.angelone.in/smart-order-update"
ORDER_UPDATE_URL_ENV = "SMARTAPI_ORDER_UPDATE_URL"


@dataclass
class OrderStreamStats:
    """Counters the stream's threads write and anyone may read."""
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    updates: int = 0
    pongs: int = 0
    heartbeats_sent: int = 0
    unknown_frames: int = 0
    socket_errors: int = 0
    failed_connects: int = 0          # attempts that never opened (refused, timed out, ...)
    stalls: int = 0
    auth_failed: bool = False
    last_error: str = ""


class OrderUpdateStream:
    """Keeps one order-update connection alive and hands every JSON update to ``on_update``.

    ``on_update(message)`` and ``on_connect()`` run on the stream's socket
    thread, one at a time, in arrival order.
    """

    def __init__(self, url: str, credentials: FeedCredentials, on_update, *,
                 reconnect: ReconnectPolicy | None = None, heartbeat_interval: float = 10.0,
                 verify_tls: bool = True, name: str = "kit-order-updates"):
        self.url = url
        self.credentials = credentials
        self.on_update = on_update
        self.on_connect = None
        self.reconnect = reconnect or ReconnectPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.verify_tls = verify_tls
        self.name = name
        self.stats = OrderStreamStats()
        self._rng = random.Random()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._sock: KitOrderUpdateSocket | None = None
        self._last_pong = 0.0
        self._opened_at = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "OrderUpdateStream":
        if self.running:
            return self
        self._stop.clear()
        self._connected.clear()
        self.stats.auth_failed = False
        c = self.credentials
        self._sock = KitOrderUpdateSocket(self.url, c.auth_token, c.api_key, c.client_code, c.feed_token,
                                          verify_tls=self.verify_tls,
                                          connect_timeout=self.reconnect.connect_timeout)
        self._sock.on_update = self._on_update
        self._sock.on_text = self._on_text
        self._sock.on_connect = self._on_connect
        self._sock.on_disconnect = self._on_disconnect
        self._sock.on_socket_error = self._on_socket_error
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-heartbeat", daemon=True)
        self._watchdog.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection and end both threads; a connect in progress is cut short."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            sock.close_connection()
        if self._thread is not None and self._thread is not threading.current_thread():
            join_closing(self._thread, sock, timeout)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)
        self._thread = self._watchdog = None
        self.stats.connected = False
        self._connected.clear()

    def disconnect(self) -> None:
        """Drop the current connection as a network failure would; the stream reconnects."""
        sock = self._sock
        if sock is not None and sock.wsapp is not None:
            sock.wsapp.close()

    # ------------------------------------------------------------------ threads
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            connects_before = self.stats.connects
            try:
                self._sock.connect()   # blocks until the socket closes
            except Exception as exc:   # never let the thread die
                self._on_socket_error(exc)
            self.stats.connected = False
            self._connected.clear()
            if self._stop.is_set():
                break
            opened = self.stats.connects > connects_before
            if not opened:
                self.stats.failed_connects += 1
            if self.stats.auth_failed or not self.reconnect.enabled:
                log.error("order updates %s: not reconnecting (%s)", self.name,
                          "token refused" if self.stats.auth_failed else "reconnect disabled")
                break
            attempt = self.reconnect.next_attempt(attempt, time.monotonic() - self._opened_at if opened else None)
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                log.error("order updates %s: gave up after %d reconnect attempts", self.name, attempt - 1)
                break
            delay = self.reconnect.delay(attempt, self._rng)
            log.warning("order updates %s: %s (%s); reconnect %d in %.2fs", self.name,
                        "disconnected" if opened else "connect failed",
                        self.stats.last_error or "closed", attempt, delay)
            if self._stop.wait(delay):
                break
            self.stats.reconnects += 1

    def _watch(self) -> None:
        period = min(1.0, self.heartbeat_interval / 2)
        next_beat = time.monotonic() + self.heartbeat_interval
        while not self._stop.wait(period):
            now = time.monotonic()
            if not self.stats.connected:
                next_beat = now + self.heartbeat_interval
                continue
            if now >= next_beat:
                if self._sock.send_heartbeat():
                    self.stats.heartbeats_sent += 1
                next_beat = now + self.heartbeat_interval
            if now - self._last_pong > 3 * self.heartbeat_interval:
                self.stats.stalls += 1
                log.warning("order updates %s: no pong for %.1fs; reconnecting", self.name, now - self._last_pong)
                self._last_pong = now
                self.disconnect()

    # ------------------------------------------------------------------ events from the socket
    def _on_update(self, message: dict) -> None:
        self.stats.updates += 1
        self._last_pong = time.monotonic()    # any frame proves the connection alive
        try:
            self.on_update(message)
        except Exception:
            log.exception("order updates %s: the update handler failed on %.200r", self.name, message)

    def _on_text(self, kind: str, payload) -> None:
        if kind == "pong":
            self.stats.pongs += 1
            self._last_pong = time.monotonic()
        else:
            self.stats.unknown_frames += 1
            log.warning("order updates %s: unexpected frame %.80r", self.name, payload)

    def _on_connect(self) -> None:
        self._opened_at = time.monotonic()
        self.stats.connected = True
        self.stats.connects += 1
        self._last_pong = time.monotonic()
        self._connected.set()
        if self.on_connect:
            try:
                self.on_connect()
            except Exception:
                log.exception("order updates %s: on_connect failed", self.name)

    def _on_disconnect(self, code, reason) -> None:
        self.stats.connected = False
        self._connected.clear()

    def _on_socket_error(self, exc) -> None:
        self.stats.socket_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, websocket.WebSocketBadStatusException) and exc.status_code in (401, 403):
            self.stats.auth_failed = True
            log.error("order updates %s: the server refused the token (HTTP %s)", self.name, exc.status_code)
        elif not self._stop.is_set():
            log.warning("order updates %s: socket error: %s", self.name, self.stats.last_error)
