"""Slippage models for the paper broker: what a MARKET fill costs beyond the printed price, and when it happens.

    PaperBroker()                                  # NoSlippage(): the next tick's ltp, as the simulated exchange
    PaperBroker(slippage=FixedTicks(1))            # a market fill one tick worse (BUY higher, SELL lower)
    PaperBroker(slippage=SpreadFraction(0.5))      # half the quoted spread worse, on ticks that carry depth
    PaperBroker(slippage=LatencyTicks(3))          # every order first judged on the 3rd tick after it
    kit.TraderConfig(feed="replay", ..., slippage=FixedTicks(2))      # the same through the engine

A model answers two questions (``SlippageModel``):

* ``delay_ticks``: on which tick of its instrument, counted from the one it
  was submitted on, an order is first judged (1: the next tick; more: the
  order reaches the market only then, and is judged against that tick as a
  new order);
* ``price(side, ltp, tick, tick_size)``: the price a MARKET order, or a
  stop-loss market order on its triggering tick, fills at on ``tick``.

A LIMIT order (a stop-limit once triggered, a bracket's target, a GTT's
order) fills at its own limit or at a better printed price, never slipped:
slippage is what crossing the spread costs, and a resting order does not
cross it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from kit.core.orders import round_to_tick
from kit.core.strategy import BUY

if TYPE_CHECKING:  # pragma: no cover
    from kit.core.tick import Tick

__all__ = ["SlippageModel", "NoSlippage", "FixedTicks", "SpreadFraction", "LatencyTicks", "DEFAULT_TICK_SIZE"]

# The tick size assumed without an instrument master (NSE's for most equities and F&O contracts).
DEFAULT_TICK_SIZE = 0.05


@runtime_checkable
class SlippageModel(Protocol):
    """What ``PaperBroker(slippage=...)`` takes; the models below, or your own."""

    delay_ticks: int

    def price(self, side: str, ltp: float, tick: "Tick", tick_size: float | None) -> float:
        """The fill price of a MARKET (or triggered stop-loss market) order of ``side`` on ``tick``.

        ``tick_size``: the instrument master's, None without one.
        """
        ...


def _ticks(n, name: str, least: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ValueError(f"{name} takes a whole number of ticks >= {least}, not {n!r}")
    return n


@dataclass(frozen=True, slots=True)
class NoSlippage:
    """Fills at the printed price of the next tick: the simulated exchange's rule, and the default."""
    delay_ticks: ClassVar[int] = 1

    def price(self, side: str, ltp: float, tick: "Tick", tick_size: float | None) -> float:
        return ltp


@dataclass(frozen=True, slots=True)
class FixedTicks:
    """A market fill ``n`` ticks worse than the printed price: BUY higher, SELL lower.

    The tick size is the instrument master's, else ``DEFAULT_TICK_SIZE`` (₹0.05). A SELL
    never fills below one tick.
    """
    n: int = 1
    delay_ticks: ClassVar[int] = 1

    def __post_init__(self):
        _ticks(self.n, "FixedTicks", 0)

    def price(self, side: str, ltp: float, tick: "Tick", tick_size: float | None) -> float:
        step = tick_size or DEFAULT_TICK_SIZE
        if side == BUY:
            return round_to_tick(ltp + self.n * step, None)
        return max(step, round_to_tick(ltp - self.n * step, None))


@dataclass(frozen=True, slots=True)
class SpreadFraction:
    """A market fill worse by ``fraction`` × (best ask − best bid), from the tick's quote depth.

    A tick without depth (LTP and QUOTE mode carry none) or with an empty side fills at
    the printed price. ``fraction`` 0.5 is "pays half the spread" beyond the last trade.
    The price is not put on the tick grid: it stands for the average of a fill that
    walks the book.
    """
    fraction: float = 0.5
    delay_ticks: ClassVar[int] = 1

    def __post_init__(self):
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                or not 0 <= self.fraction <= 10:
            raise ValueError(f"SpreadFraction takes a fraction of the spread between 0 and 10, not {self.fraction!r}")

    def price(self, side: str, ltp: float, tick: "Tick", tick_size: float | None) -> float:
        spread = quoted_spread(tick)
        if not spread:
            return ltp
        return ltp + self.fraction * spread if side == BUY else ltp - self.fraction * spread


@dataclass(frozen=True, slots=True)
class LatencyTicks:
    """An order first judged on the ``n``-th tick of its instrument after the one it was submitted on
    (instead of the next): a slow order path. It reaches the market on that tick and is judged
    against it as a new order (a LIMIT through that tick fills at its ltp). Its market fills are
    priced by ``then`` (the printed price by default): ``LatencyTicks(3, then=FixedTicks(1))`` is
    both late and a tick worse."""
    n: int = 2
    then: SlippageModel | None = None

    def __post_init__(self):
        _ticks(self.n, "LatencyTicks", 1)
        if self.then is not None and (not isinstance(self.then, SlippageModel) or self.then.delay_ticks != 1):
            raise ValueError(f"LatencyTicks(then=...) takes a price model without a delay of its own, "
                             f"such as FixedTicks(1), not {self.then!r}")

    @property
    def delay_ticks(self) -> int:
        return self.n

    def price(self, side: str, ltp: float, tick: "Tick", tick_size: float | None) -> float:
        return ltp if self.then is None else self.then.price(side, ltp, tick, tick_size)


def quoted_spread(tick: "Tick") -> float:
    """Best ask − best bid of the tick's depth (``Quote.best_sell`` / ``best_buy``), or 0.0 without both."""
    quote = tick.quote
    if quote is None or not quote.best_buy or not quote.best_sell:
        return 0.0
    bid, ask = quote.best_buy[0][0], quote.best_sell[0][0]
    if not (bid > 0 and ask > bid):
        return 0.0
    return ask - bid
