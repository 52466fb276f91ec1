"""The simulator's order side: SmartConnect's order routes, an exchange that fills, and the order-update socket.

``Simulator`` builds one ``SimulatedExchange`` as ``sim.orders``. It registers
Angel One's order routes on the simulator's REST server, so the real
``SmartConnect`` places, modifies and cancels orders and reads the order book
and positions. It also serves the ``smart-order-update`` WebSocket (its own
port; ``Authorization: Bearer <jwt>``) and a small generated instrument master.

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
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections import deque
from datetime import date, datetime, timedelta
from http import HTTPStatus

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from kit.angel.instruments import Instrument

from kit.core.market import EXCHANGE_TYPES, IST, today_ist
from kit.sim.rest import RestRequest, reply

log = logging.getLogger(__name__)

PLACE_PATH = "/rest/secure/angelbroking/order/v1/placeOrder"
MODIFY_PATH = "/rest/secure/angelbroking/order/v1/modifyOrder"
CANCEL_PATH = "/rest/secure/angelbroking/order/v1/cancelOrder"
ORDER_BOOK_PATH = "/rest/secure/angelbroking/order/v1/getOrderBook"
TRADE_BOOK_PATH = "/rest/secure/angelbroking/order/v1/getTradeBook"
POSITION_PATH = "/rest/secure/angelbroking/order/v1/getPosition"
MASTER_PATH = "/OpenAPI_File/files/OpenAPIScripMaster.json"
ORDER_UPDATE_PATH = "/smart-order-update"

# Order-update status codes (Angel One's "order-status").
AB_CONNECTED, AB_OPEN, AB_CANCELLED, AB_REJECTED, AB_MODIFIED, AB_COMPLETE = (
    "AB00", "AB01", "AB02", "AB03", "AB04", "AB05")

VARIETIES = ("NORMAL", "STOPLOSS", "ROBO")
ORDER_TYPES = ("MARKET", "LIMIT", "STOPLOSS_LIMIT", "STOPLOSS_MARKET")
PRODUCTS = ("DELIVERY", "CARRYFORWARD", "MARGIN", "INTRADAY", "BO")
DURATIONS = ("DAY", "IOC")
MAX_CONNECTIONS = 3    # order-update connections per client code


# --------------------------------------------------------------------------- the generated master
def _weekday_on_or_after(day: date, weekday: int) -> date:
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def simulated_master(today: date | None = None) -> list[Instrument]:
    """A small instrument master consistent with the simulator's default tokens.

    99926000 is the NIFTY index; 43650–43654 are NIFTY calls and 43655–43659
    puts at 23,900–24,100 expiring on the nearest Tuesday (the weekly
    expiry), lot 65, tick ₹0.05. 43660–43669 are the same strikes a week
    later, 43700 the month's future; BANKNIFTY and two shares round it off.
    """
    today = today or today_ist()
    weekly = _weekday_on_or_after(today, 1)      # NIFTY weeklies expire on Tuesdays
    next_week = weekly + timedelta(days=7)
    month_end = (weekly.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    monthly = month_end - timedelta(days=(month_end.weekday() - 1) % 7)
    if monthly < today:
        monthly = next_week
    rows = [
        Instrument("99926000", "Nifty 50", "NIFTY", "NSE", 1, "AMXIDX", None, 0.0, "", 1, 0.0),
        Instrument("99926009", "Nifty Bank", "BANKNIFTY", "NSE", 1, "AMXIDX", None, 0.0, "", 1, 0.0),
        Instrument("3045", "SBIN-EQ", "SBIN", "NSE", 1, "", None, 0.0, "", 1, 0.05),
        Instrument("2885", "RELIANCE-EQ", "RELIANCE", "NSE", 1, "", None, 0.0, "", 1, 0.05),
    ]
    strikes = [23_900, 23_950, 24_000, 24_050, 24_100]
    for first_token, expiry in ((43650, weekly), (43660, next_week)):
        code = expiry.strftime("%d%b%y").upper()
        for side_index, option_type in enumerate(("CE", "PE")):
            for k, strike in enumerate(strikes):
                token = str(first_token + side_index * len(strikes) + k)
                rows.append(Instrument(token, f"NIFTY{code}{strike}{option_type}", "NIFTY", "NFO", 2,
                                       "OPTIDX", expiry, float(strike), option_type, 65, 0.05))
    rows.append(Instrument("43700", f"NIFTY{monthly.strftime('%d%b%y').upper()}FUT", "NIFTY", "NFO", 2,
                           "FUTIDX", monthly, 0.0, "", 65, 0.05))
    code = monthly.strftime("%d%b%y").upper()
    for token, option_type in (("43800", "CE"), ("43801", "PE")):
        rows.append(Instrument(token, f"BANKNIFTY{code}52000{option_type}", "BANKNIFTY", "NFO", 2,
                               "OPTIDX", monthly, 52_000.0, option_type, 30, 0.05))
    return rows


# --------------------------------------------------------------------------- orders and positions
def _finished(order, verb: str):
    """Angel One's refusal to change an order that is already complete, cancelled or rejected."""
    return reply(status=False, message=f"order {order.order_id} is {order.status}; it cannot be {verb}",
                 errorcode="AB4002")


