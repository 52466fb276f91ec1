"""The simulator's order side: SmartConnect's order routes, an exchange that fills, and the order-update socket.

``Simulator`` builds one ``SimulatedExchange`` as ``sim.orders``. It registers
Angel One's order routes on the simulator's REST server, so the real
``SmartConnect`` places, modifies and cancels orders and reads the order book
and positions. It also serves the ``smart-order-update`` WebSocket (its own
port; ``Authorization: Bearer <jwt>``; ``kit.sim.order_socket``) and a small
generated instrument master (``kit.sim.master``). The orders and positions
themselves, and the request checks, are ``kit.sim.orderbook``'s.

    sim = Simulator(rate=0).start()
    sim.orders.url                  # ws://127.0.0.1:<port>/smart-order-update
    sim.orders.master_url           # the instrument master, as a plain GET
    sim.orders.order_book()         # what getOrderBook answers (list of orderData dicts)
    sim.orders.positions()          # what getPosition answers
    sim.orders.reject_next("RMS:Margin Exceeds")   # the next order is rejected (AB03) with this text
    sim.orders.drop_connections()   # abort the order-update sockets; updates meanwhile are lost

How the simulated exchange trades:

* MARKET fills its whole quantity at once at the simulator's current price
  for the token (the price the feed last sent).
* LIMIT that is marketable on arrival (BUY at or above the price, SELL at or
  below) fills at the current price; otherwise it rests and fills at its limit
  when a later tick crosses it. ``fill_chunk`` (units) caps how much one
  tick fills, to produce partial fills.
* Each step is pushed on the order-update socket as Angel One does:
  AB01 open (also for a partial fill) -> AB05 complete; AB02 cancelled,
  AB03 rejected, AB04 modified. Updates are sent from their own thread, so
  they may overtake the REST reply, as on the real system.
* A quantity that is not a multiple of the lot size, or a price off the tick
  grid, is accepted by REST and rejected by the "exchange" (AB03), as real
  RMS rejections are. Malformed requests get a REST error.
* Rate limits as Angel One's: place / modify / cancel 20/s; order book,
  positions, trade book 1/s; over the limit a plain-text HTTP 403.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from datetime import datetime
from http import HTTPStatus

from kit.core.market import EXCHANGE_TYPES, IST
from kit.sim.master import simulated_master
from kit.sim.order_socket import (AB_CANCELLED, AB_COMPLETE, AB_MODIFIED, AB_OPEN, AB_REJECTED,
                                  OrderUpdateServer)
from kit.sim.orderbook import SimOrder, SimPosition, crossed, finished, invalid_request, now_text
from kit.sim.rest import RestRequest, reply
from kit.sim.tokens import AUTH

PLACE_PATH = "/rest/secure/angelbroking/order/v1/placeOrder"
MODIFY_PATH = "/rest/secure/angelbroking/order/v1/modifyOrder"
CANCEL_PATH = "/rest/secure/angelbroking/order/v1/cancelOrder"
ORDER_BOOK_PATH = "/rest/secure/angelbroking/order/v1/getOrderBook"
TRADE_BOOK_PATH = "/rest/secure/angelbroking/order/v1/getTradeBook"
POSITION_PATH = "/rest/secure/angelbroking/order/v1/getPosition"
MASTER_PATH = "/OpenAPI_File/files/OpenAPIScripMaster.json"


class SimulatedExchange:
    """Orders, fills and positions of the simulated account, served over REST and the order-update socket.

    Thread model: REST handlers run on the HTTP server's threads, crossing
    checks on the simulator's loop thread (``on_trades``); one lock guards the
    books. Prices are read before the lock is taken, because reading a price
    may itself need the loop thread.
    """

    def __init__(self, sim, *, fill_chunk: int | None = None, port: int = 0):
        self.sim = sim
        self.fill_chunk = fill_chunk
        self.instruments = {(i.exchange_type, i.token): i for i in simulated_master()}
        self._lock = threading.Lock()
        self._orders: dict[str, SimOrder] = {}
        self._resting: dict[tuple[int, str], list[SimOrder]] = {}
        self._positions: dict[tuple[str, str, str], SimPosition] = {}
        self._trades: list[dict] = []
        self._rejections: deque[str] = deque()
        self._ids = itertools.count(1)
        self._fill_ids = itertools.count(1)
        # (time.monotonic_ns() at arrival, "place" | "modify" | "cancel"): when each order request reached
        # the exchange, so a test can tell whether any arrived after a client said it would stop sending.
        self.arrivals: deque[tuple[int, str]] = deque(maxlen=100_000)
        self.socket = OrderUpdateServer(self._check_token, user_id=sim.rest.credentials.client_code, port=port)
        rest = sim.rest
        rest.route("POST", PLACE_PATH)(self._place)
        rest.route("POST", MODIFY_PATH)(self._modify)
        rest.route("POST", CANCEL_PATH)(self._cancel)
        rest.route("GET", ORDER_BOOK_PATH)(lambda req: reply(self.order_book() or None))
        rest.route("GET", TRADE_BOOK_PATH)(lambda req: reply(self.trade_book() or None))
        rest.route("GET", POSITION_PATH)(lambda req: reply(self.positions() or None))
        rest.route("GET", MASTER_PATH, public=True)(
            lambda req: [i.to_row() for i in self.instruments.values()])
        for path in (PLACE_PATH, MODIFY_PATH, CANCEL_PATH):
            rest.limit(path, 20, 1.0)
        for path in (ORDER_BOOK_PATH, TRADE_BOOK_PATH, POSITION_PATH):
            rest.limit(path, 1, 1.0)

    # ------------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        """The order-update socket, ``ws://127.0.0.1:<port>/smart-order-update``."""
        return self.socket.url

    @property
    def master_url(self) -> str:
        return self.sim.rest.url + MASTER_PATH

    def start(self) -> None:
        self.socket.start()

    def stop(self) -> None:
        self.socket.stop()

    def order_book(self) -> list[dict]:
        with self._lock:
            return [o.data() for o in self._orders.values()]

    def trade_book(self) -> list[dict]:
        with self._lock:
            return [dict(t) for t in self._trades]

    def positions(self) -> list[dict]:
        with self._lock:
            held = list(self._positions.values())
        return [p.data(self._ltp_if_known(p.order.key)) for p in held]

    def reject_next(self, text: str = "RMS:Margin Exceeds") -> None:
        """The next order placed is rejected by the exchange with ``text`` (AB03)."""
        self._rejections.append(text)

    def drop_connections(self) -> None:
        """Abort every order-update connection (no close frame); updates until a reconnect are lost."""
        self.socket.drop_connections()

    # ------------------------------------------------------------------ REST handlers
    def _place(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "place"))
        p = req.body
        problem = invalid_request(p, ("variety", "tradingsymbol", "symboltoken", "transactiontype", "exchange",
                                    "ordertype", "producttype", "duration", "quantity"))
        if problem:
            return reply(status=False, message=problem[1], errorcode=problem[0])
        if p["variety"] != "NORMAL" or p["ordertype"] not in ("MARKET", "LIMIT"):
            return reply(status=False, message="the simulator supports NORMAL MARKET and LIMIT orders only",
                         errorcode="AB1008")
        key = (EXCHANGE_TYPES[p["exchange"]], str(p["symboltoken"]))
        instrument = self.instruments.get(key)
        if instrument is not None and instrument.symbol != p["tradingsymbol"]:
            return reply(status=False, message=f"Invalid tradingsymbol {p['tradingsymbol']!r} for "
                                               f"token {key[1]}", errorcode="AB1009")
        price = self._ltp(key)        # before the lock: it may need the simulator's loop thread
        with self._lock:
            order = SimOrder(f"{datetime.now(IST):%y%m%d}{next(self._ids):09d}", dict(p), instrument)
            self._orders[order.order_id] = order
            reason = self._exchange_rejection(order)
            if reason:
                order.status, order.text = "rejected", reason
                self._push(AB_REJECTED, order)
            else:
                self._push(AB_OPEN, order)
                self._match_on_arrival(order, price)
        return reply({"script": p["tradingsymbol"], "orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _modify(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "modify"))
        p = req.body
        order, refused = self._named_order(p, ("variety", "orderid", "ordertype", "producttype", "duration",
                                               "quantity", "tradingsymbol", "symboltoken", "exchange"))
        if refused:
            return refused
        price = self._ltp(order.key)
        with self._lock:
            if order.terminal:
                return finished(order, "modified")
            qty = int(p["quantity"])
            if qty <= order.filled:
                return reply(status=False, message=f"quantity {qty} is not above the filled {order.filled}",
                             errorcode="AB4003")
            if p["ordertype"] not in ("MARKET", "LIMIT"):
                return reply(status=False, message="the simulator supports MARKET and LIMIT orders only",
                             errorcode="AB1008")
            order.qty, order.order_type = qty, p["ordertype"]
            order.price = float(p.get("price") or 0)
            order.status, order.updated = "modified", now_text()
            self._unrest(order)
            self._push(AB_MODIFIED, order)
            order.status = "open"
            self._match_on_arrival(order, price)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _cancel(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "cancel"))
        order, refused = self._named_order(req.body, ("variety", "orderid"))
        if refused:
            return refused
        with self._lock:
            if order.terminal:
                return finished(order, "cancelled")
            self._unrest(order)
            order.cancelled_qty = order.qty - order.filled
            order.status, order.text, order.updated = "cancelled", "Cancelled by user", now_text()
            self._push(AB_CANCELLED, order)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _named_order(self, p: dict, required: tuple[str, ...]):
        """``(order, None)`` for the order a modify or cancel names, or ``(None, the error reply)``.

        Whether it is still open is judged by the caller, under the lock it changes the order in.
        """
        problem = invalid_request(p, required)
        if problem:
            return None, reply(status=False, message=problem[1], errorcode=problem[0])
        with self._lock:
            order = self._orders.get(str(p["orderid"]))
        if order is None:
            return None, reply(status=False, message="Order not found", errorcode="AB1013")
        return order, None

    # ------------------------------------------------------------------ the exchange (lock held)
    def _exchange_rejection(self, order: SimOrder) -> str:
        if self._rejections:
            return self._rejections.popleft()
        inst = order.instrument
        if inst is None:
            return ""
        if order.qty % inst.lot_size:
            return f"Quantity should be a multiple of the lot size {inst.lot_size}"
        if order.order_type == "LIMIT" and inst.tick_size:
            ticks = order.price / inst.tick_size
            if abs(ticks - round(ticks)) > 1e-6:
                return f"Price {order.price} is not a multiple of the tick size {inst.tick_size}"
        return ""

    def _match_on_arrival(self, order: SimOrder, ltp: float) -> None:
        """Fill what is marketable now, at the current price; rest the remainder of a LIMIT."""
        if order.order_type == "MARKET" or crossed(order, ltp):
            self._fill(order, order.qty - order.filled, ltp)
        else:
            self._resting.setdefault(order.key, []).append(order)

    def _fill(self, order: SimOrder, qty: int, price: float) -> None:
        fill_id = f"{next(self._fill_ids):08d}"
        order.fill(qty, price, fill_id)
        order.updated = order.fill_time
        position = self._positions.get((order.token, order.params["exchange"], order.params["producttype"]))
        if position is None:
            position = self._positions[(order.token, order.params["exchange"], order.params["producttype"])] = \
                SimPosition(order)
        position.add(order.side, qty, price)
        self._trades.append({"exchange": order.params["exchange"], "producttype": order.params["producttype"],
                             "tradingsymbol": order.params["tradingsymbol"], "symboltoken": order.token,
                             "transactiontype": order.side, "fillprice": price, "fillsize": str(qty),
                             "orderid": order.order_id, "fillid": fill_id, "filltime": order.fill_time})
        self._push(AB_COMPLETE if order.status == "complete" else AB_OPEN, order)

    def _unrest(self, order: SimOrder) -> None:
        resting = self._resting.get(order.key)
        if resting and order in resting:
            resting.remove(order)
            if not resting:
                del self._resting[order.key]

    def on_trades(self, instruments) -> None:
        """Called by the simulator's loop thread after it generated ticks: fill what they cross."""
        if not self._resting:
            return
        with self._lock:
            for inst in instruments:
                resting = self._resting.get(inst.key)
                if not resting:
                    continue
                ltp = inst.ltp / (10_000_000.0 if inst.exchange_type == 13 else 100.0)
                for order in list(resting):
                    if crossed(order, ltp):
                        left = order.qty - order.filled
                        self._fill(order, min(left, self.fill_chunk or left), order.price)
                        if order.terminal:
                            self._unrest(order)

    def _push(self, code: str, order: SimOrder) -> None:
        self.socket.broadcast({"user-id": self.sim.rest.credentials.client_code, "status-code": "200",
                               "order-status": code, "error-message": "", "orderData": order.data()})

    # ------------------------------------------------------------------ prices and auth
    def _ltp(self, key: tuple[int, str]) -> float:
        return self.sim.last_price(*key)

    def _ltp_if_known(self, key: tuple[int, str]) -> float | None:
        try:
            return self.sim.last_price(*key)
        except RuntimeError:   # the simulator is stopped
            return None

    def _check_token(self, headers) -> tuple[int, str] | None:
        if not self.sim.rest.tokens.valid(AUTH, headers.get("Authorization", "").removeprefix("Bearer ")):
            return HTTPStatus.UNAUTHORIZED, "Invalid Token"
        return None
