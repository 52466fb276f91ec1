"""The embedded simulator in a child process, driven over a pipe.

A simulator on a thread of the benchmark's own process would compete with the
client for the GIL: the server's Python would run between the socket thread's
reads, and its per-frame cost would be added to the client's. Angel One's
server is not in the client's interpreter either, so the benchmark runs it in
its own process. ``perf_counter_ns`` is ``CLOCK_MONOTONIC`` on Linux, shared by
every process, so the send stamps it writes (``stamp_send_ns``) can be compared
with the client's receive stamps.

``SimProcess`` has what a ``SimVenue`` uses of a ``Simulator`` (``start``,
``stop``, ``url``, ``credentials``, ``orders.master_url``; for a live trader,
``paper=False``, also ``rest.url``, ``rest.credentials`` and ``orders.url``), so
a trader's venue can share it (``SimVenue(simulator=sim)``), and forwards ``publish``,
``set_rate``, ``wait_for_subscribers``, ``stats``, ``orders.order_book()`` and
``orders.arrivals`` to the real one:

    with SimProcess(tokens={2: ["43650"]}, rate=20) as sim:
        trader = kit.LiveTrader(feed="sim", tokens={2: ["43650"]}, name="b", venue=kit.SimVenue(simulator=sim))
        trader.start(); ...; trader.stop()
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from types import SimpleNamespace

from kit.sim.server import SimCredentials


def _serve(conn, kwargs: dict) -> None:
    """Child process: run a Simulator and execute the parent's calls until told to exit."""
    from kit.sim.server import Simulator
    try:
        sim = Simulator(**kwargs).start()
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        return
    orders = getattr(sim, "orders", None)      # the simulated exchange's REST side, if this kit has one
    rest = getattr(sim, "rest", None)
    sides = {"master_url": getattr(orders, "master_url", None), "orders_url": getattr(orders, "url", None),
             "rest_url": getattr(rest, "url", None), "rest_credentials": getattr(rest, "credentials", None)}
    conn.send(("ready", sim.url, os.getpid(), sides))
    try:
        while True:
            try:
                name, args = conn.recv()
            except EOFError:            # the parent is gone
                break
            if name == "exit":
                break
            try:
                attr = sim
                for part in name.split("."):     # "orders.order_book": the exchange's side too
                    attr = getattr(attr, part)
                result = attr(*args) if callable(attr) else attr
                conn.send((True, result))
            except Exception as exc:
                conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        sim.stop()


CALL_TIMEOUT_S = 120.0


class SimProcess:
    """A ``kit.sim.server.Simulator`` (with ``stamp_send_ns=True``) in a child process."""

    def __init__(self, *, tokens: dict, rate: float = 0.0, seed: int = 7, stamp_send_ns: bool = True):
        self._kwargs = dict(tokens=tokens, rate=rate, seed=seed, stamp_send_ns=stamp_send_ns)
        self.credentials = SimCredentials()   # the simulator's fixed defaults
        self.url: str | None = None
        self.pid: int | None = None
        self.orders = _RemoteOrders(self, None, None)
        self.rest = SimpleNamespace(url=None, credentials=None)
        self._proc = None
        self._conn = None
        self._lock = threading.Lock()         # one request on the pipe at a time

    # ---- what LiveTrader uses
    def start(self) -> "SimProcess":
        if self._proc is not None:
            return self
        ctx = multiprocessing.get_context("spawn")   # no fork of a process that has threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._kwargs), name="kit-bench-simulator",
                                 daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60):
            self.stop()
            raise TimeoutError("the simulator process did not start within 60 s")
        reply = self._conn.recv()
        if reply[0] != "ready":
            self.stop()
            raise RuntimeError(f"the simulator process failed to start: {reply[1]}")
        _, self.url, self.pid, sides = reply
        # SimVenue reads simulator.orders.master_url (instrument lot sizes) and, trading live, logs in
        # at rest.url with rest.credentials and follows orders.url; the servers stay in the child.
        self.orders = _RemoteOrders(self, sides["master_url"], sides["orders_url"])
        self.rest = SimpleNamespace(url=sides["rest_url"], credentials=sides["rest_credentials"])
        return self

    def stop(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        try:
            conn.send(("exit", ()))
        except (BrokenPipeError, OSError):
            pass
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        conn.close()

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- forwarded to the real simulator
    def _call(self, name: str, *args):
        if self._conn is None:
            raise RuntimeError("the simulator process is not running")
        with self._lock:
            self._conn.send((name, args))
            # Bounded: a simulator that stopped answering is an error naming the call, not a silent hang.
            if not self._conn.poll(CALL_TIMEOUT_S):
                raise TimeoutError(f"simulator.{name} did not answer within {CALL_TIMEOUT_S:.0f} s")
            ok, result = self._conn.recv()
        if not ok:
            raise RuntimeError(f"simulator.{name}: {result}")
        return result

    def publish(self, n_per_token: int, tokens=None) -> None:
        self._call("publish", n_per_token, tokens)

    def set_rate(self, rate: float) -> None:
        self._call("set_rate", rate)

    def wait_for_subscribers(self, n: int = 1, timeout: float = 10.0) -> None:
        self._call("wait_for_subscribers", n, timeout)

    @property
    def stats(self) -> dict:
        return self._call("stats")


class _RemoteOrders:
    """``sim.orders`` of a ``SimProcess``: the URLs, and the exchange's books read over the pipe."""

    def __init__(self, proc: SimProcess, master_url: str | None, url: str | None):
        self._proc = proc
        self.master_url = master_url
        self.url = url

    def order_book(self) -> list[dict]:
        return self._proc._call("orders.order_book")

    @property
    def arrivals(self) -> list[tuple[int, str]]:
        """``(time.monotonic_ns(), "place" | "modify" | "cancel")`` of each order request, as it arrived."""
        return list(self._proc._call("orders.arrivals"))
