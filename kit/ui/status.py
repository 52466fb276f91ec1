"""What the dashboard says in words: the badge, the status line, the last strategy error.

Pure functions from the trader's state to HTML; the refresh thread writes
what they return into the widgets.
"""
from __future__ import annotations

import functools
import html

import numpy as np

from kit.research import palette

ERROR_ROWS = 5          # strategy errors listed under the traceback, newest first


def badge(text: str, color: str, detail: str) -> str:
    return (f'<span style="background:{color};color:white;font-weight:bold;padding:3px 8px;'
            f'border-radius:4px">{text}</span> <span style="color:{palette.MUTED}">{html.escape(detail)}</span>')


def rupees(value: float) -> str:
    """₹1,234.50 and -₹32.38 (a minus before the sign, never -₹0.00)."""
    value = round(float(value), 2)
    return f"-₹{-value:,.2f}" if value < 0 else f"₹{value:,.2f}"


def pnl_html(pnl: dict) -> str:
    """Today's P&L after charges, net first and prominent: ``pnl`` is ``broker.pnl()`` (realized,
    unrealized, total = gross, charges, net = total - charges)."""
    gross = pnl["total"]
    charges = pnl.get("charges", 0.0)
    return _pnl_html(pnl.get("net", gross - charges), gross, charges, pnl["realized"])


@functools.lru_cache(maxsize=16)
def _pnl_html(net: float, gross: float, charges: float, realized: float) -> str:
    """``pnl_html``'s text, remembered: the status line is rebuilt on every refresh, the P&L rarely moves."""
    color = palette.OK if round(net, 2) >= 0 else palette.ERROR
    return (f"net P&amp;L <b class='kit-net' style='color:{color};font-size:14px'>{rupees(net)}</b> "
            f"(gross <span class='kit-gross'>{rupees(gross)}</span> − charges "
            f"<span class='kit-charges'>{rupees(charges)}</span>; realized {rupees(realized)})")


def status_html(status: dict, rate: float, trader, replaced: bool, pnl: dict | None = None) -> str:
    """The status line. ``pnl``: ``broker.pnl()`` read with this refresh (gross, charges, net); without
    it, the gross P&L of ``status``."""
    if pnl is None:
        pnl = {"realized": status["realized_pnl"], "total": status["pnl"], "charges": status.get("charges", 0.0)}
        if "net" in status:
            pnl["net"] = status["net"]
    connected = (f'<b style="color:{palette.OK}">● connected</b>' if status["connected"]
                 else f'<b style="color:{palette.ERROR}">○ not connected</b>')
    state = "running" if status["running"] else "stopped"
    parts = [
        connected, state,
        f"mode <b>{status['mode']}</b>",
        f"ticks <b class='kit-ticks'>{status['ticks_processed']:,}</b> · <b>{rate:,.1f}</b>/s",
        f"queue {status['queue_depth']:,} (max {status['max_queue_depth']:,}) · dropped {status['dropped']:,}",
        f"signals {status['signals']:,} (rejected {status['rejected_signals']:,})",
        f"strategy errors <b class='kit-errors'>{status['strategy_errors']:,}</b>",
        f"reconnects {status['reconnects']:,}",
        pnl_html(pnl),
    ]
    if replaced:
        parts.insert(0, f"<b style='color:{palette.ERROR}'>REPLACED: a newer trader of this name exists;"
                        " run kit.dashboard(trader) again</b>")
    halts = halt_reasons(status)
    if halts:
        # The kill switch, a Flatten, the daily-loss stop, the strategy error budget: the reason says which.
        parts.append(f"<b class='kit-halted' style='color:{palette.ERROR}'>TRADING HALTED "
                     f"({html.escape('; '.join(halts))}). Resume lifts it</b>")
    elif status["orders_blocked"] and status["running"]:
        # Why orders are refused now: not armed, a journal that cannot be written, positions unchecked.
        parts.append(f"<b class='kit-halted' style='color:{palette.ERROR}'>ORDERS BLOCKED: "
                     f"{html.escape(status['orders_blocked'][:160])}</b>")
    return '<div style="font-family:monospace;font-size:12px">' + " | ".join(parts) + "</div>"


def halt_reasons(status: dict) -> list[str]:
    """Why trading is halted until ``trader.resume()``: [] when it is not."""
    reasons = []
    if status["halted"]:
        reasons.append(status["halt_reason"] or "kill switch")
    if status.get("strategy_halt"):
        reasons.append(status["strategy_halt"])
    if status.get("loss_stop"):
        reasons.append(status["loss_stop"])
    return reasons


def last_error(trader) -> tuple[str, str]:
    """``(one line, full traceback)`` of the strategy's last error; ``("", "")`` if none."""
    line = trader.last_strategy_error or ""
    return line, trader.last_strategy_traceback or line


def error_title(count: int, line: str) -> str:
    """The folded error box's title: how many errors, and the last one's line."""
    return f"strategy error #{count:,}: {line[:160]}" if count else ""


def errors_html(trace: str, errors=None) -> str:
    """Inside the folded error box: the last traceback, then the latest errors (``trader.errors``)."""
    table = ""
    if errors is not None and len(errors):
        table = _errors_table(errors.tail(ERROR_ROWS).iloc[::-1])
    return (f"<pre class='kit-traceback' style='font-size:11px;max-height:260px;overflow:auto;"
            f"color:#222;background:#fff5f5;padding:6px;margin:0'>{html.escape(trace)}</pre>{table}")


def _errors_table(frame) -> str:
    rows = []
    for _, row in frame.iterrows():
        when = row.get("time")
        rows.append("<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(str(v))}</td>" for v in (
            ist_time(when), row.get("symbol", row.get("token", "")), row.get("hook", ""),
            row.get("exception", ""), str(row.get("message", ""))[:120])) + "</tr>")
    head = "".join(f"<th style='padding:0 8px;text-align:left'>{h}</th>"
                   for h in ("time (IST)", "symbol", "hook", "exception", "message"))
    return f"<table style='font-size:11px'><tr>{head}</tr>{''.join(rows)}</table>"


def ist_time(when) -> str:
    """A timestamp (pandas, datetime, or epoch seconds) as IST HH:MM:SS.mmm, for a table."""
    if when is None:
        return ""
    try:
        import pandas as pd
        stamp = pd.Timestamp(when, unit="s") if isinstance(when, (int, float, np.number)) else pd.Timestamp(when)
        if stamp.tzinfo is None:    # naive: taken as UTC, the engine's clock
            stamp = stamp.tz_localize("UTC")
        return stamp.tz_convert("Asia/Kolkata").strftime("%H:%M:%S.%f")[:-3]
    except (ValueError, TypeError):
        return str(when)
