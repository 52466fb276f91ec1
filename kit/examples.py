"""Small strategies used by the quickstart, the tests and the benchmarks."""
from __future__ import annotations

from collections import deque

from .strategy import Signal, Strategy


class SmaCross(Strategy):
    """Buy when the fast SMA crosses above the slow one, sell when it crosses below.

    Keeps running sums, so each tick costs O(1) whatever the window.
    """

    def __init__(self, fast: int = 5, slow: int = 20, qty: int = 65):
        if not 0 < fast < slow:
            raise ValueError("need 0 < fast < slow")
        self.fast, self.slow, self.qty = fast, slow, qty
        self._state: dict = {}

    def on_start(self) -> None:
        self._state.clear()

    def on_tick(self, tick):
        st = self._state.get(tick.token)
        if st is None:
            st = self._state[tick.token] = [deque(), 0.0, 0.0, None]  # window, fast sum, slow sum, last side
        window = st[0]
        window.append(tick.ltp)
        st[2] += tick.ltp
        st[1] += tick.ltp
        if len(window) > self.fast:
            st[1] -= window[-self.fast - 1]
        if len(window) > self.slow:
            st[2] -= window.popleft()
        if len(window) < self.slow:
            return None
        above = st[1] / self.fast > st[2] / self.slow
        side = "BUY" if above else "SELL"
        if st[3] is None:
            st[3] = side
            return None
        if side != st[3]:
            st[3] = side
            return Signal.buy(tick, self.qty, reason="sma up") if above else Signal.sell(tick, self.qty, reason="sma down")
        return None


class Null(Strategy):
    """Does nothing: measures the engine's own cost."""

    def on_tick(self, tick):
        return None
