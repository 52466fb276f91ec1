"""Parameter sweeps over recorded days: every parameter set through the live engine, in parallel.

    import kit
    result = kit.sweep(kit.examples.SmaCross, {"fast": [3, 5, 8], "slow": [20, 40]}, "data/ticks")
    result.frame                     # one row per parameter set: pnl, trades, hit rate, drawdown, sharpe, ...
    result.figure()                  # a heatmap of pnl over the two parameters
    kit.sweep(..., client=dask_client)          # the same tasks on a Dask cluster
    kit.sweep(..., per_day=True)                # one row per parameter set and day

Each parameter set is replayed, day by day, through a new paper
``LiveTrader`` (feed="replay", callback mode, latency metrics off): the
path of ``kit.backtest``, so the strategy swept is the object that trades
live. The work is split into tasks of one day × a chunk of parameter sets
(``kit.research.sweep_task``) and run by ``kit.research.sweep_backends``:
in this process (``n_jobs=1``), on local processes with joblib (the
default, one per available core), or on Dask (``client=``). Every
parameter set and day is an independent backtest that starts flat, so the
results are the same whichever way they run and however the tasks are cut.
"""
from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kit.research.sweep_backends import available_cores, execute
from kit.research.sweep_data import recording_days, recording_url
from kit.research.sweep_task import RunStats, SweepTask, run_task

__all__ = ["sweep", "SweepResult", "expand_grid", "combine", "METRICS", "TIMING_COLUMNS"]

METRICS = ["pnl", "gross", "charges", "realized", "trades", "round_trips", "hit_rate", "max_drawdown", "sharpe"]
TIMING_COLUMNS = ["ticks_per_s"]          # the columns that differ between two runs of the same sweep


def sweep(strategy, grid, data, *, days=None, tokens=None, exchange_type: int | None = None,
          n_jobs: int | None = None, client=None, per_day: bool = False, progress=True,
          chunk_size: int | None = None, **config) -> "SweepResult":
    """Backtest ``strategy`` with every parameter set of ``grid`` over the recorded ``days`` of ``data``.

    ``strategy``: a Strategy class, or any callable that takes the parameters
    as keyword arguments and returns a strategy. ``grid``: a dict of lists
    (their cartesian product, the last name varying fastest) or a list of
    dicts. ``data``: a recording directory or an fsspec URL. ``days`` /
    ``tokens`` / ``exchange_type``: which partitions (default: all).
    ``n_jobs``: local worker processes (default: the cores available; 1 runs
    in this process). ``client``: a ``dask.distributed.Client`` or a
    scheduler address; the tasks then run there. ``progress``: a bar, False,
    or a callable ``progress(done_tasks, total_tasks)``. ``chunk_size``:
    parameter sets per task (default: about four tasks per worker; the
    results do not depend on it). Other keyword
    arguments go to ``TraderConfig`` (e.g. ``risk=RiskLimits(...)``).

    Columns of ``result.frame`` (``day`` too with ``per_day=True``), after the parameters:

    - ``days``: days the row covers; ``pnl``: net P&L, what the account
      keeps: ``gross`` (realized + open positions marked at their last price,
      each day's positions marked at that day's end) less ``charges`` (the
      paper broker's, ``TraderConfig(charges=...)``); ``realized`` (gross);
      ``trades``: fills.
    - ``round_trips``: a round trip ends when an instrument's position goes
      flat or flips side; ``hit_rate``: round trips with a realized P&L > 0
      / round trips (NaN without any).
    - ``max_drawdown``: the worst fall of the net equity curve from its running
      peak (<= 0, rupees), the curve being the days' intraday equity laid
      end to end, starting at 0.
    - ``sharpe``: mean / standard deviation (ddof=1) of the equity's
      per-minute changes (the equity at the last tick of each minute with
      ticks, each day starting at 0), over all the row's days; not
      annualised (× sqrt(375 × 252) for a yearly figure on a full NSE
      session). NaN with fewer than two changes or no variation.
    - ``ticks``, ``ticks_per_s`` (replay speed), ``strategy_errors``;
      ``error``: why a day failed ("" when fine; the other days still count);
      ``partial``: the row misses days because the sweep was interrupted.

    A parameter set that raises is its rows' ``error``; the others run on. A
    worker process that dies (killed for memory, a crash in C code): on Dask
    only its task fails and the rest are rescheduled; joblib stops the sweep
    with it, keeping what finished and reporting the rest with the error.
    Charges (brokerage, taxes) are not modelled: P&L is before costs.
    """
    param_sets = expand_grid(grid)
    location = recording_url(data)
    all_days = recording_days(location, days)
    if not all_days:
        raise ValueError(f"no recorded day under {data}")
    sweep_id = uuid.uuid4().hex[:8]
    workers = _workers(n_jobs, client)
    size = chunk_size or max(1, math.ceil(len(param_sets) * len(all_days) / (4 * workers)))
    token_filter = None if tokens is None else tuple(str(t) for t in ([tokens] if isinstance(tokens, (str, int))
                                                                       else tokens))
    tasks = []
    for day in all_days:
        for start in range(0, len(param_sets), size):
            chunk = tuple((i, param_sets[i]) for i in range(start, min(start + size, len(param_sets))))
            tasks.append(SweepTask(len(tasks), sweep_id, location, day, chunk, strategy, token_filter,
                                   exchange_type, dict(config)))

    def failed(task, text):
        return [RunStats(i, task.day, error=text) for i, _ in task.params]

    outcomes, partial = execute(tasks, run_task, n_jobs=n_jobs, client=client, progress=progress,
                                on_failure=failed)
    runs = {(stats.param_index, stats.day): stats for index in sorted(outcomes) for stats in outcomes[index]}
    return SweepResult(param_sets, all_days, runs, per_day=per_day, partial=partial)


