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
# dataclasses.astuple, which matters because order rows are read under a broker's lock.
order_row = operator.attrgetter(*ORDER_COLUMNS)
fill_row = operator.attrgetter(*FILL_COLUMNS)
position_row = operator.attrgetter(*POSITION_COLUMNS)
