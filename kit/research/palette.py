"""The kit's colours, one palette for every chart: the dashboard, research figures, notebooks.

Research and the dashboard both import this (research sits below ui in the
import layers), so a mode or a side has the same colour wherever it is drawn.
"""
from __future__ import annotations

from kit.feed.dispatch import CALLBACK, POLL, QUEUE

MODE_ORDER = (POLL, QUEUE, CALLBACK)   # the seed's baseline first, as the toggle and the charts show them
MODE_COLORS = {POLL: "#d62728", QUEUE: "#1f77b4", CALLBACK: "#2ca02c"}

PRICE = "#455a64"        # a price line
BUY = "#2e7d32"
SELL = "#c62828"
REJECTED = "#9e9e9e"     # a signal the risk checks refused
RATE = "#1f77b4"         # ticks per second
DEPTH = "#ff7f0e"        # queue depth
PNL = "#333333"
REALIZED = "#999999"
VOLUME = "#8da0cb"
ERROR = "#c62828"        # text that says something went wrong
OK = "#2e7d32"
MUTED = "#555555"
# The price chart's lines for open orders and waiting GTT rules, by kind.
ORDER_LINES = {"stop": "#e65100", "target": "#2e7d32", "limit": "#1565c0", "gtt": "#6a1b9a"}


def mode_color(mode: str) -> str:
    """The colour of a dispatch mode; grey for a name the kit does not know."""
    return MODE_COLORS.get(mode, "#7f7f7f")
