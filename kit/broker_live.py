"""The live broker: signals become real orders through the SDK's ``SmartConnect``; fills come from order updates.

Same interface as ``kit.broker.PaperBroker`` (``on_tick``, ``submit``,
``cancel``, ``cancel_all``, ``open_orders``, ``positions``, ``position``,
``pnl``, ``orders_df`` / ``fills_df`` / ``positions_df``,
``add_fill_listener``), plus ``modify``, ``flatten``, ``reconcile`` and
``latency_summary``.

    broker = SmartApiBroker(Journal(path))                  # restores orders and positions from the journal
    broker.connect(session.client, session.feed, order_update_url, InstrumentMaster.load())
    broker.arm()                                            # LiveTrader.arm_live does this, with a confirmation
    order = broker.submit(Signal.buy(tick, qty=65), tick)   # returns at once: status PENDING
    order.order_id                                          # the kit's id, also sent as Angel One's ordertag
    broker.orders_df()                                      # PENDING -> OPEN (acknowledged) -> COMPLETE (filled)

Decisions worth knowing:

* **``submit`` never blocks on the network or the disk.** It validates the
  order against the instrument master (lot size, tick size), records it in
  memory as ``PENDING`` and queues it for the order-sender thread; it returns
  in microseconds (``latency_summary()`` measures it). The sender thread
  paces requests below Angel One's limits (20/s, 500/min, 1000/h), writes the
  order to the journal, and only then calls ``placeOrderFullResponse``.
  Nothing reaches the exchange that is not in the journal first.
* **Fills and positions come from the order-update socket**, whose updates
  carry the cumulative filled quantity and average price; each increase is a
  fill at the price it implies. Updates are matched by broker order id, or by
  ``ordertag`` (the kit's order id) when they overtake the REST reply.
* **Every change is journaled before it is applied** (``kit.journal``), on
  the sender, update or reconcile thread, never on the tick thread.
* **No blind resends.** A place request that got no answer (a timeout, a
  dropped connection) may or may not have reached the exchange. The order
  stays ``PENDING`` and the order book is read (by ``ordertag``) to find out;
  only an order still absent after ``lost_order_grace`` seconds is marked
  ``REJECTED``. A plain-text 403 rate-limit answer means "not placed", and
  only that is retried.
* **Reconciliation** reads the order book (at most once a second, Angel One's
  limit) after every (re)connect of the update socket, at start-up (restored
  orders), and every ``reconcile_interval`` seconds while orders are open,
  because updates sent while the socket was down are never replayed.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable

from .broker import (CANCELLED, COMPLETE, NO_FILLS, OPEN, REJECTED, Fill, Order,
                     PositionBook, _frame, _Instrument, _position_record)
from .instruments import EXCHANGES
from .strategy import BUY, LIMIT, MARKET, SELL, Signal

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .feed import FeedCredentials
    from .instruments import InstrumentMaster
    from .journal import Journal
    from .tick import Tick

log = logging.getLogger("kit.broker.live")

# Accepted by the broker's queue, not yet acknowledged by the exchange.
PENDING = "PENDING"
ACTIVE = (PENDING, OPEN)
TERMINAL = (COMPLETE, CANCELLED, REJECTED)

# Angel One's order statuses (``orderData.status``) in the kit's four.
_STATUS = {
    "complete": COMPLETE, "cancelled": CANCELLED, "rejected": REJECTED,
    "open": OPEN, "modified": OPEN, "open pending": OPEN, "validation pending": OPEN,
    "put order req received": OPEN, "modify pending": OPEN, "modify validation pending": OPEN,
    "modify order req received": OPEN, "trigger pending": OPEN, "cancel pending": OPEN,
    "cancel order req received": OPEN, "after market order req received": OPEN,
}
# The same by the update's "order-status" code, for statuses the table above does not know.
_STATUS_BY_CODE = {"AB01": OPEN, "AB02": CANCELLED, "AB03": REJECTED, "AB04": OPEN, "AB05": COMPLETE,
                   "AB06": OPEN, "AB07": OPEN, "AB08": OPEN, "AB09": OPEN, "AB10": OPEN, "AB11": OPEN}

# Angel One's order-API limits (place, modify and cancel share the pacing here).
ORDER_RATE_LIMITS = ((20, 1.0), (500, 60.0), (1000, 3600.0))
BOOK_MIN_INTERVAL = 1.0          # order book / positions: 1 request a second


@dataclass(slots=True)
class LiveOrder(Order):
    """``Order`` plus what the exchange adds: its order id, the trading symbol, the product."""
    broker_order_id: str = ""
    symbol: str = ""
    exchange: str = ""
    product: str = ""
    updated_ns: int = 0


LIVE_ORDER_COLUMNS = [f.name for f in dataclasses.fields(LiveOrder)]


class RatePacer:
    """Sliding-window pacing: ``wait()`` sleeps until one more request fits every window.

    Each window is widened by ``margin`` seconds: the exchange counts arrivals,
    not departures, and latency that varies from request to request could
    otherwise squeeze 21 arrivals into its second.
    """

    def __init__(self, limits=ORDER_RATE_LIMITS, *, margin: float = 0.25, monotonic=time.monotonic,
                 sleep=time.sleep):
        self.limits = tuple((count, window + margin) for count, window in limits)
        self._sent = [deque() for _ in self.limits]
        self._monotonic, self._sleep = monotonic, sleep
        self.waited_s = 0.0

    def wait(self) -> float:
        """Block until a request may go; record it; return the seconds waited."""
        waited = 0.0
        while True:
            now = self._monotonic()
            delay = 0.0
            for (count, window), sent in zip(self.limits, self._sent):
                while sent and now - sent[0] >= window:
                    sent.popleft()
                if len(sent) >= count:
                    delay = max(delay, sent[0] + window - now)
            if delay <= 0:
                for sent in self._sent:
                    sent.append(now)
                self.waited_s += waited
                return waited
            self._sleep(delay)
            waited += delay

    def penalise(self, seconds: float = 1.0) -> None:
        """After a 403 rate-limit answer: behave as if the window were full for ``seconds``."""
        now = self._monotonic()
        for (count, window), sent in zip(self.limits, self._sent):
            if window <= seconds * 2:
                sent.clear()
                sent.extend([now + seconds - window] * count)


class _Timing:
    """perf_counter_ns stamps of one order's way through the broker (0: not reached)."""
    __slots__ = ("submit", "queued", "dequeued", "journaled", "sent", "acked", "first_update", "filled")

    def __init__(self, submit: int):
        self.submit = submit
        self.queued = self.dequeued = self.journaled = self.sent = 0
        self.acked = self.first_update = self.filled = 0


