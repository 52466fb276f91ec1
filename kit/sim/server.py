"""The embedded exchange simulator: a local SmartAPI WebSocket V2 server.

It speaks the protocol the real ``smart-stream`` endpoint speaks (handshake
headers, JSON subscribe / unsubscribe, text ``ping`` / ``pong``, binary
LTP / QUOTE / SNAP_QUOTE / DEPTH packets, E1001 / E1002 error frames), so any
client that works against Angel One works against it unchanged. It listens on
127.0.0.1 only and runs in its own daemon thread with its own asyncio loop, so
it can be started from a notebook cell (whose loop is busy in the main
thread), from a script, or with ``python -m kit sim``.

    from kit.sim.server import Simulator
    sim = Simulator(rate=5).start()          # ws://127.0.0.1:<port>/smart-stream
    sim.credentials.headers()                # the four handshake headers it expects
    sim.publish(1000)                        # a burst: 1000 ticks per subscribed token
    sim.pause(); sim.resume()                # a silent feed, connections kept open
    sim.drop_connections()                   # an abrupt network failure
    sim.faults.drop(missed=50)               # ... while the market moves on: a sequence gap
    sim.stop()

Decisions worth knowing:

* Ticks are generated only for tokens that have at least one subscriber, so a
  subscriber sees contiguous sequence numbers from its first tick on. Each
  token's sequence number starts at 1 and survives ``stop()`` / ``start()``.
* A connection holds one subscription per (exchange type, token), in the mode
  it last asked for; the limit counts those. Unsubscribing drops the token
  whatever mode the request names.
* DEPTH (mode 4) is served with 443-byte 20-level packets on any exchange
  type; offset 27, which the SDK does not read, carries the sequence number.
* Text ``ping`` is answered during ``pause()`` too: a stall silences the
  market data, not the connection.
* ``delay_ms`` delays every frame the server sends (ticks, ``pong``, errors,
  raw frames) by the same amount, keeping their order; ``set_delay`` changes
  it while running, still in order.
* A client that stops reading does not make the server buffer without bound:
  while its write buffer holds more than ``max_client_buffer`` bytes, ticks
  for it are dropped and counted (``stats["dropped_slow_client"]``), as a
  feed server sheds a slow consumer. ``publish()`` waits for room instead, so
  it never drops.
* Faults for tests and soak runs (``kit.sim.faults``): ``sim.faults``.
* ``stamp_send_ns=True`` (benchmarks only, off by default) puts
  ``time.perf_counter_ns()``, taken just before the tick is encoded and
  written, in the exchange-timestamp field instead of epoch milliseconds.
  ``perf_counter_ns`` is CLOCK_MONOTONIC on Linux, shared by every process on
  the machine, so a client can subtract it from its own clock: wire to signal.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import json
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from kit.sim.candles import register_candles
from kit.sim.exchange import SimulatedExchange
from kit.sim.rest import RestCredentials, RestSimulator
from kit.core.market import BSE_CM, CDE_FO, FEED_EXCHANGE_NAMES, NSE_CM, price_divisor
from kit.core.tick import DEPTH, LTP, MODE_NAMES, QUOTE, SNAP_QUOTE
from kit.angel.wire import DEPTH_HEAD, DEPTH_SIDE, encode_ltp, encode_quote, encode_snap_quote, encode_token

PATH = "/smart-stream"

# The NIFTY index on the cash segment, and a strip of NIFTY option tokens.
DEFAULT_TOKENS: dict[int, list[str]] = {
    NSE_CM: ["99926000"],
    2: [str(t) for t in range(43650, 43660)],
}

SUBSCRIBE, UNSUBSCRIBE = 1, 0
INVALID_REQUEST = ("E1001", "Invalid Request Payload.")
SUBSCRIPTION_LIMIT = ("E1002", "Subscription limit exceeded")

# Index levels the defaults should look like; other index tokens get a random level.
_INDEX_LEVELS = {(NSE_CM, "99926000"): 24_000.0, (NSE_CM, "99926009"): 52_000.0}
# Half-width of one tick's uniform price move, as a fraction of the opening price.
_MOVE = {"index": 0.00005, "cash": 0.0002, "derivative": 0.001, "currency": 0.0001}
# A flood is written in chunks of about this many ticks, awaiting the sockets between chunks.
_FLOOD_CHUNK = 1024
# The ticker sleeps at least this long, so very high rates are sent in batches per wake-up.
_MIN_SLEEP = 0.001


# --------------------------------------------------------------------------- credentials
def _fake_jwt(claims: dict) -> str:
    """A string shaped like a JWT (three base64url parts); nothing verifies its signature."""
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    header = part(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(b'kit-simulator-signature')}"


@dataclass(frozen=True)
class SimCredentials:
    """What a client must present in the handshake. Fixed defaults, so a
    simulator in another process (``python -m kit sim``) is reachable with them too."""
    auth_token: str = _fake_jwt({"sub": "SIM0001", "iss": "kit-simulator", "token": "auth"})
    api_key: str = "sim-api-key"
    client_code: str = "SIM0001"
    feed_token: str = _fake_jwt({"sub": "SIM0001", "iss": "kit-simulator", "token": "feed"})

    def headers(self) -> dict[str, str]:
        """The handshake headers, exactly as SmartWebSocketV2 sends them (the JWT raw)."""
        return {"Authorization": self.auth_token, "x-api-key": self.api_key,
                "x-client-code": self.client_code, "x-feed-token": self.feed_token}


# --------------------------------------------------------------------------- price model
def _kind(exchange_type: int, token: str) -> str:
    if exchange_type == CDE_FO:
        return "currency"
    if exchange_type in (NSE_CM, BSE_CM):
        return "index" if token.startswith("999") else "cash"
    return "derivative"


def _opening_rupees(rng: random.Random, kind: str, key: tuple[int, str]) -> float:
    if kind == "index":
        return _INDEX_LEVELS.get(key, rng.uniform(10_000, 60_000)) * rng.uniform(0.99, 1.01)
    if kind == "cash":
        return rng.uniform(100, 3_000)
    if kind == "currency":
        return rng.uniform(80, 90)
    return rng.uniform(20, 400)   # option premia


class _Instrument:
    """One token's market: a seeded random walk plus the running day's quote fields.

    Prices are wire units (paise; 1e-7 rupee for currency derivatives), always
    a multiple of the tick size and never below one tick. The walk and traded
    quantities come from ``rng`` alone, so a token's price path depends only on
    the seed, not on who subscribed in which mode; order-book details come from
    a second generator, ``book``.
    """
    __slots__ = ("key", "exchange_type", "token", "rng", "book", "tick_size", "step", "lot",
                 "seq", "exchange_ts", "ltp", "ltq", "volume", "turnover", "open", "high", "low",
                 "close", "open_interest", "upper", "lower", "high_52w", "low_52w")

    def __init__(self, seed: int, exchange_type: int, token: str):
        encode_token(token)   # fail early on a token the wire cannot carry
        self.key = (exchange_type, token)
        self.exchange_type, self.token = exchange_type, token
        self.rng = rng = random.Random(f"{seed}:{exchange_type}:{token}")
        self.book = random.Random(f"{seed}:{exchange_type}:{token}:book")
        kind = _kind(exchange_type, token)
        unit = price_divisor(exchange_type)
        self.tick_size = 25_000 if exchange_type == CDE_FO else 5   # ₹0.0025 / ₹0.05
        self.close = self._on_tick_grid(_opening_rupees(rng, kind, self.key) * unit)
        self.step = max(1, round(self.close * _MOVE[kind] / self.tick_size))
        self.lot = 1 if kind in ("index", "cash") else 65
        self.seq = 0
        self.exchange_ts = 0
        self.ltp = self.open = self.high = self.low = self._on_tick_grid(self.close * rng.uniform(0.995, 1.005))
        self.ltq = self.volume = self.turnover = 0
        self.open_interest = rng.randint(1_000, 50_000) * self.lot if kind in ("derivative", "currency") else 0
        self.upper = self._on_tick_grid(self.close * 1.2)
        self.lower = self._on_tick_grid(self.close * 0.8)
        self.high_52w = self._on_tick_grid(self.close * rng.uniform(1.05, 1.5))
        self.low_52w = self._on_tick_grid(self.close * rng.uniform(0.5, 0.95))

    def _on_tick_grid(self, price: float) -> int:
        return max(self.tick_size, round(price / self.tick_size) * self.tick_size)

    def advance(self, now_ms: int) -> None:
        """One trade: the next sequence number, a price move, a traded quantity."""
        rng, step, tick = self.rng, self.step, self.tick_size
        ltp = self.ltp + (int(rng.random() * (2 * step + 1)) - step) * tick
        if ltp < tick:
            ltp = tick
        self.ltp = ltp
        if ltp > self.high:
            self.high = ltp
        elif ltp < self.low:
            self.low = ltp
        self.ltq = ltq = (1 + int(rng.random() * 20)) * self.lot
        self.volume += ltq
        self.turnover += ltq * ltp
        self.seq += 1
        self.exchange_ts = now_ms

    def encode(self, mode: int) -> bytes:
        """The current tick as a packet of ``mode``."""
        if mode == LTP:
            return encode_ltp(self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp)
        if mode == QUOTE:
            return encode_quote(self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp,
                                **self._quote_fields())
        if mode == SNAP_QUOTE:
            bid = self._best_bid()
            self.open_interest = max(0, self.open_interest + self.book.randint(-5, 5) * self.lot)
            return encode_snap_quote(
                self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp,
                **self._quote_fields(),
                # Last traded time in epoch seconds, as users report the feed sends it (unverified).
                ltt=self.exchange_ts // 1000, oi=self.open_interest,
                oi_change=0,   # documented as a dummy field
                best_five=[(1, q, p, o) for q, p, o in self._levels(5, bid, -1)]
                + [(0, q, p, o) for q, p, o in self._levels(5, bid + self.tick_size, +1)],
                upper=self.upper, lower=self.lower,
                high_52w=max(self.high_52w, self.high), low_52w=min(self.low_52w, self.low))
        if mode == DEPTH:
            bid = self._best_bid()
            return encode_depth(self.exchange_type, self.token, self.seq, self.exchange_ts,
                                self._levels(20, bid, -1), self._levels(20, bid + self.tick_size, +1))
        raise ValueError(f"unknown mode {mode}")

    def _quote_fields(self) -> dict:
        resting = self.volume // 4 + 10 * self.lot
        return dict(ltq=self.ltq, avg=self.turnover // self.volume if self.volume else self.ltp,
                    volume=self.volume,
                    buy_qty=round(resting * self.book.uniform(0.5, 1.5)),
                    sell_qty=round(resting * self.book.uniform(0.5, 1.5)),
                    open_=self.open, high=self.high, low=self.low, close=self.close)

    def _best_bid(self) -> int:
        """The touch is one tick wide and straddles the LTP: the last trade hit the bid or lifted the ask."""
        return self.ltp - self.tick_size if self.book.random() < 0.5 else self.ltp

    def _levels(self, n: int, best: int, side: int) -> list[tuple[int, int, int]]:
        """``n`` (qty, price, orders) levels from ``best`` outwards: down for bids (side -1), up for asks.

        A level that would fall below one tick is empty (all zeros), as on the real feed.
        """
        book, tick = self.book, self.tick_size
        levels = []
        for i in range(n):
            price = best + side * i * tick
            if price < tick:
                levels.append((0, 0, 0))
                continue
            orders = book.randint(1, 25)
            levels.append((orders * book.randint(1, 8) * self.lot, price, orders))
        return levels


def encode_depth(exchange_type: int, token: str, seq: int, exchange_ts: int,
                 bids: list[tuple[int, int, int]], asks: list[tuple[int, int, int]]) -> bytes:
    """A 443-byte DEPTH packet; ``bids`` / ``asks``: twenty (qty, price, orders) each."""
    return (DEPTH_HEAD.pack(DEPTH, exchange_type, encode_token(token), seq, exchange_ts)
            + DEPTH_SIDE.pack(*(v for level in bids for v in level))
            + DEPTH_SIDE.pack(*(v for level in asks for v in level)))


# --------------------------------------------------------------------------- requests
def _valid_token(token) -> bool:
    return isinstance(token, str) and 0 < len(token) <= 24 and token.isascii() and "\0" not in token


def _parse_request(request) -> tuple[int, int, list[tuple[int, str]]] | None:
    """``(action, mode, [(exchange type, token), ...])`` of a well-formed request, else None."""
    if not isinstance(request, dict):
        return None
    action, params = request.get("action"), request.get("params")
    if type(action) is not int or action not in (SUBSCRIBE, UNSUBSCRIBE) or not isinstance(params, dict):
        return None
    mode, token_list = params.get("mode"), params.get("tokenList")
    if type(mode) is not int or mode not in MODE_NAMES or not isinstance(token_list, list) or not token_list:
        return None
    keys = []
    for entry in token_list:
        if not isinstance(entry, dict):
            return None
        exchange_type, tokens = entry.get("exchangeType"), entry.get("tokens")
        if type(exchange_type) is not int or exchange_type not in FEED_EXCHANGE_NAMES or not isinstance(tokens, list):
            return None
        for token in tokens:
            if not _valid_token(token):
                return None
            keys.append((exchange_type, token))
    return action, mode, keys


def _token_keys(tokens) -> list[tuple[int, str]]:
    """``{exchange type: [token, ...]}`` or ``[(exchange type, token), ...]`` as a key list."""
    if isinstance(tokens, Mapping):
        return [(int(ex), str(t)) for ex, toks in tokens.items() for t in toks]
    return [(int(ex), str(t)) for ex, t in tokens]


class _Client:
    """One accepted connection and its subscriptions: (exchange type, token) -> mode."""
    __slots__ = ("ws", "subs")

    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.subs: dict[tuple[int, str], int] = {}


# --------------------------------------------------------------------------- the server
class Simulator:
    """A SmartAPI WebSocket V2 server on 127.0.0.1, ticking seeded random walks.

    ``tokens``: ``{exchange type: [token, ...]}``, the instruments it knows up
    front (default ``DEFAULT_TOKENS``); clients may subscribe any other token,
    which then gets a price derived from the seed and the token.
    ``rate``: automatic ticks per second per subscribed token (0: only
    ``publish()``). ``delay_ms``: added before every frame the server sends.
    ``stamp_send_ns``: exchange timestamps carry the send's ``perf_counter_ns``
    (for ``kit.bench``; see the module docstring).

        with Simulator(rate=0) as sim, connect(sim.url, additional_headers=sim.credentials.headers()) as ws:
            ws.send(json.dumps({"action": 1, "params": {"mode": 1,
                    "tokenList": [{"exchangeType": 2, "tokens": ["43650"]}]}}))
            sim.wait_for_subscribers()
            sim.publish(3)                   # three 51-byte LTP packets arrive on ws
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tokens: Mapping | None = None,
                 rate: float = 2.0, seed: int = 7, delay_ms: float = 0.0,
                 credentials: SimCredentials | None = None, max_subscriptions: int = 1000,
                 stamp_send_ns: bool = False):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the simulator listens on loopback only")
        if rate < 0 or delay_ms < 0:
            raise ValueError("rate and delay_ms must be >= 0")
        self.host, self.port = "127.0.0.1", port
        self.seed = seed
        self.rate = float(rate)
        self.delay_ms = float(delay_ms)
        self.stamp_send_ns = bool(stamp_send_ns)
        self.credentials = credentials or SimCredentials()
        c = self.credentials
        # The REST side (login, ...) hands out exactly the tokens this socket accepts.
        self.rest = RestSimulator(RestCredentials(client_code=c.client_code, api_key=c.api_key,
                                                  jwt=c.auth_token, feed_token=c.feed_token))
        register_candles(self.rest, seed=seed)   # getCandleData (kit/simulator_candles.py)
        # Order routes on the REST side, the order-update socket, the instrument master.
        self.orders = SimulatedExchange(self)
        self.max_subscriptions = max_subscriptions
        self.tokens = {int(ex): [str(t) for t in toks]
                       for ex, toks in (DEFAULT_TOKENS if tokens is None else tokens).items()}
        self._instruments = {key: _Instrument(seed, *key) for key in _token_keys(self.tokens)}
        self._paused = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control = threading.Lock()   # serialises start() / stop()
        # Loop-thread state below: touched only from the simulator's own thread
        # (or while it is not running).
        self._clients: set[_Client] = set()
        self._subscribers: dict[tuple[int, str], dict[_Client, int]] = {}
        self._active: list[_Instrument] = []   # instruments with at least one subscriber
        self._delay_line: deque = deque()       # (due, client, frame) in send order
        self._counters = dict(connections_total=0, rejected_handshakes=0, sent=0, pings=0,
                              error_frames_sent=0, raw_sent=0, dropped_slow_client=0, skipped=0)
        self._sent_by_token: dict[tuple[int, str], int] = {}
        self.max_client_buffer = 4 * 2**20   # bytes; see "A client that stops reading" above

    # ------------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Simulator:
        """Listen (on the same port as last time, after a ``stop()``); return once accepting."""
        with self._control:
            if self._thread is not None:
                return self
            started: concurrent.futures.Future = concurrent.futures.Future()
            thread = threading.Thread(target=lambda: asyncio.run(self._serve(started)),
                                      name="kit-simulator", daemon=True)
            thread.start()
            try:
                started.result(timeout=30)
            except BaseException:
                thread.join(timeout=5)
                raise
            self._thread = thread
            self.rest.start()
            self.orders.start()
            return self

    def stop(self) -> None:
        """Close every connection (code 1001) and the listener; join the thread."""
        with self._control:
            thread, loop = self._thread, self._loop
            if thread is None:
                return
            loop.call_soon_threadsafe(self._stopping.set)
            thread.join(timeout=30)
            self._thread = self._loop = None
            self.rest.stop()
            self.orders.stop()

    def publish(self, n_per_token: int, tokens=None) -> None:
        """Send ``n_per_token`` ticks per token, round-robin, as fast as the sockets take them.

        ``tokens``: ``{exchange type: [token, ...]}`` or ``[(exchange type, token), ...]``;
        default: every subscribed token. Returns once all frames are handed to
        the sockets, so it blocks while a subscriber that has stopped reading
        keeps its socket full. Works during ``pause()``: a burst is not a stall.
        """
        keys = None if tokens is None else _token_keys(tokens)
        self._call(self._publish(n_per_token, keys))

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._apply(self._set_rate, float(rate))

    def pause(self) -> None:
        """Stall: no automatic ticks from now on, connections stay open and answer pings."""
        self._apply(self._set_paused, True)

    def resume(self) -> None:
        self._apply(self._set_paused, False)

    def send_raw(self, frame: bytes | str) -> None:
        """Send ``frame`` as is (binary for bytes, text for str) to every connected client."""
        if self.running:
            self._call(self._send_raw(frame))

    def drop_connections(self, missed: int = 0) -> None:
        """Abort every client's TCP connection without a close handshake; keep listening.

        ``missed``: the market moves on meanwhile: each instrument the clients
        held advances that many ticks nobody receives (a sequence gap).
        """
        if self.running:
            self._apply(self._drop_connections, missed)

    def close_connections(self, code: int = 1000, reason: str = "") -> None:
        """Close every client's connection with a close handshake (``code``); keep listening."""
        if self.running:
            self._call(self._close_connections(code, reason))

    def skip(self, n: int, tokens=None) -> None:
        """Advance ``n`` ticks per token (default: every subscribed one) without sending them."""
        keys = None if tokens is None else _token_keys(tokens)
        self._apply(self._skip, n, keys)

    def send_frames(self, frames) -> None:
        """``send_raw`` for many frames at once, in order (one crossing into the loop thread)."""
        if self.running:
            self._call(self._send_raw(*frames))

    def set_delay(self, delay_ms: float) -> None:
        """Change ``delay_ms`` while running; frames already delayed keep their place in the order."""
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        self._apply(setattr, self, "delay_ms", float(delay_ms))

    @property
    def faults(self):
        """Fault injection for this simulator (see ``kit.sim.faults.Faults``)."""
        from kit.sim.faults import Faults
        if getattr(self, "_faults", None) is None:
            self._faults = Faults(self)
        return self._faults

    def last_price(self, exchange_type: int, token: str) -> float:
        """The token's current price in rupees: what its latest tick carried (its opening price before any)."""
        key = (int(exchange_type), str(token))
        inst = self._instruments.get(key) or self._apply(self._instrument, key)
        return inst.ltp / price_divisor(exchange_type)

    @property
    def stats(self) -> dict:
        """Counters. ``sent`` / ``sent_by_token`` count tick frames written to sockets
        (a tick sent to two clients counts twice); ``last_seq`` is per generated tick."""
        return self._apply(self._snapshot) if self.running else self._snapshot()

    def wait_for_subscribers(self, n: int = 1, timeout: float = 5.0) -> None:
        """Block until at least ``n`` connections hold a subscription; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            have = self._apply(lambda: sum(1 for c in self._clients if c.subs))
            if have >= n:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{have} of {n} subscribers after {timeout} s")
            time.sleep(0.005)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Simulator {self.url} {state} rate={self.rate:g}/s per token>"

    # ------------------------------------------------------------------ crossing into the loop thread
    def _call(self, coro):
        """Run ``coro`` on the simulator's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the simulator is not running: call start() first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking simulator calls cannot be made from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _apply(self, fn, *args):
        """Run ``fn(*args)`` on the loop thread if running (so it is applied when this returns)."""
        if self._loop is None:
            return fn(*args)

        async def call():
            return fn(*args)
        return self._call(call())

    # ------------------------------------------------------------------ loop thread
    async def _serve(self, started: concurrent.futures.Future) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._wake_ticker = asyncio.Event()
        self._wake_delay_line = asyncio.Event()
        self._delay_line_idle = asyncio.Event()
        self._delay_line_idle.set()
        try:
            server = await serve(
                self._handle, self.host, self.port, process_request=self._check_handshake,
                compression=None,
                ping_interval=None,   # the client keeps the connection alive with its own pings
                close_timeout=2,
                write_limit=2**18,    # fewer flow-control pauses during floods
            )
        except BaseException as exc:
            self._loop = None
            started.set_exception(exc)
            return
        self.port = server.sockets[0].getsockname()[1]
        tasks = [asyncio.create_task(self._run_ticker()), asyncio.create_task(self._run_delay_line())]
        started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            server.close()
            await server.wait_closed()
            self._clients.clear()
            self._subscribers.clear()
            self._active.clear()
            self._delay_line.clear()

    def _check_handshake(self, connection: ServerConnection, request):
        headers, creds = request.headers, self.credentials
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            auth = auth[len("Bearer "):]
        problem = None
        if not all(h in headers for h in ("Authorization", "x-api-key", "x-client-code", "x-feed-token")):
            problem = "Missing headers: Authorization, x-api-key, x-client-code and x-feed-token are required"
        elif auth != creds.auth_token:
            problem = "Invalid Authorization token"
        elif headers["x-api-key"] != creds.api_key:
            problem = "Invalid x-api-key"
        elif headers["x-client-code"] != creds.client_code:
            problem = "Invalid x-client-code"
        elif headers["x-feed-token"] != creds.feed_token:
            problem = "Invalid x-feed-token"
        if problem is None:
            return None
        self._counters["rejected_handshakes"] += 1
        response = connection.respond(HTTPStatus.UNAUTHORIZED, problem + "\n")
        response.headers["x-error-message"] = problem
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self._clients.add(client)
        self._counters["connections_total"] += 1
        try:
            async for message in ws:
                self._on_message(client, message)
        except ConnectionClosed:
            pass   # an aborted connection is ordinary here
        finally:
            self._forget(client)

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        if message == "ping":
            self._counters["pings"] += 1
            self._send(client, "pong")
            return
        request = None
        if isinstance(message, str):
            try:
                request = json.loads(message)
            except ValueError:
                pass
        correlation = request.get("correlationID", "") if isinstance(request, dict) else ""
        if not isinstance(correlation, str):
            correlation = ""
        parsed = _parse_request(request)
        if parsed is None:
            self._send_error(client, correlation, INVALID_REQUEST)
            return
        action, mode, keys = parsed
        if action == SUBSCRIBE:
            if not self._subscribe(client, mode, keys):
                self._send_error(client, correlation, SUBSCRIPTION_LIMIT)
        else:
            for key in keys:
                if client.subs.pop(key, None) is not None:
                    self._remove_subscriber(key, client)

    def _send_error(self, client: _Client, correlation: str, error: tuple[str, str]) -> None:
        self._counters["error_frames_sent"] += 1
        self._send(client, json.dumps({"correlationID": correlation, "errorCode": error[0],
                                       "errorMessage": error[1]}))

    def _subscribe(self, client: _Client, mode: int, keys: list[tuple[int, str]]) -> bool:
        """Subscribe what fits under the limit; False if some tokens did not fit."""
        fitted = True
        for key in dict.fromkeys(keys):
            if key not in client.subs and len(client.subs) >= self.max_subscriptions:
                fitted = False
                continue
            subscribers = self._subscribers.get(key)
            if subscribers is None:
                subscribers = self._subscribers[key] = {}
                self._active.append(self._instrument(key))
            client.subs[key] = subscribers[client] = mode
        self._wake_ticker.set()
        return fitted

    def _remove_subscriber(self, key: tuple[int, str], client: _Client) -> None:
        subscribers = self._subscribers[key]
        del subscribers[client]
        if not subscribers:
            del self._subscribers[key]
            self._active.remove(self._instruments[key])

    def _forget(self, client: _Client) -> None:
        for key in client.subs:
            self._remove_subscriber(key, client)
        client.subs.clear()
        self._clients.discard(client)

    def _instrument(self, key: tuple[int, str]) -> _Instrument:
        inst = self._instruments.get(key)
        if inst is None:
            inst = self._instruments[key] = _Instrument(self.seed, *key)
        return inst

    # ------------------------------------------------------------------ generating and sending ticks
    async def _run_ticker(self) -> None:
        """Automatic ticks: ``rate`` per second per subscribed token, round-robin over the tokens.

        Work is owed by elapsed time (``credit``, in ticks), so the rate holds on
        average however late the loop wakes; what one wake-up owes is generated
        and written in one go.
        """
        loop = asyncio.get_running_loop()
        credit, cursor, last = 0.0, 0, loop.time()
        while True:
            active, rate = self._active, self.rate
            if self._paused or rate <= 0 or not active:
                await self._wake_ticker.wait()
                self._wake_ticker.clear()
                credit, last = 0.0, loop.time()
                continue
            now = loop.time()
            per_second = rate * len(active)
            # After a long stall (a blocked notebook, a suspended laptop) make
            # up at most one second of ticks rather than a flood.
            credit = min(credit + (now - last) * per_second, max(per_second, 1.0))
            last = now
            due = int(credit)
            if due:
                credit -= due
                m = len(active)
                self._emit([active[(cursor + i) % m] for i in range(due)])
                cursor = (cursor + due) % m
            try:
                async with asyncio.timeout(max(_MIN_SLEEP, (1.0 - credit) / per_second)):
                    await self._wake_ticker.wait()
            except TimeoutError:
                pass
            self._wake_ticker.clear()

    def _emit(self, instruments: list[_Instrument]) -> None:
        """Generate one tick per entry and write it to every subscriber, in the subscriber's mode.

        Synchronous from generation to write, so ticks from the ticker and from
        a flood never interleave out of sequence on a socket.
        """
        now_ms = time.time_ns() // 1_000_000
        stamp = time.perf_counter_ns if self.stamp_send_ns else None
        send, subscribers_of, sent_by_token = self._send, self._subscribers, self._sent_by_token
        slow = self._slow_clients()
        sent = dropped = 0
        for inst in instruments:
            inst.advance(stamp() if stamp else now_ms)
            subscribers = subscribers_of.get(inst.key)
            if not subscribers:
                continue
            frames = {}
            n = 0
            for client, mode in subscribers.items():
                if slow and client in slow:
                    dropped += 1
                    continue
                frame = frames.get(mode)
                if frame is None:
                    frame = frames[mode] = inst.encode(mode)
                send(client, frame)
                n += 1
            sent += n
            sent_by_token[inst.key] = sent_by_token.get(inst.key, 0) + n
        self._counters["sent"] += sent
        if dropped:
            self._counters["dropped_slow_client"] += dropped

        self.orders.on_trades(instruments)   # resting orders these prices cross fill now

    def _slow_clients(self) -> set:
        """Clients whose write buffer is over ``max_client_buffer``.

        websockets' ``broadcast`` has no backpressure, so without this a client
        that stops reading would grow the server's memory without bound. Only a
        client whose writes are already paused (over websockets' high-water
        mark) has its buffer measured.
        """
        cap = self.max_client_buffer
        return {c for c in self._clients
                if getattr(c.ws, "paused", True) and c.ws.transport is not None
                and c.ws.transport.get_write_buffer_size() > cap}

    def _send(self, client: _Client, frame: bytes | str) -> None:
        """Write one frame now, or put it on the delay line. Never waits."""
        if self.delay_ms or self._delay_line:   # after set_delay(0), what is still delayed goes first
            self._delay_line.append((self._loop.time() + self.delay_ms / 1000, client, frame))
            self._delay_line_idle.clear()
            self._wake_delay_line.set()
        else:
            # broadcast() writes without awaiting, and skips connections that are closing.
            broadcast((client.ws,), frame)

    async def _run_delay_line(self) -> None:
        """Write delayed frames when due. Due times only grow, so the line stays in send order."""
        loop, line = asyncio.get_running_loop(), self._delay_line
        while True:
            if not line:
                self._delay_line_idle.set()
                self._wake_delay_line.clear()
                await self._wake_delay_line.wait()
                continue
            wait = line[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            now = loop.time()
            while line and line[0][0] <= now:
                _, client, frame = line.popleft()
                broadcast((client.ws,), frame)

    async def _flush(self) -> None:
        """Wait until what was sent so far is delayed no more and the sockets have room."""
        await self._delay_line_idle.wait()
        for client in list(self._clients):
            try:
                await client.ws.drain()
            except Exception:
                pass   # the connection is gone; its handler cleans up

    async def _publish(self, n_per_token: int, keys: list[tuple[int, str]] | None) -> None:
        instruments = list(self._active) if keys is None else [self._instrument(k) for k in keys]
        if not instruments or n_per_token <= 0:
            return
        rounds_per_chunk = max(1, _FLOOD_CHUNK // len(instruments))
        done = 0
        while done < n_per_token:
            rounds = min(rounds_per_chunk, n_per_token - done)
            self._emit(instruments * rounds)
            done += rounds
            await self._flush()

    async def _send_raw(self, *frames: bytes | str) -> None:
        for i, frame in enumerate(frames):
            for client in self._clients:
                self._send(client, frame)
                self._counters["raw_sent"] += 1
            if i % _FLOOD_CHUNK == _FLOOD_CHUNK - 1:
                await self._flush()
        await self._flush()

    def _drop_connections(self, missed: int = 0) -> None:
        held = set()
        for client in list(self._clients):
            held.update(client.subs)
            # Forget it now, so no tick is written to the aborted transport
            # before websockets notices the connection is lost.
            self._forget(client)
            client.ws.transport.abort()
        if missed:
            self._skip(missed, sorted(held))

    async def _close_connections(self, code: int, reason: str) -> None:
        clients = list(self._clients)
        for client in clients:
            self._forget(client)
        await asyncio.gather(*(client.ws.close(code, reason) for client in clients), return_exceptions=True)

    def _skip(self, n: int, keys: list[tuple[int, str]] | None) -> None:
        instruments = list(self._active) if keys is None else [self._instrument(k) for k in keys]
        now_ms = time.time_ns() // 1_000_000
        for inst in instruments:
            for _ in range(n):
                inst.advance(now_ms)
        self._counters["skipped"] += n * len(instruments)

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        if self._loop is not None:
            self._wake_ticker.set()

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self._loop is not None:
            self._wake_ticker.set()

    def _snapshot(self) -> dict:
        return dict(
            self._counters,
            connections=len(self._clients),
            subscriptions=sum(len(c.subs) for c in self._clients),
            sent_by_token=dict(self._sent_by_token),
            last_seq={key: inst.seq for key, inst in self._instruments.items() if inst.seq},
        )


# --------------------------------------------------------------------------- python -m kit sim
def _parse_token_spec(spec: str) -> dict[int, list[str]]:
    """``"1:99926000,2:43650-43659"`` -> ``{1: ["99926000"], 2: ["43650", ..., "43659"]}``."""
    tokens: dict[int, list[str]] = {}
    for item in spec.split(","):
        exchange, _, token = item.strip().partition(":")
        if not exchange.isdigit() or not token:
            raise argparse.ArgumentTypeError(f"{item!r} should look like EXCHANGE_TYPE:TOKEN, e.g. 2:43650")
        first, _, last = token.partition("-")
        if last and first.isdigit() and last.isdigit():
            tokens.setdefault(int(exchange), []).extend(str(t) for t in range(int(first), int(last) + 1))
        else:
            tokens.setdefault(int(exchange), []).append(token)
    return tokens


def main(argv: list[str] | None = None) -> int:
    """Run a simulator until Ctrl-C, printing where it is and how to log in.

        python -m kit sim --port 8765 --rate 5 --tokens 1:99926000,2:43650-43659 --mode quote
    """
    modes = {name.lower(): number for number, name in MODE_NAMES.items()}
    parser = argparse.ArgumentParser(prog="python -m kit sim", description=main.__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--rate", type=float, default=2.0, help="ticks per second per subscribed token")
    parser.add_argument("--tokens", type=_parse_token_spec, default=None,
                        help="EXCHANGE_TYPE:TOKEN[-LAST],... (default: NIFTY index and 10 options)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=modes, default="ltp",
                        help="subscription mode of the example request printed at start")
    args = parser.parse_args(argv)

    sim = Simulator(port=args.port, tokens=args.tokens, rate=args.rate, seed=args.seed).start()
    c = sim.credentials
    example = {"correlationID": "kitsim", "action": SUBSCRIBE,
               "params": {"mode": modes[args.mode],
                          "tokenList": [{"exchangeType": ex, "tokens": toks} for ex, toks in sim.tokens.items()]}}
    print(f"SmartAPI WebSocket V2 simulator listening on {sim.url}\n"
          f"  Authorization : {c.auth_token}\n"
          f"  x-api-key     : {c.api_key}\n"
          f"  x-client-code : {c.client_code}\n"
          f"  x-feed-token  : {c.feed_token}\n"
          f"  rate {sim.rate:g} ticks/s per subscribed token, seed {sim.seed}\n"
          f"REST for SmartConnect(root=...): {sim.rest.url}  (login env: "
          f"{' '.join(f'{k}={v}' for k, v in sim.rest.credentials.env().items())})\n"
          f"order updates: {sim.orders.url}  instrument master: {sim.orders.master_url}\n"
          f"subscribe with:\n  {json.dumps(example)}\n"
          f"Ctrl-C stops.", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stats = sim.stats
        sim.stop()
    print(f"\nstopped: {stats['connections_total']} connections, {stats['sent']} tick frames sent, "
          f"{stats['rejected_handshakes']} handshakes rejected")
    return 0
