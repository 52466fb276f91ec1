"""A Jupyter-first research and live-trading kit for Angel One SmartAPI.

    import kit
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim"))   # embedded simulator, no credentials
    trader.strategy = kit.examples.SmaCross()
    trader.start()
    trader.metrics.summary()

The package is a folder per concern, bottom to top: ``core`` (ticks, signals,
strategies), ``angel`` (Angel One's SDK, wire, session, instruments),
``store`` (journal, recordings), ``feed`` (ticks in) and ``broker`` (orders
out, with risk), ``engine`` (the trader), ``research`` and ``ui``; ``sim`` is
the embedded simulator, which only the engine's venues (``kit.engine.venues``) reach.

A trader's config is composed of its parts' configs:

    kit.TraderConfig(feed="sim", mode="callback", sim=kit.SimConfig(rate=20),
                     journal=kit.JournalConfig("paper.sqlite", sync="NORMAL"))
"""
from kit.angel.candles import history
from kit.core.charges import Charges
from kit.broker.risk import RiskLimits
from kit.core.calendar import Calendar
from kit.broker.slippage import FixedTicks, LatencyTicks, NoSlippage, SpreadFraction
from kit.core.strategy import BUY, LIMIT, MARKET, SELL, STOPLOSS_LIMIT, STOPLOSS_MARKET, Signal, Strategy
from kit.core.tick import LTP, QUOTE, SNAP_QUOTE, Quote, Tick
from kit.engine.config import (ConnectionConfig, DispatchConfig, JournalConfig, MetricsConfig, ReplayConfig,
                               SimConfig, TraderConfig)
from kit.engine.errors import ErrorBudget
from kit.engine.square_off import SquareOff
from kit.engine.trader import LiveTrader
from kit.engine.venues import AngelVenue, SimVenue
from kit.feed.dispatch import CALLBACK, POLL, QUEUE
from kit.feed.live import Gap, ReconnectPolicy
from kit.research import examples

__version__ = "0.2.0"

__all__ = [
    "LiveTrader", "TraderConfig", "SimConfig", "ReplayConfig", "ConnectionConfig", "DispatchConfig", "MetricsConfig",
    "JournalConfig", "RiskLimits", "Calendar", "SquareOff", "ErrorBudget", "ReconnectPolicy", "SimVenue",
    "AngelVenue",
    "Strategy", "Signal", "Tick", "Quote", "Gap",
    "QUEUE", "CALLBACK", "POLL", "LTP", "QUOTE", "SNAP_QUOTE", "BUY", "SELL", "MARKET", "LIMIT",
    "STOPLOSS_LIMIT", "STOPLOSS_MARKET", "NoSlippage", "FixedTicks", "SpreadFraction", "LatencyTicks",
    "Simulator", "examples", "dashboard", "history", "backtest", "read_recording", "export_strategy",
    "sweep", "walk_forward", "SweepResult", "Charges",
    "__version__",
]


def __getattr__(name):
    # The simulator pulls in asyncio/websockets; load it only when asked for (through the venues,
    # the only product module that imports kit.sim).
    if name == "Simulator":
        from kit.engine import venues
        return venues.Simulator
    # Research needs pyarrow (and charts plotly): loaded on first use.
    if name in ("backtest", "read_recording"):
        from kit.research import backtest
        return getattr(backtest, name)
    # The notebook cockpit pulls in ipywidgets/plotly; trading code never needs them.
    if name in ("dashboard", "Dashboard"):
        from kit.ui import dashboard
        return getattr(dashboard, name)
    # Sweeps bring joblib and Dask in only when a sweep is asked for.
    if name in ("sweep", "SweepResult"):
        from kit.research import sweep
        return getattr(sweep, name)
    if name == "walk_forward":
        from kit.research.walk_forward import walk_forward
        return walk_forward
    if name == "export_strategy":
        from kit.research.export import export_strategy
        return export_strategy
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
