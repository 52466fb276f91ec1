"""Small strategies used by the quickstart, the tests and the benchmarks."""
from __future__ import annotations

from collections import deque

from kit.core.strategy import Signal, Strategy


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


class Churn(Strategy):
    """Trades on every third tick, cycling through every kind of order: for crash and journal tests.

    MARKET buy, MARKET sell, a LIMIT buy ``near_limit`` rupees from the ltp
    (negative: it rests a tick below and fills soon; positive: marketable),
    and a LIMIT sell 20 % above the ltp (inside the kit's price collar), which rests.
    """

    def __init__(self, near_limit: float = -0.05, qty: int = 65):
        self.near_limit, self.qty = near_limit, qty
        self.n = 0

    def on_tick(self, tick):
        self.n += 1
        if self.n % 3:
            return None
        step = (self.n // 3) % 4
        if step == 0:
            return Signal.buy(tick, self.qty, reason="market buy")
        if step == 1:
            return Signal.sell(tick, self.qty, reason="market sell")
        if step == 2:
            return Signal.buy(tick, self.qty, limit=round(max(0.05, tick.ltp + self.near_limit), 2),
                              reason="near limit")
        return Signal.sell(tick, self.qty, limit=round(round(tick.ltp * 1.2 / 0.05) * 0.05, 2), reason="far limit")
