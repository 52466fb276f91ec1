"""The simulator's order side: SmartConnect's order routes, an exchange that fills, and the order-update socket.

``Simulator`` builds one ``SimulatedExchange`` as ``sim.orders``. It registers
Angel One's order routes on the simulator's REST server, so the real
``SmartConnect`` places, modifies and cancels orders and reads the order book
and positions. It also serves the ``smart-order-update`` WebSocket (its own
port; ``Authorization: Bearer <jwt>``; ``kit.sim.order_socket``) and a small
generated instrument master (``kit.sim.master``). The orders and positions
themselves, and the request checks, are ``kit.sim.orderbook``'s; GTT rules
``kit.sim.gtt``'s (``sim.orders.gtt``); funds, margin, the RMS limits and the
charges estimate ``kit.sim.funds``'s (``sim.orders.rms``).

    sim = Simulator(rate=0, funds=500_000).start()
    sim.orders.url                  # ws://127.0.0.1:<port>/smart-order-update
    sim.orders.master_url           # the instrument master, as a plain GET
    sim.orders.order_book()         # what getOrderBook answers (list of orderData dicts)
    sim.orders.positions()          # what getPosition answers
    sim.orders.gtt.rules()          # what ruleList answers, every status
    sim.orders.rms.limits()         # what getRMS answers
    sim.orders.funds = 200_000      # the account's cash, rupees (also Simulator(funds=...))
    sim.orders.estimate_bias = 0.05 # estimateCharges answers the kit's model + 5 %
    sim.orders.reject_next("RMS:Margin Exceeds")   # the next order is rejected (AB03) with this text
    sim.orders.drop_connections()   # abort the order-update sockets; updates meanwhile are lost
    sim.trade_at(2, "43650", 101.5) # the next tick of a token trades at this price (tests)

How the simulated exchange trades:

* MARKET fills its whole quantity at once at the simulator's current price
  for the token (the price the feed last sent).
* LIMIT that is marketable on arrival (BUY at or above the price, SELL at or
  below) fills at the current price; otherwise it rests and fills at its limit
  when a later tick crosses it. ``fill_chunk`` (units) caps how much one
  tick fills, to produce partial fills.
* Stop-loss (variety STOPLOSS, ordertype STOPLOSS_MARKET or STOPLOSS_LIMIT,
  ``triggerprice``): rejected (AB03, "Trigger price should be above/below the
  last traded price ...") if the current price has already reached the
  trigger (``kit.core.orders.stop_triggered``), or if a STOPLOSS_LIMIT's limit
  is on the wrong side of its trigger. Otherwise it waits, "trigger pending"
  (AB10), until the first tick that reaches the trigger makes it "open" (AB01):
  STOPLOSS_MARKET then fills at that tick's price, STOPLOSS_LIMIT is matched
  like a LIMIT arriving at that price (past its limit it rests, and fills at
  the limit when crossed). A modify may change trigger, limit and quantity and
  switch between the two stop types; a trigger already reached is refused by
  REST (AB4001, same text) and the order stays as it was.
* Brackets (variety ROBO; MARKET or LIMIT; positive ``squareoff`` and
  ``stoploss`` rupee offsets; producttype BO or INTRADAY; ``trailingStopLoss``
  is echoed in the book and otherwise ignored): the entry trades like a NORMAL
  order. Once complete, its exits are placed at ``kit.core.orders.bracket_legs``
  of its average price: the target LIMIT (AB01) and the stop STOPLOSS_MARKET
  (AB10), variety ROBO, ``parentorderid`` the entry's id, ``ordertag`` empty.
  The first to fill completely cancels the other (AB02, "... the other leg of
  bracket <id> filled"); a partial fill does not shrink the other leg.
  Cancelling the entry before it fills cancels it alone (after a partial fill,
  legs are placed for the filled units); cancelling a leg cancels both.
* GTT rules (``kit.sim.gtt``) fire once, when a tick crosses the trigger,
  placing a NORMAL LIMIT order through the same path as a REST place.
* RMS (``kit.sim.funds``): an order whose opening part needs more margin than
  is available is rejected before it trades (AB03, "RMS:Margin Exceeds,
  Required:..., Available:..."); exits always pass; bracket legs and modifies
  are not margin-checked.
* Stops, resting limits and GTT rules are judged after each batch of generated
  ticks at each instrument's price then: one tick per instrument at ordinary
  ticker rates and for ``trade_at``; a ``publish`` burst at the end of a chunk.
  The ticker generates ticks only for subscribed instruments, so an order or
  rule on one nobody subscribes to waits for ``publish`` or ``trade_at``.
* Each step is pushed on the order-update socket as Angel One does:
  AB01 open (also for a partial fill) -> AB05 complete; AB02 cancelled,
  AB03 rejected, AB04 modified, AB10 trigger pending. Updates are sent from
  their own thread, so they may overtake the REST reply, as on the real system.
* A quantity that is not a multiple of the lot size, or a price or trigger off
  the tick grid, is accepted by REST and rejected by the "exchange" (AB03), as
  real RMS rejections are. Malformed requests get a REST error (AB4001 and
  friends, e.g. a stop without a positive trigger, a variety that does not fit
  the order type). A modify or cancel's variety is not checked.
* Rate limits as Angel One's: place / modify / cancel 20/s; order book,
  positions, trade book 1/s; GTT, margin and charges routes 10/s; getRMS
  2/s; over the limit a plain-text HTTP 403.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from datetime import datetime
from http import HTTPStatus

from kit.core.market import EXCHANGE_TYPES, IST, price_divisor
from kit.core.orders import bracket_legs, stop_triggered
from kit.core.strategy import STOP_TYPES
from kit.sim.funds import SimFunds
from kit.sim.gtt import SimGttBook
from kit.sim.master import simulated_master
from kit.sim.order_socket import (AB_CANCELLED, AB_COMPLETE, AB_MODIFIED, AB_OPEN, AB_REJECTED,
                                  AB_TRIGGER_PENDING, OrderUpdateServer)
from kit.sim.orderbook import (TRIGGER_PENDING, SimOrder, SimPosition, crossed, finished, grid_problem,
                               invalid_request, leg_order, now_text, order_problem, stop_problem)
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
    books (orders, positions, GTT rules). Prices are read before the lock is
    taken, because reading a price may itself need the loop thread. Methods
    named ``*_locked`` expect the lock held.

    ``funds`` (rupees, default ₹1 crore) is the account's cash for the margin
    checks; ``estimate_bias`` scales every amount ``estimateCharges`` answers
    by ``1 + estimate_bias`` (``kit.sim.funds``).
    """

    def __init__(self, sim, *, fill_chunk: int | None = None, port: int = 0, funds: float = 10_000_000.0,
                 estimate_bias: float = 0.0):
        self.sim = sim
        self.fill_chunk = fill_chunk
        self.instruments = {(i.exchange_type, i.token): i for i in simulated_master()}
        self._lock = threading.Lock()
        self._orders: dict[str, SimOrder] = {}
        self._resting: dict[tuple[int, str], list[SimOrder]] = {}     # open LIMIT orders waiting to be crossed
        self._pending: dict[tuple[int, str], list[SimOrder]] = {}     # stop-loss orders waiting for the trigger
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
        self.rms = SimFunds(self, funds, estimate_bias)        # getMarginApi, getRMS, estimateCharges
        self.gtt = SimGttBook(self)                             # the GTT routes

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

    @property
    def funds(self) -> float:
        """The account's cash in rupees, what the margin checks and getRMS count from (settable)."""
        return self.rms.funds

    @funds.setter
    def funds(self, rupees: float) -> None:
        self.rms.funds = rupees

    @property
    def estimate_bias(self) -> float:
        """estimateCharges answers the kit's charges model times ``1 + estimate_bias`` (settable)."""
        return self.rms.estimate_bias

    @estimate_bias.setter
    def estimate_bias(self, bias: float) -> None:
        self.rms.estimate_bias = float(bias)

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
                                    "ordertype", "producttype", "duration", "quantity")) or order_problem(p)
        if problem:
            return reply(status=False, message=problem[1], errorcode=problem[0])
        key = (EXCHANGE_TYPES[p["exchange"]], str(p["symboltoken"]))
        instrument = self.instruments.get(key)
        if instrument is not None and instrument.symbol != p["tradingsymbol"]:
            return reply(status=False, message=f"Invalid tradingsymbol {p['tradingsymbol']!r} for "
                                               f"token {key[1]}", errorcode="AB1009")
        price = self._ltp(key)        # before the lock: it may need the simulator's loop thread
        with self._lock:
            order = self.submit_locked(dict(p), price)
        return reply({"script": p["tradingsymbol"], "orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _modify(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "modify"))
        p = req.body
        order, refused = self._named_order(p, ("variety", "orderid", "ordertype", "producttype", "duration",
                                               "quantity", "tradingsymbol", "symboltoken", "exchange"))
        if refused:
            return refused
        ltp = self._ltp(order.key)
        with self._lock:
            if order.terminal:
                return finished(order, "modified")
            qty, kind = int(p["quantity"]), p["ordertype"]
            price, trigger = float(p.get("price") or 0), float(p.get("triggerprice") or 0)
            if qty <= order.filled:
                return reply(status=False, message=f"quantity {qty} is not above the filled {order.filled}",
                             errorcode="AB4003")
            waiting = order.status == TRIGGER_PENDING
            problem = ""
            if (kind in STOP_TYPES) != order.is_stop:
                problem = (f"Invalid ordertype {kind!r}: a {order.order_type} order can be modified "
                           f"{'among the stop-loss types' if order.is_stop else 'as MARKET or LIMIT'} only")
            problem = problem or grid_problem(order.instrument, kind, price, trigger) or \
                (stop_problem(order.side, kind, trigger, price, ltp) if waiting else "")
            if problem:
                return reply(status=False, message=problem, errorcode="AB4001")
            order.qty, order.order_type, order.price = qty, kind, price
            order.trigger = trigger if order.is_stop else 0.0
            order.status, order.updated = "modified", now_text()
            self._push(AB_MODIFIED, order)
            if waiting:
                order.status = TRIGGER_PENDING
            else:
                self._unrest(order)
                order.status = "open"
                self._match_on_arrival(order, ltp)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _cancel(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "cancel"))
        order, refused = self._named_order(req.body, ("variety", "orderid"))
        if refused:
            return refused
        ltp = self._ltp_if_known(order.key)
        with self._lock:
            if order.terminal:
                return finished(order, "cancelled")
            self._cancel_locked(order, "Cancelled by user")
            if order.sibling is not None and not order.sibling.terminal:
                self._cancel_locked(order.sibling, f"Cancelled with the other leg of bracket {order.parent_id}")
            if order.is_bracket_entry and order.filled and ltp is not None:
                self._open_legs(order, ltp)      # the part that filled keeps its exits
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
    def submit_locked(self, params: dict, ltp: float) -> SimOrder:
        """Book a new order at the current price ``ltp``: reject it, hold a stop for its trigger, or match it.
        A REST place and a fired GTT rule both come here."""
        key = (EXCHANGE_TYPES[params["exchange"]], str(params["symboltoken"]))
        order = SimOrder(self._new_id(), params, self.instruments.get(key))
        self._orders[order.order_id] = order
        reason = self._exchange_rejection(order, ltp)
        if reason:
            order.status, order.text = "rejected", reason
            self._push(AB_REJECTED, order)
        elif order.is_stop:
            self._hold(order)
        else:
            self._push(AB_OPEN, order)
            self._match_on_arrival(order, ltp)
        return order

    def open_orders_locked(self) -> list[SimOrder]:
        """Resting and trigger-pending orders, oldest first."""
        waiting = [o for book in (self._resting, self._pending) for orders in book.values() for o in orders]
        return sorted(waiting, key=lambda o: o.order_id)

    def _new_id(self) -> str:
        return f"{datetime.now(IST):%y%m%d}{next(self._ids):09d}"

    def _exchange_rejection(self, order: SimOrder, ltp: float) -> str:
        if self._rejections:
            return self._rejections.popleft()
        inst = order.instrument
        if inst is not None and order.qty % inst.lot_size:
            return f"Quantity should be a multiple of the lot size {inst.lot_size}"
        problem = grid_problem(inst, order.order_type, order.price, order.trigger)
        if not problem and order.is_stop:
            problem = stop_problem(order.side, order.order_type, order.trigger, order.price, ltp)
        return problem or self.rms.rms_rejection_locked(order, ltp if order.order_type == "MARKET" else None)

    def _hold(self, order: SimOrder) -> None:
        """A stop-loss order waits for its trigger."""
        order.status = TRIGGER_PENDING
        self._pending.setdefault(order.key, []).append(order)
        self._push(AB_TRIGGER_PENDING, order)

    def _trigger(self, order: SimOrder, ltp: float) -> None:
        """A stop-loss order's trigger is reached at ``ltp``: it becomes open and trades from that price."""
        _drop(self._pending, order)
        order.status, order.updated = "open", now_text()
        self._push(AB_OPEN, order)
        self._match_on_arrival(order, ltp)

    def _match_on_arrival(self, order: SimOrder, ltp: float) -> None:
        """Fill what is marketable now, at the current price; rest the remainder of a limit order."""
        if order.order_type in ("MARKET", "STOPLOSS_MARKET") or crossed(order, ltp):
            self._fill(order, order.qty - order.filled, ltp, ltp)
        else:
            self._resting.setdefault(order.key, []).append(order)

    def _fill(self, order: SimOrder, qty: int, price: float, ltp: float) -> None:
        fill_id = f"{next(self._fill_ids):08d}"
        order.fill(qty, price, fill_id)
        order.updated = order.fill_time
        group = (order.token, order.params["exchange"], order.params["producttype"])
        position = self._positions.get(group)
        if position is None:
            position = self._positions[group] = SimPosition(order)
        position.add(order.side, qty, price)
        self._trades.append({"exchange": order.params["exchange"], "producttype": order.params["producttype"],
                             "tradingsymbol": order.params["tradingsymbol"], "symboltoken": order.token,
                             "transactiontype": order.side, "fillprice": price, "fillsize": str(qty),
                             "orderid": order.order_id, "fillid": fill_id, "filltime": order.fill_time})
        self._push(AB_COMPLETE if order.status == "complete" else AB_OPEN, order)
        if order.status != "complete":
            return
        if order.is_bracket_entry:
            self._open_legs(order, ltp)
        elif order.sibling is not None and not order.sibling.terminal:
            self._cancel_locked(order.sibling, f"Cancelled: the other leg of bracket {order.parent_id} filled")

    def _open_legs(self, entry: SimOrder, ltp: float) -> None:
        """A bracket's entry filled: place its target (LIMIT) and stop (STOPLOSS_MARKET) for the filled units."""
        p, inst = entry.params, entry.instrument
        legs = bracket_legs(entry.side, entry.filled, entry.avg_price, float(p["squareoff"]), float(p["stoploss"]),
                            inst.tick_size if inst else None)
        target, stop = (leg_order(self._new_id(), entry, leg) for leg in legs)
        for leg in (target, stop):
            self._orders[leg.order_id] = leg
        target.sibling, stop.sibling = stop, target
        self._push(AB_OPEN, target)
        self._hold(stop)
        if stop_triggered(stop.side, stop.trigger, ltp):
            self._trigger(stop, ltp)
        else:
            self._match_on_arrival(target, ltp)

    def _cancel_locked(self, order: SimOrder, text: str) -> None:
        self._unrest(order)
        _drop(self._pending, order)
        order.cancelled_qty = order.qty - order.filled
        order.status, order.text, order.updated = "cancelled", text, now_text()
        self._push(AB_CANCELLED, order)

    def _unrest(self, order: SimOrder) -> None:
        _drop(self._resting, order)

    def on_trades(self, instruments) -> None:
        """Called by the simulator's loop thread after it generated ticks: trigger stops, fill what the
        prices cross, fire GTT rules."""
        if not (self._resting or self._pending or self.gtt.waiting):
            return
        with self._lock:
            for inst in instruments:
                key = inst.key
                if key in self._pending or key in self._resting or self.gtt.watches(key):
                    self._on_price(key, inst.ltp / price_divisor(inst.exchange_type))

    def _on_price(self, key: tuple[int, str], ltp: float) -> None:
        for order in list(self._pending.get(key, ())):
            if order.status == TRIGGER_PENDING and stop_triggered(order.side, order.trigger, ltp):
                self._trigger(order, ltp)
        for order in list(self._resting.get(key, ())):
            if not order.terminal and crossed(order, ltp):
                left = order.qty - order.filled
                self._fill(order, min(left, self.fill_chunk or left), order.price, ltp)
                if order.terminal:
                    self._unrest(order)
        self.gtt.fire_locked(key, ltp)

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


def _drop(book: dict, order: SimOrder) -> None:
    """Take ``order`` off a per-instrument list (resting or trigger-pending), if it is there."""
    orders = book.get(order.key)
    if orders and order in orders:
        orders.remove(order)
        if not orders:
            del book[order.key]
