"""The simulated account's orders and positions, and the checks Angel One makes on an order request.

``SimOrder`` is one order's life (fills, status, its order-book row);
``SimPosition`` a net position of one (token, product) with its average cost
and realised P&L (its ``getPosition`` row). ``kit.sim.exchange`` matches and
books them.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from kit.angel.instruments import Instrument
from kit.core.market import EXCHANGE_TYPES, IST
from kit.sim.rest import reply

VARIETIES = ("NORMAL", "STOPLOSS", "ROBO")
ORDER_TYPES = ("MARKET", "LIMIT", "STOPLOSS_LIMIT", "STOPLOSS_MARKET")
PRODUCTS = ("DELIVERY", "CARRYFORWARD", "MARGIN", "INTRADAY", "BO")
DURATIONS = ("DAY", "IOC")


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

    def fill(self, qty: int, price: float, fill_id: str) -> None:
        self.avg_price = (self.avg_price * self.filled + price * qty) / (self.filled + qty)
        self.filled += qty
        self.fill_id, self.fill_time = fill_id, now_text()
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


def crossed(order: SimOrder, ltp: float) -> bool:
    """A LIMIT order is marketable at ``ltp``."""
    return ltp <= order.price if order.side == "BUY" else ltp >= order.price


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
    if p.get("ordertype") == "LIMIT":
        try:
            if float(p.get("price") or 0) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            return "AB4001", f"Invalid price {p.get('price')!r} for a LIMIT order"
    if len(str(p.get("ordertag", ""))) >= 20:
        return "AB4001", "ordertag must be shorter than 20 characters"
    return None
