"""The intraday square-off: the kit closes its own intraday positions per segment, before the broker does.

Angel One squares off open intraday positions itself near each segment's
close, with a charge per order. The kit gets there first: at each segment's
square-off time it refuses new orders there that do not reduce a position,
cancels its open orders there and closes the segment's positions with MARKET
orders, through the kill switch's path (``LiveControls.square_off``): the live
broker reads its positions fresh from Angel One and only ever shrinks them.
Other segments trade on (MCX after NSE's square-off). Only orders that reduce
a position pass in a squared-off segment until its next session (the next
IST day); ``trader.status["square_off"]`` and the log say so.

    kit.TraderConfig(square_off=kit.SquareOff())                          # the default
    kit.TraderConfig(square_off=kit.SquareOff(at={"NFO": "15:15", "MCX": None}))
    kit.TraderConfig(square_off=None)                                     # never

Default times: ``before_close=20`` minutes before the segment's last session
of the day closes (``kit.core.calendar``): 15:10 IST for NSE, BSE, NFO and
BFO, 16:40 for CDS and NCDEX, 23:10 for MCX (23:35 while MCX closes at 23:55).
Angel One documents its MCX timer at 23:15 (23:40); for the other segments
brokers use 15:15–15:25 and 16:45, and no Angel One page at hand gave its
own, so the kit's defaults come 5 minutes before the earliest of them.
``at`` sets a segment's time ("HH:MM" IST) or turns it off (None).

It applies to intraday products only (``TraderConfig.product`` "INTRADAY" or
"BO"), and when ``RiskLimits.enforce_hours`` applies the calendar: live
traders by default, by the wall clock (IST), checked every second; paper
traders with ``enforce_hours="always"``, a replay by its ticks' exchange
time, at the first tick at or after the square-off time (paper flattening
orders fill at each instrument's next tick, that one included).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from kit.core.calendar import SEGMENTS, Calendar, ist, minutes, segment_name
from kit.core.market import EXCHANGE_TYPES, IST

log = logging.getLogger(__name__)

INTRADAY_PRODUCTS = frozenset({"INTRADAY", "BO"})     # Angel One's producttypes squared off the same day
NEVER_MS = 2 ** 62                                     # a tick time no tick reaches
_RETRY_S = 5.0                                         # a failed square-off is tried again this much later


@dataclass
class SquareOff:
    """When the kit squares off intraday positions, per segment. See the module docstring."""
    before_close: int = 20
    at: dict = field(default_factory=dict)      # segment -> "HH:MM" IST, or None: no square-off there
    timeout: float = 10.0                        # live: seconds to wait for the cancels, then the fills

    def __post_init__(self):
        if isinstance(self.before_close, bool) or not isinstance(self.before_close, int) or self.before_close < 0:
            raise ValueError(f"SquareOff.before_close is whole minutes >= 0, not {self.before_close!r}")
        for time_of_day in self.at.values():
            if time_of_day is not None:
                minutes(time_of_day)                 # a ValueError unless "HH:MM"
        self.at = {segment_name(s): t for s, t in self.at.items()}
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"SquareOff.timeout must be > 0 seconds, not {self.timeout!r}")

    def minute(self, calendar: Calendar, day: date, segment: str) -> int | None:
        """Minutes after midnight IST of ``segment``'s square-off on ``day``; None: none that day."""
        if segment in self.at:
            fixed = self.at[segment]
            return None if fixed is None or not calendar.sessions(day, segment) else minutes(fixed)
        sessions = calendar.sessions(day, segment)
        return minutes(sessions[-1].end) - self.before_close if sessions else None


