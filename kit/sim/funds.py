"""The simulated account's money: the margin its positions and open orders block, the RMS check an order
must pass, and the margin, RMS-limit and charges-estimate routes.

``SimulatedExchange`` builds one ``SimFunds`` as ``sim.orders.rms`` (``sim.orders.funds`` and
``sim.orders.estimate_bias`` read and set its two settings). The
margin model is the kit's own (``kit.core.margin``: ``margin_required``,
``opening_qty``, ``MarginAccount``), the one the paper broker uses, so paper and
the simulated exchange refuse the same orders:

* blocked = for each (token, exchange, product) position, the margin of its
  net quantity at its average price, plus each open order's opening part
  (``opening_qty``, at its limit price, or its trigger for a STOPLOSS_MARKET);
  a bracket's target leg blocks nothing (its stop leg exits the same units);
* available = funds + realised P&L − blocked;
* an order whose opening part needs more than is available is rejected by the
  exchange with Angel One's "RMS:Margin Exceeds,Required:…, Available:…".
  Exits never need margin.

``getMarginApi`` answers with ``margin_required`` per position (the
instrument's type and strike from the simulator's master; price 0 or missing:
the current price), ``getRMS`` with Angel One's fields (strings), and
``estimateCharges`` with ``kit.core.charges.Charges().for_fill`` per order in
Angel One's shape, every amount times ``1 + estimate_bias``. These are the
kit's models: the real API answers with Angel One's own numbers (SPAN, its
contract-note rounding), which differ.
"""
from __future__ import annotations

from kit.core.charges import ChargeBreakdown, Charges
from kit.core.margin import MarginAccount, margin_required, opening_qty
from kit.core.market import BSE_CM, EXCHANGE_TYPES, NSE_CM
from kit.sim.orderbook import PRODUCTS
from kit.sim.rest import RestRequest, reply

MARGIN_PATH = "/rest/secure/angelbroking/margin/v1/batch"
RMS_PATH = "/rest/secure/angelbroking/user/v1/getRMS"
CHARGES_PATH = "/rest/secure/angelbroking/brokerage/v1/estimateCharges"
MAX_MARGIN_POSITIONS = 50      # positions one getMarginApi request may carry


def _money(x: float) -> str:
    return f"{x:.2f}"


