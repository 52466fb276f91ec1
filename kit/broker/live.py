"""The live broker: signals become real orders through the SDK's ``SmartConnect``; fills come from order updates.

``SmartApiBroker`` satisfies ``kit.broker.base.Broker`` like the paper broker,
and adds ``modify``, ``flatten``, ``reconcile``, ``check_positions`` and
``latency_summary``.

    broker = SmartApiBroker(Journal(path))                  # restores orders and positions from the journal
    broker.connect(session.client, session.feed, order_update_url, InstrumentMaster.load())
    broker.arm()                                            # LiveTrader.arm_live does this, with a confirmation
    order = broker.submit(Signal.buy(tick, qty=65), tick)   # returns at once: status PENDING
    order.order_id                                          # the kit's id, also sent as Angel One's ordertag
    broker.orders_df()                                      # PENDING -> OPEN (acknowledged) -> COMPLETE (filled)

The parts, each in its own module:

* ``SmartApiBroker`` (here): the facade. Connects and closes, admits orders
  (``submit`` validates against the instrument master and queues; it never
  blocks on the network or the disk), answers queries.
* ``kit.broker.order_state``: ``LiveOrder``, the state the parts share
  (``LiveBook``, with its locks and the journal), and what an order update or
  order-book row does to an order. Fills come from the updates' cumulative
  filled quantity; every change is journaled before it is applied.
* ``kit.broker.sender``: the order-sender thread. Pacing below Angel One's
  limits, the write-ahead journal rule, the trading gate held through each
  place or modify request, retries of rate-limit answers only: no blind resends.
* ``kit.broker.reconcile``: the reconciler thread. The order book after every
  (re)connect of the update socket and while orders are open (updates missed
  while it was down are never replayed), orders whose place request got no
  answer, and the broker's positions adopted where the kit's differ.
* ``kit.broker.book``: positions and P&L, shared with the paper broker.
"""
from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable

from kit.broker.book import PositionBook, frame
from kit.core.charges import Charges
from kit.broker.charges_live import estimate_table
from kit.broker.gate import TradingGate
from kit.broker.gtt_live import LiveGtt
from kit.broker.order_state import LIVE_ORDER_COLUMNS, LiveBook, LiveOrder, live_order_row
from kit.broker.reconcile import Reconciler
from kit.broker.rules import DEFAULT_PRICE_COLLAR
from kit.broker.sender import OrderSender
from kit.broker.timings import Timing, latency_table
from kit.core.market import EXCHANGES, today_ist
from kit.core.orders import ACTIVE, NO_FILLS, PENDING, Fill
from kit.core.ratelimit import EXCHANGE_ORDER_LIMITS, RateLimiter
from kit.core.strategy import BUY, MARKET, SELL, STOP_TYPES, Signal

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.angel.stream import FeedCredentials
    from kit.core.tick import Tick
    from kit.store.journal import Journal

log = logging.getLogger(__name__)

MAX_QUEUED_ORDERS = 100          # orders waiting for the sender; beyond it a signal is refused
DEFAULT_CHARGES = Charges()      # the model live fills are charged by unless told otherwise


class _OnPart:
    """A setting or reading of the broker that lives on one of its parts: read and written there."""

    def __init__(self, part: str):
        self.part = part

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, broker, owner=None):
        return self if broker is None else getattr(getattr(broker, self.part), self.name)

    def __set__(self, broker, value) -> None:
        setattr(getattr(broker, self.part), self.name, value)


