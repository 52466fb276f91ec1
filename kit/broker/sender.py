"""The live broker's order-sender thread: the only place a place, modify or cancel request leaves the kit.

It takes the work ``submit``, ``modify`` and ``cancel`` queue on the shared
book's ``outbox``, in order, and for each request:

* paces it below Angel One's limits through the one ``RateLimiter`` (``pacer``);
* with ``margin_check`` on, asks Angel One's margin API about an opening
  order first (``kit.broker.margin_check``);
* journals the intent first (the write-ahead rule: a place request the journal
  did not record is not sent, unless it is a flattening order);
* passes the trading gate immediately before a place or modify request and
  holds it through the request, so once ``gate.close()`` returns none is in
  flight and none starts (cancels and flattening orders only reduce risk and
  go regardless);
* retries only a rate-limit answer, which means "not placed". A request with
  no answer may have reached the exchange: the order stays PENDING and the
  reconciler looks for it in the order book. Nothing is resent blindly.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from time import perf_counter_ns

from kit.angel.sdk import is_rate_limit_error
from kit.broker.order_state import LiveBook, LiveOrder, order_record
from kit.core.orders import ACTIVE, CANCELLED, OPEN, PENDING, REJECTED
from kit.core.ratelimit import RateLimiter
from kit.broker.margin_check import MarginCheck
from kit.core.strategy import LIMIT, NORMAL, ROBO, STOP_TYPES, STOPLOSS_LIMIT

log = logging.getLogger("kit.broker.live")     # one logger for the live broker, whichever part speaks

ATTEMPTS = 5        # rate-limit answers in a row before a request is given up


def _variety(order: LiveOrder, book: LiveBook) -> str:
    """The order's own variety (a stop-loss, a bracket or its legs), else the broker's setting."""
    return order.variety if order.variety != NORMAL else book.variety


def never_sent(exc: BaseException) -> bool:
    """True if the request provably never left this machine (so the order cannot exist)."""
    import requests
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = str(exc)
    return isinstance(exc, requests.exceptions.ConnectionError) and (
        "NewConnectionError" in text or "Failed to establish a new connection" in text)


class OrderSender:
    """Drains ``book.outbox`` on its own thread. See the module docstring."""

    def __init__(self, book: LiveBook, pacer: RateLimiter):
        self.book = book
        self.pacer = pacer
        self.margin = MarginCheck(book)
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Have the thread end after the request in hand (set ``book.stop`` first)."""
        self.book.outbox.put(None)

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    # ------------------------------------------------------------------ asked by the facade
    def queue_cancel(self, order_id: str) -> bool:
        """Cancel an active order: one still waiting here is never sent. False if unknown or no longer active."""
        book = self.book
        with book.lock:
            order = book.orders.get(order_id)
            if order is None or order.status not in ACTIVE:
                return False
            if book.send_state.get(order_id) == "queued":
                book.cancel_before_send.add(order_id)
                return True
        book.outbox.put(("cancel", order_id))
        return True

    def queue_modify(self, order_id: str, price: float | None, qty: int | None, trigger: float | None = None) -> None:
        self.book.outbox.put(("modify", order_id, {"price": price, "qty": qty, "trigger": trigger}))

    def cancel_queued(self, why: str, *, keep_flattening: bool = False) -> int:
        """Cancel (and journal) every order still waiting to be sent; returns how many."""
        book = self.book
        with book.apply_lock:
            with book.lock:
                waiting = [oid for oid, state in book.send_state.items() if state == "queued"
                           and not (keep_flattening and oid in book.force)]
                for order_id in waiting:
                    book.queued -= 1
                    book.cancel_before_send.discard(order_id)
                    book.send_state[order_id] = "cancelling"     # the sender skips it
            for order_id in waiting:
                self._finish_unsent(order_id, why)
        if waiting:
            log.warning("live broker: %d queued orders cancelled before sending (%s)", len(waiting), why)
        return len(waiting)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        book = self.book
        while True:
            item = book.outbox.get()
            if item is None or book.stop.is_set():
                return
            try:
                kind, order_id = item[0], item[1]
                if kind == "place":
                    self._place(order_id)
                elif kind == "modify":
                    self._modify(order_id, item[2])
                elif kind == "cancel":
                    self._cancel(order_id)
                elif kind == "record":
                    with book.apply_lock, book.lock:
                        record = order_record(book.orders[order_id])
                    book.record("rejected_locally", order=record, payload={"reason": record["status_message"]})
            except Exception:
                log.exception("live broker: the order sender failed on %r", item)

    def _place(self, order_id: str) -> None:
        book = self.book
        timing = book.timing.get(order_id)
        if timing is not None:
            timing.dequeued = perf_counter_ns()
        # Before the lock that order updates take too: the margin check is two requests.
        short = self.margin.shortfall(order_id) if book.margin_check else ""
        with book.apply_lock:
            with book.lock:
                if book.send_state.get(order_id) != "queued":
                    return          # cancelled while it waited (the gate closed)
                book.queued -= 1
                order = book.orders[order_id]
                force = order_id in book.force
                cancelled = order_id in book.cancel_before_send
                book.cancel_before_send.discard(order_id)
                book.send_state[order_id] = "sending"
                params = self._place_params(order)
            if cancelled:
                self._finish_unsent(order_id, "cancelled before it was sent")
                return
            if short and not force:
                self._finish_unsent(order_id, short, REJECTED)
                return
            # The write-ahead rule: the order is durable before the exchange can know of it.
            # A flattening order goes even so: it only shrinks what the broker itself reports.
            if not book.record("intent", order=order_record(order), payload=params) and not force:
                self._finish_unsent(order_id, f"not sent: the journal could not record it ({book.journal_error})",
                                    REJECTED, journal=False)
                return
        if timing is not None:
            timing.journaled = perf_counter_ns()
        for _ in range(ATTEMPTS):
            self.pacer.wait()
            # Checked immediately before the request, and held through it: once the gate's
            # close() returns, no request is in flight and none starts.
            response = problem = None
            with book.gate.passage() as closed:
                if closed is None or force:
                    if timing is not None:
                        timing.sent = perf_counter_ns()
                    try:
                        response = book.client.placeOrderFullResponse(dict(params))
                    except Exception as exc:
                        problem = exc
            if closed is not None and not force:
                with book.apply_lock:
                    self._finish_unsent(order_id, f"not sent: {closed}")
                return
            if problem is not None:
                if is_rate_limit_error(problem):
                    book.stats["rate_limited"] += 1
                    log.warning("live order %s: rate limited by the broker; retrying", order_id)
                    self.pacer.penalise(1.0)
                    continue
                if never_sent(problem):
                    self._resolve(order_id, None, f"could not reach the broker: {type(problem).__name__}")
                    return
                self._unknown(order_id, f"{type(problem).__name__}: {problem}")
                return
            if timing is not None:
                timing.acked = perf_counter_ns()
            data = response.get("data") if isinstance(response, dict) else None
            if isinstance(response, dict) and response.get("status") and isinstance(data, dict) and data.get("orderid"):
                self._resolve(order_id, str(data["orderid"]), "")
            else:
                message = response.get("message", "no reason given") if isinstance(response, dict) else repr(response)
                code = response.get("errorcode", "") if isinstance(response, dict) else ""
                self._resolve(order_id, None, f"{message} ({code})" if code else message)
            return
        self._resolve(order_id, None, "rate limited by the broker five times in a row")

    def _place_params(self, order: LiveOrder) -> dict:
        book = self.book
        params = {"variety": _variety(order, book), "tradingsymbol": order.symbol, "symboltoken": order.token,
                  "transactiontype": order.side, "exchange": order.exchange, "ordertype": order.order_type,
                  "producttype": order.product, "duration": book.duration, "quantity": str(order.qty),
                  "price": "0", "ordertag": order.order_id}
        if order.order_type in (LIMIT, STOPLOSS_LIMIT):
            params["price"] = f"{order.limit_price:.2f}"
        if order.order_type in STOP_TYPES:
            params["triggerprice"] = f"{order.trigger_price:.2f}"
        if order.variety == ROBO:
            params["squareoff"], params["stoploss"] = f"{order.target:.2f}", f"{order.stoploss:.2f}"
        return params

    def _finish_unsent(self, order_id: str, why: str, status: str = CANCELLED, *, journal: bool = True) -> None:
        """An order that never left this machine becomes final, with ``why``. The caller holds ``apply_lock``."""
        book = self.book
        with book.lock:
            new = dataclasses.replace(book.orders[order_id], status=status, status_message=why,
                                      updated_ns=book.clock_ns())
            book.send_state.pop(order_id, None)
            book.force.discard(order_id)
            book.stats["cancelled_unsent"] += 1
        if journal:
            book.record("cancelled_before_send", order=order_record(new))
        book.commit(new)

    def _resolve(self, order_id: str, broker_order_id: str | None, problem: str) -> None:
        """The place request was answered: acknowledged with an order id, or refused."""
        book = self.book
        with book.apply_lock:
            with book.lock:
                order = book.orders[order_id]
                book.send_state[order_id] = "sent"
                book.unknown_since.pop(order_id, None)
                new = dataclasses.replace(order, updated_ns=book.clock_ns())
                if broker_order_id:
                    new.broker_order_id = broker_order_id
                    if new.status == PENDING:   # an update may already have moved it on
                        new.status = OPEN
                elif new.status == PENDING:
                    new.status, new.status_message = REJECTED, problem
            kind = "ack" if broker_order_id else "refused"
            book.record(kind, order=order_record(new), payload={"orderid": broker_order_id, "problem": problem})
            book.commit(new)
        if broker_order_id:
            book.stats["placed"] += 1
        else:
            book.stats["rejected"] += 1
            log.warning("live order %s refused: %s", order_id, problem)

    def _unknown(self, order_id: str, problem: str) -> None:
        """No answer to the place request: the order may exist. Keep it PENDING and ask the order book."""
        book = self.book
        with book.apply_lock:
            with book.lock:
                order = book.orders[order_id]
                book.send_state[order_id] = "unknown"
                book.unknown_since[order_id] = time.monotonic()
                new = dataclasses.replace(order, updated_ns=book.clock_ns(),
                                          status_message=f"no answer to the place request ({problem}); "
                                                         "checking the order book")
            book.record("send_unknown", order=order_record(new), payload={"problem": problem})
            book.commit(new)
        book.stats["send_unknown"] += 1
        log.error("live order %s: %s; not resending, reconciling with the order book", order_id, problem)
        book.reconcile_wanted.set()

    def _modify(self, order_id: str, change: dict) -> None:
        book = self.book
        with book.lock:
            order = book.orders.get(order_id)
            if order is None or order.status not in ACTIVE or not order.broker_order_id:
                return
            qty = change["qty"] if change["qty"] is not None else order.qty
            price = change["price"] if change["price"] is not None else order.limit_price
            trigger = change.get("trigger") if change.get("trigger") is not None else order.trigger_price
            params = {"variety": _variety(order, book), "orderid": order.broker_order_id,
                      "ordertype": order.order_type, "producttype": order.product, "duration": book.duration,
                      "quantity": str(qty), "price": f"{price:.2f}" if price is not None else "0",
                      "tradingsymbol": order.symbol, "symboltoken": order.token, "exchange": order.exchange}
            if order.order_type in STOP_TYPES:
                params["triggerprice"] = f"{trigger:.2f}"
        if not book.record("modify_intent", client_id=order_id, payload=params):
            return
        self._call(order_id, "modify", lambda: book.client.modifyOrder(dict(params)), gated=True)

    def _cancel(self, order_id: str) -> None:
        book = self.book
        with book.lock:
            order = book.orders.get(order_id)
            if order is None or order.status not in ACTIVE:
                return
            if not order.broker_order_id:
                # Sent without an answer yet: cancel as soon as the order book names it.
                book.cancel_wanted.add(order_id)
                return
            broker_order_id, variety = order.broker_order_id, _variety(order, book)
        # A cancel only reduces risk: it goes even if the journal cannot record it.
        book.record("cancel_intent", client_id=order_id, payload={"orderid": broker_order_id})
        self._call(order_id, "cancel", lambda: book.client.cancelOrder(broker_order_id, variety))

    def _call(self, order_id: str, what: str, call, *, gated: bool = False) -> None:
        """Send a modify (``gated``: only through an open gate) or a cancel, retrying rate-limit answers."""
        book = self.book
        for _ in range(ATTEMPTS):
            self.pacer.wait()
            response = problem = closed = None
            with book.gate.passage() as refusal:
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
                if is_rate_limit_error(problem):
                    book.stats["rate_limited"] += 1
                    self.pacer.penalise(1.0)
                    continue
                log.error("live order %s: %s request failed: %s", order_id, what, problem)
                book.reconcile_wanted.set()
                return
            if not (isinstance(response, dict) and response.get("status")):
                message = response.get("message") if isinstance(response, dict) else repr(response)
                log.warning("live order %s: %s refused: %s", order_id, what, message)
                book.record(f"{what}_refused", client_id=order_id, payload={"message": message})
                book.reconcile_wanted.set()
            return
        # Rate limited every time: say so, and let the order book tell what the order is now.
        log.error("live order %s: %s not sent: rate limited by the broker %d times in a row", order_id, what, ATTEMPTS)
        book.record(f"{what}_refused", client_id=order_id, payload={"message": "rate limited"})
        book.reconcile_wanted.set()
