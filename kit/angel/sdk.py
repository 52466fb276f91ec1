"""Every workaround for smartapi-python 1.5.5, in one place.

The kit uses the SDK's real classes (``SmartConnect``, ``SmartWebSocketV2``);
this module imports them safely and subclasses them where they are broken.
Each numbered defect below has a test in ``tests/test_sdk_adapter.py``.

1. Importing anything from ``SmartApi`` runs ``SmartConnect``'s class body,
   which calls a public IP-lookup service with no timeout. We refuse that one
   call during the import (the SDK then falls back to its hard-coded address).
2. The SDK's constructors create ``logs/<date>/app.log`` in the working
   directory and call ``logzero.logfile`` (global logging reconfiguration).
   Inside the SDK modules, ``os`` and ``logzero`` are replaced by stand-ins
   that skip exactly those two things; the SDK's ``logger`` becomes the kit's
   ``kit.sdk`` logger.
3. A failed login makes the SDK log the PIN, TOTP and API key. Every record on
   the SDK's loggers, and on any logger of the ``kit`` tree, passes through
   ``SecretRedactor`` first.
4. ``input_request_dict`` is class-level, ``subscribe()`` aliases the caller's
   token list and ``unsubscribe()`` merges request keys into it (breaking
   ``resubscribe()``). ``KitWebSocketV2`` keeps it per instance, copies the
   lists, and unsubscribes by removing tokens.
5. ``_on_error`` sleeps and recurses into ``connect()`` on the socket thread
   and drops subscriptions. Here it only reports; ``kit.angel.stream`` reconnects.
6. ``_on_close`` has the wrong arity for websocket-client 1.x, so a clean
   close became an error and a reconnect. Fixed arity.
7. Text frames (JSON error frames, text ``pong``) never reach the user.
   ``_on_data`` routes them to ``on_text``.
8. Only protocol pings are sent; Angel One documents a text ``ping``.
   ``send_heartbeat()`` sends it (``kit.angel.stream`` schedules it).
9. TLS verification is off and urllib3 warnings are silenced globally.
   ``wss://`` URLs are verified; the global warning filters are restored.
10. Closing from another thread: websocket-client's ``WebSocketApp.close()``
    reads the server's close reply on the *calling* thread while the socket
    thread sits in ``select()`` on the same socket; when the caller wins, the
    socket thread never wakes (about one stop in three leaked a feed thread).
    ``_ClosesCleanly`` only sends the close frame; the socket thread reads the
    reply and returns (a timer aborts the socket if no reply comes).

And one in websocket-client (1.9), which the SDK runs on:

11. When the server closes first, or the client only sends its close frame,
    ``run_forever`` returns without closing the TCP socket (``send_close``
    clears ``connected``, so teardown's ``close()`` returns early); the
    server then waits in a half-closed state. ``_ClosesCleanly`` closes it.

``SmartWebSocketOrderUpdate`` (the order-update socket) has its own set;
``KitOrderUpdateSocket`` contains them:

12. Closing it reconnects: ``on_close`` calls ``retry_connect()``. Here a
    close is only reported; ``kit.angel.stream`` decides about reconnects.
13. ``retry_connect()`` sleeps ``RETRY_DELAY_SECONDS`` (10 s) on the socket
    thread, recurses into ``connect()``, keeps its attempt counter on the
    class and never resets it, and retries a refused token (HTTP 401) too.
    Here it never runs; a refused token stops the stream.
14. Protocol pong replies (and a text ``pong``) reach ``on_message`` as if
    they were order updates (an empty binary message every 10 s). Here only
    JSON text frames are updates; pongs are counted.
15. TLS verification is off (``CERT_NONE``). ``wss://`` URLs are verified.
16. Its constructor creates ``logs/`` like the others (the stand-ins of 2
    cover it) and it logs every message at INFO. Here nothing is logged per
    message.

And one more in ``SmartConnect``:

17. GET parameters travel JSON-encoded in the URL's query string, so
    ``getProfile`` (called by ``generateSession``) puts the refresh token in
    a request line that urllib3 logs at DEBUG. The redactor guards urllib3's
    logger and masks query strings.

18. A normal close (code 1000), whoever started it, is passed to ``on_error``
    as a ``WebSocketConnectionClosedException`` and logged at ERROR
    ("Connection closed normally (code 1000) - goodbye"): every clean stop
    ended with an error line. Here it is neither reported as an error nor
    logged; ``on_close`` still reports the close with its code.

19. Neither SDK socket bounds its connect: ``run_forever`` runs with
    websocket-client's global default timeout (none), so a server that
    accepts TCP but never answers the HTTP upgrade holds ``connect()``
    forever, and a close from another thread cannot reach a socket that is
    not open yet. Here each attempt (TCP, TLS, every read of the upgrade
    reply) waits at most ``connect_timeout`` seconds, set on that connection
    alone, and fails with ``ConnectTimeout``; ``close_connection()`` aborts
    an upgrade in progress.

20. ``SmartConnect``'s exceptions carry secrets: ``getProfile`` (inside
    ``generateSession``) sends the refresh token in its URL, and a network
    error's text repeats that URL; the tokens ``generateSession`` receives
    are unknown to the redactor until it returns. ``KitSmartConnect``
    registers every token the moment the SDK stores it, and its session calls
    raise ``SmartApiError`` with redacted text and no chained original.

21. ``SmartConnect._request`` calls ``requests.request`` (a new session per
    call) although it builds ``reqsession``: every order, cancel and position
    read opens a new TCP connection, and against Angel One a new TLS
    handshake (tens of milliseconds, and a few milliseconds of the trader's
    CPU with the GIL held, which ticks then wait for). ``KitSmartConnect``
    sends its requests through one keep-alive ``requests.Session``.

22. ``generateToken`` reads ``response['data']['jwtToken']`` unguarded, so a
    refused refresh token (``{"status": false, "data": null, ...}``) becomes a
    ``TypeError`` that hides Angel One's answer; and it keeps the old refresh
    token when the reply carries a new one. ``KitSmartConnect.generateToken``
    returns the refusal as it came and stores all three tokens on success.

23. A refused token reaches the caller only as a ``TokenException`` (HTTP 403
    "Invalid Token", AG8001) from whichever call met it; the SDK's
    ``session_expiry_hook`` takes no arguments, so its owner cannot tell a
    refusal of the current token from one of a token already replaced.
    ``KitSmartConnect.on_token_refused(token)`` is called with the token the
    refused request carried (``kit.angel.session_keeper`` renews on it).

24. ``gttCreateRule`` and ``gttModifyRule`` read ``response['data']['id']``
    unguarded, so a refused rule (``{"status": false, "data": null, ...}``)
    becomes a ``TypeError`` that hides Angel One's reason; ``gttLists`` given
    a tuple returns an error *string* in place of the reply. Here the first
    two return the reply as it came, and ``gttLists`` takes any sequence.

Not a defect, a cost: websocket-client spends three system calls per frame
(an epoll wait, then ``recv`` of the header and of the payload). ``ReadAhead``
reads the socket 64 KiB at a time and serves frames from that buffer, which
makes reading an LTP frame ~20 % cheaper in CPU (``python -m kit.bench``
measures it). ``read_ahead=False`` restores the library's own reads.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import warnings
from time import perf_counter_ns

import websocket

from . import wire

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- 3. secrets
class SecretRedactor(logging.Filter):
    """Replaces registered secret values, and secret-looking fields, in log records."""

    _FIELD = re.compile(
        r"""(?ix)
        (['"]?(?:password|pin|totp|x-privatekey|api_?key|authorization|jwttoken|
               refreshtoken|feedtoken|x-feed-token|x-api-key|access_token)['"]?\s*[:=]\s*)
        (['"]?)(?:Bearer\s+)?[^'",\s}]+(['"]?)""")

    def __init__(self):
        super().__init__("kit-secrets")
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        # Longest first, rebuilt on register(): the journal scrubs every string it stores with them.
        self._by_length: tuple[str, ...] = ()

    def register(self, *values: str | None) -> None:
        """Remember secret values, and their URL-encoded forms (a value sent in a query string)."""
        found = set()
        for v in values:
            if v and len(v) >= 4:
                found.update((v, urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v)))
        with self._lock:
            self._secrets.update(found)
            self._by_length = tuple(sorted(self._secrets, key=len, reverse=True))

    def secrets(self) -> frozenset[str]:
        """Every registered value (a copy), for checks the kit makes before writing anything out."""
        with self._lock:
            return frozenset(self._secrets)

    # 17: the SDK sends GET parameters (getProfile's refresh token) JSON-encoded in the query
    # string, and urllib3 logs request lines at DEBUG: query strings are masked whole.
    _QUERY = re.compile(r"""(/[^\s?"']*\?)[^\s"']+""")

    def redact(self, text: str) -> str:
        for s in self._by_length:
            if s in text:
                text = text.replace(s, "***")
        text = self._QUERY.sub(r"\1***", text)
        return self._FIELD.sub(r"\1\2***\3", text)

    def redact_values(self, text: str, min_length: int = 12) -> str:
        """Replace only registered secrets of at least ``min_length`` characters (keys, tokens).

        For stored data (the journal): short secrets such as a 4-digit PIN or a
        6-digit TOTP would also match inside order ids and prices, corrupting them.
        """
        for s in self._by_length:
            if len(s) >= min_length and s in text:
                text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            msg = str(record.msg)
        record.msg, record.args = self.redact(msg), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


redactor = SecretRedactor()


def register_secret(*values: str | None) -> None:
    """Make sure these values never appear in any log record the kit or SDK writes."""
    redactor.register(*values)


def _guard_logger(logger: logging.Logger) -> logging.Logger:
    if redactor not in logger.filters:
        logger.addFilter(redactor)
    return logger


for _name in ("kit", "kit.angel.sdk", "websocket", "SmartApi.smartConnect",
              "websockets.server", "websockets.client",    # both log handshake headers at DEBUG
              "urllib3.connectionpool"):                   # logs request lines, query strings included (17)
    _guard_logger(logging.getLogger(_name))


class _RedactingHandler(logging.Handler):
    """Redacts, in place, every record of the ``kit`` logger tree before any handler above ``kit`` sees it.

    A filter on a logger applies only to records logged on that very logger,
    never to those propagated from its children (``kit.feed.live``, or a
    ``kit.anything`` created later); a handler on ``kit`` sees them all, and
    the record it redacts is the object the root's handlers then format.
    It writes nothing itself, except where Python would have used
    ``logging.lastResort`` (no handler anywhere), which its presence would
    otherwise prevent.
    """

    def __init__(self):
        super().__init__()
        self.set_name("kit-secrets")
        self.addFilter(redactor)

    def emit(self, record: logging.LogRecord) -> None:
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and not self._other_handlers(record.name):
            last.handle(record)

    def _other_handlers(self, name: str) -> bool:
        logger = logging.getLogger(name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False


def _guard_kit_tree() -> None:
    kit_logger = logging.getLogger("kit")
    for handler in [h for h in kit_logger.handlers if h.get_name() == "kit-secrets"]:
        kit_logger.removeHandler(handler)     # a reloaded module: one guard, the current redactor's
    kit_logger.handlers.insert(0, _RedactingHandler())   # before any handler a user adds to "kit"


_guard_kit_tree()


# --------------------------------------------------------------------------- 18. a normal close is no error
_NORMAL_CLOSE = "Connection closed normally (code 1000)"


def _is_normal_close(error) -> bool:
    return isinstance(error, websocket.WebSocketConnectionClosedException) and str(error).startswith(_NORMAL_CLOSE)


# 19: after the kit cut a connect short (a stop), websocket-client's "<error> - goodbye" line
# follows on the same thread; it is no error either. Set by _reported_error, read once here.
_cut_short = threading.local()


class _NormalCloseIsNoError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if getattr(_cut_short, "goodbye", False) and message.endswith(" - goodbye"):
            _cut_short.goodbye = False
            return False
        return not message.startswith(_NORMAL_CLOSE)


logging.getLogger("websocket").addFilter(_NormalCloseIsNoError("kit-normal-close"))

# The socket went away while a (re)subscribe was being sent: the feed reports the disconnect and
# resubscribes on the next connection, so the SDK's own ERROR line for it only alarms.
_SOCKET_GONE = ("Broken pipe", "Connection reset", "socket is already closed", "Connection is already closed")


class _SubscribeOnAClosedSocketIsNoError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not (message.startswith(("Error occurred during subscribe", "Error occurred during unsubscribe",
                                        "Error occurred during resubscribe"))
                    and any(gone in message for gone in _SOCKET_GONE))


log.addFilter(_SubscribeOnAClosedSocketIsNoError("kit-subscribe-on-closed-socket"))


# --------------------------------------------------------------------------- 1. + 2. safe import
class _OsWithoutLogDirs:
    """Stands in for ``os`` inside the SDK modules: everything but creating ``logs/``."""
    path = os.path

    @staticmethod
    def makedirs(name, *args, **kwargs):
        if str(name).replace("\\", "/").split("/")[0] == "logs":
            return None
        return os.makedirs(name, *args, **kwargs)

    def __getattr__(self, item):  # pragma: no cover - the SDK uses only path/makedirs
        return getattr(os, item)


class _LogzeroWithoutFiles:
    """Stands in for ``logzero`` inside the SDK modules: no log files, no global setup."""
    logger = log

    @staticmethod
    def logfile(*args, **kwargs):
        return None


class _RequestsThroughASession:
    """Stands in for ``requests`` inside ``SmartApi.smartConnect`` (21).

    ``requests.request`` goes through the session of the ``KitSmartConnect``
    whose ``_request`` is running on this thread; anything else is requests itself.
    """

    def __init__(self, requests_module):
        self._requests = requests_module
        self._calling = threading.local()

    def __getattr__(self, item):
        return getattr(self._requests, item)

    def request(self, method, url, **kwargs):
        session = getattr(self._calling, "session", None)
        if session is None:
            return self._requests.request(method, url, **kwargs)
        if kwargs.get("verify") is True:
            kwargs["verify"] = session.verify      # a CA bundle named in the environment, as requests would
        return session.request(method, url, **kwargs)

    def through(self, session):
        """A context in which this thread's ``requests.request`` calls use ``session``."""
        return _ThreadSession(self._calling, session)


class _ThreadSession:
    def __init__(self, calling, session):
        self._calling, self._session = calling, session

    def __enter__(self):
        self._previous = getattr(self._calling, "session", None)
        self._calling.session = self._session

    def __exit__(self, *exc):
        self._calling.session = self._previous


def _import_sdk():
    import requests

    real_get = requests.get

    def refuse_lookup(url, *args, **kwargs):
        raise ConnectionRefusedError(f"kit: refused the SDK's import-time lookup of {url}")

    import logzero
    logzero_was_disabled = logzero.logger.disabled
    requests.get = refuse_lookup          # read by `from requests import get` in smartConnect
    logzero.logger.disabled = True        # its fallback logs a scary error otherwise
    try:
        import SmartApi.smartConnect as sc
        import SmartApi.smartWebSocketOrderUpdate as ou
        import SmartApi.smartWebSocketV2 as ws2
    finally:
        requests.get = real_get
        logzero.logger.disabled = logzero_was_disabled
    for module in (sc, ws2, ou):
        module.os = _OsWithoutLogDirs()
        module.logzero = _LogzeroWithoutFiles
        module.logger = log
    sc.log = _guard_logger(logging.getLogger("SmartApi.smartConnect"))
    sc.requests = _RequestsThroughASession(requests)
    return sc, ws2, ou


_smart_connect_module, _ws2_module, _order_update_module = _import_sdk()
SmartConnect = _smart_connect_module.SmartConnect
SmartWebSocketV2 = _ws2_module.SmartWebSocketV2
SmartWebSocketOrderUpdate = _order_update_module.SmartWebSocketOrderUpdate

# The SDK's own binary decoder (packet -> its dict), bound to a client without connection
# state, which it does not read: what parser="sdk" runs and what kit.bench compares with.
sdk_parse_binary = SmartWebSocketV2.__new__(SmartWebSocketV2)._parse_binary_data


# --------------------------------------------------------------------------- 20. session calls keep their secrets
class SmartApiError(RuntimeError):
    """A SmartConnect session call failed. The text is redacted and the original is not chained:
    its text and traceback would carry the secrets (a URL with the refresh token in it)."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind    # the original exception's type name, e.g. "ConnectionError"


_TOKEN_FIELDS = ("jwtToken", "refreshToken", "feedToken")
TOKEN_ERRORS = frozenset({"AG8001", "AG8002", "AG8003"})   # invalid, expired, missing token (23)


def _register_tokens(reply) -> None:
    """Register the tokens in a session reply (``{"data": {"jwtToken": ...}}``), whatever the call."""
    data = reply.get("data") if isinstance(reply, dict) else None
    if isinstance(data, dict):
        for name in _TOKEN_FIELDS:
            value = data.get(name)
            if isinstance(value, str):
                register_secret(value, value.removeprefix("Bearer ").strip())


class KitSmartConnect(SmartConnect):
    """``SmartConnect`` whose secrets are known to the redactor as soon as it holds them (20).

    Every token is registered when the SDK stores it (``generateSession``
    stores the JWT, refresh and feed tokens before it calls ``getProfile``,
    the call that may fail), and the session calls raise ``SmartApiError``
    with redacted text instead of the SDK's or requests' own exception.
    """

    def __init__(self, api_key=None, access_token=None, refresh_token=None, feed_token=None, **kwargs):
        register_secret(api_key, access_token, refresh_token, feed_token, kwargs.get("privateKey"))
        super().__init__(api_key=api_key, access_token=access_token, refresh_token=refresh_token,
                         feed_token=feed_token, **kwargs)
        import requests
        self.http = requests.Session()     # 21: one keep-alive connection pool for every call
        # What requests would read from the environment on every call (proxies, a CA bundle,
        # ~/.netrc), read once: the same settings, without ~0.3 ms of the order thread's CPU per call.
        env = self.http.merge_environment_settings(self.root, {}, None, True, None)
        self.http.trust_env = False
        self.http.proxies.update(env["proxies"])
        self.http.verify = env["verify"]

    on_token_refused = None      # fn(token the refused request carried) (23)

    def _request(self, route, method, parameters=None):
        token = self.access_token
        try:
            with _smart_connect_module.requests.through(self.http):
                reply = super()._request(route, method, parameters)
        except Exception as exc:
            if type(exc).__name__ == "TokenException":
                self._token_refused(token)
            raise
        if isinstance(reply, dict) and reply.get("errorcode") in TOKEN_ERRORS:
            self._token_refused(token)
        return reply

    def _token_refused(self, token) -> None:
        hook = self.on_token_refused
        if hook is not None and token:       # a request without a token (the login) was not refused for one
            try:
                hook(token)
            except Exception:       # the caller's request failed already; the hook must not mask why
                log.exception("on_token_refused failed")

    def close(self) -> None:
        """Close the kept-alive connections (a closed client opens new ones if used again)."""
        self.http.close()

    def setAccessToken(self, access_token):
        register_secret(access_token)
        super().setAccessToken(access_token)

    def setRefreshToken(self, refresh_token):
        register_secret(refresh_token)
        super().setRefreshToken(refresh_token)

    def setFeedToken(self, feedToken):
        register_secret(feedToken)
        super().setFeedToken(feedToken)

    def generateSession(self, clientCode, password, totp):
        register_secret(password, totp)
        return self._redacted("generateSession", super().generateSession, clientCode, password, totp)

    def getProfile(self, refreshToken):
        register_secret(refreshToken)
        return self._redacted("getProfile", super().getProfile, refreshToken)

    def generateToken(self, refresh_token):
        """New JWT and feed token for ``refresh_token`` (22): the reply as it came, refusal included."""
        register_secret(refresh_token)

        def call():
            reply = self._postRequest("api.token", {"refreshToken": refresh_token})
            data = reply.get("data") if isinstance(reply, dict) else None
            if isinstance(data, dict) and data.get("jwtToken") and data.get("feedToken"):
                _register_tokens(reply)
                self.setAccessToken(data["jwtToken"])
                self.setFeedToken(data["feedToken"])
                self.setRefreshToken(data.get("refreshToken") or refresh_token)
            return reply
        return self._redacted("generateToken", call)

    def gttCreateRule(self, createRuleParams):
        """The reply as it came (24): ``reply["data"]["id"]`` on success, Angel One's message on a refusal."""
        return self._postRequest("api.gtt.create", {k: v for k, v in createRuleParams.items() if v is not None})

    def gttModifyRule(self, modifyRuleParams):
        """The reply as it came (24)."""
        return self._postRequest("api.gtt.modify", {k: v for k, v in modifyRuleParams.items() if v is not None})

    def gttLists(self, status, page, count):
        """Rules in these statuses (a list or tuple, 24)."""
        return super().gttLists(list(status), page, count)

    def renewAccessToken(self):
        return self._redacted("renewAccessToken", super().renewAccessToken)

    def getfeedToken(self):
        return self._redacted("getfeedToken", super().getfeedToken)

    def terminateSession(self, clientCode):
        return self._redacted("terminateSession", super().terminateSession, clientCode)

    @staticmethod
    def _redacted(name: str, call, *args):
        try:
            reply = call(*args)
        except SmartApiError:
            raise                      # a nested session call (getProfile in generateSession): already clean
        except Exception as exc:
            error = SmartApiError(f"{name} failed: {type(exc).__name__}: {redactor.redact(str(exc))}",
                                  type(exc).__name__)
        else:
            _register_tokens(reply)
            return reply
        # Raised outside the except block: no __context__ holds the original either.
        raise error


def smart_connect(api_key: str, *, root: str | None = None, timeout: float = 7.0, **kwargs) -> KitSmartConnect:
    """A real ``SmartConnect`` (``KitSmartConnect``), without log files and without silencing urllib3 globally (9)."""
    register_secret(api_key)
    # catch_warnings restores the global filters that SmartConnect.__init__ overwrites,
    # and hides the SDK's own use of deprecated ssl options.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return KitSmartConnect(api_key=api_key, root=root, timeout=timeout, **kwargs)


def is_rate_limit_error(exc: BaseException) -> bool:
    """True for Angel One's "exceeding access rate" answer, as the SDK surfaces it.

    Over a rate limit the API answers HTTP 403 with plain text ("Access denied
    because of exceeding access rate"). ``SmartConnect._request`` parses every
    reply as JSON, so it raises ``DataException("Couldn't parse the JSON
    response received from the server: b'Access denied because of exceeding
    access rate'")``, with no status code of its own. The text is all there is.
    """
    text = str(exc).lower()
    return "exceeding access rate" in text or ("access denied" in text and "rate" in text)


# --------------------------------------------------------------------------- reading the socket
class ReadAhead:
    """The connected socket, read up to 64 KiB per system call.

    websocket-client reads each frame with two ``recv`` calls (header, then
    payload) after an ``epoll`` wait, so a 53-byte LTP frame costs three
    system calls and three releases of the GIL. Behind this buffer a burst of
    frames costs one. The bytes, their order and every error are the socket's
    own; everything but ``recv`` and ``pending`` is the socket itself.
    """

    def __init__(self, sock, size: int = 65536):
        self._sock, self._size = sock, size
        self._buf, self._pos = b"", 0
        self._inner_pending = getattr(sock, "pending", None)   # TLS: decrypted bytes held by ssl
        self.gettimeout = sock.gettimeout                      # read on every recv

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos < len(buf):
            end = min(pos + n, len(buf))
            self._pos = end
            return buf[pos:end]
        data = self._sock.recv(max(n, self._size))
        if len(data) <= n:
            return data
        self._buf, self._pos = data, n
        return data[:n]

    def pending(self) -> int:
        """Bytes readable without waiting (what websocket-client's TLS dispatcher asks)."""
        left = len(self._buf) - self._pos
        if left:
            return left
        return self._inner_pending() if self._inner_pending is not None else 0


# websocket-client's TLS read loop asks ``sock.pending()`` before it waits on
# epoll; run on a ``ReadAhead`` it serves buffered frames without waiting.
# (Present since websocket-client 1.x; without it the kit reads as before.)
_PendingAwareDispatcher = getattr(websocket._app, "SSLDispatcher", None)


if _PendingAwareDispatcher is not None:
    class _ReadAheadDispatcher(_PendingAwareDispatcher):
        """Installs a ``ReadAhead`` once the handshake is done, then reads as websocket-client does."""

        def read(self, sock, read_callback, check_callback):
            ws = self.app.sock
            if ws is not None and ws.sock is not None and not isinstance(ws.sock, ReadAhead):
                ws.sock = ReadAhead(ws.sock)
            return super().read(sock, read_callback, check_callback)

    class _ReadAheadApp(websocket.WebSocketApp):
        def create_dispatcher(self, ping_timeout, dispatcher=None, *args, **kwargs):
            if dispatcher:   # a caller's own event loop: leave it alone
                return super().create_dispatcher(ping_timeout, dispatcher, *args, **kwargs)
            return _ReadAheadDispatcher(self, ping_timeout or 10)
else:  # pragma: no cover - a websocket-client without it
    _ReadAheadApp = None


# --------------------------------------------------------------------------- closing from another thread
_PONG = object()   # _text_payload's answer for a text pong


class ConnectTimeout(websocket.WebSocketTimeoutException):
    """A connect attempt that did not open within the socket's ``connect_timeout`` (19)."""


class _ClosesCleanly:
    """What both kit sockets share: one bounded connection run, the text heartbeat, reading a
    text frame, an abort, and a close requested from another thread that neither hangs nor
    leaks the TCP socket.

    ``WebSocketApp.close()`` reads the server's close reply on the *calling*
    thread while the socket thread sits in ``select()`` on the same socket,
    then closes the descriptor under it; on Linux that ``select()`` never
    wakes, so ``connect()`` can hang (or fail with an AttributeError). Here the
    caller only sends the close frame; the socket thread reads the reply and
    returns, and the TCP socket is closed after ``run_forever`` (which
    websocket-client skips after ``send_close``).
    """
    _socket = None            # the open connection's socket; None until the upgrade succeeded
    _aborted_app = None       # the app whose connect close_connection() cut short
    _close_sent = None        # the socket whose close frame is out
    connect_timeout: float | None = 10.0

    def is_open(self) -> bool:
        """True while a connection is open (the upgrade succeeded and nothing closed it yet)."""
        app = self.wsapp
        sock = app.sock if app is not None else None
        return sock is not None and sock.connected

    def abort(self) -> bool:
        """Drop the open connection at once, as a network failure would: no close frame, the
        reading thread wakes with EOF and ``connect()`` returns. False if none was open."""
        app = self.wsapp
        sock = app.sock if app is not None else None
        if sock is None or not sock.connected:
            return False
        sock.abort()   # shutdown(SHUT_RDWR); the socket thread closes the descriptor
        return True

    def send_heartbeat(self) -> bool:
        """Angel One's text ``ping`` (8; the server answers text ``pong``). Both sockets document it."""
        try:
            if self.is_open():
                self.wsapp.send("ping")
                return True
        except Exception as exc:  # a dying socket: the read loop will report it
            log.debug("heartbeat not sent: %s", exc)
        return False

    def _text_payload(self, text: str):
        """What a text frame holds: ``_PONG`` for Angel One's ``pong`` (recorded and reported
        through ``on_text``), else the JSON value it parses to, or None."""
        if text == "pong":
            self.last_pong_timestamp = time.time()
            self.on_text("pong", text)
            return _PONG
        try:
            return json.loads(text)
        except ValueError:
            return None

    def _bounded_headers(self, app, headers: dict):
        """The app's ``header``: websocket-client calls it on the socket thread just before it
        connects, with this attempt's ``WebSocket`` already made, so the timeout set here bounds
        this connection's TCP connect, TLS and upgrade alone (19). No global default is touched."""
        def header():
            if self.connect_timeout and app.sock is not None:
                app.sock.settimeout(self.connect_timeout)
            return headers
        return header

    def _run_forever(self, app, url: str) -> None:
        """Run ``app`` until its socket closes, never reconnecting: the handshake bounded by
        ``connect_timeout`` (19), TLS verified for ``wss://`` (9, 15), the TCP socket closed after (11)."""
        headers = {"Authorization": self.auth_token, "x-api-key": self.api_key,
                   "x-client-code": self.client_code, "x-feed-token": self.feed_token}
        app.header = self._bounded_headers(app, headers)
        sslopt = None
        if url.startswith("wss://"):
            sslopt = {"cert_reqs": ssl.CERT_REQUIRED if self.verify_tls else ssl.CERT_NONE}
        self._socket = None
        _cut_short.goodbye = False
        try:
            app.run_forever(sslopt=sslopt, ping_interval=self.protocol_ping_interval, reconnect=0)
        finally:
            if self._socket is not None:
                self._socket.shutdown()

    def _opened(self, app) -> bool:
        """The upgrade succeeded: remember the socket and let it wait as websocket-client's default
        says again. False if ``close_connection()`` already cut this connect short: then the
        owner is not told of a connection that is being torn down."""
        with self._open_lock:
            if app is self._aborted_app:
                return False
            self._socket = app.sock
        app.sock.settimeout(websocket.getdefaulttimeout())
        return True

    def _reported_error(self, app, error):
        """What to tell the owner about ``error``: None for a normal close (18) or a connect that
        ``close_connection()`` cut short; a ``ConnectTimeout`` naming the step for a timed-out connect."""
        if _is_normal_close(error):
            return None
        if app is self._aborted_app:
            _cut_short.goodbye = True
            return None
        if self._socket is None and self.connect_timeout:
            if isinstance(error, websocket.WebSocketTimeoutException):   # reading or writing the upgrade
                return ConnectTimeout(f"handshake timed out after {self.connect_timeout:g} s")
            if isinstance(error, TimeoutError):                          # the TCP connect or TLS
                return ConnectTimeout(f"connect timed out after {self.connect_timeout:g} s")
        return error

    def _begin_close(self, app) -> None:
        """Close the connection, or cut short a connect in progress. Safe to call again and again."""
        if app is None:
            return
        app.keep_running = False
        with self._open_lock:     # against _opened: a connection is either cut short or told of
            sock = app.sock
            if sock is None or sock is self._close_sent:
                return            # no socket yet, or the close frame is out: the socket thread reads the reply
            if not sock.connected:
                if sock is not self._socket:
                    # Still connecting: there is nothing to close politely, and the blocked upgrade
                    # read would wait out connect_timeout. Waking it ends the attempt now. During
                    # the TCP connect there is no socket to wake yet; the owner calls again (19).
                    self._aborted_app = app
                    _abort_if_open(sock)
                return
            self._close_sent = sock
        try:
            sock.send_close()
        except Exception as exc:
            log.debug("close frame not sent: %s", exc)
        # A server that never answers must not keep the socket thread: wake its read. The timer holds
        # the plain socket only, not the client (and through it a closed trader) for those 2 s.
        timer = threading.Timer(2.0, _shut, args=(getattr(sock, "sock", None),))
        timer.daemon = True
        timer.start()


# --------------------------------------------------------------------------- the market-data client
class KitWebSocketV2(_ClosesCleanly, SmartWebSocketV2):
    """The SDK's ``SmartWebSocketV2`` with its defects contained.

    Events are plain callables set by the owner (``kit.feed.live.SmartFeed``):

    - ``on_tick(tick)``              every binary packet, decoded and stamped on receipt
    - ``on_text(kind, payload)``     ``"pong"``, ``"error"`` (a parsed JSON error frame) or ``"unknown"``
    - ``on_malformed(frame, exc)``   a frame that is no SmartAPI packet (counted, skipped)
    - ``on_connect(resubscribed)``   the socket opened; ``resubscribed`` after a reconnect
    - ``on_disconnect(code, reason)`` the socket closed, cleanly or not
    - ``on_socket_error(exc)``       an error websocket-client reported

    ``parser="fast"`` decodes with ``kit.angel.wire.parse_tick`` (one precompiled
    struct per mode); ``parser="sdk"`` uses the SDK's own ``_parse_binary_data``.
    ``read_ahead`` buffers socket reads (see the module docstring).
    """

    def __init__(self, url: str, auth_token: str, api_key: str, client_code: str, feed_token: str, *,
                 parser: str = "fast", verify_tls: bool = True, protocol_ping_interval: float = 0,
                 read_ahead: bool = True, connect_timeout: float | None = 10.0):
        # 2: SmartWebSocketV2.__init__ would create logs/ and reconfigure logzero.
        self.ROOT_URI = url
        self.auth_token, self.api_key = auth_token, api_key
        self.client_code, self.feed_token = client_code, feed_token
        self.DISCONNECT_FLAG = True
        self.last_pong_timestamp = None
        self.MAX_RETRY_ATTEMPT = 0
        self.current_retry_attempt = 0
        self.RESUBSCRIBE_FLAG = False
        self.input_request_dict = {}   # 4: per instance, not per class
        self.wsapp = None
        self._open_lock = threading.Lock()
        if not self._sanity_check():
            raise ValueError("SmartWebSocketV2 needs auth token, API key, client code and feed token")
        register_secret(auth_token, api_key, feed_token)
        if parser not in ("fast", "sdk"):
            raise ValueError("parser must be 'fast' or 'sdk'")
        self.parser = parser
        # chosen once, not compared on every frame
        self._decode = wire.parse_tick if parser == "fast" else self._decode_with_sdk
        self.verify_tls = verify_tls
        self.protocol_ping_interval = protocol_ping_interval
        self.read_ahead = read_ahead
        self.connect_timeout = connect_timeout
        self.on_tick = self.on_text = self.on_malformed = None
        self.on_connect = self.on_disconnect = self.on_socket_error = None

    def use_credentials(self, auth_token: str, feed_token: str) -> None:
        """Present these tokens from the next connect on (a renewed session's)."""
        register_secret(auth_token, feed_token)
        self.auth_token, self.feed_token = auth_token, feed_token

    # ---- 4: subscriptions
    def subscribe(self, correlation_id, mode, token_list):
        token_list = copy.deepcopy(token_list)
        super().subscribe(correlation_id, mode, token_list)
        for exchange_type, tokens in self.input_request_dict[mode].items():
            tokens[:] = list(dict.fromkeys(tokens))  # the SDK appends duplicates

    def unsubscribe(self, correlation_id, mode, token_list):
        subscribed = self.input_request_dict.get(mode, {})
        for entry in token_list:
            gone = set(entry["tokens"])
            kept = [t for t in subscribed.get(entry["exchangeType"], []) if t not in gone]
            if kept:
                subscribed[entry["exchangeType"]] = kept
            else:
                subscribed.pop(entry["exchangeType"], None)
        if not subscribed:
            self.input_request_dict.pop(mode, None)
        self.wsapp.send(json.dumps({"correlationID": correlation_id, "action": self.UNSUBSCRIBE_ACTION,
                                    "params": {"mode": mode, "tokenList": copy.deepcopy(token_list)}}))

    def subscriptions(self) -> dict:
        """{mode: {exchange_type: [tokens]}} as currently requested (a copy)."""
        return copy.deepcopy(self.input_request_dict)

    def has_subscriptions(self) -> bool:
        """True if any token is on record (sent, or to be restored when the socket opens)."""
        return bool(self.input_request_dict)

    # ---- 5, 6, 9: connection lifecycle, owned by kit.angel.stream
    def connect(self):
        """Connect and block, dispatching frames, until the socket closes. Never reconnects.

        Whatever is on record from earlier connections is subscribed again once the socket opens.
        """
        self.RESUBSCRIBE_FLAG = bool(self.input_request_dict)
        app_class = _ReadAheadApp if self.read_ahead and _ReadAheadApp else websocket.WebSocketApp
        self.wsapp = app_class(
            self.ROOT_URI, on_open=self._on_open, on_error=self._on_error,
            on_close=self._on_close, on_data=self._on_data, on_ping=self._on_ping, on_pong=self._on_pong)
        self.DISCONNECT_FLAG = False
        self._run_forever(self.wsapp, self.ROOT_URI)

    def close_connection(self):
        """Close for good: keeps the subscriptions on record so a later connect restores them."""
        self.DISCONNECT_FLAG = True
        self._begin_close(self.wsapp)

    def _on_open(self, wsapp):
        if not self._opened(wsapp):
            return
        resubscribed = bool(self.RESUBSCRIBE_FLAG and self.input_request_dict)
        try:
            if resubscribed:
                self.resubscribe()  # the SDK's own, now that its state is sound
            if self.on_connect:
                self.on_connect(resubscribed)
        except (OSError, websocket.WebSocketConnectionClosedException) as exc:
            # Closed under us while subscribing (a stop right after start): the close is reported
            # by on_close; websocket-client would log this one as an ERROR "from callback".
            log.debug("socket closed while subscribing: %s", exc)

    def _on_error(self, wsapp, error):
        # 5: report only. websocket-client ends run_forever after a fatal error by itself.
        error = self._reported_error(wsapp, error)    # 18, 19
        if self.on_socket_error and error is not None:
            self.on_socket_error(error)

    def _on_close(self, wsapp, close_status_code=None, close_msg=None):
        # 6: websocket-client 1.x passes (ws, code, reason).
        self.RESUBSCRIBE_FLAG = bool(self.input_request_dict)
        if self.on_disconnect:
            self.on_disconnect(close_status_code, close_msg)

    # ---- 7: every frame, binary and text; the hot path
    @staticmethod
    def _decode_with_sdk(data, recv_ns):
        return wire.tick_from_sdk_dict(sdk_parse_binary(data), recv_ns)

    def _on_data(self, wsapp, data, data_type, continue_flag):
        recv_ns = perf_counter_ns()
        if data_type == 2:
            try:
                tick = self._decode(data, recv_ns)
            except Exception as exc:
                self.on_malformed(data, exc)
                return
            self.on_tick(tick)
        elif data_type == 1:
            payload = self._text_payload(data)
            if payload is _PONG:
                return
            if isinstance(payload, dict) and "errorCode" in payload:
                self.on_text("error", payload)
            else:
                self.on_text("unknown", data)


# --------------------------------------------------------------------------- the order-update client
class KitOrderUpdateSocket(_ClosesCleanly, SmartWebSocketOrderUpdate):
    """The SDK's ``SmartWebSocketOrderUpdate`` with defects 10–14 contained.

    Events are plain callables set by the owner (``kit.angel.order_updates.OrderUpdateStream``):

    - ``on_update(message)``          a parsed JSON frame (``{"order-status": "AB05", "orderData": {...}, ...}``)
    - ``on_text(kind, payload)``      ``"pong"`` or ``"unknown"`` (a frame that is not a JSON object)
    - ``on_connect()``                the socket opened
    - ``on_disconnect(code, reason)`` the socket closed, cleanly or not
    - ``on_socket_error(exc)``        an error websocket-client reported (a 401 is a ``WebSocketBadStatusException``)

        sock = KitOrderUpdateSocket(url, "Bearer <jwt>", api_key, client_code, feed_token)
        sock.on_update = print
        sock.connect()            # blocks until the socket closes; never reconnects by itself
    """

    def __init__(self, url: str, auth_token: str, api_key: str, client_code: str, feed_token: str, *,
                 verify_tls: bool = True, protocol_ping_interval: float = 0,
                 connect_timeout: float | None = 10.0):
        # 16: SmartWebSocketOrderUpdate.__init__ would create logs/ and reconfigure logzero.
        self.WEBSOCKET_URI = url
        self.auth_token, self.api_key = auth_token, api_key
        self.client_code, self.feed_token = client_code, feed_token
        self.verify_tls = verify_tls
        self.protocol_ping_interval = protocol_ping_interval
        self.connect_timeout = connect_timeout
        self.wsapp = None
        self._open_lock = threading.Lock()
        self.last_pong_timestamp = None
        self.current_retry_attempt = 0          # 13: per instance (and unused)
        register_secret(auth_token, auth_token.removeprefix("Bearer ").strip(), api_key, feed_token)
        self.on_update = self.on_text = None
        self.on_connect = self.on_disconnect = self.on_socket_error = None

    def use_credentials(self, auth_token: str, feed_token: str) -> None:
        """Present these tokens from the next connect on (a renewed session's)."""
        register_secret(auth_token, auth_token.removeprefix("Bearer ").strip(), feed_token)
        self.auth_token, self.feed_token = auth_token, feed_token

    # ---- 10, 11, 13: connection lifecycle, owned by kit.angel.stream
    def connect(self):
        """Connect and block, dispatching frames, until the socket closes. Never reconnects."""
        self.wsapp = websocket.WebSocketApp(
            self.WEBSOCKET_URI, on_open=self.on_open, on_error=self.on_error,
            on_close=self.on_close, on_data=self.on_data, on_ping=self.on_ping, on_pong=self.on_pong)
        self._run_forever(self.wsapp, self.WEBSOCKET_URI)

    def close_connection(self):
        """Start the close handshake; the socket thread reads the reply and ``connect()`` returns."""
        self._begin_close(self.wsapp)

    def retry_connect(self):
        """11: never sleep and recurse on the socket thread; the owner reconnects."""
        log.debug("order-update socket: the SDK's retry_connect was called and ignored")

    def on_open(self, wsapp):
        if not self._opened(wsapp):
            return
        if self.on_connect:
            self.on_connect()

    def on_error(self, wsapp, error):
        error = self._reported_error(wsapp, error)    # 18, 19
        if self.on_socket_error and error is not None:
            self.on_socket_error(error)

    def on_close(self, wsapp, close_status_code=None, close_msg=None):
        # 12: report only; the SDK called retry_connect() here.
        if self.on_disconnect:
            self.on_disconnect(close_status_code, close_msg)

    def on_ping(self, wsapp, data):
        pass

    def on_pong(self, wsapp, data):
        # 14: a protocol pong is a heartbeat, not an order update.
        self.last_pong_timestamp = time.time()

    # ---- 12, 14: every frame
    def on_data(self, wsapp, message, data_type, continue_flag):
        if isinstance(message, bytes):
            try:
                message = message.decode("utf-8")
            except UnicodeDecodeError:
                self.on_text("unknown", message)
                return
        payload = self._text_payload(message)
        if payload is _PONG:
            return
        if isinstance(payload, dict):
            self.on_update(payload)
        else:
            self.on_text("unknown", message)

    def on_message(self, wsapp, message):  # pragma: no cover - the on_data above never calls it
        self.on_data(wsapp, message, 1, False)


def _abort_if_open(sock) -> None:
    """Shut a websocket-client socket down for reading and writing, which wakes a blocked select()."""
    _shut(getattr(sock, "sock", None))


def _shut(raw) -> None:
    """Shut a plain socket down for reading and writing (None: nothing to wake)."""
    if raw is not None:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass   # already closed: nothing to wake
