"""The live broker: signals become real orders through the SDK's ``SmartConnect``; fills come from order updates.

Same interface as ``kit.broker.paper.PaperBroker`` (``on_tick``, ``submit``,
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
* **Every change is journaled before it is applied** (``kit.store.journal``), on
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
import operator
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable

from kit.broker.book import InstrumentState, PositionBook, frame, position_record, restore_fills_and_positions
from kit.core.orders import ACTIVE, CANCELLED, COMPLETE, NO_FILLS, OPEN, PENDING, REJECTED, TERMINAL, Fill, Order
from kit.broker.gate import TradingGate
from kit.core.listeners import Listeners
from kit.core.market import EXCHANGES, EXCHANGE_TYPES, today_ist
from kit.broker.rules import DEFAULT_PRICE_COLLAR
from kit.core.ratelimit import EXCHANGE_ORDER_LIMITS, RateLimiter
from kit.core.strategy import BUY, LIMIT, MARKET, SELL, Signal

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.feed.live import FeedCredentials
    from kit.angel.instruments import InstrumentMaster
    from kit.store.journal import Journal
    from kit.core.tick import Tick

log = logging.getLogger(__name__)

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

BOOK_MIN_INTERVAL = 1.0          # order book / positions: 1 request a second
MAX_QUEUED_ORDERS = 100          # orders waiting for the sender; beyond it a signal is refused


@dataclass(slots=True)
class LiveOrder(Order):
    """``Order`` plus what the exchange adds: its order id, the trading symbol, the product."""
    broker_order_id: str = ""
    symbol: str = ""
    exchange: str = ""
    product: str = ""
    updated_ns: int = 0


LIVE_ORDER_COLUMNS = [f.name for f in dataclasses.fields(LiveOrder)]


class _Timing:
    """perf_counter_ns stamps of one order's way through the broker (0: not reached)."""
    __slots__ = ("submit", "queued", "dequeued", "journaled", "sent", "acked", "first_update", "filled")

    def __init__(self, submit: int):
        self.submit = submit
        self.queued = self.dequeued = self.journaled = self.sent = 0
        self.acked = self.first_update = self.filled = 0


_live_order_row = operator.attrgetter(*LIVE_ORDER_COLUMNS)


