"""Writing frames to the simulator's connections: at once, or through the delay line.

Every frame the market-data server sends (ticks, ``pong``, error frames, raw
frames) goes through one ``Sender``, so ``delay_ms`` delays them all by the
same amount and keeps their order. Loop-thread only, like the rest of the
server's state.
"""
from __future__ import annotations

import asyncio
from collections import deque

from websockets.asyncio.server import broadcast

# Raw frames are written in chunks of this many, awaiting the sockets between chunks.
FLOOD_CHUNK = 1024


class Sender:
    """``send(connection, frame)`` never waits; ``flush()`` waits until what was sent is written."""

    def __init__(self, counters: dict, delay_ms: float = 0.0):
        self.delay_ms = float(delay_ms)
        self._counters = counters
        self._line: deque = deque()       # (due, connection, frame) in send order
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to a (re)started server's loop, before anything is sent."""
        self._loop = loop
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        """The delay line, on the server's loop until cancelled. Due times only grow, so the
        line stays in send order."""
        loop, line = self._loop, self._line
        try:
            while True:
                if not line:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                wait = line[0][0] - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                now = loop.time()
                while line and line[0][0] <= now:
                    _, connection, frame = line.popleft()
                    broadcast((connection.ws,), frame)
        finally:
            line.clear()

    def send(self, connection, frame: bytes | str) -> None:
        """Write one frame now, or put it on the delay line."""
        if self.delay_ms or self._line:   # after a delay of 0 is set, what is still delayed goes first
            self._line.append((self._loop.time() + self.delay_ms / 1000, connection, frame))
            self._idle.clear()
            self._wake.set()
        else:
            # broadcast() writes without awaiting, and skips connections that are closing.
            broadcast((connection.ws,), frame)

    async def flush(self, connections) -> None:
        """Wait until what was sent so far is delayed no more and the sockets have room."""
        await self._idle.wait()
        for connection in list(connections):
            try:
                await connection.ws.drain()
            except Exception:
                pass   # the connection is gone; its handler cleans up

    async def send_raw(self, connections, frames) -> None:
        """Send each frame, as is, to every connection, in order."""
        for i, frame in enumerate(frames):
            for connection in connections:
                self.send(connection, frame)
                self._counters["raw_sent"] += 1
            if i % FLOOD_CHUNK == FLOOD_CHUNK - 1:
                await self.flush(connections)
        await self.flush(connections)
