"""The paper broker's tick-time rules: which pending orders a tick fills, at what price, and what follows.

``Matcher.match`` runs for a tick whose instrument has pending orders or GTT
rules (``PaperBroker.on_tick`` calls it, holding the lock). The rules are the
simulated exchange's (``kit.core.orders``, shared with it):

* MARKET fills its whole quantity at the ltp of the next tick of its instrument.
* LIMIT: one the last price does not reach when it is placed (BUY: last >
  limit, SELL: last < limit) rests at once, as at the exchange
  (``kit.broker.paper_book.rests_on_arrival``), and the first later tick that
  crosses it fills it at the limit price: a resting order trades at its own
  price, and a tick that gaps through it does not earn the paper trader the
  gap. One that is marketable when placed (or placed before any price was
  seen) is judged against the next tick of its instrument: if that tick is
  through the limit (BUY: ltp <= limit, SELL: ltp >= limit) it fills at that
  ltp, at or better than the limit; otherwise it rests.
* STOPLOSS_MARKET waits for the first later tick whose ltp reaches its trigger
  (``stop_triggered``: a BUY stop at or above, a SELL stop at or below) and
  fills at that ltp. (A stop the last price has already reached is REJECTED
  at submit, as the exchange refuses it.)
* STOPLOSS_LIMIT becomes, on its triggering tick, a LIMIT judged against that
  tick: it fills at the ltp if marketable, else rests and fills at its limit
  when a later tick crosses it.
* A bracket (``Signal(target=, stoploss=)``, variety ROBO) enters as MARKET or
  LIMIT. Its fill places two exits (``bracket_legs``, on the master's tick
  grid), each with ``parent_id`` the entry's id: a LIMIT at the target and a
  STOPLOSS_MARKET at the stop, judged from the next tick on. The first to fill
  cancels the other.
* A GTT rule (``kit.broker.gtt_paper``) whose trigger a tick crosses places a
  LIMIT order, judged on that very tick.

A market fill's price is moved by the slippage model, and every fill carries
its charges (``kit.broker.paper_costs``). A fill is journaled before it is
applied; one the journal refuses did not happen, and its order waits for the
next tick.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from kit.broker.book import position_record
from kit.broker.gtt import GTT_FIRED, GTT_NEW
from kit.broker.gtt_paper import rule_payload
from kit.broker.paper_book import Working, order_record
from kit.core.orders import (COMPLETE, FILL_COLUMNS, NO_FILLS, OPEN, Fill, Order, bracket_legs, counts_as_open,
                             fill_row, gtt_triggered, stop_triggered)
from kit.core.strategy import BUY, LIMIT, MARKET, NORMAL, ROBO, STOPLOSS_LIMIT, STOPLOSS_MARKET

if TYPE_CHECKING:  # pragma: no cover
    from kit.broker.book import InstrumentState
    from kit.broker.gtt_paper import GttWatch, PaperGtt
    from kit.broker.paper_book import PaperBook
    from kit.broker.paper_costs import FillCosts
    from kit.core.tick import Tick

__all__ = ["Matcher"]

log = logging.getLogger("kit.broker.paper")     # one logger for the paper broker, whichever part speaks


class Matcher:
    """Matches an instrument's pending orders against each of its ticks; every method expects the
    caller to hold the book's lock."""

    def __init__(self, book: "PaperBook", costs: "FillCosts", gtt: "PaperGtt"):
        self._book = book
        self._costs = costs
        self._gtt = gtt

    def match(self, instrument: "InstrumentState", tick: "Tick") -> tuple[Fill, ...]:
        """Fill what this tick reaches, fire the GTT rules it crosses.

        A filled bracket's legs join the pending list after the orders judged
        here: they are judged from the next tick on. A fired GTT rule's order
        is judged on this very tick, as the exchange places it the moment the
        rule fires: marketable, it fills at this tick's price.
        """
        book, costs = self._book, self._costs
        fills = []
        keep = []
        ltp = tick.ltp
        journal = book.journal
        swept = False           # a bracket leg was cancelled by its sibling's fill
        todo = list(instrument.pending)
        for working in todo:
            order = working.order
            if order is None:
                # A GTT rule waiting for its trigger (kit.broker.gtt_paper).
                rule = working.rule
                if rule.status != GTT_NEW:
                    continue
                if not gtt_triggered(working.fires_above, rule.trigger_price, ltp):
                    keep.append(working)
                    continue
                placed = self._fire_gtt(working, tick)
                if placed is working:
                    keep.append(working)        # the journal failed: the rule tries again next tick
                elif placed is not None:
                    todo.append(placed)         # judged below, on this tick
                continue
            if order.status != OPEN:
                continue        # a bracket leg whose sibling filled earlier on this tick
            if working.wait:
                working.wait -= 1
                keep.append(working)
                continue
            price = self._price(working, order, ltp, tick)
            if price is None:
                keep.append(working)
                continue
            charges = costs.charge(order, price) if costs.model is not None else 0.0
            fill = Fill(order.order_id, order.token, order.exchange_type, order.side,
                        order.qty, price, book.clock_ns(), tick.seq, charges)
            if journal is not None and not self._journal_fill(instrument, order, fill):
                keep.append(working)
                continue
            order.status = COMPLETE
            order.filled_qty = order.qty
            order.avg_price = price
            if counts_as_open(order):
                instrument.add_open(order.side, -order.qty)
            instrument.apply_fill(order.side, order.qty, price, charges)
            fills.append(fill)
            if order.variety == ROBO:
                if order.parent_id:
                    sibling = working.sibling
                    if sibling is not None and sibling.order.status == OPEN:
                        self.cancel_leg(sibling, instrument, f"bracket {order.parent_id}: its other leg "
                                                             f"{order.order_id} filled at {price}")
                        swept = True
                elif order.target is not None:
                    keep.extend(self.bracket_legs(order, instrument, tick.seq, price))
        instrument.pending = [w for w in keep if w.order is None or w.order.status == OPEN] if swept else keep
        if not fills:
            return NO_FILLS
        book.fills.extend(fills)
        return tuple(fills)

    def _price(self, working: Working, order: Order, ltp: float, tick: "Tick") -> float | None:
        """The price ``order`` fills at on this tick, or None if it does not (a stop may trigger)."""
        order_type = order.order_type
        if order_type == MARKET or order_type == STOPLOSS_MARKET:
            if order_type == STOPLOSS_MARKET and not stop_triggered(order.side, order.trigger_price, ltp):
                return None
            slip = self._costs.slip
            return ltp if slip is None else slip(order.side, ltp, tick,
                                                 self._costs.spec(order.token, order.exchange_type)[0])
        if order_type == STOPLOSS_LIMIT and not working.triggered:
            if not stop_triggered(order.side, order.trigger_price, ltp):
                return None
            # Triggered: from now on a LIMIT, judged first against this very tick.
            working.triggered = True
            working.resting = False
            self._note_trigger(order, tick)
        limit = order.limit_price
        crossed = ltp <= limit if order.side == BUY else ltp >= limit
        if not crossed:
            working.resting = True
            return None
        return limit if working.resting else ltp

    def _note_trigger(self, order: Order, tick: "Tick") -> None:
        """Journal that a stop-limit triggered, so a restart keeps it a LIMIT (a failure only costs that)."""
        if self._book.journal is None:
            return
        try:
            self._book.record("paper_trigger", client_id=order.order_id,
                              payload={"ltp": tick.ltp, "tick_seq": tick.seq})
        except Exception:
            log.exception("paper order %s: the journal did not record its trigger", order.order_id)

    def _journal_fill(self, instrument: "InstrumentState", order: Order, fill: Fill) -> bool:
        """Commit a fill: the order COMPLETE, the fill and the moved position, in one transaction.

        False if the journal refused it. A fill it did not record did not
        happen: the order stays pending for the next tick, and the tick path
        carries on rather than blinding the strategy.
        """
        done = dataclasses.replace(order, status=COMPLETE, filled_qty=order.qty, avg_price=fill.price)
        try:
            self._book.record("paper_fill", order=order_record(done),
                              fill=dict(zip(FILL_COLUMNS, fill_row(fill))),
                              position=position_record(instrument.after_fill(order.side, order.qty, fill.price,
                                                                             fill.charges)))
        except Exception:
            log.exception("paper order %s: the journal did not record its fill; it stays open", order.order_id)
            return False
        return True

    # -- what a fill sets off: a bracket's legs, one-cancels-other, a GTT rule's order --

    def bracket_legs(self, entry: Order, instrument: "InstrumentState", tick_seq: int,
                     fill_price: float) -> list[Working]:
        """The two exits of a bracket whose entry just filled (``bracket_legs``), booked and journaled;
        the caller puts them in the pending list. They cancel each other: whichever fills first."""
        book = self._book
        made = []
        for leg in bracket_legs(entry.side, entry.qty, fill_price, entry.target, entry.stoploss,
                                self._costs.spec(entry.token, entry.exchange_type)[0]):
            order = book.new_order(entry.token, entry.exchange_type, leg.side, leg.qty, leg.order_type,
                                   leg.limit_price, f"bracket {leg.name}", tick_seq, entry.tag,
                                   trigger_price=leg.trigger_price, variety=ROBO, parent_id=entry.order_id)
            made.append(book.place(order, None, "paper_bracket_leg", check=False, keep_unrecorded=True))
        made[0].sibling, made[1].sibling = made[1], made[0]
        return made

    def cancel_leg(self, working: Working, instrument: "InstrumentState", why: str) -> None:
        """Cancel a bracket leg because its sibling filled; the caller drops it from the pending list."""
        order = working.order
        try:
            self._book.record_cancel(order, why)
        except Exception:
            # Cancelled anyway: one-cancels-other must hold; a restore cancels it again.
            log.exception("paper order %s: the journal did not record its cancel", order.order_id)
        self._book.cancelled(order, instrument, why)

    def _fire_gtt(self, watch: "GttWatch", tick: "Tick") -> "Working | GttWatch | None":
        """A GTT rule's trigger was crossed: place its LIMIT order. Returns the order's ``Working`` (judged
        on the firing tick), None if it was rejected, or the rule itself if the journal failed."""
        book = self._book
        rule = watch.rule
        order = book.new_order(rule.token, rule.exchange_type, rule.side, rule.qty, LIMIT, rule.price,
                               f"GTT {rule.rule_id}", tick.seq, variety=NORMAL)
        fired = dataclasses.replace(rule, status=GTT_FIRED, order_id=order.order_id)
        working = book.place(order, tick, "paper_gtt_fire", reject_kind="paper_gtt_fire",
                             payload=rule_payload(fired, watch.fires_above))
        if order.order_id not in book.orders:
            return watch            # not recorded: the rule did not fire, and tries again on the next tick
        rule.status, rule.order_id = GTT_FIRED, order.order_id
        self._gtt._fired(rule)
        return working
