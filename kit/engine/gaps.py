"""Gaps in the feed: every one found, and those the strategy has yet to hear of (``strategy.on_gap``).

The feed finds a gap on the socket thread, just before it dispatches the
first tick after the hole; the tick path hands it to the strategy before
that tick. ``pending`` is the dict the tick path tests for truth once per
tick, so it is never rebound.
"""
from __future__ import annotations

import threading
from collections import deque

from kit.feed.live import Gap, SmartFeed


class GapBook:
    def __init__(self):
        self.history: deque[Gap] = deque(maxlen=SmartFeed.GAP_HISTORY)
        self.pending: dict = {}       # (exchange_type, token) -> [Gap, ...] not yet told
        self._lock = threading.Lock()

    def found(self, gap: Gap) -> None:
        """The feed found ``gap`` (socket thread)."""
        self.history.append(gap)
        with self._lock:
            self.pending.setdefault((gap.exchange_type, gap.token), []).append(gap)

    def clear_pending(self) -> None:
        """A new feed: holes in the last one were told or are moot."""
        with self._lock:
            self.pending.clear()

    def due(self, tick) -> list[Gap]:
        """Take the gaps of ``tick``'s instrument that end at or before it.

        A gap is due at the first tick of its instrument received after it was
        found; ticks received before the drop, still queued, pass without it.
        If that very tick was dropped by a full queue, the next one takes it.
        """
        with self._lock:
            key = (tick.exchange_type, tick.token)
            waiting = self.pending.get(key)
            if not waiting:
                return []
            due = [gap for gap in waiting if gap.recv_ns <= tick.recv_ns]
            if due:
                kept = [gap for gap in waiting if gap.recv_ns > tick.recv_ns]
                if kept:
                    self.pending[key] = kept
                else:
                    del self.pending[key]
            return due
