"""The paper broker: orders from signals, fills from later ticks, positions and P&L.

The engine calls ``on_tick`` for every tick *before* the strategy sees it, then
``submit`` for each signal the strategy returns. So an order can never fill at
the tick that produced it: the earliest fill is the next tick of the same
instrument, which is the honest assumption for a strategy that reacts to a
price after it was printed.

    broker = PaperBroker()
    broker.on_tick(t1)                               # nothing pending: no fills
    order = broker.submit(Signal.buy(t1, qty=65), t1)
    order.status, order.order_id                     # ('OPEN', 'P000001')
    broker.on_tick(t2)                               # (Fill(... price=t2.ltp ...),)
    broker.pnl()                                     # {'realized': 0.0, 'unrealized': ..., 'total': ...}

Fill prices:

* MARKET fills its whole quantity at the ltp of the next tick of its instrument.
* LIMIT is judged first against the next tick of its instrument. If that tick
  is already through the limit (BUY: ltp <= limit, SELL: ltp >= limit) the
  order was marketable and fills at that ltp, which is at or better than the
  limit. Otherwise it rests, and the first later tick that crosses it fills it
  at the limit price: a resting order trades at its own price, and a tick that
  gaps through it does not earn the paper trader the gap.

Positions carry a signed quantity (+ long, - short) and the average price of
the open quantity. A fill against the position realizes
``(exit - avg) × quantity closed`` (sign flipped for shorts); a fill larger
than the position closes it and opens the remainder at the fill price.
Unrealized P&L is ``(last - avg) × qty`` with ``last`` the latest tick's ltp.

Threads: one ``threading.Lock`` guards every order, fill and position. The
objects handed out (``Order``, ``Fill``, ``Position``) are copies or immutable,
so a notebook can read them while the strategy thread keeps trading. See
``PaperBroker.on_tick`` for why its fast path takes no lock.

A journal (opt-in) keeps the paper book across a kernel restart. Every
submit, fill and cancel is committed to it (``kit.store.journal``) before it is
applied in memory, as the live broker does; a new broker on the same file
restores orders, fills and positions, and open orders can still fill:

    broker = PaperBroker(journal=Journal("paper.sqlite", synchronous="NORMAL"))
    broker.restored                  # {'orders': 12, 'active': 1, 'fills': 10, 'positions': 2}
    broker.close()                   # closes the journal

    kit.LiveTrader(kit.TraderConfig(feed="sim", journal="paper.sqlite"))   # the same through the engine

The commits run on the tick thread (fills happen in ``on_tick``): each order
pays one at submit and one at its fill. With ``synchronous="FULL"`` each is
an fsync, a fraction of a millisecond to several on a busy disk; ``"NORMAL"``
is cheaper and still survives a killed process
(``scripts/bench_paper_journal.py`` measures both). Without a journal nothing
is written anywhere and the tick path is unchanged.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Callable

from kit.broker.book import (MARK_JUMP, MARK_LOW, InstrumentState, PositionBook, frame, position_record,
                             restore_fills_and_positions)
from kit.broker.rules import DEFAULT_PRICE_COLLAR
from kit.core.listeners import Listeners
from kit.core.orders import (CANCELLED, COMPLETE, FILL_COLUMNS, NO_FILLS, OPEN, ORDER_COLUMNS, POSITION_COLUMNS,
                             REJECTED, Fill, Order, Position, fill_row, order_row)
from kit.core.strategy import BUY, MARKET

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.store.journal import Journal
    from kit.core.strategy import Signal
    from kit.core.tick import Tick

# The order types, their statuses and columns are kit.core.orders'; paper trading is where most code meets them.
__all__ = ["PaperBroker", "Order", "Fill", "Position", "OPEN", "COMPLETE", "CANCELLED", "REJECTED", "NO_FILLS",
           "ORDER_COLUMNS", "FILL_COLUMNS", "POSITION_COLUMNS"]

log = logging.getLogger(__name__)

# The name tests/test_paper_journal.py imports; remove once it imports InstrumentState from kit.broker.book.
_Instrument = InstrumentState

# A paper order's id: "P" and a zero-padded counter that a restored broker continues.
_PAPER_ID = re.compile(r"P(\d+)")


class _Working:
    """A pending order and whether it has already been judged against a tick."""
    __slots__ = ("order", "resting")

    def __init__(self, order: Order):
        self.order = order
        # False until the first tick after submission has seen it: only then is
        # a LIMIT order "resting" and filled at its own price when crossed.
        self.resting = False


def _paper_order_record(order: Order) -> dict:
    """The journal's ``order`` row of a paper order: its own id is its client id."""
    record = dict(zip(ORDER_COLUMNS, order_row(order)))
    record["client_id"] = order.order_id
    return record


