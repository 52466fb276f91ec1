"""The simulated exchange's matching engine: what an order does on arrival and on each batch of generated ticks.

``SimulatedExchange`` (``kit.sim.exchange``, where the rules are told under
"How the simulated exchange trades") builds one ``MatchingEngine`` as
``sim.orders.matching``. Its REST routes check a request and hand the order
here, and so does a fired GTT rule (``kit.sim.gtt``). On arrival an order is
rejected by the "exchange" (AB03), held for its trigger, or matched at the
current price (what remains of a limit rests). After each batch of generated
ticks (``on_trades``) stops trigger, resting limits fill, and GTT rules fire.
A bracket's entry, once filled, places its legs; the first leg to fill cancels
the other. Each step is pushed on the order-update socket. The books kept here
(orders, positions, trades) are what the order-book, position and RMS routes
read.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from datetime import datetime

from kit.core.market import EXCHANGE_TYPES, IST, price_divisor
from kit.core.orders import bracket_legs, stop_triggered
from kit.sim.order_socket import AB_CANCELLED, AB_COMPLETE, AB_MODIFIED, AB_OPEN, AB_REJECTED, AB_TRIGGER_PENDING
from kit.sim.orderbook import (TRIGGER_PENDING, SimOrder, SimPosition, crossed, grid_problem, leg_order, now_text,
                               stop_problem)


class MatchingEngine:
    """The simulated account's books (orders, positions, trades) and the rules that move them.

    ``lock`` guards the books and the GTT rules; methods named ``*_locked``
    expect it held. ``exchange`` is the ``SimulatedExchange`` this engine
    belongs to: its instruments, RMS check (``rms``), GTT book (``gtt``) and
    order-update socket. ``fill_chunk`` (units) caps how much of a resting
    order one tick fills, to produce partial fills.
    """

    def __init__(self, exchange, *, fill_chunk: int | None = None):
        self.exchange = exchange
        self.fill_chunk = fill_chunk
        self.lock = threading.Lock()
        self.orders: dict[str, SimOrder] = {}
        self.positions: dict[tuple[str, str, str], SimPosition] = {}     # by (token, exchange, product)
        self.trades: list[dict] = []
        self.rejections: deque[str] = deque()     # texts the next orders placed are rejected with (reject_next)
        self._resting: dict[tuple[int, str], list[SimOrder]] = {}     # open LIMIT orders waiting to be crossed
        self._pending: dict[tuple[int, str], list[SimOrder]] = {}     # stop-loss orders waiting for the trigger
        self._ids = itertools.count(1)
        self._fill_ids = itertools.count(1)

    # ------------------------------------------------------------------ orders arriving (lock held)
    def submit_locked(self, params: dict, ltp: float) -> SimOrder:
        """Book a new order at the current price ``ltp``: reject it, hold a stop for its trigger, or match it.
        A REST place and a fired GTT rule both come here."""
        key = (EXCHANGE_TYPES[params["exchange"]], str(params["symboltoken"]))
        order = SimOrder(self._new_id(), params, self.exchange.instruments.get(key))
        self.orders[order.order_id] = order
        reason = self._exchange_rejection(order, ltp)
        if reason:
            order.status, order.text = "rejected", reason
            self._push(AB_REJECTED, order)
        elif order.is_stop:
            self._hold(order)
        else:
            self._push(AB_OPEN, order)
            self._match_on_arrival(order, ltp)
        return order

    def modify_locked(self, order: SimOrder, qty: int, order_type: str, price: float, trigger: float,
                      ltp: float) -> None:
        """Apply a modify REST has accepted: a stop still waiting keeps waiting for its (new) trigger; any
        other order is matched again at ``ltp`` as if it had just arrived."""
        waiting = order.status == TRIGGER_PENDING
        order.qty, order.order_type, order.price = qty, order_type, price
        order.trigger = trigger if order.is_stop else 0.0
        order.status, order.updated = "modified", now_text()
        self._push(AB_MODIFIED, order)
        if waiting:
            order.status = TRIGGER_PENDING
        else:
            self._unrest(order)
            order.status = "open"
            self._match_on_arrival(order, ltp)

    def cancel_locked(self, order: SimOrder, ltp: float | None) -> None:
        """The user cancels ``order`` (not yet terminal). A bracket leg takes the other leg with it; a
        bracket entry that partly filled still gets its legs, for the filled units (if ``ltp`` is known)."""
        self._cancel(order, "Cancelled by user")
        if order.sibling is not None and not order.sibling.terminal:
            self._cancel(order.sibling, f"Cancelled with the other leg of bracket {order.parent_id}")
        if order.is_bracket_entry and order.filled and ltp is not None:
            self._open_legs(order, ltp)      # the part that filled keeps its exits

    def open_orders_locked(self) -> list[SimOrder]:
        """Resting and trigger-pending orders, oldest first."""
        waiting = [o for book in (self._resting, self._pending) for orders in book.values() for o in orders]
        return sorted(waiting, key=lambda o: o.order_id)

    # ------------------------------------------------------------------ ticks
    def on_trades(self, instruments) -> None:
        """Called by the simulator's loop thread after it generated ticks: trigger stops, fill what the
        prices cross, fire GTT rules."""
        gtt = self.exchange.gtt
        if not (self._resting or self._pending or gtt.waiting):
            return
        with self.lock:
            for inst in instruments:
                key = inst.key
                if key in self._pending or key in self._resting or gtt.watches(key):
                    self._on_price(key, inst.ltp / price_divisor(inst.exchange_type))

    def _on_price(self, key: tuple[int, str], ltp: float) -> None:
        for order in list(self._pending.get(key, ())):
            if order.status == TRIGGER_PENDING and stop_triggered(order.side, order.trigger, ltp):
                self._trigger(order, ltp)
        for order in list(self._resting.get(key, ())):
            if not order.terminal and crossed(order, ltp):
                left = order.qty - order.filled
                self._fill(order, min(left, self.fill_chunk or left), order.price, ltp)
                if order.terminal:
                    self._unrest(order)
        self.exchange.gtt.fire_locked(key, ltp)

    # ------------------------------------------------------------------ the rules (lock held)
    def _new_id(self) -> str:
        return f"{datetime.now(IST):%y%m%d}{next(self._ids):09d}"

    def _exchange_rejection(self, order: SimOrder, ltp: float) -> str:
        if self.rejections:
            return self.rejections.popleft()
        inst = order.instrument
        if inst is not None and order.qty % inst.lot_size:
            return f"Quantity should be a multiple of the lot size {inst.lot_size}"
        problem = grid_problem(inst, order.order_type, order.price, order.trigger)
        if not problem and order.is_stop:
            problem = stop_problem(order.side, order.order_type, order.trigger, order.price, ltp)
        return problem or self.exchange.rms.rms_rejection_locked(order, ltp if order.order_type == "MARKET" else None)

    def _hold(self, order: SimOrder) -> None:
        """A stop-loss order waits for its trigger."""
        order.status = TRIGGER_PENDING
        self._pending.setdefault(order.key, []).append(order)
        self._push(AB_TRIGGER_PENDING, order)

    def _trigger(self, order: SimOrder, ltp: float) -> None:
        """A stop-loss order's trigger is reached at ``ltp``: it becomes open and trades from that price."""
        _drop(self._pending, order)
        order.status, order.updated = "open", now_text()
        self._push(AB_OPEN, order)
        self._match_on_arrival(order, ltp)

    def _match_on_arrival(self, order: SimOrder, ltp: float) -> None:
        """Fill what is marketable now, at the current price; rest the remainder of a limit order."""
        if order.order_type in ("MARKET", "STOPLOSS_MARKET") or crossed(order, ltp):
            self._fill(order, order.qty - order.filled, ltp, ltp)
        else:
            self._resting.setdefault(order.key, []).append(order)

    def _fill(self, order: SimOrder, qty: int, price: float, ltp: float) -> None:
        fill_id = f"{next(self._fill_ids):08d}"
        order.fill(qty, price, fill_id)
        order.updated = order.fill_time
        group = (order.token, order.params["exchange"], order.params["producttype"])
        position = self.positions.get(group)
        if position is None:
            position = self.positions[group] = SimPosition(order)
        position.add(order.side, qty, price)
        self.trades.append({"exchange": order.params["exchange"], "producttype": order.params["producttype"],
                            "tradingsymbol": order.params["tradingsymbol"], "symboltoken": order.token,
                            "transactiontype": order.side, "fillprice": price, "fillsize": str(qty),
                            "orderid": order.order_id, "fillid": fill_id, "filltime": order.fill_time})
        self._push(AB_COMPLETE if order.status == "complete" else AB_OPEN, order)
        if order.status != "complete":
            return
        if order.is_bracket_entry:
            self._open_legs(order, ltp)
        elif order.sibling is not None and not order.sibling.terminal:
            self._cancel(order.sibling, f"Cancelled: the other leg of bracket {order.parent_id} filled")

    def _open_legs(self, entry: SimOrder, ltp: float) -> None:
        """A bracket's entry filled: place its target (LIMIT) and stop (STOPLOSS_MARKET) for the filled units."""
        p, inst = entry.params, entry.instrument
        legs = bracket_legs(entry.side, entry.filled, entry.avg_price, float(p["squareoff"]), float(p["stoploss"]),
                            inst.tick_size if inst else None)
        target, stop = (leg_order(self._new_id(), entry, leg) for leg in legs)
        for leg in (target, stop):
            self.orders[leg.order_id] = leg
        target.sibling, stop.sibling = stop, target
        self._push(AB_OPEN, target)
        self._hold(stop)
        if stop_triggered(stop.side, stop.trigger, ltp):
            self._trigger(stop, ltp)
        else:
            self._match_on_arrival(target, ltp)

    def _cancel(self, order: SimOrder, text: str) -> None:
        self._unrest(order)
        _drop(self._pending, order)
        order.cancelled_qty = order.qty - order.filled
        order.status, order.text, order.updated = "cancelled", text, now_text()
        self._push(AB_CANCELLED, order)

    def _unrest(self, order: SimOrder) -> None:
        _drop(self._resting, order)

    def _push(self, code: str, order: SimOrder) -> None:
        self.exchange.socket.broadcast({"user-id": self.exchange.sim.rest.credentials.client_code,
                                        "status-code": "200", "order-status": code, "error-message": "",
                                        "orderData": order.data()})


def _drop(book: dict, order: SimOrder) -> None:
    """Take ``order`` off a per-instrument list (resting or trigger-pending), if it is there."""
    orders = book.get(order.key)
    if orders and order in orders:
        orders.remove(order)
        if not orders:
            del book[order.key]
