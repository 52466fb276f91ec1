"""What makes an order acceptable, judged the same way by the paper and the live broker.

A backtest must not do what the exchange would refuse, so both brokers call
these before accepting an order. Each returns "" when the order passes, or a
sentence saying why not.

* ``shape_problem``: a side, an order type, a positive whole quantity, for
  LIMIT and STOPLOSS_LIMIT a finite positive price (NaN, inf, 0 and negatives
  never pass), for a stop-loss a finite positive trigger on the right side of
  its limit (a BUY stop's limit at or above its trigger, a SELL stop's at or below).
* ``instrument_problem``: the instrument is in the master, the quantity is a
  whole number of lots, the limit price is on the tick grid.
* ``price_problem``: a limit price inside the instrument's circuit band (from
  the last SNAP_QUOTE tick) or, without a band, within a collar around the
  last good price.
"""
from __future__ import annotations

import math

from kit.core.market import EXCHANGES
from kit.core.strategy import BUY, LIMIT, MARKET, ORDER_TYPES, SELL, STOP_TYPES, STOPLOSS_LIMIT

DEFAULT_PRICE_COLLAR = 0.3     # a LIMIT price more than 30 % from the last good price is refused


def _price_problem(name: str, value, order_type: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"a {order_type} order needs a numeric {name}, not {value!r}"
    if not math.isfinite(value) or value <= 0:
        return f"{name} must be a finite positive number of rupees, not {value!r}"
    return ""


def shape_problem(side, qty, order_type, limit_price, trigger_price=None) -> str:
    if order_type == MARKET and type(qty) is int and qty > 0 and (side == BUY or side == SELL):
        return ""          # the common case in one line: risk runs this for every signal
    if side not in (BUY, SELL):
        return f"side must be 'BUY' or 'SELL', not {side!r}"
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        return f"qty must be a positive whole number of units, not {qty!r}"
    if order_type not in ORDER_TYPES:
        return f"order_type must be one of {', '.join(ORDER_TYPES)}, not {order_type!r}"
    if order_type == LIMIT or order_type == STOPLOSS_LIMIT:
        problem = _price_problem("limit_price", limit_price, order_type)
        if problem:
            return problem
    if order_type in STOP_TYPES:
        problem = _price_problem("trigger_price", trigger_price, order_type)
        if problem:
            return problem
        if order_type == STOPLOSS_LIMIT and (limit_price < trigger_price if side == BUY
                                             else limit_price > trigger_price):
            return (f"a {side} stop-loss's limit price {limit_price} must be at or "
                    f"{'above' if side == BUY else 'below'} its trigger {trigger_price}")
    return ""


def instrument_problem(token: str, exchange_type: int, qty: int, order_type: str, limit_price, inst,
                       trigger_price=None) -> str:
    """``inst``: the master's ``Instrument`` for the order, or None if the master does not list it."""
    if inst is None:
        exchange = EXCHANGES.get(exchange_type, f"exchange type {exchange_type}")
        return f"token {token} is not in the instrument master for {exchange}"
    if qty % inst.lot_size:
        return f"qty {qty} is not a multiple of the lot size {inst.lot_size} of {inst.symbol}"
    if inst.tick_size:
        for name, price in (("limit price", limit_price if order_type in (LIMIT, STOPLOSS_LIMIT) else None),
                            ("trigger price", trigger_price)):
            if price is not None and abs(price / inst.tick_size - round(price / inst.tick_size)) > 1e-6:
                return f"{name} {price} is not a multiple of the tick size {inst.tick_size} of {inst.symbol}"
    return ""


def price_problem(limit_price: float, last_price: float, band: tuple[float, float] | None,
                  collar: float | None, *, need_price: bool = True) -> str:
    """A LIMIT price against the market: the circuit band if known, else ``collar`` around ``last_price``.

    With no price seen yet, ``need_price`` refuses (live: real money on an
    unchecked price); paper passes it (it fills only at prices ticks bring).
    """
    if band is not None:
        lower, upper = band
        if upper and limit_price > upper:
            return f"limit price {limit_price} above the upper circuit {upper}"
        if lower and limit_price < lower:
            return f"limit price {limit_price} below the lower circuit {lower}"
        return ""
    if collar is None:
        return ""
    if not last_price > 0:
        if not need_price:
            return ""
        return ("no price has been seen for this instrument yet, so a LIMIT price cannot be checked "
                "against the market: wait for a tick or send a MARKET order")
    low, high = last_price * (1 - collar), last_price * (1 + collar)
    if not low <= limit_price <= high:
        return (f"limit price {limit_price} is more than {collar:.0%} from the last price {last_price} "
                f"(allowed {low:.2f}–{high:.2f}; RiskLimits(price_collar=...) sets the collar)")
    return ""
