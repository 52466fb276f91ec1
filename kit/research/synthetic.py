"""Synthetic recorded days, in the recorder's layout: material for sweeps, tests and benchmarks, offline.

    days = synthetic_days("data/synthetic", days=5, ticks_per_day=20_000, tokens=3)
    kit.sweep(kit.examples.SmaCross, {"fast": [3, 5], "slow": [20, 40]}, "data/synthetic")

Each instrument's price is a random walk on a ₹0.05 grid from ₹100 each
morning at 09:15 IST, its ticks interleaved with the others' at a fixed
pace; the seed makes the days reproducible. The files are what
``TickRecorder`` writes (``ROOT/day=/exchange_type=/token=/*.parquet``, the
recorder's columns), so ``read_recording``, ``kit.backtest`` and
``kit.sweep`` read them as a recording of the simulator.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from kit.core.tick import LTP
from kit.store.recording import PARTITIONING, RECORD_SCHEMA

__all__ = ["synthetic_days"]

OPEN_IST = "09:15"


def synthetic_days(path, *, days: int = 3, ticks_per_day: int = 5_000, tokens: int = 3, seed: int = 0,
                   start: str = "2026-01-05", interval_ms: int = 250) -> list[str]:
    """Write ``days`` weekdays of LTP ticks under ``path``; return the days written (ISO strings)."""
    rng = np.random.default_rng(seed)
    names = np.array([str(43650 + i) for i in range(tokens)], dtype=object)
    written = []
    for number, day in enumerate(pd.bdate_range(start, periods=days)):
        n = ticks_per_day
        which = rng.integers(0, tokens, n)
        ltp = np.empty(n)
        seq = np.empty(n, dtype=np.int64)
        for t in range(tokens):
            mine = which == t
            ltp[mine] = np.round(100 + np.cumsum(rng.integers(-2, 3, mine.sum()) * 0.05), 2).clip(0.05)
            seq[mine] = np.arange(1, mine.sum() + 1)
        opening = pd.Timestamp(f"{day.date()} {OPEN_IST}", tz="Asia/Kolkata").value // 1_000_000
        exchange_ts = opening + np.arange(n, dtype=np.int64) * interval_ms
        columns = {
            "token": pa.array(names[which], pa.string()),
            "exchange_type": pa.array(np.full(n, 2, dtype=np.int16)),
            "day": pa.array(np.full(n, str(day.date()), dtype=object), pa.string()),
            "session_id": pa.array(np.full(n, number + 1, dtype=np.int64)),
            "rec_seq": pa.array(np.arange(n, dtype=np.int64)),
            "mode": pa.array(np.full(n, LTP, dtype=np.int8)),
            "seq": pa.array(seq),
            "exchange_ts": pa.array(exchange_ts),
            "ltp": pa.array(ltp),
            "recv_ns": pa.array(exchange_ts * 1_000_000),
            "recv_epoch_ns": pa.array(exchange_ts * 1_000_000),
        }
        for name in RECORD_SCHEMA.names:
            if name not in columns:
                columns[name] = pa.nulls(n, RECORD_SCHEMA.field(name).type)
        ds.write_dataset(pa.table(columns, schema=RECORD_SCHEMA), str(path), format="parquet",
                         partitioning=ds.partitioning(PARTITIONING, flavor="hive"),
                         existing_data_behavior="delete_matching", basename_template=f"{number + 1}-{{i}}.parquet")
        written.append(str(day.date()))
    return written
