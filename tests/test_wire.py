"""The kit's packet parser against the SDK's own, field for field, on random packets."""
from __future__ import annotations

import math
import random
import struct

import pytest

from kit.angel import wire
from kit.angel.sdk import SmartWebSocketV2
from kit.core.tick import DEPTH, LTP, QUOTE, SNAP_QUOTE
from kit.core.market import CDE_FO

N = 10_000
_sdk = SmartWebSocketV2.__new__(SmartWebSocketV2)   # the parser needs no connection state


def random_packet(rng: random.Random, mode: int) -> bytes:
    size = wire.PACKET_SIZE[mode]
    data = bytearray(rng.randbytes(size))
    data[0] = mode
    data[1] = rng.choice([1, 2, 3, 4, 5, 7, 13])
    token = str(rng.randrange(1, 10 ** rng.randrange(1, 12))).encode()
    data[2:27] = token + b"\0" + bytes(24 - len(token))   # random bytes after the NUL would be ignored anyway
    if mode == SNAP_QUOTE:
        for i in range(10):   # flags: the wire only uses 0/1, but any value must parse identically
            struct.pack_into("<H", data, 147 + 20 * i, rng.choice([0, 1, rng.randrange(65536)]))
    return bytes(data)


def same(a, b) -> bool:
    """Bit-for-bit equality, NaN included."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("mode", [LTP, QUOTE, SNAP_QUOTE, DEPTH])
def test_fast_dict_parser_equals_the_sdk_parser(mode):
    rng = random.Random(mode)
    for _ in range(N):
        packet = random_packet(rng, mode)
        expected = _sdk._parse_binary_data(packet)
        got = wire.parse_sdk_dict(packet)
        assert same(got, expected), (packet.hex(), got, expected)


@pytest.mark.parametrize("mode", [LTP, QUOTE, SNAP_QUOTE])
def test_tick_parser_agrees_with_the_sdk_parser(mode):
    rng = random.Random(100 + mode)
    for _ in range(N):
        packet = random_packet(rng, mode)
        fast = wire.parse_tick(packet, 42)
        via_sdk = wire.tick_from_sdk_dict(_sdk._parse_binary_data(packet), 42)
        if mode == SNAP_QUOTE:
            # the SDK files any non-zero flag under "buy"; so does the kit
            assert len(fast.quote.best_buy) + len(fast.quote.best_sell) == 10
        assert same(list(_fields(fast)), list(_fields(via_sdk)))


def _fields(tick):
    yield from (tick.token, tick.exchange_type, tick.mode, tick.seq, tick.exchange_ts, tick.ltp, tick.recv_ns)
    if tick.quote is not None:
        q = tick.quote
        yield from (getattr(q, f) for f in q.__slots__)


def test_prices_are_rupees_and_currency_uses_1e7():
    t = wire.parse_tick(wire.encode_ltp(2, "43650", 7, 1_700_000_000_000, 12_345), 0)
    assert (t.token, t.seq, t.ltp) == ("43650", 7, 123.45)
    c = wire.parse_tick(wire.encode_ltp(CDE_FO, "1", 1, 0, 831_234_567), 0)
    assert math.isclose(c.ltp, 83.1234567)


@pytest.mark.parametrize("frame", [b"", b"\x01", bytes(50), bytes([1]) + bytes(121), bytes([9]) + bytes(50),
                                   bytes([2]) + bytes(50), bytes(1000)])
def test_malformed_frames_raise_malformed_frame(frame):
    with pytest.raises(wire.MalformedFrame):
        wire.parse_tick(frame)
