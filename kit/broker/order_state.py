"""Live orders and their shared state: what an Angel One order update or order-book row does to an order.

``LiveOrder`` is an ``Order`` plus what the exchange adds. ``LiveBook`` is the
state the live broker's parts share (the facade in ``kit.broker.live``, the
sender thread, the reconciler, the order-update socket's thread): orders,
fills, positions, the send queue and the journal, with the two locks that
guard them:

* ``lock`` guards the in-memory state and is held only briefly (the tick thread takes it);
* ``apply_lock`` serialises each "compute, journal, apply" sequence on the order threads.

Every change is journaled before it is applied (``LiveBook.record``); a journal
that cannot write closes the trading gate. ``LiveBook.apply_row`` applies one
row: its status through Angel One's tables, and each increase of the cumulative
filled quantity as a fill at the price it implies.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import queue
import threading
import time
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable

from kit.broker.book import InstrumentState, instrument_state, position_record, restore_fills_and_positions
from kit.broker.gate import TradingGate
from kit.broker.timings import Timing
from kit.core.listeners import Listeners
from kit.core.orders import (ACTIVE, CANCELLED, COMPLETE, OPEN, PENDING, REJECTED, TERMINAL, Fill, Order,
                             counts_as_open)
from kit.core.strategy import LIMIT, ROBO, STOP_TYPES, STOPLOSS_LIMIT

if TYPE_CHECKING:  # pragma: no cover
    from kit.core.charges import Charges
    from kit.store.journal import Journal

log = logging.getLogger("kit.broker.live")     # one logger for the live broker, whichever part speaks

# Angel One's order statuses (``orderData.status``) in the kit's four.
ANGEL_STATUS = {
    "complete": COMPLETE, "cancelled": CANCELLED, "rejected": REJECTED,
    "open": OPEN, "modified": OPEN, "open pending": OPEN, "validation pending": OPEN,
    "put order req received": OPEN, "modify pending": OPEN, "modify validation pending": OPEN,
    "modify order req received": OPEN, "trigger pending": OPEN, "cancel pending": OPEN,
    "cancel order req received": OPEN, "after market order req received": OPEN,
}
# The same by the update's "order-status" code, for statuses the table above does not know.
ANGEL_STATUS_BY_CODE = {"AB01": OPEN, "AB02": CANCELLED, "AB03": REJECTED, "AB04": OPEN, "AB05": COMPLETE,
                        "AB06": OPEN, "AB07": OPEN, "AB08": OPEN, "AB09": OPEN, "AB10": OPEN, "AB11": OPEN}


@dataclass(slots=True)
class LiveOrder(Order):
    """``Order`` plus what the exchange adds: its order id, the trading symbol, the product."""
    broker_order_id: str = ""
    symbol: str = ""
    exchange: str = ""
    product: str = ""
    updated_ns: int = 0


LIVE_ORDER_COLUMNS = [f.name for f in dataclasses.fields(LiveOrder)]
live_order_row = operator.attrgetter(*LIVE_ORDER_COLUMNS)


def order_record(order: LiveOrder) -> dict:
    """The journal's ``order`` row (a flat dataclass: attrgetter, not asdict's deep copy)."""
    record = dict(zip(LIVE_ORDER_COLUMNS, live_order_row(order)))
    record["client_id"] = order.order_id
    return record


def to_int(value) -> int:
    """Angel One's numbers arrive as strings, numbers or blanks; a blank is 0."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def transition(order: LiveOrder, data: dict, code: str, clock_ns: Callable[[], int]) -> LiveOrder | None:
    """``order`` after this row, or None if the row tells nothing new (stale or repeated).

    ``code`` is the update's "order-status" ("" for an order-book row). The
    filled quantity only grows; a terminal order keeps its status; a
    modification (AB04, "modified") changes the quantity and limit price.
    """
    new = dataclasses.replace(order)
    if not new.broker_order_id and data.get("orderid"):
        new.broker_order_id = str(data["orderid"])
    raw_status = str(data.get("status") or data.get("orderstatus") or "").lower()
    status = ANGEL_STATUS.get(raw_status) or ANGEL_STATUS_BY_CODE.get(code)
    if status is None:
        log.warning("live order %s: unknown status %r (%s); keeping %s", order.order_id, raw_status, code,
                    order.status)
        status = order.status
    filled = to_int(data.get("filledshares")) if str(data.get("filledshares", "")).strip() else \
        max(0, to_int(data.get("quantity")) - to_int(data.get("unfilledshares")))
    if filled > new.filled_qty:
        new.filled_qty, new.avg_price = filled, to_float(data.get("averageprice"))
    if order.status not in TERMINAL:
        if status in (OPEN, PENDING) and (raw_status == "modified" or code == "AB04"):
            new.qty = to_int(data.get("quantity")) or new.qty
            if new.order_type in (LIMIT, STOPLOSS_LIMIT) and to_float(data.get("price")):
                new.limit_price = to_float(data.get("price"))
            if new.order_type in STOP_TYPES and to_float(data.get("triggerprice")):
                new.trigger_price = to_float(data.get("triggerprice"))
        new.status = status
    if data.get("text") and new.status in (REJECTED, CANCELLED):
        new.status_message = str(data["text"])
    same = (new.status == order.status and new.filled_qty == order.filled_qty and new.qty == order.qty
            and new.limit_price == order.limit_price and new.broker_order_id == order.broker_order_id
            and new.trigger_price == order.trigger_price
            and new.status_message == order.status_message)
    if same:
        return None
    new.updated_ns = clock_ns()
    return new


