"""How a tick gets from the socket thread to the strategy: three modes, switchable live.

- ``queue``: the socket thread puts the tick in a bounded queue; a consumer
  takes it with a *blocking* get (no sleep-poll) and runs the handler.
  When full, the oldest tick is dropped and counted.
- ``callback``: the socket thread runs the handler itself ("Wind-style").
- ``poll``: the common sleep-poll loop, the A/B baseline the other modes are
  measured against: ``get_nowait()``, and ``sleep(0.05)`` whenever the queue
  is empty.

Switching never loses, duplicates or reorders a tick, and never lets two
threads run the handler at once. The trick is that only the *producer* (the
socket thread) decides when callbacks start: it keeps enqueuing until every
tick it ever enqueued has been either handled or dropped, then calls the
handler directly. Each counter below has exactly one writing thread, so the
comparison needs no lock.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)

QUEUE, CALLBACK, POLL = "queue", "callback", "poll"
MODES = (QUEUE, CALLBACK, POLL)
_STOP = object()


class Dispatcher:
    """Routes ticks to ``handler(tick, via)``, where ``via`` names the mode that delivered it."""

    def __init__(self, handler, mode: str = QUEUE, *, maxsize: int = 1000, poll_interval: float = 0.05):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._handler = handler
        self.maxsize = maxsize
        self.poll_interval = poll_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._requested = self._check(mode)
        self._direct = False            # producer-owned: handler is being called on the socket thread
        # single-writer counters
        self.enqueued = 0               # producer
        self.dropped = 0                # producer
        self.handled_by_consumer = 0    # consumer
        self.handled_direct = 0         # producer
        self.handler_errors = 0         # whichever thread ran the handler
        self.max_depth = 0              # producer
        self._consumer: threading.Thread | None = None
        self._consuming = threading.Event()
        self._stopping = False

    @staticmethod
    def _check(mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        return MODES[MODES.index(mode)]   # the canonical object: the hot path compares with `is`

    # ------------------------------------------------------------------ mode
    @property
    def mode(self) -> str:
        """The requested mode; it takes effect at the next tick (after queued ticks drain)."""
        return self._requested

    @mode.setter
    def mode(self, mode: str) -> None:
        self._requested = self._check(mode)

    @property
    def active_mode(self) -> str:
        """The mode the last tick was actually delivered in."""
        return CALLBACK if self._direct else (POLL if self._requested == POLL else QUEUE)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------------ producer side (socket thread)
    def submit(self, tick) -> None:
        if self._direct:
            if self._requested is CALLBACK:
                # The steady callback path, inlined (no _call frame): it is every tick's path
                # in callback mode, and a replay's whole cost besides the strategy.
                try:
                    self._handler(tick, CALLBACK)
                except Exception:
                    self._handler_failed(tick)
                self.handled_direct += 1
                return
            self._direct = False        # back to the queue; nothing is in flight
        elif self._requested is CALLBACK and self.enqueued - self.dropped == self.handled_by_consumer:
            # Everything ever queued has been handled: the consumer is idle, so the
            # socket thread may take over without overtaking or overlapping it.
            self._direct = True
            self._call(tick, CALLBACK)
            self.handled_direct += 1
            return
        q = self._queue
        depth = q.qsize()
        if depth >= self.maxsize:
            try:
                q.get_nowait()          # drop the oldest
                self.dropped += 1
                depth -= 1
            except queue.Empty:         # the consumer emptied the queue since qsize()
                depth = 0
        q.put(tick)
        self.enqueued += 1
        if depth >= self.max_depth:
            # qsize() may be stale by the consumer's takes (never by puts: this is the only producer),
            # so the depth is an upper bound; the queue's own bound is the tighter one.
            self.max_depth = depth + 1 if depth < self.maxsize else self.maxsize

    def submit_many(self, ticks) -> None:
        """``submit`` each tick of an iterable, in order, by exactly the same rules.

        A replay's path: in steady callback mode the handler is called from
        this loop directly, one Python frame per tick fewer than ``submit``.
        """
        handler = self._handler
        for tick in ticks:
            if self._direct and self._requested is CALLBACK:
                try:
                    handler(tick, CALLBACK)
                except Exception:
                    self._handler_failed(tick)
                self.handled_direct += 1
            else:
                self.submit(tick)

    # ------------------------------------------------------------------ consumer side
    def start_consumer_thread(self, name: str = "kit-consumer") -> None:
        """Run the consumer on a background thread (what a notebook needs)."""
        if self._consumer is not None and self._consumer.is_alive():
            return
        self._stopping = False
        self._consumer = threading.Thread(target=self.consume, name=name, daemon=True)
        self._consumer.start()

    def consume(self, until: float | None = None) -> None:
        """Consume on the calling thread until ``stop()`` (or ``time.monotonic() >= until``).

        A script may call this from its main thread and make it its trading loop.
        """
        self._stopping = False
        self._consuming.set()
        q = self._queue
        try:
            while not self._stopping:
                if self._requested is POLL:
                    try:
                        tick = q.get_nowait()
                    except queue.Empty:
                        if until is not None and time.monotonic() >= until:
                            return
                        time.sleep(self.poll_interval)   # the baseline's wait: 50 ms by default
                        continue
                    via = POLL
                else:
                    if until is None:
                        tick = q.get()
                    else:
                        remaining = until - time.monotonic()
                        if remaining <= 0:
                            return
                        try:
                            tick = q.get(timeout=min(remaining, 0.5))
                        except queue.Empty:
                            continue
                    via = QUEUE
                if tick is _STOP:
                    return
                self._call(tick, via)
                self.handled_by_consumer += 1
        finally:
            self._consuming.clear()

    def _call(self, tick, via: str) -> None:
        try:
            self._handler(tick, via)
        except Exception:  # the handler guards the strategy; this guards the dispatcher itself
            self._handler_failed(tick)

    def _handler_failed(self, tick) -> None:
        self.handler_errors += 1
        log.exception("tick handler failed for %r", tick)

    def finish(self) -> None:
        """Make ``consume()`` return once it has handled every tick queued so far.

        For a finite feed (a replay): its producer calls this after its last
        tick, so a script consuming on its main thread (``LiveTrader.run``)
        returns when the stream is done. Unlike ``stop()`` it does not wait.
        """
        self._queue.put(_STOP)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the consumer after it has handled every tick already queued."""
        self._queue.put(_STOP)          # FIFO: queued ticks are handled first
        consumer = self._consumer
        if consumer is not None and consumer is not threading.current_thread():
            consumer.join(timeout)
            if consumer.is_alive():
                self._stopping = True
                consumer.join(timeout)
        elif consumer is None and not self._consuming.is_set():
            # No consumer is running (a script's main-thread loop has returned):
            # handle what is still queued here rather than leave it for a later run.
            self.consume()
        self._consumer = None
        self.discard_stop_markers()

    def discard_stop_markers(self) -> None:
        """Remove stop markers nobody consumed, keeping the ticks: they must not end the next run."""
        kept = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                kept.append(item)
        for item in kept:
            self._queue.put(item)

    def stats(self) -> dict:
        return {"mode": self._requested, "active_mode": self.active_mode, "depth": self.depth,
                "max_depth": self.max_depth, "enqueued": self.enqueued, "dropped": self.dropped,
                "handled_by_consumer": self.handled_by_consumer, "handled_direct": self.handled_direct,
                "handler_errors": self.handler_errors}
