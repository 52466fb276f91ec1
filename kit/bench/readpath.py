"""websocket-client's frame reader, with and without the kit's read-ahead buffer.

The feed reads frames the way ``WebSocketApp``'s loop does: wait for the
socket to be readable, then ``recv_data_frame``. Here the frames (simulator
LTP packets in unmasked server frames) are already in a socketpair's buffer,
so only the reading is timed, in CPU time of the reading thread:

- ``plain``       an epoll wait and two ``recv`` calls per frame (websocket-client as is)
- ``read_ahead``  ``kit.angel.sdk.ReadAhead``: one ``recv`` per 64 KiB, no wait
  while frames are buffered (what ``KitWebSocketV2`` does by default)
"""
from __future__ import annotations

import selectors
import socket
import time

import websocket

from kit.angel.sdk import ReadAhead
from kit.core.tick import LTP
from .parsers import sample_packets


def _server_frame(payload: bytes) -> bytes:
    """A binary frame as a server sends it: FIN + opcode 2, unmasked, 7-bit length."""
    assert len(payload) < 126
    return bytes((0x82, len(payload))) + payload


def _read_all(frames: bytes, n: int, read_ahead: bool) -> float:
    a, b = socket.socketpair()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        b.sendall(frames)
        ws = websocket.WebSocket()
        ws.sock, ws.connected = (ReadAhead(a) if read_ahead else a), True
        sock = ws.sock
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ)
        start = time.thread_time_ns()
        for _ in range(n):
            if not (read_ahead and sock.pending()):
                sel.select(10)
            ws.recv_data_frame(True)
        spent = time.thread_time_ns() - start
        sel.close()
        return spent / n / 1e3
    finally:
        a.close()
        b.close()


def bench_read_path(frames_per_pass: int = 2000, repeats: int = 7) -> dict:
    """µs of CPU per LTP frame read, best of ``repeats``, and the ratio."""
    packets = sample_packets(LTP, ticks_each=max(1, frames_per_pass // 50))[:frames_per_pass]
    frames = b"".join(_server_frame(p) for p in packets)
    plain = min(_read_all(frames, len(packets), False) for _ in range(repeats))
    ahead = min(_read_all(frames, len(packets), True) for _ in range(repeats))
    return {"frames": len(packets), "plain_us": plain, "read_ahead_us": ahead, "ratio": plain / ahead}
