"""The live margin check: Angel One's own figures before an opening order (``TraderConfig(margin_check=True)``).

For each order that grows a position (``kit.core.margin.opening_qty``; exits
and flattening orders are never held back), the sender thread asks
``getMarginApi`` what the opening part needs and compares it with the
account's available funds (``getRMS`` ``net``). ``getRMS`` is limited to about
two requests a second, so its answer is reused for ``FUNDS_FRESH_S`` and
lowered by what each order passed since needs; the exchange's own RMS check
stays the last word. A check that cannot be made refuses the order: it was
asked for, and sending blind is not it.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from kit.core.margin import opening_qty
from kit.core.strategy import BUY

if TYPE_CHECKING:  # pragma: no cover
    from kit.broker.order_state import LiveBook

FUNDS_FRESH_S = 0.5


class MarginCheck:
    """``shortfall(order_id)``: why the account cannot carry a queued order ("" if it can)."""

    def __init__(self, book: "LiveBook", *, clock=time.monotonic):
        self.book = book
        self._clock = clock
        self._lock = threading.Lock()
        self._funds: tuple[float, float] | None = None       # (when read, available rupees since)

    def _available(self) -> float:
        with self._lock:
            if self._funds is not None and self._clock() - self._funds[0] < FUNDS_FRESH_S:
                return self._funds[1]
        reply = self.book.client.rmsLimit()
        available = float(reply["data"]["net"])
        with self._lock:
            self._funds = (self._clock(), available)
        return available

    def _spend(self, need: float) -> None:
        with self._lock:
            if self._funds is not None:
                self._funds = (self._funds[0], self._funds[1] - need)

    def shortfall(self, order_id: str) -> str:
        book = self.book
        with book.lock:
            order = book.orders[order_id]
            if order_id in book.force or book.send_state.get(order_id) != "queued":
                return ""
            inst = book.instrument(order.token, order.exchange_type)
            # This order's own units are already counted as open: what else is open on its side.
            same_side = (inst.open_buy if order.side == BUY else inst.open_sell) - (order.qty - order.filled_qty)
            opening = opening_qty(inst.qty, max(0, same_side), order.side, order.qty)
            price = order.limit_price or order.trigger_price or inst.last_price
        if not opening:
            return ""
        request = {"positions": [{"exchange": order.exchange, "qty": opening, "price": price,
                                  "productType": order.product, "token": order.token, "tradeType": order.side,
                                  "orderType": order.order_type}]}
        try:
            need = float(book.client.getMarginApi(request)["data"]["totalMarginRequired"])
            available = self._available()
        except Exception as exc:
            return f"not sent: the margin check could not be made ({type(exc).__name__}: {exc})"
        book.stats["margin_checks"] += 1
        if need > available:
            book.stats["margin_refused"] += 1
            return (f"insufficient margin: Angel One's margin API says the order needs ₹{need:,.2f}, "
                    f"₹{available:,.2f} is available")
        self._spend(need)
        return ""
