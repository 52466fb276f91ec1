"""``trader.status``: one flat dict, composed of what each part of the trader reports.

    feed        its FeedStats, renamed (a stopped or never-started trader reports a fresh FeedStats);
                ``connections``: one row per market-data connection (more than one beyond 1,000 subscriptions)
    dispatcher  mode, queue depth, drops
    the trader  running, ticks handled, signals, strategy errors (and the error budget's halt), paper or live
    risk        the gate: armed, halted, why an order would be refused now, the loss stop
    broker      open orders, bad marks, P&L (the Broker contract); a live broker adds its send queue,
                journal and position checks
    session     when the login expires, renewals, why the last renewal failed (a venue that logged in)

Keys are only ever added: the dashboard, the CLI report and the tests read them.
"""
from __future__ import annotations

from kit.broker.base import Broker
from kit.broker.risk import RiskManager
from kit.engine.errors import GATE_NAME as STRATEGY_GATE
from kit.feed.live import FeedStats, SmartFeed
from kit.feed.shards import ShardedFeed, connection_row

# status key -> FeedStats field
FEED_KEYS = {
    "connected": "connected", "ticks_received": "ticks", "malformed_frames": "malformed",
    "error_frames": "error_frames", "reconnects": "reconnects", "stalls": "stalls", "auth_failed": "auth_failed",
    "connects": "connects", "disconnects": "disconnects", "failed_connects": "failed_connects",
    "last_disconnect_reason": "last_disconnect_reason", "last_disconnect_at": "last_disconnect_at",
    "connected_since": "connected_since", "next_retry_in": "next_retry_in", "gaps": "gaps",
    "missed_ticks": "missed_ticks", "heartbeats_sent": "heartbeats_sent", "pongs": "pongs",
    "unknown_text_frames": "unknown_text", "socket_errors": "socket_errors", "last_error": "last_error",
    "feed_lag_ms": "lag_ms", "max_feed_lag_ms": "max_lag_ms",
}
_NO_FEED = FeedStats()
_NO_SESSION = {"session_expires_at": None, "session_renewals": 0, "session_renewed_at": None, "session_error": "",
               "session_retry_in": None}
_PAPER_IGNORES = frozenset({"disarmed"})     # a paper broker trades armed or not
_LIVE_IGNORES: frozenset = frozenset()


def feed_status(stats: FeedStats | None) -> dict:
    stats = stats or _NO_FEED
    return {key: getattr(stats, name) for key, name in FEED_KEYS.items()}


def connections_status(feed) -> list[dict]:
    if isinstance(feed, ShardedFeed):
        return feed.connections()
    return [connection_row(feed)] if isinstance(feed, SmartFeed) else []


def dispatch_status(dispatcher) -> dict:
    return {"mode": dispatcher.mode, "active_mode": dispatcher.active_mode, "queue_depth": dispatcher.depth,
            "max_queue_depth": dispatcher.max_depth, "dropped": dispatcher.dropped}


def risk_status(risk: RiskManager, live: bool) -> dict:
    return {"armed": risk.armed, "halted": risk.halted, "halt_reason": risk.halt_reason,
            # Why an order would be refused now ("" when trading is allowed), and the daily-loss stop.
            "orders_blocked": risk.gate.refusal(ignore=_LIVE_IGNORES if live else _PAPER_IGNORES) or "",
            "loss_stop": risk.loss_stop, "last_rejection": risk.last_rejection,
            # Segments squared off today: only orders that reduce a position pass there ("" when none).
            "square_off": "; ".join(sorted(set(risk.squared_off.values())))}


def broker_status(broker: Broker) -> dict:
    status = {"open_orders": len(broker.open_orders()), "bad_marks": broker.bad_marks}
    if broker.live:
        status.update(orders_queued=broker.queued, journal_error=broker.journal_error,
                      position_differences=broker.stats["position_differences"],
                      positions_checked_at=broker.positions_checked_at)
    pnl = broker.pnl()
    status.update(realized_pnl=pnl["realized"], unrealized_pnl=pnl["unrealized"], pnl=pnl["total"],
                  charges=pnl["charges"], net_pnl=pnl["net"])
    return status


def trader_status(trader) -> dict:
    feed = trader.feed
    return {
        "running": trader.running,
        **feed_status(feed.stats if feed is not None else None),
        "connections": connections_status(feed),
        **dispatch_status(trader.dispatcher),
        "ticks_processed": trader.ticks_processed,
        "strategy_errors": trader.strategy_errors,
        "last_strategy_error": trader.last_strategy_error,
        # Why the error budget halted new orders ("" when it has not): also in orders_blocked.
        "strategy_halt": trader.risk.gate.reasons.get(STRATEGY_GATE, ""),
        "signals": trader.signal_count,
        "rejected_signals": trader.rejected_signals,
        "live": trader.live,
        **risk_status(trader.risk, trader.broker.live),
        **broker_status(trader.broker),
        **session_status(getattr(trader.venue, "keeper", None)),
    }


def session_status(keeper) -> dict:
    return keeper.status() if keeper is not None else dict(_NO_SESSION)
