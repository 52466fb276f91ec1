"""What a user writes: a ``Strategy`` with ``on_tick`` that may return a ``Signal``.

The same class runs live, on the simulator, on a replay and in an exported
script. The engine guarantees that at most one thread is inside a strategy at
any moment, whatever the dispatch mode, so a strategy keeps plain attributes
and needs no locks of its own.

    class Momentum(kit.Strategy):
        def on_tick(self, tick):
            if tick.ltp > self.last * 1.001:
                return kit.Signal.buy(tick, qty=65)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from kit.core.tick import Tick

BUY, SELL = "BUY", "SELL"
MARKET, LIMIT = "MARKET", "LIMIT"


@dataclass(slots=True)
class Signal:
    """An intent to trade, produced by a strategy for one tick.

    ``qty`` is in units (shares or contracts, i.e. lots × lot size), as
    Angel One's order API takes it. ``limit_price`` is rupees, only for LIMIT.
    """
    token: str
    side: str
    qty: int
    order_type: str = MARKET
    limit_price: float | None = None
    exchange_type: int = 1
    reason: str = ""
    # Filled in by the engine: the tick the signal answered.
    tick_seq: int = 0
    tick_recv_ns: int = 0
    tag: str = field(default="")

    def __post_init__(self):
        if self.side not in (BUY, SELL):
            raise ValueError(f"side must be 'BUY' or 'SELL', not {self.side!r}")
        if not isinstance(self.qty, int) or self.qty <= 0:
            raise ValueError(f"qty must be a positive int, not {self.qty!r}")
        if self.order_type not in (MARKET, LIMIT):
            raise ValueError(f"order_type must be 'MARKET' or 'LIMIT', not {self.order_type!r}")
        if self.order_type == LIMIT and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError("a LIMIT signal needs a positive limit_price")

    @classmethod
    def buy(cls, tick: "Tick", qty: int = 1, limit: float | None = None, reason: str = "") -> "Signal":
        return cls(tick.token, BUY, qty, LIMIT if limit is not None else MARKET, limit,
                   tick.exchange_type, reason)

    @classmethod
    def sell(cls, tick: "Tick", qty: int = 1, limit: float | None = None, reason: str = "") -> "Signal":
        return cls(tick.token, SELL, qty, LIMIT if limit is not None else MARKET, limit,
                   tick.exchange_type, reason)

    def as_row(self) -> dict:
        """The fields that identify a signal, for tables and for parity checks."""
        return {"token": self.token, "side": self.side, "qty": self.qty, "order_type": self.order_type,
                "limit_price": self.limit_price, "exchange_type": self.exchange_type,
                "tick_seq": self.tick_seq, "reason": self.reason}


class Strategy:
    """Base class. Override ``on_tick``; ``on_start`` / ``on_stop`` / ``on_gap`` are optional.

    ``on_tick`` returns ``None``, one ``Signal`` or a list of them. An exception
    raised here is logged with the tick, counted, and the stream goes on.
    """

    def on_start(self) -> None:
        """Called once before the first tick (and again after a restart)."""

    def on_tick(self, tick: "Tick") -> "Signal | list[Signal] | None":
        raise NotImplementedError

    def on_stop(self) -> None:
        """Called once after the last tick, or when the strategy is swapped out."""

    def on_gap(self, gap) -> None:
        """Called after a reconnect when ticks for a token were missed (see ``kit.feed.live.Gap``).

        Runs like ``on_tick`` (same thread, same lock), just before the first
        tick after the gap, e.g. to restart the token's indicators.
        """
