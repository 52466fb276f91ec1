"""The simulated account's orders and positions, and the checks Angel One makes on an order request.

``SimOrder`` is one order's life (fills, status, its order-book row; a
stop-loss order's trigger, a bracket leg's entry); ``SimPosition`` a net
position of one (token, product) with its average cost and realised P&L (its
``getPosition`` row). ``kit.sim.matching`` matches and books them.
``invalid_request`` and ``order_problem`` are the refusals REST answers at
once (AB4001 and friends); what the exchange rejects later (AB03) is
``kit.sim.matching``'s.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from kit.angel.instruments import Instrument
from kit.core.market import EXCHANGE_TYPES, IST
from kit.core.orders import stop_triggered
from kit.core.strategy import STOP_TYPES
from kit.sim.rest import reply

VARIETIES = ("NORMAL", "STOPLOSS", "ROBO")
ORDER_TYPES = ("MARKET", "LIMIT", "STOPLOSS_LIMIT", "STOPLOSS_MARKET")
PRODUCTS = ("DELIVERY", "CARRYFORWARD", "MARGIN", "INTRADAY", "BO")
DURATIONS = ("DAY", "IOC")
TRIGGER_PENDING = "trigger pending"     # Angel One's status of a stop-loss order waiting for its trigger


def finished(order, verb: str):
    """Angel One's refusal to change an order that is already complete, cancelled or rejected."""
    return reply(status=False, message=f"order {order.order_id} is {order.status}; it cannot be {verb}",
                 errorcode="AB4002")


def now_text() -> str:
    return datetime.now(IST).strftime("%d-%b-%Y %H:%M:%S")


class SimOrder:
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
        self.trigger = float(params.get("triggerprice") or 0)
        self.parent_id = ""        # a bracket leg: its entry's order id
        self.sibling: SimOrder | None = None     # a bracket leg: the other leg (one cancels the other)
        self.filled = 0
        self.avg_price = 0.0
        self.status = "open"
        self.text = ""
        self.cancelled_qty = 0
        self.updated = now_text()
        self.fill_id = ""
        self.fill_time = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.exchange_type, self.token)

    @property
    def terminal(self) -> bool:
        return self.status in ("complete", "cancelled", "rejected")

    @property
    def variety(self) -> str:
        return self.params.get("variety", "NORMAL")

    @property
    def is_stop(self) -> bool:
        return self.order_type in STOP_TYPES

    @property
    def is_bracket_entry(self) -> bool:
        return self.variety == "ROBO" and not self.parent_id

    def fill(self, qty: int, price: float, fill_id: str) -> None:
        self.avg_price = (self.avg_price * self.filled + price * qty) / (self.filled + qty)
        self.filled += qty
        self.fill_id, self.fill_time = fill_id, now_text()
        self.status = "complete" if self.filled == self.qty else "open"

    def data(self) -> dict:
        p, inst = self.params, self.instrument
        entry = self.is_bracket_entry
        return {
            "variety": self.variety, "ordertype": self.order_type,
            "producttype": p.get("producttype", ""), "duration": p.get("duration", "DAY"),
            "price": self.price if self.order_type in ("LIMIT", "STOPLOSS_LIMIT") else 0.0,
            "triggerprice": self.trigger if self.is_stop else 0.0, "quantity": str(self.qty),
            "disclosedquantity": str(p.get("disclosedquantity") or 0),
            "squareoff": _number(p.get("squareoff")) if entry else 0.0,
            "stoploss": _number(p.get("stoploss")) if entry else 0.0,
            "trailingstoploss": _number(p.get("trailingStopLoss")) if entry else 0.0,
            "tradingsymbol": p["tradingsymbol"], "transactiontype": self.side,
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
            "parentorderid": self.parent_id, "uniqueorderid": self.unique_id,
        }


class SimPosition:
    """Net position of one (token, product): buys and sells, average cost and realised P&L."""

    def __init__(self, order: SimOrder):
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


