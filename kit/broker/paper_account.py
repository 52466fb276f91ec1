"""The paper broker's margin account: what its positions and open orders block, and what it refuses.

``PaperBroker(capital=...)`` keeps a margin account (``kit.core.margin``) that
REJECTS an order, or refuses a modify, whose opening part needs more margin
than is available; ``PaperBroker.account()`` reports it. Only the part of an
order that grows the position needs margin: an exit always passes. Without a
capital there is no account and nothing is refused for margin.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from kit.core.margin import MarginAccount, margin_required, opening_qty
from kit.core.orders import counts_as_open
from kit.core.strategy import BUY, LIMIT, SELL, STOPLOSS_LIMIT, STOPLOSS_MARKET

if TYPE_CHECKING:  # pragma: no cover
    from kit.broker.book import InstrumentState
    from kit.broker.paper_book import Working
    from kit.broker.paper_costs import FillCosts
    from kit.core.orders import Order
    from kit.core.tick import Tick

__all__ = ["PaperAccount"]


def _valued_at(order: "Order", inst: "InstrumentState | None", tick: "Tick | None") -> float:
    """The price an order's margin is reckoned at: its limit, its trigger, else the last price."""
    if order.order_type == LIMIT or order.order_type == STOPLOSS_LIMIT:
        return order.limit_price
    if order.order_type == STOPLOSS_MARKET:
        return order.trigger_price
    if inst is not None and inst.last_price:
        return inst.last_price
    if tick is not None and tick.token == order.token and tick.exchange_type == order.exchange_type:
        return tick.ltp
    return 0.0


class PaperAccount:
    """The margin account over the paper book's instruments; every method expects the caller to hold
    the book's lock. ``margin_account``: the ``MarginAccount`` (None: no account).

    ``instrument_states`` is the book's (token -> exchange type -> ``InstrumentState``), ``costs``
    gives each instrument's type and strike and the product, ``pnl()`` the book's P&L (its ``net``
    counts towards what is available).
    """

    def __init__(self, capital: float | None, instrument_states: dict, costs: "FillCosts",
                 pnl: Callable[[], dict]):
        self.margin_account = MarginAccount(capital) if capital is not None else None
        self._instrument_states = instrument_states
        self._costs = costs
        self._pnl = pnl

    def _margin(self, order: "Order", side: str, qty: int, price: float) -> float:
        _, instrument_type, strike = self._costs.spec(order.token, order.exchange_type)
        return margin_required(order.exchange_type, self._costs.product, side, qty, price, instrument_type, strike)

    def blocked(self, instead_of: "Working | None" = None) -> float:
        """Margin blocked by open positions (at their average price) and by the opening part of
        every open order. ``instead_of``: an order left out (being modified)."""
        blocked = 0.0
        product = self._costs.product
        for by_exchange in self._instrument_states.values():
            for inst in by_exchange.values():
                if inst.qty:
                    _, instrument_type, strike = self._costs.spec(inst.token, inst.exchange_type)
                    blocked += margin_required(inst.exchange_type, product, BUY if inst.qty > 0 else SELL,
                                               inst.qty, inst.avg_price, instrument_type, strike)
                opened = {BUY: 0, SELL: 0}
                for working in inst.pending:
                    order = working.order
                    if order is None or working is instead_of or not counts_as_open(order):
                        continue
                    opening = opening_qty(inst.qty, opened[order.side], order.side, order.qty)
                    opened[order.side] += order.qty
                    if opening:
                        blocked += self._margin(order, order.side, opening, _valued_at(order, inst, None))
        return blocked

    def refusal(self, order: "Order", tick: "Tick | None", instead_of: "Working | None" = None) -> str:
        """Why the account refuses ``order`` ("" if it takes it, or there is none). ``instead_of``: the
        pending order ``order`` would replace (a modify)."""
        account = self.margin_account
        if account is None:
            return ""
        by_exchange = self._instrument_states.get(order.token)
        inst = by_exchange.get(order.exchange_type) if by_exchange else None
        held = inst.qty if inst is not None else 0
        same_side = (inst.open_buy if order.side == BUY else inst.open_sell) if inst is not None else 0
        if instead_of is not None and counts_as_open(instead_of.order):
            same_side -= instead_of.order.qty
        opening = opening_qty(held, same_side, order.side, order.qty)
        if not opening:
            return ""
        price = _valued_at(order, inst, tick)
        if not price:
            return (f"the margin account cannot value a {order.order_type} order in token {order.token}: "
                    "no price seen for it yet")
        need = self._margin(order, order.side, opening, price)
        return account.shortfall(need, self.blocked(instead_of), self._pnl()["net"])

    def summary(self) -> dict:
        """``{"capital", "blocked", "pnl_net", "available"}`` (see ``PaperBroker.account``)."""
        blocked = self.blocked()
        net = self._pnl()["net"]
        account = self.margin_account
        return {"capital": account.capital if account is not None else None, "blocked": blocked, "pnl_net": net,
                "available": account.available(blocked, net) if account is not None else None}
