"""The dashboard's three plotly figures, and the pure functions that shape their data.

The price chart also draws a horizontal line, labelled, per open order price
and per waiting GTT rule of its instrument (``order_line_key`` and
``order_line_layout``): layout shapes across the plot, rewritten only when
that set of lines changes.

Every time axis is in IST (Asia/Kolkata, UTC+05:30 all year: no daylight
saving), whatever zone the machine runs in. A pause in the feed is a break
in the price line, not a straight segment across it. Colours come from
``kit.research.palette``, the same as the research charts.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from kit.broker.gtt import GTT_NEW
from kit.core.strategy import LIMIT, STOP_TYPES, STOPLOSS_LIMIT
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


# ---------------------------------------------------------------------- open orders and GTT rules on the price chart
ORDER_LINE_DASH = {"stop": "dash", "target": "dot", "limit": "solid", "gtt": "dashdot"}


def order_line_key(orders, rules, token: str, exchange_type: int | None = None) -> tuple:
    """The price chart's order lines for one instrument, as plain values: ``((price, kind, side, qty,
    limit), ...)``, highest price first. It is the key the refresh compares with the last one drawn:
    the same tuple, nothing to send.

    One line per price that matters: a stop's trigger (``kind`` "stop"; ``limit`` is a STOPLOSS_LIMIT's
    limit), a resting LIMIT's limit ("limit"; "target" for a bracket's exit leg, a LIMIT with a
    ``parent_id``), a waiting (NEW) GTT rule's trigger ("gtt"; ``limit`` is the price it places its
    order at). MARKET orders have no price to draw. ``qty`` is what is left unfilled.
    """
    lines = []
    for o in orders:
        if o.token != token or (exchange_type is not None and o.exchange_type != exchange_type):
            continue
        left = o.qty - (o.filled_qty or 0)
        if o.order_type in STOP_TYPES and o.trigger_price:
            lines.append((float(o.trigger_price), "stop", o.side, left,
                          float(o.limit_price) if o.order_type == STOPLOSS_LIMIT and o.limit_price else None))
        elif o.order_type == LIMIT and o.limit_price:
            lines.append((float(o.limit_price), "target" if o.parent_id else "limit", o.side, left, None))
    for r in rules:
        if r.status == GTT_NEW and r.token == token and (exchange_type is None or r.exchange_type == exchange_type):
            lines.append((float(r.trigger_price), "gtt", r.side, r.qty, float(r.price)))
    lines.sort(key=lambda line: (-line[0], line[1], line[2]))
    return tuple(lines)


def order_line_label(line: tuple) -> str:
    """"SL SELL 65 @297.00", "target SELL 65 @302.00", "GTT SELL 65 @305.00", "BUY 65 LMT 299.00"."""
    price, kind, side, qty, limit = line
    if kind == "stop":
        return f"SL {side} {qty:,} @{price:,.2f}" + (f" LMT {limit:,.2f}" if limit is not None else "")
    if kind == "target":
        return f"target {side} {qty:,} @{price:,.2f}"
    if kind == "gtt":
        return f"GTT {side} {qty:,} @{price:,.2f}"
    return f"{side} {qty:,} LMT {price:,.2f}"


def order_line_layout(key: tuple) -> tuple[list[dict], list[dict]]:
    """``(shapes, annotations)`` for the price chart's layout from ``order_line_key``'s tuple.

    A line spans the plot's width (``xref="paper"``): it does not move as time passes, so it is sent
    only when the orders change, and the y axis still ranges over it. Its label sits at the left
    end, above it, clear of the newest prices on the right; lines at the same price share one label.
    """
    shapes, notes, at = [], [], {}
    for line in key:
        price, kind = line[0], line[1]
        color = palette.ORDER_LINES[kind]
        label = order_line_label(line)
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": price, "y1": price,
                       "line": {"color": color, "width": 1.2, "dash": ORDER_LINE_DASH[kind]}, "name": label})
        if price in at:
            at[price]["text"] += f" · {label}"
            continue
        at[price] = {"xref": "paper", "x": 0.005, "xanchor": "left", "yref": "y", "y": price, "yanchor": "bottom",
                     "text": label, "showarrow": False, "font": {"size": 10, "color": color},
                     "bgcolor": "rgba(255,255,255,0.75)", "borderpad": 1, "name": f"order line {price}"}
        notes.append(at[price])
    return shapes, notes


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
