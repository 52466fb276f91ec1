"""Backtests: a strategy replayed through the live engine, and what it did, as DataFrames.

    import kit
    ticks = kit.research.backtest.read_recording("data/ticks", days="2026-01-05")
    result = kit.research.backtest(kit.examples.SmaCross(), ticks)     # mode="callback", as fast as possible
    result.fills, result.positions, result.equity                     # DataFrames
    result.summary()                                                   # P&L, trades, drawdown, speed
    result.pnl_after_charges()                                         # gross, charges, net
    result.plot()                                                      # plotly: price with trades, equity

A backtest *is* a replay: ``LiveTrader(TraderConfig(feed="replay", ...))``
with the same dispatcher, ``_on_tick``, paper broker and risk checks as live,
so a strategy behaves in a backtest as it does on the feed. The only
additions are two listeners (fills and signals) that note which tick each
event happened on; the equity curve is then computed after the run from
the ticks and the positions after each fill, so it costs nothing per tick.

Charges are the paper broker's: every fill carries its own (``fills["charges"]``),
and ``pnl`` has gross (``total``), ``charges`` and ``net``. ``backtest(...,
charges=Charges(...) | None, product=..., slippage=..., capital=...)`` sets
the broker up (they are ``TraderConfig`` settings).

Entry points a script needs: ``TraderConfig(feed="replay",
replay=ReplayConfig(PATH_OR_DF, speed=None | x))`` and ``read_recording(path)``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kit.core.charges import COMPONENTS, Charges
from kit.core.market import IST_ZONE
from kit.feed.dispatch import CALLBACK
from kit.engine.config import MetricsConfig, ReplayConfig, TraderConfig
from kit.engine.strategy_check import check_strategy
from kit.engine.trader import LiveTrader
from kit.store.recording import read_recording, table_to_frame

__all__ = ["backtest", "Backtest", "BacktestResult", "read_recording", "equity_curve"]


def backtest(strategy, ticks, *, mode: str = CALLBACK, speed: float | None = None, progress: bool = True,
             latency_metrics: bool = False, name: str = "backtest", **config) -> "BacktestResult":
    """Replay ``ticks`` through a new ``LiveTrader`` running ``strategy``; return what happened.

    ``ticks``: a recording directory or a DataFrame of ticks (see
    ``kit.feed.replay.load_ticks``). ``mode``: the dispatch mode (same result in
    each). ``speed``: None for as fast as possible, x for x times the recorded
    pace. ``latency_metrics`` is off by default: latencies of an
    as-fast-as-possible replay mean little, and measuring costs ~0.6 µs a tick.
    Other keyword arguments go to ``TraderConfig`` (e.g. ``risk=``, ``dispatch=DispatchConfig(queue_size=...)``,
    and the paper broker's ``charges=``, ``product=``, ``slippage=``, ``capital=``).

        result = backtest(MyStrategy(), "data/ticks", mode="queue")
    """
    check_strategy(strategy, assign="kit.backtest({}, ticks)")     # before any replay is loaded
    _, run = replay(strategy, ticks, mode=mode, speed=speed, progress=progress,
                    latency_metrics=latency_metrics, name=name, **config)
    return run.result()


def replay(strategy, ticks, *, mode: str = CALLBACK, speed: float | None = None, progress: bool = False,
           latency_metrics: bool = False, name: str = "backtest", **config) -> tuple[LiveTrader, "Backtest"]:
    """Replay ``ticks`` through a new paper ``LiveTrader`` running ``strategy``, to the end; the trader
    (closed) and its ``Backtest`` notes. What ``backtest`` and every run of a sweep share."""
    trader = LiveTrader(TraderConfig(feed="replay", replay=ReplayConfig(ticks, speed=speed, progress=progress),
                                     mode=mode, metrics=MetricsConfig(latency=latency_metrics), name=name, **config))
    trader.strategy = strategy
    run = Backtest(trader)
    try:
        trader.run()
    finally:
        trader.close()
    if trader.feed.error:
        raise RuntimeError(f"the replay failed: {trader.feed.error}")
    return trader, run


class Backtest:
    """Notes, for a trader about to replay, on which tick each fill and signal happened.

        run = Backtest(trader)        # before trader.start() / run()
        trader.run()
        result = run.result()
    """

    def __init__(self, trader: LiveTrader):
        self.trader = trader
        self._base = trader.ticks_processed
        self.fill_states: list[tuple[int, object]] = []     # (tick index, Position after the fill)
        self.signal_ticks: list[int] = []                   # tick index of each signal, in order
        self.signal_accepted: list[bool] = []               # False: risk rejected it, so no order
        self._started = time.perf_counter()
        trader.broker.add_fill_listener(self._on_fill)
        trader.add_signal_listener(self._on_signal)

    # Both run inside LiveTrader._on_tick, before it counts the tick: ticks_processed
    # is then the index of the tick being handled.
    def _on_fill(self, fill) -> None:
        self.fill_states.append((self.trader.ticks_processed - self._base,
                                 self.trader.broker.position(fill.token, fill.exchange_type)))

    def _on_signal(self, signal, reason) -> None:
        self.signal_ticks.append(self.trader.ticks_processed - self._base)
        self.signal_accepted.append(reason is None)

    def result(self) -> "BacktestResult":
        trader = self.trader
        trader.broker.remove_fill_listener(self._on_fill)
        trader.remove_signal_listener(self._on_signal)
        feed = trader.feed
        table = getattr(feed, "table", None)
        ticks = table_to_frame(table) if table is not None else pd.DataFrame(columns=["token", "exchange_type", "ltp"])
        ticks.insert(0, "time", tick_times(ticks))
        times = ticks["time"]

        def stamp(frame: pd.DataFrame, indices: list[int]) -> pd.DataFrame:
            # Add the tick each row happened on; only when every row is accounted for.
            if len(frame) == len(indices):
                frame.insert(0, "tick_index", np.asarray(indices, dtype=np.int64))
                frame.insert(0, "time", pd.Series(times.take(indices).array, index=frame.index))
            return frame

        signals = stamp(trader.signals_df(), self.signal_ticks)
        # Orders are the accepted signals, in order: a risk rejection made no order.
        orders = stamp(trader.broker.orders_df(),
                       [i for i, ok in zip(self.signal_ticks, self.signal_accepted) if ok])
        fills = stamp(trader.broker.fills_df(), [i for i, _ in self.fill_states])
        handled = trader.ticks_processed - self._base
        elapsed = getattr(feed, "elapsed_s", 0.0) or (time.perf_counter() - self._started)
        replay = trader.config.replay
        stats = {"ticks": handled, "elapsed_s": elapsed, "ticks_per_s": handled / elapsed if elapsed else float("nan"),
                 "mode": trader.config.mode, "speed": replay.speed if replay else None, "signals": len(signals),
                 "rejected_signals": trader.rejected_signals, "strategy_errors": trader.strategy_errors,
                 "dropped": trader.dispatcher.dropped, "skipped_rows": feed.stats.malformed if feed else 0}
        broker = trader.broker
        return BacktestResult(ticks=ticks, signals=signals, orders=orders, fills=fills,
                              positions=broker.positions_df(), equity=equity_curve(ticks, self.fill_states),
                              pnl=broker.pnl(), stats=stats,
                              latency=trader.metrics.summary() if trader.config.metrics.latency else None,
                              charges_model=getattr(broker, "charges", None),
                              product=getattr(broker, "product", trader.config.product),
                              instruments=broker.instruments)


@dataclass
class BacktestResult:
    """What a backtest did. Every table is a pandas DataFrame; times are IST.

    ``ticks``: the replayed ticks (``read_recording`` columns plus ``time``).
    ``signals`` / ``orders`` / ``fills``: as the engine and paper broker
    report them, plus ``time`` and ``tick_index`` (the row of ``ticks`` they
    happened on). ``positions``: the final positions. ``equity``: realized,
    unrealized, total (gross) P&L, charges and net after every tick, indexed by time. ``pnl``: the
    broker's final figures. ``stats``: ticks, elapsed seconds, ticks/s, ...
    ``latency``: the metrics summary when ``latency_metrics`` was on.
    ``charges_model``, ``product``, ``instruments``: what the broker charged
    the fills by (its ``Charges``, None if it charged none), for the breakdown.
    """
    ticks: pd.DataFrame
    signals: pd.DataFrame
    orders: pd.DataFrame
    fills: pd.DataFrame
    positions: pd.DataFrame
    equity: pd.DataFrame
    pnl: dict
    stats: dict = field(default_factory=dict)
    latency: pd.DataFrame | None = None
    charges_model: Charges | None = field(default=None, repr=False)
    product: str = "INTRADAY"
    instruments: object = field(default=None, repr=False)

    def summary(self) -> pd.Series:
        """Headline figures: P&L (gross, charges, net), trades, worst drawdown (of the net equity), ticks
        and speed."""
        total = self.equity["net"] if len(self.equity) else pd.Series([0.0])
        drawdown = (total - total.cummax()).min()
        return pd.Series({
            "total_pnl": self.pnl["total"], "charges": self.pnl.get("charges", 0.0),
            "net_pnl": self.pnl.get("net", self.pnl["total"]), "realized_pnl": self.pnl["realized"],
            "unrealized_pnl": self.pnl["unrealized"], "max_drawdown": float(drawdown),
            "signals": len(self.signals), "fills": len(self.fills), "ticks": self.stats.get("ticks", 0),
            "ticks_per_s": self.stats.get("ticks_per_s", float("nan")),
        })

    def _breakdown_model(self) -> Charges:
        """The broker's charges model, reading instrument types from its master as the broker did."""
        model = self.charges_model or Charges()
        if self.instruments is not None and model.instruments is None:
            model = copy.copy(model)
            model.instruments = self.instruments
        return model

    @property
    def charges(self) -> pd.DataFrame:
        """``fills`` with the charges of each broken down by component (brokerage, STT, ...), by the
        model the broker charged them with (its ``Charges``: by default Angel One's published rates,
        an NFO token of unknown type charged as an option; ``Charges()`` if the broker charged none).
        For other rates, product or instruments: ``Charges(...).for_fills(result.fills, ...)``."""
        return self._breakdown_model().for_fills(self.fills, self.product)

    def pnl_after_charges(self, charges: Charges | None = None, product: str | None = None, *,
                          instrument: str | None = None) -> dict:
        """``{"gross", "charges", "net", ...components}`` in rupees.

        Without arguments: the broker's own figures, ``pnl["total"]``, the sum
        of the fills' charges and ``pnl["net"]``, with the components of the
        same charges. With ``charges``, ``product`` or ``instrument``: what the
        same fills would have cost by that model, product or instrument type
        (``Charges().summary``), against the same gross. ``pnl`` itself is
        left as the broker reports it.
        """
        if charges is None and product is None and instrument is None:
            gross = float(self.pnl["total"])
            if self.charges_model is None:
                return {"gross": gross, "charges": 0.0, "net": gross, **{name: 0.0 for name in COMPONENTS}}
            summary = self._breakdown_model().summary(self.fills, gross, self.product)
            paid = float(self.pnl.get("charges", summary["charges"]))
            return {**summary, "charges": paid, "net": float(self.pnl.get("net", gross - paid))}
        return (charges or Charges()).summary(self.fills, self.pnl["total"], product or self.product,
                                              instrument=instrument)

    @property
    def net_pnl(self) -> float:
        """``pnl["total"]`` less the charges of every fill: the broker's ``pnl["net"]``."""
        return float(self.pnl["net"]) if "net" in self.pnl else self.pnl_after_charges()["net"]

    def plot(self, token: str | None = None, exchange_type: int | None = None, **kwargs):
        """A plotly figure: the price of one instrument with its fills, and the equity curve."""
        from kit.research.charts import backtest_figure   # research may use plotly; the engine never imports it
        return backtest_figure(self, token=token, exchange_type=exchange_type, **kwargs)


def tick_times(ticks: pd.DataFrame) -> pd.Series:
    """Each tick's time in IST: the recorded wall-clock receive time, else the exchange timestamp."""
    if "recv_epoch_ns" in ticks and ticks["recv_epoch_ns"].notna().all() and (ticks["recv_epoch_ns"] > 0).all():
        ns = ticks["recv_epoch_ns"].to_numpy(dtype=np.int64)
    elif "exchange_ts" in ticks:
        ns = ticks["exchange_ts"].to_numpy(dtype=np.int64) * 1_000_000
    else:
        ns = np.zeros(len(ticks), dtype=np.int64)
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True).tz_convert(IST_ZONE), index=ticks.index, name="time")


