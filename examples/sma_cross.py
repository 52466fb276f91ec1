"""A strategy file for the headless runner:

    python -m kit run examples/sma_cross.py --feed sim --mode queue --duration 30
"""
import kit


class SmaCross(kit.Strategy):
    """Fast/slow moving-average crossover per token, one lot (65 NIFTY units) per signal."""

    def __init__(self, fast: int = 5, slow: int = 20, qty: int = 65):
        self.fast, self.slow, self.qty = fast, slow, qty
        self.prices: dict[str, list[float]] = {}
        self.side: dict[str, str] = {}

    def on_tick(self, tick):
        prices = self.prices.setdefault(tick.token, [])
        prices.append(tick.ltp)
        del prices[:-self.slow]
        if len(prices) < self.slow:
            return None
        fast = sum(prices[-self.fast:]) / self.fast
        slow = sum(prices) / self.slow
        side = "BUY" if fast > slow else "SELL"
        previous, self.side[tick.token] = self.side.get(tick.token), side
        if previous is None or previous == side:
            return None
        return kit.Signal.buy(tick, self.qty) if side == "BUY" else kit.Signal.sell(tick, self.qty)
