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
    sim.trade_at(2, "43650", 101.5)          # the token's next tick trades at exactly this price
    sim.pause(); sim.resume()                # a silent feed, connections kept open
    sim.drop_connections()                   # an abrupt network failure
    sim.faults.drop(missed=50)               # ... while the market moves on: a sequence gap
    sim.stop()

``Simulator`` is the thread-safe surface and the server's lifecycle; the parts
run on its loop thread: ``kit.sim.connections`` (sockets, subscriptions, the
limit), ``kit.sim.ticker`` (automatic ticks, floods, shedding a client that
stops reading), ``kit.sim.sender`` (the delay line), ``kit.sim.market`` (the
random walks, seeded per token: a token's sequence number starts at 1 and
survives ``stop()`` / ``start()``), ``kit.sim.protocol`` (handshake and
requests). Beside it: REST (``sim.rest``), orders and order updates
(``sim.orders``) and faults (``sim.faults``).

Decisions worth knowing:

* DEPTH (mode 4) is served with 443-byte 20-level packets on any exchange
  type; offset 27, which the SDK does not read, carries the sequence number.
* Text ``ping`` is answered during ``pause()`` too: a stall silences the
  market data, not the connection.
* ``delay_ms`` delays every frame the server sends (ticks, ``pong``, errors,
  raw frames) by the same amount, keeping their order; ``set_delay`` changes
  it while running, still in order.
* ``stamp_send_ns=True`` (benchmarks only, off by default) puts
  ``time.perf_counter_ns()``, taken just before the tick is encoded and
  written, in the exchange-timestamp field instead of epoch milliseconds.
  ``perf_counter_ns`` is CLOCK_MONOTONIC on Linux, shared by every process on
  the machine, so a client can subtract it from its own clock: wire to signal.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Mapping

from websockets.asyncio.server import serve

from kit.core.market import NSE_CM, price_divisor
from kit.core.tick import MODE_NAMES
from kit.sim.candles import register_candles
from kit.sim.connections import Connections
from kit.sim.exchange import SimulatedExchange
from kit.sim.market import Market
from kit.sim.protocol import PATH, SUBSCRIBE, SimCredentials, token_keys
from kit.sim.rest import RestCredentials, RestSimulator
from kit.sim.sender import Sender
from kit.sim.ticker import Ticker

# The NIFTY index on the cash segment, and a strip of NIFTY option tokens.
DEFAULT_TOKENS: dict[int, list[str]] = {
    NSE_CM: ["99926000"],
    2: [str(t) for t in range(43650, 43660)],
}


