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

Fill prices (the simulated exchange's rules, ``kit.core.orders``, shared with it):

* MARKET fills its whole quantity at the ltp of the next tick of its instrument.
* LIMIT: one the last price does not reach when it is placed (BUY: last >
  limit, SELL: last < limit) rests at once, as at the exchange, and the first
  later tick that crosses it fills it at the limit price: a resting order
  trades at its own price, and a tick that gaps through it does not earn the
  paper trader the gap. One that is marketable when placed (or placed before
  any price was seen) is judged against the next tick of its instrument: if
  that tick is through the limit (BUY: ltp <= limit, SELL: ltp >= limit) it
  fills at that ltp, at or better than the limit; otherwise it rests.
* STOPLOSS_MARKET waits for the first later tick whose ltp reaches its trigger
  (``stop_triggered``: a BUY stop at or above, a SELL stop at or below) and
  fills at that ltp. A stop the last price has already reached is REJECTED at
  submit, as the exchange refuses it.
* STOPLOSS_LIMIT becomes, on its triggering tick, a LIMIT judged against that
  tick: it fills at the ltp if marketable, else rests and fills at its limit
  when a later tick crosses it.
* A bracket (``Signal(target=, stoploss=)``, variety ROBO) enters as MARKET or
  LIMIT. Its fill places two exits (``bracket_legs``, on the master's tick
  grid), each with ``parent_id`` the entry's id: a LIMIT at the target and a
  STOPLOSS_MARKET at the stop, judged from the next tick on. The first to fill
  cancels the other.
* GTT rules (``broker.gtt``, ``kit.broker.gtt_paper``) fire a LIMIT order when a
  tick crosses their trigger; it is judged from the next tick on.

Every fill carries its ``charges`` (``kit.core.charges.Charges().for_fill``
for the broker's ``product``, the segment from the instrument master when there
is one; ``PaperBroker(charges=None)`` turns them off); positions add them up and
``pnl()`` reports ``total`` (gross) and ``net = total - charges``.
``PaperBroker(slippage=...)`` prices market fills worse or later
(``kit.broker.slippage``: ``FixedTicks``, ``SpreadFraction``, ``LatencyTicks``);
the default fills at the printed price of the next tick. ``PaperBroker(capital=...)``
keeps a margin account (``kit.core.margin``) that REJECTS an order whose
opening part needs more margin than is available (``account()``).

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
from kit.core.charges import Charges
from kit.broker.gtt import GTT_FIRED, GTT_NEW
from kit.broker.gtt_paper import PaperGtt, rule_payload
from kit.core.margin import MarginAccount, margin_required, opening_qty
from kit.broker.rules import DEFAULT_PRICE_COLLAR
from kit.broker.slippage import NoSlippage, SlippageModel
from kit.core.listeners import Listeners
from kit.core.orders import (CANCELLED, COMPLETE, FILL_COLUMNS, NO_FILLS, OPEN, ORDER_COLUMNS, POSITION_COLUMNS,
                             REJECTED, Fill, Order, Position, bracket_legs, counts_as_open, fill_row,
                             gtt_triggered, order_row, stop_triggered)
from kit.core.strategy import BUY, LIMIT, MARKET, NORMAL, ROBO, SELL, STOP_TYPES, STOPLOSS_LIMIT, STOPLOSS_MARKET

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.broker.gtt import GttRule
    from kit.broker.gtt_paper import GttWatch
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

class _DefaultCharges:
    """``PaperBroker(charges=...)`` left out: Angel One's published rates, a new ``Charges()``."""

    def __repr__(self) -> str:
        return "Charges()"


_DEFAULT_CHARGES = _DefaultCharges()
# How many (instrument, side, quantity, price) charges a broker remembers before it starts afresh.
_CHARGES_REMEMBERED = 65_536


class _Working:
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
        self.sibling: _Working | None = None     # a bracket leg: the other leg (one cancels the other)


def _copy(order: Order) -> Order:
    """A copy of ``order``: positional from its row, several times quicker than ``dataclasses.replace``."""
    return Order(*order_row(order))


def _paper_order_record(order: Order) -> dict:
    """The journal's ``order`` row of a paper order: its own id is its client id."""
    record = dict(zip(ORDER_COLUMNS, order_row(order)))
    record["client_id"] = order.order_id
    return record


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
                 charges: "Charges | None" = _DEFAULT_CHARGES, product: str = "INTRADAY",
                 slippage: SlippageModel | None = None, capital: float | None = None):
        self._clock_ns = clock_ns
        self._specs: dict[tuple[str, int], tuple] = {}                  # (tick size, type, strike)
        self._segments: dict[tuple[str, int], str | None] = {}          # the charges' segment
        self._charged: dict[tuple, float] = {}                          # see _charge
        # With a master, paper refuses what live would: unknown tokens, odd lots, off-tick prices.
        self.instruments = instruments
        self.price_collar = price_collar
        self.product = product
        self.charges = Charges() if charges is _DEFAULT_CHARGES else charges
        if slippage is None:
            slippage = NoSlippage()
        if not isinstance(slippage, SlippageModel):
            raise TypeError(f"slippage takes a kit.broker.slippage model (NoSlippage(), FixedTicks(n), ...), "
                            f"not {type(slippage).__name__}")
        self.slippage = slippage
        # The tick path's view of it: no call at all for the default, and the ticks an order waits.
        self._slip = None if type(slippage) is NoSlippage else slippage.price
        self._wait = slippage.delay_ticks - 1
        self.margin_account = MarginAccount(capital) if capital is not None else None
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
        self.gtt = PaperGtt(self)
        self.restored = ({"orders": 0, "active": 0, "fills": 0, "positions": 0} if journal is None
                         else self._restore())

    @property
    def instruments(self) -> "InstrumentMaster | None":
        """The instrument master orders are checked against (and lots, ticks, charges and margins read from)."""
        return self._master

    @instruments.setter
    def instruments(self, master: "InstrumentMaster | None") -> None:
        self._master = master
        self._specs, self._segments, self._charged = {}, {}, {}

    @property
    def charges(self) -> "Charges | None":
        """The charges model every fill is charged by (None: no charges)."""
        return self._charges

    @charges.setter
    def charges(self, model: "Charges | None") -> None:
        if model is not None and not callable(getattr(model, "for_fill", None)):
            raise TypeError(f"charges takes a kit.Charges (or None for none), not {type(model).__name__}")
        self._charges = model
        self._segments, self._charged = {}, {}

    @property
    def product(self) -> str:
        """The orders' product ("INTRADAY", "DELIVERY", ...): the NSE cash charges' segment, the margin rate."""
        return self._product

    @product.setter
    def product(self, product: str) -> None:
        self._product = product
        self._segments, self._charged = {}, {}

    def _restore(self) -> dict:
        """Orders, fills, positions and GTT rules as the journal last recorded them; open orders wait for
        ticks again (a stop-limit that had triggered stays triggered), and a bracket is made whole."""
        order_names = set(ORDER_COLUMNS)
        triggered = {e["client_id"] for e in self.journal.events("paper_trigger")}
        legs: dict[str, list[_Working | Order]] = {}
        entries: list[Order] = []
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
            working = None
            if order.status == OPEN:
                working = _Working(order)
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
        positions = restore_fills_and_positions(self.journal, self._fills, self._instrument)
        gtt_events = sorted(self.journal.events("paper_gtt") + self.journal.events("paper_gtt_fire"),
                            key=lambda e: e["seq"])
        rules = self.gtt._restore([e["payload"] for e in gtt_events])
        self._mend_brackets(entries, legs)
        restored = {"orders": len(self._orders),
                    "active": sum(o.status == OPEN for o in self._orders.values()),
                    "fills": len(self._fills), "positions": positions}
        if rules:
            restored["gtt_rules"] = rules
        if restored["orders"] or rules:
            # Loud on purpose: a paper book carried over from an earlier session is not a fresh start.
            log.warning("paper broker: restored %(orders)d orders (%(active)d open), %(fills)d fills and "
                        "%(positions)d positions from the journal", restored)
        return restored

    def _mend_brackets(self, entries: list[Order], legs: dict[str, list]) -> None:
        """After a restore: pair each bracket's open legs again, cancel a leg whose sibling filled
        while the cancel was not yet recorded, and place the legs of a filled entry that has none
        (the process died between the entry's fill and its legs)."""
        for parent_id, found in legs.items():
            waiting = [w for w in found if isinstance(w, _Working)]
            if any(isinstance(o, Order) and o.status == COMPLETE for o in found):
                for working in waiting:
                    instrument = self._instrument(working.order.token, working.order.exchange_type)
                    self._cancel_leg(working, instrument, f"bracket {parent_id}: its other leg filled")
                    instrument.pending = [w for w in instrument.pending if w is not working]
            elif len(waiting) == 2:
                waiting[0].sibling, waiting[1].sibling = waiting[1], waiting[0]
        for entry in entries:
            if entry.order_id not in legs:
                instrument = self._instrument(entry.token, entry.exchange_type)
                instrument.pending.extend(self._bracket_legs(entry, instrument, entry.tick_seq, entry.avg_price))

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
        """Fill what this tick reaches, fire the GTT rules it crosses; the caller holds the lock.

        A filled bracket's legs join the pending list after the orders judged
        here: they are judged from the next tick on. A fired GTT rule's order
        is judged on this very tick, as the exchange places it the moment the
        rule fires: marketable, it fills at this tick's price.
        """
        fills = []
        keep = []
        ltp = tick.ltp
        journal = self.journal
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
            charges = self._charge(order, price) if self._charges is not None else 0.0
            fill = Fill(order.order_id, order.token, order.exchange_type, order.side,
                        order.qty, price, self._clock_ns(), tick.seq, charges)
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
                        self._cancel_leg(sibling, instrument, f"bracket {order.parent_id}: its other leg "
                                                              f"{order.order_id} filled at {price}")
                        swept = True
                elif order.target is not None:
                    keep.extend(self._bracket_legs(order, instrument, tick.seq, price))
        instrument.pending = [w for w in keep if w.order is None or w.order.status == OPEN] if swept else keep
        if not fills:
            return NO_FILLS
        self._fills.extend(fills)
        return tuple(fills)

    def _price(self, working: _Working, order: Order, ltp: float, tick: "Tick") -> float | None:
        """The price ``order`` fills at on this tick, or None if it does not (a stop may trigger)."""
        order_type = order.order_type
        if order_type == MARKET:
            slip = self._slip
            return ltp if slip is None else slip(order.side, ltp, tick, self._spec(order.token, order.exchange_type)[0])
        if order_type == STOPLOSS_MARKET:
            if not stop_triggered(order.side, order.trigger_price, ltp):
                return None
            slip = self._slip
            return ltp if slip is None else slip(order.side, ltp, tick, self._spec(order.token, order.exchange_type)[0])
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
        if self.journal is None:
            return
        try:
            self._record("paper_trigger", client_id=order.order_id, payload={"ltp": tick.ltp, "tick_seq": tick.seq})
        except Exception:
            log.exception("paper order %s: the journal did not record its trigger", order.order_id)

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
                         position=position_record(instrument.after_fill(order.side, order.qty, fill.price,
                                                                        fill.charges)))
        except Exception:
            log.exception("paper order %s: the journal did not record its fill; it stays open", order.order_id)
            return False
        return True

    # -- what an instrument is: tick size, type, strike; its charges segment ------

    def _spec(self, token: str, exchange_type: int) -> tuple:
        """``(tick size or None, instrument type, strike)`` of an instrument, from the master (cached)."""
        key = (token, exchange_type)
        spec = self._specs.get(key)
        if spec is None:
            inst = self._master.get(token, exchange_type) if self._master is not None else None
            spec = self._specs[key] = ((inst.tick_size or None, inst.instrument_type or "", inst.strike or 0.0)
                                       if inst is not None else (None, "", 0.0))
        return spec

    def _charge(self, order: Order, price: float) -> float:
        """The charges of ``order`` filling whole at ``price``: ``Charges.for_fill(...).total``.

        Remembered by (instrument, side, quantity, price), the only inputs once the model and product
        are fixed: a replay fills the same quantity at the same few prices again and again, and a dict
        lookup costs a tenth of the arithmetic.
        """
        key = (order.token, order.exchange_type, order.side, order.qty, price)
        total = self._charged.get(key)
        if total is None:
            if len(self._charged) >= _CHARGES_REMEMBERED:
                self._charged.clear()
            total = self._charged[key] = self._charge_of(order, price)
        return total

    def _charge_of(self, order: Order, price: float) -> float:
        model = self._charges
        key = (order.token, order.exchange_type)
        try:
            segment = self._segments[key]
        except KeyError:
            instrument_type = self._spec(order.token, order.exchange_type)[1] or None
            segment = model.segment(order.exchange_type, order.token, self._product, instrument_type)
            try:
                model.rates(segment)
            except KeyError as exc:
                log.warning("paper broker: fills of token %s (exchange type %s) are not charged: %s",
                            order.token, order.exchange_type, exc.args[0])
                segment = None
            self._segments[key] = segment
        if segment is None:
            return 0.0
        return model.for_fill(order.exchange_type, segment, order.side, order.qty, price, self._product).total

    # -- orders --------------------------------------------------------------

    def _new_order(self, token: str, exchange_type: int, side: str, qty: int, order_type: str,
                   limit_price: float | None, reason: str, tick_seq: int, tag: str = "",
                   trigger_price: float | None = None, variety: str = NORMAL, target: float | None = None,
                   stoploss: float | None = None, parent_id: str = "") -> Order:
        """The next paper order, OPEN; the caller holds the lock."""
        self._order_count += 1
        # Stamped under the lock so submit_ns increases with the order id. Positional: it is the submit path.
        return Order(f"P{self._order_count:06d}", token, exchange_type, side, qty, order_type, limit_price,
                     OPEN, 0, 0.0, reason, self._clock_ns(), tick_seq, tag, "", trigger_price, variety, target,
                     stoploss, parent_id)

    def _place(self, order: Order, tick: "Tick | None", kind: str = "paper_submit", *,
               reject_kind: str = "paper_reject", check: bool = True, payload: dict | None = None,
               keep_unrecorded: bool = False, pend: bool = False) -> _Working | None:
        """Check, journal and book a new order; the caller holds the lock. Returns its ``_Working``
        (None: the order was REJECTED, or the journal refused it), appended to the instrument's
        pending list if ``pend``, else for the caller to put where it belongs.

        ``check``: the admission rules and the margin account (a bracket's legs skip them: the
        exchange places those). ``keep_unrecorded``: book the order even if the journal fails
        (a bracket leg protects a position that already exists).
        """
        breach = ""
        if check:
            breach = self._admission_problem(order.token, order.exchange_type, order.side, order.qty,
                                             order.order_type, order.limit_price, tick, order.trigger_price) \
                or self._margin_problem(order, tick)
            if breach:
                order.status, order.status_message = REJECTED, breach
        if self.journal is not None:
            try:
                self._record(reject_kind if breach else kind, order=_paper_order_record(order),
                             **({"payload": payload} if payload is not None else {}))
            except Exception as exc:
                log.exception("paper order %s: the journal did not record it; %s", order.order_id,
                              "kept anyway" if keep_unrecorded else "refused")
                if not keep_unrecorded:
                    # An order the journal did not record is refused and kept nowhere; its id is not reused.
                    order.status = REJECTED
                    order.status_message = f"the journal could not record it ({type(exc).__name__}: {exc})"
                    return None
        self._orders[order.order_id] = order
        if breach:
            return None
        instrument = self._instrument(order.token, order.exchange_type)
        if counts_as_open(order):
            instrument.add_open(order.side, order.qty)
        working = _Working(order, self._wait)
        if order.order_type == LIMIT and not self._wait:
            working.resting = self._rests_on_arrival(order, instrument, tick)
        if pend:
            instrument.pending.append(working)
        return working

    @staticmethod
    def _rests_on_arrival(order: Order, instrument: InstrumentState, tick: "Tick | None") -> bool:
        """A LIMIT the price it is placed at does not reach rests at once, as at the exchange: a later tick
        through it fills it at its limit. ``tick``: the one it answered (the price, before any other)."""
        last = instrument.last_price
        if not last and tick is not None and tick.token == order.token and tick.exchange_type == order.exchange_type:
            last = tick.ltp
        if not last:
            return False            # no price yet: judged on the first tick, as a new order
        return not (last <= order.limit_price if order.side == BUY else last >= order.limit_price)

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
            order = self._new_order(signal.token, signal.exchange_type, signal.side, signal.qty, signal.order_type,
                                    signal.limit_price, signal.reason,
                                    tick.seq if tick is not None else signal.tick_seq, signal.tag,
                                    trigger_price=signal.trigger_price, variety=signal.variety,
                                    target=signal.target, stoploss=signal.stoploss)
            self._place(order, tick, pend=True)
            return _copy(order)

    def _bracket_legs(self, entry: Order, instrument: InstrumentState, tick_seq: int,
                      fill_price: float) -> list[_Working]:
        """The two exits of a bracket whose entry just filled (``bracket_legs``), booked and journaled;
        the caller puts them in the pending list. They cancel each other: whichever fills first."""
        made = []
        for leg in bracket_legs(entry.side, entry.qty, fill_price, entry.target, entry.stoploss,
                                self._spec(entry.token, entry.exchange_type)[0]):
            order = self._new_order(entry.token, entry.exchange_type, leg.side, leg.qty, leg.order_type,
                                    leg.limit_price, f"bracket {leg.name}", tick_seq, entry.tag,
                                    trigger_price=leg.trigger_price, variety=ROBO, parent_id=entry.order_id)
            made.append(self._place(order, None, "paper_bracket_leg", check=False, keep_unrecorded=True))
        made[0].sibling, made[1].sibling = made[1], made[0]
        return made

    def _cancel_leg(self, working: _Working, instrument: InstrumentState, why: str) -> None:
        """Cancel a bracket leg because its sibling filled; the caller drops it from the pending list."""
        order = working.order
        if self.journal is not None:
            try:
                self._record("paper_cancel", order=_paper_order_record(
                    dataclasses.replace(order, status=CANCELLED, status_message=why)))
            except Exception:
                # Cancelled anyway: one-cancels-other must hold; a restore cancels it again.
                log.exception("paper order %s: the journal did not record its cancel", order.order_id)
        order.status, order.status_message = CANCELLED, why
        if counts_as_open(order):
            instrument.add_open(order.side, -order.qty)

    def _fire_gtt(self, watch: "GttWatch", tick: "Tick") -> "_Working | GttWatch | None":
        """A GTT rule's trigger was crossed: place its LIMIT order. Returns the order's ``_Working`` (judged
        on the firing tick), None if it was rejected, or the rule itself if the journal failed."""
        rule = watch.rule
        order = self._new_order(rule.token, rule.exchange_type, rule.side, rule.qty, LIMIT, rule.price,
                                f"GTT {rule.rule_id}", tick.seq, variety=NORMAL)
        fired = dataclasses.replace(rule, status=GTT_FIRED, order_id=order.order_id)
        working = self._place(order, tick, "paper_gtt_fire", reject_kind="paper_gtt_fire",
                              payload=rule_payload(fired, watch.fires_above))
        if order.order_id not in self._orders:
            return watch            # not recorded: the rule did not fire, and tries again on the next tick
        rule.status, rule.order_id = GTT_FIRED, order.order_id
        self.gtt._fired(rule)
        return working

    def _record_gtt(self, rule: "GttRule", fires_above: bool) -> None:
        """Journal a GTT rule as it now stands (PaperGtt calls it, holding the lock); raises if not recorded."""
        if self.journal is not None:
            self._record("paper_gtt", client_id=rule.rule_id, payload=rule_payload(rule, fires_above))

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
            order = self._orders.get(order_id)
            problem = "" if order is not None and order.status == OPEN else \
                f"it is {'unknown' if order is None else order.status}"
            instrument = working = None
            if not problem:
                instrument = self._instrument(order.token, order.exchange_type)
                working = next((w for w in instrument.pending if w.order is order), None)
                problem = "it is not pending" if working is None else \
                    self._modify_problem(order, working, price, qty, trigger)
            changed = None
            if not problem:
                changed = dataclasses.replace(order, qty=qty if qty is not None else order.qty,
                                              limit_price=price if price is not None else order.limit_price,
                                              trigger_price=trigger if trigger is not None else order.trigger_price)
                problem = self._admission_problem(changed.token, changed.exchange_type, changed.side, changed.qty,
                                                  changed.order_type, changed.limit_price, None,
                                                  changed.trigger_price) \
                    or self._margin_problem(changed, None, instead_of=working)
            if not problem and self.journal is not None:
                try:
                    self._record("paper_modify", order=_paper_order_record(changed))
                except Exception as exc:
                    problem = f"the journal could not record it ({type(exc).__name__}: {exc})"
            if problem:
                log.warning("paper order %s: modify refused: %s", order_id, problem)
                return False
            if counts_as_open(order) and changed.qty != order.qty:
                instrument.add_open(order.side, changed.qty - order.qty)
            order.qty, order.limit_price, order.trigger_price = changed.qty, changed.limit_price, changed.trigger_price
            if price is not None and (order.order_type == LIMIT or working.triggered) and not working.wait:
                working.resting = self._rests_on_arrival(order, instrument, None)   # judged as a new order is
            return True

    @staticmethod
    def _modify_problem(order: Order, working: _Working, price, qty, trigger) -> str:
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

    # -- the margin account ----------------------------------------------------

    def _margin(self, order: Order, side: str, qty: int, price: float) -> float:
        _, instrument_type, strike = self._spec(order.token, order.exchange_type)
        return margin_required(order.exchange_type, self._product, side, qty, price, instrument_type, strike)

    @staticmethod
    def _valued_at(order: Order, inst: InstrumentState | None, tick: "Tick | None") -> float:
        """The price an order's margin is reckoned at: its limit, its trigger, else the last price."""
        if order.order_type == LIMIT or order.order_type == STOPLOSS_LIMIT:
            return order.limit_price
        if order.order_type == STOPLOSS_MARKET:
            return order.trigger_price
        if inst is not None and inst.last_price:
            return inst.last_price
        if tick is not None and tick.token == order.token and tick.exchange_type == order.exchange_type:
            return tick.ltp
        return 0.0

    def _blocked(self, instead_of: _Working | None = None) -> float:
        """Margin blocked by open positions (at their average price) and by the opening part of
        every open order; the caller holds the lock. ``instead_of``: an order left out (being modified)."""
        blocked = 0.0
        for by_exchange in self._instruments.values():
            for inst in by_exchange.values():
                if inst.qty:
                    _, instrument_type, strike = self._spec(inst.token, inst.exchange_type)
                    blocked += margin_required(inst.exchange_type, self.product, BUY if inst.qty > 0 else SELL,
                                               inst.qty, inst.avg_price, instrument_type, strike)
                opened = {BUY: 0, SELL: 0}
                for working in inst.pending:
                    order = working.order
                    if order is None or working is instead_of or not counts_as_open(order):
                        continue
                    opening = opening_qty(inst.qty, opened[order.side], order.side, order.qty)
                    opened[order.side] += order.qty
                    if opening:
                        blocked += self._margin(order, order.side, opening, self._valued_at(order, inst, None))
        return blocked

    def _margin_problem(self, order: Order, tick: "Tick | None", instead_of: _Working | None = None) -> str:
        """Why the margin account refuses ``order`` ("" if it takes it, or there is none); the caller holds
        the lock. Only the part of the order that grows the position needs margin: an exit always passes."""
        account = self.margin_account
        if account is None:
            return ""
        by_exchange = self._instruments.get(order.token)
        inst = by_exchange.get(order.exchange_type) if by_exchange else None
        held = inst.qty if inst is not None else 0
        same_side = (inst.open_buy if order.side == BUY else inst.open_sell) if inst is not None else 0
        if instead_of is not None and counts_as_open(instead_of.order):
            same_side -= instead_of.order.qty
        opening = opening_qty(held, same_side, order.side, order.qty)
        if not opening:
            return ""
        price = self._valued_at(order, inst, tick)
        if not price:
            return (f"the margin account cannot value a {order.order_type} order in token {order.token}: "
                    "no price seen for it yet")
        need = self._margin(order, order.side, opening, price)
        return account.shortfall(need, self._blocked(instead_of), self._pnl_locked()["net"])

    def account(self) -> dict:
        """``{"capital", "blocked", "pnl_net", "available"}`` in rupees: the margin account
        (``PaperBroker(capital=...)``; capital and available are None without one). ``available`` is
        capital + net P&L − blocked; ``blocked`` is the margin of open positions and of the opening
        part of open orders."""
        with self._lock:
            blocked = self._blocked()
            net = self._pnl_locked()["net"]
        account = self.margin_account
        return {"capital": account.capital if account is not None else None, "blocked": blocked, "pnl_net": net,
                "available": account.available(blocked, net) if account is not None else None}

    # -- cancelling ------------------------------------------------------------

    def cancel(self, order_id: str) -> bool:
        """Cancel an open order. False if it is unknown or no longer open.

        A bracket's entry cancelled before it fills places no legs; a leg
        cancelled leaves its sibling working.
        """
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status != OPEN:
                return False
            if self.journal is not None:
                self._record("paper_cancel", order=_paper_order_record(dataclasses.replace(order, status=CANCELLED)))
            instrument = self._instruments[order.token][order.exchange_type]
            instrument.pending = [w for w in instrument.pending if w.order is not order]
            if counts_as_open(order):
                instrument.add_open(order.side, -order.qty)
            order.status = CANCELLED
            return True

    def cancel_all(self) -> int:
        """Cancel every open order (GTT rules are not orders: ``gtt.cancel_created()``); returns how many."""
        with self._lock:
            cancelled = 0
            journal = self.journal
            for by_exchange in self._instruments.values():
                for instrument in by_exchange.values():
                    try:
                        for working in instrument.pending:
                            order = working.order
                            if order is None or order.status != OPEN:
                                continue
                            if journal is not None:
                                self._record("paper_cancel", order=_paper_order_record(
                                    dataclasses.replace(order, status=CANCELLED)))
                            order.status = CANCELLED
                            if counts_as_open(order):
                                instrument.add_open(order.side, -order.qty)
                            cancelled += 1
                    finally:
                        # If the journal raised, the orders it did not record stay open.
                        instrument.pending = [w for w in instrument.pending
                                              if w.order is None or w.order.status == OPEN]
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
        """Copies of the orders still waiting for a fill (a bracket's legs included), oldest first."""
        with self._lock:
            return [_copy(o) for o in self._orders.values() if o.status == OPEN]

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
