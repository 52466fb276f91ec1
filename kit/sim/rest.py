"""The simulator's REST side: the SmartConnect endpoints the kit uses, on 127.0.0.1.

The real ``SmartConnect`` client is pointed at it with ``root=rest.url``.
Requests and replies follow Angel One's shapes: JSON ``{"status", "message",
"errorcode", "data"}``; over a rate limit, a plain-text HTTP 403 "Access
denied because of exceeding access rate", as the real API answers.

Routes are registered per feature (``route(method, path)``), so login,
candles and orders each live with the code they serve.

    rest = RestSimulator(RestCredentials()).start()
    client = kit.angel.sdk.smart_connect(rest.credentials.api_key, root=rest.url)
"""
from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp

from kit.core.ratelimit import RateLimiter
from kit.sim.tokens import AUTH, SessionTokens

log = logging.getLogger(__name__)

RATE_LIMIT_TEXT = "Access denied because of exceeding access rate"
LOGIN_PATH = "/rest/auth/angelbroking/user/v1/loginByPassword"
PROFILE_PATH = "/rest/secure/angelbroking/user/v1/getProfile"
LOGOUT_PATH = "/rest/secure/angelbroking/user/v1/logout"
TOKEN_PATH = "/rest/auth/angelbroking/jwt/v1/generateTokens"
INVALID_TOKEN = {"message": "Invalid Token", "errorcode": "AG8001", "status": False, "data": None,
                 "error_type": "TokenException"}


@dataclass(frozen=True)
class RestCredentials:
    """What the simulated account accepts. Fresh random secrets per simulator."""
    client_code: str = "SIM0001"
    api_key: str = field(default_factory=lambda: "simkey-" + secrets.token_hex(8), repr=False)
    pin: str = field(default_factory=lambda: str(1000 + secrets.randbelow(9000)), repr=False)
    totp_secret: str = field(default_factory=pyotp.random_base32, repr=False)
    jwt: str = field(default_factory=lambda: "simjwt." + secrets.token_urlsafe(24), repr=False)
    refresh_token: str = field(default_factory=lambda: "simrefresh." + secrets.token_urlsafe(16), repr=False)
    feed_token: str = field(default_factory=lambda: "simfeed." + secrets.token_urlsafe(16), repr=False)

    def env(self) -> dict:
        """The environment variables ``kit.angel.session.Credentials.from_env`` reads."""
        return {"SMARTAPI_API_KEY": self.api_key, "SMARTAPI_CLIENT_CODE": self.client_code,
                "SMARTAPI_PIN": self.pin, "SMARTAPI_TOTP_SECRET": self.totp_secret}


@dataclass
class RestRequest:
    method: str
    path: str
    headers: dict
    body: dict


def reply(data=None, *, status: bool = True, message: str = "SUCCESS", errorcode: str = "") -> dict:
    return {"status": status, "message": message, "errorcode": errorcode, "data": data}