def _now_text() -> str:
    return datetime.now(IST).strftime("%d-%b-%Y %H:%M:%S")


class _SimOrder:
    """One order on the simulated exchange; ``data()`` is its order-book row."""

    def __init__(self, order_id: str, params: dict, instrument: Instrument | None):
        self.order_id = order_id
        self.unique_id = str(uuid.uuid4())
        self.params = params
        self.instrument = instrument
        self.exchange_type = EXCHANGE_TYPES.get(params["exchange"], 0)
        self.token = str(params["symboltoken"])
        self.side = params["transactiontype"]
        self.order_type = params["ordertype"]
        self.qty = int(params["quantity"])
        self.price = float(params.get("price") or 0)
        self.filled = 0
        self.avg_price = 0.0
        self.status = "open"
        self.text = ""
        self.cancelled_qty = 0
        self.updated = _now_text()
        self.fill_id = ""
        self.fill_time = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.exchange_type, self.token)

    @property
    def terminal(self) -> bool:
        return self.status in ("complete", "cancelled", "rejected")

    def fill(self, qty: int, price: float, fill_id: str) -> None:
        self.avg_price = (self.avg_price * self.filled + price * qty) / (self.filled + qty)
        self.filled += qty
        self.fill_id, self.fill_time = fill_id, _now_text()
        self.status = "complete" if self.filled == self.qty else "open"

    def data(self) -> dict:
        p, inst = self.params, self.instrument
        return {
            "variety": p.get("variety", "NORMAL"), "ordertype": self.order_type,
            "producttype": p.get("producttype", ""), "duration": p.get("duration", "DAY"),
            "price": self.price if self.order_type != "MARKET" else 0.0,
            "triggerprice": float(p.get("triggerprice") or 0), "quantity": str(self.qty),
            "disclosedquantity": str(p.get("disclosedquantity") or 0), "squareoff": 0.0, "stoploss": 0.0,
            "trailingstoploss": 0.0, "tradingsymbol": p["tradingsymbol"], "transactiontype": self.side,
            "exchange": p["exchange"], "symboltoken": self.token, "ordertag": p.get("ordertag", ""),
            "instrumenttype": inst.instrument_type if inst else "",
            "strikeprice": inst.strike if inst and inst.strike else -1.0,
            "optiontype": inst.option_type if inst else "",
            "expirydate": inst.expiry.strftime("%d%b%Y").upper() if inst and inst.expiry else "",
            "lotsize": str(inst.lot_size if inst else 1), "cancelsize": str(self.cancelled_qty),
            "averageprice": round(self.avg_price, 4), "filledshares": str(self.filled),
            "unfilledshares": str(self.qty - self.filled), "orderid": self.order_id, "text": self.text,
            "status": self.status, "orderstatus": self.status, "updatetime": self.updated,
            "exchtime": self.updated if self.status != "rejected" else "",
            "exchorderupdatetime": self.updated, "fillid": self.fill_id, "filltime": self.fill_time,
            "parentorderid": "", "uniqueorderid": self.unique_id,
        }


