"""One sliding-window rate limiter, for every limit the kit keeps or meets (order pacing,
risk caps, historical-candle requests, the simulator's REST limits).

Several windows at once (Angel One counts orders per second, per minute and
per hour); each window is a deque of the times it admitted, so a check costs
amortised O(1) whatever the window's size.

    limiter = RateLimiter(((20, 1.0), (500, 60.0)))
    limiter.try_acquire()      # True and counted, or False (a full window) without waiting
    limiter.wait()             # sleeps until one more fits every window, then counts it
"""
from __future__ import annotations

import threading
import time
from collections import deque

# Angel One's order-API limits: place, modify and cancel, per client code.
EXCHANGE_ORDER_LIMITS = ((20, 1.0), (500, 60.0), (1000, 3600.0))


class RateLimiter:
    """``limits``: ``((count, window_seconds), ...)``. ``margin`` widens each window by that many seconds.

    The margin is for pacing requests whose latency varies: the exchange counts
    arrivals, not departures, and 21 requests sent in one second could arrive
    in one. Thread-safe. ``monotonic`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, limits=EXCHANGE_ORDER_LIMITS, *, margin: float = 0.0, monotonic=time.monotonic,
                 sleep=time.sleep):
        self.limits = tuple((int(count), float(window) + margin) for count, window in limits)
        if not self.limits or any(count < 1 or window <= 0 for count, window in self.limits):
            raise ValueError(f"limits must be (count >= 1, seconds > 0) pairs, not {limits!r}")
        self._times = [deque() for _ in self.limits]
        self._monotonic, self._sleep = monotonic, sleep
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def _delay(self, now: float) -> float:
        """Seconds until one more fits every window (0: now); drops times that left their window."""
        delay = 0.0
        for (count, window), times in zip(self.limits, self._times):
            while times and now - times[0] >= window:
                times.popleft()
            if len(times) >= count:
                delay = max(delay, times[-count] + window - now)
        return delay

    def full(self) -> tuple[int, int] | None:
        """None if one more would fit now, else ``(index of the first full window, events in it)``."""
        with self._lock:
            now = self._monotonic()
            for index, ((count, window), times) in enumerate(zip(self.limits, self._times)):
                while times and now - times[0] >= window:
                    times.popleft()
                if len(times) >= count:
                    return index, len(times)
            return None

    def free_at(self) -> float:
        """The monotonic time at which one more will fit (now or earlier: it fits)."""
        with self._lock:
            now = self._monotonic()
            return now + self._delay(now)

    def try_acquire(self) -> bool:
        """Count one event now if every window has room; False (nothing counted) if not."""
        with self._lock:
            now = self._monotonic()
            if self._delay(now) > 0:
                return False
            for times in self._times:
                times.append(now)
            return True

    def wait(self) -> float:
        """Block until one more fits every window, count it, and return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._monotonic()
                delay = self._delay(now)
                if delay <= 0:
                    for times in self._times:
                        times.append(now)
                    self.waited_s += waited
                    return waited
            self._sleep(delay)
            waited += delay

    def penalise(self, seconds: float = 1.0) -> None:
        """After a rate-limit answer: behave as if the short windows were full for ``seconds``."""
        with self._lock:
            now = self._monotonic()
            for (count, window), times in zip(self.limits, self._times):
                if window <= seconds * 2:
                    times.clear()
                    times.extend([now + seconds - window] * count)
