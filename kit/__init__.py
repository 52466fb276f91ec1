"""A Jupyter-first research and live-trading kit for Angel One SmartAPI.

    import kit
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim"))   # embedded simulator, no credentials
    trader.strategy = kit.examples.SmaCross()
    trader.start()
    trader.metrics.summary()
"""
from . import examples
from .dispatch import CALLBACK, POLL, QUEUE
from .engine import LiveTrader, TraderConfig
from .feed import Gap, ReconnectPolicy
from .risk import RiskLimits
from .strategy import BUY, LIMIT, MARKET, SELL, Signal, Strategy
from .tick import LTP, QUOTE, SNAP_QUOTE, Quote, Tick
from .candles import history

__all__ = [
    "LiveTrader", "TraderConfig", "Strategy", "Signal", "Tick", "Quote", "RiskLimits", "ReconnectPolicy", "Gap",
    "QUEUE", "CALLBACK", "POLL", "LTP", "QUOTE", "SNAP_QUOTE", "BUY", "SELL", "MARKET", "LIMIT",
    "Simulator", "examples", "dashboard",
]
__all__ += ["history", "backtest", "read_recording", "research", "charts", "export_strategy"]


def __getattr__(name):
    # The simulator pulls in asyncio/websockets; load it only when asked for.
    if name == "Simulator":
        from .simulator import Simulator
        return Simulator
    # Research needs pyarrow (and charts plotly): loaded on first use.
    if name in ("research", "charts", "recording", "replay"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    if name in ("backtest", "read_recording"):
        from . import research
        return getattr(research, name)
    # The notebook cockpit pulls in ipywidgets/plotly; trading code never needs them.
    if name in ("dashboard", "Dashboard"):
        from . import ui
        return getattr(ui, name)
    if name == "export_strategy":
        from .export import export_strategy
        return export_strategy
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