def _order_record(order: LiveOrder) -> dict:
    """The journal's ``order`` row (a flat dataclass: attrgetter, not asdict's deep copy)."""
    record = dict(zip(LIVE_ORDER_COLUMNS, _live_order_row(order)))
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
                 pacer: RateLimiter | None = None, name: str = "default",
                 clock_ns: Callable[[], int] = time.time_ns, gate: TradingGate | None = None,
                 price_collar: float | None = DEFAULT_PRICE_COLLAR, max_queued: int = MAX_QUEUED_ORDERS,
                 position_check_interval: float = 15.0):
        self.journal = journal
        # Stop, disarm, the kill switch and a failing journal all close this one gate; the sender
        # passes through it immediately before every place or modify request.
        self.gate = gate or TradingGate()
        if "disarmed" not in self.gate.reasons:
            self.gate.close("disarmed", "live trading is not armed")
        self.price_collar = price_collar
        self.max_queued = max_queued
        self.position_check_interval = position_check_interval
        self.product, self.variety, self.duration = product, variety, duration
        self.reconcile_interval = reconcile_interval
        self.lost_order_grace = lost_order_grace
        # Widened windows: the exchange counts arrivals, and latency varies from request to request.
        self.pacer = pacer or RateLimiter(EXCHANGE_ORDER_LIMITS, margin=0.25)
        self.trader_name = name
        self._clock_ns = clock_ns
        # _lock guards the in-memory books and is held only briefly (the tick thread takes it).
        # _apply_lock serialises "compute, journal, apply" sequences on the order threads.
        self._lock = threading.Lock()
        self._apply_lock = threading.RLock()
        self._instruments: dict[str, dict[int, InstrumentState]] = {}
        self._orders: dict[str, LiveOrder] = {}
        self._by_broker_id: dict[str, LiveOrder] = {}
        self._fills: list[Fill] = []
        self._send_state: dict[str, str] = {}      # queued | sending | unknown | sent
        self._queued = 0                            # place requests waiting for the sender
        self._force: set[str] = set()               # flattening orders: allowed through a halt
        self._unknown_since: dict[str, float] = {}
        self._cancel_before_send: set[str] = set()
        self._cancel_wanted: set[str] = set()      # cancels waiting for the exchange's order id
        self._timing: dict[str, _Timing] = {}
        self._fill_listeners = Listeners()
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
        self._closed = False
        self.stats = {"placed": 0, "rejected": 0, "send_unknown": 0, "rate_limited": 0, "updates": 0,
                      "foreign_updates": 0, "reconciles": 0, "reconcile_errors": 0, "lost": 0,
                      "cancelled_unsent": 0, "journal_errors": 0, "position_checks": 0,
                      "position_differences": 0, "bad_marks": 0, "queue_full": 0}
        self.journal_error = ""
        self.bad_marks = 0
        # What the last position check found different between the kit's book and the broker's.
        self._differences: deque[dict] = deque(maxlen=1000)
        self.positions_checked_at: float | None = None
        self._last_position_check = 0.0
        self._position_check_wanted = threading.Event()
        self.restored = self._restore()
        self.gate.add_close_listener(self._gate_closed)

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
            self._account_open(None, order)
        positions = restore_fills_and_positions(self.journal, self._fills, self._instrument)
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
        """Start trading through ``client`` (a logged-in ``SmartConnect``). Idempotent.

        Before it returns, the broker's positions are read and the kit's book
        is made to agree with them (``check_positions``): a journal from an
        earlier day, or one the broker disagrees with, never trades on its
        own belief. Until that check succeeds the gate stays closed.
        """
        from kit.angel.order_updates import OrderUpdateStream
        if self.connected:
            return self
        if self._closed:
            raise RuntimeError("this broker was closed (its journal too): create a new trader to trade again")
        self.client, self.instruments = client, instruments
        self._stop.clear()
        self.gate.close("unreconciled", "the kit's positions have not yet been checked against the broker's")
        stale = self.journal.trading_day != today_ist()
        if stale:
            log.warning("live broker: the journal %s was started on %s, not today: its positions are replaced "
                        "by the broker's", self.journal.path, self.journal.trading_day)
        try:
            self.check_positions(adopt_realized=stale)
        except Exception as exc:
            log.error("live broker: could not read the broker's positions (%s: %s); trading stays closed until "
                      "a check succeeds", type(exc).__name__, exc)
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
        self.gate.close("closed", "the live broker was closed")
        if self.stream is not None:
            self.stream.stop()
        self._stop.set()
        self._outbox.put(None)
        self._reconcile_wanted.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(10)
        self._threads = []
        self._cancel_queued("not sent: the live broker was closed")
        self.client = None
        self._closed = True
        self.journal.close()

    @property
    def armed(self) -> bool:
        return not self.gate.is_closed("disarmed")

    def arm(self) -> None:
        self.gate.open("disarmed")

    def disarm(self) -> None:
        """Refuse new orders; those queued and not yet sent are cancelled before this returns."""
        self.gate.close("disarmed", "live trading is not armed")

    def _gate_closed(self, name: str, reason: str) -> None:
        """The gate closed: orders waiting for the sender are cancelled now, not sent later."""
        self._cancel_queued(f"not sent: {reason}", keep_flattening=name != "stopped" and name != "closed")

    # ================================================================== the tick path
    def on_tick(self, tick: "Tick") -> tuple:
        """Mark the last price for unrealized P&L (if plausible). Fills come from order updates."""
        by_exchange = self._instruments.get(tick.token)
        inst = by_exchange.get(tick.exchange_type) if by_exchange is not None else None
        if inst is None:
            with self._lock:
                inst = self._instrument(tick.token, tick.exchange_type)
        if not inst.mark(tick):
            self.bad_marks += 1
        return NO_FILLS

    # ================================================================== orders
    def submit(self, signal: Signal, tick: "Tick | None" = None) -> LiveOrder:
        """Queue ``signal`` as an order and return its copy, ``PENDING`` (or ``REJECTED`` with the reason).

        Never waits for the network or the disk. Rejected at once: not
        connected, the gate closed (not armed, stopped, halted, journal
        failing), a full send queue, a malformed order, an instrument not in
        the master, an odd lot, a limit price off the tick grid or outside
        the circuit band (or the collar around the last price).
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
            problem = self._refusal(order, tick, force)
            self._orders[order.order_id] = order
            self._instrument(order.token, order.exchange_type)
            timing = self._timing[order.order_id] = _Timing(started)
            if problem:
                order.status, order.status_message = REJECTED, problem
                self.stats["rejected"] += 1
                self._outbox.put(("record", order.order_id))   # journaled off the tick thread
            else:
                self._send_state[order.order_id] = "queued"
                self._queued += 1
                if force:
                    self._force.add(order.order_id)
                self._account_open(None, order)
                self._outbox.put(("place", order.order_id))
            copy = dataclasses.replace(order)
        timing.queued = perf_counter_ns()
        return copy

    def _refusal(self, order: LiveOrder, tick, force: bool) -> str:
        """Why ``order`` is refused at once ("" if it is queued); the caller holds the lock."""
        if not self.connected:
            return "the live broker is not connected (start the trader first)"
        if not force:
            closed = self.gate.refusal()
            if closed:
                return closed
        if self._queued >= self.max_queued:
            self.stats["queue_full"] += 1
            return f"the send queue is full ({self._queued} orders waiting for the exchange's rate limit)"
        return self._admission_problem(order.token, order.exchange_type, order.side, order.qty, order.order_type,
                                       order.limit_price, tick)

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> bool:
        """Ask the exchange to change an open order's limit price and/or quantity.

        Returns False if the order is unknown, no longer active, not yet
        acknowledged by the exchange, or the change is malformed or outside
        the price band. The change shows once the exchange confirms it (an
        AB04 update).
        """
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.status not in ACTIVE or not order.broker_order_id:
                return False
            problem = self._admission_problem(order.token, order.exchange_type, order.side,
                                              qty if qty is not None else order.qty, order.order_type,
                                              price if price is not None else order.limit_price, None)
        if problem:
            log.warning("live order %s: modify refused: %s", order_id, problem)
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
        """Close every position of this trader's product, as the broker reports it now.

        The broker's positions are read fresh (``check_positions``) and each
        non-zero net quantity gets a MARKET order of the same size the other
        way: an order that can only shrink a position, never open one, even
        if the journal believed otherwise. Works unarmed and through a halt.
        Raises if the positions cannot be read: flattening a belief is how a
        kill switch opens a position.
        """
        self.check_positions()
        with self._lock:
            in_flight = {(i.exchange_type, i.token) for by in self._instruments.values() for i in by.values()
                         if i.open_buy or i.open_sell}
        orders = []
        for position in self._snapshots():
            if position.qty and (position.exchange_type, position.token) in in_flight:
                # An order of ours may still fill there: a flattening order now could overshoot.
                log.error("flatten: %s (exchange type %d) left as it is: an order there is still active",
                          position.token, position.exchange_type)
            elif position.qty:
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

    def add_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Call ``listener(fill)`` after every fill, on the order-update (or reconcile) thread."""
        self._fill_listeners.add(listener)

    def remove_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        self._fill_listeners.remove(listener)

    @property
    def queued(self) -> int:
        """Place requests waiting for the sender thread."""
        return self._queued

    # ================================================================== the journal
    def _journal(self, kind: str, **changes) -> bool:
        """Record one change; on failure halt trading (the gate closes) and return False."""
        try:
            self.journal.record(kind, **changes)
            return True
        except Exception as exc:
            self.stats["journal_errors"] += 1
            self.journal_error = f"{type(exc).__name__}: {exc}"
            log.error("live broker: the journal could not record %r (%s): trading halted", kind, self.journal_error)
            self.gate.close("journal", f"the journal cannot be written ({self.journal_error}): trading halted; "
                                       "kill() still cancels and flattens")
            return False

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
                    self._journal("rejected_locally", order=record, payload={"reason": record["status_message"]})
            except Exception:
                log.exception("live broker: the order sender failed on %r", item)

    def _send_place(self, order_id: str) -> None:
        timing = self._timing.get(order_id)
        if timing is not None:
            timing.dequeued = perf_counter_ns()
        with self._apply_lock:
            with self._lock:
                if self._send_state.get(order_id) != "queued":
                    return          # cancelled while it waited (the gate closed)
                self._queued -= 1
                order = self._orders[order_id]
                force = order_id in self._force
                cancelled = order_id in self._cancel_before_send
                self._cancel_before_send.discard(order_id)
                self._send_state[order_id] = "sending"
                params = self._place_params(order)
            if cancelled:
                self._finish_unsent(order_id, "cancelled before it was sent")
                return
            # The write-ahead rule: the order is durable before the exchange can know of it.
            # A flattening order goes even so: it only shrinks what the broker itself reports.
            if not self._journal("intent", order=_order_record(order), payload=params) and not force:
                self._finish_unsent(order_id, f"not sent: the journal could not record it ({self.journal_error})",
                                    REJECTED, journal=False)
                return
        if timing is not None:
            timing.journaled = perf_counter_ns()
        for attempt in range(5):
            self.pacer.wait()
            # Checked immediately before the request, and held through it: once the gate's
            # close() returns, no request is in flight and none starts.
            response = problem = None
            with self.gate.passage() as closed:
                if closed is None or force:
                    if timing is not None:
                        timing.sent = perf_counter_ns()
                    try:
                        response = self.client.placeOrderFullResponse(dict(params))
                    except Exception as exc:
                        problem = exc
            if closed is not None and not force:
                with self._apply_lock:
                    self._finish_unsent(order_id, f"not sent: {closed}")
                return
            if problem is not None:
                exc = problem
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

    def _finish_unsent(self, order_id: str, why: str, status: str = CANCELLED, *, journal: bool = True) -> None:
        """An order that never left this machine becomes final, with ``why``. The caller holds ``_apply_lock``."""
        with self._lock:
            new = dataclasses.replace(self._orders[order_id], status=status, status_message=why,
                                      updated_ns=self._clock_ns())
            self._send_state.pop(order_id, None)
            self._force.discard(order_id)
            self.stats["cancelled_unsent"] += 1
        if journal:
            self._journal("cancelled_before_send", order=_order_record(new))
        self._commit_order(new)

    def _cancel_queued(self, why: str, *, keep_flattening: bool = False) -> int:
        """Cancel (and journal) every order still waiting for the sender; returns how many."""
        with self._apply_lock:
            with self._lock:
                waiting = [oid for oid, state in self._send_state.items() if state == "queued"
                           and not (keep_flattening and oid in self._force)]
                for order_id in waiting:
                    self._queued -= 1
                    self._cancel_before_send.discard(order_id)
                    self._send_state[order_id] = "cancelling"     # the sender skips it
            for order_id in waiting:
                self._finish_unsent(order_id, why)
        if waiting:
            log.warning("live broker: %d queued orders cancelled before sending (%s)", len(waiting), why)
        return len(waiting)

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
            self._journal(kind, order=_order_record(new), payload={"orderid": broker_order_id, "problem": problem})
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
            self._journal("send_unknown", order=_order_record(new), payload={"problem": problem})
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
        if not self._journal("modify_intent", client_id=order_id, payload=params):
            return
        self._call_order_api(order_id, "modify", lambda: self.client.modifyOrder(dict(params)), gated=True)

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
        # A cancel only reduces risk: it goes even if the journal cannot record it.
        self._journal("cancel_intent", client_id=order_id, payload={"orderid": broker_order_id})
        self._call_order_api(order_id, "cancel", lambda: self.client.cancelOrder(broker_order_id, self.variety))

    def _call_order_api(self, order_id: str, what: str, call, *, gated: bool = False) -> None:
        """Send a modify (``gated``: only through an open gate) or a cancel, retrying rate-limit answers."""
        for _ in range(5):
            self.pacer.wait()
            response = problem = closed = None
            with self.gate.passage() as refusal:
                closed = refusal if gated else None
                if closed is None:
                    try:
                        response = call()
                    except Exception as exc:
                        problem = exc
            if closed is not None:
                log.warning("live order %s: %s not sent: %s", order_id, what, closed)
                return
            if problem is not None:
                exc = problem
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
                self._journal(f"{what}_refused", client_id=order_id, payload={"message": message})
                self._reconcile_wanted.set()
            return

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
                    if source == "update":
                        # Someone else traded this account (the app, the broker's square-off):
                        # the positions may have changed under the kit.
                        self._position_check_wanted.set()
                        self._reconcile_wanted.set()
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
            self._journal(source, order=_order_record(new), payload=data,
                                fill=dataclasses.asdict(fill) if fill else None,
                                position=position_record(moved) if fill else None)
            with self._lock:
                self._commit_locked(new)
                if fill is not None:
                    current.qty, current.avg_price, current.realized_pnl = moved.qty, moved.avg_price, moved.realized_pnl
                    current.has_filled = True
                    self._fills.append(fill)
                listeners = self._fill_listeners.current
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
        self._account_open(self._orders.get(new.order_id), new)
        self._orders[new.order_id] = new
        if new.broker_order_id:
            self._by_broker_id[new.broker_order_id] = new
        if new.order_id in self._cancel_wanted and (new.broker_order_id or new.status not in ACTIVE):
            self._cancel_wanted.discard(new.order_id)
            if new.status in ACTIVE:
                self._outbox.put(("cancel", new.order_id))

    def _account_open(self, old: LiveOrder | None, new: LiveOrder) -> None:
        """Move the instrument's open units by what changed between two states of one order (lock held)."""
        before = old.qty - old.filled_qty if old is not None and old.status in ACTIVE else 0
        after = new.qty - new.filled_qty if new.status in ACTIVE else 0
        if after != before:
            self._instrument(new.token, new.exchange_type).add_open(new.side, after - before)

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
            due = time.monotonic() - self._last_position_check >= self.position_check_interval
            if self._position_check_wanted.is_set() or due or self.gate.is_closed("unreconciled"):
                self._position_check_wanted.clear()
                try:
                    self.check_positions()
                except Exception as exc:
                    self.stats["reconcile_errors"] += 1
                    log.warning("live broker: position check failed (%s: %s); retrying", type(exc).__name__, exc)
                    self._stop.wait(1.0)
                    self._position_check_wanted.set()
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
            self._journal("lost", order=_order_record(new), payload={"why": why})
            self._commit_order(new)
        self.stats["lost"] += 1
        log.error("live order %s: %s", order_id, why)
        return 1

    def check_positions(self, *, adopt_realized: bool = False) -> "pandas.DataFrame":
        """Read the broker's positions (``getPosition``) and make the kit's book agree; returns the differences.

        For every instrument of this trader's product where the broker's net
        quantity differs from the kit's, the broker's quantity and average
        price replace the kit's (journaled as ``position_adopted``), logged
        and kept in ``position_differences_df()``. An instrument with one of
        the kit's own orders still active is left for the next check: its
        fill may be in one copy and not yet in the other. ``adopt_realized``
        also takes the broker's realised P&L (a journal from another day).
        Raises if the positions cannot be read.
        """
        with self._lock:
            fills_before = len(self._fills)
        self._last_position_check = time.monotonic()
        response = self._paced_book_call(self.client.position)
        if not isinstance(response, dict) or not response.get("status"):
            message = response.get("message") if isinstance(response, dict) else repr(response)
            raise RuntimeError(f"positions refused by the broker: {message}")
        held: dict[tuple[int, str], tuple[int, float, float]] = {}
        for row in response.get("data") or []:
            if not isinstance(row, dict) or row.get("producttype") != self.product:
                continue
            key = (EXCHANGE_TYPES.get(str(row.get("exchange")), 0), str(row.get("symboltoken")))
            held[key] = (_int(row.get("netqty")), _float(row.get("avgnetprice") or row.get("netprice")),
                         _float(row.get("realised")))
        found, adopted = [], []
        with self._apply_lock:
            with self._lock:
                if len(self._fills) != fills_before:      # a fill arrived while the request was out
                    self._position_check_wanted.set()
                    return self.position_differences_df()
                keys = set(held) | {(i.exchange_type, i.token) for by in self._instruments.values()
                                    for i in by.values() if i.qty or (adopt_realized and i.realized_pnl)}
                for exchange_type, token in sorted(keys):
                    inst = self._instrument(token, exchange_type)
                    qty, avg, realised = held.get((exchange_type, token), (0, 0.0, 0.0))
                    if inst.qty == qty and not adopt_realized:
                        continue
                    in_flight = bool(inst.open_buy or inst.open_sell)
                    if inst.qty != qty:
                        found.append({"time": time.time(), "exchange_type": exchange_type, "token": token,
                                      "kit_qty": inst.qty, "broker_qty": qty,
                                      "action": "checked again soon: an order is in flight" if in_flight
                                      else "adopted the broker's"})
                    if in_flight:
                        self._position_check_wanted.set()
                        continue
                    moved = InstrumentState(token, exchange_type)
                    moved.qty, moved.avg_price = qty, (avg if qty else 0.0)
                    moved.realized_pnl = realised if adopt_realized else inst.realized_pnl
                    adopted.append((inst, moved))
            for inst, moved in adopted:
                self._journal("position_adopted", payload={"token": moved.token, "exchange_type": moved.exchange_type,
                                                           "kit_qty": inst.qty, "broker_qty": moved.qty},
                              position=position_record(moved))
                with self._lock:
                    inst.qty, inst.avg_price, inst.realized_pnl = moved.qty, moved.avg_price, moved.realized_pnl
                    inst.has_filled = True
                    if not inst.last_price and moved.avg_price:
                        inst.last_price = moved.avg_price
        self.stats["position_checks"] += 1
        self.positions_checked_at = time.time()
        if found:
            self.stats["position_differences"] += len(found)
            self._differences.extend(found)
            for d in found:
                log.warning("live broker: position in %s (exchange type %s): the kit had %+d, the broker has %+d; %s",
                            d["token"], d["exchange_type"], d["kit_qty"], d["broker_qty"], d["action"])
        self.gate.open("unreconciled")
        return self.position_differences_df()

    def position_differences_df(self) -> "pandas.DataFrame":
        """Every difference between the kit's positions and the broker's found this session, oldest first."""
        import pandas as pd
        return pd.DataFrame(list(self._differences),
                            columns=["time", "exchange_type", "token", "kit_qty", "broker_qty", "action"])

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
    def orders_df(self) -> "pandas.DataFrame":
        """One row per order, columns ``LIVE_ORDER_COLUMNS``."""
        with self._lock:
            rows = [dataclasses.astuple(o) for o in self._orders.values()]
        return frame(rows, LIVE_ORDER_COLUMNS)

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
