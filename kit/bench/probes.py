"""What the benchmark measures besides ``trader.metrics``: stamps, CPU per thread, memory.

- ``Probe`` wraps a strategy and stamps its entry: wire -> strategy (against the
  simulator's send stamp, carried in ``exchange_ts``) and receive -> strategy.
- ``ThreadCpu`` reads each thread's CPU time from the kernel (psutil, by native
  thread id) and sums it by role: socket, consumer, main, ...
- ``queued_tick_bytes`` measures what a queued ``Tick`` costs in memory.
"""
from __future__ import annotations

import gc
import queue
import threading
import time
import tracemalloc
from array import array
from time import perf_counter_ns

import numpy as np
import psutil

from kit.core.strategy import Strategy


class Probe(Strategy):
    """Runs ``inner`` and records, at entry, ``now - tick.exchange_ts`` and ``now - tick.recv_ns``.

    ``exchange_ts`` holds the simulator's send ``perf_counter_ns`` only when the
    simulator was started with ``stamp_send_ns=True``.
    """

    def __init__(self, inner: Strategy | None = None):
        self.inner = inner
        self.wire = array("q")    # simulator send -> strategy entry, ns
        self.recv = array("q")    # socket receive -> strategy entry, ns

    def on_start(self) -> None:
        if self.inner is not None:
            self.inner.on_start()

    def on_stop(self) -> None:
        if self.inner is not None:
            self.inner.on_stop()

    def on_tick(self, tick):
        now = perf_counter_ns()
        self.wire.append(now - tick.exchange_ts)
        self.recv.append(now - tick.recv_ns)
        if self.inner is not None:
            return self.inner.on_tick(tick)
        return None

    def mark(self) -> int:
        """The number of ticks seen so far: slice the arrays from here to measure a window."""
        return len(self.recv)


def percentiles(ns, unit: float = 1e3) -> dict:
    """p50/p90/p99/max (and n) of nanosecond samples, in ``unit`` (default: microseconds)."""
    a = np.asarray(ns, dtype=np.int64)
    if a.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(a, (50, 90, 99))
    return {"n": int(a.size), "p50": float(p50 / unit), "p90": float(p90 / unit),
            "p99": float(p99 / unit), "max": float(a.max() / unit)}


# --------------------------------------------------------------------------- CPU per thread
ROLES = ("socket", "consumer", "main", "heartbeat", "dashboard", "other")


def _role(name: str, native_id: int, main_id: int) -> str:
    if native_id == main_id:
        return "main"
    if name.startswith("kit-feed-"):
        return "heartbeat" if name.endswith("-heartbeat") else "socket"
    if name.startswith("kit-consumer"):
        return "consumer"
    if name.startswith("kit-dashboard"):
        return "dashboard"
    return "other"


class ThreadCpu:
    """CPU seconds per thread role, read from the kernel (user + system).

        cpu = ThreadCpu(simulator_pid)
        before = cpu.sample(); ...; after = cpu.sample()
        ThreadCpu.seconds(before, after)   # {"socket": 0.41, "consumer": 0.12, ..., "process": 0.6}

    Roles come from thread names: ``kit-feed-*`` is the socket thread (its
    ``-heartbeat`` sibling is the heartbeat), ``kit-consumer-*`` the consumer,
    ``kit-dashboard-*`` the dashboard's refresh thread, the interpreter's main
    thread is ``main``; anything else is ``other``.
    A thread counts from its first sample, so sample after the threads start
    and before they stop. ``process`` is the whole process; ``simulator`` the
    simulator's child process, when its pid is given.
    """

    def __init__(self, child_pid: int | None = None):
        self._proc = psutil.Process()
        self._child = psutil.Process(child_pid) if child_pid else None

    def sample(self) -> dict:
        main_id = threading.main_thread().native_id
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        threads = {t.id: (_role(names.get(t.id, ""), t.id, main_id), t.user_time + t.system_time)
                   for t in self._proc.threads()}
        times = self._proc.cpu_times()
        totals = {"process": times.user + times.system}
        if self._child is not None:
            try:
                c = self._child.cpu_times()
                totals["simulator"] = c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return {"threads": threads, "totals": totals}

    @staticmethod
    def seconds(before: dict, after: dict) -> dict:
        """CPU seconds spent per role between two samples."""
        out = dict.fromkeys(ROLES, 0.0)
        old = before["threads"]
        for tid, (role, secs) in after["threads"].items():
            prev_role, prev = old.get(tid, (role, 0.0))
            out[role] += secs - (prev if prev_role == role else 0.0)
        for k, v in after["totals"].items():
            out[k] = v - before["totals"].get(k, 0.0)
        return out


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------------- memory of a queued tick
def queued_tick_bytes(frames: list[bytes], maxsize: int) -> dict:
    """Bytes that ``maxsize`` ticks parsed from ``frames`` take while they sit in a queue.

    Measured with ``tracemalloc`` around parsing the frames and putting the
    ticks in a ``SimpleQueue``, as the socket thread does. Token strings are
    interned by the parser's cache (one per instrument), so they are warmed
    first and not counted per tick.
    """
    from kit.angel.wire import parse_tick
    for f in frames:
        parse_tick(f)                          # warm the token cache
    batch = [frames[i % len(frames)] for i in range(maxsize)]
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        q: queue.SimpleQueue = queue.SimpleQueue()
        for f in batch:
            q.put(parse_tick(f, perf_counter_ns()))
        total = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    del q
    return {"ticks": maxsize, "bytes": int(total), "bytes_per_tick": round(total / maxsize, 1)}


