"""Positions and P&L, kept the same way by the paper and the live broker.

``InstrumentState`` is one instrument's mutable state: signed quantity,
average price, realized P&L, the charges its fills paid, the last plausible
price (the P&L mark) and the unfilled units of its active orders.
``PositionBook`` is the part both brokers share: the position queries, P&L
(gross, charges and net), exposure, the fill and position tables, and the
order rules they both apply before accepting an order.

Marks: a tick that is not a finite positive price, is outside the circuit band
of the last SNAP_QUOTE, or is more than ``MARK_JUMP``× away from the last good
price does not move the mark; a real re-pricing is believed after
``MARK_CONFIRMATIONS`` more ticks agree.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from kit.broker.rules import instrument_problem, price_problem, shape_problem
from kit.core.orders import FILL_COLUMNS, POSITION_COLUMNS, Fill, Position, fill_row, position_row, stop_triggered
from kit.core.strategy import BUY, MARKET, STOP_TYPES, STOPLOSS_MARKET

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.core.tick import Tick

# A tick whose price is outside [last / MARK_JUMP, last * MARK_JUMP] is not believed at once:
# it moves the P&L mark only after MARK_CONFIRMATIONS more ticks agree with it (a real re-pricing).
MARK_JUMP = 2.0
MARK_CONFIRMATIONS = 3
MARK_LOW = 1.0 / MARK_JUMP


class InstrumentState:
    """A broker's mutable state for one (exchange type, token)."""
    __slots__ = ("token", "exchange_type", "qty", "avg_price", "last_price",
                 "realized_pnl", "charges", "has_filled", "pending", "open_buy", "open_sell", "band",
                 "suspect", "suspect_count")

    def __init__(self, token: str, exchange_type: int):
        self.token = token
        self.exchange_type = exchange_type
        self.qty = 0
        self.avg_price = 0.0
        self.last_price = 0.0
        self.realized_pnl = 0.0
        self.charges = 0.0          # what every fill here cost (brokerage, taxes, fees), rupees
        # Positions are reported only once something filled, not merely ordered.
        self.has_filled = False
        # The paper broker's orders waiting for a tick here (kept here so its tick path finds them in one hop).
        self.pending: list = []
        # Unfilled units of this instrument's active orders, kept as orders change: risk reads
        # the exposure in O(1) instead of scanning every open order.
        self.open_buy = 0
        self.open_sell = 0
        self.band: tuple[float, float] | None = None     # (lower, upper) circuit from SNAP_QUOTE ticks
        self.suspect = 0.0          # a price far from the mark, waiting for confirmation
        self.suspect_count = 0

    def apply_fill(self, side: str, qty: int, price: float, charges: float = 0.0) -> None:
        """Move the position by one fill, realizing P&L on the closed part; ``charges`` are the fill's."""
        if charges:
            self.charges += charges
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

    def after_fill(self, side: str, qty: int, price: float, charges: float = 0.0) -> "InstrumentState":
        """A copy of this position moved by one fill; ``self`` is unchanged (journal it, then adopt it)."""
        moved = InstrumentState(self.token, self.exchange_type)
        moved.qty, moved.avg_price, moved.realized_pnl = self.qty, self.avg_price, self.realized_pnl
        moved.charges = self.charges
        moved.apply_fill(side, qty, price, charges)
        return moved

    def adopt(self, moved: "InstrumentState") -> None:
        """Take the position of ``moved`` (a copy ``after_fill`` made, once the journal has it).

        Its charges too when fills moved it; a position set from someone else's figures (a
        reconciliation's adoption, which applied no fill) keeps the charges already paid here.
        """
        self.qty, self.avg_price, self.realized_pnl = moved.qty, moved.avg_price, moved.realized_pnl
        if moved.has_filled:
            self.charges = moved.charges
        self.has_filled = True

    def snapshot(self) -> Position:
        unrealized = (self.last_price - self.avg_price) * self.qty if self.qty else 0.0
        return Position(self.token, self.exchange_type, self.qty, self.avg_price,
                        self.last_price, self.realized_pnl, unrealized,
                        self.realized_pnl + unrealized, self.charges)


def position_record(inst: InstrumentState) -> dict:
    """The journal's ``position`` row of an instrument (``charges`` rides along; a restore sums the fills')."""
    return {"exchange_type": inst.exchange_type, "token": inst.token, "qty": inst.qty,
            "avg_price": inst.avg_price, "realized_pnl": inst.realized_pnl, "charges": inst.charges}


def frame(rows: list[tuple], columns: list[str]) -> "pandas.DataFrame":
    """A DataFrame of ``rows``; pandas is imported here so the tick path never pays for importing it."""
    import pandas
    return pandas.DataFrame.from_records(rows, columns=columns)


def instrument_state(instruments: dict[str, dict[int, InstrumentState]], token: str,
                     exchange_type: int) -> InstrumentState:
    """The state for an instrument in ``instruments``, created on first use; the caller holds the lock."""
    by_exchange = instruments.setdefault(token, {})
    inst = by_exchange.get(exchange_type)
    if inst is None:
        inst = by_exchange[exchange_type] = InstrumentState(token, exchange_type)
    return inst