def _fill_price(working: _Working, ltp: float) -> float | None:
    """The price ``working`` fills at on a tick with this ltp, or None if it does not."""
    order = working.order
    if order.order_type == MARKET:
        return ltp
    limit = order.limit_price
    crossed = ltp <= limit if order.side == BUY else ltp >= limit
    if not crossed:
        return None
    return limit if working.resting else ltp


class PaperBroker(PositionBook):
    """Simulated execution against the tick stream, safe to use from several threads.

        broker = PaperBroker()
        broker.add_fill_listener(print)          # called with each Fill
        order = broker.submit(Signal.sell(tick, qty=10, limit=101.5), tick)
        broker.cancel(order.order_id)            # True if it was still open
        broker.positions_df()                    # one row per traded instrument

    ``clock_ns`` supplies the wall-clock stamps (``submit_ns``, ``fill_ns``);
    tests pass a fake one. ``journal`` (a ``kit.store.journal.Journal``, optional)
    records every change before it is applied, and the book it already holds
    is restored; ``restored`` counts what came back (see the module docstring).
    """

    name = "paper"
    live = False

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns, journal: "Journal | None" = None,
                 instruments: "InstrumentMaster | None" = None,
                 price_collar: float | None = DEFAULT_PRICE_COLLAR):
        self._clock_ns = clock_ns
        # With a master, paper refuses what live would: unknown tokens, odd lots, off-tick prices.
        self.instruments = instruments
        self.price_collar = price_collar
        self.bad_marks = 0
        self._lock = threading.Lock()
        # token -> exchange type -> state. Nested rather than keyed by a
        # (exchange type, token) tuple so the tick path builds no tuple to look up.
        self._instruments: dict[str, dict[int, InstrumentState]] = {}
        self._orders: dict[str, Order] = {}
        self._fills: list[Fill] = []
        self._order_count = 0
        # Replaced, never mutated, so on_tick can iterate it without the lock.
        self._fill_listeners = Listeners()
        self.journal = journal
        self._closed = False
        self.restored = ({"orders": 0, "active": 0, "fills": 0, "positions": 0} if journal is None
                         else self._restore())

    def _restore(self) -> dict:
        """Orders, fills and positions as the journal last recorded them; open orders wait for ticks again."""
        order_names = set(ORDER_COLUMNS)
        for record in self.journal.orders():
            number = _PAPER_ID.fullmatch(str(record.get("order_id")))
            if number is None:
                raise ValueError(f"{self.journal.path} holds order {record.get('order_id')!r}, which is not a "
                                 "paper order: give paper trading a journal of its own")
            order = Order(**{k: v for k, v in record.items() if k in order_names})
            self._orders[order.order_id] = order
            # Continue after the highest id, so an id never names two orders in one journal.
            self._order_count = max(self._order_count, int(number.group(1)))
            if order.status == REJECTED:
                continue
            # Created in submission order, as submit did: positions list in the order they had.
            instrument = self._instrument(order.token, order.exchange_type)
            if order.status == OPEN:
                working = _Working(order)
                # It has rested all along: a tick through its limit now fills it at the limit, not the gap.
                working.resting = True
                instrument.pending.append(working)
                instrument.add_open(order.side, order.qty)
        positions = restore_fills_and_positions(self.journal, self._fills, self._instrument)
        restored = {"orders": len(self._orders),
                    "active": sum(o.status == OPEN for o in self._orders.values()),
                    "fills": len(self._fills), "positions": positions}
        if restored["orders"]:
            # Loud on purpose: a paper book carried over from an earlier session is not a fresh start.
            log.warning("paper broker: restored %(orders)d orders (%(active)d open), %(fills)d fills and "
                        "%(positions)d positions from the journal", restored)
        return restored

    def close(self) -> None:
        """Close the journal; without one, a no-op. A closed journaled broker refuses new orders."""
        if self.journal is None:
            return
        with self._lock:          # not in the middle of a commit
            self._closed = True
            self.journal.close()

    def _record(self, kind: str, **changes) -> None:
        """One journal transaction; the caller holds the lock and applies the change only if this returns.

        Paper commits happen on the tick thread anyway (fills are made in
        ``on_tick``), so holding the lock through them costs that thread
        nothing; readers on other threads wait for at most one commit.
        """
        if self._closed:
            raise RuntimeError("this paper broker was closed (its journal too): create a new trader to trade again")
        self.journal.record(kind, **changes)

    # -- the tick path -------------------------------------------------------

    def on_tick(self, tick: "Tick") -> tuple[Fill, ...]:
        """Mark the instrument's last price and fill its pending orders that this tick reaches.

        Returns the fills, in submission order (``NO_FILLS``, an empty tuple,
        when none). Fill listeners run after the lock is released, on the
        calling thread.

        Without pending orders this is two dict lookups and a float store, with
        no lock. That is safe because the lock-free part only reads: the dict
        lookups and the ``pending`` emptiness check are each atomic, and the
        last-price store is a single attribute write no other method makes. A
        race only moves an order by one tick: if ``submit`` appends just after
        the check saw an empty list, this tick came first and the order waits
        for the next one, exactly as if it had been submitted a moment later.
        When the list is not empty, matching re-reads it under the lock.
        """
        by_exchange = self._instruments.get(tick.token)
        instrument = by_exchange.get(tick.exchange_type) if by_exchange is not None else None
        if instrument is None:
            with self._lock:
                instrument = self._instrument(tick.token, tick.exchange_type)
        # The common case inline (a replay runs this a million times a second): no quote, no band,
        # a price within MARK_JUMP of the last one. Anything else is judged by InstrumentState.mark.
        ltp, last = tick.ltp, instrument.last_price
        if tick.quote is None and instrument.band is None and last * MARK_LOW <= ltp <= last * MARK_JUMP \
                and last != 0.0:
            instrument.last_price = ltp
            if instrument.suspect_count:
                instrument.suspect_count = 0
        elif not instrument.mark(tick):
            # An implausible price neither moves the mark nor fills an order.
            self.bad_marks += 1
            return NO_FILLS
        if not instrument.pending:
            return NO_FILLS
        with self._lock:
            fills = self._match(instrument, tick)
        for fill in fills:
            for listener in self._fill_listeners.current:
                try:
                    listener(fill)
                except Exception:
                    # A broken journal or widget must not stop trading.
                    log.exception("fill listener %r failed on %s", listener, fill)
        return fills

    def _match(self, instrument: InstrumentState, tick: "Tick") -> tuple[Fill, ...]:
        """Fill what this tick reaches; the caller holds the lock."""
        fills = []
        still_pending = []
        ltp = tick.ltp
        journal = self.journal
        for working in instrument.pending:
            price = _fill_price(working, ltp)
            if price is None:
                working.resting = True
                still_pending.append(working)
                continue
            order = working.order
            fill = Fill(order.order_id, order.token, order.exchange_type, order.side,
                        order.qty, price, self._clock_ns(), tick.seq)
            if journal is not None and not self._journal_fill(instrument, order, fill):
                still_pending.append(working)
                continue
            order.status = COMPLETE
            order.filled_qty = order.qty
            order.avg_price = price
            instrument.add_open(order.side, -order.qty)
            instrument.apply_fill(order.side, order.qty, price)
            fills.append(fill)
        if not fills:
            return NO_FILLS
        instrument.pending = still_pending
        self._fills.extend(fills)
        return tuple(fills)

    def _journal_fill(self, instrument: InstrumentState, order: Order, fill: Fill) -> bool:
        """Commit a fill: the order COMPLETE, the fill and the moved position, in one transaction.

        False if the journal refused it. A fill it did not record did not
        happen: the order stays pending for the next tick, and the tick path
        carries on rather than blinding the strategy.
        """
        done = dataclasses.replace(order, status=COMPLETE, filled_qty=order.qty, avg_price=fill.price)
        try:
            self._record("paper_fill", order=_paper_order_record(done),
                         fill=dict(zip(FILL_COLUMNS, fill_row(fill))),
                         position=position_record(instrument.after_fill(order.side, order.qty, fill.price)))
        except Exception:
            log.exception("paper order %s: the journal did not record its fill; it stays open", order.order_id)
            return False
        return True

    # -- orders --------------------------------------------------------------

    def submit(self, signal: "Signal", tick: "Tick | None" = None) -> Order:
        """Accept ``signal`` as an order and return a copy of it, the acknowledgement.

        ``tick`` is the tick the signal answered (None for a manual order from
        a notebook; ``signal.tick_seq`` is then recorded). The order is
        ``OPEN`` until a later tick of ``(signal.exchange_type, signal.token)``
        fills it, or ``REJECTED`` at once when ``tick`` is a SNAP_QUOTE of that
        instrument and the limit price is outside its circuit band.

            order = broker.submit(Signal.buy(tick, qty=1), tick)
            order.order_id, order.status     # ('P000001', 'OPEN')
        """
        with self._lock:
            self._order_count += 1
            # Stamped under the lock so submit_ns increases with the order id.
            order = Order(f"P{self._order_count:06d}", signal.token, signal.exchange_type,
                          signal.side, signal.qty, signal.order_type, signal.limit_price,
                          OPEN, 0, 0.0, signal.reason, self._clock_ns(),
                          tick.seq if tick is not None else signal.tick_seq, signal.tag)
            breach = self._admission_problem(signal.token, signal.exchange_type, signal.side, signal.qty,
                                             signal.order_type, signal.limit_price, tick)
            if breach:
                order.status, order.status_message = REJECTED, breach
            if self.journal is not None:
                try:
                    self._record("paper_reject" if breach else "paper_submit", order=_paper_order_record(order))
                except Exception as exc:
                    # An order the journal did not record is refused and kept nowhere; its id is not reused.
                    log.exception("paper order %s: the journal did not record it; refused", order.order_id)
                    order.status = REJECTED
                    order.status_message = f"the journal could not record it ({type(exc).__name__}: {exc})"
                    return order
            self._orders[order.order_id] = order
            if not breach:
                instrument = self._instrument(signal.token, signal.exchange_type)
                instrument.pending.append(_Working(order))
                instrument.add_open(order.side, order.qty)
            return dataclasses.replace(order)

    def cancel(self, order_id: str) -> bool:
        """Cancel an open order. False if it is unknown or no longer open."""
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status != OPEN:
                return False
            if self.journal is not None:
                self._record("paper_cancel", order=_paper_order_record(dataclasses.replace(order, status=CANCELLED)))
            instrument = self._instruments[order.token][order.exchange_type]
            instrument.pending = [w for w in instrument.pending if w.order is not order]
            instrument.add_open(order.side, -order.qty)
            order.status = CANCELLED
            return True

    def cancel_all(self) -> int:
        """Cancel every open order; returns how many were cancelled."""
        with self._lock:
            cancelled = 0
            journal = self.journal
            for by_exchange in self._instruments.values():
                for instrument in by_exchange.values():
                    try:
                        for working in instrument.pending:
                            if journal is not None:
                                self._record("paper_cancel", order=_paper_order_record(
                                    dataclasses.replace(working.order, status=CANCELLED)))
                            working.order.status = CANCELLED
                            instrument.add_open(working.order.side, -working.order.qty)
                            cancelled += 1
                    finally:
                        # If the journal raised, the orders it did not record stay open.
                        instrument.pending = [w for w in instrument.pending if w.order.status == OPEN]
            return cancelled

    def flatten(self, reason: str = "flatten", *, exchange_types=None) -> list[Order]:
        """A MARKET order against every non-zero position (of ``exchange_types`` only, if given);
        they fill on the next tick."""
        from kit.core.strategy import Signal
        orders = []
        for position in self._snapshots():
            if position.qty and (exchange_types is None or position.exchange_type in exchange_types):
                side = "SELL" if position.qty > 0 else "BUY"
                orders.append(self.submit(Signal(position.token, side, abs(position.qty), MARKET, None,
                                                 position.exchange_type, reason), None))
        return orders

    def open_orders(self) -> list[Order]:
        """Copies of the orders still waiting for a fill, oldest first."""
        with self._lock:
            return [dataclasses.replace(o) for o in self._orders.values() if o.status == OPEN]

    def add_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Call ``listener(fill)`` after every fill, on the thread that fed the tick.

        Exceptions it raises are logged and swallowed.
        """
        self._fill_listeners.add(listener)

    def remove_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Stop calling ``listener``; a no-op if it was never added."""
        self._fill_listeners.remove(listener)

    # -- tables (snapshot under the lock, build the frame outside it) -------

    def orders_df(self) -> "pandas.DataFrame":
        """One row per order ever submitted, columns ``ORDER_COLUMNS``."""
        with self._lock:
            rows = [order_row(o) for o in self._orders.values()]
        return frame(rows, ORDER_COLUMNS)
