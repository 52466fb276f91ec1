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
    broker.on_tick(t2)                               # (Fill(... price=t2.ltp, charges=...),)
    broker.pnl()                                     # {'realized', 'unrealized', 'total', 'charges', 'net'}

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
submit, fill, modify and cancel (a bracket's legs, a stop's trigger and the
GTT rules too) is committed to it (``kit.store.journal``) before it is
applied in memory, as the live broker does; a new broker on the same file
restores orders, fills and positions, and open orders can still fill:

    broker = PaperBroker(journal=Journal("paper.sqlite", synchronous="NORMAL"))
    broker.restored                  # {'orders': 12, 'active': 1, 'fills': 10, 'positions': 2}
    broker.close()                   # closes the journal

    kit.LiveTrader(kit.TraderConfig(feed="sim", journal="paper.sqlite"))   # the same through the engine

Without a journal nothing is written anywhere (what the commits cost: ``kit.broker.paper_book``).

The parts, each in its own module:

* ``PaperBroker`` (here): the facade. Submit, modify, cancel, flatten, the
  queries and the fill listeners; ``on_tick`` marks the price and hands a tick
  with pending orders to the matcher.
* ``kit.broker.paper_book``: ``PaperBook``, the state the parts share (orders,
  instruments and their pending lists, fills, the journal), and how an order
  enters (checked, journaled, booked), changes and is cancelled.
