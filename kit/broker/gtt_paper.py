"""GTT rules on paper (``PaperBroker.gtt``; the contract is ``kit.broker.gtt.GttBook``).

    broker.on_tick(tick)                                           # a price first: a rule fires from where it is
    rule_id = broker.gtt.create("2885", 1, "SELL", qty=10, trigger=95.0, price=94.5)
    broker.gtt.modify(rule_id, trigger=96.0)                       # only while it waits (NEW)
    broker.gtt.rules()                                             # newest first
    broker.gtt.cancel(rule_id)

A rule records the broker's last price for its instrument when it is
created, and fires on the first later tick that crosses its trigger from
that side (``kit.core.orders.gtt_fires_above`` / ``gtt_triggered``, the rules
the simulated exchange applies too): upwards when the trigger was above the
price, downwards otherwise. Firing places a LIMIT order at the rule's price
(the rule becomes ``SENTTOEXCHANGE`` and records the order's id), checked as
any paper order is; the order is judged from the next tick on. A rule fires
once; ``modify`` keeps the price recorded at creation, so a new trigger is
judged from the same side.

A waiting rule sits in its instrument's pending list in the broker, next to
the orders, so the tick path of an instrument without orders or rules is not
touched at all. Rules are journaled with the broker (``paper_gtt`` events)
and come back after a restart. The rule's ``product`` is recorded and shown;
the order it places is charged and margined with the broker's ``product``,
like every paper order. ``timeperiod`` is checked, not enforced: a paper rule
does not expire.
"""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import TYPE_CHECKING

from kit.broker.gtt import DEFAULT_TIMEPERIOD_DAYS, GTT_CANCELLED, GTT_COLUMNS, GTT_NEW, GTT_STATUSES, GttRule
from kit.broker.rules import instrument_problem, shape_problem
from kit.core.market import IST
from kit.core.orders import gtt_fires_above
from kit.core.strategy import LIMIT

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.broker.paper import PaperBroker

__all__ = ["PaperGtt", "GttWatch"]

_RULE_ID = re.compile(r"G(\d+)")
_RULE_FIELDS = frozenset(GTT_COLUMNS)


class GttWatch:
    """A waiting rule in its instrument's pending list. ``order`` is None: the broker's tick path tells
    a rule from an order by it."""
    __slots__ = ("rule", "fires_above")
    order = None

    def __init__(self, rule: GttRule, fires_above: bool):
        self.rule = rule
        self.fires_above = fires_above


def rule_payload(rule: GttRule, fires_above: bool) -> dict:
    """What the journal keeps of a rule: its fields, and which way it fires."""
    return {**dataclasses.asdict(rule), "fires_above": fires_above}


