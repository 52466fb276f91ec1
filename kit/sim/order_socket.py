"""The simulated ``smart-order-update`` socket: a threaded WebSocket server on 127.0.0.1.

Auth by ``Authorization: Bearer <jwt>`` (checked by the owner's
``check_token``), at most ``MAX_CONNECTIONS`` per client code, text
``ping`` / ``pong``, an AB00 greeting on connect, then every order update the
simulated exchange makes, as a text JSON frame, in the order it was made.
"""
from __future__ import annotations

import json
import queue
import socket
import threading
from http import HTTPStatus

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

ORDER_UPDATE_PATH = "/smart-order-update"
MAX_CONNECTIONS = 3    # order-update connections per client code

# Order-update status codes (Angel One's "order-status").
AB_CONNECTED, AB_OPEN, AB_CANCELLED, AB_REJECTED, AB_MODIFIED, AB_COMPLETE = (
    "AB00", "AB01", "AB02", "AB03", "AB04", "AB05")
AB_TRIGGER_PENDING = "AB10"    # a stop-loss order waiting for its trigger price


class OrderUpdateServer:
    """``smart-order-update`` on 127.0.0.1: auth by ``Authorization: Bearer <jwt>``, text ping/pong,
    an AB00 message on connect, then every order update as a text JSON frame.

    A threaded ``websockets`` server: each connection has a thread, and one
    sender thread writes updates in the order they were made.
    """

    def __init__(self, check_token, *, user_id: str = "", port: int = 0, max_connections: int = MAX_CONNECTIONS):
        self._check_token = check_token
        self.user_id = user_id
        self.port = port
        self.max_connections = max_connections
        self._server = None
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._clients: set = set()
        self._clients_lock = threading.Lock()
        self.stats = {"connections_total": 0, "rejected_handshakes": 0, "pings": 0, "sent": 0}

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{ORDER_UPDATE_PATH}"

    @property
    def connections(self) -> int:
        with self._clients_lock:
            return len(self._clients)

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = serve(self._handle, "127.0.0.1", self.port, process_request=self._process_request,
                             compression=None, ping_interval=None, close_timeout=1)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="kit-sim-order-updates",
                                        daemon=True)
        self._thread.start()
        self._sender = threading.Thread(target=self._send_loop, name="kit-sim-order-sender", daemon=True)
        self._sender.start()

    def stop(self) -> None:
        """Close every connection (1001), abort those that do not answer, stop listening."""
        if self._server is None:
            return
        with self._clients_lock:
            clients = list(self._clients)
        for ws in clients:
            ws.close(1001, "server stopping")    # waits close_timeout at most
        self.drop_connections()                   # whoever did not complete the close
        # shutdown() waits for every handler thread; a client that never closes its TCP
        # connection must not hang the simulator, so it is bounded.
        stopper = threading.Thread(target=self._server.shutdown, name="kit-sim-order-stop", daemon=True)
        stopper.start()
        stopper.join(5)
        self._outbox.put(None)
        for t in (self._thread, self._sender):
            t.join(5)
        self._server = self._thread = self._sender = None

    def broadcast(self, message: dict) -> None:
        """Queue ``message`` for every connected client; never blocks."""
        self._outbox.put((None, json.dumps(message)))

    def drop_connections(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients), set()
        for ws in clients:
            try:
                ws.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _process_request(self, connection, request):
        problem = None
        if request.path.split("?")[0] != ORDER_UPDATE_PATH:
            problem = HTTPStatus.NOT_FOUND, f"no such endpoint {request.path}"
        else:
            problem = self._check_token(request.headers)
        if problem is None and self.connections >= self.max_connections:
            problem = HTTPStatus.TOO_MANY_REQUESTS, "Too many connections for this client code"
        if problem is None:
            return None
        self.stats["rejected_handshakes"] += 1
        return connection.respond(problem[0], problem[1] + "\n")

    def _handle(self, ws) -> None:
        with self._clients_lock:
            self._clients.add(ws)
        self.stats["connections_total"] += 1
        empty = {k: "" for k in ("variety", "ordertype", "ordertag", "producttype", "duration", "tradingsymbol",
                                 "transactiontype", "exchange", "symboltoken", "instrumenttype", "optiontype",
                                 "expirydate", "filledshares", "unfilledshares", "orderid", "text", "status",
                                 "orderstatus", "updatetime", "exchtime", "exchorderupdatetime", "fillid",
                                 "filltime", "parentorderid")}
        empty.update(price=0.0, triggerprice=0.0, quantity="0", disclosedquantity="0", squareoff=0.0,
                     stoploss=0.0, trailingstoploss=0.0, strikeprice=0.0, lotsize="0", cancelsize="0",
                     averageprice=0.0)
        # Through the sender, so the greeting comes before any update sent to this connection.
        self._outbox.put((ws, json.dumps({"user-id": self.user_id, "status-code": "200", "order-status": AB_CONNECTED,
                                          "error-message": "", "orderData": empty})))
        try:
            for message in ws:
                if message == "ping":
                    self.stats["pings"] += 1
                    ws.send("pong")
        except ConnectionClosed:
            pass
        except OSError:
            pass     # aborted by drop_connections
        finally:
            with self._clients_lock:
                self._clients.discard(ws)

    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            target, frame = item
            if target is None:
                with self._clients_lock:
                    targets = list(self._clients)
            else:
                targets = [target]
            for ws in targets:
                try:
                    ws.send(frame)
                    self.stats["sent"] += 1
                except (ConnectionClosed, OSError):
                    pass   # gone: its handler forgets it
