"""Keeping an Angel One session valid all day: renew before expiry, and when a token is refused.

Angel One's JWT carries its expiry (``exp``). ``SessionKeeper`` runs one
thread that renews the session ``margin`` seconds before then (at half the
token's life if that is later, so a short-lived token is not renewed in a
loop), and at once when REST answers "Invalid Token" (AG8001, HTTP 403) or a
socket's upgrade is refused (HTTP 401/403) with the current token. A renewal
is ``generateToken(refresh_token)`` on the session's own ``SmartConnect``;
if that is refused, a fresh login with TOTP (``credentials()``, read again
each time, as at start) on the same client. Either way the client the live
broker holds carries the new JWT from its next request on.

After a renewal, every socket attached (the market feed's connections, the
order-update stream) is told to reconnect: each takes the session's current
credentials whenever it (re)connects, the feed resubscribes and reports the
ticks it missed as gaps, the order-update stream's reconnect reconciles the
order book. Nothing else in the trader changes.

A renewal that fails closes every attached trading gate under ``"session"``
with the reason, and is retried with backoff (``retry``) until one succeeds,
which reopens them. One renewal runs at a time: a request that finds the
token it saw refused already replaced does nothing (two renewals at once:
one wins). Every token is registered with the log redactor by the SDK
adapter the moment it is stored.

    keeper = SessionKeeper(session, lambda: Credentials.from_env(".env"), margin=300).start()
    keeper.current()        # FeedCredentials to connect with now
    keeper.status()         # expires_at, renewals, last_error, ...
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace

from kit.angel.sdk import SmartApiError
from kit.angel.session import CredentialsError, Session, log_in
from kit.angel.stream import FeedCredentials, ReconnectPolicy

log = logging.getLogger(__name__)

GATE = "session"
DEFAULT_MARGIN = 300.0      # renew 5 minutes before the JWT expires


def _bare(token: str | None) -> str:
    return (token or "").removeprefix("Bearer ").strip()


class SessionKeeper:
    """Renews ``session`` before it expires and when its token is refused. See the module docstring."""

    def __init__(self, session: Session, credentials, *, margin: float = DEFAULT_MARGIN,
                 retry: ReconnectPolicy | None = None, clock=time.time, name: str = "kit-session"):
        if margin < 0:
            raise ValueError(f"margin must be >= 0 seconds, not {margin!r}")
        self.session = session
        self._credentials = credentials        # () -> kit.angel.session.Credentials, for a fresh login
        self.margin = margin
        self.retry = retry or ReconnectPolicy(initial_delay=1.0, max_delay=60.0, jitter=0.2)
        self.name = name
        self._clock = clock
        self._rng = random.Random()
        self._renewing = threading.Lock()      # one renewal at a time
        self._state = threading.Condition()    # guards the fields below; notified on every change
        self._stop = False
        self._wanted: str | None = None        # why a renewal is wanted now (a token was refused)
        self._sockets: list = []
        self._gates: list = []
        self._thread: threading.Thread | None = None
        self._obtained_at = clock()
        self.renewals = 0                      # successful renewals
        self.by_refresh = 0                    # ... through generateToken
        self.by_login = 0                      # ... through a fresh login
        self.failures = 0                      # failed renewal attempts
        self.last_error = ""                   # why the last attempt failed ("" once one succeeds)
        self.last_reason = ""                  # what the last renewal was for
        self.last_renewed_at: float | None = None
        self.next_retry_in: float | None = None
        session.client.on_token_refused = self._refused_by_rest

    # ------------------------------------------------------------------ what the sockets and the trader use
    def current(self) -> FeedCredentials:
        """The credentials to connect with now."""
        return self.session.feed

    @property
    def expires_at(self) -> float | None:
        return self.session.expires_at

    @property
    def healthy(self) -> bool:
        return not self.last_error

    def attach(self, socket) -> None:
        """``socket.session_renewed()`` is called after every renewal (it reconnects with the new tokens)."""
        with self._state:
            if socket not in self._sockets:
                self._sockets.append(socket)

    def detach(self, socket) -> None:
        with self._state:
            if socket in self._sockets:
                self._sockets.remove(socket)

    def add_gate(self, gate) -> None:
        """Close ``gate`` under ``"session"`` while the session cannot be renewed."""
        with self._state:
            if gate not in self._gates:
                self._gates.append(gate)
            failing = self.last_error
        if failing:
            gate.close(GATE, self._halt_reason())

    def refused(self, credentials: FeedCredentials, by: str) -> None:
        """A socket's upgrade was refused with ``credentials``: renew, unless they were already replaced."""
        self._want(credentials.auth_token, f"{by} refused the token")

    def _refused_by_rest(self, token: str) -> None:
        self._want(token, "REST answered Invalid Token")

    def _want(self, token: str, reason: str) -> None:
        if _bare(token) != _bare(self.session.feed.auth_token):
            return      # a token already replaced: the next attempt carries the new one
        with self._state:
            self._wanted = self._wanted or reason
            self._state.notify_all()

    # ------------------------------------------------------------------ the thread
    def start(self) -> "SessionKeeper":
        with self._state:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread; a renewal in progress finishes first (its REST calls are bounded)."""
        with self._state:
            self._stop = True
            self._state.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def renew_at(self) -> float | None:
        """When the next renewal before expiry is due (epoch seconds); None if the JWT does not say."""
        expires = self.expires_at
        if expires is None:
            return None
        return max(expires - self.margin, self._obtained_at + (expires - self._obtained_at) / 2)

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._state:
                while not self._stop and self._wanted is None:
                    due = self.renew_at()
                    wait = None if due is None else due - self._clock()
                    if wait is not None and wait <= 0:
                        self._wanted = "the token expires soon"
                        break
                    self._state.wait(wait)
                if self._stop:
                    return
                reason, self._wanted = self._wanted, None
            if self.renew(reason):
                attempt = 0
                continue
            attempt += 1
            delay = self.retry.delay(attempt, self._rng)
            self.next_retry_in = delay
            self._close_gates()
            with self._state:
                # Woken early only by stop(); a refusal meanwhile is the same failure.
                deadline = time.monotonic() + delay
                while not self._stop and time.monotonic() < deadline:
                    self._state.wait(deadline - time.monotonic())
                if self._stop:
                    return
                self._wanted = self._wanted or reason
            self.next_retry_in = None

    # ------------------------------------------------------------------ renewing
    def renew(self, reason: str = "requested", *, replacing: str | None = None) -> bool:
        """Renew now (blocking): refresh token first, then a fresh login. True on success.

        ``replacing``: the token the caller found wanting (default: the current one). If another
        renewal has replaced it meanwhile, this one waits for that and returns its outcome
        instead of renewing twice.
        """
        seen = self.session.feed.auth_token if replacing is None else replacing
        with self._renewing:
            if self.session.feed.auth_token != seen:
                return self.healthy              # renewed meanwhile by the other caller
            try:
                feed, how = self._new_tokens()
            except Exception as exc:             # SmartApiError / CredentialsError: redacted already
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("session %s: renewal (%s) failed: %s", self.name, reason, self.last_error)
                return False
            self.session.feed = feed
            self._obtained_at = self._clock()
            self.renewals += 1
            self.last_reason, self.last_error = reason, ""
            self.last_renewed_at = time.time()
            setattr(self, how, getattr(self, how) + 1)
        log.info("session %s: renewed by %s (%s); reconnecting the sockets", self.name,
                 "refresh token" if how == "by_refresh" else "a fresh login", reason)
        with self._state:
            sockets, gates = list(self._sockets), list(self._gates)
            self._wanted = None      # refusals of the old token (the renewal's own calls too) are answered
            self._state.notify_all()
        for gate in gates:
            gate.open(GATE)
        for socket in sockets:
            try:
                socket.session_renewed()
            except Exception:
                log.exception("session %s: a socket failed to take the renewed session", self.name)
        return True

    def _new_tokens(self) -> tuple[FeedCredentials, str]:
        client, feed = self.session.client, self.session.feed
        refresh = getattr(client, "refresh_token", None)
        refusal = "no refresh token"
        if refresh:
            try:
                reply = client.generateToken(refresh)
            except SmartApiError as exc:         # Angel One answers a refused refresh token with HTTP 403
                reply = {"message": str(exc)}
            data = reply.get("data") if isinstance(reply, dict) else None
            if isinstance(data, dict) and data.get("jwtToken") and data.get("feedToken"):
                return replace(feed, auth_token="Bearer " + _bare(data["jwtToken"]),
                               feed_token=data["feedToken"]), "by_refresh"
            refusal = reply.get("message", "refused") if isinstance(reply, dict) else "refused"
        log.warning("session %s: the refresh token was refused (%s); logging in again", self.name, refusal)
        creds = self._credentials()
        if creds.client_code != self.session.client_code:
            raise CredentialsError(f"the credentials now name client {creds.client_code}, "
                                   f"not the session's {self.session.client_code}")
        return log_in(client, creds), "by_login"

    def _halt_reason(self) -> str:
        return f"the Angel One session expired and could not be renewed ({self.last_error}); retrying"

    def _close_gates(self) -> None:
        with self._state:
            gates = list(self._gates)
        for gate in gates:
            gate.close(GATE, self._halt_reason())

    def status(self) -> dict:
        return {"session_expires_at": self.expires_at, "session_renewals": self.renewals,
                "session_renewed_at": self.last_renewed_at, "session_error": self.last_error,
                "session_retry_in": self.next_retry_in}
