"""GTT rules at Angel One, through the SDK's ``gttCreateRule`` / ``gttModifyRule`` / ``gttCancelRule`` /
``gttDetails`` / ``gttLists`` (``SmartApiBroker.gtt``; the contract is ``kit.broker.gtt.GttBook``).

The exchange's rule book is the truth: ``rules()`` reads it every time, and
nothing here keeps a copy that could go stale. What the kit adds:

* a rule is checked before it is sent as an order would be (side, quantity,
  lots, tick grid), and creating or changing one passes the trading gate
  like an order: after stop, disarm or the kill switch none is created;
* every rule this journal created is recorded (``gtt_created``), so
  ``cancel_created()`` (the kill switch calls it) cancels them even in a
  later session: a rule outlives the day, and a kill switch that left one
  armed would let it open a position after the trader was stopped.

A fired rule places an ordinary order without the kit's tag. The first
update of an unknown order that matches a waiting rule of this journal
exactly (instrument, side, quantity, price) makes it a kit order named
``gtt<rule id>``, so its fills move the kit's positions and P&L as the
kit's own orders do; anything else unknown is left to the position check
(``SmartApiBroker.check_positions``).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from kit.broker.gtt import DEFAULT_TIMEPERIOD_DAYS, GTT_CANCELLED, GTT_FIRED, GTT_COLUMNS, GTT_NEW, GTT_STATUSES, GttRule
from kit.broker.rules import instrument_problem, shape_problem
from kit.core.market import EXCHANGE_TYPES, EXCHANGES, IST
from kit.core.strategy import LIMIT

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.broker.order_state import LiveBook

log = logging.getLogger("kit.broker.live")

PAGE = 100          # rules per ruleList request


class GttRefused(RuntimeError):
    """Angel One (or the kit's own checks, or the closed gate) refused a GTT request; the message says why."""


def _answer(reply, what: str) -> dict:
    if not isinstance(reply, dict) or not reply.get("status"):
        message = reply.get("message", "no reason given") if isinstance(reply, dict) else repr(reply)
        code = reply.get("errorcode", "") if isinstance(reply, dict) else ""
        raise GttRefused(f"{what} refused by the broker: {message}" + (f" ({code})" if code else ""))
    return reply


def _rule(row: dict) -> GttRule:
    return GttRule(str(row.get("id", "")), str(row.get("symboltoken", "")),
                   EXCHANGE_TYPES.get(str(row.get("exchange", "")), 0), str(row.get("transactiontype", "")),
                   int(float(row.get("qty") or 0)), float(row.get("triggerprice") or 0),
                   float(row.get("price") or 0), str(row.get("status", "")), str(row.get("producttype", "")),
                   str(row.get("orderid") or ""), str(row.get("createddate") or ""))


class LiveGtt:
    """``broker.gtt`` of the live broker. Thread-safe: every call is one or two requests and no state."""

    def __init__(self, book: "LiveBook", instrument_of: Callable):
        self.book = book
        self._instrument_of = instrument_of
        # rule id -> the rule as last listed or changed here: what seen() shows without a request.
        self._seen: dict[str, GttRule] = {}
        self._seen_lock = threading.Lock()
        # This journal's rules not yet matched to an order: rule id -> (token, exchange, side, qty, price).
        self._waiting: dict[str, tuple] = {}
        for event in book.journal.events("gtt_created"):
            self._expect(event["client_id"], event["payload"])
        book.gtt_order_of = self._order_of

    def _expect(self, rule_id: str, params: dict) -> None:
        with self._seen_lock:
            self._waiting[str(rule_id)] = (str(params["symboltoken"]), str(params["exchange"]),
                                           str(params["transactiontype"]), int(params["qty"]),
                                           round(float(params["price"]), 2))

    def _order_of(self, data: dict):
        """The kit order for an unknown order-book row that one of this journal's waiting rules placed."""
        key = (str(data.get("symboltoken", "")), str(data.get("exchange", "")), str(data.get("transactiontype", "")),
               int(float(data.get("quantity") or 0)), round(float(data.get("price") or 0), 2))
        with self._seen_lock:
            rule_id = next((r for r, k in self._waiting.items() if k == key), None)
            if rule_id is None:
                return None
            del self._waiting[rule_id]
            seen = self._seen.get(rule_id)
            if seen is not None:
                self._seen[rule_id] = dataclasses.replace(seen, status=GTT_FIRED, order_id=f"gtt{rule_id}")
        from kit.broker.order_state import LiveOrder, to_float
        from kit.core.orders import PENDING
        now = self.book.clock_ns()
        log.info("GTT rule %s placed order %s", rule_id, data.get("orderid"))
        return LiveOrder(f"gtt{rule_id}", key[0], EXCHANGE_TYPES.get(key[1], 0), key[2], key[3],
                         str(data.get("ordertype") or LIMIT), to_float(data.get("price")), PENDING, 0, 0.0,
                         f"GTT rule {rule_id}", now, 0, "", "", broker_order_id=str(data.get("orderid", "")),
                         symbol=str(data.get("tradingsymbol", "")), exchange=key[1],
                         product=str(data.get("producttype", "")), updated_ns=now)

    def _remember(self, rules: list[GttRule], *, replace: bool = False) -> None:
        with self._seen_lock:
            if replace:
                self._seen = {}
            self._seen.update((r.rule_id, r) for r in rules)

    def seen(self) -> list[GttRule]:
        """The rules as last listed (``rules()``) or changed through this object; no request is made."""
        with self._seen_lock:
            return sorted(self._seen.values(), key=lambda r: r.rule_id, reverse=True)

    def _client(self):
        client = self.book.client
        if client is None:
            raise GttRefused("the live broker is not connected (start the trader first)")
        return client

    def _gated(self, what: str, call) -> dict:
        """Send a request that can put a new order in motion: only through the open trading gate."""
        with self.book.gate.passage() as closed:
            if closed is not None:
                raise GttRefused(f"{what} not sent: {closed}")
            return _answer(call(), what)

    def create(self, token: str, exchange_type: int, side: str, qty: int, trigger: float, price: float, *,
               product: str = "DELIVERY", timeperiod: int = DEFAULT_TIMEPERIOD_DAYS) -> str:
        """Create a rule; returns its id. Raises ``GttRefused`` (with the reason) if it is not created."""
        inst = self._instrument_of(token, exchange_type)
        problem = shape_problem(side, qty, LIMIT, price) or shape_problem(side, qty, LIMIT, trigger) or \
            instrument_problem(token, exchange_type, qty, LIMIT, price, inst, trigger)
        if problem:
            raise GttRefused(f"GTT rule refused: {problem}")
        params = {"tradingsymbol": inst.symbol, "symboltoken": str(token), "exchange": EXCHANGES[exchange_type],
                  "transactiontype": side, "producttype": product, "price": price, "qty": qty,
                  "triggerprice": trigger, "disclosedqty": 0, "timeperiod": timeperiod}
        client = self._client()
        self.book.record("gtt_intent", payload=params)
        rule_id = str(self._gated("GTT rule", lambda: client.gttCreateRule(dict(params)))["data"]["id"])
        self.book.record("gtt_created", client_id=rule_id, payload=params)
        self._expect(rule_id, params)
        self._remember([GttRule(rule_id, str(token), exchange_type, side, qty, float(trigger), float(price), GTT_NEW,
                                product)])
        log.info("GTT rule %s created: %s %d %s at %s when the price reaches %s", rule_id, side, qty,
                 inst.symbol, price, trigger)
        return rule_id

    def details(self, rule_id: str) -> dict:
        """Angel One's row for one rule."""
        reply = _answer(self._client().gttDetails(str(rule_id)), f"GTT rule {rule_id}")
        return reply["data"]

    def modify(self, rule_id: str, *, trigger: float | None = None, price: float | None = None,
               qty: int | None = None) -> None:
        """Change a waiting rule's trigger, price or quantity. Raises ``GttRefused`` if it is not changed."""
        row = self.details(rule_id)
        if str(row.get("status")) != GTT_NEW:
            raise GttRefused(f"GTT rule {rule_id} is {row.get('status')}: only a waiting (NEW) rule can be changed")
        params = {"id": str(rule_id), "symboltoken": row["symboltoken"], "exchange": row["exchange"],
                  "price": price if price is not None else float(row["price"]),
                  "qty": qty if qty is not None else int(float(row["qty"])),
                  "triggerprice": trigger if trigger is not None else float(row["triggerprice"]),
                  "disclosedqty": int(float(row.get("disclosedqty") or 0)),
                  "timeperiod": int(float(row.get("timeperiod") or DEFAULT_TIMEPERIOD_DAYS))}
        inst = self._instrument_of(row["symboltoken"], EXCHANGE_TYPES.get(row["exchange"], 0))
        problem = shape_problem(row["transactiontype"], params["qty"], LIMIT, params["price"]) or \
            instrument_problem(row["symboltoken"], EXCHANGE_TYPES.get(row["exchange"], 0), params["qty"], LIMIT,
                               params["price"], inst, params["triggerprice"])
        if problem:
            raise GttRefused(f"GTT rule {rule_id}: change refused: {problem}")
        client = self._client()
        self.book.record("gtt_modify_intent", client_id=str(rule_id), payload=params)
        self._gated(f"GTT rule {rule_id} change", lambda: client.gttModifyRule(dict(params)))
        if str(rule_id) in self._waiting:
            self._expect(rule_id, {**row, **params})
        self._remember([_rule({**row, **params})])

    def cancel(self, rule_id: str) -> None:
        """Cancel a waiting rule. A cancel only reduces risk: it is sent whatever the gate says."""
        row = self.details(rule_id)
        client = self._client()
        self.book.record("gtt_cancel_intent", client_id=str(rule_id))
        with self._seen_lock:
            self._waiting.pop(str(rule_id), None)
        _answer(client.gttCancelRule({"id": str(rule_id), "symboltoken": row["symboltoken"],
                                      "exchange": row["exchange"]}), f"GTT rule {rule_id} cancel")
        self._remember([_rule({**row, "status": GTT_CANCELLED})])

    def rules(self, statuses: tuple[str, ...] = GTT_STATUSES) -> list[GttRule]:
        """The account's rules in these statuses, as Angel One lists them now (newest first)."""
        client, rows, page = self._client(), [], 1
        while True:
            reply = _answer(client.gttLists(list(statuses), page, PAGE), "GTT rule list")
            batch = reply.get("data") or []
            rows.extend(batch)
            if len(batch) < PAGE:
                found = [_rule(row) for row in rows]
                self._remember(found, replace=tuple(statuses) == GTT_STATUSES)
                return found
            page += 1

    def rules_df(self, statuses: tuple[str, ...] = GTT_STATUSES) -> "pandas.DataFrame":
        import pandas as pd
        return pd.DataFrame([[getattr(r, c) for c in GTT_COLUMNS] for r in self.rules(statuses)],
                            columns=GTT_COLUMNS)

    def created_ids(self) -> list[str]:
        """Every rule this journal created, in any session."""
        return [e["client_id"] for e in self.book.journal.events("gtt_created")]

    def cancel_created(self) -> int:
        """Cancel every waiting rule this journal created; returns how many. Raises if the list cannot be read."""
        mine = set(self.created_ids())
        if not mine:
            return 0
        cancelled = 0
        for rule in self.rules((GTT_NEW,)):
            if rule.rule_id in mine:
                try:
                    self.cancel(rule.rule_id)
                    cancelled += 1
                except Exception:
                    log.exception("GTT rule %s: the cancel failed", rule.rule_id)
        log.warning("GTT: %d waiting rules this journal created were cancelled at %s", cancelled,
                    datetime.now(IST).strftime("%H:%M:%S"))
        return cancelled
