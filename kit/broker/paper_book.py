"""The paper broker's book: the state its parts share, its journal, and how an order enters, changes, ends.

``PaperBook`` holds the orders, each instrument's state (its pending list
included: the ``Working`` orders and GTT rules a tick there is matched
against), the fills and the journal, guarded by one ``lock``. The facade
(``kit.broker.paper``), the matcher (``kit.broker.paper_matching``) and the
restore (``kit.broker.paper_restore``) work on it, the caller holding the lock.

Every order, submitted, a bracket's leg or a fired GTT rule's, enters through
``PaperBook.place``: checked, journaled, then booked; ``change`` (a modify)
checks a changed order as a new one; ``cancel`` and a bracket's
one-cancels-other end one (``record_cancel``, then ``cancelled``). Every change
is committed to the journal (``record``) before it is applied in memory, as
the live broker does; a fill's commit is the matcher's.

The commits run on the tick thread (fills happen in ``on_tick``): each order
pays one at submit and one at its fill. With ``synchronous="FULL"`` each is
an fsync, a fraction of a millisecond to several on a busy disk; ``"NORMAL"``
is cheaper and still survives a killed process
(``scripts/bench_paper_journal.py`` measures both). Without a journal the tick
path is unchanged.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
from typing import TYPE_CHECKING, Callable

from kit.broker.book import InstrumentState, instrument_state
from kit.core.orders import CANCELLED, OPEN, ORDER_COLUMNS, REJECTED, Fill, Order, counts_as_open, order_row
from kit.core.strategy import BUY, LIMIT, NORMAL, STOP_TYPES, STOPLOSS_LIMIT

if TYPE_CHECKING:  # pragma: no cover
    from kit.broker.paper_costs import FillCosts
    from kit.core.tick import Tick
    from kit.store.journal import Journal

__all__ = ["PaperBook", "Working", "order_record", "rests_on_arrival", "PAPER_ID"]

log = logging.getLogger("kit.broker.paper")     # one logger for the paper broker, whichever part speaks

# A paper order's id: "P" and a zero-padded counter that a restored broker continues.
PAPER_ID = re.compile(r"P(\d+)")


class Working:
    """A pending order and where it stands: judged yet, triggered yet, its bracket sibling."""
    __slots__ = ("order", "resting", "wait", "triggered", "sibling")

    def __init__(self, order: Order, wait: int = 0):
        self.order = order
        # False until the first tick that judged it: only then is a LIMIT order (or a triggered
        # stop-limit) "resting", and filled at its own price when crossed.
        self.resting = False
        # Ticks of its instrument still to let pass before it is judged (a LatencyTicks delay).
        self.wait = wait
        self.triggered = False              # a STOPLOSS_LIMIT whose trigger was reached: now a LIMIT
        self.sibling: Working | None = None     # a bracket leg: the other leg (one cancels the other)


def rests_on_arrival(order: Order, instrument: InstrumentState, tick: "Tick | None") -> bool:
    """A LIMIT the price it is placed at does not reach rests at once, as at the exchange: a later tick
    through it fills it at its limit. ``tick``: the one it answered (the price, before any other)."""
    last = instrument.last_price
    if not last and tick is not None and tick.token == order.token and tick.exchange_type == order.exchange_type:
        last = tick.ltp
    if not last:
        return False            # no price yet: judged on the first tick, as a new order
    return not (last <= order.limit_price if order.side == BUY else last >= order.limit_price)


def order_record(order: Order) -> dict:
    """The journal's ``order`` row of a paper order: its own id is its client id."""
    record = dict(zip(ORDER_COLUMNS, order_row(order)))
    record["client_id"] = order.order_id
    return record