# --------------------------------------------------------------------------- what waking up costs
def wake_cost(gaps_s=(0.05, 0.001), samples: int = 60) -> dict:
    """µs one ``parse_tick`` takes right after a thread wakes on a socket, per idle gap, and in a loop.

    Latency at 20 or 1,000 ticks/s is paid on a thread that was asleep; on a
    shared VM its caches were someone else's meanwhile. This puts a number on
    it with the smallest piece of the tick path, so the per-stage figures can
    be read against the machine rather than the code.
    """
    import socket
    import time as _time
    import timeit

    from kit.core.tick import LTP
    from kit.angel.wire import parse_tick
    from .parsers import sample_packets

    packets = sample_packets(LTP, ticks_each=2)
    out = {}
    for gap in gaps_s:
        a, b = socket.socketpair()
        spent: list[int] = []

        def reader():
            for i in range(samples):
                a.recv(16)
                t0 = perf_counter_ns()
                parse_tick(packets[i % len(packets)], t0)
                spent.append(perf_counter_ns() - t0)
        t = threading.Thread(target=reader, name="kit-bench-wake")
        t.start()
        for _ in range(samples):
            b.send(b"x")
            _time.sleep(gap)
        t.join()
        a.close()
        b.close()
        out[f"after_{gap * 1000:g}_ms_idle_us"] = round(float(np.median(spent)) / 1e3, 2)
    loop = min(timeit.repeat(lambda: [parse_tick(p) for p in packets], number=20, repeat=5))
    out["in_a_loop_us"] = round(loop / (20 * len(packets)) * 1e6, 2)
    return out


# --------------------------------------------------------------------------- the dashboard on the tick path
def dashboard_tick_path_ns(ticks: int = 200_000, pairs: int = 5) -> dict:
    """Extra nanoseconds per tick the dashboard puts on the tick thread, from an in-process A/B.

    A replay (the engine's real ``_on_tick``, callback mode, latency metrics
    on, a strategy that does nothing) runs with and without a dashboard that
    has no refresh thread (``interval=None``), alternately, ``pairs`` times:
    what remains is its tick listener and the ticks it keeps alive. The
    median pair is reported, in process CPU time. No sockets and no second
    process, so the machine's load moves it far less than it moves a flood.
    """
    from kit.engine.config import ReplayConfig, TraderConfig
    from kit.engine.trader import LiveTrader
    from kit.research.examples import Null
    from kit.bench.replay import synthetic_ticks
    from kit.ui.dashboard import dashboard
    table = synthetic_ticks(ticks, tokens=50)

    def ns_per_tick(with_dashboard: bool) -> float:
        trader = LiveTrader(TraderConfig(feed="replay", replay=ReplayConfig(table, progress=False), mode="callback",
                                         name="bench-dashboard-tick-path"))
        trader.strategy = Null()
        board = dashboard(trader, interval=None) if with_dashboard else None
        gc.collect()
        started = time.process_time()     # CPU, not wall time: preemption by other processes drops out
        trader.run()
        took = time.process_time() - started
        if board is not None:
            board.close()
        trader.close()
        return 1e9 * took / ticks

    extra = []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        measured = {d: ns_per_tick(d) for d in order}
        extra.append(measured[True] - measured[False])
    return {"ticks": ticks, "pairs": pairs, "extra_ns_per_tick": float(np.median(extra)),
            "extra_ns_rounds": [round(x, 1) for x in extra]}
