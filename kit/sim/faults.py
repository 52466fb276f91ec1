"""What a live feed does wrong, on demand: fault injection for the simulator.

Tests and soak runs script a market day's failures against the real client:

    sim = kit.Simulator(rate=40).start()
    f = sim.faults
    f.drop(missed=100)           # connection aborted while the market moves on 100 ticks per token
    f.drop(missed=5, holding=(1, "3045"))   # only the connection subscribed to that instrument
    f.revoke_session()           # every token issued so far refused (REST 403 AG8001, sockets 401);
                                 # the sockets are dropped, so their reconnects meet the refusal
    f.refuse_logins()            # logins fail until f.refuse_logins(False)
    f.stall(seconds=5)           # no ticks for 5 s; pings are still answered
    f.malformed(10)              # binary frames of no packet size
    f.wrong_mode(4)              # packet-sized frames whose mode byte does not match the size
    f.truncated(10)              # real packets cut short
    f.oversized(2, extra=1 << 20)  # a real packet followed by a megabyte of junk
    f.error_frame("E1001")       # a JSON error frame, as Angel One sends them
    f.unknown_text()             # a text frame that is neither pong nor error
    f.slow(300, seconds=10)      # every frame 300 ms late for 10 s
    f.gap(50)                    # 50 sequence numbers per token never sent (no disconnect)
    f.inject("drop")             # by name; Faults.KINDS lists them (the soak script rotates them)
    f.injected                   # Counter: what was injected, by kind
    f.bad_frames                 # Counter: frames sent per counter they should land in on the client

Every frame that is not a tick is built so that no SmartAPI parser could
take it for one: a bad binary frame never has a packet's size *and* that
size's mode byte. ``bad_frames`` therefore says exactly what the client's
counters must show: ``malformed`` (binary), ``error_frames``, ``unknown_text``.
Frames go to every connected client; the counts assume one.
"""
from __future__ import annotations

import json
import random
import threading
from collections import Counter

from kit.core.tick import DEPTH, LTP, QUOTE, SNAP_QUOTE
from kit.angel.wire import PACKET_SIZE, encode_ltp

KINDS = ("drop", "stall", "malformed", "truncated", "oversized", "wrong_mode", "error_frame", "slow")
_MODE_OF_SIZE = {size: mode for mode, size in PACKET_SIZE.items()}
ERRORS = {"E1001": "Invalid Request Payload.", "E1002": "Subscription limit exceeded"}


def is_packet(frame: bytes) -> bool:
    """True when ``frame`` has a SmartAPI packet's size and that size's mode byte."""
    return len(frame) in _MODE_OF_SIZE and frame[0] == _MODE_OF_SIZE[len(frame)]


def spoil(frame: bytes) -> bytes:
    """``frame`` itself if no parser could take it for a packet; otherwise with its mode byte changed."""
    if not is_packet(frame):
        return frame
    wrong = (frame[0] % 4) + 1            # another of the four modes
    return bytes([wrong]) + frame[1:]