class SimFunds:
    """The account's funds and margin, for ``SimulatedExchange`` (``exchange``). The ``*_locked``
    methods read the books of its matching engine (``exchange.matching``) and are called with its lock held."""

    def __init__(self, exchange, funds: float = 10_000_000.0, estimate_bias: float = 0.0):
        self.exchange = exchange
        self.account = MarginAccount(funds)
        self.estimate_bias = float(estimate_bias)
        self.charges = Charges()
        rest = exchange.sim.rest
        rest.route("POST", MARGIN_PATH)(self._margin_api)
        rest.route("GET", RMS_PATH)(self._rms)
        rest.route("POST", CHARGES_PATH)(self._estimate_charges)
        rest.limit(MARGIN_PATH, 10, 1.0)
        rest.limit(RMS_PATH, 2, 1.0)
        rest.limit(CHARGES_PATH, 10, 1.0)

    @property
    def funds(self) -> float:
        """The account's cash, rupees."""
        return self.account.capital

    @funds.setter
    def funds(self, rupees: float) -> None:
        self.account = MarginAccount(rupees)

    # ------------------------------------------------------------------ the model (lock held)
    @staticmethod
    def margin(order, side: str, qty: int, price: float) -> float:
        """``margin_required`` for ``qty`` of ``order``'s instrument and product (a ``SimOrder``)."""
        inst = order.instrument
        return margin_required(order.exchange_type, order.params.get("producttype", ""), side, qty, price,
                               inst.instrument_type if inst else "", (inst.strike or 0.0) if inst else 0.0)

    @staticmethod
    def _premium(order, side: str) -> bool:
        inst = order.instrument
        return bool(inst and inst.instrument_type.startswith("OPT") and side == "BUY")

    def _tally_locked(self) -> tuple[float, float, dict]:
        """(blocked, of it option premium, units open per (token, exchange, product, side))."""
        ex = self.exchange
        blocked = premium = 0.0
        for position in ex.matching.positions.values():
            if position.net:
                side = "BUY" if position.net > 0 else "SELL"
                m = self.margin(position.order, side, position.net, position.net_price)
                blocked += m
                premium += m if self._premium(position.order, side) else 0.0
        open_units: dict = {}
        for order in ex.matching.open_orders_locked():
            if order.parent_id and order.order_type == "LIMIT":
                continue        # a bracket's target: the stop leg exits the same units
            m = self._opening_margin(order, open_units)
            blocked += m
            premium += m if self._premium(order, order.side) else 0.0
        return blocked, premium, open_units

    def _opening_margin(self, order, open_units: dict, price: float | None = None) -> float:
        """Margin of the part of ``order``'s unfilled units that grows its position; counts them in ``open_units``."""
        p = order.params
        group = (order.token, p["exchange"], p.get("producttype", ""))
        position = self.exchange.matching.positions.get(group)
        left = order.qty - order.filled
        same_side = open_units.get((*group, order.side), 0)
        opening = opening_qty(position.net if position else 0, same_side, order.side, left)
        open_units[(*group, order.side)] = same_side + left
        if price is None:
            price = order.trigger if order.order_type == "STOPLOSS_MARKET" else order.price
        return self.margin(order, order.side, opening, price) if opening else 0.0

    def realised_locked(self) -> float:
        return sum(p.realised for p in self.exchange.matching.positions.values())

    def rms_rejection_locked(self, order, price: float | None = None) -> str:
        """Angel One's RMS text if ``order`` (not yet open) needs more margin than is available, else "".
        ``price``: what its units are valued at (None: its limit price, or its trigger for a STOPLOSS_MARKET)."""
        blocked, _, open_units = self._tally_locked()
        need = self._opening_margin(order, open_units, price)
        if not need:
            return ""
        available = self.account.available(blocked, self.realised_locked())
        if need <= available + 1e-9:
            return ""
        client = self.exchange.sim.rest.credentials.client_code
        return (f"RMS:Margin Exceeds,Required:{need:.2f}, Available:{available:.2f} for C-{client} "
                f"[{order.params.get('producttype', '')}]")

    # ------------------------------------------------------------------ routes
    def _rms(self, req: RestRequest):
        return reply(self.limits())

    def limits(self) -> dict:
        """What getRMS answers: Angel One's fields, amounts as strings (net = available)."""
        ex = self.exchange
        with ex.matching.lock:
            blocked, premium, _ = self._tally_locked()
            realised = self.realised_locked()
            held = [(p.order.key, p.net, p.net_price) for p in ex.matching.positions.values() if p.net]
        unrealised = 0.0
        for key, net, net_price in held:     # prices outside the lock: reading one may need the loop thread
            ltp = ex._ltp_if_known(key)
            unrealised += (ltp - net_price) * net if ltp is not None else 0.0
        cash = self.funds + realised
        zero = _money(0.0)
        return {"net": _money(self.account.available(blocked, realised)), "availablecash": _money(cash),
                "availableintradaypayin": zero, "availablelimitmargin": zero, "collateral": zero,
                "m2munrealized": _money(unrealised), "m2mrealized": _money(realised),
                "utiliseddebits": _money(blocked), "utilisedspan": _money(blocked - premium),
                "utilisedoptionpremium": _money(premium), "utilisedholdingsales": zero,
                "utilisedexposure": zero, "utilisedturnover": zero, "utilisedpayout": zero}

    def _margin_api(self, req: RestRequest):
        positions = req.body.get("positions")
        if not isinstance(positions, list) or not positions or len(positions) > MAX_MARGIN_POSITIONS:
            return reply(status=False, errorcode="AB4001",
                         message=f"Invalid request: positions must be a list of 1 to {MAX_MARGIN_POSITIONS}")
        ex = self.exchange
        total = 0.0
        parts = dict.fromkeys(("netPremium", "spanMargin", "marginBenefit", "deliveryMargin", "nonNFOMargin",
                               "totOptionsPremium"), 0.0)
        by_product: dict[tuple[str, str], float] = {}
        for row in positions:
            problem = _position_problem(row)
            if problem:
                return reply(status=False, message=f"Invalid request: {problem}", errorcode="AB4001")
            key = (EXCHANGE_TYPES[row["exchange"]], str(row["token"]))
            inst, product, side = ex.instruments.get(key), row["productType"], row["tradeType"]
            price = float(row.get("price") or 0) or ex._ltp(key)
            kind = inst.instrument_type if inst else ""
            m = margin_required(key[0], product, side, int(float(row["qty"])), price, kind,
                                (inst.strike or 0.0) if inst else 0.0)
            total += m
            if kind.startswith("OPT") and side == "BUY":
                parts["totOptionsPremium"] += m
                parts["netPremium"] += m
            elif key[0] in (NSE_CM, BSE_CM):
                parts["deliveryMargin" if product == "DELIVERY" else "nonNFOMargin"] += m
            else:
                parts["spanMargin"] += m
            by_product[(row["exchange"], product)] = by_product.get((row["exchange"], product), 0.0) + m
        return reply({"totalMarginRequired": total, "marginComponents": parts,
                      "marginBreakup": [{"exchange": e, "productType": p, "totalMarginRequired": m}
                                        for (e, p), m in by_product.items()]})

    def _estimate_charges(self, req: RestRequest):
        orders = req.body.get("orders")
        if not isinstance(orders, list) or not orders:
            return reply(status=False, message="Invalid request: orders must be a non-empty list", errorcode="AB4001")
        rows = []
        for o in orders:
            missing = [f for f in ("product_type", "transaction_type", "quantity", "price", "exchange", "token")
                       if o.get(f) in (None, "")] if isinstance(o, dict) else ["the order"]
            if missing or o["exchange"] not in EXCHANGE_TYPES or o["transaction_type"] not in ("BUY", "SELL"):
                return reply(status=False, errorcode="AB4001",
                             message=f"Invalid request: {', '.join(missing) or 'exchange or transaction_type'}")
            exchange_type = EXCHANGE_TYPES[o["exchange"]]
            inst = self.exchange.instruments.get((exchange_type, str(o["token"])))
            described = (inst.instrument_type or inst.symbol) if inst else o.get("symbol_name")
            try:
                rows.append(self.charges.for_fill(exchange_type, str(o["token"]), o["transaction_type"],
                                                  float(o["quantity"]), float(o["price"]), o["product_type"],
                                                  instrument=described or None))
            except (KeyError, ValueError) as exc:
                return reply(status=False, message=f"Invalid request: {exc}", errorcode="AB4001")
        total = ChargeBreakdown("", *(sum(getattr(b, f) for b in rows) for f in
                                      ("turnover", "brokerage", "stt", "exchange", "ipft", "sebi", "stamp", "gst")))
        return reply({"summary": self._charges_row(total), "charges": [self._charges_row(b) for b in rows]})

    def _charges_row(self, b: ChargeBreakdown) -> dict:
        """Angel One's breakup of one estimate. IPFT is folded into the exchange transaction charges."""
        k = 1.0 + self.estimate_bias

        def item(name, amount, breakup=()):
            return {"name": name, "amount": amount * k, "msg": "", "breakup": list(breakup)}
        external = [item("Exchange Transaction Charges", b.exchange + b.ipft), item("SEBI Fees", b.sebi),
                    item("Stamp Duty", b.stamp)]
        taxes = [item("Security Transaction Tax", b.stt), item("GST", b.gst)]
        return {"total_charges": b.total * k, "trade_value": b.turnover,
                "breakup": [item("Angel One Brokerage", b.brokerage),
                            item("External Charges", b.exchange + b.ipft + b.sebi + b.stamp, external),
                            item("Taxes", b.stt + b.gst, taxes)]}


def _position_problem(row) -> str:
    if not isinstance(row, dict):
        return "a position must be an object"
    missing = [f for f in ("exchange", "qty", "token", "tradeType", "productType") if row.get(f) in (None, "")]
    if missing:
        return f"missing {', '.join(missing)}"
    if row["exchange"] not in EXCHANGE_TYPES:
        return f"exchange {row['exchange']!r}"
    if row["tradeType"] not in ("BUY", "SELL"):
        return f"tradeType {row['tradeType']!r}"
    if row["productType"] not in PRODUCTS:
        return f"productType {row['productType']!r}"
    try:
        if float(row["qty"]) <= 0 or float(row.get("price") or 0) < 0:
            raise ValueError
    except (TypeError, ValueError):
        return f"qty {row['qty']!r} or price {row.get('price')!r}"
    return ""
