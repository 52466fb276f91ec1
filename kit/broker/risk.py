"""Pre-trade risk: every signal passes ``RiskManager.check`` before any broker sees it, paper or live.

    risk = RiskManager(RiskLimits(max_qty_per_order=650, max_daily_loss=5_000))
    reason = risk.check(signal, tick, broker)   # None = accepted, else why not (a sentence)

The checks, in the order they run (the first failure is the reason given).
Each costs O(1) whatever the number of open orders:

1. the signal itself: side, order type, a positive whole quantity, a finite
   positive limit price (NaN, inf, 0 and negatives are refused here)
2. the trading gate (``kit.broker.gate``): halted by the kill switch, not armed
   (live), stopped, a failing journal, positions not yet checked
3. trading hours: the signal's segment is in session (``kit.core.calendar``: per segment hours, holidays,
   the user's own days), by default for live brokers only; then the intraday square-off: once a
   segment's intraday positions were squared off (``kit.engine.square_off``), only orders that
   shrink a position pass there until the next session
4. ``max_qty_per_order`` (units) and ``max_lots_per_order`` (lots of the instrument)
5. ``max_position_per_token``: |position + open orders + this order|, in units;
   an order that shrinks the exposure always passes. A waiting stop-loss
   counts as if it had triggered (its worst case); a bracket's two exits
   count once, since only one can fill (``kit.core.orders.counts_as_open``)
6. ``max_daily_loss``: once realized + unrealized P&L net of charges is at or below minus this,
   the loss stop trips and stays tripped until ``resume()``: only orders that
   shrink a position pass, even if the marks recover
7. ``max_orders_per_second`` / ``_per_minute`` / ``_per_hour``: accepted orders only
   (looked at before 5 and 6, which cost more, and counted once all passed)

Defaults, decided for "safe by default" without breaking research:
``RiskLimits()`` sets no size or rate limit (a paper backtest may legitimately
fire hundreds of orders a second of replayed time) and enforces trading hours
for live brokers only (``enforce_hours="live"``), so the simulator and paper
trading work at any hour. A live trader always keeps Angel One's order-rate
caps (``RiskLimits.for_live``): a rate left unset becomes half the
exchange's, one set lower is kept, one set higher is an error. ``arm_live``
refuses to arm without a ``max_daily_loss``.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from kit.broker.base import Broker
from kit.broker.gate import TradingGate
from kit.core.calendar import Calendar, default_calendar, minutes
from kit.core.market import IST, NSE_CM
from kit.broker.rules import DEFAULT_PRICE_COLLAR, shape_problem
from kit.core.ratelimit import EXCHANGE_ORDER_LIMITS, RateLimiter

if TYPE_CHECKING:  # pragma: no cover
    from kit.core.strategy import Signal
    from kit.core.tick import Tick

ENFORCE = ("live", "always", "never")
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAYS = (0, 1, 2, 3, 4)


@dataclass
class RiskLimits:
    """``None`` disables a limit. Quantities are units (lots × lot size); money is rupees."""
    max_qty_per_order: int | None = None
    max_lots_per_order: int | None = None
    max_position_per_token: int | None = None
    max_orders_per_second: int | None = None
    max_orders_per_minute: int | None = None
    max_orders_per_hour: int | None = None
    max_daily_loss: float | None = None
    # A LIMIT price further than this fraction from the last good price is refused, when the
    # instrument's circuit band is not known (None: no collar). Both brokers apply it.
    price_collar: float | None = DEFAULT_PRICE_COLLAR
    # When each segment trades: None is the kit's (kit.core.calendar.default_calendar()).
    calendar: Calendar | None = field(default=None, repr=False, compare=False)
    # A window of your own inside the segments' sessions (IST, start inclusive, end exclusive), and
    # weekdays (Monday = 0); None: the calendar's alone.
    trading_hours: tuple[str, str] | None = None
    trading_days: tuple[int, ...] | None = None
    # Applies the calendar and the intraday square-off: "live" (live brokers, by the wall clock),
    # "always" (paper too; a replay by its ticks' time) or "never".
    enforce_hours: str = "live"

    def __post_init__(self):
        if self.enforce_hours not in ENFORCE:
            raise ValueError(f"enforce_hours must be one of {ENFORCE}, not {self.enforce_hours!r}")
        if self.calendar is not None and not isinstance(self.calendar, Calendar):
            raise TypeError(f"calendar takes a kit.core.calendar.Calendar, not {type(self.calendar).__name__}")
        if self.trading_hours is not None and not minutes(self.trading_hours[0]) < minutes(self.trading_hours[1]):
            raise ValueError(f"trading_hours {self.trading_hours} must start before they end")
        if self.max_daily_loss is not None and (
                isinstance(self.max_daily_loss, bool) or not isinstance(self.max_daily_loss, (int, float))
                or not math.isfinite(self.max_daily_loss) or self.max_daily_loss <= 0):
            raise ValueError(f"max_daily_loss must be a finite positive amount of rupees (the loss that stops "
                             f"trading), not {self.max_daily_loss!r}")
        for name in ("max_qty_per_order", "max_lots_per_order", "max_position_per_token", "max_orders_per_second",
                     "max_orders_per_minute", "max_orders_per_hour"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be None or a positive whole number, not {value!r}")
        if self.price_collar is not None and not (isinstance(self.price_collar, (int, float))
                                                  and 0 < self.price_collar < 1):
            raise ValueError(f"price_collar must be None or a fraction between 0 and 1, not {self.price_collar!r}")

    @classmethod
    def live_defaults(cls, **overrides) -> "RiskLimits":
        """Conservative limits for real money: order rates at half of Angel One's caps, hours enforced."""
        return replace(cls(max_orders_per_second=10, max_orders_per_minute=250), **overrides)

    def for_live(self) -> "RiskLimits":
        """These limits with Angel One's order-rate caps always on.

        A rate left unset becomes half the exchange's (``live_defaults``); one
        set lower is kept; one above the exchange's is a ValueError, since
        the exchange would refuse those orders anyway, mid-strategy.
        """
        defaults = RiskLimits.live_defaults()
        caps = {}
        for name, (count, _window) in zip(_RATE_FIELDS, EXCHANGE_ORDER_LIMITS):
            value = getattr(self, name)
            if value is None:
                value = getattr(defaults, name) or count // 2
            elif value > count:
                raise ValueError(f"{name}={value} is above Angel One's limit of {count}: live orders are capped "
                                 f"at the exchange's rate (lower it, or leave it unset for {count // 2})")
            caps[name] = value
        return replace(self, **caps)


