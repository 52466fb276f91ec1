"""One sweep task, on a worker: one day of a recording × a chunk of parameter sets.

The task carries the recording's location and the partition filter, never
ticks: the worker reads its day once, then replays it through a new
``LiveTrader`` per parameter set, the engine path of ``kit.backtest``
(feed="replay", callback mode, latency metrics off). Each run gets its own
trader name, so no run closes another, and nothing is shared between runs
but the read-only table.

What a run returns is a ``RunStats``: final figures plus the few numbers
needed to combine days exactly later (``kit.research.sweep.combine``): the
day's equity extremes and drawdown, and its per-minute equity changes.
A run that fails is a ``RunStats`` with ``error`` set; the others go on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kit.feed.dispatch import CALLBACK
from kit.research.backtest import equity_curve, replay, tick_times
from kit.research.sweep_data import read_day
from kit.store.recording import table_to_frame

__all__ = ["SweepTask", "RunStats", "run_task"]


@dataclass(frozen=True)
class SweepTask:
    """What a worker needs: where the day is, which parameter sets to run over it, and how."""
    index: int
    sweep_id: str
    data: str
    day: str
    params: tuple          # ((parameter-set index, {name: value}), ...)
    strategy: object       # a Strategy class or a factory called with the parameters
    tokens: tuple | None = None
    exchange_type: int | None = None
    config: dict = field(default_factory=dict)


@dataclass
class RunStats:
    """One parameter set over one day."""
    param_index: int
    day: str
    pnl: float = 0.0                # net: gross less charges
    gross: float = 0.0
    charges: float = 0.0
    realized: float = 0.0
    trades: int = 0                 # fills
    round_trips: int = 0
    wins: int = 0
    drawdown: float = 0.0           # worst (equity - running peak) of the day, equity starting at 0; <= 0
    low: float = 0.0                # min(0, lowest equity of the day)
    high: float = 0.0               # max(0, highest equity of the day)
    minute_changes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ticks: int = 0
    elapsed_s: float = 0.0
    strategy_errors: int = 0
    error: str = ""


def run_task(task: SweepTask) -> list[RunStats]:
    """Every parameter set of ``task`` over its day; never raises (a failure is the rows' ``error``)."""
    try:
        table = read_day(task.data, task.day, tokens=task.tokens, exchange_type=task.exchange_type)
        ticks = table_to_frame(table.select([c for c in ("token", "exchange_type", "ltp", "exchange_ts",
                                                           "recv_epoch_ns") if c in table.column_names]))
        ticks["time"] = tick_times(ticks)
        minute_last = _last_row_of_each_minute(ticks["time"])
    except Exception as exc:
        text = f"reading {task.day}: {type(exc).__name__}: {exc}"
        return [RunStats(i, task.day, error=text) for i, _ in task.params]
    out = []
    for n, (index, params) in enumerate(task.params):
        try:
            out.append(_run(task, f"sweep-{task.sweep_id}-{task.index}-{n}", index, params, table, ticks, minute_last))
        except Exception as exc:
            out.append(RunStats(index, task.day, error=f"{type(exc).__name__}: {exc}"))
    return out


def _run(task, name, index, params, table, ticks, minute_last) -> RunStats:
    strategy = task.strategy(**params)
    config = {"mode": CALLBACK, **task.config}
    started = time.perf_counter()
    trader, run = replay(strategy, table, name=name, **config)      # as kit.backtest runs it
    elapsed = trader.feed.elapsed_s or (time.perf_counter() - started)
    pnl = trader.broker.pnl()
    total = equity_curve(ticks, run.fill_states)["net"].to_numpy()        # what the account keeps
    peak = np.maximum.accumulate(np.concatenate([[0.0], total]))[1:]
    minute_totals = total[minute_last] if len(total) else np.zeros(0)
    trips, wins = _round_trips(run.fill_states)
    errors = trader.strategy_errors
    return RunStats(index, task.day, pnl=float(pnl["net"]), gross=float(pnl["total"]), charges=float(pnl["charges"]),
                    realized=float(pnl["realized"]),
                    trades=len(run.fill_states), round_trips=trips, wins=wins,
                    drawdown=float((total - peak).min()) if len(total) else 0.0,
                    low=float(min(0.0, total.min())) if len(total) else 0.0,
                    high=float(max(0.0, total.max())) if len(total) else 0.0,
                    minute_changes=np.diff(minute_totals, prepend=0.0), ticks=trader.ticks_processed,
                    elapsed_s=elapsed, strategy_errors=errors,
                    error=f"{errors} strategy errors, the last: {trader.last_strategy_error}" if errors else "")


def _last_row_of_each_minute(times: pd.Series) -> np.ndarray:
    """Row positions of the last tick of each clock minute, in time order."""
    minute = times.array.asi8 // 60_000_000_000 if len(times) else np.zeros(0, dtype=np.int64)
    # The first occurrence in the reversed array is the last one in the original.
    _, first_from_end = np.unique(minute[::-1], return_index=True)
    return (len(minute) - 1 - first_from_end).astype(np.int64)


def _round_trips(fill_states) -> tuple[int, int]:
    """(round trips, winning ones): a round trip ends when a position goes flat or flips side.

    Its P&L is the realized P&L booked since the previous one ended; it wins when that is > 0.
    """
    trips = wins = 0
    state: dict[tuple, tuple[int, float]] = {}     # instrument -> (qty, realized when the last trip ended)
    for _, position in fill_states:
        key = (position.exchange_type, position.token)
        qty, booked = state.get(key, (0, 0.0))
        if qty != 0 and (position.qty == 0 or (position.qty > 0) != (qty > 0)):
            trips += 1
            wins += position.realized_pnl - booked > 0
            booked = position.realized_pnl
        state[key] = (position.qty, booked)
    return trips, wins
