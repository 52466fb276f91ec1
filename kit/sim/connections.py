"""The simulated market-data server's connections and what each has subscribed.

One ``Connections`` serves every socket on the simulator's loop thread: it
refuses a handshake without the simulator's credentials (HTTP 401) and one
beyond ``max_connections`` per client code (HTTP 429, Angel One allows 3), answers
text ``ping``, applies subscribe / unsubscribe requests under the
per-connection limit (E1001 / E1002 error frames otherwise), and keeps, per
instrument, who is subscribed in which mode. A connection holds one
subscription per (exchange type, token), in the mode it last asked for;
unsubscribing drops the token whatever mode the request names. ``active``
lists the instruments with at least one subscriber: the ones that tick.
"""
from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from kit.sim.market import Market, SimInstrument
from kit.sim.protocol import (INVALID_REQUEST, SUBSCRIBE, SUBSCRIPTION_LIMIT, SimCredentials, error_frame,
                              handshake_problem, parse_request)
from kit.sim.sender import Sender


class Connection:
    """One accepted socket and its subscriptions: (exchange type, token) -> mode."""
    __slots__ = ("ws", "subs")

    def __init__(self, ws: ServerConnection):
        self.ws = ws
        self.subs: dict[tuple[int, str], int] = {}


class Connections:
    """Every open connection and every subscription. Loop-thread only."""

    def __init__(self, market: Market, sender: Sender, counters: dict, credentials: SimCredentials, *,
                 max_subscriptions: int, max_connections: int = 3, tokens=None, on_subscribed=lambda: None):
        self.market = market
        self.credentials = credentials
        self.tokens = tokens                      # kit.sim.tokens.SessionTokens: which JWTs are accepted
        self.max_connections = max_connections
        self.sender = sender
        self.max_subscriptions = max_subscriptions
        self.on_subscribed = on_subscribed        # the ticker wakes: there may be more to tick
        self.clients: set[Connection] = set()
        self.subscribers: dict[tuple[int, str], dict[Connection, int]] = {}
        self.active: list[SimInstrument] = []      # instruments with at least one subscriber
        self._counters = counters

    # ------------------------------------------------------------------ one connection
    def check_handshake(self, connection: ServerConnection, request):
        """The server's ``process_request``: HTTP 401 for a handshake without the right credentials,
        429 beyond ``max_connections`` (every client here has the one client code)."""
        status, problem = HTTPStatus.UNAUTHORIZED, handshake_problem(request.headers, self.credentials, self.tokens)
        if problem is None and len(self.clients) >= self.max_connections:
            status, problem = HTTPStatus.TOO_MANY_REQUESTS, "Connection limit exceeded"
        if problem is None:
            return None
        self._counters["rejected_handshakes"] += 1
        response = connection.respond(status, problem + "\n")
        response.headers["x-error-message"] = problem
        return response

    async def handle(self, ws: ServerConnection) -> None:
        """The server's connection handler: messages in, until the connection closes."""
        client = Connection(ws)
        self.clients.add(client)
        self._counters["connections_total"] += 1
        try:
            async for message in ws:
                self.on_message(client, message)
        except ConnectionClosed:
            pass   # an aborted connection is ordinary here
        finally:
            self.forget(client)

    def on_message(self, client: Connection, message: str | bytes) -> None:
        if message == "ping":
            self._counters["pings"] += 1
            self.sender.send(client, "pong")
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
        parsed = parse_request(request)
        if parsed is None:
            self._send_error(client, correlation, INVALID_REQUEST)
            return
        action, mode, keys = parsed
        if action == SUBSCRIBE:
            if not self.subscribe(client, mode, keys):
                self._send_error(client, correlation, SUBSCRIPTION_LIMIT)
        else:
            for key in keys:
                if client.subs.pop(key, None) is not None:
                    self._remove_subscriber(key, client)

    def _send_error(self, client: Connection, correlation: str, error: tuple[str, str]) -> None:
        self._counters["error_frames_sent"] += 1
        self.sender.send(client, error_frame(correlation, error))

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, client: Connection, mode: int, keys: list[tuple[int, str]]) -> bool:
        """Subscribe what fits under the limit; False if some tokens did not fit."""
        fitted = True
        for key in dict.fromkeys(keys):
            if key not in client.subs and len(client.subs) >= self.max_subscriptions:
                fitted = False
                continue
            subscribers = self.subscribers.get(key)
            if subscribers is None:
                subscribers = self.subscribers[key] = {}
                self.active.append(self.market.instrument(key))
            client.subs[key] = subscribers[client] = mode
        self.on_subscribed()
        return fitted

    def _remove_subscriber(self, key: tuple[int, str], client: Connection) -> None:
        subscribers = self.subscribers[key]
        del subscribers[client]
        if not subscribers:
            del self.subscribers[key]
            self.active.remove(self.market.instruments[key])

    def forget(self, client: Connection) -> None:
        """Drop a connection and its subscriptions (it closed, or is being closed)."""
        for key in client.subs:
            self._remove_subscriber(key, client)
        client.subs.clear()
        self.clients.discard(client)

    def subscription_count(self) -> int:
        return sum(len(c.subs) for c in self.clients)

    def subscribed_connections(self) -> int:
        return sum(1 for c in self.clients if c.subs)

    # ------------------------------------------------------------------ ending connections
    def drop_all(self, holding: tuple[int, str] | None = None) -> list[tuple[int, str]]:
        """Abort every connection (only the one ``holding`` that instrument, if given) without a close
        handshake; the instruments they held, sorted."""
        held = set()
        for client in list(self.clients):
            if holding is not None and holding not in client.subs:
                continue
            held.update(client.subs)
            # Forget it now, so no tick is written to the aborted transport
            # before websockets notices the connection is lost.
            self.forget(client)
            client.ws.transport.abort()
        return sorted(held)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection with a close handshake."""
        clients = list(self.clients)
        for client in clients:
            self.forget(client)
        await asyncio.gather(*(client.ws.close(code, reason) for client in clients), return_exceptions=True)

    def clear(self) -> None:
        self.clients.clear()
        self.subscribers.clear()
        self.active.clear()