class Faults:
    """Fault injection for one ``Simulator`` (``sim.faults``). Methods return once the fault is applied."""

    KINDS = KINDS

    def __init__(self, sim, seed: int = 0):
        self.sim = sim
        self.rng = random.Random(seed)
        self.injected: Counter = Counter()
        self.bad_frames: Counter = Counter()     # keys: malformed, error_frames, unknown_text
        self.missed_injected = 0                 # ticks per token x tokens that a drop/gap skipped
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        # Defaults used by inject(kind)
        self.drop_missed = 100
        self.stall_seconds = 6.0
        self.slow_ms = 300.0
        self.slow_seconds = 10.0
        self.burst = 20

    # ------------------------------------------------------------------ the connection
    def drop(self, missed: int = 0, *, holding=None) -> None:
        """Abort every connection (``holding``: only the one subscribed to that ``(exchange type, token)``);
        each instrument the dropped clients held advances ``missed`` unseen ticks."""
        held = self.sim.stats["subscriptions"] if missed and holding is None else 0
        self.sim.drop_connections(missed=missed, holding=holding)
        self.missed_injected += missed * held
        self.injected["drop"] += 1

    # ------------------------------------------------------------------ the session
    def revoke_session(self, *, drop: bool = True) -> None:
        """Refuse every token issued so far (JWT, refresh and feed): REST answers 403 "Invalid Token"
        (AG8001), socket upgrades 401. ``drop``: abort both sockets' connections too, as a session
        killed at the broker ends them. A new login issues tokens that work."""
        self.sim.rest.tokens.revoke()
        if drop:
            self.sim.drop_connections()
            self.sim.orders.drop_connections()
        self.injected["revoke_session"] += 1

    def refuse_logins(self, refuse: bool = True) -> None:
        """Make every login fail (``refuse=False``: accept them again)."""
        self.sim.rest.tokens.refuse_logins = refuse
        self.injected["refuse_logins"] += 1

    def stall(self, seconds: float | None = None) -> None:
        """Stop sending ticks (connections stay open, pings answered); ``seconds``: resume after."""
        self.sim.pause()
        self.injected["stall"] += 1
        if seconds is not None:
            self._later(seconds, self.unstall)

    def unstall(self) -> None:
        self.sim.resume()

    def slow(self, delay_ms: float, seconds: float | None = None) -> None:
        """Delay every frame by ``delay_ms``; ``seconds``: back to no delay after."""
        self.sim.set_delay(delay_ms)
        self.injected["slow"] += 1
        if seconds is not None:
            self._later(seconds, self.sim.set_delay, 0.0)

    def gap(self, n: int, tokens=None) -> None:
        """Skip ``n`` sequence numbers per subscribed token without a disconnect.

        A client only checks sequence numbers after a reconnect, so this gap
        is seen only if a reconnect comes before the token's next tick.
        """
        self.sim.skip(n, tokens)
        self.injected["gap"] += 1

    # ------------------------------------------------------------------ bad frames
    def malformed(self, n: int = 1) -> None:
        """``n`` binary frames of random bytes and length (1..600), none of them a packet."""
        frames = [spoil(self.rng.randbytes(self.rng.randint(1, 600))) for _ in range(n)]
        self._send_bad(frames, "malformed")

    def wrong_mode(self, n: int = 1) -> None:
        """``n`` frames of exactly 51, 123, 379 or 443 bytes whose mode byte belongs to another size."""
        frames = []
        for _ in range(n):
            size = self.rng.choice(list(_MODE_OF_SIZE))
            frames.append(spoil(bytes([_MODE_OF_SIZE[size]]) + self.rng.randbytes(size - 1)))
        self._send_bad(frames, "wrong_mode")

    def truncated(self, n: int = 1) -> None:
        """``n`` real packets (any mode) cut short at a random length."""
        frames = []
        for _ in range(n):
            packet = self._packet()
            frames.append(spoil(packet[:self.rng.randint(0, len(packet) - 1)]))
        self._send_bad(frames, "truncated")

    def oversized(self, n: int = 1, extra: int | None = None) -> None:
        """``n`` real packets followed by ``extra`` junk bytes (default: 1 byte to 64 KiB)."""
        frames = [spoil(self._packet() + self.rng.randbytes(extra or self.rng.randint(1, 65536)))
                  for _ in range(n)]
        self._send_bad(frames, "oversized")

    def error_frame(self, code: str = "E1001", n: int = 1) -> None:
        message = ERRORS.get(code, "Simulated error")
        frame = json.dumps({"correlationID": "kitfault", "errorCode": code, "errorMessage": message})
        self.sim.send_frames([frame] * n)
        self.bad_frames["error_frames"] += n
        self.injected["error_frame"] += 1

    def unknown_text(self, text: str = "not a SmartAPI frame", n: int = 1) -> None:
        if text == "pong":
            raise ValueError("'pong' is a valid frame")
        self.sim.send_frames([text] * n)
        self.bad_frames["unknown_text"] += n
        self.injected["unknown_text"] += 1

    def frames(self, frames: list[bytes | str]) -> Counter:
        """Send arbitrary frames, in order; returns (and adds to ``bad_frames``) what the client should count.

        Binary frames that are packets count as ``ticks``; ``"pong"`` as ``pongs``.
        """
        expected = Counter(_expected_counter(f) for f in frames)
        self.sim.send_frames(frames)
        self.bad_frames.update({k: v for k, v in expected.items() if k in ("malformed", "error_frames",
                                                                           "unknown_text")})
        self.injected["frames"] += 1
        return expected

    # ------------------------------------------------------------------ by name
    def inject(self, kind: str) -> str:
        """Apply one fault of ``kind`` (one of ``KINDS``) with this object's defaults; returns a description."""
        if kind == "drop":
            self.drop(missed=self.drop_missed)
            return f"drop, {self.drop_missed} ticks per token missed"
        if kind == "stall":
            self.stall(seconds=self.stall_seconds)
            return f"stall for {self.stall_seconds:g}s"
        if kind == "slow":
            self.slow(self.slow_ms, seconds=self.slow_seconds)
            return f"every frame {self.slow_ms:g} ms late for {self.slow_seconds:g}s"
        if kind == "error_frame":
            self.error_frame(self.rng.choice(list(ERRORS)))
            return "one error frame"
        if kind in ("malformed", "truncated", "oversized", "wrong_mode"):
            getattr(self, kind)(self.burst)
            return f"{self.burst} {kind.replace('_', '-')} frames"
        raise ValueError(f"unknown fault {kind!r}; one of {KINDS}")

    def clear(self) -> None:
        """Undo lasting faults now: resume ticks, no delay, pending timers cancelled."""
        with self._lock:
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
        if self.sim.running:
            self.sim.resume()
            self.sim.set_delay(0.0)

    # ------------------------------------------------------------------ helpers
    def _send_bad(self, frames: list[bytes], kind: str) -> None:
        assert not any(is_packet(f) for f in frames)
        self.sim.send_frames(frames)
        self.bad_frames["malformed"] += len(frames)
        self.injected[kind] += 1

    def _packet(self) -> bytes:
        """A well-formed packet of a random mode (contents need not match any instrument)."""
        mode = self.rng.choice((LTP, QUOTE, SNAP_QUOTE, DEPTH))
        head = encode_ltp(2, "43650", self.rng.randint(1, 10**6), 1_700_000_000_000, 12_345)
        packet = bytes([mode]) + head[1:] + self.rng.randbytes(PACKET_SIZE[mode] - len(head))
        assert is_packet(packet)
        return packet

    def _later(self, seconds: float, fn, *args) -> None:
        def run():
            with self._lock:
                if timer in self._timers:
                    self._timers.remove(timer)
                else:
                    return   # cancelled by clear()
            if self.sim.running:
                fn(*args)
        timer = threading.Timer(seconds, run)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()


def _expected_counter(frame: bytes | str) -> str:
    """Which client counter a frame should land in."""
    if isinstance(frame, (bytes, bytearray)):
        return "ticks" if is_packet(frame) else "malformed"
    if frame == "pong":
        return "pongs"
    try:
        payload = json.loads(frame)
    except ValueError:
        return "unknown_text"
    return "error_frames" if isinstance(payload, dict) and "errorCode" in payload else "unknown_text"
