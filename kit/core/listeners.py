"""Listener lists that a hot path can call without a lock: replaced on change, never mutated.

    ticks = Listeners()
    ticks.add(fn); ticks.remove(fn)
    for fn in ticks.current:       # a tuple: safe to iterate while another thread adds or removes
        fn(tick)
"""
from __future__ import annotations

import threading
from typing import Callable


class Listeners:
    """Copy-on-write listeners: ``add``/``remove`` swap in a new tuple under a lock."""
    __slots__ = ("current", "_lock")

    def __init__(self):
        self.current: tuple[Callable, ...] = ()
        self._lock = threading.Lock()

    def add(self, fn: Callable) -> None:
        with self._lock:
            self.current = self.current + (fn,)

    def remove(self, fn: Callable) -> None:
        """Stop calling ``fn`` (compared with ==, so a bound method fetched again still matches); a no-op if absent."""
        with self._lock:
            self.current = tuple(f for f in self.current if f != fn)

    def __len__(self) -> int:
        return len(self.current)