class Simulator:
    """A SmartAPI WebSocket V2 server on 127.0.0.1, ticking seeded random walks.

    ``tokens``: ``{exchange type: [token, ...]}``, the instruments it knows up
    front (default ``DEFAULT_TOKENS``); clients may subscribe any other token,
    which then gets a price derived from the seed and the token.
    ``rate``: automatic ticks per second per subscribed token (0: only
    ``publish()``). ``delay_ms``: added before every frame the server sends.
    ``stamp_send_ns``: exchange timestamps carry the send's ``perf_counter_ns``
    (for ``kit.bench``; see the module docstring). ``max_subscriptions`` per
    connection (E1002 beyond) and ``max_connections`` per client code (HTTP 429
    beyond) are Angel One's 1,000 and 3. ``token_lifetime``: the tokens a login
    issues expire after that many seconds (``kit.sim.tokens``; None: never).
    ``funds``: the simulated account's cash in rupees, what its margin checks
    and ``getRMS`` count from; ``estimate_bias``: ``estimateCharges`` answers
    the kit's charges model times ``1 + estimate_bias`` (``kit.sim.funds``).

        with Simulator(rate=0) as sim, connect(sim.url, additional_headers=sim.credentials.headers()) as ws:
            ws.send(json.dumps({"action": 1, "params": {"mode": 1,
                    "tokenList": [{"exchangeType": 2, "tokens": ["43650"]}]}}))
            sim.wait_for_subscribers()
            sim.publish(3)                   # three 51-byte LTP packets arrive on ws
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tokens: Mapping | None = None,
                 rate: float = 2.0, seed: int = 7, delay_ms: float = 0.0,
                 credentials: SimCredentials | None = None, max_subscriptions: int = 1000,
                 max_connections: int = 3, token_lifetime: float | None = None, stamp_send_ns: bool = False,
                 funds: float = 10_000_000.0, estimate_bias: float = 0.0):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the simulator listens on loopback only")
        if rate < 0 or delay_ms < 0:
            raise ValueError("rate and delay_ms must be >= 0")
        self.host, self.port = "127.0.0.1", port
        self.seed = seed
        self.credentials = credentials or SimCredentials()
        c = self.credentials
        # The REST side (login, ...) hands out exactly the tokens this socket accepts.
        # ``token_lifetime``: tokens a login issues expire after it (kit.sim.tokens); None: never.
        self.rest = RestSimulator(RestCredentials(client_code=c.client_code, api_key=c.api_key,
                                                  jwt=c.auth_token, feed_token=c.feed_token),
                                  token_lifetime=token_lifetime)
        register_candles(self.rest, seed=seed)   # getCandleData
        # Order routes on the REST side, the order-update socket, the instrument master.
        self.orders = SimulatedExchange(self, funds=funds, estimate_bias=estimate_bias)
        self.tokens = {int(ex): [str(t) for t in toks]
                       for ex, toks in (DEFAULT_TOKENS if tokens is None else tokens).items()}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control = threading.Lock()   # serialises start() / stop()
        self._faults = None
        # The parts below run on the simulator's own thread (or while it is not running).
        self._counters = dict(connections_total=0, rejected_handshakes=0, sent=0, pings=0,
                              error_frames_sent=0, raw_sent=0, dropped_slow_client=0, skipped=0)
        self._market = Market(seed, token_keys(self.tokens))
        self._sender = Sender(self._counters, delay_ms)
        self._connections = Connections(self._market, self._sender, self._counters, c,
                                        max_subscriptions=max_subscriptions, max_connections=max_connections,
                                        tokens=self.rest.tokens, on_subscribed=lambda: self._ticker.wake())
        self._clients = self._connections.clients
        self._ticker = Ticker(self._connections, self._sender, self._counters, rate=rate,
                              stamp_send_ns=bool(stamp_send_ns), on_trades=self.orders.on_trades)

    # ------------------------------------------------------------------ settings
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def rate(self) -> float:
        """Automatic ticks per second per subscribed token (``set_rate`` changes it)."""
        return self._ticker.rate

    @property
    def delay_ms(self) -> float:
        """Added before every frame the server sends (``set_delay`` changes it)."""
        return self._sender.delay_ms

    @property
    def max_subscriptions(self) -> int:
        """Subscriptions one connection may hold; beyond, E1002."""
        return self._connections.max_subscriptions

    @max_subscriptions.setter
    def max_subscriptions(self, n: int) -> None:
        self._connections.max_subscriptions = n

    @property
    def max_connections(self) -> int:
        """Market-data connections the client code may hold at once; beyond, the upgrade gets HTTP 429."""
        return self._connections.max_connections

    @max_connections.setter
    def max_connections(self, n: int) -> None:
        self._connections.max_connections = n

    @property
    def max_client_buffer(self) -> int:
        """Bytes a connection's write buffer may hold before ticks for it are shed (``kit.sim.ticker``)."""
        return self._ticker.max_client_buffer

    @max_client_buffer.setter
    def max_client_buffer(self, n: int) -> None:
        self._ticker.max_client_buffer = n

    # ------------------------------------------------------------------ lifecycle
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

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Simulator {self.url} {state} rate={self.rate:g}/s per token>"

    # ------------------------------------------------------------------ ticks
    def publish(self, n_per_token: int, tokens=None) -> None:
        """Send ``n_per_token`` ticks per token, round-robin, as fast as the sockets take them.

        ``tokens``: ``{exchange type: [token, ...]}`` or ``[(exchange type, token), ...]``;
        default: every subscribed token. Returns once all frames are handed to
        the sockets, so it blocks while a subscriber that has stopped reading
        keeps its socket full. Works during ``pause()``: a burst is not a stall.
        """
        keys = None if tokens is None else token_keys(tokens)
        self._call(self._publish(n_per_token, keys))

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._apply(self._set_ticker, "rate", float(rate))

    def pause(self) -> None:
        """Stall: no automatic ticks from now on, connections stay open and answer pings."""
        self._apply(self._set_ticker, "paused", True)

    def resume(self) -> None:
        self._apply(self._set_ticker, "paused", False)

    def skip(self, n: int, tokens=None) -> None:
        """Advance ``n`` ticks per token (default: every subscribed one) without sending them."""
        keys = None if tokens is None else token_keys(tokens)
        self._apply(self._skip, n, keys)

    def trade_at(self, exchange_type: int, token: str, price: float) -> None:
        """Generate the token's next tick at ``price`` rupees (on its tick grid), as if the market traded
        there: it is sent to the token's subscribers like any tick, and the simulated exchange triggers,
        fills and fires what that price reaches. The random walk goes on from it. For tests that need an
        exact price path (``rate=0``, so nothing else moves the price)."""
        self._apply(self._trade_at, (int(exchange_type), str(token)), float(price))

    def last_price(self, exchange_type: int, token: str) -> float:
        """The token's current price in rupees: what its latest tick carried (its opening price before any)."""
        key = (int(exchange_type), str(token))
        inst = self._market.instruments.get(key) or self._apply(self._market.instrument, key)
        return inst.ltp / price_divisor(exchange_type)

    # ------------------------------------------------------------------ connections and frames
    def send_raw(self, frame: bytes | str) -> None:
        """Send ``frame`` as is (binary for bytes, text for str) to every connected client."""
        self.send_frames((frame,))

    def send_frames(self, frames) -> None:
        """``send_raw`` for many frames at once, in order (one crossing into the loop thread)."""
        if self.running:
            self._call(self._sender.send_raw(self._clients, list(frames)))

    def set_delay(self, delay_ms: float) -> None:
        """Change ``delay_ms`` while running; frames already delayed keep their place in the order."""
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        self._apply(setattr, self._sender, "delay_ms", float(delay_ms))

    def drop_connections(self, missed: int = 0, *, holding=None) -> None:
        """Abort every client's TCP connection without a close handshake; keep listening.

        ``missed``: the market moves on meanwhile: each instrument the clients
        held advances that many ticks nobody receives (a sequence gap).
        ``holding``: ``(exchange type, token)``: only the connection subscribed to it.
        """
        if self.running:
            self._apply(self._drop_connections, missed, None if holding is None else token_keys([holding])[0])

    def close_connections(self, code: int = 1000, reason: str = "") -> None:
        """Close every client's connection with a close handshake (``code``); keep listening."""
        if self.running:
            self._call(self._connections.close_all(code, reason))

    @property
    def faults(self):
        """Fault injection for this simulator (see ``kit.sim.faults.Faults``)."""
        if self._faults is None:
            from kit.sim.faults import Faults
            self._faults = Faults(self)
        return self._faults

    # ------------------------------------------------------------------ observing
    @property
    def stats(self) -> dict:
        """Counters. ``sent`` / ``sent_by_token`` count tick frames written to sockets
        (a tick sent to two clients counts twice); ``last_seq`` is per generated tick."""
        return self._apply(self._snapshot) if self.running else self._snapshot()

    def wait_for_subscribers(self, n: int = 1, timeout: float = 5.0) -> None:
        """Block until at least ``n`` connections hold a subscription; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            have = self._apply(self._connections.subscribed_connections)
            if have >= n:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{have} of {n} subscribers after {timeout} s")
            time.sleep(0.005)

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
        self._loop = loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._sender.open(loop)
        self._ticker.open()
        try:
            server = await serve(
                self._connections.handle, self.host, self.port, process_request=self._connections.check_handshake,
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
        tasks = [asyncio.create_task(self._ticker.run()), asyncio.create_task(self._sender.run())]
        started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            server.close()
            await server.wait_closed()
            self._connections.clear()

    def _instruments_of(self, keys):
        return list(self._connections.active) if keys is None else [self._market.instrument(k) for k in keys]

    async def _publish(self, n_per_token: int, keys) -> None:
        await self._ticker.publish(n_per_token, self._instruments_of(keys))

    def _skip(self, n: int, keys) -> None:
        self._counters["skipped"] += self._market.skip(n, self._instruments_of(keys), time.time_ns() // 1_000_000)

    def _trade_at(self, key: tuple[int, str], price: float) -> None:
        inst = self._market.instrument(key)
        tick = inst.tick_size
        step, inst.step = inst.step, 0        # the tick's move: none, from the price set here
        inst.ltp = max(tick, round(price * price_divisor(key[0]) / tick) * tick)
        try:
            self._ticker.emit([inst])
        finally:
            inst.step = step

    def _drop_connections(self, missed: int, holding) -> None:
        held = self._connections.drop_all(holding)
        if missed:
            self._skip(missed, held)

    def _set_ticker(self, name: str, value) -> None:
        setattr(self._ticker, name, value)
        self._ticker.wake()

    def _snapshot(self) -> dict:
        return dict(
            self._counters,
            connections=len(self._clients),
            subscriptions=self._connections.subscription_count(),
            sent_by_token=dict(self._ticker.sent_by_token),
            last_seq=self._market.last_seq(),
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
