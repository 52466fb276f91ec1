"""Pre-trade risk: every signal passes ``RiskManager.check`` before any broker sees it.

    risk = RiskManager(RiskLimits(max_qty_per_order=650))
    reason = risk.check(signal, tick, broker)   # None = accepted, else why not

``halt()`` is the kill switch: every later signal is rejected until ``resume()``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RiskLimits:
    """``None`` disables a limit."""
    max_qty_per_order: int | None = None


class RiskManager:
    def __init__(self, limits: RiskLimits | None = None):
        self.limits = limits or RiskLimits()
        self.halted = False
        self.halt_reason = ""
        self.rejections = 0

    def check(self, signal, tick, broker) -> str | None:
        reason = None
        if self.halted:
            reason = f"trading halted: {self.halt_reason}"
        elif self.limits.max_qty_per_order is not None and signal.qty > self.limits.max_qty_per_order:
            reason = f"qty {signal.qty} exceeds max_qty_per_order {self.limits.max_qty_per_order}"
        if reason is not None:
            self.rejections += 1
        return reason

    def halt(self, reason: str = "kill switch") -> None:
        self.halt_reason = reason
        self.halted = True

    def resume(self) -> None:
        self.halted = False
        self.halt_reason = ""