# What only the kit knows until the request is answered: journaled durably before it is sent.
INTENTS = frozenset({"intent", "modify_intent", "cancel_intent"})


class LiveBook:
    """The live broker's shared state and the locks that guard it. See the module docstring.

    ``send_state`` follows each place request: queued -> sending -> sent, or
    unknown (no answer: the order book decides), or cancelling (the gate
    closed while it waited). ``outbox`` is the sender thread's queue.
    ``reconcile_wanted`` and ``position_check_wanted`` wake the reconciler.
    """

    def __init__(self, journal: "Journal", gate: TradingGate, *, clock_ns: Callable[[], int],
                 product: str, variety: str, duration: str):
        self.journal = journal
        self.gate = gate
        self.clock_ns = clock_ns
        self.product, self.variety, self.duration = product, variety, duration
        self.client = None                 # the logged-in SmartConnect, while connected
        self.lock = threading.Lock()
        self.apply_lock = threading.RLock()
        self.instrument_states: dict[str, dict[int, InstrumentState]] = {}
        self.orders: dict[str, LiveOrder] = {}
        self.by_broker_id: dict[str, LiveOrder] = {}
        self.fills: list[Fill] = []
        self.fill_listeners = Listeners()
        self.timing: dict[str, Timing] = {}
        self.send_state: dict[str, str] = {}
        self.queued = 0                              # place requests waiting for the sender
        self.force: set[str] = set()                 # flattening orders: allowed through a halt
        self.unknown_since: dict[str, float] = {}    # no answer to the place request, since (monotonic)
        self.cancel_before_send: set[str] = set()
        self.cancel_wanted: set[str] = set()         # cancels waiting for the exchange's order id
        self.restored_ids: list[str] = []            # orders active when the journal was restored
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.reconcile_wanted = threading.Event()
        self.position_check_wanted = threading.Event()
        self.journal_error = ""
        self.stats = {"placed": 0, "rejected": 0, "send_unknown": 0, "rate_limited": 0, "updates": 0,
                      "foreign_updates": 0, "reconciles": 0, "reconcile_errors": 0, "lost": 0,
                      "cancelled_unsent": 0, "journal_errors": 0, "position_checks": 0,
                      "position_differences": 0, "bad_marks": 0, "queue_full": 0, "margin_checks": 0,
                      "margin_refused": 0}
        self.margin_check = False          # ask Angel One's margin API before each opening order
        # fn(order-book row) -> a LiveOrder for an order one of this journal's GTT rules placed, or None
        # (kit.broker.gtt_live); called under ``lock`` for rows of orders the kit does not know.
        self.gtt_order_of = None
        self.charges: "Charges | None" = None        # the model every fill is charged by
        # fn(token, exchange type) -> the instrument type ("OPTIDX", ...) the charges' segment needs, or None.
        self.describe: Callable[[str, int], str | None] = lambda token, exchange_type: None

    def restore(self) -> dict:
        """Orders, fills and positions as the journal last recorded them; returns what came back."""
        field_names = set(LIVE_ORDER_COLUMNS)
        for record in self.journal.orders():
            order = LiveOrder(**{k: v for k, v in record.items() if k in field_names})
            self.orders[order.order_id] = order
            if order.broker_order_id:
                self.by_broker_id[order.broker_order_id] = order
            if order.status == PENDING:
                # The intent is journaled; whether it reached the exchange is unknown until reconciled.
                self.send_state[order.order_id] = "unknown"
                self.unknown_since[order.order_id] = time.monotonic()
            self.instrument(order.token, order.exchange_type)
            self.account_open(None, order)
        positions = restore_fills_and_positions(self.journal, self.fills, self.instrument)
        self.restored_ids = [oid for oid, o in self.orders.items() if o.status in ACTIVE]
        restored = {"orders": len(self.orders), "active": len(self.restored_ids),
                    "fills": len(self.fills), "positions": positions}
        if restored["orders"]:
            log.warning("live broker: restored %(orders)d orders (%(active)d active), %(fills)d fills and "
                        "%(positions)d positions from the journal", restored)
        return restored

    def instrument(self, token: str, exchange_type: int) -> InstrumentState:
        """The state for an instrument, created on first use; the caller holds ``lock``."""
        return instrument_state(self.instrument_states, token, exchange_type)

    def record(self, kind: str, **changes) -> bool:
        """Journal one change; on failure close the gate (trading halts) and return False.

        Only intents (a place, modify or cancel about to be requested) wait for
        the fsync; everything else the exchange's order book and positions can
        tell again (``Journal.record(durable=False)``).
        """
        try:
            self.journal.record(kind, durable=kind in INTENTS, **changes)
            return True
        except Exception as exc:
            self.stats["journal_errors"] += 1
            self.journal_error = f"{type(exc).__name__}: {exc}"
            log.error("live broker: the journal could not record %r (%s): trading halted", kind, self.journal_error)
            self.gate.close("journal", f"the journal cannot be written ({self.journal_error}): trading halted; "
                                       "kill() still cancels and flattens")
            return False

    def add(self, order: LiveOrder, problem: str, *, force: bool) -> None:
        """A new order: refused with ``problem`` (journaled later, off the tick thread) or queued for the sender.

        The caller holds ``lock``. ``force``: a flattening order, sent through a halt.
        """
        self.orders[order.order_id] = order
        self.instrument(order.token, order.exchange_type)
        if problem:
            order.status, order.status_message = REJECTED, problem
            self.stats["rejected"] += 1
            self.outbox.put(("record", order.order_id))
        else:
            self.send_state[order.order_id] = "queued"
            self.queued += 1
            if force:
                self.force.add(order.order_id)
            self.account_open(None, order)
            self.outbox.put(("place", order.order_id))

    def commit(self, new: LiveOrder) -> None:
        """Make ``new`` (journaled already) the order's state."""
        with self.lock:
            self.commit_locked(new)

    def commit_locked(self, new: LiveOrder) -> None:
        self.account_open(self.orders.get(new.order_id), new)
        self.orders[new.order_id] = new
        if new.broker_order_id:
            self.by_broker_id[new.broker_order_id] = new
        if new.order_id in self.cancel_wanted and (new.broker_order_id or new.status not in ACTIVE):
            self.cancel_wanted.discard(new.order_id)
            if new.status in ACTIVE:
                self.outbox.put(("cancel", new.order_id))

    def account_open(self, old: LiveOrder | None, new: LiveOrder) -> None:
        """Move the instrument's open units by what changed between two states of one order (lock held)."""
        if not counts_as_open(new):
            return
        before = old.qty - old.filled_qty if old is not None and old.status in ACTIVE else 0
        after = new.qty - new.filled_qty if new.status in ACTIVE else 0
        if after != before:
            self.instrument(new.token, new.exchange_type).add_open(new.side, after - before)

    def charge(self, order: LiveOrder, qty: int, price: float) -> float:
        """The model's charges on a fill of ``qty`` at ``price`` (its share of the order's brokerage)."""
        if self.charges is None:
            return 0.0
        try:
            return self.charges.for_fill(order.exchange_type, order.token, order.side, qty, price, order.product,
                                         instrument=self.describe(order.token, order.exchange_type),
                                         order_value=order.qty * price).total
        except Exception:
            # A fill is a fact: a rate the model lacks must not lose it (logged, charged 0).
            log.exception("live order %s: the charges model could not price a fill", order.order_id)
            return 0.0

    def any_active(self) -> bool:
        with self.lock:
            return any(o.status in ACTIVE for o in self.orders.values())

    # ------------------------------------------------------------------ rows from the exchange
    def on_update(self, message: dict) -> None:
        """One order-update frame (on the update socket's thread)."""
        data = message.get("orderData")
        if message.get("order-status") == "AB00" or not isinstance(data, dict) or not data.get("orderid"):
            return
        self.stats["updates"] += 1
        self.apply_row(data, "update", message.get("order-status", ""))

    def find(self, data: dict) -> LiveOrder | None:
        """The order a row is about: by the exchange's order id, or by ``ordertag`` (the kit's id), or a
        bracket's exit leg seen for the first time (``parentorderid`` names one of the kit's orders)."""
        order = self.by_broker_id.get(str(data.get("orderid", "")))
        if order is None:
            tag = data.get("ordertag") or ""
            order = self.orders.get(tag) if tag else None
        if order is None and data.get("parentorderid"):
            parent = self.by_broker_id.get(str(data["parentorderid"]))
            if parent is not None:
                order = self.bracket_leg(parent, data)
        if order is None and self.gtt_order_of is not None:
            order = self.gtt_order_of(data)
            if order is not None:
                self.orders[order.order_id] = order
                self.by_broker_id[order.broker_order_id] = order
                self.account_open(None, order)
        return order

    def bracket_leg(self, parent: LiveOrder, data: dict) -> LiveOrder:
        """A bracket's exit leg, placed by the exchange when the entry ``parent`` filled: known from now on
        as ``<entry id>-T`` (target) or ``-S`` (stop). The caller holds ``lock``; the row applied next
        journals it."""
        order_type = str(data.get("ordertype", ""))
        leg = LiveOrder(f"{parent.order_id}-{'S' if order_type in STOP_TYPES else 'T'}", parent.token,
                        parent.exchange_type, str(data.get("transactiontype", "")), to_int(data.get("quantity")),
                        order_type, to_float(data.get("price")) if order_type in (LIMIT, STOPLOSS_LIMIT) else None,
                        PENDING, 0, 0.0, f"bracket {parent.order_id}", parent.submit_ns, parent.tick_seq,
                        parent.tag, "", trigger_price=to_float(data.get("triggerprice")) or None, variety=ROBO,
                        parent_id=parent.order_id, broker_order_id=str(data.get("orderid", "")),
                        symbol=parent.symbol, exchange=parent.exchange, product=parent.product,
                        updated_ns=self.clock_ns())
        self.orders[leg.order_id] = leg
        self.by_broker_id[leg.broker_order_id] = leg
        self.account_open(None, leg)
        return leg

    def apply_row(self, data: dict, source: str, code: str = "") -> bool:
        """Apply one order-book row (``source``: "update" or "orderbook"): journal first, then memory.

        Returns False if the row changed nothing. A row for an order the kit
        does not know, from the update socket, asks for a position check:
        someone else traded this account.
        """
        fill = None
        with self.apply_lock:
            with self.lock:
                order = self.find(data)
                if order is None:
                    self.stats["foreign_updates"] += 1
                    if source == "update":
                        # Someone else traded this account (the app, the broker's square-off):
                        # the positions may have changed under the kit.
                        self.position_check_wanted.set()
                        self.reconcile_wanted.set()
                    return False
                new = transition(order, data, code, self.clock_ns)
                if new is None:
                    return False
                if new.filled_qty > order.filled_qty:
                    qty = new.filled_qty - order.filled_qty
                    price = round((new.avg_price * new.filled_qty - order.avg_price * order.filled_qty) / qty, 6)
                    fill = Fill(order.order_id, order.token, order.exchange_type, order.side, qty,
                                price, self.clock_ns(), order.tick_seq, self.charge(new, qty, price))
                    current = self.instrument(order.token, order.exchange_type)
                    moved = current.after_fill(order.side, qty, fill.price, fill.charges)
                if order.order_id in self.unknown_since:
                    self.unknown_since.pop(order.order_id, None)
                    self.send_state[order.order_id] = "sent"
            self.record(source, order=order_record(new), payload=data,
                        fill=dataclasses.asdict(fill) if fill else None,
                        position=position_record(moved) if fill else None)
            with self.lock:
                self.commit_locked(new)
                if fill is not None:
                    current.adopt(moved)
                    self.fills.append(fill)
                listeners = self.fill_listeners.current
        timing = self.timing.get(new.order_id)
        if timing is not None:
            now = perf_counter_ns()
            if not timing.first_update and source == "update":
                timing.first_update = now
            if new.status == COMPLETE and not timing.filled:
                timing.filled = now
        if fill is not None:
            for listener in listeners:
                try:
                    listener(fill)
                except Exception:
                    log.exception("fill listener %r failed on %s", listener, fill)
        return True
