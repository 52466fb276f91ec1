"""The margin an order needs, and an account that refuses what it cannot carry.

Used where the broker's own answer is not available: the paper broker's
cash-and-margin account (``PaperBroker(capital=...)``) and the simulator's
margin API (``getMarginApi``, ``getRMS``), so that both refuse the same orders.
A live trader asks Angel One itself (``SmartApiBroker(margin_check=True)``).

The rates are a plain approximation, not SPAN: a real NFO margin depends on
the day's SPAN file and on the whole portfolio. They are right in kind and
roughly right in size, which is what a paper account needs to refuse an order
a real account could never carry:

* cash (NSE, BSE): INTRADAY 20 % of the order value (5× leverage), DELIVERY 100 %;
* option buys: the premium, in full;
* option sells and futures: ``FNO_MARGIN`` (15 %) of the notional, the
  strike (options) or the price (futures) × quantity; MCX ``MCX_MARGIN`` (10 %), CDS 5 %.

An order needs margin only for the part that grows the position (held plus
open orders the same way): an exit frees margin, it never needs any.
"""
from __future__ import annotations

from dataclasses import dataclass

from kit.core.market import BSE_CM, CDE_FO, MCX_FO, NSE_CM

INTRADAY_CASH_MARGIN = 0.20
FNO_MARGIN = 0.15
MCX_MARGIN = 0.10
CDS_MARGIN = 0.05


def margin_required(exchange_type: int, product: str, side: str, qty: int, price: float,
                    instrument_type: str = "", strike: float = 0.0) -> float:
    """Rupees blocked by ``qty`` units opened at ``price`` (see the module docstring)."""
    qty = abs(qty)
    if exchange_type in (NSE_CM, BSE_CM):
        return qty * price * (1.0 if product == "DELIVERY" else INTRADAY_CASH_MARGIN)
    if instrument_type.startswith("OPT") and side == "BUY":
        return qty * price
    rate = MCX_MARGIN if exchange_type == MCX_FO else CDS_MARGIN if exchange_type == CDE_FO else FNO_MARGIN
    notional = (strike if instrument_type.startswith("OPT") and strike else price) * qty
    return notional * rate


def opening_qty(position: int, open_same_side: int, side: str, qty: int) -> int:
    """How much of an order of ``qty`` grows the position (signed ``position`` plus the units already open
    on the order's side, ``open_same_side``, which would fill first)."""
    signed = position + (open_same_side if side == "BUY" else -open_same_side)
    after = signed + (qty if side == "BUY" else -qty)
    return max(0, abs(after) - abs(signed)) if after * signed > 0 else abs(after)


@dataclass
class MarginAccount:
    """Starting capital, and what is left of it for a new order.

    ``available(used, pnl)``: capital + P&L (net of charges) − margin already
    blocked. ``shortfall`` says why an order is refused, or "".
    """
    capital: float

    def __post_init__(self):
        if not isinstance(self.capital, (int, float)) or isinstance(self.capital, bool) or not self.capital > 0:
            raise ValueError(f"capital must be a positive amount of rupees, not {self.capital!r}")

    def available(self, used: float, pnl: float = 0.0) -> float:
        return self.capital + pnl - used

    def shortfall(self, need: float, used: float, pnl: float = 0.0) -> str:
        available = self.available(used, pnl)
        if need <= available + 1e-9:
            return ""
        return (f"insufficient margin: the order needs ₹{need:,.2f}, the account has ₹{available:,.2f} available "
                f"(capital ₹{self.capital:,.2f}, P&L ₹{pnl:,.2f}, blocked ₹{used:,.2f})")
