"""Charges on live fills: the kit's model next to Angel One's own estimate, with the difference in view.

The live broker charges every fill by the model (``kit.core.charges``), so
its P&L is net of charges at once, as paper's is. Angel One's
``estimateCharges`` API answers for whole orders; ``estimate_table`` asks it
for the day's filled orders and puts its figure beside the model's:

    broker.charges_df()          # order_id, symbol, side, qty, avg_price, model, broker, difference

A difference means the model's rates are stale for your plan, or the broker
charges something the model leaves out (``kit.core.charges`` lists what it
does not model); override the rates (``Charges(table=...)``) to close it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.broker.order_state import LiveOrder

log = logging.getLogger("kit.broker.live")

ESTIMATE_COLUMNS = ["order_id", "symbol", "side", "qty", "avg_price", "model", "broker", "difference"]
BATCH = 50          # orders per estimateCharges request


def _request_row(order: "LiveOrder") -> dict:
    return {"product_type": order.product, "transaction_type": order.side, "quantity": str(order.filled_qty),
            "price": f"{order.avg_price:.2f}", "exchange": order.exchange, "symbol_name": order.symbol,
            "token": order.token}


def broker_estimates(client, orders: list["LiveOrder"]) -> list[float | None]:
    """Angel One's total charges for each filled order (None where its answer has none)."""
    totals: list[float | None] = []
    for start in range(0, len(orders), BATCH):
        batch = orders[start:start + BATCH]
        reply = client.estimateCharges({"orders": [_request_row(o) for o in batch]})
        if not isinstance(reply, dict) or not reply.get("status"):
            message = reply.get("message", "no reason given") if isinstance(reply, dict) else repr(reply)
            raise RuntimeError(f"estimateCharges refused by the broker: {message}")
        rows = (reply.get("data") or {}).get("charges") or []
        for i in range(len(batch)):
            summary = rows[i].get("summary", rows[i]) if i < len(rows) and isinstance(rows[i], dict) else {}
            total = summary.get("total_charges")
            totals.append(float(total) if total is not None else None)
    return totals


def estimate_table(client, orders: Iterable["LiveOrder"], model_by_order: dict[str, float]) -> "pandas.DataFrame":
    """The model's charges and the broker's estimate per filled order, and their difference (broker − model)."""
    import pandas as pd
    filled = [o for o in orders if o.filled_qty]
    broker = broker_estimates(client, filled) if filled else []
    rows = []
    for order, theirs in zip(filled, broker):
        ours = model_by_order.get(order.order_id, 0.0)
        rows.append([order.order_id, order.symbol, order.side, order.filled_qty, order.avg_price, ours, theirs,
                     None if theirs is None else theirs - ours])
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
