"""Replay throughput: ticks per second through the real engine, per dispatch mode, with and without latency metrics.

    python -m kit.bench.replay                   # 2,000,000 ticks, 3 repeats, best reported
    python -m kit.bench.replay --ticks 500000 --repeats 1
    make bench-replay

Each run is a ``LiveTrader(TraderConfig(feed="replay", ...)).run()`` over a
synthetic LTP recording held as an Arrow table: ticks are built, stamped at
emission, dispatched and handled by ``LiveTrader._on_tick`` (paper broker,
strategy, counters, metrics when on), exactly as in a backtest. Two figures
per row: *wall* is ticks / elapsed wall-clock time (what you get on this
machine now); *cpu* is ticks / CPU-seconds the process spent, which is what
the code costs when the machine is not shared. The strategies: ``Null``
(returns None: the engine's own cost) and ``SmaCross`` (the quickstart's
5/20 crossover, which trades).

Poll mode is the seed's baseline and is slow by design: its consumer sleeps
50 ms whenever the queue is empty, so a replay through it is bounded by
``queue_size`` ticks per 50 ms. It runs on fewer ticks.
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import pyarrow as pa

from kit.feed.dispatch import CALLBACK, POLL, QUEUE
from kit.engine.config import DispatchConfig, MetricsConfig, ReplayConfig, TraderConfig
from kit.engine.trader import LiveTrader
from kit.research.examples import Null, SmaCross
from kit.store.recording import normalize_ticks


def synthetic_ticks(n: int, tokens: int = 10, seed: int = 1) -> pa.Table:
    """``n`` LTP ticks over ``tokens`` NIFTY option tokens: random walks on a ₹0.05 grid, one second apart per token."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, tokens, n)
    names = np.array([str(43650 + i) for i in range(tokens)], dtype=object)
    steps = rng.integers(-2, 3, n) * 0.05
    ltp = np.empty(n)
    for t in range(tokens):       # one walk per token
        mask = which == t
        ltp[mask] = np.round(100 + np.cumsum(steps[mask]), 2).clip(0.05)
    seq = np.zeros(n, dtype=np.int64)
    for t in range(tokens):
        mask = which == t
        seq[mask] = np.arange(1, mask.sum() + 1)
    start_ms = 1_767_240_900_000       # 2026-01-01 09:45 IST
    return normalize_ticks(pa.table({
        "token": names[which], "exchange_type": np.full(n, 2, dtype=np.int16),
        "mode": np.full(n, 1, dtype=np.int8), "seq": seq,
        "exchange_ts": start_ms + np.arange(n, dtype=np.int64) * 1000 // tokens,
        "ltp": ltp}))


def measure(table: pa.Table, mode: str, latency_metrics: bool, strategy_cls, queue_size: int = 1000,
            dashboard: bool = False) -> dict:
    trader = LiveTrader(TraderConfig(feed="replay", replay=ReplayConfig(table, progress=False), mode=mode,
                                     metrics=MetricsConfig(latency=latency_metrics),
                                     dispatch=DispatchConfig(queue_size=queue_size), name="research-bench"))
    trader.strategy = strategy_cls()
    board = None
    if dashboard:     # the notebook cockpit streaming beside the replay (no browser: no comm messages sent)
        from kit.ui.dashboard import dashboard as open_dashboard
        board = open_dashboard(trader)
    gc.collect()
    cpu0 = time.process_time()
    trader.run()
    cpu = time.process_time() - cpu0
    elapsed = trader.feed.elapsed_s
    n = trader.ticks_processed
    if board is not None:
        board.close()
    trader.close()
    if n != table.num_rows:
        raise RuntimeError(f"replayed {n} of {table.num_rows} ticks")
    return {"mode": mode, "metrics": "on" if latency_metrics else "off", "dashboard": dashboard,
            "strategy": strategy_cls.__name__,
            "ticks": n, "signals": len(trader.signals), "wall_ticks_per_s": n / elapsed, "cpu_ticks_per_s": n / cpu}


def run(ticks: int = 2_000_000, repeats: int = 3, poll_ticks: int = 100_000) -> list[dict]:
    table = synthetic_ticks(ticks)
    poll_table = table.slice(0, min(poll_ticks, ticks))
    cases = [(CALLBACK, False, Null, False), (CALLBACK, True, Null, False), (QUEUE, False, Null, False),
             (QUEUE, True, Null, False), (POLL, False, Null, False), (POLL, True, Null, False),
             (CALLBACK, False, SmaCross, False), (CALLBACK, True, SmaCross, False),
             # what the dashboard's tick listener (and the ticks it keeps) cost the tick thread
             (CALLBACK, True, Null, True), (QUEUE, True, Null, True)]
    rows = []
    for mode, metrics, strategy, dashboard in cases:
        source = poll_table if mode == POLL else table
        best = None
        for _ in range(repeats):
            r = measure(source, mode, metrics, strategy, dashboard=dashboard)
            if best is None or r["wall_ticks_per_s"] > best["wall_ticks_per_s"]:
                best = {**r, "cpu_ticks_per_s": max(r["cpu_ticks_per_s"], best["cpu_ticks_per_s"]) if best else r["cpu_ticks_per_s"]}
            elif r["cpu_ticks_per_s"] > best["cpu_ticks_per_s"]:
                best["cpu_ticks_per_s"] = r["cpu_ticks_per_s"]
        rows.append(best)
        print(f"{best['mode']:>8}  metrics {best['metrics']:>3}  {best['strategy']:>8}"
              f"{'  dashboard' if dashboard else '           '}  {best['ticks']:>9,} ticks  "
              f"wall {best['wall_ticks_per_s']:>11,.0f}/s  cpu {best['cpu_ticks_per_s']:>11,.0f}/s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll-ticks", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"replay throughput, best of {args.repeats} (queue_size 1000, LTP ticks, 10 tokens)")
    run(args.ticks, args.repeats, args.poll_ticks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
