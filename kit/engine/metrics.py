"""Latency per stage, per dispatch mode, in nanoseconds.

The engine stamps four moments of every tick with ``time.perf_counter_ns``:

    receive (socket thread) -> dispatch (handler entry) -> strategy done -> order acknowledged

and ``record`` stores the differences in fixed-size rings (one per mode), so
memory is bounded and the hot path allocates nothing. ``summary()`` turns the
rings into a DataFrame of percentiles.

Stages:
    dispatch  receive -> handler entry: the queue wait in queue/poll mode,
              the call overhead in callback mode
    strategy  handler entry -> strategy returned
    order     strategy returned -> order acknowledged (ticks with a signal only)
    total     receive -> done (order acknowledged, or strategy returned)
"""
from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from kit.feed.dispatch import MODES

STAGES = ("dispatch", "strategy", "order", "total")


class _Ring:
    """Per-mode storage: parallel int64 rings plus counters."""
    __slots__ = ("dispatch", "strategy", "total", "order", "n", "n_orders", "first_ns", "last_ns", "spent_ns",
                 "entered_ns")

    def __init__(self, window: int):
        zeros = bytes(8 * window)
        self.dispatch = array("q", zeros)
        self.strategy = array("q", zeros)
        self.total = array("q", zeros)
        self.order = array("q", zeros)
        self.n = 0
        self.n_orders = 0
        self.first_ns = 0
        self.last_ns = 0
        self.spent_ns = 0       # time in this mode before its current stretch: from its entry to the next switch
        self.entered_ns = 0     # when the current stretch began (the first tick after a switch to this mode)


# Decimals the summary is rounded to, per unit: a tenth of a microsecond.
_DECIMALS = {"ns": 0, "us": 1, "ms": 4}


class LatencyMetrics:
    """Bounded per-mode latency rings. ``window`` ticks are kept per mode."""

    def __init__(self, window: int = 100_000):
        self.window = window
        self._rings = {mode: _Ring(window) for mode in MODES}
        self._via: str | None = None        # the mode of the last recorded tick

    def record(self, via: str, recv_ns: int, dispatch_ns: int, strategy_ns: int, ack_ns: int = 0) -> None:
        if via is not self._via:
            self._switch(via, dispatch_ns)
        ring = self._rings[via]
        i = ring.n % self.window
        ring.dispatch[i] = dispatch_ns - recv_ns
        ring.strategy[i] = strategy_ns - dispatch_ns
        if ack_ns:
            ring.order[ring.n_orders % self.window] = ack_ns - strategy_ns
            ring.n_orders += 1
            ring.total[i] = ack_ns - recv_ns
        else:
            ring.total[i] = strategy_ns - recv_ns
        if ring.n == 0:
            ring.first_ns = dispatch_ns
        ring.last_ns = dispatch_ns
        ring.n = ring.n + 1

    def _switch(self, via: str, now_ns: int) -> None:
        """A tick in another mode than the last: the last mode's stretch ends now, this one's begins."""
        previous = self._rings.get(self._via)
        if previous is not None:
            previous.spent_ns += now_ns - previous.entered_ns
        self._rings[via].entered_ns = now_ns
        self._via = via

    def _rate(self, via: str, ring: _Ring) -> float:
        """Ticks per second of the time spent in ``via``: its finished stretches, each up to the switch
        away, and the current one up to its last tick (whose ticks are one interval fewer)."""
        current = via == self._via
        spent = ring.spent_ns + (ring.last_ns - ring.entered_ns if current else 0)
        intervals = ring.n - (1 if current else 0)
        return intervals / (spent / 1e9) if spent > 0 and intervals > 0 else float("nan")

    def reset(self) -> None:
        self._rings = {mode: _Ring(self.window) for mode in MODES}
        self._via = None

    def count(self, via: str | None = None) -> int:
        if via is None:
            return sum(r.n for r in self._rings.values())
        return self._rings[via].n

    def samples(self, via: str, stage: str, last: int | None = None) -> np.ndarray:
        """The most recent samples of one stage for one mode, oldest first, in ns."""
        ring = self._rings[via]
        n = ring.n_orders if stage == "order" else ring.n
        data = np.frombuffer(getattr(ring, stage), dtype=np.int64)
        kept = min(n, self.window)
        if n > self.window:  # unroll the ring
            start = n % self.window
            out = np.concatenate([data[start:], data[:start]])
        else:
            out = data[:kept].copy()
        return out[-last:] if last else out

    def summary(self, unit: str = "us") -> pd.DataFrame:
        """p50/p90/p99/max per stage per mode (modes that saw no tick are left out).

        ``unit``: "ns", "us" or "ms". ``ticks`` counts every tick the mode
        delivered; ``ticks_per_s`` is that count over the time spent in that mode
        (from each switch to it until the next switch away, or its last tick): a
        rate of *delivery*, bounded by what the feed sent. Rounded for reading:
        latencies to a tenth of a microsecond, rates to one decimal.
        """
        scale = {"ns": 1, "us": 1e3, "ms": 1e6}[unit]
        rows = []
        for via, ring in self._rings.items():
            if ring.n == 0:
                continue
            rate = self._rate(via, ring)
            for stage in STAGES:
                s = self.samples(via, stage)
                if s.size == 0:
                    continue
                p50, p90, p99 = np.percentile(s, (50, 90, 99))
                rows.append({"mode": via, "stage": stage, "ticks": ring.n, "samples": int(s.size),
                             "ticks_per_s": rate, f"p50_{unit}": p50 / scale, f"p90_{unit}": p90 / scale,
                             f"p99_{unit}": p99 / scale, f"max_{unit}": s.max() / scale})
        cols = ["mode", "stage", "ticks", "samples", "ticks_per_s",
                f"p50_{unit}", f"p90_{unit}", f"p99_{unit}", f"max_{unit}"]
        frame = pd.DataFrame(rows, columns=cols).set_index(["mode", "stage"])
        return frame.round({"ticks_per_s": 1, **{c: _DECIMALS[unit] for c in cols[5:]}})
