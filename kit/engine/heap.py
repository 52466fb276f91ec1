"""Keep the cyclic garbage collector off the heap that existed before trading started.

CPython's full collection walks every container object in the process, with
the GIL held: in a notebook that has imported pandas, plotly and ipywidgets
that is a few hundred thousand objects, a pause of tens to hundreds of
milliseconds on the tick thread. Full collections come more often the more
objects get promoted to the oldest generation, and ticks that wait in a queue
(or in the dashboard's buffer) long enough are promoted. Measured on a replay
in queue mode with the dashboard open: 3 full collections took 0.4 s of 1.7 s.

``gc.freeze()`` moves every object that exists now into a permanent
generation that collections skip; ``gc.unfreeze()`` puts them back. The
engine freezes when the first trader starts and unfreezes when the last one
stops (``TraderConfig.freeze_heap``, on by default). While frozen, cyclic
garbage made of objects from before the start is not reclaimed; it is, at
the first full collection after the stop, or when another trader starts
(which collects once and freezes again). Objects made while trading are
collected as usual, and reference counting frees everything acyclic anyway.

    heap = FrozenHeap()
    heap.acquire()      # the first holder: gc.collect(1), then gc.freeze()
    heap.release()      # the last holder: gc.unfreeze()
"""
from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)


class FrozenHeap:
    """A count of holders; the heap is frozen while it is above zero."""

    def __init__(self):
        self._lock = threading.Lock()
        self.holders = 0

    def acquire(self) -> None:
        with self._lock:
            self.holders += 1
            if self.holders > 1:
                # Another trader keeps the heap frozen, so what a closed trader left there (a
                # re-run cell's old trader) would stay until the last one stops: collect it now.
                # A full collection, once, at a user's start() rather than on a tick thread.
                gc.unfreeze()
                gc.collect()
                gc.freeze()
                return
            started = time.perf_counter()
            # The young generations only: the recent garbage, cheaply. A full collection here
            # would cost the very pause this avoids (0.1 s with the dashboard's heap), at every start.
            gc.collect(1)
            gc.freeze()
            if log.isEnabledFor(logging.DEBUG):     # get_freeze_count walks the frozen heap: ~13 ms
                log.debug("heap frozen: %d objects left out of collections (%.0f ms)",
                          gc.get_freeze_count(), 1e3 * (time.perf_counter() - started))

    def release(self) -> None:
        with self._lock:
            if self.holders == 0:
                return
            self.holders -= 1
            if self.holders == 0:
                gc.unfreeze()



frozen_heap = FrozenHeap()