def expand_grid(grid) -> list[dict]:
    """A grid as a list of parameter dicts, in a fixed order."""
    if isinstance(grid, dict):
        names = list(grid)
        values = [list(v) if isinstance(v, (list, tuple, range, np.ndarray, pd.Index)) else [v]
                  for v in grid.values()]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    sets = [dict(p) for p in grid]
    if not sets:
        raise ValueError("the grid has no parameter set")
    return sets


def _workers(n_jobs, client) -> int:
    if client is None:
        return n_jobs or available_cores()
    if isinstance(client, str):
        return 4       # unknown without connecting; only the chunk size depends on it
    return max(1, sum(client.nthreads().values()))


def combine(runs: list[RunStats]) -> dict:
    """One row's figures from its days' runs (in day order): see ``sweep`` for their definitions."""
    good = [r for r in runs if not r.error or r.strategy_errors]
    offset = peak = drawdown = 0.0
    for r in good:     # the days' curves end to end: exact from each day's extremes and drawdown
        drawdown = min(drawdown, r.drawdown, offset + r.low - peak)
        peak = max(peak, offset + r.high)
        offset += r.pnl
    trips = sum(r.round_trips for r in good)
    changes = np.concatenate([r.minute_changes for r in good]) if good else np.zeros(0)
    spread = changes.std(ddof=1) if len(changes) > 1 else 0.0
    ticks = sum(r.ticks for r in good)
    elapsed = sum(r.elapsed_s for r in good)
    nan = float("nan")
    return {
        "days": len(good), "pnl": float(sum(r.pnl for r in good)) if good else nan,
        "gross": float(sum(r.gross for r in good)) if good else nan,
        "charges": float(sum(r.charges for r in good)) if good else nan,
        "realized": float(sum(r.realized for r in good)) if good else nan,
        "trades": sum(r.trades for r in good), "round_trips": trips,
        "hit_rate": sum(r.wins for r in good) / trips if trips else nan,
        "max_drawdown": float(drawdown) if good else nan,
        "sharpe": float(changes.mean() / spread) if spread > 0 else nan,
        "ticks": ticks, "ticks_per_s": ticks / elapsed if elapsed else nan,
        "strategy_errors": sum(r.strategy_errors for r in good),
        "error": "; ".join(f"{r.day}: {r.error}" if len(runs) > 1 else r.error for r in runs if r.error),
    }


@dataclass
class SweepResult:
    """A sweep's results: ``frame`` (a DataFrame), ``partial``, ``figure()``, ``best()``.

    ``runs`` holds each (parameter set, day)'s figures, so any subset of days
    can be summarised again (``summarise(days)``: what walk-forward does).
    """
    param_sets: list[dict]
    days: list[str]
    runs: dict = field(repr=False)
    per_day: bool = False
    partial: bool = False
    frame: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self):
        self.frame = self.by_day() if self.per_day else self.summarise(self.days)

    @property
    def param_names(self) -> list[str]:
        return list(dict.fromkeys(name for params in self.param_sets for name in params))

    def summarise(self, days) -> pd.DataFrame:
        """One row per parameter set over ``days`` (those that finished); ``partial`` when some did not."""
        rows = []
        for i, params in enumerate(self.param_sets):
            runs = [self.runs[(i, d)] for d in days if (i, d) in self.runs]
            if runs:
                rows.append({**params, **combine(runs), "partial": len(runs) < len(days)})
        return self._frame(rows, [])

    def by_day(self) -> pd.DataFrame:
        rows = [{**params, "day": day, **combine([self.runs[(i, day)]]), "partial": False}
                for i, params in enumerate(self.param_sets) for day in self.days if (i, day) in self.runs]
        return self._frame(rows, ["day"])

    def _frame(self, rows, extra) -> pd.DataFrame:
        columns = [*self.param_names, *extra, "days", *METRICS, "ticks", "ticks_per_s", "strategy_errors",
                   "error", "partial"]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.drop(columns="days") if extra else frame

    @property
    def errors(self) -> pd.DataFrame:
        """The rows with an error."""
        return self.frame[self.frame["error"] != ""]

    def best(self, metric: str = "pnl", maximize: bool = True) -> dict:
        """The parameters of the best row by ``metric`` (the first in grid order on a tie)."""
        frame = self.summarise(self.days)
        return best_params(frame, self.param_names, metric, maximize)

    def figure(self, metric: str = "pnl", **kwargs):
        """A plotly heatmap of ``metric`` over the two swept parameters; parallel coordinates otherwise."""
        from kit.research.sweep_charts import sweep_figure
        return sweep_figure(self.summarise(self.days), self.param_names, metric, **kwargs)

    def _repr_html_(self):
        note = "<p><b>partial</b>: the sweep was interrupted</p>" if self.partial else ""
        return note + self.frame._repr_html_()

    def __repr__(self):
        return ("SweepResult (partial)\n" if self.partial else "SweepResult\n") + repr(self.frame)


def best_params(frame: pd.DataFrame, names: list[str], metric: str, maximize: bool = True) -> dict:
    """The parameters of ``frame``'s best row by ``metric``, NaN never best, ties to the first row."""
    if metric not in frame:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    values = frame[metric].astype(float)
    values = values if maximize else -values
    if values.isna().all():
        raise ValueError(f"no parameter set has a {metric}")
    row = frame.loc[values.idxmax()]
    return {name: _plain(row[name]) for name in names}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