class SquareOffRunner:
    """Decides when each segment is due and has ``controls.square_off`` act. Thread-safe.

    ``poll(now)`` costs a comparison until the next time anything can change
    (a square-off time, or midnight IST when the latches lift). A live
    broker's square-off waits for the exchange, so it runs on its own thread;
    a paper one acts at once, on the polling thread.
    """

    def __init__(self, config: SquareOff, calendar: Calendar, risk, controls, *, live: bool, name: str = "default"):
        self.config, self.calendar, self.risk, self.controls = config, calendar, risk, controls
        self.live, self.name = live, name
        self.next_at = 0.0                     # epoch seconds: poll does nothing before it
        self.results: list[dict] = []          # what each square-off did, oldest first
        self._day: date | None = None
        self._done: dict[str, date] = {}       # segment -> the day its positions were squared off
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def next_at_ms(self) -> int:
        return int(self.next_at * 1000)

    def poll(self, now: float) -> None:
        if now < self.next_at:
            return
        with self._lock:
            if now >= self.next_at:
                self._step(now)

    def _step(self, now: float) -> None:
        t = ist(now)
        day, minute = t.date(), t.hour * 60 + t.minute
        if day != self._day:
            if self._day is not None and self.risk.squared_off:
                log.info("intraday square-off: a new day (%s): orders in every segment are judged as usual", day)
            self._day = day
            self.risk.reopen_after_square_off()
        midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), IST).timestamp()
        upcoming, due = [midnight], []
        for segment in SEGMENTS:
            at = self.config.minute(self.calendar, day, segment) if self._done.get(segment) != day else None
            if at is None:
                continue
            if minute >= at:
                due.append(segment)
            else:
                upcoming.append(datetime.combine(day, datetime.min.time(), IST).timestamp() + at * 60)
        self.next_at = min(upcoming)
        if not due:
            return
        if self._worker is not None and self._worker.is_alive():
            self.next_at = min(self.next_at, now + 1.0)       # the one running now comes first
            return
        for segment in due:
            self.risk.close_for_square_off(EXCHANGE_TYPES[segment], (
                f"intraday square-off: {segment} intraday positions were squared off at {t:%H:%M} IST on {day}; "
                f"only orders that reduce a position are accepted in {segment} until its next session"))
        log.warning("intraday square-off at %s IST: cancelling open orders and closing positions in %s",
                    f"{t:%H:%M}", ", ".join(due))
        if self.live:
            self._worker = threading.Thread(target=self._act, args=(due, day, now), daemon=True,
                                            name=f"kit-square-off-{self.name}")
            self._worker.start()
        else:
            self._act(due, day, now)

    def _act(self, segments: list[str], day: date, now: float) -> None:
        types = frozenset(EXCHANGE_TYPES[s] for s in segments)
        try:
            result = self.controls.square_off(types, f"intraday square-off {', '.join(segments)}",
                                              timeout=self.config.timeout)
        except Exception as exc:                  # never lost silently: retried, and logged
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result.update(segments=segments, day=day, time=now)
        self.results.append(result)
        if result.get("error"):
            log.error("intraday square-off of %s failed (%s); trying again in %gs", ", ".join(segments),
                      result["error"], _RETRY_S)
            self.next_at = min(self.next_at, now + _RETRY_S)
            return
        for segment in segments:
            self._done[segment] = day
        log.warning("intraday square-off of %s done: %d orders cancelled, %d flattening orders, positions left %s",
                    ", ".join(segments), result.get("cancelled", 0), len(result.get("flatten_orders", ())),
                    result.get("positions") or "none")

    # ------------------------------------------------------------------ the wall clock (live)
    def watch(self, clock, interval: float = 1.0) -> None:
        """Poll ``clock()`` (epoch seconds) every ``interval`` seconds on a thread, until ``unwatch()``."""
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._stop.clear()

        def run():
            while not self._stop.is_set():
                try:
                    self.poll(clock())
                except Exception:
                    log.exception("intraday square-off: the check failed")
                self._stop.wait(interval)

        self._watcher = threading.Thread(target=run, daemon=True, name=f"kit-square-off-clock-{self.name}")
        self._watcher.start()

    def unwatch(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5.0)
        self._watcher = None

    def join(self, timeout: float = 30.0) -> None:
        """Wait for a live square-off in progress to finish."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