class PaperBook:
    """The paper broker's shared state (see the module docstring).

    ``refusal(order, tick, instead_of=None)`` says why an order may not be
    placed, or a pending order (``instead_of``) changed into it ("" if it
    may): the order rules and the margin account, which the facade owns.
    ``costs`` gives the ticks a new order waits (a ``LatencyTicks`` delay).
    """

    def __init__(self, journal: "Journal | None", clock_ns: Callable[[], int], costs: "FillCosts",
                 refusal: Callable[..., str]):
        self.lock = threading.Lock()
        # token -> exchange type -> state. Nested rather than keyed by a
        # (exchange type, token) tuple so the tick path builds no tuple to look up.
        self.instrument_states: dict[str, dict[int, InstrumentState]] = {}
        self.orders: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.order_count = 0
        self.journal = journal
        self.closed = False
        self.clock_ns = clock_ns
        self._costs = costs
        self._refusal = refusal

    def instrument(self, token: str, exchange_type: int) -> InstrumentState:
        """The state for an instrument, created on first use."""
        return instrument_state(self.instrument_states, token, exchange_type)

    # -- the journal -----------------------------------------------------------

    def record(self, kind: str, **changes) -> None:
        """One journal transaction; the caller holds the lock and applies the change only if this returns.

        Paper commits happen on the tick thread anyway (fills are made in
        ``on_tick``), so holding the lock through them costs that thread
        nothing; readers on other threads wait for at most one commit.
        """
        if self.closed:
            raise RuntimeError("this paper broker was closed (its journal too): create a new trader to trade again")
        self.journal.record(kind, **changes)

    # -- order entry, change and cancel ---------------------------------------------

    def new_order(self, token: str, exchange_type: int, side: str, qty: int, order_type: str,
                  limit_price: float | None, reason: str, tick_seq: int, tag: str = "",
                  trigger_price: float | None = None, variety: str = NORMAL, target: float | None = None,
                  stoploss: float | None = None, parent_id: str = "") -> Order:
        """The next paper order, OPEN; the caller holds the lock."""
        self.order_count += 1
        # Stamped under the lock so submit_ns increases with the order id. Positional: it is the submit path.
        return Order(f"P{self.order_count:06d}", token, exchange_type, side, qty, order_type, limit_price,
                     OPEN, 0, 0.0, reason, self.clock_ns(), tick_seq, tag, "", trigger_price, variety, target,
                     stoploss, parent_id)

    def place(self, order: Order, tick: "Tick | None", kind: str = "paper_submit", *,
              reject_kind: str = "paper_reject", check: bool = True, payload: dict | None = None,
              keep_unrecorded: bool = False, pend: bool = False) -> Working | None:
        """Check, journal and book a new order; the caller holds the lock. Returns its ``Working``
        (None: the order was REJECTED, or the journal refused it), appended to the instrument's
        pending list if ``pend``, else for the caller to put where it belongs.

        ``check``: the order rules and the margin account (a bracket's legs skip them: the
        exchange places those). ``keep_unrecorded``: book the order even if the journal fails
        (a bracket leg protects a position that already exists).
        """
        breach = self._refusal(order, tick) if check else ""
        if breach:
            order.status, order.status_message = REJECTED, breach
        if self.journal is not None:
            try:
                self.record(reject_kind if breach else kind, order=order_record(order),
                            **({"payload": payload} if payload is not None else {}))
            except Exception as exc:
                log.exception("paper order %s: the journal did not record it; %s", order.order_id,
                              "kept anyway" if keep_unrecorded else "refused")
                if not keep_unrecorded:
                    # An order the journal did not record is refused and kept nowhere; its id is not reused.
                    order.status = REJECTED
                    order.status_message = f"the journal could not record it ({type(exc).__name__}: {exc})"
                    return None
        self.orders[order.order_id] = order
        if breach:
            return None
        instrument = self.instrument(order.token, order.exchange_type)
        if counts_as_open(order):
            instrument.add_open(order.side, order.qty)
        wait = self._costs.wait
        working = Working(order, wait)
        if order.order_type == LIMIT and not wait:
            working.resting = rests_on_arrival(order, instrument, tick)
        if pend:
            instrument.pending.append(working)
        return working

    def change(self, order_id: str, price: float | None, qty: int | None, trigger: float | None) -> str:
        """``PaperBroker.modify``: change an open order, checked and journaled as a new one is; the caller
        holds the lock. Returns why it was not changed ("" if it was)."""
        order = self.orders.get(order_id)
        problem = "" if order is not None and order.status == OPEN else \
            f"it is {'unknown' if order is None else order.status}"
        instrument = working = None
        if not problem:
            instrument = self.instrument(order.token, order.exchange_type)
            working = next((w for w in instrument.pending if w.order is order), None)
            problem = "it is not pending" if working is None else \
                _change_problem(order, working, price, qty, trigger)
        changed = None
        if not problem:
            changed = dataclasses.replace(order, qty=qty if qty is not None else order.qty,
                                          limit_price=price if price is not None else order.limit_price,
                                          trigger_price=trigger if trigger is not None else order.trigger_price)
            problem = self._refusal(changed, None, instead_of=working)
        if not problem and self.journal is not None:
            try:
                self.record("paper_modify", order=order_record(changed))
            except Exception as exc:
                problem = f"the journal could not record it ({type(exc).__name__}: {exc})"
        if problem:
            return problem
        if counts_as_open(order) and changed.qty != order.qty:
            instrument.add_open(order.side, changed.qty - order.qty)
        order.qty, order.limit_price, order.trigger_price = changed.qty, changed.limit_price, changed.trigger_price
        if price is not None and (order.order_type == LIMIT or working.triggered) and not working.wait:
            working.resting = rests_on_arrival(order, instrument, None)   # judged as a new order is
        return ""

    def cancel(self, order_id: str) -> bool:
        """``PaperBroker.cancel``; the caller holds the lock. Raises if the journal did not record it."""
        order = self.orders.get(order_id)
        if order is None or order.status != OPEN:
            return False
        instrument = self.instrument_states[order.token][order.exchange_type]
        working = next((w for w in instrument.pending if w.order is order), None)
        sibling = working.sibling if working is not None else None
        self.record_cancel(order)
        self.cancelled(order, instrument)
        if sibling is not None and sibling.order.status == OPEN:
            # A bracket's exits are one unit, as at the exchange: cancelling one leg cancels both
            # (the position stays open).
            why = f"bracket {order.parent_id}: its other leg {order.order_id} was cancelled"
            self.record_cancel(sibling.order, why)
            self.cancelled(sibling.order, instrument, why)
        instrument.pending = [w for w in instrument.pending if w.order is None or w.order.status == OPEN]
        return True

    def cancel_all(self) -> int:
        """``PaperBroker.cancel_all``; the caller holds the lock. If the journal raises, the orders it
        did not record stay open."""
        cancelled = 0
        for by_exchange in self.instrument_states.values():
            for instrument in by_exchange.values():
                try:
                    for working in instrument.pending:
                        order = working.order
                        if order is None or order.status != OPEN:
                            continue
                        self.record_cancel(order)
                        self.cancelled(order, instrument)
                        cancelled += 1
                finally:
                    instrument.pending = [w for w in instrument.pending if w.order is None or w.order.status == OPEN]
        return cancelled

    def record_cancel(self, order: Order, why: str = "") -> None:
        """Journal an order's cancel (without a journal, nothing); raises if it was not recorded."""
        if self.journal is not None:
            self.record("paper_cancel", order=order_record(
                dataclasses.replace(order, status=CANCELLED, status_message=why or order.status_message)))

    @staticmethod
    def cancelled(order: Order, instrument: InstrumentState, why: str = "") -> None:
        """Apply an order's cancel; the caller drops it from the pending list."""
        order.status = CANCELLED
        if why:
            order.status_message = why
        if counts_as_open(order):
            instrument.add_open(order.side, -order.qty)


def _change_problem(order: Order, working: Working, price, qty, trigger) -> str:
    """Why this change cannot apply to this order at all ("" if it can)."""
    if price is None and qty is None and trigger is None:
        return "nothing to change (give price, qty or trigger)"
    if price is not None and order.order_type not in (LIMIT, STOPLOSS_LIMIT):
        return f"a {order.order_type} order has no limit price"
    if trigger is not None:
        if order.order_type not in STOP_TYPES:
            return f"a {order.order_type} order has no trigger"
        if working.triggered:
            return (f"its trigger {order.trigger_price} was already reached: it is a LIMIT at "
                    f"{order.limit_price} now")
    return ""
