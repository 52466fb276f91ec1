"""A socket the kit keeps open: connect attempts on a thread, backoff, heartbeat, stop.

Both Angel One sockets the kit holds (market data, order updates) wrap an
adapter client from ``kit.angel.sdk`` whose ``connect()`` blocks until the
connection closes and never reconnects by itself. ``ReconnectingSocket`` is
what they share around it: a thread that connects again after every drop,
waiting as its ``ReconnectPolicy`` says; a refused login (HTTP 401/403) that
ends the retries, or, with a ``session`` (``kit.angel.session_keeper``), asks
it to renew and keeps retrying with whatever credentials it holds at each
attempt; a second thread that sends the text ``ping`` heartbeat and
asks the subclass whether the connection has stalled; a ``stop()`` that cuts a
connect short and leaves no thread behind. A subclass is the protocol: it
makes and wires the client (``_new_client``) and says what a stall is.

``FeedCredentials`` (the handshake's four values) and ``ReconnectPolicy`` are
defined here because every socket, the session and the live broker need them.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import websocket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedCredentials:
    """What a SmartAPI socket's handshake needs. ``repr`` never shows the values."""
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


@dataclass
class StreamStats:
    """A kept-open socket's counters. Each is written by one of its threads; anyone may read."""
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    disconnects: int = 0              # connections that were open and closed (not by stop())
    failed_connects: int = 0          # attempts that never opened (refused, timed out, ...)
    pongs: int = 0
    heartbeats_sent: int = 0
    stalls: int = 0
    socket_errors: int = 0
    auth_failed: bool = False
    last_error: str = ""
    last_disconnect_reason: str = ""  # "stall: ...", "dropped: ...", "closed by server: ...", "requested"
    last_disconnect_at: float | None = None   # epoch seconds
    connected_since: float | None = None      # epoch seconds
    next_retry_in: float | None = None        # the backoff being waited, while reconnecting


