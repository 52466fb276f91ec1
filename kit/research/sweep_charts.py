"""Plotly figures of a sweep (a heatmap, or parallel coordinates) and of a walk-forward."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["sweep_figure", "walk_forward_figure"]

IN_SAMPLE, OUT_OF_SAMPLE, CUMULATIVE = "#455a64", "#2e7d32", "#333333"


def sweep_figure(frame: pd.DataFrame, names: list[str], metric: str = "pnl", *, title: str | None = None) -> go.Figure:
    """``metric`` over the swept parameters: a heatmap when two vary, parallel coordinates otherwise."""
    swept = [n for n in names if frame[n].nunique() > 1]
    title = title or f"{metric} by parameters"
    if len(swept) == 2:
        y, x = swept
        table = frame.pivot_table(index=y, columns=x, values=metric, aggfunc="first", dropna=False)
        fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=[str(v) for v in table.columns],
                                   y=[str(v) for v in table.index], colorscale="RdYlGn", zmid=0 if metric in
                                   ("pnl", "realized", "sharpe") else None, colorbar={"title": metric},
                                   hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.2f}}<extra></extra>"))
        fig.update_layout(title=title, xaxis_title=x, yaxis_title=y)
        return fig
    dimensions = [_dimension(frame[n], n) for n in (swept or names)]
    dimensions.append({"label": metric, "values": frame[metric].astype(float)})
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line={"color": frame[metric].astype(float),
                                                               "colorscale": "RdYlGn", "showscale": True}))
    fig.update_layout(title=title)
    return fig


def _dimension(values: pd.Series, name: str) -> dict:
    if pd.api.types.is_numeric_dtype(values):
        return {"label": name, "values": values}
    codes, labels = pd.factorize(values.astype(str))
    return {"label": name, "values": codes, "tickvals": list(range(len(labels))), "ticktext": list(labels)}


def walk_forward_figure(frame: pd.DataFrame, metric: str, names: list[str], *, title: str | None = None) -> go.Figure:
    """Top: each window's in-sample and out-of-sample ``metric``. Bottom: out-of-sample P&L laid end to end."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"{metric}: in sample vs out of sample", "out-of-sample P&L, cumulative (₹)"))
    labels = [f"{w}: {', '.join(t)}" for w, t in zip(frame["window"], frame["test_days"])] if len(frame) else []
    chosen = [", ".join(f"{n}={row[n]}" for n in names) for _, row in frame.iterrows()]
    for column, name, colour in ((f"in_sample_{metric}", "in sample", IN_SAMPLE),
                                 (f"out_of_sample_{metric}", "out of sample", OUT_OF_SAMPLE)):
        fig.add_trace(go.Bar(x=labels, y=frame.get(column, []), name=name, marker_color=colour,
                             customdata=chosen, hovertemplate="%{customdata}<br>%{y:.2f}<extra>" + name + "</extra>"),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=labels, y=frame["out_of_sample_pnl"].cumsum() if len(frame) else [],
                             mode="lines+markers", name="cumulative P&L", line={"color": CUMULATIVE}), row=2, col=1)
    fig.update_layout(title=title or "walk-forward", barmode="group")
    return fig
