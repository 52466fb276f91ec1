"""The trader's hands on its orders: arm and disarm live trading, the kill switch, resume, a manual order.

Every control acts through the trading gate (``kit.broker.gate``, held by the
risk manager and shared with the live broker) and the broker contract
(``kit.broker.base.Broker``), the same for paper and live; only the live
broker's ``wait_settled`` is asked of live brokers alone.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from kit.broker.base import Broker
from kit.broker.risk import RiskManager
from kit.core.strategy import Signal

if TYPE_CHECKING:
    from kit.engine.venues import Venue

log = logging.getLogger(__name__)


class LiveControls:
    def __init__(self, risk: RiskManager, broker: Broker, venue: "Venue | None"):
        self.risk = risk
        self.broker = broker
        self.venue = venue

    def arm(self, confirm: str) -> None:
        """The second opt-in for real orders: ``confirm`` must be the client code this trader trades.

        Needs ``paper=False`` in the config (the first opt-in) and a
        ``max_daily_loss`` in the risk limits. Until armed, every live signal is
        rejected with a reason saying so.

            trader = kit.LiveTrader(kit.TraderConfig(feed="smartapi", paper=False, tokens=...,
                                                     risk=kit.RiskLimits.live_defaults(max_daily_loss=5_000)))
            trader.arm_live(confirm="A123456")
        """
        if not self.broker.live:
            raise RuntimeError("this trader is paper trading (TraderConfig(paper=True)): there is nothing to arm")
        if self.risk.limits.max_daily_loss is None:
            raise ValueError("set a max_daily_loss in the risk limits before arming live trading, e.g. "
                             "TraderConfig(risk=RiskLimits.live_defaults(max_daily_loss=5_000))")
        if str(confirm).strip() != self.venue.client_code():
            raise ValueError("arm_live(confirm=...) takes the client code of the account this trader logs into; "
                             "that is not it. Nothing was armed.")
        self.risk.arm()
        log.warning("LIVE TRADING ARMED for client %s: signals now become real orders", confirm)

    def disarm(self) -> None:
        """Refuse every later live order. Orders queued and not yet sent are cancelled before this
        returns; orders already at the exchange are left there (``kill()`` cancels them)."""
        self.risk.disarm()

    def resume(self) -> None:
        """Lift the kill switch and the daily-loss stop; both stay until this is called."""
        self.risk.resume()

    def submit(self, signal: Signal, tick=None):
        """A manual order from the notebook, through the same risk checks as the strategy's.

        Returns ``(order, None)`` or ``(None, reason)``.
        """
        reason = self.risk.check(signal, tick, self.broker)
        if reason is not None:
            return None, reason
        order = self.broker.submit(signal, tick)
        return order, (order.status_message if order.status == "REJECTED" else None)

    def kill(self, reason: str = "kill switch", *, flatten: bool = True, timeout: float = 10.0) -> dict:
        """Halt, cancel every open order, and (``flatten=True``) close every position with MARKET orders.

        New signals are rejected with ``reason`` until ``resume()``. Live: waits
        up to ``timeout`` seconds for the cancels, then for the flattening
        fills. Paper: flattening orders fill on the next tick. Returns what it did.
        """
        broker = self.broker
        self.risk.halt(reason)          # closes the gate: orders queued for the exchange are cancelled now
        log.warning("KILL SWITCH: %s", reason)
        # First the GTT rules: one that fires after the kill would open a position nobody is watching.
        gtt_cancelled, error = 0, ""
        try:
            gtt_cancelled = broker.gtt.cancel_created()
        except Exception as exc:
            error = f"could not cancel the GTT rules: {type(exc).__name__}: {exc}"
            log.error("KILL SWITCH: %s", error)
        cancelled = broker.cancel_all()
        settled = broker.wait_settled(timeout) if broker.live else True
        orders = []
        if flatten:
            # Live: from the broker's positions read now, never from the journal's belief.
            try:
                orders = broker.flatten(reason)
            except Exception as exc:
                error = "; ".join(filter(None, (error, f"could not flatten: {type(exc).__name__}: {exc}")))
                log.error("KILL SWITCH: %s", error)
            if broker.live and orders:
                settled = broker.wait_settled(timeout) and settled
        return {"halted": True, "reason": reason, "cancelled": cancelled, "gtt_cancelled": gtt_cancelled,
                "settled": settled, "error": error,
                "flatten_orders": [o.order_id for o in orders],
                "open_orders": len(broker.open_orders()),
                "positions": {key: p.qty for key, p in broker.positions.items() if p.qty}}

    def square_off(self, exchange_types: frozenset, reason: str, *, timeout: float = 10.0) -> dict:
        """``kill``'s cancel-and-flatten for some segments only, without halting (``kit.engine.square_off``).

        The caller has already closed those segments to orders that do not
        reduce a position (``RiskManager.close_for_square_off``). Live: waits
        up to ``timeout`` seconds for the cancels, then for the flattening
        fills; the broker's positions are read fresh and only ever shrunk.
        """
        broker = self.broker
        mine = [o.order_id for o in broker.open_orders() if o.exchange_type in exchange_types]
        cancelled = sum(bool(broker.cancel(order_id)) for order_id in mine)
        settled = self._settled(exchange_types, timeout)
        orders, error = [], ""
        try:
            orders = broker.flatten(reason, exchange_types=exchange_types)
        except Exception as exc:
            error = f"could not flatten: {type(exc).__name__}: {exc}"
            log.error("square-off: %s", error)
        if orders:
            settled = self._settled(exchange_types, timeout) and settled
        return {"reason": reason, "cancelled": cancelled, "settled": settled, "error": error,
                "flatten_orders": [o.order_id for o in orders],
                "positions": {key: p.qty for key, p in broker.positions.items()
                              if p.qty and key[0] in exchange_types}}

    def _settled(self, exchange_types: frozenset, timeout: float) -> bool:
        """Live: wait until no order of these segments is active. Paper orders wait for ticks: True."""
        if not self.broker.live:
            return True
        deadline = time.monotonic() + timeout
        while any(o.exchange_type in exchange_types for o in self.broker.open_orders()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
