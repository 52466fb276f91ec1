"""The live broker's reconciler: the exchange's order book and positions are the truth, read and applied.

Order updates sent while the update socket was down are never replayed, so
the reconciler reads the order book (``orderBook``, at most once a second,
Angel One's limit) after every (re)connect of that socket, at start-up, and
every ``reconcile_interval`` seconds while orders are active. A place request
that got no answer is settled here: found in the book by its ``ordertag``, or
marked REJECTED once absent ``lost_order_grace`` seconds after the attempt.

``check_positions`` reads the broker's positions (``getPosition``) and adopts
them where the kit's book differs, at connect, every
``position_check_interval`` seconds, and whenever an order update names an
order the kit does not know (someone else traded the account).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from kit.broker.book import InstrumentState, position_record
from kit.broker.order_state import LiveBook, order_record, to_float, to_int
from kit.core.market import EXCHANGE_TYPES
from kit.core.orders import ACTIVE, CANCELLED, OPEN, REJECTED

if TYPE_CHECKING:  # pragma: no cover
    import pandas

log = logging.getLogger("kit.broker.live")     # one logger for the live broker, whichever part speaks

BOOK_MIN_INTERVAL = 1.0          # order book / positions: 1 request a second
DIFFERENCE_COLUMNS = ["time", "exchange_type", "token", "kit_qty", "broker_qty", "action"]


class Reconciler:
    """Reads the order book and the positions on its own thread. See the module docstring."""

    def __init__(self, book: LiveBook, *, reconcile_interval: float, lost_order_grace: float,
                 position_check_interval: float):
        self.book = book
        self.reconcile_interval = reconcile_interval
        self.lost_order_grace = lost_order_grace
        self.position_check_interval = position_check_interval
        self.positions_checked_at: float | None = None       # epoch seconds of the last good check
        self._last_position_check = 0.0
        # What the position checks found different between the kit's book and the broker's.
        self._differences: deque[dict] = deque(maxlen=1000)
        # (exchange type, token) -> {product: net qty} as the last check read them (flatten closes each).
        self.held_by_product: dict[tuple[int, str], dict[str, int]] = {}
        self._last_book_call = 0.0
        self._book_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Have the thread look at ``book.stop`` now rather than at its next interval."""
        self.book.reconcile_wanted.set()

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        book = self.book
        stop = book.stop
        while not stop.is_set():
            wanted = book.reconcile_wanted.wait(self.reconcile_interval)
            book.reconcile_wanted.clear()
            if stop.is_set():
                return
            if wanted or book.any_active():
                self._attempt("reconcile", self.reconcile, book.reconcile_wanted)
            due = time.monotonic() - self._last_position_check >= self.position_check_interval
            if book.position_check_wanted.is_set() or due or book.gate.is_closed("unreconciled"):
                book.position_check_wanted.clear()
                self._attempt("position check", self.check_positions, book.position_check_wanted,
                              book.reconcile_wanted)
            with book.lock:
                unknown = bool(book.unknown_since)
            if unknown:
                stop.wait(min(1.0, self.lost_order_grace))
                book.reconcile_wanted.set()

    def _paced_call(self, call):
        """An order-book or positions request, at most one a second whichever thread asks."""
        with self._book_lock:
            wait = self._last_book_call + BOOK_MIN_INTERVAL - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                return call()
            finally:
                self._last_book_call = time.monotonic()

    # ------------------------------------------------------------------ the order book
    def _attempt(self, what: str, step, *again) -> None:
        """Run one book read; on failure count it, wait a second and ask for it (``again``) once more."""
        try:
            step()
        except Exception as exc:
            self.book.stats["reconcile_errors"] += 1
            log.warning("live broker: %s failed (%s: %s); retrying", what, type(exc).__name__, exc)
            self.book.stop.wait(1.0)
            for event in again:
                event.set()

    def reconcile(self) -> dict:
        """Read the order book and apply what the updates did not bring. Returns what changed.

        Orders the journal has as PENDING with an unknown send outcome that
        the book does not list ``lost_order_grace`` seconds after the attempt
        are marked REJECTED: they never reached the exchange.
        """
        book = self.book
        fetched_at = time.monotonic()
        response = self._paced_call(book.client.orderBook)
        if not isinstance(response, dict) or not response.get("status"):
            raise RuntimeError(f"order book refused: {response.get('message') if isinstance(response, dict) else response!r}")
        rows = response.get("data") or []
        changed = sum(book.apply_row(row, "orderbook") for row in rows if isinstance(row, dict))
        listed_tags = {row.get("ordertag") for row in rows if isinstance(row, dict)}
        listed_ids = {str(row.get("orderid")) for row in rows if isinstance(row, dict)}
        lost = 0
        with book.lock:
            # Judged by when the book was read, not by now: an order sent meanwhile is not in this copy.
            candidates = [oid for oid, since in book.unknown_since.items()
                          if fetched_at - since >= self.lost_order_grace and oid not in listed_tags]
            # Restored orders acknowledged in an earlier session but absent from the book: expired.
            vanished = [oid for oid in book.restored_ids
                        if book.orders[oid].status == OPEN and book.orders[oid].broker_order_id not in listed_ids]
        for order_id in candidates:
            lost += self._mark_lost(order_id, "not in the broker's order book: it never reached the exchange")
        for order_id in vanished:
            lost += self._mark_lost(order_id, "no longer in the broker's order book (expired)", CANCELLED)
        book.stats["reconciles"] += 1
        return {"rows": len(rows), "changed": changed, "lost": lost}

    def _mark_lost(self, order_id: str, why: str, status: str = REJECTED) -> int:
        book = self.book
        with book.apply_lock:
            with book.lock:
                order = book.orders[order_id]
                if order.status not in ACTIVE:
                    return 0
                new = dataclasses.replace(order, status=status, status_message=why, updated_ns=book.clock_ns())
                book.unknown_since.pop(order_id, None)
                book.send_state[order_id] = "sent"
            book.record("lost", order=order_record(new), payload={"why": why})
            book.commit(new)
        book.stats["lost"] += 1
        log.error("live order %s: %s", order_id, why)
        return 1

    # ------------------------------------------------------------------ positions
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
        book = self.book
        with book.lock:
            fills_before = len(book.fills)
        self._last_position_check = time.monotonic()
        response = self._paced_call(book.client.position)
        if not isinstance(response, dict) or not response.get("status"):
            message = response.get("message") if isinstance(response, dict) else repr(response)
            raise RuntimeError(f"positions refused by the broker: {message}")
        with book.lock:
            # The trader's product, and any other its orders used (a GTT rule's DELIVERY order).
            products = {book.product} | {o.product for o in book.orders.values() if o.product}
        held: dict[tuple[int, str], tuple[int, float, float]] = {}
        by_product: dict[tuple[int, str], dict[str, int]] = {}
        for row in response.get("data") or []:
            if not isinstance(row, dict) or row.get("producttype") not in products:
                continue
            key = (EXCHANGE_TYPES.get(str(row.get("exchange")), 0), str(row.get("symboltoken")))
            qty, avg = to_int(row.get("netqty")), to_float(row.get("avgnetprice") or row.get("netprice"))
            by_product.setdefault(key, {})[str(row["producttype"])] = qty
            before, before_avg, realised = held.get(key, (0, 0.0, 0.0))
            total = before + qty
            # One instrument in two products: the kit's book holds their sum.
            if total and (before == 0 or (before > 0) == (qty > 0)):
                avg = (before_avg * abs(before) + avg * abs(qty)) / (abs(before) + abs(qty))
            elif total:
                avg = before_avg if abs(before) > abs(qty) else avg
            held[key] = (total, avg if total else 0.0, realised + to_float(row.get("realised")))
        self.held_by_product = by_product
        found, adopted = [], []
        with book.apply_lock:
            with book.lock:
                if len(book.fills) != fills_before:      # a fill arrived while the request was out
                    book.position_check_wanted.set()
                    return self.position_differences_df()
                keys = set(held) | {(i.exchange_type, i.token) for by in book.instrument_states.values()
                                    for i in by.values() if i.qty or (adopt_realized and i.realized_pnl)}
                for exchange_type, token in sorted(keys):
                    inst = book.instrument(token, exchange_type)
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
                        book.position_check_wanted.set()
                        continue
                    moved = InstrumentState(token, exchange_type)
                    moved.qty, moved.avg_price = qty, (avg if qty else 0.0)
                    moved.realized_pnl = realised if adopt_realized else inst.realized_pnl
                    adopted.append((inst, moved))
            for inst, moved in adopted:
                book.record("position_adopted", payload={"token": moved.token, "exchange_type": moved.exchange_type,
                                                         "kit_qty": inst.qty, "broker_qty": moved.qty},
                            position=position_record(moved))
                with book.lock:
                    inst.adopt(moved)
                    if not inst.last_price and moved.avg_price:
                        inst.last_price = moved.avg_price
        book.stats["position_checks"] += 1
        self.positions_checked_at = time.time()
        if found:
            book.stats["position_differences"] += len(found)
            self._differences.extend(found)
            for d in found:
                log.warning("live broker: position in %s (exchange type %s): the kit had %+d, the broker has %+d; %s",
                            d["token"], d["exchange_type"], d["kit_qty"], d["broker_qty"], d["action"])
        book.gate.open("unreconciled")
        return self.position_differences_df()

    def position_differences_df(self) -> "pandas.DataFrame":
        """Every difference between the kit's positions and the broker's found this session, oldest first."""
        import pandas as pd
        return pd.DataFrame(list(self._differences), columns=DIFFERENCE_COLUMNS)

    def broker_positions(self) -> "pandas.DataFrame":
        """Angel One's own positions (``getPosition``), as a DataFrame with numeric ``netqty``."""
        import pandas as pd
        response = self._paced_call(self.book.client.position)
        rows = (response or {}).get("data") or []
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame["netqty"] = frame["netqty"].astype(int)
        return frame