class SmartApiBroker(PositionBook):
    """Live execution through Angel One, with a journal; thread-safe. See the module docstring."""

    name = "smartapi"
    live = True

    client = _OnPart("book")                     # the logged-in SmartConnect, while connected
    product = _OnPart("book")
    variety = _OnPart("book")
    duration = _OnPart("book")
    journal_error = _OnPart("book")              # why the journal failed ("" while it has not)
    margin_check = _OnPart("book")               # ask Angel One's margin API before each opening order
    pacer = _OnPart("sender")                    # the RateLimiter every order request waits for
    reconcile_interval = _OnPart("reconciler")
    lost_order_grace = _OnPart("reconciler")
    position_check_interval = _OnPart("reconciler")
    positions_checked_at = _OnPart("reconciler")

    def __init__(self, journal: "Journal", *, product: str = "INTRADAY", variety: str = "NORMAL",
                 duration: str = "DAY", reconcile_interval: float = 5.0, lost_order_grace: float = 5.0,
                 pacer: RateLimiter | None = None, name: str = "default",
                 clock_ns: Callable[[], int] = time.time_ns, gate: TradingGate | None = None,
                 price_collar: float | None = DEFAULT_PRICE_COLLAR, max_queued: int = MAX_QUEUED_ORDERS,
                 position_check_interval: float = 15.0, margin_check: bool = False,
                 charges: "Charges | None" = DEFAULT_CHARGES):
        self.journal = journal
        # Stop, disarm, the kill switch and a failing journal all close this one gate; the sender
        # passes through it immediately before every place or modify request.
        self.gate = gate or TradingGate()
        if "disarmed" not in self.gate.reasons:
            self.gate.close("disarmed", "live trading is not armed")
        self.price_collar = price_collar
        self.max_queued = max_queued
        self.trader_name = name
        self._clock_ns = clock_ns
        self.book = book = LiveBook(journal, self.gate, clock_ns=clock_ns, product=product, variety=variety,
                                    duration=duration)
        # Widened windows: the exchange counts arrivals, and latency varies from request to request.
        self.sender = OrderSender(book, pacer or RateLimiter(EXCHANGE_ORDER_LIMITS, margin=0.25))
        self.reconciler = Reconciler(book, reconcile_interval=reconcile_interval, lost_order_grace=lost_order_grace,
                                     position_check_interval=position_check_interval)
        # PositionBook's state is the shared book's: the same lock, instruments and fills.
        self._lock, self._instruments, self._fills = book.lock, book.instrument_states, book.fills
        self.stats = book.stats
        self.instruments: "InstrumentMaster | None" = None
        self.stream = None
        self.bad_marks = 0
        self._prefix = "k" + secrets.token_hex(3)   # ordertag = prefix + counter: < 20 chars, unique per session
        self._count = 0
        self._closed = False
        book.margin_check = margin_check
        book.charges = charges
        book.describe = self._instrument_type
        self.restored = book.restore()
        self.gate.add_close_listener(self._gate_closed)
        self.gtt = LiveGtt(book, self._instrument_of)

    # ================================================================== start-up and shutdown
    @property
    def connected(self) -> bool:
        return self.book.client is not None and not self.book.stop.is_set()

    def connect(self, client, credentials: "FeedCredentials", order_update_url: str,
                instruments: "InstrumentMaster", *, verify_tls: bool = True, heartbeat_interval: float = 10.0,
                reconnect=None, session=None) -> "SmartApiBroker":
        """Start trading through ``client`` (a logged-in ``SmartConnect``). Idempotent.

        Before it returns, the broker's positions are read and the kit's book
        is made to agree with them (``check_positions``): a journal from an
        earlier day, or one the broker disagrees with, never trades on its
        own belief. Until that check succeeds the gate stays closed.
        ``session``: the ``SessionKeeper`` the order-update socket takes its token from at every connect.
        """
        from kit.angel.order_updates import OrderUpdateStream
        if self.connected:
            return self
        if self._closed:
            raise RuntimeError("this broker was closed (its journal too): create a new trader to trade again")
        book = self.book
        book.client, self.instruments = client, instruments
        book.stop.clear()
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
        self.stream = OrderUpdateStream(order_update_url, credentials, book.on_update, reconnect=reconnect,
                                        heartbeat_interval=heartbeat_interval, verify_tls=verify_tls,
                                        name=f"kit-order-updates-{self.trader_name}", session=session)
        self.stream.on_connect = book.reconcile_wanted.set    # updates missed while down are not replayed
        self.sender.start(f"kit-orders-{self.trader_name}")
        self.reconciler.start(f"kit-reconcile-{self.trader_name}")
        self.stream.start()
        book.reconcile_wanted.set()
        return self

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the order-update socket is connected."""
        return self.stream is not None and self.stream.wait_connected(timeout)

    def close(self) -> None:
        """Stop the threads (orders still queued are cancelled, not sent) and close the journal. Final."""
        self.gate.close("closed", "the live broker was closed")
        if self.stream is not None:
            self.stream.stop()
        self.book.stop.set()
        self.sender.wake()
        self.reconciler.wake()
        self.sender.join()
        self.reconciler.join()
        self.sender.cancel_queued("not sent: the live broker was closed")
        self.book.client = None
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
        self.sender.cancel_queued(f"not sent: {reason}", keep_flattening=name != "stopped" and name != "closed")

    def _instrument_of(self, token: str, exchange_type: int):
        """The master's instrument (None without a master or for an unknown one)."""
        return self.instruments.get(token, exchange_type) if self.instruments is not None else None

    def _instrument_type(self, token: str, exchange_type: int) -> str | None:
        inst = self._instrument_of(token, exchange_type)
        return inst.instrument_type if inst is not None else None

    def charges_df(self) -> "pandas.DataFrame":
        """Per filled order: the model's charges (what the P&L is net of), Angel One's ``estimateCharges``
        figure, and the difference (``kit.broker.charges_live``). Asks the broker: not for a hot loop."""
        with self._lock:
            filled = [dataclasses.replace(o) for o in self.book.orders.values() if o.filled_qty]
            model: dict[str, float] = {}
            for fill in self.book.fills:
                model[fill.order_id] = model.get(fill.order_id, 0.0) + fill.charges
        if self.book.client is None:
            raise RuntimeError("the live broker is not connected: Angel One's estimate needs a session")
        return estimate_table(self.book.client, filled, model)

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

    def _submit(self, signal: Signal, tick, *, force: bool, product: str | None = None) -> LiveOrder:
        started = perf_counter_ns()
        inst = self.instruments.get(signal.token, signal.exchange_type) if self.instruments is not None else None
        book = self.book
        with book.lock:
            self._count += 1
            order = LiveOrder(f"{self._prefix}{self._count:06d}", signal.token, signal.exchange_type, signal.side,
                              signal.qty, signal.order_type, signal.limit_price, PENDING, 0, 0.0, signal.reason,
                              self._clock_ns(), tick.seq if tick is not None else signal.tick_seq, signal.tag,
                              "", trigger_price=signal.trigger_price, variety=signal.variety,
                              target=signal.target, stoploss=signal.stoploss, symbol=inst.symbol if inst else "",
                              exchange=EXCHANGES.get(signal.exchange_type, ""), product=product or book.product)
            order.updated_ns = order.submit_ns
            problem = self._refusal(order, tick, force)
            timing = book.timing[order.order_id] = Timing(started)
            book.add(order, problem, force=force)
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
        queued = self.book.queued
        if queued >= self.max_queued:
            self.stats["queue_full"] += 1
            return f"the send queue is full ({queued} orders waiting for the exchange's rate limit)"
        return self._admission_problem(order.token, order.exchange_type, order.side, order.qty, order.order_type,
                                       order.limit_price, tick, order.trigger_price)

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None,
               trigger: float | None = None) -> bool:
        """Ask the exchange to change an open order's limit price, quantity and/or (a stop's) trigger.

        Returns False if the order is unknown, no longer active, not yet
        acknowledged by the exchange, or the change is malformed or outside
        the price band (a stop's new trigger already reached by the market
        included). The change shows once the exchange confirms it (an AB04 update).
        """
        with self._lock:
            order = self.book.orders.get(order_id)
            if order is None or order.status not in ACTIVE or not order.broker_order_id:
                return False
            if trigger is not None and order.order_type not in STOP_TYPES:
                log.warning("live order %s: modify refused: a %s order has no trigger", order_id, order.order_type)
                return False
            problem = self._admission_problem(order.token, order.exchange_type, order.side,
                                              qty if qty is not None else order.qty, order.order_type,
                                              price if price is not None else order.limit_price, None,
                                              trigger if trigger is not None else order.trigger_price)
        if problem:
            log.warning("live order %s: modify refused: %s", order_id, problem)
            return False
        self.sender.queue_modify(order_id, price, qty, trigger)
        return True

    def cancel(self, order_id: str) -> bool:
        """Cancel an active order. False if it is unknown or no longer active.

        An order still waiting in the send queue is never sent; one already
        at the exchange is cancelled there (the status changes on the update).
        """
        return self.sender.queue_cancel(order_id)

    def cancel_all(self) -> int:
        """Cancel every active order; returns how many cancels were requested."""
        with self._lock:
            active = [o.order_id for o in self.book.orders.values() if o.status in ACTIVE]
        return sum(self.cancel(order_id) for order_id in active)

    def flatten(self, reason: str = "flatten", *, exchange_types=None) -> list[LiveOrder]:
        """Close every position of this trader's product (in ``exchange_types`` only, if given), as the
        broker reports it now.

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
        by_product = self.reconciler.held_by_product
        for position in self._snapshots():
            if exchange_types is not None and position.exchange_type not in exchange_types:
                continue
            if position.qty and (position.exchange_type, position.token) in in_flight:
                # An order of ours may still fill there: a flattening order now could overshoot.
                log.error("flatten: %s (exchange type %d) left as it is: an order there is still active",
                          position.token, position.exchange_type)
            elif position.qty:
                # Each product's position is closed in its own product: a SELL INTRADAY does not close
                # a DELIVERY long, it opens an INTRADAY short beside it.
                parts = by_product.get((position.exchange_type, position.token)) or {self.book.product: position.qty}
                for product, qty in parts.items():
                    if qty:
                        signal = Signal(position.token, SELL if qty > 0 else BUY, abs(qty), MARKET, None,
                                        position.exchange_type, reason)
                        orders.append(self._submit(signal, None, force=True, product=product))
        return orders

    def wait_settled(self, timeout: float = 10.0) -> bool:
        """Block until no order is PENDING or OPEN."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.open_orders():
                return True
            time.sleep(0.01)
        return not self.open_orders()

    # ================================================================== queries
    def open_orders(self) -> list[LiveOrder]:
        """Copies of the orders that are PENDING or OPEN, oldest first."""
        with self._lock:
            return [dataclasses.replace(o) for o in self.book.orders.values() if o.status in ACTIVE]

    def order(self, order_id: str) -> LiveOrder | None:
        with self._lock:
            order = self.book.orders.get(order_id)
            return dataclasses.replace(order) if order else None

    def orders_df(self) -> "pandas.DataFrame":
        """One row per order, columns ``LIVE_ORDER_COLUMNS``."""
        with self._lock:
            rows = [live_order_row(o) for o in self.book.orders.values()]
        return frame(rows, LIVE_ORDER_COLUMNS)

    @property
    def queued(self) -> int:
        """Place requests waiting for the sender thread."""
        return self.book.queued

    def add_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Call ``listener(fill)`` after every fill, on the order-update (or reconcile) thread."""
        self.book.fill_listeners.add(listener)

    def remove_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        self.book.fill_listeners.remove(listener)

    # ================================================================== the exchange's truth
    def reconcile(self) -> dict:
        """Read the order book and apply what the updates did not bring (``Reconciler.reconcile``)."""
        return self.reconciler.reconcile()

    def check_positions(self, *, adopt_realized: bool = False) -> "pandas.DataFrame":
        """Read the broker's positions and make the kit's book agree; returns the differences.

        See ``Reconciler.check_positions``. Raises if the positions cannot be read.
        """
        return self.reconciler.check_positions(adopt_realized=adopt_realized)

    def position_differences_df(self) -> "pandas.DataFrame":
        """Every difference between the kit's positions and the broker's found this session, oldest first."""
        return self.reconciler.position_differences_df()

    def broker_positions(self) -> "pandas.DataFrame":
        """Angel One's own positions (``getPosition``), as a DataFrame with numeric ``netqty``."""
        return self.reconciler.broker_positions()

    def latency_summary(self, unit: str = "us") -> "pandas.DataFrame":
        """p50 / p90 / p99 / max per stage (``kit.broker.timings.STAGES``) of the orders this session sent."""
        return latency_table(list(self.book.timing.values()), unit)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<SmartApiBroker {state} {'ARMED' if self.armed else 'unarmed'} orders={len(self.book.orders)}>"
