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

__all__ = [
    "LiveTrader", "TraderConfig", "Strategy", "Signal", "Tick", "Quote", "RiskLimits", "ReconnectPolicy", "Gap",
    "QUEUE", "CALLBACK", "POLL", "LTP", "QUOTE", "SNAP_QUOTE", "BUY", "SELL", "MARKET", "LIMIT",
    "Simulator", "examples",
]


def __getattr__(name):
    # The simulator pulls in asyncio/websockets; load it only when asked for.
    if name == "Simulator":
        from .simulator import Simulator
        return Simulator
    raise AttributeError(f"module 'kit' has no attribute {name!r}")
