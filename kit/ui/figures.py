"""The dashboard's three plotly figures, and the pure functions that shape their data.

Every time axis is in IST (Asia/Kolkata, UTC+05:30 all year: no daylight
saving), whatever zone the machine runs in. A pause in the feed is a break
in the price line, not a straight segment across it. Colours come from
``kit.research.palette``, the same as the research charts.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kit.engine.metrics import STAGES
from kit.research import palette

IST_OFFSET_NS = (5 * 3600 + 30 * 60) * 10**9
# Clock time only: the date line under the ticks ate the room of the legend below.
TIME_AXIS = {"type": "date", "tickformat": "%H:%M:%S", "hoverformat": "%H:%M:%S.%L", "title": {"text": "IST", "standoff": 2}}
MAX_GAP_NS = 3 * 10**9     # ticks further apart than this are not joined by the price line


def ist_strings(epoch_ns: np.ndarray) -> np.ndarray:
    """IST wall-clock strings to the millisecond. The front end reads strings as dates; a
    datetime64 array would reach it as plain integers, and a numeric "date" axis reverts to linear."""
    return (np.asarray(epoch_ns, dtype=np.int64) + IST_OFFSET_NS).astype("datetime64[ns]") \
        .astype("datetime64[ms]").astype(str)


def with_gaps(x_ns: np.ndarray, y: np.ndarray, *, max_gap_ns: int = MAX_GAP_NS,
              breaks_ns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x_ns`` and ``y`` with a NaN point (a break in the line) between two ticks further apart
    than ``max_gap_ns``, or on either side of any time in ``breaks_ns`` (a stop and a start)."""
    x_ns = np.asarray(x_ns, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    if x_ns.size < 2:
        return x_ns, y
    cut = np.diff(x_ns) > max_gap_ns
    if breaks_ns is not None and len(breaks_ns):
        at = np.searchsorted(x_ns, np.asarray(breaks_ns, dtype=np.int64), side="right")
        at = at[(at > 0) & (at < x_ns.size)]
        cut[at - 1] = True
    where = np.flatnonzero(cut) + 1
    if not where.size:
        return x_ns, y
    # The break point sits between its neighbours, so the x values stay sorted.
    mid = (x_ns[where - 1] + x_ns[where]) // 2
    return np.insert(x_ns, where, mid), np.insert(y, where, np.nan)


def latency_trace_values(rows: list) -> dict:
    """A latency bar trace's data from ``[(p50 µs, p99 µs, samples) or (None, None, 0)] per stage``.

    Only the stages with samples get a bar; a mode without any gets empty x
    and y, never y missing (plotly would then lay the trace out horizontally).
    """
    kept = [(stage, r) for stage, r in zip(STAGES, rows) if r[0] is not None]
    return {"x": [stage for stage, _ in kept], "y": [r[0] for _, r in kept],
            "error_y.array": [r[1] - r[0] for _, r in kept],
            "customdata": [[r[1], r[2]] for _, r in kept]}


def price_figure() -> go.FigureWidget:
    return go.FigureWidget(
        data=[go.Scatter(name="ltp", mode="lines", x=[], y=[], connectgaps=False,
                         line={"color": palette.PRICE, "width": 1.5}),
              go.Scatter(name="buy", mode="markers", x=[], y=[],
                         marker={"symbol": "triangle-up", "size": 11, "color": palette.BUY}),
              go.Scatter(name="sell", mode="markers", x=[], y=[],
                         marker={"symbol": "triangle-down", "size": 11, "color": palette.SELL}),
              go.Scatter(name="rejected", mode="markers", x=[], y=[],
                         marker={"symbol": "x", "size": 9, "color": palette.REJECTED})],
        layout={"height": 280, "margin": {"l": 60, "r": 20, "t": 40, "b": 36},
                "title": {"text": "price", "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
                "uirevision": "keep zoom", "legend": {"orientation": "h", "y": 1.14, "x": 0.7, "xanchor": "right"},
                "xaxis": TIME_AXIS, "yaxis": {"tickformat": ",.2f"}, "width": 980})


def latency_figure(latency_window: int) -> go.FigureWidget:
    traces = [go.Bar(name=mode, orientation="v", x=[], y=[], marker_color=palette.mode_color(mode),
                     error_y={"type": "data", "symmetric": False, "array": [], "color": "#333"},
                     hovertemplate=f"{mode} %{{x}}: p50 %{{y:,.1f}} µs, p99 %{{customdata[0]:,.1f}} µs"
                                   f" (%{{customdata[1]}} ticks)<extra></extra>")
              for mode in palette.MODE_ORDER]
    # The title sits left, in its own top margin: centred, plotly's toolbar (top right) covered it.
    return go.FigureWidget(
        data=traces,
        layout={"height": 300, "width": 520, "barmode": "group", "margin": {"l": 60, "r": 10, "t": 64, "b": 30},
                "title": {"text": f"latency per stage, µs<br><sup>p50 bar, p99 whisker; each mode's last "
                                  f"{latency_window:,} ticks</sup>",
                          "font": {"size": 13}, "x": 0.01, "xanchor": "left", "y": 0.97, "yanchor": "top"},
                "xaxis": {"type": "category", "categoryorder": "array", "categoryarray": list(STAGES)},
                "yaxis": {"type": "log", "title": {"text": "µs"}}, "uirevision": "keep zoom",
                "legend": {"orientation": "h", "y": -0.15}})


def throughput_figure() -> go.FigureWidget:
    return go.FigureWidget(
        data=[go.Scatter(name="ticks/s", mode="lines", x=[], y=[], line={"color": palette.RATE}),
              go.Scatter(name="queue depth", mode="lines", x=[], y=[],
                         line={"color": palette.DEPTH, "dash": "dot"}, yaxis="y2")],
        layout={"height": 300, "width": 460, "margin": {"l": 50, "r": 50, "t": 64, "b": 44},
                "title": {"text": "throughput", "font": {"size": 13}, "x": 0.01, "xanchor": "left",
                          "y": 0.97, "yanchor": "top"},
                "uirevision": "keep zoom", "xaxis": TIME_AXIS,
                "yaxis": {"title": {"text": "ticks/s"}, "rangemode": "tozero"},
                "yaxis2": depth_axis(0) | {"title": {"text": "queue depth"}, "overlaying": "y", "side": "right",
                                            "rangemode": "tozero", "showgrid": False},
                "legend": {"orientation": "h", "y": -0.24}})


def depth_axis(deepest: int) -> dict:
    """Integer ticks on the queue-depth axis: one apart while the depth is small, else plotly's choice."""
    if deepest < 10:
        return {"tickformat": "d", "tickmode": "linear", "tick0": 0, "dtick": 1 if deepest < 5 else 2,
                "range": [0, max(deepest, 1) * 1.1]}
    return {"tickformat": ",d", "tickmode": "auto", "dtick": None, "tick0": None, "range": None,
            "autorange": True}