* ``kit.broker.paper_matching``: the tick-time rules, the simulated exchange's:
  which pending orders (MARKET, LIMIT, STOPLOSS_MARKET, STOPLOSS_LIMIT, a
  bracket's entry and legs) a tick fills and at what price, one-cancels-other,
  GTT rules firing.
* ``kit.broker.paper_costs``: the charges every fill carries, and the slippage
  model that prices market fills worse or later.
* ``kit.broker.paper_account``: the margin account (``capital``) that REJECTS
  what it cannot carry.
* ``kit.broker.paper_restore``: the book back from its journal.
* ``kit.broker.gtt_paper``: GTT rules (``broker.gtt``).
* ``kit.broker.book``: positions and P&L, shared with the live broker.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from kit.broker.book import MARK_JUMP, MARK_LOW, InstrumentState, PositionBook, frame
from kit.broker.gtt_paper import PaperGtt, rule_payload
from kit.broker.paper_account import PaperAccount
from kit.broker.paper_book import PaperBook, Working
from kit.broker.paper_costs import DEFAULT_CHARGES, FillCosts
from kit.broker.paper_matching import Matcher
from kit.broker.paper_restore import restore
from kit.broker.rules import DEFAULT_PRICE_COLLAR
from kit.broker.slippage import SlippageModel
from kit.core.listeners import Listeners
from kit.core.orders import (CANCELLED, COMPLETE, FILL_COLUMNS, NO_FILLS, OPEN, ORDER_COLUMNS, POSITION_COLUMNS,
                             REJECTED, Fill, Order, Position, order_row)
from kit.core.strategy import MARKET

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.broker.gtt import GttRule
    from kit.core.charges import Charges
    from kit.core.margin import MarginAccount
    from kit.core.strategy import Signal
    from kit.core.tick import Tick
    from kit.store.journal import Journal

# The order types, their statuses and columns are kit.core.orders'; paper trading is where most code meets them.
__all__ = ["PaperBroker", "Order", "Fill", "Position", "OPEN", "COMPLETE", "CANCELLED", "REJECTED", "NO_FILLS",
           "ORDER_COLUMNS", "FILL_COLUMNS", "POSITION_COLUMNS"]

log = logging.getLogger(__name__)

# The name tests/test_paper_journal.py imports; remove once it imports InstrumentState from kit.broker.book.
_Instrument = InstrumentState


def _copy(order: Order) -> Order:
    """A copy of ``order``: positional from its row, several times quicker than ``dataclasses.replace``."""
    return Order(*order_row(order))


class PaperBroker(PositionBook):
    """Simulated execution against the tick stream, safe to use from several threads.

        broker = PaperBroker()
        broker.add_fill_listener(print)          # called with each Fill
        order = broker.submit(Signal.sell(tick, qty=10, limit=101.5), tick)
        broker.modify(order.order_id, price=101.0)
        broker.cancel(order.order_id)            # True if it was still open
        broker.positions_df()                    # one row per traded instrument
        broker.pnl()                             # realized, unrealized, total (gross), charges, net

    ``clock_ns`` supplies the wall-clock stamps (``submit_ns``, ``fill_ns``);
    tests pass a fake one. ``journal`` (a ``kit.store.journal.Journal``, optional)
    records every change before it is applied, and the book it already holds
    is restored; ``restored`` counts what came back (see the module docstring).
    ``charges``: the model every fill is charged by (``Charges()`` by default,
    None for none) for ``product`` ("INTRADAY" or "DELIVERY": the NSE cash
    segment, and the margin rate). ``slippage``: a ``kit.broker.slippage``
    model (``NoSlippage()``: the next tick's price). ``capital``: rupees of a
    margin account that refuses what it cannot carry (None: no account).
    ``gtt``: GTT rules (``kit.broker.gtt_paper.PaperGtt``).
    """

    name = "paper"
    live = False

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns, journal: "Journal | None" = None,
                 instruments: "InstrumentMaster | None" = None,
                 price_collar: float | None = DEFAULT_PRICE_COLLAR,
                 charges: "Charges | None" = DEFAULT_CHARGES, product: str = "INTRADAY",
                 slippage: SlippageModel | None = None, capital: float | None = None):
        self._clock_ns = clock_ns              # PaperGtt stamps its rules by it too
        # The master (with one, paper refuses what live would: unknown tokens, odd lots, off-tick
        # prices) and what a fill costs.
        self._costs = costs = FillCosts(instruments, charges, product, slippage)
        self.price_collar = price_collar
        self.bad_marks = 0
        self._book = book = PaperBook(journal, clock_ns, costs, self._refusal)
        # PositionBook's state is the shared book's: the same lock, instruments and fills.
        self._lock, self._instruments, self._fills = book.lock, book.instrument_states, book.fills
        self._account = PaperAccount(capital, book.instrument_states, costs, self._pnl_locked)
        # Replaced, never mutated, so on_tick can iterate it without the lock.
        self._fill_listeners = Listeners()
        self.gtt = PaperGtt(self)
        self._matcher = Matcher(book, costs, self.gtt)
        self.restored = ({"orders": 0, "active": 0, "fills": 0, "positions": 0} if journal is None
                         else restore(book, self._matcher, self.gtt))

    # -- settings, kept by the parts that use them -------------------------------

    @property
    def instruments(self) -> "InstrumentMaster | None":
        """The instrument master orders are checked against (and lots, ticks, charges and margins read from)."""
        return self._costs.master

    @instruments.setter
    def instruments(self, master: "InstrumentMaster | None") -> None:
        self._costs.master = master

    @property
    def charges(self) -> "Charges | None":
        """The charges model every fill is charged by (None: no charges)."""
        return self._costs.model

    @charges.setter
    def charges(self, model: "Charges | None") -> None:
        self._costs.model = model

    @property
    def product(self) -> str:
        """The orders' product ("INTRADAY", "DELIVERY", ...): the NSE cash charges' segment, the margin rate."""
        return self._costs.product

    @product.setter
    def product(self, product: str) -> None:
        self._costs.product = product

    @property
    def slippage(self) -> SlippageModel:
        """The slippage model market fills are priced by (``kit.broker.slippage``)."""
        return self._costs.slippage

    @property
    def margin_account(self) -> "MarginAccount | None":
        """The margin account (``kit.core.margin``; None without ``capital``)."""
        return self._account.margin_account

    @property
    def journal(self) -> "Journal | None":
        """The journal every change is committed to before it is applied (None: none)."""
        return self._book.journal

    @journal.setter
    def journal(self, journal: "Journal | None") -> None:
        self._book.journal = journal

    # -- the tick path -------------------------------------------------------

    def on_tick(self, tick: "Tick") -> tuple[Fill, ...]:
        """Mark the instrument's last price and fill its pending orders that this tick reaches.

        Returns the fills, in submission order (``NO_FILLS``, an empty tuple,
        when none). Fill listeners run after the lock is released, on the
        calling thread.

        Without pending orders (or GTT rules) this is two dict lookups and a
        float store, with no lock. That is safe because the lock-free part only
        reads: the dict lookups and the ``pending`` emptiness check are each
        atomic, and the last-price store is a single attribute write no other
        method makes. A race only moves an order by one tick: if ``submit``
        appends just after the check saw an empty list, this tick came first and
        the order waits for the next one, exactly as if it had been submitted a
        moment later. When the list is not empty, matching re-reads it under the lock.
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
            fills = self._matcher.match(instrument, tick)
        for fill in fills:
            for listener in self._fill_listeners.current:
                try:
                    listener(fill)
                except Exception:
                    # A broken journal or widget must not stop trading.
                    log.exception("fill listener %r failed on %s", listener, fill)
        return fills

    # -- orders --------------------------------------------------------------

    def submit(self, signal: "Signal", tick: "Tick | None" = None) -> Order:
        """Accept ``signal`` as an order and return a copy of it, the acknowledgement.

        ``tick`` is the tick the signal answered (None for a manual order from
        a notebook; ``signal.tick_seq`` is then recorded). The order is
        ``OPEN`` until a later tick of ``(signal.exchange_type, signal.token)``
        fills it, or ``REJECTED`` at once (``status_message`` says why) when the
        order rules refuse it (e.g. a limit price outside the circuit band of a
        SNAP_QUOTE ``tick``, a stop whose trigger the price has already reached)
        or the margin account cannot carry it.

            order = broker.submit(Signal.buy(tick, qty=1), tick)
            order.order_id, order.status     # ('P000001', 'OPEN')
        """
        with self._lock:
            order = self._book.new_order(signal.token, signal.exchange_type, signal.side, signal.qty,
                                         signal.order_type, signal.limit_price, signal.reason,
                                         tick.seq if tick is not None else signal.tick_seq, signal.tag,
                                         trigger_price=signal.trigger_price, variety=signal.variety,
                                         target=signal.target, stoploss=signal.stoploss)
            self._book.place(order, tick, pend=True)
            return _copy(order)

    def _refusal(self, order: Order, tick: "Tick | None", instead_of: Working | None = None) -> str:
        """Why ``order`` may not be placed, or a pending order (``instead_of``) changed into it: the
        order rules live and paper share, then the margin account ("" if it may); the caller holds the lock."""
        return self._admission_problem(order.token, order.exchange_type, order.side, order.qty, order.order_type,
                                       order.limit_price, tick, order.trigger_price) \
            or self._account.refusal(order, tick, instead_of)

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None,
               trigger: float | None = None) -> bool:
        """Change an open order's limit price, quantity and/or (a stop's) trigger, at once.

        False (and a logged warning saying why) if the order is unknown or no
        longer open, or the change breaks the rules a new order must pass (a
        stop's new trigger already reached by the price included), or the
        margin account cannot carry it. A changed LIMIT is judged on the next
        tick as a new order is: through its new limit, it fills at that tick's price.

            broker.modify(stop.order_id, trigger=99.0)      # trail a stop
        """
        with self._lock:
            problem = self._book.change(order_id, price, qty, trigger)
            if problem:
                log.warning("paper order %s: modify refused: %s", order_id, problem)
                return False
            return True

    def cancel(self, order_id: str) -> bool:
        """Cancel an open order. False if it is unknown or no longer open.

        A bracket's entry cancelled before it fills places no legs; cancelling
        either exit leg cancels both, as the exchange does (the position stays open).
        """
        with self._lock:
            return self._book.cancel(order_id)

    def cancel_all(self) -> int:
        """Cancel every open order (GTT rules are not orders: ``gtt.cancel_created()``); returns how many."""
        with self._lock:
            return self._book.cancel_all()

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

    def _record_gtt(self, rule: "GttRule", fires_above: bool) -> None:
        """Journal a GTT rule as it now stands (PaperGtt calls it, holding the lock); raises if not recorded."""
        if self.journal is not None:
            self._book.record("paper_gtt", client_id=rule.rule_id, payload=rule_payload(rule, fires_above))

    # -- queries -------------------------------------------------------------

    def open_orders(self) -> list[Order]:
        """Copies of the orders still waiting for a fill (a bracket's legs included), oldest first."""
        with self._lock:
            return [_copy(o) for o in self._book.orders.values() if o.status == OPEN]

    def account(self) -> dict:
        """``{"capital", "blocked", "pnl_net", "available"}`` in rupees: the margin account
        (``PaperBroker(capital=...)``; capital and available are None without one). ``available`` is
        capital + net P&L − blocked; ``blocked`` is the margin of open positions and of the opening
        part of open orders."""
        with self._lock:
            return self._account.summary()

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
            rows = [order_row(o) for o in self._book.orders.values()]
        return frame(rows, ORDER_COLUMNS)

    def close(self) -> None:
        """Close the journal; without one, a no-op. A closed journaled broker refuses new orders."""
        if self.journal is None:
            return
        with self._lock:          # not in the middle of a commit
            self._book.closed = True
            self.journal.close()
