"""The simulated exchange's GTT rule book: Angel One's single-leg "good till triggered" rules.

``SimulatedExchange`` builds one ``SimGttBook`` as ``sim.orders.gtt`` and it
registers the five routes ``SmartConnect`` calls (all POST, JSON bodies; 10
requests a second each, as Angel One allows):

* ``gttCreateRule`` (tradingsymbol, symboltoken, exchange, transactiontype,
  producttype, price, qty, triggerprice, disclosedqty, timeperiod) ->
  ``{"data": {"id": "<rule id>"}}``. The rule notes the current price: it
  fires when a later generated tick crosses its trigger from that side
  (``kit.core.orders.gtt_fires_above`` / ``gtt_triggered``).
* ``gttModifyRule`` (id, and any of price, qty, triggerprice, disclosedqty,
  timeperiod) changes a NEW rule (the side it fires from is judged again at
  the current price); a fired or cancelled rule is refused (AB4002).
* ``gttCancelRule`` (id, symboltoken, exchange): a NEW rule becomes CANCELLED.
* ``gttDetails`` (id): the rule's row. ``gttLists`` (status list, page,
  count): the rules in those statuses, newest first, ``count`` a page.

Firing happens once, on the simulator's loop thread (``fire_locked``, from
``kit.sim.matching``'s ``on_trades``): a NORMAL LIMIT order at the rule's price
and quantity is placed through the exchange's own place path (it can be rejected,
rests or fills, moves positions and is pushed on the order-update socket like
any order, with an empty ``ordertag``), and the rule becomes SENTTOEXCHANGE
with that order's id. Rows have Angel One's ruleList fields (id, tradingsymbol,
symboltoken, exchange, transactiontype, producttype, price, qty, triggerprice,
disclosedqty, status, createddate, updateddate, expirydate, clientid) and two
of the simulator's own: ``timeperiod`` and ``orderid`` (the order a fired rule
placed; Angel One's row does not document one). Rules never expire here.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kit.core.market import EXCHANGE_TYPES
from kit.core.orders import gtt_fires_above, gtt_triggered
from kit.sim.orderbook import PRODUCTS
from kit.sim.rest import RestRequest, reply

GTT_CREATE_PATH = "/gtt-service/rest/secure/angelbroking/gtt/v1/createRule"
GTT_MODIFY_PATH = "/gtt-service/rest/secure/angelbroking/gtt/v1/modifyRule"
GTT_CANCEL_PATH = "/gtt-service/rest/secure/angelbroking/gtt/v1/cancelRule"
GTT_DETAILS_PATH = "/rest/secure/angelbroking/gtt/v1/ruleDetails"
GTT_LIST_PATH = "/rest/secure/angelbroking/gtt/v1/ruleList"
NEW, SENT, CANCELLED = "NEW", "SENTTOEXCHANGE", "CANCELLED"


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimGttRule:
    rule_id: str
    key: tuple[int, str]
    fields: dict              # tradingsymbol ... timeperiod, as the row shows them
    fires_above: bool
    status: str = NEW
    order_id: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def row(self, client_id: str) -> dict:
        expiry = self.created + timedelta(days=self.fields["timeperiod"])
        return {"id": self.rule_id, **self.fields, "status": self.status, "createddate": _stamp(self.created),
                "updateddate": _stamp(self.updated), "expirydate": _stamp(expiry), "clientid": client_id,
                "gttType": "GENERIC", "orderid": self.order_id}


def _number(p: dict, name: str, kind=float, *, minimum: float = 0.0, allow_equal: bool = False):
    """``kind(p[name])`` if it is a number above ``minimum`` (or equal, if allowed), else raise ValueError."""
    try:
        value = kind(float(p[name])) if kind is int else float(p[name])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"Invalid {name} {p.get(name)!r}") from None
    if kind is int and float(p[name]) != value or not (value > minimum or allow_equal and value == minimum):
        raise ValueError(f"Invalid {name} {p.get(name)!r}")
    return value


class SimGttBook:
    """GTT rules of the simulated account. Guarded by the matching engine's lock (rules fire on the loop thread)."""

    def __init__(self, exchange):
        self.exchange = exchange
        self._rules: dict[str, SimGttRule] = {}
        self._waiting: dict[tuple[int, str], list[SimGttRule]] = {}
        self._ids = itertools.count(1_000_001)
        rest = exchange.sim.rest
        rest.route("POST", GTT_CREATE_PATH)(self._create)
        rest.route("POST", GTT_MODIFY_PATH)(self._modify)
        rest.route("POST", GTT_CANCEL_PATH)(self._cancel)
        rest.route("POST", GTT_DETAILS_PATH)(self._details)
        rest.route("POST", GTT_LIST_PATH)(self._list)
        for path in (GTT_CREATE_PATH, GTT_MODIFY_PATH, GTT_CANCEL_PATH, GTT_DETAILS_PATH, GTT_LIST_PATH):
            rest.limit(path, 10, 1.0)

    # ------------------------------------------------------------------ the exchange's side
    def watches(self, key: tuple[int, str]) -> bool:
        return key in self._waiting

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def rules(self) -> list[dict]:
        """Every rule's row, newest first (what ``ruleList`` with every status answers)."""
        with self.exchange.matching.lock:
            return [r.row(self._client()) for r in reversed(self._rules.values())]

    def fire_locked(self, key: tuple[int, str], ltp: float) -> None:
        """Place the order of every NEW rule on ``key`` that ``ltp`` crosses (matching lock held)."""
        for rule in list(self._waiting.get(key, ())):
            if not gtt_triggered(rule.fires_above, rule.fields["triggerprice"], ltp):
                continue
            self._unwait(rule)
            f = rule.fields
            params = {"variety": "NORMAL", "tradingsymbol": f["tradingsymbol"], "symboltoken": f["symboltoken"],
                      "transactiontype": f["transactiontype"], "exchange": f["exchange"], "ordertype": "LIMIT",
                      "producttype": f["producttype"], "duration": "DAY", "price": f"{f['price']:.2f}",
                      "quantity": str(f["qty"]), "disclosedquantity": str(f["disclosedqty"]), "ordertag": ""}
            order = self.exchange.matching.submit_locked(params, ltp)
            rule.status, rule.order_id, rule.updated = SENT, order.order_id, datetime.now(timezone.utc)

    def _unwait(self, rule: SimGttRule) -> None:
        waiting = self._waiting.get(rule.key)
        if waiting and rule in waiting:
            waiting.remove(rule)
            if not waiting:
                del self._waiting[rule.key]

    def _client(self) -> str:
        return self.exchange.sim.rest.credentials.client_code

    # ------------------------------------------------------------------ routes
    def _create(self, req: RestRequest):
        p = req.body
        missing = [f for f in ("tradingsymbol", "symboltoken", "exchange", "transactiontype", "producttype",
                               "price", "qty", "triggerprice") if p.get(f) in (None, "")]
        if missing:
            return reply(status=False, message=f"Invalid request: missing {', '.join(missing)}", errorcode="AB4001")
        try:
            if p["exchange"] not in EXCHANGE_TYPES or p["transactiontype"] not in ("BUY", "SELL") \
                    or p["producttype"] not in PRODUCTS:
                raise ValueError(f"Invalid exchange, transactiontype or producttype in {p!r}")
            key = (EXCHANGE_TYPES[p["exchange"]], str(p["symboltoken"]))
            inst = self.exchange.instruments.get(key)
            if inst is not None and inst.symbol != p["tradingsymbol"]:
                raise ValueError(f"Invalid tradingsymbol {p['tradingsymbol']!r} for token {key[1]}")
            fields = {"tradingsymbol": p["tradingsymbol"], "symboltoken": key[1], "exchange": p["exchange"],
                      "transactiontype": p["transactiontype"], "producttype": p["producttype"],
                      **self._changes(p, {"disclosedqty": 0, "timeperiod": 365})}
        except ValueError as exc:
            return reply(status=False, message=str(exc), errorcode="AB4001")
        ltp = self.exchange._ltp(key)      # before the lock: it may need the simulator's loop thread
        with self.exchange.matching.lock:
            rule = SimGttRule(str(next(self._ids)), key, fields, gtt_fires_above(fields["triggerprice"], ltp))
            self._rules[rule.rule_id] = rule
            self._waiting.setdefault(key, []).append(rule)
        return reply({"id": rule.rule_id})

    @staticmethod
    def _changes(p: dict, defaults: dict) -> dict:
        """The numeric fields in ``p`` (those missing from ``p`` taken from ``defaults``), checked."""
        out = {}
        for name, kind, zero_ok in (("price", float, False), ("qty", int, False), ("triggerprice", float, False),
                                    ("disclosedqty", int, True), ("timeperiod", int, False)):
            if p.get(name) in (None, ""):
                if name in defaults:
                    out[name] = defaults[name]
                continue
            out[name] = _number(p, name, kind, allow_equal=zero_ok)
        return out

    def _named(self, p: dict, state: str):
        """``(rule, None)`` for the NEW rule ``p["id"]`` names, or ``(None, the error reply)``."""
        rule = self._rules.get(str(p.get("id", "")))
        if rule is None:
            return None, reply(status=False, message=f"GTT rule {p.get('id')!r} not found", errorcode="AB1013")
        for name in ("symboltoken", "exchange"):
            if p.get(name) not in (None, "") and str(p[name]) != str(rule.fields[name]):
                return None, reply(status=False, errorcode="AB4001",
                                   message=f"Invalid {name} {p[name]!r} for GTT rule {rule.rule_id}")
        if rule.status != NEW:
            return None, reply(status=False, errorcode="AB4002",
                               message=f"GTT rule {rule.rule_id} is {rule.status}; it cannot be {state}")
        return rule, None

    def _modify(self, req: RestRequest):
        p = req.body
        rule = self._rules.get(str(p.get("id", "")))
        ltp = self.exchange._ltp(rule.key) if rule is not None else 0.0
        with self.exchange.matching.lock:
            rule, refused = self._named(p, "modified")
            if refused:
                return refused
            try:
                changes = self._changes(p, {})
            except ValueError as exc:
                return reply(status=False, message=str(exc), errorcode="AB4001")
            rule.fields.update(changes)
            rule.fires_above = gtt_fires_above(rule.fields["triggerprice"], ltp)
            rule.updated = datetime.now(timezone.utc)
        return reply({"id": rule.rule_id})

    def _cancel(self, req: RestRequest):
        with self.exchange.matching.lock:
            rule, refused = self._named(req.body, "cancelled")
            if refused:
                return refused
            self._unwait(rule)
            rule.status, rule.updated = CANCELLED, datetime.now(timezone.utc)
        return reply({"id": rule.rule_id})

    def _details(self, req: RestRequest):
        with self.exchange.matching.lock:
            rule = self._rules.get(str(req.body.get("id", "")))
            if rule is None:
                return reply(status=False, message=f"GTT rule {req.body.get('id')!r} not found", errorcode="AB1013")
            return reply(rule.row(self._client()))

    def _list(self, req: RestRequest):
        p = req.body
        statuses = p.get("status")
        try:
            if not isinstance(statuses, list) or not statuses:
                raise ValueError(f"Invalid status {statuses!r}: a list of statuses")
            page, count = _number(p, "page", int), _number(p, "count", int)
        except ValueError as exc:
            return reply(status=False, message=str(exc), errorcode="AB4001")
        with self.exchange.matching.lock:
            rows = [r.row(self._client()) for r in reversed(self._rules.values()) if r.status in statuses]
        return reply(rows[(page - 1) * count: page * count])
