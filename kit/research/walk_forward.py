"""Walk-forward analysis: choose parameters on past days, judge them on the days that follow.

    wf = kit.walk_forward(kit.examples.SmaCross, {"fast": [3, 5], "slow": [20, 40]}, "data/ticks",
                          train=3, test=1, metric="pnl")
    wf.frame          # one row per window: its days, the chosen parameters, in- and out-of-sample figures
    wf.figure()       # in-sample vs out-of-sample metric per window, and the out-of-sample P&L laid end to end

Windows roll forward by ``test`` days: window k trains on days
[k·test, k·test + train) and tests on the ``test`` days after them. Every
(parameter set, day) is backtested once, by one ``kit.sweep(..., per_day=True)``
(locally or on Dask, as that sweep), and each window's in-sample and
out-of-sample figures are the days' runs combined exactly as ``kit.sweep``
combines them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from kit.research.sweep import METRICS, SweepResult, best_params, sweep

__all__ = ["walk_forward", "WalkForwardResult", "windows"]


def windows(days: list[str], train: int, test: int) -> list[tuple[list[str], list[str]]]:
    """(training days, test days) of each window, rolling forward by ``test`` days."""
    if train < 1 or test < 1:
        raise ValueError("train and test are numbers of days, >= 1")
    out = []
    start = 0
    while start + train + test <= len(days):
        out.append((days[start:start + train], days[start + train:start + train + test]))
        start += test
    if not out:
        raise ValueError(f"{len(days)} recorded days cannot make one window of {train} training + {test} test days")
    return out


def walk_forward(strategy, grid, data, *, train: int, test: int = 1, metric: str = "pnl", maximize: bool = True,
                 days=None, **sweep_options) -> "WalkForwardResult":
    """For each window, the best parameters by ``metric`` on its training days and their result on its test days.

    ``train`` / ``test``: days per window. ``metric``: a column of
    ``kit.sweep``'s result (``pnl``, ``sharpe``, ``hit_rate``, ``max_drawdown``,
    ...), maximised unless ``maximize=False``; a tie goes to the first
    parameter set in grid order. Other keyword arguments go to ``kit.sweep``
    (``tokens``, ``n_jobs``, ``client``, ``progress``, TraderConfig fields).
    An interrupted sweep gives the windows whose days all finished, and ``partial=True``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    swept = sweep(strategy, grid, data, days=days, per_day=True, **sweep_options)
    rows = []
    for number, (train_days, test_days) in enumerate(windows(swept.days, train, test)):
        inside = swept.summarise(train_days)
        outside = swept.summarise(test_days)
        if swept.partial and (inside["partial"].any() or outside["partial"].any() or inside.empty):
            continue     # a window judged on missing days would mislead
        chosen = best_params(inside, swept.param_names, metric, maximize)
        mask = _rows_of(inside, chosen)
        result = _rows_of(outside, chosen)
        rows.append({"window": number, "train_days": tuple(train_days), "test_days": tuple(test_days), **chosen,
                     f"in_sample_{metric}": inside.loc[mask, metric].iloc[0],
                     f"out_of_sample_{metric}": outside.loc[result, metric].iloc[0],
                     "out_of_sample_pnl": outside.loc[result, "pnl"].iloc[0],
                     "out_of_sample_trades": outside.loc[result, "trades"].iloc[0],
                     "error": "; ".join(e for e in (*inside.loc[mask, "error"], *outside.loc[result, "error"]) if e)})
    return WalkForwardResult(pd.DataFrame(rows), swept, metric, partial=swept.partial)


def _rows_of(frame: pd.DataFrame, params: dict) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for name, value in params.items():
        mask &= frame[name] == value
    return mask


@dataclass
class WalkForwardResult:
    """``frame``: one row per window; ``sweep``: the per-day sweep it was chosen from."""
    frame: pd.DataFrame
    sweep: SweepResult = field(repr=False)
    metric: str = "pnl"
    partial: bool = False

    def figure(self, **kwargs):
        """In-sample vs out-of-sample metric per window, and the cumulative out-of-sample P&L."""
        from kit.research.sweep_charts import walk_forward_figure
        return walk_forward_figure(self.frame, self.metric, self.sweep.param_names, **kwargs)

    def _repr_html_(self):
        return self.frame._repr_html_()

    def __repr__(self):
        return "WalkForwardResult\n" + repr(self.frame)