def leg_order(order_id: str, entry: SimOrder, leg) -> SimOrder:
    """One exit of the filled bracket ``entry`` (a ``kit.core.orders.BracketLeg``) as an order: variety
    ROBO, the entry's instrument and product, its id as ``parentorderid`` and an empty ``ordertag`` (the
    kit knows a leg by its parent, and a copied tag would make a leg's fill look like the entry's)."""
    p = entry.params
    order = SimOrder(order_id, {
        "variety": "ROBO", "tradingsymbol": p["tradingsymbol"], "symboltoken": p["symboltoken"],
        "transactiontype": leg.side, "exchange": p["exchange"], "ordertype": leg.order_type,
        "producttype": p["producttype"], "duration": p.get("duration", "DAY"), "quantity": str(leg.qty),
        "price": leg.limit_price or 0.0, "triggerprice": leg.trigger_price or 0.0, "ordertag": ""}, entry.instrument)
    order.parent_id = entry.order_id
    return order


def _number(value) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def crossed(order: SimOrder, ltp: float) -> bool:
    """A LIMIT order is marketable at ``ltp``."""
    return ltp <= order.price if order.side == "BUY" else ltp >= order.price


def grid_problem(inst: Instrument | None, order_type: str, price: float, trigger: float) -> str:
    """The exchange's rejection text for a limit or trigger price off the instrument's tick grid, or ""."""
    if inst is None or not inst.tick_size:
        return ""
    for name, value in (("Price", price if order_type in ("LIMIT", "STOPLOSS_LIMIT") else None),
                        ("Trigger price", trigger if order_type in STOP_TYPES else None)):
        if value is not None and abs(value / inst.tick_size - round(value / inst.tick_size)) > 1e-6:
            return f"{name} {value} is not a multiple of the tick size {inst.tick_size}"
    return ""


def stop_problem(side: str, order_type: str, trigger: float, price: float, ltp: float) -> str:
    """The exchange's rejection text for a stop-loss order that cannot wait for its trigger, or "":
    a STOPLOSS_LIMIT whose limit is on the wrong side of its trigger, or a trigger the last traded
    price has already reached (``stop_triggered``), which would trade at once."""
    buy = side == "BUY"
    if order_type == "STOPLOSS_LIMIT" and (price < trigger if buy else price > trigger):
        return (f"Trigger price should be {'less' if buy else 'greater'} than or equal to the limit price for "
                f"a {side} stop-loss order (trigger {trigger:.2f}, limit {price:.2f})")
    if stop_triggered(side, trigger, ltp):
        return (f"Trigger price should be {'above' if buy else 'below'} the last traded price for a {side} "
                f"stop-loss order (trigger {trigger:.2f}, last traded {ltp:.2f})")
    return ""


def invalid_request(p: dict, required: tuple[str, ...]) -> tuple[str, str] | None:
    """``(error code, message)`` for a request Angel One would refuse outright, else None."""
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
    for name, needed in (("price", ("LIMIT", "STOPLOSS_LIMIT")), ("triggerprice", STOP_TYPES)):
        if p.get("ordertype") in needed and not _positive(p.get(name)):
            return "AB4001", f"Invalid {name} {p.get(name)!r} for a {p['ordertype']} order"
    if len(str(p.get("ordertag", ""))) >= 20:
        return "AB4001", "ordertag must be shorter than 20 characters"
    return None


def order_problem(p: dict) -> tuple[str, str] | None:
    """What a new order's request gets refused for beyond ``invalid_request``: the variety must fit
    the order type (STOPLOSS for the stop-loss types, NORMAL or ROBO for MARKET and LIMIT), and a
    bracket (ROBO) needs positive ``squareoff`` and ``stoploss`` offsets and product BO or INTRADAY."""
    variety, order_type, product = p["variety"], p["ordertype"], p["producttype"]
    if (variety == "STOPLOSS") != (order_type in STOP_TYPES):
        return "AB4001", (f"Invalid ordertype {order_type!r} for variety {variety!r}: variety STOPLOSS takes "
                          f"STOPLOSS_LIMIT or STOPLOSS_MARKET, NORMAL and ROBO take MARKET or LIMIT")
    if variety == "ROBO":
        for name in ("squareoff", "stoploss"):
            if not _positive(p.get(name)):
                return "AB4001", f"Invalid {name} {p.get(name)!r}: a ROBO order needs a positive {name} (rupees)"
        if product not in ("BO", "INTRADAY"):
            return "AB1012", f"Invalid producttype {product!r} for variety ROBO: BO or INTRADAY"
    elif product == "BO":
        return "AB1012", f"Invalid producttype 'BO' for variety {variety!r}: BO is for ROBO orders only"
    return None


def _positive(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False
