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
import math
import operator
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from kit.core.listeners import Listeners
from kit.broker.rules import DEFAULT_PRICE_COLLAR, instrument_problem, price_problem, shape_problem
from kit.core.strategy import BUY, LIMIT, MARKET

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.store.journal import Journal
    from kit.core.strategy import Signal
    from kit.core.tick import Tick

log = logging.getLogger(__name__)

# Order statuses, spelled as Angel One's order book spells them (upper-cased).
OPEN, COMPLETE, CANCELLED, REJECTED = "OPEN", "COMPLETE", "CANCELLED", "REJECTED"

# What on_tick returns when nothing filled: one shared immutable empty tuple, so
# the tick path allocates nothing for instruments without pending orders.
NO_FILLS: tuple = ()


@dataclass(slots=True)
class Order:
    """One order as the broker knows it; the broker hands out copies.

    ``submit_ns`` is wall-clock epoch nanoseconds; ``tick_seq`` is the
    sequence number of the tick the signal answered. ``filled_qty`` and
    ``avg_price`` are 0 until the order fills. ``status_message`` says why an
    order was rejected.
    """
    order_id: str
    token: str
    exchange_type: int
    side: str
    qty: int
    order_type: str
    limit_price: float | None
    status: str
    filled_qty: int
    avg_price: float
    reason: str
    submit_ns: int
    tick_seq: int
    tag: str = ""
    status_message: str = ""


@dataclass(slots=True, frozen=True)
class Fill:
    """One execution: ``qty`` units of ``order_id`` at ``price`` rupees.

    ``fill_ns`` is wall-clock epoch nanoseconds; ``tick_seq`` is the sequence
    number of the tick that filled it.
    """
    order_id: str
    token: str
    exchange_type: int
    side: str
    qty: int
    price: float
    fill_ns: int
    tick_seq: int


@dataclass(slots=True, frozen=True)
class Position:
    """A snapshot of one instrument's position, P&L in rupees.

    ``qty`` is signed (+ long, - short); ``avg_price`` is the average entry
    price of the open quantity (0.0 when flat).
    """
    token: str
    exchange_type: int
    qty: int
    avg_price: float
    last_price: float
    realized_pnl: float
    unrealized_pnl: float
    total_pnl: float


ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order)]
FILL_COLUMNS = [f.name for f in dataclasses.fields(Fill)]
POSITION_COLUMNS = [f.name for f in dataclasses.fields(Position)]
# Row getters for the tables: a C-level attrgetter is ~30x faster than
# dataclasses.astuple, which matters because order rows are read under the lock.
_order_row = operator.attrgetter(*ORDER_COLUMNS)
_fill_row = operator.attrgetter(*FILL_COLUMNS)
_position_row = operator.attrgetter(*POSITION_COLUMNS)
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


# A tick whose price is outside [last / MARK_JUMP, last * MARK_JUMP] is not believed at once:
# it moves the P&L mark only after MARK_CONFIRMATIONS more ticks agree with it (a real re-pricing).
MARK_JUMP = 2.0
MARK_CONFIRMATIONS = 3
_MARK_LOW = 1.0 / MARK_JUMP