# Arming is for real money: a paper broker trades whether or not it is armed.
_PAPER_IGNORES = frozenset({"disarmed"})
_LIVE_IGNORES: frozenset = frozenset()
_RATE_FIELDS = ("max_orders_per_second", "max_orders_per_minute", "max_orders_per_hour")
_RATE_UNITS = ("second", "minute", "hour")


class RiskManager:
    """Applies ``RiskLimits`` to signals and holds the trading gate (kill switch, live arming).

    ``lot_size(token, exchange_type) -> int | None`` resolves lots (the live
    broker's instrument master, by default the broker's own ``lot_size``).
    ``clock`` (epoch seconds) and ``monotonic`` are injectable for tests.
    ``tick_time``: judge the trading hours by the time of the tick a signal
    answers (a replay) rather than by ``clock``.
    ``gate`` is shared with the live broker, whose sender checks it again
    immediately before each request. ``broker`` is any ``kit.broker.base.Broker``.
    """

    def __init__(self, limits: RiskLimits | None = None, *, lot_size=None, clock=time.time,
                 monotonic=time.monotonic, gate: TradingGate | None = None, tick_time: bool = False):
        self.limits = limits or RiskLimits()
        self.calendar = self.limits.calendar or default_calendar()
        self.tick_time = tick_time
        self.lot_size = lot_size
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        rates = [(getattr(self.limits, name), window) for name, (_, window) in zip(_RATE_FIELDS, EXCHANGE_ORDER_LIMITS)]
        self._rate_units = [unit for unit, (count, _) in zip(_RATE_UNITS, rates) if count is not None]
        self._rates = RateLimiter([r for r in rates if r[0] is not None], monotonic=monotonic) \
            if self._rate_units else None
        # exchange type -> (epoch minute, outside_hours' answer): one answer a minute, forgotten
        # whenever the calendar changes (it clears the caches it was asked to watch).
        self._hours: dict[int, tuple[float, str]] = self.calendar.cache()
        # exchange type -> why risk-increasing orders are refused there since its intraday square-off.
        self._squared_off: dict[int, str] = {}
        self._rates_full_until = 0.0     # monotonic time a full rate window frees up
        self._rates_reason = ""
        self.gate = gate or TradingGate()
        if gate is None:
            self.disarm()          # live orders need arm(); paper ignores this
        self.loss_stop = ""          # why the daily-loss stop tripped ("" while it has not)
        self._halt_reason = ""
        self.rejections = 0
        self.last_rejection = ""
        # (epoch seconds, signal, reason): a tuple on the tick path, rows only when read.
        self._rejected: deque[tuple] = deque(maxlen=1000)

    # ------------------------------------------------------------------ the check
    def check(self, signal: "Signal", tick: "Tick | None", broker: Broker) -> str | None:
        """None if ``signal`` may go to ``broker``, else the reason it may not. Never raises on a bad signal."""
        with self._lock:
            try:
                reason = self._reason(signal, tick, broker)
            except Exception as exc:       # a signal too malformed to judge is refused, not a crash
                reason = f"signal could not be checked ({type(exc).__name__}: {exc})"
            if reason is not None:
                self.rejections += 1
                self.last_rejection = reason
                self._rejected.append((self._clock(), signal, reason))
            return reason

    @property
    def rejection_log(self) -> list[dict]:
        """The last 1,000 refusals, oldest first: time (epoch seconds), token, side, qty, reason."""
        return [{"time": t, "token": getattr(s, "token", None), "side": getattr(s, "side", None),
                 "qty": getattr(s, "qty", None), "reason": reason} for t, s, reason in list(self._rejected)]

    def _reason(self, signal: "Signal", tick: "Tick | None", broker: Broker) -> str | None:
        lim = self.limits
        problem = shape_problem(signal.side, signal.qty, signal.order_type, signal.limit_price,
                                signal.trigger_price)
        if problem:
            return problem
        closed = self.gate.refusal(ignore=_LIVE_IGNORES if broker.live else _PAPER_IGNORES)
        if closed:
            return closed
        if lim.enforce_hours == "always" or (lim.enforce_hours == "live" and broker.live):
            # outside_hours' per-minute answer, inlined: this runs for every live signal.
            now = tick.exchange_ts / 1000 if self.tick_time and tick is not None else self._clock()
            cached = self._hours.get(signal.exchange_type)
            closed = cached[1] if cached is not None and cached[0] == now // 60 else \
                self.outside_hours(signal.exchange_type, now)
            if closed:
                return closed
        if self._squared_off:
            closed = self._squared_off.get(signal.exchange_type)
            if closed:
                exposure = broker.exposure(signal.token, signal.exchange_type)
                if not abs(exposure + (signal.qty if signal.side == "BUY" else -signal.qty)) < abs(exposure):
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
        # The rate caps are looked at (not yet counted) before the costlier checks below: a strategy
        # signalling on every tick is refused here at the cost of a deque length.
        # While a rate window is full nothing more can pass: refused for a clock read, so a strategy
        # signalling on every tick costs the tick path little (the costlier checks come after).
        if self._rates_full_until and self._monotonic() < self._rates_full_until:
            return self._rates_reason
        full = self._rates.full() if self._rates is not None else None
        if full is not None:
            index, count = full
            unit = self._rate_units[index]
            self._rates_reason = (f"{count} orders in the last {unit}: "
                                  f"max_orders_per_{unit} {self._rates.limits[index][0]}")
            self._rates_full_until = self._rates.free_at()
            return self._rates_reason
        if lim.max_position_per_token is not None or lim.max_daily_loss is not None:
            exposure = broker.exposure(signal.token, signal.exchange_type)
            after = exposure + (signal.qty if signal.side == "BUY" else -signal.qty)
            reducing = abs(after) < abs(exposure)
            if (lim.max_position_per_token is not None and not reducing
                    and abs(after) > lim.max_position_per_token):
                return (f"position in {signal.token} would reach {after:+d} (held and open {exposure:+d}), "
                        f"beyond max_position_per_token {lim.max_position_per_token}")
            if lim.max_daily_loss is not None and not reducing:
                if not self.loss_stop:
                    figures = broker.pnl()
                    pnl = figures.get("net", figures["total"])     # after charges, where the broker has them
                    if pnl <= -lim.max_daily_loss:
                        # Latched: a later mark that looks better does not lift it; resume() does.
                        self.loss_stop = (f"daily loss {-pnl:,.2f} has reached max_daily_loss "
                                          f"{lim.max_daily_loss:,.2f}; only orders that reduce a position are "
                                          "accepted until trader.resume()")
                if self.loss_stop:
                    return self.loss_stop
        if self._rates is not None:
            self._rates.try_acquire()       # under the risk lock: nothing was counted since full()
        return None

    def _lot(self, signal: "Signal", broker: Broker) -> int | None:
        resolver = self.lot_size or broker.lot_size
        return resolver(signal.token, signal.exchange_type)

    def outside_hours(self, exchange_type: int = NSE_CM, now: float | None = None) -> str:
        """"" while the segment trades, else a sentence saying why not (the same for a whole minute)."""
        now = self._clock() if now is None else now
        minute = now // 60
        cached = self._hours.get(exchange_type)
        if cached is not None and cached[0] == minute:
            return cached[1]
        answer = self._outside_hours(exchange_type, now)
        self._hours[exchange_type] = (minute, answer)
        return answer

    def _outside_hours(self, exchange_type: int, now: float) -> str:
        try:
            closed = self.calendar.why_closed(exchange_type, now)
        except ValueError:
            return f"exchange type {exchange_type} is not an Angel One segment: when it trades is unknown"
        lim = self.limits
        if closed or (lim.trading_hours is None and lim.trading_days is None):
            return closed
        t = datetime.fromtimestamp(now, IST)
        days = _WEEKDAYS if lim.trading_days is None else lim.trading_days
        start, end = (0, 24 * 60) if lim.trading_hours is None else (minutes(x) for x in lim.trading_hours)
        if t.weekday() in days and start <= t.hour * 60 + t.minute < end:
            return ""
        window = "" if lim.trading_hours is None else f" {lim.trading_hours[0]}–{lim.trading_hours[1]} IST"
        return (f"outside RiskLimits.trading_hours{window} ({', '.join(_DAY_NAMES[d] for d in days)}): "
                f"it is {_DAY_NAMES[t.weekday()]} {t:%H:%M} IST")

    # ------------------------------------------------------------------ the intraday square-off
    def close_for_square_off(self, exchange_type: int, reason: str) -> None:
        """Refuse orders that do not shrink a position in ``exchange_type`` with ``reason``, until reopened."""
        self._squared_off = {**self._squared_off, exchange_type: reason}

    def reopen_after_square_off(self) -> None:
        """A new session: orders of every segment are judged as usual again."""
        self._squared_off = {}

    @property
    def squared_off(self) -> dict[int, str]:
        """exchange type -> why only position-reducing orders pass there (empty outside a square-off)."""
        return dict(self._squared_off)

    # ------------------------------------------------------------------ switches
    @property
    def halted(self) -> bool:
        return self.gate.is_closed("halted")

    @property
    def halt_reason(self) -> str:
        return self._halt_reason if self.halted else ""

    @property
    def armed(self) -> bool:
        return not self.gate.is_closed("disarmed")

    def halt(self, reason: str = "kill switch") -> None:
        """The kill switch: every later signal is rejected with ``reason`` until ``resume()``."""
        self._halt_reason = reason
        self.gate.close("halted", f"trading halted: {reason}")

    def resume(self) -> None:
        """Lift the kill switch and the daily-loss stop (each stays until this is called)."""
        self.gate.open("halted")
        self.loss_stop = ""

    def arm(self) -> None:
        self.gate.open("disarmed")

    def disarm(self) -> None:
        self.gate.close("disarmed", "live trading is not armed: call trader.arm_live(confirm=<your client code>) first")

    def status(self) -> dict:
        return {"halted": self.halted, "halt_reason": self.halt_reason, "armed": self.armed,
                "loss_stop": self.loss_stop, "gate": self.gate.reasons, "squared_off": self.squared_off,
                "rejections": self.rejections, "last_rejection": self.last_rejection}