def _order_record(order: LiveOrder) -> dict:
    record = dataclasses.asdict(order)
    record["client_id"] = order.order_id
    return record


def _int(value) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _rate_limited(exc: BaseException) -> bool:
    return "exceeding access rate" in str(exc)


def _never_sent(exc: BaseException) -> bool:
    """True if the request provably never left this machine (so the order cannot exist)."""
    import requests
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = str(exc)
    return isinstance(exc, requests.exceptions.ConnectionError) and (
        "NewConnectionError" in text or "Failed to establish a new connection" in text)


class SmartApiBroker(PositionBook):
    """Live execution through Angel One, with a journal; thread-safe. See the module docstring."""

    name = "smartapi"
    live = True

    def __init__(self, journal: "Journal", *, product: str = "INTRADAY", variety: str = "NORMAL",
                 duration: str = "DAY", reconcile_interval: float = 5.0, lost_order_grace: float = 5.0,
                 pacer: RatePacer | None = None, name: str = "default",
                 clock_ns: Callable[[], int] = time.time_ns):
        self.journal = journal
        self.product, self.variety, self.duration = product, variety, duration
        self.reconcile_interval = reconcile_interval
        self.lost_order_grace = lost_order_grace
        self.pacer = pacer or RatePacer()
        self.trader_name = name
        self._clock_ns = clock_ns
        # _lock guards the in-memory books and is held only briefly (the tick thread takes it).
        # _apply_lock serialises "compute, journal, apply" sequences on the order threads.
        self._lock = threading.Lock()
        self._apply_lock = threading.RLock()
        self._instruments: dict[str, dict[int, _Instrument]] = {}
        self._orders: dict[str, LiveOrder] = {}
        self._by_broker_id: dict[str, LiveOrder] = {}
        self._fills: list[Fill] = []
        self._send_state: dict[str, str] = {}      # queued | sending | unknown | sent
        self._unknown_since: dict[str, float] = {}
        self._cancel_before_send: set[str] = set()
        self._cancel_wanted: set[str] = set()      # cancels waiting for the exchange's order id
        self._timing: dict[str, _Timing] = {}
        self._fill_listeners: tuple[Callable[[Fill], object], ...] = ()
        self._prefix = "k" + secrets.token_hex(3)   # ordertag = prefix + counter: < 20 chars, unique per session
        self._count = 0
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._reconcile_wanted = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_book_call = 0.0
        self._book_lock = threading.Lock()
        self.client = None
        self.instruments: "InstrumentMaster | None" = None
        self.stream = None
        self.armed = False
        self._closed = False
        self.stats = {"placed": 0, "rejected": 0, "send_unknown": 0, "rate_limited": 0, "updates": 0,
                      "foreign_updates": 0, "reconciles": 0, "reconcile_errors": 0, "lost": 0}
        self.restored = self._restore()

    # ================================================================== start-up and shutdown
    def _restore(self) -> dict:
        """Orders, fills and positions as the journal last recorded them."""
        field_names = set(LIVE_ORDER_COLUMNS)
        for record in self.journal.orders():
            order = LiveOrder(**{k: v for k, v in record.items() if k in field_names})
            self._orders[order.order_id] = order
            if order.broker_order_id:
                self._by_broker_id[order.broker_order_id] = order
            if order.status == PENDING:
                # The intent is journaled; whether it reached the exchange is unknown until reconciled.
                self._send_state[order.order_id] = "unknown"
                self._unknown_since[order.order_id] = time.monotonic()
            self._instrument(order.token, order.exchange_type)
        positions = self._restore_fills_and_positions(self.journal)
        self._restored_ids = [oid for oid, o in self._orders.items() if o.status in ACTIVE]
        restored = {"orders": len(self._orders), "active": sum(o.status in ACTIVE for o in self._orders.values()),
                    "fills": len(self._fills), "positions": positions}
        if restored["orders"]:
            log.warning("live broker: restored %(orders)d orders (%(active)d active), %(fills)d fills and "
                        "%(positions)d positions from the journal", restored)
        return restored

    @property
    def connected(self) -> bool:
        return self.client is not None and not self._stop.is_set()

    def connect(self, client, credentials: "FeedCredentials", order_update_url: str,
                instruments: "InstrumentMaster", *, verify_tls: bool = True, heartbeat_interval: float = 10.0,
                reconnect=None) -> "SmartApiBroker":
        """Start trading through ``client`` (a logged-in ``SmartConnect``). Idempotent."""
        from .order_updates import OrderUpdateStream
        if self.connected:
            return self
        if self._closed:
            raise RuntimeError("this broker was closed (its journal too): create a new trader to trade again")
        self.client, self.instruments = client, instruments
        self._stop.clear()
        self.stream = OrderUpdateStream(order_update_url, credentials, self._on_update, reconnect=reconnect,
                                        heartbeat_interval=heartbeat_interval, verify_tls=verify_tls,
                                        name=f"kit-order-updates-{self.trader_name}")
        self.stream.on_connect = self._reconcile_wanted.set    # updates missed while down are not replayed
        self._threads = [threading.Thread(target=self._send_loop, name=f"kit-orders-{self.trader_name}", daemon=True),
                         threading.Thread(target=self._reconcile_loop, name=f"kit-reconcile-{self.trader_name}",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        self.stream.start()
        self._reconcile_wanted.set()
        return self

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the order-update socket is connected."""
        return self.stream is not None and self.stream.wait_connected(timeout)

    def close(self) -> None:
        """Stop the threads (orders still queued are cancelled, not sent) and close the journal. Final."""
        if self.stream is not None:
            self.stream.stop()
        self._stop.set()
        self._outbox.put(None)
        self._reconcile_wanted.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(10)
        self._threads = []
        self._drain_unsent("the broker was closed before this order was sent")
        self.client = None
        self._closed = True
        self.journal.close()

    def arm(self) -> None:
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    # ================================================================== the tick path
    def on_tick(self, tick: "Tick") -> tuple:
        """Mark the last price for unrealized P&L. Fills come from order updates, so never any here."""
        by_exchange = self._instruments.get(tick.token)
        if by_exchange is not None:
            inst = by_exchange.get(tick.exchange_type)
            if inst is not None:
                inst.last_price = tick.ltp
        return NO_FILLS

    # ================================================================== orders
    def submit(self, signal: Signal, tick: "Tick | None" = None) -> LiveOrder:
        """Queue ``signal`` as an order and return its copy, ``PENDING`` (or ``REJECTED`` with the reason).

        Never waits for the network or the disk. Rejected at once: not
        connected, not armed, an instrument not in the master, a quantity that
        is not a multiple of the lot size, a limit price off the tick grid.
        """
        return self._submit(signal, tick, force=False)

    def _submit(self, signal: Signal, tick, *, force: bool) -> LiveOrder:
        started = perf_counter_ns()
        inst = self.instruments.get(signal.token, signal.exchange_type) if self.instruments is not None else None
        with self._lock:
            self._count += 1
            order = LiveOrder(f"{self._prefix}{self._count:06d}", signal.token, signal.exchange_type, signal.side,
                              signal.qty, signal.order_type, signal.limit_price, PENDING, 0, 0.0, signal.reason,
                              self._clock_ns(), tick.seq if tick is not None else signal.tick_seq, signal.tag,
                              "", symbol=inst.symbol if inst else "",
                              exchange=EXCHANGES.get(signal.exchange_type, ""), product=self.product)
            order.updated_ns = order.submit_ns
            problem = self._refusal(order, inst, force)
            self._orders[order.order_id] = order
            self._instrument(order.token, order.exchange_type)
            timing = self._timing[order.order_id] = _Timing(started)
            if problem:
                order.status, order.status_message = REJECTED, problem
                self.stats["rejected"] += 1
                self._outbox.put(("record", order.order_id))   # journaled off the tick thread
            else:
                self._send_state[order.order_id] = "queued"
                self._outbox.put(("place", order.order_id))
            copy = dataclasses.replace(order)
        timing.queued = perf_counter_ns()
        if problem:
            log.warning("live order %s rejected before sending: %s", order.order_id, problem)
        return copy

    def _refusal(self, order: LiveOrder, inst, force: bool) -> str:
        if not self.connected:
            return "the live broker is not connected (start the trader first)"
        if not (self.armed or force):
            return "live trading is not armed"
        if inst is None:
            exchange = EXCHANGES.get(order.exchange_type, f"exchange type {order.exchange_type}")
            return f"token {order.token} is not in the instrument master for {exchange}"
        if order.qty % inst.lot_size:
            return f"qty {order.qty} is not a multiple of the lot size {inst.lot_size} of {inst.symbol}"
        if order.order_type == LIMIT and inst.tick_size:
            ticks = order.limit_price / inst.tick_size
            if abs(ticks - round(ticks)) > 1e-6:
                return f"limit price {order.limit_price} is not a multiple of the tick size {inst.tick_size} of {inst.symbol}"
        return ""

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> bool:
        """Ask the exchange to change an open order's limit price and/or quantity.

        Returns False if the order is unknown, no longer active, or not yet
        acknowledged by the exchange. The change shows once the exchange
        confirms it (an AB04 update).
        """
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status not in ACTIVE or not order.broker_order_id:
                return False
        self._outbox.put(("modify", order_id, {"price": price, "qty": qty}))
        return True

    def cancel(self, order_id: str) -> bool:
        """Cancel an active order. False if it is unknown or no longer active.

        An order still waiting in the send queue is never sent; one already
        at the exchange is cancelled there (the status changes on the update).
        """
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status not in ACTIVE:
                return False
            if self._send_state.get(order_id) == "queued":
                self._cancel_before_send.add(order_id)
                return True
        self._outbox.put(("cancel", order_id))
        return True

    def cancel_all(self) -> int:
        """Cancel every active order; returns how many cancels were requested."""
        with self._lock:
            active = [o.order_id for o in self._orders.values() if o.status in ACTIVE]
        return sum(self.cancel(order_id) for order_id in active)

    def flatten(self, reason: str = "flatten") -> list[LiveOrder]:
        """Send a MARKET order against every non-zero position. Works unarmed: it only reduces risk."""
        orders = []
        for position in self._snapshots():
            if position.qty:
                side = SELL if position.qty > 0 else BUY
                signal = Signal(position.token, side, abs(position.qty), MARKET, None, position.exchange_type, reason)
                orders.append(self._submit(signal, None, force=True))
        return orders

    def wait_settled(self, timeout: float = 10.0) -> bool:
        """Block until no order is PENDING or OPEN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.open_orders():
                return True
            time.sleep(0.01)
        return not self.open_orders()

    def open_orders(self) -> list[LiveOrder]:
        """Copies of the orders that are PENDING or OPEN, oldest first."""
        with self._lock:
            return [dataclasses.replace(o) for o in self._orders.values() if o.status in ACTIVE]

    def order(self, order_id: str) -> LiveOrder | None:
        with self._lock:
            order = self._orders.get(order_id)
            return dataclasses.replace(order) if order else None

    def lot_size(self, token: str, exchange_type: int) -> int | None:
        return self.instruments.lot_size(token, exchange_type) if self.instruments is not None else None

    def add_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Call ``listener(fill)`` after every fill, on the order-update (or reconcile) thread."""
        with self._lock:
            self._fill_listeners = self._fill_listeners + (listener,)

    def remove_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        with self._lock:
            self._fill_listeners = tuple(f for f in self._fill_listeners if f != listener)

    # ================================================================== the sender thread
    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None or self._stop.is_set():
                return
            try:
                kind, order_id = item[0], item[1]
                if kind == "place":
                    self._send_place(order_id)
                elif kind == "modify":
                    self._send_modify(order_id, item[2])
                elif kind == "cancel":
                    self._send_cancel(order_id)
                elif kind == "record":
                    with self._apply_lock, self._lock:
                        record = _order_record(self._orders[order_id])
                    self.journal.record("rejected_locally", order=record, payload={"reason": record["status_message"]})
            except Exception:
                log.exception("live broker: the order sender failed on %r", item)

    def _send_place(self, order_id: str) -> None:
        timing = self._timing.get(order_id)
        if timing is not None:
            timing.dequeued = perf_counter_ns()
        with self._apply_lock:
            with self._lock:
                order = self._orders[order_id]
                if order_id in self._cancel_before_send:
                    self._cancel_before_send.discard(order_id)
                    self._send_state.pop(order_id, None)
                    cancelled = dataclasses.replace(order, status=CANCELLED, updated_ns=self._clock_ns(),
                                                    status_message="cancelled before it was sent")
                else:
                    cancelled = None
                    self._send_state[order_id] = "sending"
                params = self._place_params(order)
            if cancelled is not None:
                self.journal.record("cancelled_before_send", order=_order_record(cancelled))
                self._commit_order(cancelled)
                return
            # The write-ahead rule: the order is durable before the exchange can know of it.
            self.journal.record("intent", order=_order_record(order), payload=params)
        if timing is not None:
            timing.journaled = perf_counter_ns()
        for attempt in range(5):
            self.pacer.wait()
            if timing is not None:
                timing.sent = perf_counter_ns()
            try:
                response = self.client.placeOrderFullResponse(dict(params))
            except Exception as exc:
                if _rate_limited(exc):
                    self.stats["rate_limited"] += 1
                    log.warning("live order %s: rate limited by the broker; retrying", order_id)
                    self.pacer.penalise(1.0)
                    continue
                if _never_sent(exc):
                    self._resolve_send(order_id, None, f"could not reach the broker: {type(exc).__name__}")
                    return
                self._send_unknown(order_id, f"{type(exc).__name__}: {exc}")
                return
            if timing is not None:
                timing.acked = perf_counter_ns()
            data = response.get("data") if isinstance(response, dict) else None
            if isinstance(response, dict) and response.get("status") and isinstance(data, dict) and data.get("orderid"):
                self._resolve_send(order_id, str(data["orderid"]), "")
            else:
                message = response.get("message", "no reason given") if isinstance(response, dict) else repr(response)
                code = response.get("errorcode", "") if isinstance(response, dict) else ""
                self._resolve_send(order_id, None, f"{message} ({code})" if code else message)
            return
        self._resolve_send(order_id, None, "rate limited by the broker five times in a row")

    def _place_params(self, order: LiveOrder) -> dict:
        params = {"variety": self.variety, "tradingsymbol": order.symbol, "symboltoken": order.token,
                  "transactiontype": order.side, "exchange": order.exchange, "ordertype": order.order_type,
                  "producttype": order.product, "duration": self.duration, "quantity": str(order.qty),
                  "price": "0", "ordertag": order.order_id}
        if order.order_type == LIMIT:
            params["price"] = f"{order.limit_price:.2f}"
        return params

    def _resolve_send(self, order_id: str, broker_order_id: str | None, problem: str) -> None:
        """The place request was answered: acknowledged with an order id, or refused."""
        with self._apply_lock:
            with self._lock:
                order = self._orders[order_id]
                self._send_state[order_id] = "sent"
                self._unknown_since.pop(order_id, None)
                new = dataclasses.replace(order, updated_ns=self._clock_ns())
                if broker_order_id:
                    new.broker_order_id = broker_order_id
                    if new.status == PENDING:   # an update may already have moved it on
                        new.status = OPEN
                elif new.status == PENDING:
                    new.status, new.status_message = REJECTED, problem
            kind = "ack" if broker_order_id else "refused"
            self.journal.record(kind, order=_order_record(new), payload={"orderid": broker_order_id, "problem": problem})
            self._commit_order(new)
        if broker_order_id:
            self.stats["placed"] += 1
        else:
            self.stats["rejected"] += 1
            log.warning("live order %s refused: %s", order_id, problem)

    def _send_unknown(self, order_id: str, problem: str) -> None:
        """No answer to the place request: the order may exist. Keep it PENDING and ask the order book."""
        with self._apply_lock:
            with self._lock:
                order = self._orders[order_id]
                self._send_state[order_id] = "unknown"
                self._unknown_since[order_id] = time.monotonic()
                new = dataclasses.replace(order, updated_ns=self._clock_ns(),
                                          status_message=f"no answer to the place request ({problem}); "
                                                         "checking the order book")
            self.journal.record("send_unknown", order=_order_record(new), payload={"problem": problem})
            self._commit_order(new)
        self.stats["send_unknown"] += 1
        log.error("live order %s: %s; not resending, reconciling with the order book", order_id, problem)
        self._reconcile_wanted.set()

    def _send_modify(self, order_id: str, change: dict) -> None:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status not in ACTIVE or not order.broker_order_id:
                return
            qty = change["qty"] if change["qty"] is not None else order.qty
            price = change["price"] if change["price"] is not None else order.limit_price
            params = {"variety": self.variety, "orderid": order.broker_order_id, "ordertype": order.order_type,
                      "producttype": order.product, "duration": self.duration, "quantity": str(qty),
                      "price": f"{price:.2f}" if price is not None else "0", "tradingsymbol": order.symbol,
                      "symboltoken": order.token, "exchange": order.exchange}
        self.journal.record("modify_intent", client_id=order_id, payload=params)
        self._call_order_api(order_id, "modify", lambda: self.client.modifyOrder(dict(params)))

    def _send_cancel(self, order_id: str) -> None:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status not in ACTIVE:
                return
            if not order.broker_order_id:
                # Sent without an answer yet: cancel as soon as the order book names it.
                self._cancel_wanted.add(order_id)
                return
            broker_order_id = order.broker_order_id
        self.journal.record("cancel_intent", client_id=order_id, payload={"orderid": broker_order_id})
        self._call_order_api(order_id, "cancel", lambda: self.client.cancelOrder(broker_order_id, self.variety))

    def _call_order_api(self, order_id: str, what: str, call) -> None:
        for _ in range(5):
            self.pacer.wait()
            try:
                response = call()
            except Exception as exc:
                if _rate_limited(exc):
                    self.stats["rate_limited"] += 1
                    self.pacer.penalise(1.0)
                    continue
                log.error("live order %s: %s request failed: %s", order_id, what, exc)
                self._reconcile_wanted.set()
                return
            if not (isinstance(response, dict) and response.get("status")):
                message = response.get("message") if isinstance(response, dict) else repr(response)
                log.warning("live order %s: %s refused: %s", order_id, what, message)
                self.journal.record(f"{what}_refused", client_id=order_id, payload={"message": message})
                self._reconcile_wanted.set()
            return

    def _drain_unsent(self, why: str) -> None:
        """Orders still in the send queue when the broker stops: never sent, so cancelled, and journaled."""
        while True:
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                return
            if item is None:
                continue
            if item[0] == "record":
                with self._lock:
                    record = _order_record(self._orders[item[1]])
                self.journal.record("rejected_locally", order=record, payload={"reason": record["status_message"]})
            elif item[0] == "place":
                with self._lock:
                    order = self._orders[item[1]]
                    new = dataclasses.replace(order, status=CANCELLED, status_message=why,
                                              updated_ns=self._clock_ns())
                    self._send_state.pop(item[1], None)
                self.journal.record("cancelled_before_send", order=_order_record(new))
                self._commit_order(new)

    # ================================================================== updates from the exchange
    def _on_update(self, message: dict) -> None:
        """One order-update frame (on the stream's thread)."""
        data = message.get("orderData")
        if message.get("order-status") == "AB00" or not isinstance(data, dict) or not data.get("orderid"):
            return
        self.stats["updates"] += 1
        self._apply_row(data, "update", message.get("order-status", ""))

    def _find(self, data: dict) -> LiveOrder | None:
        order = self._by_broker_id.get(str(data.get("orderid", "")))
        if order is None:
            tag = data.get("ordertag") or ""
            order = self._orders.get(tag) if tag else None
        return order

    def _apply_row(self, data: dict, source: str, code: str = "") -> bool:
        """Apply one order-book row (from an update or the order book): journal first, then memory."""
        fill = None
        with self._apply_lock:
            with self._lock:
                order = self._find(data)
                if order is None:
                    self.stats["foreign_updates"] += 1
                    return False
                new = self._transition(order, data, code)
                if new is None:
                    return False
                if new.filled_qty > order.filled_qty:
                    qty = new.filled_qty - order.filled_qty
                    price = (new.avg_price * new.filled_qty - order.avg_price * order.filled_qty) / qty
                    fill = Fill(order.order_id, order.token, order.exchange_type, order.side, qty,
                                round(price, 6), self._clock_ns(), order.tick_seq)
                    current = self._instrument(order.token, order.exchange_type)
                    moved = current.after_fill(order.side, qty, fill.price)
                if order.order_id in self._unknown_since:
                    self._unknown_since.pop(order.order_id, None)
                    self._send_state[order.order_id] = "sent"
            self.journal.record(source, order=_order_record(new), payload=data,
                                fill=dataclasses.asdict(fill) if fill else None,
                                position=_position_record(moved) if fill else None)
            with self._lock:
                self._commit_locked(new)
                if fill is not None:
                    current.qty, current.avg_price, current.realized_pnl = moved.qty, moved.avg_price, moved.realized_pnl
                    current.has_filled = True
                    self._fills.append(fill)
                listeners = self._fill_listeners
        timing = self._timing.get(new.order_id)
        if timing is not None:
            now = perf_counter_ns()
            if not timing.first_update and source == "update":
                timing.first_update = now
            if new.status == COMPLETE and not timing.filled:
                timing.filled = now
        if fill is not None:
            for listener in listeners:
                try:
                    listener(fill)
                except Exception:
                    log.exception("fill listener %r failed on %s", listener, fill)
        return True

    def _transition(self, order: LiveOrder, data: dict, code: str) -> LiveOrder | None:
        """The order after this row, or None if the row tells nothing new (stale or repeated)."""
        new = dataclasses.replace(order)
        if not new.broker_order_id and data.get("orderid"):
            new.broker_order_id = str(data["orderid"])
        raw_status = str(data.get("status") or data.get("orderstatus") or "").lower()
        status = _STATUS.get(raw_status) or _STATUS_BY_CODE.get(code)
        if status is None:
            log.warning("live order %s: unknown status %r (%s); keeping %s", order.order_id, raw_status, code,
                        order.status)
            status = order.status
        filled = _int(data.get("filledshares")) if str(data.get("filledshares", "")).strip() else \
            max(0, _int(data.get("quantity")) - _int(data.get("unfilledshares")))
        if filled > new.filled_qty:
            new.filled_qty, new.avg_price = filled, _float(data.get("averageprice"))
        if order.status not in TERMINAL:
            if status in (OPEN, PENDING) and (raw_status == "modified" or code == "AB04"):
                new.qty = _int(data.get("quantity")) or new.qty
                if new.order_type == LIMIT and _float(data.get("price")):
                    new.limit_price = _float(data.get("price"))
            new.status = status
        if data.get("text") and new.status in (REJECTED, CANCELLED):
            new.status_message = str(data["text"])
        same = (new.status == order.status and new.filled_qty == order.filled_qty and new.qty == order.qty
                and new.limit_price == order.limit_price and new.broker_order_id == order.broker_order_id
                and new.status_message == order.status_message)
        if same:
            return None
        new.updated_ns = self._clock_ns()
        return new

    def _commit_order(self, new: LiveOrder) -> None:
        with self._lock:
            self._commit_locked(new)

    def _commit_locked(self, new: LiveOrder) -> None:
        self._orders[new.order_id] = new
        if new.broker_order_id:
            self._by_broker_id[new.broker_order_id] = new
        if new.order_id in self._cancel_wanted and (new.broker_order_id or new.status not in ACTIVE):
            self._cancel_wanted.discard(new.order_id)
            if new.status in ACTIVE:
                self._outbox.put(("cancel", new.order_id))

    # ================================================================== reconciliation
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            wanted = self._reconcile_wanted.wait(self.reconcile_interval)
            self._reconcile_wanted.clear()
            if self._stop.is_set():
                return
            with self._lock:
                unsettled = any(o.status in ACTIVE for o in self._orders.values())
            if wanted or unsettled:
                try:
                    self.reconcile()
                except Exception as exc:
                    self.stats["reconcile_errors"] += 1
                    log.warning("live broker: reconcile failed (%s: %s); retrying", type(exc).__name__, exc)
                    self._stop.wait(1.0)
                    self._reconcile_wanted.set()
            with self._lock:
                unknown = bool(self._unknown_since)
            if unknown:
                self._stop.wait(min(1.0, self.lost_order_grace))
                self._reconcile_wanted.set()

    def _paced_book_call(self, call):
        with self._book_lock:
            wait = self._last_book_call + BOOK_MIN_INTERVAL - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                return call()
            finally:
                self._last_book_call = time.monotonic()

    def reconcile(self) -> dict:
        """Read the order book and apply what the updates did not bring. Returns what changed.

        Orders the journal has as PENDING with an unknown send outcome that
        the book does not list ``lost_order_grace`` seconds after the attempt
        are marked REJECTED: they never reached the exchange.
        """
        fetched_at = time.monotonic()
        response = self._paced_book_call(self.client.orderBook)
        if not isinstance(response, dict) or not response.get("status"):
            raise RuntimeError(f"order book refused: {response.get('message') if isinstance(response, dict) else response!r}")
        rows = response.get("data") or []
        changed = sum(self._apply_row(row, "orderbook") for row in rows if isinstance(row, dict))
        listed_tags = {row.get("ordertag") for row in rows if isinstance(row, dict)}
        listed_ids = {str(row.get("orderid")) for row in rows if isinstance(row, dict)}
        lost = 0
        with self._lock:
            # Judged by when the book was read, not by now: an order sent meanwhile is not in this copy.
            candidates = [oid for oid, since in self._unknown_since.items()
                          if fetched_at - since >= self.lost_order_grace and oid not in listed_tags]
            # Restored orders acknowledged in an earlier session but absent from the book: expired.
            vanished = [oid for oid in self._restored_ids
                        if self._orders[oid].status == OPEN and self._orders[oid].broker_order_id not in listed_ids]
        for order_id in candidates:
            lost += self._mark_lost(order_id, "not in the broker's order book: it never reached the exchange")
        for order_id in vanished:
            lost += self._mark_lost(order_id, "no longer in the broker's order book (expired)", CANCELLED)
        self.stats["reconciles"] += 1
        return {"rows": len(rows), "changed": changed, "lost": lost}

    def _mark_lost(self, order_id: str, why: str, status: str = REJECTED) -> int:
        with self._apply_lock:
            with self._lock:
                order = self._orders[order_id]
                if order.status not in ACTIVE:
                    return 0
                new = dataclasses.replace(order, status=status, status_message=why, updated_ns=self._clock_ns())
                self._unknown_since.pop(order_id, None)
                self._send_state[order_id] = "sent"
            self.journal.record("lost", order=_order_record(new), payload={"why": why})
            self._commit_order(new)
        self.stats["lost"] += 1
        log.error("live order %s: %s", order_id, why)
        return 1

    def broker_positions(self) -> "pandas.DataFrame":
        """Angel One's own positions (``getPosition``), as a DataFrame with numeric ``netqty``."""
        import pandas as pd
        response = self._paced_book_call(self.client.position)
        rows = (response or {}).get("data") or []
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame["netqty"] = frame["netqty"].astype(int)
        return frame

    # ================================================================== positions and P&L
    def _instrument(self, token: str, exchange_type: int) -> _Instrument:
        by_exchange = self._instruments.setdefault(token, {})
        inst = by_exchange.get(exchange_type)
        if inst is None:
            inst = by_exchange[exchange_type] = _Instrument(token, exchange_type)
        return inst

    def orders_df(self) -> "pandas.DataFrame":
        """One row per order, columns ``LIVE_ORDER_COLUMNS``."""
        with self._lock:
            rows = [dataclasses.astuple(o) for o in self._orders.values()]
        return _frame(rows, LIVE_ORDER_COLUMNS)

    # ================================================================== measurements
    def latency_summary(self, unit: str = "us") -> "pandas.DataFrame":
        """p50 / p90 / p99 / max per stage of the orders this session sent.

        submit_call     inside ``submit()``, on the tick thread
        queue           ``submit()`` returned -> sender thread picked it up
        journal         the intent's durable commit (fsync)
        rest            ``placeOrderFullResponse`` round trip
        submit_to_ack   ``submit()`` -> the exchange's order id
        submit_to_update ``submit()`` -> the first order-update frame for it
        submit_to_fill  ``submit()`` -> the update that completed it
        """
        import numpy as np
        import pandas as pd
        scale = {"ns": 1, "us": 1e3, "ms": 1e6}[unit]
        spans = {"submit_call": ("submit", "queued"), "queue": ("queued", "dequeued"),
                 "journal": ("dequeued", "journaled"), "rest": ("sent", "acked"),
                 "submit_to_ack": ("submit", "acked"), "submit_to_update": ("submit", "first_update"),
                 "submit_to_fill": ("submit", "filled")}
        timings = list(self._timing.values())
        rows = []
        for stage, (a, b) in spans.items():
            values = np.array([getattr(t, b) - getattr(t, a) for t in timings if getattr(t, a) and getattr(t, b)],
                              dtype=np.int64)
            if values.size:
                p50, p90, p99 = np.percentile(values, (50, 90, 99))
                rows.append({"stage": stage, "orders": int(values.size), f"p50_{unit}": p50 / scale,
                             f"p90_{unit}": p90 / scale, f"p99_{unit}": p99 / scale,
                             f"max_{unit}": values.max() / scale})
        return pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<SmartApiBroker {state} {'ARMED' if self.armed else 'unarmed'} orders={len(self._orders)}>"
