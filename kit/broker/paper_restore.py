"""A paper book back from its journal: orders, fills, positions and GTT rules as last recorded.

``PaperBroker(journal=...)`` calls ``restore`` once, before it trades. Open
orders wait for ticks again (a stop-limit that had triggered stays
triggered), and a bracket the process left half done is made whole
(``_mend_brackets``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kit.broker.book import restore_fills_and_positions
from kit.broker.paper_book import PAPER_ID, Working
from kit.core.orders import COMPLETE, OPEN, ORDER_COLUMNS, REJECTED, Order, counts_as_open

if TYPE_CHECKING:  # pragma: no cover
    from kit.broker.gtt_paper import PaperGtt
    from kit.broker.paper_book import PaperBook
    from kit.broker.paper_matching import Matcher

__all__ = ["restore"]

log = logging.getLogger("kit.broker.paper")     # one logger for the paper broker, whichever part speaks


def restore(book: "PaperBook", matcher: "Matcher", gtt: "PaperGtt") -> dict:
    """Fill ``book`` (and ``gtt``) from its journal; returns what came back:
    ``{"orders", "active", "fills", "positions"}``, and ``"gtt_rules"`` if there were any."""
    journal = book.journal
    order_names = set(ORDER_COLUMNS)
    triggered = {e["client_id"] for e in journal.events("paper_trigger")}
    legs: dict[str, list[Working | Order]] = {}
    entries: list[Order] = []
    for record in journal.orders():
        number = PAPER_ID.fullmatch(str(record.get("order_id")))
        if number is None:
            raise ValueError(f"{journal.path} holds order {record.get('order_id')!r}, which is not a "
                             "paper order: give paper trading a journal of its own")
        order = Order(**{k: v for k, v in record.items() if k in order_names})
        book.orders[order.order_id] = order
        # Continue after the highest id, so an id never names two orders in one journal.
        book.order_count = max(book.order_count, int(number.group(1)))
        if order.status == REJECTED:
            continue
        # Created in submission order, as submit did: positions list in the order they had.
        instrument = book.instrument(order.token, order.exchange_type)
        working = None
        if order.status == OPEN:
            working = Working(order)
            # It has rested all along: a tick through its limit now fills it at the limit, not the gap.
            working.resting = True
            working.triggered = order.order_id in triggered
            instrument.pending.append(working)
            if counts_as_open(order):
                instrument.add_open(order.side, order.qty)
        if order.parent_id:
            legs.setdefault(order.parent_id, []).append(working or order)
        elif order.target is not None and order.status == COMPLETE:
            entries.append(order)
    positions = restore_fills_and_positions(journal, book.fills, book.instrument)
    gtt_events = sorted(journal.events("paper_gtt") + journal.events("paper_gtt_fire"), key=lambda e: e["seq"])
    rules = gtt._restore([e["payload"] for e in gtt_events])
    _mend_brackets(book, matcher, entries, legs)
    restored = {"orders": len(book.orders), "active": sum(o.status == OPEN for o in book.orders.values()),
                "fills": len(book.fills), "positions": positions}
    if rules:
        restored["gtt_rules"] = rules
    if restored["orders"] or rules:
        # Loud on purpose: a paper book carried over from an earlier session is not a fresh start.
        log.warning("paper broker: restored %(orders)d orders (%(active)d open), %(fills)d fills and "
                    "%(positions)d positions from the journal", restored)
    return restored


def _mend_brackets(book: "PaperBook", matcher: "Matcher", entries: list[Order], legs: dict[str, list]) -> None:
    """Pair each bracket's open legs again, cancel a leg whose sibling filled while the cancel was
    not yet recorded, and place the legs of a filled entry that has none (the process died between
    the entry's fill and its legs)."""
    for parent_id, found in legs.items():
        waiting = [w for w in found if isinstance(w, Working)]
        if any(isinstance(o, Order) and o.status == COMPLETE for o in found):
            for working in waiting:
                instrument = book.instrument(working.order.token, working.order.exchange_type)
                matcher.cancel_leg(working, instrument, f"bracket {parent_id}: its other leg filled")
                instrument.pending = [w for w in instrument.pending if w is not working]
        elif len(waiting) == 2:
            waiting[0].sibling, waiting[1].sibling = waiting[1], waiting[0]
    for entry in entries:
        if entry.order_id not in legs:
            instrument = book.instrument(entry.token, entry.exchange_type)
            instrument.pending.extend(matcher.bracket_legs(entry, instrument, entry.tick_seq, entry.avg_price))
