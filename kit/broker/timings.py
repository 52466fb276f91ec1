"""Where a live order's time goes: a stamp at each stage, and the percentiles over a session's orders.

``submit`` and ``queued`` are stamped on the tick thread, ``dequeued`` to
``acked`` on the sender thread, ``first_update`` and ``filled`` where the
order updates are applied. ``latency_table`` is what
``SmartApiBroker.latency_summary`` returns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pandas

# Each stage of latency_table: (from stamp, to stamp).
STAGES = {
    "submit_call": ("submit", "queued"),             # inside submit(), on the tick thread
    "queue": ("queued", "dequeued"),                 # submit() returned -> the sender thread picked it up
    "journal": ("dequeued", "journaled"),            # the intent's durable commit (fsync)
    "rest": ("sent", "acked"),                       # placeOrderFullResponse's round trip
    "submit_to_ack": ("submit", "acked"),            # submit() -> the exchange's order id
    "submit_to_update": ("submit", "first_update"),  # submit() -> the first order-update frame for it
    "submit_to_fill": ("submit", "filled"),          # submit() -> the update that completed it
}


class Timing:
    """perf_counter_ns stamps of one order's way through the broker (0: not reached)."""
    __slots__ = ("submit", "queued", "dequeued", "journaled", "sent", "acked", "first_update", "filled")

    def __init__(self, submit: int):
        self.submit = submit
        self.queued = self.dequeued = self.journaled = self.sent = 0
        self.acked = self.first_update = self.filled = 0


def latency_table(timings: Iterable[Timing], unit: str = "us") -> "pandas.DataFrame":
    """p50 / p90 / p99 / max per stage (``STAGES``) over the orders that reached both of its stamps."""
    import numpy as np
    import pandas as pd
    scale = {"ns": 1, "us": 1e3, "ms": 1e6}[unit]
    timings = list(timings)
    rows = []
    for stage, (a, b) in STAGES.items():
        values = np.array([getattr(t, b) - getattr(t, a) for t in timings if getattr(t, a) and getattr(t, b)],
                          dtype=np.int64)
        if values.size:
            p50, p90, p99 = np.percentile(values, (50, 90, 99))
            rows.append({"stage": stage, "orders": int(values.size), f"p50_{unit}": p50 / scale,
                         f"p90_{unit}": p90 / scale, f"p99_{unit}": p99 / scale,
                         f"max_{unit}": values.max() / scale})
    return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()
