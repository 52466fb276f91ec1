"""GTT rules ("good till triggered"): a LIMIT order the exchange places once the price crosses a trigger.

A rule outlives the trading day (``timeperiod`` days, 365 by default), unlike
an order. Both brokers hand out an object with the same calls
(``broker.gtt``: ``kit.broker.gtt_paper.PaperGtt`` fires on the paper ticks,
``kit.broker.gtt_live.LiveGtt`` sends the SDK's ``gttCreateRule`` and friends):

    rule_id = broker.gtt.create(token, exchange_type, "SELL", qty=65, trigger=95.0, price=94.5)
    broker.gtt.modify(rule_id, trigger=96.0, price=95.5)
    broker.gtt.rules()          # [GttRule(...)], newest first; rules_df() as a table
    broker.gtt.cancel(rule_id)

A rule fires when the price crosses its trigger from where it was when the
rule was created (``kit.core.orders.gtt_triggered``): its order is then
placed (status ``SENTTOEXCHANGE``) and trades like any LIMIT order.
Statuses as Angel One's ``ruleList`` spells them: ``NEW`` (waiting),
``SENTTOEXCHANGE`` (fired), ``CANCELLED``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import pandas

GTT_NEW, GTT_FIRED, GTT_CANCELLED = "NEW", "SENTTOEXCHANGE", "CANCELLED"
GTT_STATUSES = (GTT_NEW, GTT_FIRED, GTT_CANCELLED)
DEFAULT_TIMEPERIOD_DAYS = 365


@dataclass(slots=True)
class GttRule:
    """One GTT rule as the kit knows it. ``order_id`` is the order it placed once fired ("" before)."""
    rule_id: str
    token: str
    exchange_type: int
    side: str
    qty: int
    trigger_price: float
    price: float
    status: str
    product: str = "DELIVERY"
    order_id: str = ""
    created: str = ""


GTT_COLUMNS = list(GttRule.__dataclass_fields__)


class GttBook(Protocol):
    """What ``broker.gtt`` offers, paper or live."""

    def create(self, token: str, exchange_type: int, side: str, qty: int, trigger: float, price: float, *,
               product: str = "DELIVERY", timeperiod: int = DEFAULT_TIMEPERIOD_DAYS) -> str: ...

    def modify(self, rule_id: str, *, trigger: float | None = None, price: float | None = None,
               qty: int | None = None) -> None: ...

    def cancel(self, rule_id: str) -> None: ...

    def rules(self, statuses: tuple[str, ...] = GTT_STATUSES) -> list[GttRule]: ...

    def rules_df(self, statuses: tuple[str, ...] = GTT_STATUSES) -> "pandas.DataFrame": ...

    def seen(self) -> list[GttRule]:
        """The rules as last read or changed through this object, without asking the exchange (for a
        dashboard that redraws many times a second)."""
        ...

    def cancel_created(self) -> int:
        """Cancel every waiting rule this broker (its journal, live) created; the kill switch calls it."""
        ...