class _Instrument:
    """The broker's mutable state for one (exchange type, token)."""
    __slots__ = ("token", "exchange_type", "qty", "avg_price", "last_price",
                 "realized_pnl", "has_filled", "pending", "open_buy", "open_sell", "band",
                 "suspect", "suspect_count")

    def __init__(self, token: str, exchange_type: int):
        self.token = token
        self.exchange_type = exchange_type
        self.qty = 0
        self.avg_price = 0.0
        self.last_price = 0.0
        self.realized_pnl = 0.0
        # Positions are reported only once something filled, not merely ordered.
        self.has_filled = False
        self.pending: list[_Working] = []
        # Unfilled units of this instrument's active orders, kept as orders change: risk reads
        # the exposure in O(1) instead of scanning every open order.
        self.open_buy = 0
        self.open_sell = 0
        self.band: tuple[float, float] | None = None     # (lower, upper) circuit from SNAP_QUOTE ticks
        self.suspect = 0.0          # a price far from the mark, waiting for confirmation
        self.suspect_count = 0

    def apply_fill(self, side: str, qty: int, price: float) -> None:
        """Move the position by one fill, realizing P&L on the closed part."""
        signed = qty if side == BUY else -qty
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            # Opening or adding: the average is weighted by quantity.
            held = abs(self.qty)
            self.avg_price = (self.avg_price * held + price * qty) / (held + qty)
            self.qty += signed
        else:
            closed = min(qty, abs(self.qty))
            direction = 1 if self.qty > 0 else -1
            self.realized_pnl += (price - self.avg_price) * closed * direction
            self.qty += signed
            if self.qty == 0:
                self.avg_price = 0.0
            elif qty > closed:
                # Flipped through flat: the remainder is a new position at this price.
                self.avg_price = price
        self.has_filled = True

    def add_open(self, side: str, units: int) -> None:
        """``units`` more (or, negative, fewer) unfilled units on this instrument's active orders."""
        if side == BUY:
            self.open_buy += units
        else:
            self.open_sell += units

    def mark(self, tick: "Tick") -> bool:
        """Take ``tick.ltp`` as the P&L mark if it is plausible; False (mark unchanged) if not.

        Refused: NaN, inf, zero or negative prices, a price outside the
        circuit band of the last SNAP_QUOTE, and a price more than MARK_JUMP×
        away from the last good one until MARK_CONFIRMATIONS more ticks agree.
        """
        ltp = tick.ltp
        quote = tick.quote
        if quote is not None and quote.upper_circuit:
            self.band = (quote.lower_circuit or 0.0, quote.upper_circuit)
        if not (0.0 < ltp < math.inf):
            return False
        band = self.band
        if band is not None and not band[0] <= ltp <= band[1]:
            return False
        last = self.last_price
        if last == 0.0 or last / MARK_JUMP <= ltp <= last * MARK_JUMP:
            self.last_price = ltp
            self.suspect_count = 0
            return True
        suspect = self.suspect
        if self.suspect_count and suspect / 1.05 <= ltp <= suspect * 1.05:
            self.suspect_count += 1
            if self.suspect_count > MARK_CONFIRMATIONS:
                self.last_price, self.suspect_count = ltp, 0
                return True
        else:
            self.suspect, self.suspect_count = ltp, 1
        return False

    def after_fill(self, side: str, qty: int, price: float) -> "_Instrument":
        """A copy of this position moved by one fill; ``self`` is unchanged (journal it, then adopt it)."""
        moved = _Instrument(self.token, self.exchange_type)
        moved.qty, moved.avg_price, moved.realized_pnl = self.qty, self.avg_price, self.realized_pnl
        moved.apply_fill(side, qty, price)
        return moved

    def snapshot(self) -> Position:
        unrealized = (self.last_price - self.avg_price) * self.qty if self.qty else 0.0
        return Position(self.token, self.exchange_type, self.qty, self.avg_price,
                        self.last_price, self.realized_pnl, unrealized,
                        self.realized_pnl + unrealized)


def _position_record(inst: _Instrument) -> dict:
    """The journal's ``position`` row of an instrument."""
    return {"exchange_type": inst.exchange_type, "token": inst.token, "qty": inst.qty,
            "avg_price": inst.avg_price, "realized_pnl": inst.realized_pnl}


def _paper_order_record(order: Order) -> dict:
    """The journal's ``order`` row of a paper order: its own id is its client id."""
    record = dict(zip(ORDER_COLUMNS, _order_row(order)))
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