def restore_fills_and_positions(journal, fills: list[Fill],
                                instrument: Callable[[str, int], InstrumentState]) -> int:
    """Append the journal's fills to ``fills`` and set each journaled position; returns how many positions.

    ``instrument(token, exchange_type)`` gives the state to set (created on first use). A position's
    charges are the sum of its instrument's journaled fills' (each fill row carries its own).
    """
    fill_names = set(FILL_COLUMNS)
    fills.extend(Fill(**{k: v for k, v in f.items() if k in fill_names}) for f in journal.fills())
    last_fill = {(f.exchange_type, f.token): f.price for f in fills}
    charged: dict[tuple[int, str], float] = {}
    for f in fills:
        if f.charges:
            key = (f.exchange_type, f.token)
            charged[key] = charged.get(key, 0.0) + f.charges
    positions = journal.positions()
    for p in positions:
        inst = instrument(p["token"], p["exchange_type"])
        inst.qty, inst.avg_price = p["qty"], p["avg_price"]
        inst.realized_pnl = p["realized_pnl"]
        inst.charges = p.get("charges", charged.get((inst.exchange_type, inst.token), 0.0))
        # Marked at its last fill until a tick brings a price: 0.0 would show the whole position as lost.
        inst.last_price = last_fill.get((inst.exchange_type, inst.token), 0.0)
        inst.has_filled = True
    return len(positions)


class PositionBook:
    """Positions, P&L and the fill/position tables, shared by the paper and the live broker.

    A broker built on it sets, before use: ``_lock`` (a ``threading.Lock``
    guarding the state below), ``_fills`` (a list of ``Fill``),
    ``_instruments`` (token -> exchange type -> ``InstrumentState``; nested so
    the tick path builds no tuple to look one up), ``instruments`` (the
    instrument master or None), ``price_collar`` and ``live``.
    """

    def _instrument(self, token: str, exchange_type: int) -> InstrumentState:
        """The state for an instrument, created on first use; the caller holds the lock."""
        return instrument_state(self._instruments, token, exchange_type)

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

    def lot_size(self, token: str, exchange_type: int) -> int | None:
        """The instrument master's lot size (None without a master or for an unknown instrument)."""
        return self.instruments.lot_size(token, exchange_type) if self.instruments is not None else None

    def _admission_problem(self, token, exchange_type, side, qty, order_type, limit_price, tick,
                           trigger_price=None) -> str:
        """Why this order may not be accepted ("" if it may): the rules live and paper share."""
        problem = shape_problem(side, qty, order_type, limit_price, trigger_price)
        if problem:
            return problem
        if self.instruments is not None:
            problem = instrument_problem(token, exchange_type, qty, order_type, limit_price,
                                         self.instruments.get(token, exchange_type), trigger_price)
            if problem:
                return problem
        if order_type == MARKET:
            return ""
        by_exchange = self._instruments.get(token)
        inst = by_exchange.get(exchange_type) if by_exchange else None
        last, band = (inst.last_price, inst.band) if inst is not None else (0.0, None)
        if (not last and tick is not None and tick.token == token and tick.exchange_type == exchange_type
                and 0.0 < tick.ltp < math.inf):
            last = tick.ltp
        if tick is not None and tick.quote is not None and tick.token == token \
                and tick.exchange_type == exchange_type and tick.quote.upper_circuit:
            band = (tick.quote.lower_circuit or 0.0, tick.quote.upper_circuit)
        if order_type in STOP_TYPES:
            if last and stop_triggered(side, trigger_price, last):
                # As the exchange refuses it: a stop already through the market would trade at once.
                return (f"a {side} stop's trigger {trigger_price} is already reached by the last price {last}: "
                        f"a {side} stop triggers {'above' if side == BUY else 'below'} the market")
            problem = price_problem(trigger_price, last, band, self.price_collar, need_price=self.live)
            if problem or order_type == STOPLOSS_MARKET:
                return problem.replace("limit price", "trigger price")
        return price_problem(limit_price, last, band, self.price_collar, need_price=self.live)

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
        """Realized, unrealized and total (gross) P&L over all positions, the fills' charges and
        the net (``total - charges``), in rupees.

        Risk reads it for every signal under a daily-loss limit, so it sums in
        place rather than building a snapshot per instrument.
        """
        with self._lock:
            return self._pnl_locked()

    def _pnl_locked(self) -> dict[str, float]:
        """``pnl()``; the caller holds the lock."""
        realized = unrealized = charges = 0.0
        for by_exchange in self._instruments.values():
            for inst in by_exchange.values():
                realized += inst.realized_pnl
                charges += inst.charges
                if inst.qty:
                    unrealized += (inst.last_price - inst.avg_price) * inst.qty
        total = realized + unrealized
        return {"realized": realized, "unrealized": unrealized, "total": total, "charges": charges,
                "net": total - charges}

    def fills_df(self) -> "pandas.DataFrame":
        """One row per fill, oldest first, columns ``FILL_COLUMNS``."""
        with self._lock:
            fills = list(self._fills)   # Fill is immutable: copying the list is the snapshot
        return frame([fill_row(f) for f in fills], FILL_COLUMNS)

    def positions_df(self) -> "pandas.DataFrame":
        """One row per traded instrument, columns ``POSITION_COLUMNS``."""
        # By instrument, not by first sight: the same book lists the same way after a restore.
        snapshots = sorted(self._snapshots(), key=lambda p: (p.exchange_type, p.token))
        return frame([position_row(p) for p in snapshots], POSITION_COLUMNS)
