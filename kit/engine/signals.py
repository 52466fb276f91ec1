"""What a strategy's ``on_tick`` hands back, checked; and rejected signals in the log at a bounded rate."""
from __future__ import annotations

import logging
import time

from kit.core.strategy import Signal

log = logging.getLogger(__name__)


def signals_of(returned, strategy, tick, failed):
    """``returned`` as Signals: one, any iterable of them; anything else is ``failed(strategy, tick, exc, "output")``.

    Valid signals beside an invalid one are kept. A generator runs the
    strategy's own code, so this runs under the strategy lock.
    """
    if isinstance(returned, Signal):
        return (returned,)
    if isinstance(returned, (list, tuple)):
        batch = returned
    elif isinstance(returned, (str, bytes, dict)) or not hasattr(returned, "__iter__"):
        hint = f", e.g. kit.Signal.{returned.lower()}(tick, qty=...)" if returned in ("BUY", "SELL") else ""
        failed(strategy, tick, TypeError(
            f"on_tick returned {type(returned).__name__} {returned!r:.60}; return a kit.Signal, None, "
            f"or a list of Signals{hint}"), "output")
        return ()
    else:
        try:
            batch = list(returned)
        except Exception as exc:          # a generator's own code raised
            failed(strategy, tick, exc, "on_tick")
            return ()
    good = [s for s in batch if isinstance(s, Signal)]
    if len(good) != len(batch):
        bad = next(s for s in batch if not isinstance(s, Signal))
        failed(strategy, tick, TypeError(
            f"on_tick returned {type(bad).__name__} {bad!r:.60} among its signals; each must be a kit.Signal "
            "(the others were kept)"), "output")
    return good


class RejectionLog:
    """Rejected signals in the log at a bounded rate: a few lines a second, then a count of the rest.

    A strategy that signals on every tick while halted would otherwise write
    a WARNING per tick (tens of MB a minute).
    """
    LINES_PER_SECOND = 5

    def __init__(self):
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0
        self._last = ""

    def log(self, reason: str, signal) -> None:
        now = time.monotonic()
        if now - self._window >= 1.0:
            if self._suppressed:
                log.warning("%d more signals rejected in the last %.0f s (the last: %s)", self._suppressed,
                            now - self._window, self._last)
            self._window, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.LINES_PER_SECOND:
            self._logged += 1
            log.warning("signal rejected: %s (%s)", reason, signal)
        else:
            self._suppressed += 1
            self._last = reason