class PaperGtt:
    """``broker.gtt`` of the paper broker. Thread-safe: every call holds the broker's lock."""

    def __init__(self, broker: "PaperBroker"):
        self._broker = broker
        self._rules: dict[str, GttRule] = {}
        self._watches: dict[str, GttWatch] = {}
        self._count = 0

    # -- the contract ----------------------------------------------------------

    def create(self, token: str, exchange_type: int, side: str, qty: int, trigger: float, price: float, *,
               product: str = "DELIVERY", timeperiod: int = DEFAULT_TIMEPERIOD_DAYS) -> str:
        """Create a rule; returns its id ("G000001", ...). ValueError (saying why) if it is refused:
        a malformed rule, one the instrument master would refuse, or no price seen yet for the instrument."""
        broker = self._broker
        problem = shape_problem(side, qty, LIMIT, price) or shape_problem(side, qty, LIMIT, trigger)
        if not problem and broker.instruments is not None:
            problem = instrument_problem(token, exchange_type, qty, LIMIT, price,
                                         broker.instruments.get(token, exchange_type), trigger)
        if not problem and (isinstance(timeperiod, bool) or not isinstance(timeperiod, int) or timeperiod <= 0):
            problem = f"timeperiod is a positive whole number of days, not {timeperiod!r}"
        if problem:
            raise ValueError(f"GTT rule refused: {problem}")
        with broker._lock:
            last = broker.last_price(token, exchange_type)
            if not last:
                raise ValueError(f"GTT rule refused: no price seen yet for token {token} (exchange type "
                                 f"{exchange_type}); a rule fires when the price crosses its trigger from where it "
                                 "is at creation, so feed the broker a tick of the instrument first")
            self._count += 1
            stamp = datetime.fromtimestamp(broker._clock_ns() / 1e9, IST).strftime("%Y-%m-%d %H:%M:%S")
            rule = GttRule(f"G{self._count:06d}", str(token), int(exchange_type), side, qty, float(trigger),
                           float(price), GTT_NEW, product, "", stamp)
            watch = GttWatch(rule, gtt_fires_above(rule.trigger_price, last))
            broker._record_gtt(rule, watch.fires_above)          # raises if the journal did not record it
            self._rules[rule.rule_id] = rule
            self._watch(watch)
            return rule.rule_id

    def modify(self, rule_id: str, *, trigger: float | None = None, price: float | None = None,
               qty: int | None = None) -> None:
        """Change a waiting rule's trigger, price or quantity. ValueError (saying why) if it is not changed."""
        broker = self._broker
        with broker._lock:
            rule = self._waiting(rule_id, "changed")
            changed = dataclasses.replace(
                rule, trigger_price=float(trigger) if trigger is not None else rule.trigger_price,
                price=float(price) if price is not None else rule.price, qty=qty if qty is not None else rule.qty)
            problem = shape_problem(changed.side, changed.qty, LIMIT, changed.price) or \
                shape_problem(changed.side, changed.qty, LIMIT, changed.trigger_price)
            if not problem and broker.instruments is not None:
                problem = instrument_problem(changed.token, changed.exchange_type, changed.qty, LIMIT, changed.price,
                                             broker.instruments.get(changed.token, changed.exchange_type),
                                             changed.trigger_price)
            if problem:
                raise ValueError(f"GTT rule {rule_id}: change refused: {problem}")
            watch = self._watches[rule_id]
            broker._record_gtt(changed, watch.fires_above)
            rule.trigger_price, rule.price, rule.qty = changed.trigger_price, changed.price, changed.qty

    def cancel(self, rule_id: str) -> None:
        """Cancel a waiting rule. ValueError if it is unknown or no longer waiting."""
        with self._broker._lock:
            self._cancel_locked(self._waiting(rule_id, "cancelled"))

    def rules(self, statuses: tuple[str, ...] = GTT_STATUSES) -> list[GttRule]:
        """Copies of the rules in these statuses, newest first."""
        with self._broker._lock:
            return [dataclasses.replace(r) for r in reversed(self._rules.values()) if r.status in statuses]

    def seen(self) -> list[GttRule]:
        """Every rule, newest first: on paper the book is the broker's own memory, always current."""
        return self.rules()

    def rules_df(self, statuses: tuple[str, ...] = GTT_STATUSES) -> "pandas.DataFrame":
        import pandas as pd
        return pd.DataFrame([[getattr(r, c) for c in GTT_COLUMNS] for r in self.rules(statuses)],
                            columns=GTT_COLUMNS)

    def cancel_created(self) -> int:
        """Cancel every waiting rule (all of a paper broker's rules are its own); returns how many."""
        cancelled = 0
        with self._broker._lock:
            for rule in list(self._rules.values()):
                if rule.status == GTT_NEW:
                    self._cancel_locked(rule)
                    cancelled += 1
        return cancelled

    # -- what the broker calls, holding its lock ---------------------------------

    def _waiting(self, rule_id: str, verb: str) -> GttRule:
        rule = self._rules.get(rule_id)
        if rule is None:
            raise ValueError(f"GTT rule {rule_id!r} is unknown to this paper broker")
        if rule.status != GTT_NEW:
            raise ValueError(f"GTT rule {rule_id} is {rule.status}" +
                             (f" (it placed order {rule.order_id})" if rule.order_id else "") +
                             f": only a waiting (NEW) rule can be {verb}")
        return rule

    def _cancel_locked(self, rule: GttRule) -> None:
        watch = self._watches[rule.rule_id]
        self._broker._record_gtt(dataclasses.replace(rule, status=GTT_CANCELLED), watch.fires_above)
        del self._watches[rule.rule_id]
        rule.status = GTT_CANCELLED
        # The tick path drops a rule that is no longer NEW; drop it now too, so an idle instrument is idle.
        instrument = self._broker._instrument(rule.token, rule.exchange_type)
        instrument.pending = [w for w in instrument.pending if w is not watch]

    def _watch(self, watch: GttWatch) -> None:
        self._watches[watch.rule.rule_id] = watch
        self._broker._instrument(watch.rule.token, watch.rule.exchange_type).pending.append(watch)

    def _fired(self, rule: GttRule) -> None:
        self._watches.pop(rule.rule_id, None)

    def _restore(self, payloads: list[dict]) -> int:
        """Rules as the journal last recorded them (payloads oldest first); waiting ones watch again."""
        latest: dict[str, dict] = {}
        for payload in payloads:
            latest[payload["rule_id"]] = payload
        for rule_id, payload in latest.items():
            rule = GttRule(**{k: v for k, v in payload.items() if k in _RULE_FIELDS})
            self._rules[rule_id] = rule
            number = _RULE_ID.fullmatch(rule_id)
            if number is not None:
                self._count = max(self._count, int(number.group(1)))
            if rule.status == GTT_NEW:
                self._watch(GttWatch(rule, bool(payload.get("fires_above"))))
        return len(latest)
