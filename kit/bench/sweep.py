"""Sweep throughput: one backtest, a 1-worker and a 2-worker sweep, and the replay floor, side by side in one run.

    python -m kit.bench.sweep              # 4 days × 250,000 ticks, 4 parameter sets, best of 3
    python -m kit.bench.sweep --quick      # 4 days × 40,000 ticks, once: seconds

Every figure is ticks replayed through the engine per second of wall-clock
time on this machine, now (the load average is printed with them: the
other processes on a shared machine take their share of the cores).

- *replay floor*: ``kit.bench.replay.measure`` over a trivial strategy
  (``Null``), callback mode, latency metrics off: the engine's own cost
  (target ≥ 1,000,000 ticks/s).
- *one backtest*: ``kit.backtest`` of ``SmaCross`` over one recorded day,
  the whole call (the replay, then the result's DataFrames and equity curve).
- *sweep, 1 worker*: ``kit.sweep(..., n_jobs=1)`` in this process;
  *2 workers*: joblib's loky processes and a Dask ``LocalCluster`` with
  two worker processes, each warmed by a small sweep before the clock
  starts (as a second sweep in a session finds them). Sweep figures are all the ticks replayed
  (parameter sets × days × ticks a day) over the sweep's wall time,
  reading partitions and computing metrics included.
- *peak RSS per worker*: each worker process's high-water mark
  (``VmHWM``, via psutil's process tree), after the sweep.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import psutil

from kit.bench.replay import measure, synthetic_ticks
from kit.feed.dispatch import CALLBACK
from kit.research.backtest import backtest, read_recording
from kit.research.examples import Null, SmaCross
from kit.research.sweep import sweep
from kit.research.sweep_backends import available_cores
from kit.research.synthetic import synthetic_days

GRID = {"fast": [3, 5], "slow": [20, 40]}


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set (VmHWM) in MB; its current RSS where the kernel does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss / 2**20


def _loky_workers() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True)
            if "popen_loky" in " ".join(_cmdline(p))]     # the workers, not loky's resource tracker


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _timed_sweep(root, repeats: int = 1, **options) -> tuple[float, int]:
    """The shortest wall time of ``repeats`` sweeps, and the ticks each replayed."""
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = sweep(SmaCross, GRID, root, progress=False, **options)
        walls.append(time.perf_counter() - started)
        errors = result.frame["error"][result.frame["error"] != ""]
        if len(errors):
            raise RuntimeError(f"the sweep failed: {errors.iloc[0]}")
    return min(walls), int(result.frame["ticks"].sum())


def run(days: int = 4, ticks_per_day: int = 250_000, floor_ticks: int = 1_000_000, repeats: int = 3) -> dict:
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="kit-bench-sweep-") as tmp:
        root = Path(tmp) / "ticks"
        recorded = synthetic_days(root, days=days, ticks_per_day=ticks_per_day, tokens=10, seed=1)

        floor = max(measure(synthetic_ticks(floor_ticks), CALLBACK, False, Null)["wall_ticks_per_s"]
                    for _ in range(repeats))
        rows["replay floor (Null, callback, metrics off)"] = {"ticks_per_s": floor}

        one_day = read_recording(root, days=recorded[0])
        walls = []
        for _ in range(repeats):
            started = time.perf_counter()
            backtest(SmaCross(5, 20), one_day, progress=False)
            walls.append(time.perf_counter() - started)
        rows["one backtest (SmaCross 5/20, one day)"] = {"ticks_per_s": len(one_day) / min(walls),
                                                         "wall_s": min(walls)}

        wall, ticks = _timed_sweep(root, repeats, n_jobs=1)
        rows["sweep, 1 worker (in this process)"] = {
            "ticks_per_s": ticks / wall, "wall_s": wall,
            "rss_mb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]}

        _timed_sweep(root, n_jobs=2, days=recorded[:1], chunk_size=1)   # starts the two loky workers
        wall, ticks = _timed_sweep(root, repeats, n_jobs=2)
        rows["sweep, 2 workers (joblib, loky)"] = {"ticks_per_s": ticks / wall, "wall_s": wall,
                                                   "rss_mb": [peak_rss_mb(pid) for pid in _loky_workers()]}

        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster, set_as_default=False) as client:
            _timed_sweep(root, client=client, days=recorded[:1], chunk_size=1)   # the workers import kit
            wall, ticks = _timed_sweep(root, repeats, client=client)
            pids = client.run(os.getpid)
            rows["sweep, 2 workers (Dask LocalCluster)"] = {"ticks_per_s": ticks / wall, "wall_s": wall,
                                                            "rss_mb": [peak_rss_mb(pid) for pid in pids.values()]}
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 days × 40,000 ticks, a 300,000-tick floor")
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--ticks", type=int, default=None, help="ticks per day (default 250,000; --quick 40,000)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per row, the best kept (default 3; --quick 1)")
    args = parser.parse_args(argv)
    ticks = args.ticks or (40_000 if args.quick else 250_000)
    floor_ticks = 300_000 if args.quick else 1_000_000
    sets = len(GRID["fast"]) * len(GRID["slow"])
    print(f"sweep benchmark: {args.days} days × {ticks:,} ticks (10 tokens), {sets} parameter sets of SmaCross; "
          f"{available_cores()} cores available, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"best of {repeats} per row", flush=True)
    rows = run(args.days, ticks, floor_ticks, repeats)
    print(f"{'':44} {'ticks/s':>11} {'wall s':>8}   peak RSS per worker")
    for name, row in rows.items():
        rss = ", ".join(f"{mb:,.0f} MB" for mb in row.get("rss_mb", []))
        wall = f"{row['wall_s']:8.2f}" if "wall_s" in row else " " * 8
        print(f"{name:44} {row['ticks_per_s']:>11,.0f} {wall}   {rss}")
    one = rows["sweep, 1 worker (in this process)"]["ticks_per_s"]
    two = rows["sweep, 2 workers (joblib, loky)"]["ticks_per_s"]
    dask = rows["sweep, 2 workers (Dask LocalCluster)"]["ticks_per_s"]
    floor = rows["replay floor (Null, callback, metrics off)"]["ticks_per_s"]
    print(f"scaling 1 → 2 workers: joblib {two / one:.2f}×, Dask {dask / one:.2f}× (target ≥ 1.7×)")
    print(f"replay floor: {floor:,.0f} ticks/s ({'meets' if floor >= 1_000_000 else 'below'} the 1,000,000 target)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
