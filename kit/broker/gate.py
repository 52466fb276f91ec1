"""The trading gate: the one switch that decides whether an order may go to the exchange now.

Stopping the trader, disarming live trading, the kill switch, a journal that
cannot write and a failed reconciliation each close the gate under their own
name; it is open only when every one of them has reopened it. The live
broker's sender passes through it immediately before every place or modify
request, holding its lock for the request's duration, so once ``close()``
returns no such request is in flight and none will start.

    gate = TradingGate()
    gate.close("stopped", "the trader was stopped")
    gate.refusal()                     # 'the trader was stopped'
    with gate.passage() as refusal:
        if refusal is None:
            ...send the request...     # close() waits for this block to finish
    gate.open("stopped")

Cancels never pass through it. Neither do the kill switch's flattening
orders: they are computed from the broker's own positions, read fresh, and
only ever shrink them, so nothing may hold them back.
"""
from __future__ import annotations

import contextlib
import threading


class TradingGate:
    """Named reasons the gate is closed; open when there are none. Thread-safe."""

    def __init__(self):
        self._lock = threading.RLock()
        self._closed: dict[str, str] = {}
        self._listeners: tuple = ()

    def close(self, name: str, reason: str) -> None:
        """Close under ``name``; returns once no request is passing through."""
        with self._lock:
            self._closed[name] = reason
            listeners = self._listeners
        for listener in listeners:
            listener(name, reason)

    def open(self, name: str) -> None:
        with self._lock:
            self._closed.pop(name, None)

    def is_closed(self, name: str) -> bool:
        return name in self._closed

    def refusal(self, ignore: frozenset = frozenset()) -> str | None:
        """None if an order may go now, else why not (the first closer's reason not in ``ignore``)."""
        if not self._closed:                # open: the usual answer, without copying the closers
            return None
        for name, reason in list(self._closed.items()):
            if name not in ignore:
                return reason
        return None

    @contextlib.contextmanager
    def passage(self):
        """Hold the gate for one request: yields None (go) or the refusal; ``close()`` waits for it."""
        with self._lock:
            yield self.refusal()

    def add_close_listener(self, listener) -> None:
        """``listener(name, reason)`` after every ``close()``, on the closing thread."""
        with self._lock:
            self._listeners = self._listeners + (listener,)

    @property
    def reasons(self) -> dict[str, str]:
        return dict(self._closed)
