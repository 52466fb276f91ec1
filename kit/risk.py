"""Pre-trade risk: every signal passes ``RiskManager.check`` before any broker sees it, paper or live.

    risk = RiskManager(RiskLimits(max_qty_per_order=650, max_daily_loss=5_000))
    reason = risk.check(signal, tick, broker)   # None = accepted, else why not (a sentence)

The checks, in the order they run (the first failure is the reason given):

1. halted: the kill switch (``halt()``) rejects everything until ``resume()``
2. armed: a live broker's orders need ``arm()`` (``LiveTrader.arm_live``)
3. trading hours: 09:15–15:30 IST, Monday–Friday, by default for live brokers only
4. ``max_qty_per_order`` (units) and ``max_lots_per_order`` (lots of the instrument)
5. ``max_position_per_token``: |position + open orders + this order|, in units;
   an order that shrinks the exposure always passes
6. ``max_daily_loss``: once realized + unrealized P&L is at or below minus this,
   only orders that shrink a position pass
7. ``max_orders_per_second`` / ``max_orders_per_minute``: accepted orders only

Defaults, decided for "safe by default" without breaking research:
``RiskLimits()`` sets no size or rate limit (a paper backtest may legitimately
fire hundreds of orders a second of replayed time) and enforces trading hours
for live brokers only (``enforce_hours="live"``), so the simulator and paper
trading work at any hour. ``RiskLimits.live_defaults()`` adds order-rate caps
at half of Angel One's 20/s and 500/min; ``LiveTrader`` uses it when the
config gives no limits and ``paper=False``, and ``arm_live`` refuses to arm
without a ``max_daily_loss``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime

from .instruments import IST

ENFORCE = ("live", "always", "never")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class RiskLimits:
    """``None`` disables a limit. Quantities are units (lots × lot size); money is rupees."""
    max_qty_per_order: int | None = None
    max_lots_per_order: int | None = None
    max_position_per_token: int | None = None
    max_orders_per_second: int | None = None
    max_orders_per_minute: int | None = None
    max_daily_loss: float | None = None
    trading_hours: tuple[str, str] = ("09:15", "15:30")    # IST, start inclusive, end exclusive
    trading_days: tuple[int, ...] = (0, 1, 2, 3, 4)         # Monday = 0
    enforce_hours: str = "live"                             # "live", "always" or "never"

    def __post_init__(self):
        if self.enforce_hours not in ENFORCE:
            raise ValueError(f"enforce_hours must be one of {ENFORCE}, not {self.enforce_hours!r}")
        start, end = (_minutes(t) for t in self.trading_hours)
        if not start < end:
            raise ValueError(f"trading_hours {self.trading_hours} must start before they end")
        if self.max_daily_loss is not None and self.max_daily_loss <= 0:
            raise ValueError("max_daily_loss is a positive amount of rupees (the loss that stops trading)")

    @classmethod
    def live_defaults(cls, **overrides) -> "RiskLimits":
        """Conservative limits for real money: order rates at half of Angel One's caps, hours enforced."""
        return replace(cls(max_orders_per_second=10, max_orders_per_minute=250), **overrides)


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) * 60 + int(minutes)


