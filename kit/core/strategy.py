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
# Stop-loss orders wait for a trigger price, then become a LIMIT (at limit_price) or a MARKET order.
STOPLOSS_LIMIT, STOPLOSS_MARKET = "STOPLOSS_LIMIT", "STOPLOSS_MARKET"
STOP_TYPES = (STOPLOSS_LIMIT, STOPLOSS_MARKET)
ORDER_TYPES = (MARKET, LIMIT, STOPLOSS_LIMIT, STOPLOSS_MARKET)
# Angel One's varieties: a plain order, a stop-loss order, a bracket (entry with target and stop legs).
NORMAL, STOPLOSS, ROBO = "NORMAL", "STOPLOSS", "ROBO"


@dataclass(slots=True)
class Signal:
    """An intent to trade, produced by a strategy for one tick.

    ``qty`` is in units (shares or contracts, i.e. lots × lot size), as
    Angel One's order API takes it. ``limit_price`` is rupees, for LIMIT and
    STOPLOSS_LIMIT. ``trigger_price`` (rupees) is a stop-loss order's trigger:
    a BUY stop triggers on the first tick at or above it, a SELL stop at or
    below it (``kit.core.orders.stop_triggered``).

    A bracket (Angel One's ROBO variety) is an entry with ``target`` and
    ``stoploss``, both rupees away from the entry's fill price: once the entry
    fills, a LIMIT exit at the target and a STOPLOSS_MARKET exit at the stop
    are placed, and whichever fills first cancels the other
    (``kit.core.orders.bracket_legs``).

        Signal.buy(tick, qty=65)                                  # MARKET
        Signal.sell(tick, qty=65, limit=101.5)                    # LIMIT
        Signal.stop_sell(tick, qty=65, trigger=98.0)              # STOPLOSS_MARKET
        Signal.stop_sell(tick, qty=65, trigger=98.0, limit=97.5)  # STOPLOSS_LIMIT
        Signal.buy(tick, qty=65, limit=100.0, target=2.0, stoploss=1.0)   # a bracket
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
    trigger_price: float | None = None
    target: float | None = None
    stoploss: float | None = None

    def __post_init__(self):
        if self.side not in (BUY, SELL):
            raise ValueError(f"side must be 'BUY' or 'SELL', not {self.side!r}")
        if not isinstance(self.qty, int) or self.qty <= 0:
            raise ValueError(f"qty must be a positive int, not {self.qty!r}")
        if self.order_type not in ORDER_TYPES:
            raise ValueError(f"order_type must be one of {', '.join(ORDER_TYPES)}, not {self.order_type!r}")
        if self.order_type in (LIMIT, STOPLOSS_LIMIT) and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError(f"a {self.order_type} signal needs a positive limit_price")
        if self.order_type in STOP_TYPES and (self.trigger_price is None or self.trigger_price <= 0):
            raise ValueError(f"a {self.order_type} signal needs a positive trigger_price")
        if (self.target is None) != (self.stoploss is None):
            raise ValueError("a bracket needs both target and stoploss (rupees from the entry's fill price)")
        if self.target is not None:
            if self.order_type in STOP_TYPES:
                raise ValueError("a bracket's entry is a MARKET or LIMIT order, not a stop-loss order")
            if not (self.target > 0 and self.stoploss > 0):
                raise ValueError(f"a bracket's target and stoploss are positive rupee offsets, not "
                                 f"{self.target!r} and {self.stoploss!r}")

    @property
    def variety(self) -> str:
        """Angel One's variety for this order: ROBO (bracket), STOPLOSS or NORMAL."""
        if self.target is not None:
            return ROBO
        return STOPLOSS if self.order_type in STOP_TYPES else NORMAL

    @classmethod
    def buy(cls, tick: "Tick", qty: int = 1, limit: float | None = None, reason: str = "", *,
            target: float | None = None, stoploss: float | None = None) -> "Signal":
        return cls(tick.token, BUY, qty, LIMIT if limit is not None else MARKET, limit,
                   tick.exchange_type, reason, target=target, stoploss=stoploss)

    @classmethod
    def sell(cls, tick: "Tick", qty: int = 1, limit: float | None = None, reason: str = "", *,
             target: float | None = None, stoploss: float | None = None) -> "Signal":
        return cls(tick.token, SELL, qty, LIMIT if limit is not None else MARKET, limit,
                   tick.exchange_type, reason, target=target, stoploss=stoploss)

    @classmethod
    def stop_buy(cls, tick: "Tick", qty: int, trigger: float, limit: float | None = None,
                 reason: str = "") -> "Signal":
        """A BUY stop-loss: STOPLOSS_LIMIT at ``limit`` once the price reaches ``trigger``, or
        STOPLOSS_MARKET without a limit."""
        return cls(tick.token, BUY, qty, STOPLOSS_LIMIT if limit is not None else STOPLOSS_MARKET, limit,
                   tick.exchange_type, reason, trigger_price=trigger)

    @classmethod
    def stop_sell(cls, tick: "Tick", qty: int, trigger: float, limit: float | None = None,
                  reason: str = "") -> "Signal":
        """A SELL stop-loss: triggers once the price falls to ``trigger``."""
        return cls(tick.token, SELL, qty, STOPLOSS_LIMIT if limit is not None else STOPLOSS_MARKET, limit,
                   tick.exchange_type, reason, trigger_price=trigger)

    def as_row(self) -> dict:
        """The fields that identify a signal, for tables and for parity checks."""
        return {"token": self.token, "side": self.side, "qty": self.qty, "order_type": self.order_type,
                "limit_price": self.limit_price, "exchange_type": self.exchange_type,
                "tick_seq": self.tick_seq, "reason": self.reason, "trigger_price": self.trigger_price,
                "target": self.target, "stoploss": self.stoploss}


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