class PositionBook:
    """Positions, P&L and the fill/position tables, shared by the paper and the live broker.

    A broker using it keeps ``self._lock``, ``self._fills`` (a list of ``Fill``)
    and ``self._instruments`` (token -> exchange type -> ``_Instrument``).
    """

    def _restore_fills_and_positions(self, journal) -> int:
        """Fills and positions as ``journal`` last recorded them; returns how many positions.

        Instruments are created with ``_instrument``, which the broker provides.
        """
        fill_names = set(FILL_COLUMNS)
        self._fills = [Fill(**{k: v for k, v in f.items() if k in fill_names}) for f in journal.fills()]
        last_fill = {(f.exchange_type, f.token): f.price for f in self._fills}
        positions = journal.positions()
        for p in positions:
            instrument = self._instrument(p["token"], p["exchange_type"])
            instrument.qty, instrument.avg_price = p["qty"], p["avg_price"]
            instrument.realized_pnl = p["realized_pnl"]
            # Marked at its last fill until a tick brings a price: 0.0 would show the whole position as lost.
            instrument.last_price = last_fill.get((instrument.exchange_type, instrument.token), 0.0)
            instrument.has_filled = True
        return len(positions)

    def exposure(self, token: str, exchange_type: int) -> int:
        """Signed units held plus the unfilled units of active orders in this instrument (O(1))."""
        by_exchange = self._instruments.get(token)
        inst = by_exchange.get(exchange_type) if by_exchange else None
        if inst is None:
            return 0
        with self._lock:
            return inst.qty + inst.open_buy - inst.open_sell

    def last_price(self, token: str, exchange_type: int) -> float:
        """The last plausible price seen for this instrument (0.0: none yet)."""
        by_exchange = self._instruments.get(token)
        inst = by_exchange.get(exchange_type) if by_exchange else None
        return inst.last_price if inst is not None else 0.0

    def _admission_problem(self, token, exchange_type, side, qty, order_type, limit_price, tick) -> str:
        """Why this order may not be accepted ("" if it may): the rules live and paper share."""
        problem = shape_problem(side, qty, order_type, limit_price)
        if problem:
            return problem
        if self.instruments is not None:
            problem = instrument_problem(token, exchange_type, qty, order_type, limit_price,
                                         self.instruments.get(token, exchange_type))
            if problem:
                return problem
        if order_type == LIMIT:
            by_exchange = self._instruments.get(token)
            inst = by_exchange.get(exchange_type) if by_exchange else None
            last, band = (inst.last_price, inst.band) if inst is not None else (0.0, None)
            if (not last and tick is not None and tick.token == token and tick.exchange_type == exchange_type
                    and 0.0 < tick.ltp < math.inf):
                last = tick.ltp
            if tick is not None and tick.quote is not None and tick.token == token \
                    and tick.exchange_type == exchange_type and tick.quote.upper_circuit:
                band = (tick.quote.lower_circuit or 0.0, tick.quote.upper_circuit)
            return price_problem(limit_price, last, band, self.price_collar, need_price=self.live)
        return ""

    def _snapshots(self) -> list[Position]:
        with self._lock:
            return [instrument.snapshot()
                    for by_exchange in self._instruments.values()
                    for instrument in by_exchange.values() if instrument.has_filled]

    def position(self, token: str, exchange_type: int | None = None) -> Position | None:
        """The position in ``token`` (None if nothing ever filled there).

        ``exchange_type`` may be left out when the token has traded on one
        exchange only; otherwise it is a ValueError, since token numbers are
        per exchange.
        """
        with self._lock:
            by_exchange = self._instruments.get(token, {})
            traded = [i for i in by_exchange.values() if i.has_filled
                      and (exchange_type is None or i.exchange_type == exchange_type)]
            if len(traded) > 1:
                raise ValueError(f"token {token!r} traded on exchange types "
                                 f"{sorted(i.exchange_type for i in traded)}; pass exchange_type")
            return traded[0].snapshot() if traded else None

    @property
    def positions(self) -> dict[tuple[int, str], Position]:
        """Every traded instrument's position, keyed by (exchange type, token)."""
        return {(p.exchange_type, p.token): p for p in self._snapshots()}

    def pnl(self) -> dict[str, float]:
        """Realized, unrealized and total P&L over all positions, in rupees.

        Risk reads it for every signal under a daily-loss limit, so it sums in
        place rather than building a snapshot per instrument.
        """
        realized = unrealized = 0.0
        with self._lock:
            for by_exchange in self._instruments.values():
                for inst in by_exchange.values():
                    realized += inst.realized_pnl
                    if inst.qty:
                        unrealized += (inst.last_price - inst.avg_price) * inst.qty
        return {"realized": realized, "unrealized": unrealized, "total": realized + unrealized}

    def fills_df(self) -> "pandas.DataFrame":
        """One row per fill, oldest first, columns ``FILL_COLUMNS``."""
        with self._lock:
            fills = list(self._fills)   # Fill is immutable: copying the list is the snapshot
        return _frame([_fill_row(f) for f in fills], FILL_COLUMNS)

    def positions_df(self) -> "pandas.DataFrame":
        """One row per traded instrument, columns ``POSITION_COLUMNS``."""
        # By instrument, not by first sight: the same book lists the same way after a restore.
        snapshots = sorted(self._snapshots(), key=lambda p: (p.exchange_type, p.token))
        return _frame([_position_row(p) for p in snapshots], POSITION_COLUMNS)


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
        self._instruments: dict[str, dict[int, _Instrument]] = {}
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
        positions = self._restore_fills_and_positions(self.journal)
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
        # a price within MARK_JUMP of the last one. Anything else is judged by _Instrument.mark.
        ltp, last = tick.ltp, instrument.last_price
        if tick.quote is None and instrument.band is None and last * _MARK_LOW <= ltp <= last * MARK_JUMP \
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

    def _match(self, instrument: _Instrument, tick: "Tick") -> tuple[Fill, ...]:
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

    def _journal_fill(self, instrument: _Instrument, order: Order, fill: Fill) -> bool:
        """Commit a fill: the order COMPLETE, the fill and the moved position, in one transaction.

        False if the journal refused it. A fill it did not record did not
        happen: the order stays pending for the next tick, and the tick path
        carries on rather than blinding the strategy.
        """
        done = dataclasses.replace(order, status=COMPLETE, filled_qty=order.qty, avg_price=fill.price)
        try:
            self._record("paper_fill", order=_paper_order_record(done),
                         fill=dict(zip(FILL_COLUMNS, _fill_row(fill))),
                         position=_position_record(instrument.after_fill(order.side, order.qty, fill.price)))
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

    def _instrument(self, token: str, exchange_type: int) -> _Instrument:
        """The state for an instrument, created on first use; the caller holds the lock."""
        by_exchange = self._instruments.setdefault(token, {})
        instrument = by_exchange.get(exchange_type)
        if instrument is None:
            instrument = by_exchange[exchange_type] = _Instrument(token, exchange_type)
        return instrument

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

    def flatten(self, reason: str = "flatten") -> list[Order]:
        """A MARKET order against every non-zero position; they fill on the next tick."""
        from kit.core.strategy import Signal
        orders = []
        for position in self._snapshots():
            if position.qty:
                side = "SELL" if position.qty > 0 else "BUY"
                orders.append(self.submit(Signal(position.token, side, abs(position.qty), MARKET, None,
                                                 position.exchange_type, reason), None))
        return orders

    def lot_size(self, token: str, exchange_type: int) -> int | None:
        return self.instruments.lot_size(token, exchange_type) if self.instruments is not None else None

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
            rows = [_order_row(o) for o in self._orders.values()]
        return _frame(rows, ORDER_COLUMNS)



def _frame(rows: list[tuple], columns: list[str]) -> "pandas.DataFrame":
    # Imported here so the tick path never pays for importing pandas.
    import pandas
    return pandas.DataFrame.from_records(rows, columns=columns)