def equity_curve(ticks: pd.DataFrame, fill_states: list[tuple[int, object]]) -> pd.DataFrame:
    """Realized, unrealized and total (gross) P&L after each tick, the charges paid so far and the net,
    from the positions after each fill.

    ``fill_states``: ``(tick index, Position after the fill)`` in fill order.
    Between fills an instrument's position (and its charges) is constant; its
    unrealized P&L moves with its own ticks' ltp (the broker's mark), so the
    last row equals ``broker.pnl()``. Vectorised: O(ticks × traded
    instruments), after the run.
    """
    n = len(ticks)
    realized = np.zeros(n)
    unrealized = np.zeros(n)
    charges = np.zeros(n)
    rows = np.arange(n)
    by_instrument: dict[tuple[int, str], list] = {}
    for index, position in fill_states:
        by_instrument.setdefault((position.exchange_type, position.token), []).append((index, position))
    if by_instrument:
        token = ticks["token"].to_numpy(dtype=object)
        exchange = ticks["exchange_type"].to_numpy()
        ltp = ticks["ltp"].to_numpy(dtype=float)
        for (exchange_type, tok), states in by_instrument.items():
            mine = (exchange == exchange_type) & (token == tok)
            mark = pd.Series(np.where(mine, ltp, np.nan)).ffill().to_numpy()
            at = np.array([i for i, _ in states])
            qty = np.array([p.qty for _, p in states], dtype=float)
            avg = np.array([p.avg_price for _, p in states])
            real = np.array([p.realized_pnl for _, p in states])
            paid = np.array([getattr(p, "charges", 0.0) for _, p in states])
            last = np.searchsorted(at, rows, side="right") - 1     # the latest fill at or before each row
            held = last >= 0
            q = np.where(held, qty[np.maximum(last, 0)], 0.0)
            a = np.where(held, avg[np.maximum(last, 0)], 0.0)
            realized += np.where(held, real[np.maximum(last, 0)], 0.0)
            charges += np.where(held, paid[np.maximum(last, 0)], 0.0)
            unrealized += np.where(q != 0, q * (np.nan_to_num(mark) - a), 0.0)
    times = ticks["time"] if "time" in ticks else tick_times(ticks)
    total = realized + unrealized
    return pd.DataFrame({"tick_index": rows, "realized": realized, "unrealized": unrealized, "total": total,
                         "charges": charges, "net": total - charges}, index=pd.DatetimeIndex(times, name="time"))
