"""Plotly figures for research: a backtest's price, trades and equity; historical candles.

Research code imports this; the engine never does (trading code imports no UI).

    fig = kit.research.charts.backtest_figure(result)          # same as result.plot()
    fig = kit.research.charts.candles_figure(kit.history(...))
    fig = kit.research.charts.latency_cdf_figure(trader.metrics)  # each mode's share of ticks within a time
    fig.show()                                         # or display(fig) in a notebook
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kit.research import palette

BUY_COLOUR, SELL_COLOUR = palette.BUY, palette.SELL


def decimate(x: pd.Series, y: pd.Series, max_points: int) -> tuple[pd.Series, pd.Series]:
    """At most ~``max_points`` points that keep every bucket's low and high, so spikes stay visible."""
    n = len(y)
    if n <= max_points:
        return x, y
    size = int(np.ceil(n / (max_points // 2)))
    bucket = np.arange(n) // size
    frame = pd.DataFrame({"y": y.to_numpy(), "b": bucket})
    keep = np.unique(np.concatenate([frame.groupby("b")["y"].idxmin().to_numpy(),
                                     frame.groupby("b")["y"].idxmax().to_numpy(), [0, n - 1]]))
    return x.iloc[keep], y.iloc[keep]


def _instrument(result, token, exchange_type):
    ticks = result.ticks
    if token is not None:
        rows = ticks["token"] == str(token)
        if exchange_type is not None:
            rows &= ticks["exchange_type"] == exchange_type
        if not rows.any():
            raise ValueError(f"token {token!r} is not in the replayed ticks")
        return str(token), int(ticks.loc[rows, "exchange_type"].iloc[0])
    if len(result.fills):   # the most traded instrument
        top = result.fills.groupby(["exchange_type", "token"]).size().idxmax()
        return str(top[1]), int(top[0])
    if len(ticks):
        return str(ticks["token"].iloc[0]), int(ticks["exchange_type"].iloc[0])
    raise ValueError("the backtest replayed no ticks")


def backtest_figure(result, token: str | None = None, exchange_type: int | None = None, *,
                    max_points: int = 20_000, title: str | None = None) -> go.Figure:
    """Price of one instrument with its buys and sells (top), total and realized P&L (bottom).

    ``token`` defaults to the most traded instrument. Long series are
    decimated to ``max_points`` keeping each bucket's low and high.
    """
    token, exchange_type = _instrument(result, token, exchange_type)
    ticks = result.ticks
    mine = ticks[(ticks["token"] == token) & (ticks["exchange_type"] == exchange_type)]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.04,
                        subplot_titles=(f"{token} (exchange type {exchange_type})", "P&L (₹)"))
    x, y = decimate(mine["time"], mine["ltp"], max_points)
    fig.add_trace(go.Scattergl(x=x, y=y, mode="lines", name="ltp", line={"width": 1, "color": palette.PRICE}),
                  row=1, col=1)
    fills = result.fills
    if len(fills):
        fills = fills[(fills["token"] == token) & (fills["exchange_type"] == exchange_type)]
        for side, symbol, colour in (("BUY", "triangle-up", BUY_COLOUR), ("SELL", "triangle-down", SELL_COLOUR)):
            these = fills[fills["side"] == side]
            if len(these):
                fig.add_trace(go.Scatter(
                    x=these["time"] if "time" in these else None, y=these["price"], mode="markers", name=side.lower(),
                    marker={"symbol": symbol, "size": 10, "color": colour, "line": {"width": 1, "color": "white"}},
                    customdata=np.stack([these["qty"], these["order_id"]], axis=1),
                    hovertemplate=side + " %{customdata[0]} @ ₹%{y:.2f}<br>%{customdata[1]}<extra></extra>"),
                    row=1, col=1)
    equity = result.equity
    if len(equity):
        times = equity.index.to_series()
        for column, style in (("total", {"width": 1.5, "color": palette.PNL}),
                              ("realized", {"width": 1, "color": palette.REALIZED, "dash": "dot"})):
            ex, ey = decimate(times, equity[column], max_points)
            fig.add_trace(go.Scattergl(x=ex, y=ey, mode="lines", name=column, line=style), row=2, col=1)
    fig.update_layout(title=title or f"Backtest: total P&L ₹{result.pnl['total']:,.2f} over {len(result.fills)} fills",
                      hovermode="x unified", height=620, margin={"l": 60, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "y": 1.06, "x": 1, "xanchor": "right"})
    return fig


def candles_figure(candles: pd.DataFrame, title: str = "") -> go.Figure:
    """A candlestick chart of ``kit.history`` output (index: IST timestamps; open/high/low/close/volume)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    fig.add_trace(go.Candlestick(x=candles.index, open=candles["open"], high=candles["high"], low=candles["low"],
                                 close=candles["close"], name="price"), row=1, col=1)
    fig.add_trace(go.Bar(x=candles.index, y=candles["volume"], name="volume", marker_color=palette.VOLUME), row=2, col=1)
    # NSE hours only: hide nights and weekends so the candles sit side by side.
    breaks = [{"bounds": ["sat", "mon"]}]
    if len(candles) and (candles.index.hour != 0).any():   # intraday candles: hide the nights too
        breaks.append({"bounds": [15.5, 9.25], "pattern": "hour"})
    fig.update_xaxes(rangebreaks=breaks)
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, height=560, showlegend=False,
                      margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig


def latency_cdf_figure(metrics, modes=palette.MODE_ORDER, stage: str = "total") -> go.Figure:
    """Each dispatch mode's share of ticks handled within a given time (log µs), in the kit's mode colours.

    ``metrics`` is ``trader.metrics``; a mode without samples is left out.
    """
    fig = go.Figure()
    for mode in modes:
        s = np.sort(metrics.samples(mode, stage)) / 1e3
        if s.size:
            fig.add_scatter(x=s, y=np.arange(1, s.size + 1) / s.size, mode="lines", name=f"{mode} ({s.size:,} ticks)",
                            line={"color": palette.mode_color(mode)})
    fig.update_layout(xaxis={"type": "log", "title": f"{stage} latency, µs"},
                      yaxis={"title": "share of ticks", "tickformat": ".0%", "rangemode": "tozero"},
                      height=380, margin={"t": 40}, title=f"{stage} latency per dispatch mode")
    return fig
