"""The market-data record every other module passes around.

A ``Tick`` is deliberately small: the LTP fields every mode carries, the
receive stamp taken on the socket thread, and an optional ``Quote`` with the
QUOTE / SNAP_QUOTE fields. Prices are rupees (floats); the wire carries paise.
"""
from __future__ import annotations

from dataclasses import dataclass

# Subscription modes as Angel One numbers them.
LTP, QUOTE, SNAP_QUOTE, DEPTH = 1, 2, 3, 4
MODE_NAMES = {LTP: "LTP", QUOTE: "QUOTE", SNAP_QUOTE: "SNAP_QUOTE", DEPTH: "DEPTH"}

@dataclass(slots=True)
class Quote:
    """QUOTE fields, plus the SNAP_QUOTE ones when the tick came in that mode.

    ``best_buy`` / ``best_sell`` are tuples of ``(price, quantity, orders)``
    with price in rupees, best first, as the wire orders them.
    """
    last_traded_qty: int
    avg_price: float
    volume: int
    total_buy_qty: float
    total_sell_qty: float
    open: float
    high: float
    low: float
    close: float
    last_traded_ts: int | None = None
    open_interest: int | None = None
    oi_change_pct: int | None = None
    best_buy: tuple | None = None
    best_sell: tuple | None = None
    upper_circuit: float | None = None
    lower_circuit: float | None = None
    high_52w: float | None = None
    low_52w: float | None = None


@dataclass(slots=True)
class Tick:
    """One price update.

    ``recv_ns`` is ``time.perf_counter_ns()`` taken when the frame reached the
    socket thread (or when a replay emitted it); every latency figure the kit
    reports starts from it. ``exchange_ts`` is epoch milliseconds.
    """
    token: str
    exchange_type: int
    mode: int
    seq: int
    exchange_ts: int
    ltp: float
    recv_ns: int = 0
    quote: Quote | None = None

    @property
    def key(self) -> tuple[int, str]:
        """(exchange type, token): the identity of an instrument on the feed."""
        return (self.exchange_type, self.token)