class RestSimulator:
    """A threaded HTTP server with Angel One's REST shapes. ``start()`` / ``stop()`` are idempotent."""

    def __init__(self, credentials: RestCredentials | None = None, host: str = "127.0.0.1", port: int = 0, *,
                 token_lifetime: float | None = None):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the simulator only listens on loopback")
        self.credentials = c = credentials or RestCredentials()
        # Which tokens are accepted, by REST and both sockets (kit.sim.tokens): a login issues them.
        self.tokens = SessionTokens(c.client_code, c.jwt, c.refresh_token, c.feed_token, lifetime=token_lifetime)
        self.host, self._port = host, port
        self._routes: dict[tuple[str, str], tuple] = {}
        self._limits: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.connections = 0                # TCP connections accepted, over the server's life
        self._connections_lock = threading.Lock()
        self._open: set = set()             # the kept-alive connections: a stop ends them too
        self._thread: threading.Thread | None = None
        self.requests: dict[str, int] = {}
        self.rate_limited: dict[str, int] = {}
        self._down_after: set[str] = set()
        self.route("POST", LOGIN_PATH, secure=False)(self._login)
        self.route("GET", PROFILE_PATH)(self._profile)
        self.route("POST", LOGOUT_PATH)(lambda req: reply("Logout Successfully"))
        self.route("POST", TOKEN_PATH, secure=False)(self._generate_tokens)
        self.limit(LOGIN_PATH, 1, 1.0)

    # ------------------------------------------------------------------ registration
    def route(self, method: str, path: str, *, secure: bool = True, public: bool = False):
        """Register ``handler(RestRequest) -> dict | list | (http_status, dict | list | str)``.

        ``secure`` routes need the session's JWT; ``public`` ones need no API
        key either (a plain GET, like Angel One's instrument master file).
        """
        def register(handler):
            self._routes[(method.upper(), path)] = (handler, secure and not public, public)
            return handler
        return register

    def go_down_after(self, path: str) -> None:
        """Answer the next request to ``path``, then stop listening: every later request is refused.

        A network that fails between two calls, e.g. after the login and
        before ``generateSession``'s own ``getProfile``.
        """
        self._down_after.add(path)

    def limit(self, path: str, count: int, per_seconds: float) -> None:
        """At most ``count`` requests to ``path`` per ``per_seconds`` (sliding window), as Angel One enforces."""
        self._limits[path] = RateLimiter(((count, per_seconds),))

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> "RestSimulator":
        if self._server is not None:
            return self
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with sim._connections_lock:
                    sim.connections += 1        # TCP connections accepted: keep-alive shows here
                    sim._open.add(self.connection)

            def finish(self):
                with sim._connections_lock:
                    sim._open.discard(self.connection)
                super().finish()

            def do_GET(self):
                sim._handle(self, "GET")

            def do_POST(self):
                sim._handle(self, "POST")

            def do_PUT(self):
                sim._handle(self, "PUT")

            def do_DELETE(self):
                sim._handle(self, "DELETE")

            def log_message(self, fmt, *args):  # requests carry secrets in headers: log nothing
                pass

        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kit-sim-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, keep=None) -> None:
        """Stop listening and end every open connection (but ``keep``, a connection still to answer)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._connections_lock:
            ending = [c for c in self._open if c is not keep]
        for connection in ending:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._server = self._thread = None

    # ------------------------------------------------------------------ request handling
    def _rate_limited(self, path: str) -> bool:
        limiter = self._limits.get(path)
        if limiter is None or limiter.try_acquire():
            return False
        with self._lock:
            self.rate_limited[path] = self.rate_limited.get(path, 0) + 1
        return True

    def _handle(self, http, method: str) -> None:
        path = http.path.split("?", 1)[0]
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
        entry = self._routes.get((method, path))
        if entry is None:
            return self._send(http, 404, reply(status=False, message=f"no route {method} {path}", errorcode="AB404"))
        if self._rate_limited(path):
            return self._send(http, 403, RATE_LIMIT_TEXT)
        handler, secure, public = entry
        headers = {k.lower(): v for k, v in http.headers.items()}
        if not public and headers.get("x-privatekey") != self.credentials.api_key:
            return self._send(http, 200, reply(status=False, message="Invalid API Key", errorcode="AG8004"))
        if secure and not self.tokens.valid(AUTH, headers.get("authorization", "").removeprefix("Bearer ")):
            return self._send(http, 403, INVALID_TOKEN)
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body is not a JSON object")
        except ValueError:
            return self._send(http, 400, reply(status=False, message="Invalid request payload", errorcode="AB1004"))
        try:
            result = handler(RestRequest(method, path, headers, body))
        except Exception as exc:
            log.exception("simulator route %s failed", path)
            return self._send(http, 500, reply(status=False, message=str(exc), errorcode="AB5000"))
        status_code, payload = result if isinstance(result, tuple) else (200, result)
        if path in self._down_after:
            self._down_after.discard(path)
            self.stop(keep=http.connection)     # this request's connection stays open for its answer
            http.close_connection = True        # ... and closes after it
        self._send(http, status_code, payload)

    @staticmethod
    def _send(http, status_code: int, payload) -> None:
        if isinstance(payload, str):
            body, ctype = payload.encode(), "text/plain"
        else:
            body, ctype = json.dumps(payload).encode(), "application/json"
        try:
            http.send_response(status_code)
            http.send_header("Content-Type", ctype)
            http.send_header("Content-Length", str(len(body)))
            if http.close_connection:
                http.send_header("Connection", "close")
            http.end_headers()
            http.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up waiting (a timeout): ordinary, nothing to answer

    # ------------------------------------------------------------------ login
    def _login(self, req: RestRequest):
        c, b = self.credentials, req.body
        if b.get("clientcode") != c.client_code:
            return reply(status=False, message="Invalid clientcode", errorcode="AB1007")
        if b.get("password") != c.pin:
            return reply(status=False, message="Invalid PIN", errorcode="AB1050")
        if not pyotp.TOTP(c.totp_secret).verify(str(b.get("totp", "")), valid_window=1):
            return reply(status=False, message="Invalid totp", errorcode="AB1050")
        tokens = self.tokens.login()
        if tokens is None:
            return reply(status=False, message="Invalid totp", errorcode="AB1050")    # tokens.refuse_logins
        return reply(tokens)

    def _generate_tokens(self, req: RestRequest):
        # Only the refresh token counts: renewing is what a client with an expired JWT does.
        tokens = self.tokens.renew(req.body.get("refreshToken"))
        return reply(tokens) if tokens is not None else (403, INVALID_TOKEN)

    def _profile(self, req: RestRequest):
        c = self.credentials
        return reply({"clientcode": c.client_code, "name": "SIMULATED ACCOUNT", "email": "", "mobileno": "",
                      "exchanges": ["NSE", "NFO", "BSE"], "products": ["MARGIN", "INTRADAY", "DELIVERY"],
                      "lastlogintime": "", "broker": ""})
