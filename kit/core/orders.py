"""Orders, fills and positions: the records every broker hands out, and the order statuses.

The paper and the live broker, risk, the engine and the dashboard all speak
these types. Statuses are spelled as Angel One's order book spells them,
upper-cased; ``PENDING`` is the live broker's own (queued or sent, not yet
acknowledged by the exchange). The ``*_COLUMNS`` lists and ``*_row`` getters
build the brokers' tables.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass

from kit.core.strategy import BUY, LIMIT, NORMAL, SELL, STOPLOSS_MARKET

OPEN, COMPLETE, CANCELLED, REJECTED = "OPEN", "COMPLETE", "CANCELLED", "REJECTED"
# Accepted by the live broker, not yet acknowledged by the exchange.
PENDING = "PENDING"
ACTIVE = (PENDING, OPEN)
TERMINAL = (COMPLETE, CANCELLED, REJECTED)

# What a broker's on_tick returns when nothing filled: one shared immutable empty tuple, so
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
    # Stop-loss and bracket orders (see kit.core.strategy.Signal): the trigger, Angel One's variety,
    # a bracket's offsets, and for a bracket's exit legs the order id of their entry.
    trigger_price: float | None = None
    variety: str = NORMAL
    target: float | None = None
    stoploss: float | None = None
    parent_id: str = ""


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
    # Brokerage, taxes and fees on this fill, rupees (kit.core.charges; 0.0 where none are modelled).
    charges: float = 0.0


@dataclass(slots=True, frozen=True)
class Position:
    """A snapshot of one instrument's position, P&L in rupees.

    ``qty`` is signed (+ long, - short); ``avg_price`` is the average entry
    price of the open quantity (0.0 when flat). ``total_pnl`` is gross;
    ``charges`` are what the fills cost, so the net is ``total_pnl - charges``.
    """
    token: str
    exchange_type: int
    qty: int
    avg_price: float
    last_price: float
    realized_pnl: float
    unrealized_pnl: float
    total_pnl: float
    # Charges of every fill in this instrument so far, rupees (0.0 where none are modelled);
    # ``total_pnl`` is gross, before them.
    charges: float = 0.0


ORDER_COLUMNS = [f.name for f in dataclasses.fields(Order)]
FILL_COLUMNS = [f.name for f in dataclasses.fields(Fill)]
POSITION_COLUMNS = [f.name for f in dataclasses.fields(Position)]
# Row getters for the tables: a C-level attrgetter is ~30x faster than
# dataclasses.astuple, which matters because order rows are read under a broker's lock.
order_row = operator.attrgetter(*ORDER_COLUMNS)
fill_row = operator.attrgetter(*FILL_COLUMNS)
position_row = operator.attrgetter(*POSITION_COLUMNS)


# -- the rules the simulated exchange and the paper broker share (one copy, so they cannot drift) ------

def stop_triggered(side: str, trigger: float, ltp: float) -> bool:
    """A stop-loss order's trigger is reached: a BUY stop at or above it, a SELL stop at or below it."""
    return ltp >= trigger if side == BUY else ltp <= trigger


def counts_as_open(order: Order) -> bool:
    """Whether an active order's unfilled units count in the exposure risk reads. A bracket's two exits are
    one-cancels-other, so only one may ever fill: its stop counts (the worst case), its target does not."""
    return not (order.parent_id and order.order_type == LIMIT)


def round_to_tick(price: float, tick_size: float | None) -> float:
    """``price`` on the instrument's tick grid (to the paisa without one)."""
    if not tick_size:
        return round(price, 2)
    return round(round(price / tick_size) * tick_size, 2)


@dataclass(slots=True, frozen=True)
class BracketLeg:
    """One exit of a filled bracket: the target (a LIMIT) or the stop (a STOPLOSS_MARKET)."""
    name: str                 # "target" or "stop"
    side: str
    qty: int
    order_type: str
    limit_price: float | None
    trigger_price: float | None


def bracket_legs(side: str, qty: int, fill_price: float, target: float, stoploss: float,
                 tick_size: float | None = None) -> tuple[BracketLeg, BracketLeg]:
    """The two exits of a bracket whose entry filled ``qty`` at ``fill_price``; whichever fills first
    cancels the other. A BUY entry exits by SELLing at ``fill_price + target`` (LIMIT) or once the
    price falls to ``fill_price - stoploss`` (STOPLOSS_MARKET); a SELL entry the mirror image."""
    exit_side = SELL if side == BUY else BUY
    sign = 1 if side == BUY else -1
    return (BracketLeg("target", exit_side, qty, LIMIT, round_to_tick(fill_price + sign * target, tick_size), None),
            BracketLeg("stop", exit_side, qty, STOPLOSS_MARKET, None,
                       round_to_tick(fill_price - sign * stoploss, tick_size)))


def gtt_fires_above(trigger: float, ltp_at_creation: float) -> bool:
    """A GTT rule fires when the price crosses its trigger from where it was when the rule was made:
    upwards if the trigger was above that price, downwards otherwise."""
    return trigger > ltp_at_creation


def gtt_triggered(fires_above: bool, trigger: float, ltp: float) -> bool:
    return ltp >= trigger if fires_above else ltp <= trigger
