"""The kit's binary parser against the SDK's ``_parse_binary_data``, per subscription mode.

Packets are what the simulator sends (50 instruments, consecutive ticks), so
token strings repeat as they do on a real feed. Four ways to parse are timed:

- ``sdk``       the SDK's ``_parse_binary_data`` (``kit.angel.sdk.sdk_parse_binary``): a dict
- ``fast_dict`` ``kit.angel.wire.parse_sdk_dict``: the same dict, bit for bit (``tests/test_wire.py``)
- ``fast_tick`` ``kit.angel.wire.parse_tick``: a ``Tick``, what ``parser="fast"`` feeds the engine
- ``sdk_tick``  ``tick_from_sdk_dict(_parse_binary_data(...))``: what ``parser="sdk"`` does

Each figure is the best of ``repeats`` timings of a pass over all packets,
per packet: the least disturbed by other processes on a shared machine.
"""
from __future__ import annotations

import timeit

from kit.angel.sdk import sdk_parse_binary
from kit.angel.wire import parse_sdk_dict, parse_tick, tick_from_sdk_dict
from kit.core.tick import DEPTH, LTP, MODE_NAMES, QUOTE, SNAP_QUOTE
from kit.sim.market import SimInstrument


def sample_packets(mode: int, n_instruments: int = 50, ticks_each: int = 20, seed: int = 7) -> list[bytes]:
    """Packets of ``mode`` as the simulator encodes them, instruments interleaved."""
    instruments = [SimInstrument(seed, 2, str(43650 + i)) for i in range(n_instruments)]
    packets = []
    for k in range(ticks_each):
        for inst in instruments:
            inst.advance(1_700_000_000_000 + k)
            packets.append(inst.encode(mode))
    return packets


def _per_packet_us(fn, packets: list[bytes], repeats: int) -> float:
    def run():
        for p in packets:
            fn(p)
    timer = timeit.Timer(run)
    return min(timer.repeat(repeat=repeats, number=1)) / len(packets) * 1e6


def bench_parsers(repeats: int = 7, ticks_each: int = 20) -> dict:
    """µs per packet for each parser and mode, and the SDK-over-kit ratios."""
    out = {}
    for mode in (LTP, QUOTE, SNAP_QUOTE, DEPTH):
        packets = sample_packets(mode, ticks_each=ticks_each)
        row = {"packet_bytes": len(packets[0]), "packets": len(packets)}
        row["sdk_us"] = _per_packet_us(sdk_parse_binary, packets, repeats)
        row["fast_dict_us"] = _per_packet_us(parse_sdk_dict, packets, repeats)
        row["fast_tick_us"] = _per_packet_us(parse_tick, packets, repeats)
        if mode != DEPTH:   # the SDK-parser path of the feed does not take DEPTH (see kit.angel.wire)
            row["sdk_tick_us"] = _per_packet_us(lambda p: tick_from_sdk_dict(sdk_parse_binary(p)),
                                                packets, repeats)
            row["tick_ratio"] = row["sdk_tick_us"] / row["fast_tick_us"]
        row["dict_ratio"] = row["sdk_us"] / row["fast_dict_us"]
        out[MODE_NAMES[mode]] = row
    return out


__all__ = ["bench_parsers", "sample_packets"]