class _SimPosition:
    """Net position of one (token, product): buys and sells, average cost and realised P&L."""

    def __init__(self, order: _SimOrder):
        self.order = order     # the first order: the symbol fields come from it
        self.buy_qty = self.sell_qty = 0
        self.buy_amount = self.sell_amount = 0.0
        self.net = 0
        self.net_price = 0.0
        self.realised = 0.0

    def add(self, side: str, qty: int, price: float) -> None:
        signed = qty if side == "BUY" else -qty
        if side == "BUY":
            self.buy_qty += qty
            self.buy_amount += qty * price
        else:
            self.sell_qty += qty
            self.sell_amount += qty * price
        if self.net == 0 or (self.net > 0) == (signed > 0):
            self.net_price = (self.net_price * abs(self.net) + price * qty) / (abs(self.net) + qty)
        else:
            closed = min(qty, abs(self.net))
            self.realised += (price - self.net_price) * closed * (1 if self.net > 0 else -1)
            if qty > closed:
                self.net_price = price
            elif closed == abs(self.net):
                self.net_price = 0.0
        self.net += signed

    def data(self, ltp: float | None) -> dict:
        o, inst = self.order, self.order.instrument
        unrealised = (ltp - self.net_price) * self.net if self.net and ltp is not None else 0.0

        def avg(amount, qty):
            return f"{amount / qty:.2f}" if qty else "0.00"
        return {
            "exchange": o.params["exchange"], "symboltoken": o.token, "producttype": o.params.get("producttype", ""),
            "tradingsymbol": o.params["tradingsymbol"], "symbolname": inst.name if inst else "",
            "instrumenttype": inst.instrument_type if inst else "", "priceden": "1", "pricenum": "1",
            "genden": "1", "gennum": "1", "precision": "2", "multiplier": "-1",
            "boardlotsize": "1", "buyqty": str(self.buy_qty), "sellqty": str(self.sell_qty),
            "buyamount": f"{self.buy_amount:.2f}", "sellamount": f"{self.sell_amount:.2f}",
            "symbolgroup": "XX", "strikeprice": f"{inst.strike:.2f}" if inst and inst.strike else "-1",
            "optiontype": inst.option_type if inst else "",
            "expirydate": inst.expiry.strftime("%d%b%Y").upper() if inst and inst.expiry else "",
            "lotsize": str(inst.lot_size if inst else 1), "cfbuyqty": "0", "cfsellqty": "0",
            "cfbuyamount": "0.00", "cfsellamount": "0.00",
            "buyavgprice": avg(self.buy_amount, self.buy_qty), "sellavgprice": avg(self.sell_amount, self.sell_qty),
            "avgnetprice": f"{self.net_price:.2f}", "netvalue": f"{self.sell_amount - self.buy_amount:.2f}",
            "netqty": str(self.net), "totalbuyvalue": f"{self.buy_amount:.2f}",
            "totalsellvalue": f"{self.sell_amount:.2f}", "cfbuyavgprice": "0.00", "cfsellavgprice": "0.00",
            "totalbuyavgprice": avg(self.buy_amount, self.buy_qty),
            "totalsellavgprice": avg(self.sell_amount, self.sell_qty), "netprice": f"{self.net_price:.2f}",
            "realised": f"{self.realised:.2f}", "unrealised": f"{unrealised:.2f}",
        }


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
        self._orders: dict[str, _SimOrder] = {}
        self._resting: dict[tuple[int, str], list[_SimOrder]] = {}
        self._positions: dict[tuple[str, str, str], _SimPosition] = {}
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
        problem = self._invalid(p, ("variety", "tradingsymbol", "symboltoken", "transactiontype", "exchange",
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
            order = _SimOrder(f"{datetime.now(IST):%y%m%d}{next(self._ids):09d}", dict(p), instrument)
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
                return _finished(order, "modified")
            qty = int(p["quantity"])
            if qty <= order.filled:
                return reply(status=False, message=f"quantity {qty} is not above the filled {order.filled}",
                             errorcode="AB4003")
            if p["ordertype"] not in ("MARKET", "LIMIT"):
                return reply(status=False, message="the simulator supports MARKET and LIMIT orders only",
                             errorcode="AB1008")
            order.qty, order.order_type = qty, p["ordertype"]
            order.price = float(p.get("price") or 0)
            order.status, order.updated = "modified", _now_text()
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
                return _finished(order, "cancelled")
            self._unrest(order)
            order.cancelled_qty = order.qty - order.filled
            order.status, order.text, order.updated = "cancelled", "Cancelled by user", _now_text()
            self._push(AB_CANCELLED, order)
        return reply({"orderid": order.order_id, "uniqueorderid": order.unique_id})

    def _named_order(self, p: dict, required: tuple[str, ...]):
        """``(order, None)`` for the order a modify or cancel names, or ``(None, the error reply)``.

        Whether it is still open is judged by the caller, under the lock it changes the order in.
        """
        problem = self._invalid(p, required)
        if problem:
            return None, reply(status=False, message=problem[1], errorcode=problem[0])
        with self._lock:
            order = self._orders.get(str(p["orderid"]))
        if order is None:
            return None, reply(status=False, message="Order not found", errorcode="AB1013")
        return order, None

    @staticmethod
    def _invalid(p: dict, required: tuple[str, ...]) -> tuple[str, str] | None:
        missing = [f for f in required if p.get(f) in (None, "")]
        if missing:
            return "AB4001", f"Invalid request: missing {', '.join(missing)}"
        if "variety" in p and p["variety"] not in VARIETIES:
            return "AB1008", f"Invalid variety {p['variety']!r}"
        if "exchange" in p and p["exchange"] not in EXCHANGE_TYPES:
            return "AB4001", f"Invalid exchange {p['exchange']!r}"
        if "transactiontype" in p and p["transactiontype"] not in ("BUY", "SELL"):
            return "AB4001", f"Invalid transactiontype {p['transactiontype']!r}"
        if "ordertype" in p and p["ordertype"] not in ORDER_TYPES:
            return "AB4001", f"Invalid ordertype {p['ordertype']!r}"
        if "producttype" in p and p["producttype"] not in PRODUCTS:
            return "AB1012", f"Invalid producttype {p['producttype']!r}"
        if "duration" in p and p["duration"] not in DURATIONS:
            return "AB4001", f"Invalid duration {p['duration']!r}"
        if "quantity" in p:
            try:
                if int(p["quantity"]) <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                return "AB4001", f"Invalid quantity {p['quantity']!r}"
        if p.get("ordertype") == "LIMIT":
            try:
                if float(p.get("price") or 0) <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                return "AB4001", f"Invalid price {p.get('price')!r} for a LIMIT order"
        if len(str(p.get("ordertag", ""))) >= 20:
            return "AB4001", "ordertag must be shorter than 20 characters"
        return None

    # ------------------------------------------------------------------ the exchange (lock held)
    def _exchange_rejection(self, order: _SimOrder) -> str:
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

    def _match_on_arrival(self, order: _SimOrder, ltp: float) -> None:
        """Fill what is marketable now, at the current price; rest the remainder of a LIMIT."""
        if order.order_type == "MARKET" or _crossed(order, ltp):
            self._fill(order, order.qty - order.filled, ltp)
        else:
            self._resting.setdefault(order.key, []).append(order)

    def _fill(self, order: _SimOrder, qty: int, price: float) -> None:
        fill_id = f"{next(self._fill_ids):08d}"
        order.fill(qty, price, fill_id)
        order.updated = order.fill_time
        position = self._positions.get((order.token, order.params["exchange"], order.params["producttype"]))
        if position is None:
            position = self._positions[(order.token, order.params["exchange"], order.params["producttype"])] = \
                _SimPosition(order)
        position.add(order.side, qty, price)
        self._trades.append({"exchange": order.params["exchange"], "producttype": order.params["producttype"],
                             "tradingsymbol": order.params["tradingsymbol"], "symboltoken": order.token,
                             "transactiontype": order.side, "fillprice": price, "fillsize": str(qty),
                             "orderid": order.order_id, "fillid": fill_id, "filltime": order.fill_time})
        self._push(AB_COMPLETE if order.status == "complete" else AB_OPEN, order)

    def _unrest(self, order: _SimOrder) -> None:
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
                    if _crossed(order, ltp):
                        left = order.qty - order.filled
                        self._fill(order, min(left, self.fill_chunk or left), order.price)
                        if order.terminal:
                            self._unrest(order)

    def _push(self, code: str, order: _SimOrder) -> None:
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
        if headers.get("Authorization", "") != f"Bearer {self.sim.rest.credentials.jwt}":
            return HTTPStatus.UNAUTHORIZED, "Invalid Token"
        return None


def _crossed(order: _SimOrder, ltp: float) -> bool:
    return ltp <= order.price if order.side == "BUY" else ltp >= order.price


# --------------------------------------------------------------------------- the order-update socket
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
