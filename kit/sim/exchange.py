"""The simulator's order side: SmartConnect's order routes, an exchange that fills, and the order-update socket.

``Simulator`` builds one ``SimulatedExchange`` as ``sim.orders``. It registers
Angel One's order routes on the simulator's REST server, so the real
``SmartConnect`` places, modifies and cancels orders and reads the order book
and positions. It also serves the ``smart-order-update`` WebSocket (its own
port; ``Authorization: Bearer <jwt>``; ``kit.sim.order_socket``) and a small
generated instrument master (``kit.sim.master``). The routes are here; what an
accepted order then does, on arrival and on each generated tick, is the
matching engine's (``kit.sim.matching``, ``sim.orders.matching``), which keeps
the books. The orders and positions themselves, and the request checks, are
``kit.sim.orderbook``'s; GTT rules ``kit.sim.gtt``'s (``sim.orders.gtt``);
funds, margin, the RMS limits and the charges estimate ``kit.sim.funds``'s
(``sim.orders.rms``).

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

How the simulated exchange trades (the rules ``kit.sim.matching`` carries out):

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

import time
from collections import deque
from http import HTTPStatus

from kit.core.market import EXCHANGE_TYPES
from kit.core.strategy import STOP_TYPES
from kit.sim.funds import SimFunds
from kit.sim.gtt import SimGttBook
from kit.sim.master import simulated_master
from kit.sim.matching import MatchingEngine
from kit.sim.order_socket import OrderUpdateServer
from kit.sim.orderbook import TRIGGER_PENDING, finished, grid_problem, invalid_request, order_problem, stop_problem
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
    checks on the simulator's loop thread (``on_trades``); one lock
    (``matching.lock``) guards the books (orders, positions, GTT rules).
    Prices are read before the lock is taken, because reading a price may
    itself need the loop thread.

    ``funds`` (rupees, default ₹1 crore) is the account's cash for the margin
    checks; ``estimate_bias`` scales every amount ``estimateCharges`` answers
    by ``1 + estimate_bias`` (``kit.sim.funds``).
    """

    def __init__(self, sim, *, fill_chunk: int | None = None, port: int = 0, funds: float = 10_000_000.0,
                 estimate_bias: float = 0.0):
        self.sim = sim
        self.instruments = {(i.exchange_type, i.token): i for i in simulated_master()}
        self.matching = MatchingEngine(self, fill_chunk=fill_chunk)     # the books, and what moves them
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
        with self.matching.lock:
            return [o.data() for o in self.matching.orders.values()]

    def trade_book(self) -> list[dict]:
        with self.matching.lock:
            return [dict(t) for t in self.matching.trades]

    def positions(self) -> list[dict]:
        with self.matching.lock:
            held = list(self.matching.positions.values())
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

    @property
    def fill_chunk(self) -> int | None:
        """Units one tick fills of a resting order at most (None: all), to produce partial fills (settable)."""
        return self.matching.fill_chunk

    @fill_chunk.setter
    def fill_chunk(self, units: int | None) -> None:
        self.matching.fill_chunk = units

    def reject_next(self, text: str = "RMS:Margin Exceeds") -> None:
        """The next order placed is rejected by the exchange with ``text`` (AB03)."""
        self.matching.rejections.append(text)

    def drop_connections(self) -> None:
        """Abort every order-update connection (no close frame); updates until a reconnect are lost."""
        self.socket.drop_connections()

    def on_trades(self, instruments) -> None:
        """The simulator generated ticks for ``instruments``: the matching engine acts on their prices."""
        self.matching.on_trades(instruments)

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
        with self.matching.lock:
            order = self.matching.submit_locked(dict(p), price)
        return reply({"script": p["tradingsymbol"], "orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _modify(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "modify"))
        p = req.body
        order, refused = self._named_order(p, ("variety", "orderid", "ordertype", "producttype", "duration",
                                               "quantity", "tradingsymbol", "symboltoken", "exchange"))
        if refused:
            return refused
        ltp = self._ltp(order.key)
        with self.matching.lock:
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
            self.matching.modify_locked(order, qty, kind, price, trigger, ltp)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _cancel(self, req: RestRequest):
        self.arrivals.append((time.monotonic_ns(), "cancel"))
        order, refused = self._named_order(req.body, ("variety", "orderid"))
        if refused:
            return refused
        ltp = self._ltp_if_known(order.key)
        with self.matching.lock:
            if order.terminal:
                return finished(order, "cancelled")
            self.matching.cancel_locked(order, ltp)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _named_order(self, p: dict, required: tuple[str, ...]):
        """``(order, None)`` for the order a modify or cancel names, or ``(None, the error reply)``.

        Whether it is still open is judged by the caller, under the lock it changes the order in.
        """
        problem = invalid_request(p, required)
        if problem:
            return None, reply(status=False, message=problem[1], errorcode=problem[0])
        with self.matching.lock:
            order = self.matching.orders.get(str(p["orderid"]))
        if order is None:
            return None, reply(status=False, message="Order not found", errorcode="AB1013")
        return order, None

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

