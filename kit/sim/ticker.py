"""Tick generation for the simulated market-data server: the automatic ticker and floods.

Ticks are generated only for instruments with at least one subscriber, so a
subscriber sees contiguous sequence numbers from its first tick on. Each tick
is written to every subscriber in the subscriber's mode, synchronously from
generation to write, so ticks from the ticker and from a flood never
interleave out of sequence on a socket.

A client that stops reading does not make the server buffer without bound:
while its write buffer holds more than ``max_client_buffer`` bytes, ticks for
it are dropped and counted (``dropped_slow_client``), as a feed server sheds a
slow consumer. ``publish()`` waits for room instead, so it never drops.
"""
from __future__ import annotations

import asyncio
import time

from kit.sim.connections import Connections
from kit.sim.market import SimInstrument
from kit.sim.sender import FLOOD_CHUNK, Sender

# The ticker sleeps at least this long, so very high rates are sent in batches per wake-up.
_MIN_SLEEP = 0.001


class Ticker:
    """``rate`` ticks per second per subscribed instrument, and ``publish()`` bursts. Loop-thread only.

    ``on_trades(instruments)`` is called after each batch of generated ticks
    (the simulated exchange fills resting orders the new prices cross).
    ``stamp_send_ns``: exchange timestamps carry ``perf_counter_ns`` taken
    just before the tick is encoded and written, instead of epoch milliseconds.
    """

    def __init__(self, connections: Connections, sender: Sender, counters: dict, *, rate: float,
                 stamp_send_ns: bool = False, on_trades=lambda instruments: None):
        self.connections = connections
        self.sender = sender
        self.rate = float(rate)
        self.paused = False
        self.stamp_send_ns = stamp_send_ns
        self.on_trades = on_trades
        self.max_client_buffer = 4 * 2**20   # bytes
        self.sent_by_token: dict[tuple[int, str], int] = {}
        self._counters = counters
        self._wake: asyncio.Event | None = None

    def open(self) -> None:
        """Before ``run()`` on a (re)started server's loop."""
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the rate, the pause and the subscriptions again now (loop thread)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Automatic ticks: ``rate`` per second per subscribed token, round-robin over the tokens.

        Work is owed by elapsed time (``credit``, in ticks), so the rate holds on
        average however late the loop wakes; what one wake-up owes is generated
        and written in one go.
        """
        wake, loop = self._wake, asyncio.get_running_loop()
        credit, cursor, last = 0.0, 0, loop.time()
        while True:
            active, rate = self.connections.active, self.rate
            if self.paused or rate <= 0 or not active:
                await wake.wait()
                wake.clear()
                credit, last = 0.0, loop.time()
                continue
            now = loop.time()
            per_second = rate * len(active)
            # After a long stall (a blocked notebook, a suspended laptop) make
            # up at most one second of ticks rather than a flood.
            credit = min(credit + (now - last) * per_second, max(per_second, 1.0))
            last = now
            due = int(credit)
            if due:
                credit -= due
                m = len(active)
                self.emit([active[(cursor + i) % m] for i in range(due)])
                cursor = (cursor + due) % m
            try:
                async with asyncio.timeout(max(_MIN_SLEEP, (1.0 - credit) / per_second)):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()

    def emit(self, instruments: list[SimInstrument]) -> None:
        """Generate one tick per entry and write it to every subscriber, in the subscriber's mode."""
        now_ms = time.time_ns() // 1_000_000
        stamp = time.perf_counter_ns if self.stamp_send_ns else None
        send, subscribers_of, sent_by_token = self.sender.send, self.connections.subscribers, self.sent_by_token
        slow = self._slow_clients()
        sent = dropped = 0
        for inst in instruments:
            inst.advance(stamp() if stamp else now_ms)
            subscribers = subscribers_of.get(inst.key)
            if not subscribers:
                continue
            frames = {}
            n = 0
            for client, mode in subscribers.items():
                if slow and client in slow:
                    dropped += 1
                    continue
                frame = frames.get(mode)
                if frame is None:
                    frame = frames[mode] = inst.encode(mode)
                send(client, frame)
                n += 1
            sent += n
            sent_by_token[inst.key] = sent_by_token.get(inst.key, 0) + n
        self._counters["sent"] += sent
        if dropped:
            self._counters["dropped_slow_client"] += dropped
        self.on_trades(instruments)

    def _slow_clients(self) -> set:
        """Connections whose write buffer is over ``max_client_buffer``.

        websockets' ``broadcast`` has no backpressure, so without this a client
        that stops reading would grow the server's memory without bound. Only a
        client whose writes are already paused (over websockets' high-water
        mark) has its buffer measured.
        """
        cap = self.max_client_buffer
        return {c for c in self.connections.clients
                if getattr(c.ws, "paused", True) and c.ws.transport is not None
                and c.ws.transport.get_write_buffer_size() > cap}

    async def publish(self, n_per_token: int, instruments: list[SimInstrument]) -> None:
        """``n_per_token`` ticks per instrument, round-robin, in chunks that wait for the sockets."""
        if not instruments or n_per_token <= 0:
            return
        rounds_per_chunk = max(1, FLOOD_CHUNK // len(instruments))
        done = 0
        while done < n_per_token:
            rounds = min(rounds_per_chunk, n_per_token - done)
            self.emit(instruments * rounds)
            done += rounds
            await self.sender.flush(self.connections.clients)