class RiskManager:
    """Applies ``RiskLimits`` to signals, holds the kill switch and the live arming flag.

    ``lot_size(token, exchange_type) -> int | None`` resolves lots (the live
    broker's instrument master, by default the broker's own ``lot_size``).
    ``clock`` (epoch seconds) and ``monotonic`` are injectable for tests.
    """

    def __init__(self, limits: RiskLimits | None = None, *, lot_size=None, clock=time.time,
                 monotonic=time.monotonic):
        self.limits = limits or RiskLimits()
        self.lot_size = lot_size
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._accepted: deque[float] = deque()      # monotonic times of accepted orders, last minute
        self.halted = False
        self.halt_reason = ""
        self.armed = False
        self.rejections = 0
        self.last_rejection = ""
        self.rejection_log: deque[dict] = deque(maxlen=1000)

    # ------------------------------------------------------------------ the check
    def check(self, signal, tick, broker) -> str | None:
        """None if ``signal`` may go to ``broker``, else the reason it may not."""
        with self._lock:
            reason = self._reason(signal, broker)
            if reason is None:
                self._accepted.append(self._monotonic())
            else:
                self.rejections += 1
                self.last_rejection = reason
                self.rejection_log.append({"time": self._clock(), "token": signal.token, "side": signal.side,
                                           "qty": signal.qty, "reason": reason})
            return reason

    def _reason(self, signal, broker) -> str | None:
        lim = self.limits
        live = bool(getattr(broker, "live", False))
        if self.halted:
            return f"trading halted: {self.halt_reason}"
        if live and not self.armed:
            return "live trading is not armed: call trader.arm_live(confirm=<your client code>) first"
        if lim.enforce_hours == "always" or (lim.enforce_hours == "live" and live):
            closed = self.outside_hours()
            if closed:
                return closed
        if lim.max_qty_per_order is not None and signal.qty > lim.max_qty_per_order:
            return f"qty {signal.qty} exceeds max_qty_per_order {lim.max_qty_per_order}"
        if lim.max_lots_per_order is not None:
            lot = self._lot(signal, broker)
            if not lot:
                return (f"lot size of token {signal.token} (exchange type {signal.exchange_type}) is unknown, "
                        "so max_lots_per_order cannot be checked")
            lots = signal.qty / lot
            if lots > lim.max_lots_per_order:
                return f"{lots:g} lots (qty {signal.qty}, lot size {lot}) exceeds max_lots_per_order {lim.max_lots_per_order}"
        if lim.max_position_per_token is not None or lim.max_daily_loss is not None:
            exposure = self._exposure(signal, broker)
            after = exposure + (signal.qty if signal.side == "BUY" else -signal.qty)
            reducing = abs(after) < abs(exposure)
            if (lim.max_position_per_token is not None and not reducing
                    and abs(after) > lim.max_position_per_token):
                return (f"position in {signal.token} would reach {after:+d} (held and open {exposure:+d}), "
                        f"beyond max_position_per_token {lim.max_position_per_token}")
            if lim.max_daily_loss is not None and not reducing:
                pnl = broker.pnl()["total"]
                if pnl <= -lim.max_daily_loss:
                    return (f"daily loss {-pnl:,.2f} has reached max_daily_loss {lim.max_daily_loss:,.2f}; "
                            "only orders that reduce a position are accepted")
        if lim.max_orders_per_second is not None or lim.max_orders_per_minute is not None:
            now = self._monotonic()
            accepted = self._accepted
            while accepted and now - accepted[0] >= 60.0:
                accepted.popleft()
            if lim.max_orders_per_minute is not None and len(accepted) >= lim.max_orders_per_minute:
                return f"{len(accepted)} orders in the last minute: max_orders_per_minute {lim.max_orders_per_minute}"
            if lim.max_orders_per_second is not None:
                last_second = sum(1 for t in reversed(accepted) if now - t < 1.0)
                if last_second >= lim.max_orders_per_second:
                    return f"{last_second} orders in the last second: max_orders_per_second {lim.max_orders_per_second}"
        return None

    def _lot(self, signal, broker) -> int | None:
        resolver = self.lot_size or getattr(broker, "lot_size", None)
        return resolver(signal.token, signal.exchange_type) if resolver else None

    @staticmethod
    def _exposure(signal, broker) -> int:
        """Signed units held plus the unfilled part of open orders, for the signal's instrument."""
        position = broker.position(signal.token, signal.exchange_type)
        exposure = position.qty if position is not None else 0
        for order in broker.open_orders():
            if order.token == signal.token and order.exchange_type == signal.exchange_type:
                left = order.qty - order.filled_qty
                exposure += left if order.side == "BUY" else -left
        return exposure

    def outside_hours(self, now: float | None = None) -> str:
        """"" inside the trading window, else a sentence saying why not."""
        lim = self.limits
        t = datetime.fromtimestamp(self._clock() if now is None else now, IST)
        start, end = (_minutes(x) for x in lim.trading_hours)
        minute = t.hour * 60 + t.minute
        if t.weekday() in lim.trading_days and start <= minute < end:
            return ""
        days = ", ".join(_DAY_NAMES[d] for d in lim.trading_days)
        return (f"outside trading hours {lim.trading_hours[0]}–{lim.trading_hours[1]} IST ({days}): "
                f"it is {_DAY_NAMES[t.weekday()]} {t:%H:%M} IST")

    # ------------------------------------------------------------------ switches
    def halt(self, reason: str = "kill switch") -> None:
        """The kill switch: every later signal is rejected with ``reason`` until ``resume()``."""
        self.halt_reason = reason
        self.halted = True

    def resume(self) -> None:
        self.halted = False
        self.halt_reason = ""

    def arm(self) -> None:
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def status(self) -> dict:
        return {"halted": self.halted, "halt_reason": self.halt_reason, "armed": self.armed,
                "rejections": self.rejections, "last_rejection": self.last_rejection}