class ReconnectingSocket:
    """Keeps one adapter client connected on a background thread; subclasses supply the protocol.

    A subclass implements ``_new_client()`` (make the client and wire its
    protocol events; the base wires ``on_disconnect`` and ``on_socket_error``),
    calls ``_opened()`` and then sets ``_connected`` from the client's open
    event, and may override the watch hooks: ``_watch_period()``,
    ``_stalled(now)`` (a reason, or None) and ``_reset_liveness(now)``.
    ``kind`` names the socket in log lines; ``_log`` is the logger they go to.
    """

    kind = "socket"
    _log = log

    def __init__(self, url: str, credentials: FeedCredentials, stats: StreamStats, *,
                 reconnect: ReconnectPolicy | None, heartbeat_interval: float, verify_tls: bool, name: str,
                 session=None):
        self.url = url
        self.credentials = credentials
        # A SessionKeeper (or None): credentials are taken from it at every connect, and a refusal
        # asks it to renew instead of ending the retries.
        self.session = session
        self.stats = stats
        self.reconnect = reconnect or ReconnectPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.verify_tls = verify_tls
        self.name = name
        self.on_disconnect = None       # fn(code, reason), on the socket thread
        self._rng = random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()   # cuts a reconnect backoff short (stop, a renewed session)
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._ws = None                  # the adapter client (kit.angel.sdk)
        self._opened_at = 0.0
        self._closing_reason: str | None = None   # set when the kit itself closes the socket
        self._close_info: tuple | None = None      # (code, reason) the close carried
        self._error_since_open: str | None = None

    # ------------------------------------------------------------------ for subclasses
    def _new_client(self):
        """A fresh adapter client with its protocol events wired to this object."""
        raise NotImplementedError

    def _watch_period(self) -> float:
        return min(1.0, self.heartbeat_interval / 2)

    def _stalled(self, now: float) -> str | None:
        """Why the open connection counts as stalled (it is then dropped and reconnected), or None."""
        return None

    def _reset_liveness(self, now: float) -> None:
        """Forget what ``_stalled`` has seen: the socket is down, or was just dropped for a stall."""

    def _stopping(self, ws) -> None:
        """Called by ``stop()`` before the client is told to close."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        if self.running:
            return self
        self._stop.clear()
        self._connected.clear()
        self.stats.auth_failed = False
        if self.session is not None:
            self.credentials = self.session.current()
            self.session.attach(self)
        ws = self._new_client()
        ws.on_disconnect = self._on_disconnect
        ws.on_socket_error = self._on_socket_error
        self._ws = ws
        self._thread = threading.Thread(target=self._run, args=(ws,), name=self.name, daemon=True)
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
        self._wake.set()
        if self.session is not None:
            self.session.detach(self)
        self._closing_reason = "stopped"
        ws = self._ws
        if ws is not None:
            self._stopping(ws)
            # Only the close frame is sent here; the socket thread, the one reader, returns,
            # and the adapter aborts the socket if no reply comes.
            ws.close_connection()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            _join_closing(thread, ws, timeout)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)
        self._thread = self._watchdog = None
        self.stats.connected = False
        self.stats.next_retry_in = None
        self._connected.clear()

    def disconnect(self, reason: str = "requested") -> None:
        """Drop the current connection at once, as if the network had; it is reconnected.

        ``reason`` becomes ``stats.last_disconnect_reason``.
        """
        ws = self._ws
        if ws is not None and ws.is_open():
            self._closing_reason = reason
            ws.abort()   # the reading thread wakes with EOF at once

    def session_renewed(self) -> None:
        """The session has new tokens: reconnect with them now (cutting a backoff short)."""
        if self.stats.connected:
            self.disconnect("session renewed")
        self._wake.set()

    def _take_credentials(self, ws) -> None:
        """Connect with the session's current tokens (a renewal may have replaced them since)."""
        if self.session is None:
            return
        creds = self.session.current()
        if creds != self.credentials:
            self.credentials = creds
            ws.use_credentials(creds.auth_token, creds.feed_token)

    # ------------------------------------------------------------------ the socket thread
    def _run(self, ws) -> None:
        stats, policy = self.stats, self.reconnect
        attempt = 0
        while not self._stop.is_set():
            connects_before = stats.connects
            self._closing_reason = self._close_info = self._error_since_open = None
            self._wake.clear()
            try:
                self._take_credentials(ws)
                ws.connect()  # blocks until the socket closes
            except Exception as exc:  # connect() should not raise; never let the thread die
                self._on_socket_error(exc)
            stats.connected = False
            self._connected.clear()
            opened = stats.connects > connects_before
            if self._stop.is_set():
                break
            if opened:
                stats.disconnects += 1
                stats.last_disconnect_reason = self._disconnect_reason()
                stats.last_disconnect_at = time.time()
            else:
                stats.failed_connects += 1
            if (stats.auth_failed and self.session is None) or not policy.enabled:
                self._log.error("%s %s: not reconnecting (%s)", self.kind, self.name,
                                "credentials refused" if stats.auth_failed else "reconnect disabled")
                break
            attempt = policy.next_attempt(attempt, time.monotonic() - self._opened_at if opened else None)
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                self._log.error("%s %s: gave up after %d reconnect attempts", self.kind, self.name, attempt - 1)
                break
            delay = policy.delay(attempt, self._rng)
            self._log.warning("%s %s: %s; reconnect %d in %.2fs", self.kind, self.name,
                              stats.last_disconnect_reason if opened else f"connect failed ({stats.last_error})",
                              attempt, delay)
            stats.next_retry_in = delay
            self._wake.wait(delay)
            if self._stop.is_set():
                break
            stats.next_retry_in = None
            stats.reconnects += 1
        stats.next_retry_in = None

    def _disconnect_reason(self) -> str:
        if self._closing_reason:
            return self._closing_reason
        code, text = self._close_info or (None, None)
        if code is not None:
            return f"closed by server: {code} {text or ''}".rstrip()
        if self._error_since_open:
            return f"dropped: {self._error_since_open}"
        return "closed"

    # ------------------------------------------------------------------ the heartbeat thread
    def _watch(self) -> None:
        """The text ``ping`` every ``heartbeat_interval`` s and the stall check, while connected."""
        period, interval = self._watch_period(), self.heartbeat_interval
        next_beat = time.monotonic() + interval
        while not self._stop.wait(period):
            now = time.monotonic()
            if not self.stats.connected:
                next_beat = now + interval
                self._reset_liveness(now)
                continue
            if now >= next_beat:
                if self._ws.send_heartbeat():
                    self.stats.heartbeats_sent += 1
                next_beat = now + interval
            stalled = self._stalled(now)
            if stalled:
                self.stats.stalls += 1
                self._log.warning("%s %s: %s; reconnecting", self.kind, self.name, stalled)
                self._reset_liveness(now)   # one stall, one reconnect
                self.disconnect(f"stall: {stalled}")

    # ------------------------------------------------------------------ events from the client
    def _opened(self) -> None:
        """Count a connection that opened (the subclass then sets ``_connected``)."""
        self._opened_at = time.monotonic()
        self.stats.connected_since = time.time()
        self.stats.auth_failed = False
        self.stats.connected = True
        self.stats.connects += 1

    def _on_disconnect(self, code, reason) -> None:
        self.stats.connected = False
        self._connected.clear()
        self._close_info = (code, reason)
        if self.on_disconnect:
            self.on_disconnect(code, reason)

    def _on_socket_error(self, exc) -> None:
        stats = self.stats
        if self._closing_reason and stats.connected:
            return   # the kit closed this connection itself (stall, disconnect, stop): no error
        stats.socket_errors += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        if stats.connected:
            self._error_since_open = stats.last_error
        if isinstance(exc, websocket.WebSocketBadStatusException) and exc.status_code in (401, 403):
            stats.auth_failed = True
            if self.session is not None:
                self._log.warning("%s %s: the server refused the token (HTTP %s); renewing the session",
                                  self.kind, self.name, exc.status_code)
                self.session.refused(self.credentials, f"the {self.kind} socket")
            else:
                self._log.error("%s %s: the server refused the credentials (HTTP %s)", self.kind, self.name,
                                exc.status_code)
        elif not self._stop.is_set():
            self._log.warning("%s %s: socket error: %s", self.kind, self.name, stats.last_error)


def _join_closing(thread: threading.Thread, client, timeout: float, every: float = 0.05) -> None:
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
