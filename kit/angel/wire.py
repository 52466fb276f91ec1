"""SmartAPI WebSocket V2 binary packets: the layout, in one place.

Little-endian, prices in paise, as Angel One documents SmartAPI WebSocket V2:

    0  u8 mode | 1 u8 exchange type | 2..26 token (ASCII, NUL-terminated)
    27 i64 sequence | 35 i64 exchange ts (ms) | 43 i64 LTP          -> 51 bytes
    QUOTE adds 51..122: ltq, avg, volume, buy qty (f64), sell qty (f64), o/h/l/c
                                                                    -> 123 bytes
    SNAP_QUOTE adds 123 ltt, 131 OI, 139 OI change, 147..346 ten 20-byte best-five
    records (u16 flag, i64 qty, i64 price, u16 orders), 347.. circuits, 52w
                                                                    -> 379 bytes
    DEPTH: 20 buy + 20 sell levels of (i32 qty, i32 price, i16 orders) at 43
                                                                    -> 443 bytes

One precompiled ``struct.Struct`` per mode, read with ``unpack_from``: the
simulator encodes with these, the feed decodes with them. ``parse_sdk_dict``
returns exactly what the SDK's ``_parse_binary_data`` returns (a test holds it
to that, field for field), so it can stand in for the SDK's parser.
"""
from __future__ import annotations

import struct

from kit.core.tick import DEPTH, LTP, MODE_NAMES, QUOTE, SNAP_QUOTE, Quote, Tick

from kit.core.market import price_divisor

HEADER = struct.Struct("<BB25sqqq")                 # LTP packet, and every packet's head
QUOTE_BODY = struct.Struct("<qqqddqqqq")            # at offset 51
SNAP_BODY = struct.Struct("<qqq")                   # at offset 123
BEST_FIVE = struct.Struct("<" + "Hqqh" * 10)       # at offset 147, signed orders per docs
BEST_FIVE_SDK = struct.Struct("<" + "HqqH" * 10)   # the SDK reads orders unsigned
SNAP_TAIL = struct.Struct("<qqqq")                  # at offset 347
DEPTH_SIDE = struct.Struct("<" + "iih" * 20)        # at 43 (buy) and 243 (sell)
DEPTH_HEAD = struct.Struct("<BB25sqq")

QUOTE_FULL = struct.Struct("<BB25sqqq" "qqqddqqqq")
SNAP_FULL = struct.Struct("<BB25sqqq" "qqqddqqqq" "qqq" + "Hqqh" * 10 + "qqqq")

PACKET_SIZE = {LTP: 51, QUOTE: 123, SNAP_QUOTE: 379, DEPTH: 443}
assert HEADER.size == 51 and QUOTE_FULL.size == 123 and SNAP_FULL.size == 379


class MalformedFrame(ValueError):
    """A binary frame that is not a well-formed SmartAPI packet."""


def encode_token(token: str) -> bytes:
    raw = token.encode("ascii")
    if len(raw) > 24:
        raise ValueError(f"token {token!r} longer than 24 characters")
    return raw


# --------------------------------------------------------------------------- encode
def encode_ltp(exchange_type: int, token: str, seq: int, exchange_ts: int, ltp_paise: int) -> bytes:
    return HEADER.pack(LTP, exchange_type, encode_token(token), seq, exchange_ts, ltp_paise)


def encode_quote(exchange_type, token, seq, exchange_ts, ltp_paise, *, ltq, avg, volume,
                 buy_qty, sell_qty, open_, high, low, close) -> bytes:
    return QUOTE_FULL.pack(QUOTE, exchange_type, encode_token(token), seq, exchange_ts, ltp_paise,
                           ltq, avg, volume, float(buy_qty), float(sell_qty), open_, high, low, close)


def encode_snap_quote(exchange_type, token, seq, exchange_ts, ltp_paise, *, ltq, avg, volume,
                      buy_qty, sell_qty, open_, high, low, close, ltt, oi, oi_change,
                      best_five, upper, lower, high_52w, low_52w) -> bytes:
    """``best_five``: ten ``(flag, qty, price_paise, orders)`` records, flag 1 = buy."""
    flat = [v for rec in best_five for v in rec]
    if len(flat) != 40:
        raise ValueError("best_five needs exactly ten (flag, qty, price, orders) records")
    return SNAP_FULL.pack(SNAP_QUOTE, exchange_type, encode_token(token), seq, exchange_ts, ltp_paise,
                          ltq, avg, volume, float(buy_qty), float(sell_qty), open_, high, low, close,
                          ltt, oi, oi_change, *flat, upper, lower, high_52w, low_52w)


# --------------------------------------------------------------------------- decode to Tick
_token_cache: dict[bytes, str] = {}


def _token(raw: bytes) -> str:
    tok = _token_cache.get(raw)
    if tok is None:
        # latin-1 maps byte n to chr(n), exactly as the SDK's per-byte chr() loop does.
        tok = raw.partition(b"\0")[0].decode("latin-1")
        if len(_token_cache) < 100_000:
            _token_cache[raw] = tok
    return tok


def parse_tick(data: bytes, recv_ns: int = 0) -> Tick:
    """Decode one binary frame into a ``Tick``; raise ``MalformedFrame`` if it is not one."""
    n = len(data)
    if n == 51:
        mode, ex, raw, seq, ts, ltp = HEADER.unpack(data)
        if mode != LTP:
            raise MalformedFrame(f"{n}-byte frame with mode {mode}")
        return Tick(_token(raw), ex, LTP, seq, ts, ltp / price_divisor(ex), recv_ns)
    if n == 123:
        v = QUOTE_FULL.unpack(data)
        if v[0] != QUOTE:
            raise MalformedFrame(f"{n}-byte frame with mode {v[0]}")
        d = price_divisor(v[1])
        q = Quote(v[6], v[7] / d, v[8], v[9], v[10], v[11] / d, v[12] / d, v[13] / d, v[14] / d)
        return Tick(_token(v[2]), v[1], QUOTE, v[3], v[4], v[5] / d, recv_ns, q)
    if n == 379:
        v = SNAP_FULL.unpack(data)
        if v[0] != SNAP_QUOTE:
            raise MalformedFrame(f"{n}-byte frame with mode {v[0]}")
        d = price_divisor(v[1])
        buys, sells = [], []
        for i in range(18, 58, 4):
            flag, qty, price, orders = v[i:i + 4]
            (buys if flag else sells).append((price / d, qty, orders))
        q = Quote(v[6], v[7] / d, v[8], v[9], v[10], v[11] / d, v[12] / d, v[13] / d, v[14] / d,
                  v[15], v[16], v[17], tuple(buys), tuple(sells),
                  v[58] / d, v[59] / d, v[60] / d, v[61] / d)
        return Tick(_token(v[2]), v[1], SNAP_QUOTE, v[3], v[4], v[5] / d, recv_ns, q)
    if n == 443 and data[0] == DEPTH:
        # 20-level depth has no LTP or sequence; the kit surfaces it as a
        # DEPTH tick whose quote carries the levels.
        mode, ex, raw, _, ts = DEPTH_HEAD.unpack_from(data)
        d = price_divisor(ex)
        b = DEPTH_SIDE.unpack_from(data, 43)
        s = DEPTH_SIDE.unpack_from(data, 243)
        buys = tuple((b[i + 1] / d, b[i], b[i + 2]) for i in range(0, 60, 3))
        sells = tuple((s[i + 1] / d, s[i], s[i + 2]) for i in range(0, 60, 3))
        q = Quote(0, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, best_buy=buys, best_sell=sells)
        return Tick(_token(raw), ex, DEPTH, 0, ts, buys[0][0] if buys else 0.0, recv_ns, q)
    raise MalformedFrame(f"{n}-byte frame (mode byte {data[0] if n else None}) is no SmartAPI packet")


# --------------------------------------------------------------------------- SDK-compatible dict
def parse_sdk_dict(data: bytes) -> dict:
    """Same output as ``SmartWebSocketV2._parse_binary_data`` (raw paise ints, SDK key names)."""
    mode, ex, raw, seq, ts, ltp = HEADER.unpack_from(data)
    out = {
        "subscription_mode": mode,
        "exchange_type": ex,
        "token": _token(raw),
        "sequence_number": seq,
        "exchange_timestamp": ts,
        "last_traded_price": ltp,
        "subscription_mode_val": MODE_NAMES.get(mode),
    }
    if mode == QUOTE or mode == SNAP_QUOTE:
        (out["last_traded_quantity"], out["average_traded_price"], out["volume_trade_for_the_day"],
         out["total_buy_quantity"], out["total_sell_quantity"], out["open_price_of_the_day"],
         out["high_price_of_the_day"], out["low_price_of_the_day"],
         out["closed_price"]) = QUOTE_BODY.unpack_from(data, 51)
    if mode == SNAP_QUOTE:
        out["last_traded_timestamp"], out["open_interest"], out["open_interest_change_percentage"] = \
            SNAP_BODY.unpack_from(data, 123)
        (out["upper_circuit_limit"], out["lower_circuit_limit"], out["52_week_high_price"],
         out["52_week_low_price"]) = SNAP_TAIL.unpack_from(data, 347)
        v = BEST_FIVE_SDK.unpack_from(data, 147)
        flagged, unflagged = [], []
        for i in range(0, 40, 4):
            rec = {"flag": v[i], "quantity": v[i + 1], "price": v[i + 2], "no of orders": v[i + 3]}
            (unflagged if v[i] == 0 else flagged).append(rec)
        # The SDK files flag 0 under "buy" internally, then swaps the two lists on output.
        out["best_5_buy_data"] = flagged
        out["best_5_sell_data"] = unflagged
    if mode == DEPTH:
        del out["sequence_number"], out["last_traded_price"], out["subscription_mode_val"]
        out["packet_received_time"] = ts
        b = DEPTH_SIDE.unpack_from(data, 43)
        s = DEPTH_SIDE.unpack_from(data, 243)
        out["depth_20_buy_data"] = [{"quantity": b[i], "price": b[i + 1], "num_of_orders": b[i + 2]}
                                    for i in range(0, 60, 3)]
        out["depth_20_sell_data"] = [{"quantity": s[i], "price": s[i + 1], "num_of_orders": s[i + 2]}
                                     for i in range(0, 60, 3)]
    return out


def tick_from_sdk_dict(d: dict, recv_ns: int = 0) -> Tick:
    """Build a ``Tick`` from the SDK parser's dict (used when the SDK parser is selected)."""
    mode, ex = d["subscription_mode"], d["exchange_type"]
    div = price_divisor(ex)
    q = None
    if mode in (QUOTE, SNAP_QUOTE):
        q = Quote(d["last_traded_quantity"], d["average_traded_price"] / div, d["volume_trade_for_the_day"],
                  d["total_buy_quantity"], d["total_sell_quantity"], d["open_price_of_the_day"] / div,
                  d["high_price_of_the_day"] / div, d["low_price_of_the_day"] / div, d["closed_price"] / div)
    if mode == SNAP_QUOTE:
        def levels(recs):
            # The SDK reads the orders field unsigned; the docs say i16.
            return tuple((r["price"] / div, r["quantity"],
                          r["no of orders"] - 65536 if r["no of orders"] >= 32768 else r["no of orders"])
                         for r in recs)
        q.last_traded_ts = d["last_traded_timestamp"]
        q.open_interest = d["open_interest"]
        q.oi_change_pct = d["open_interest_change_percentage"]
        q.best_buy = levels(d["best_5_buy_data"])
        q.best_sell = levels(d["best_5_sell_data"])
        q.upper_circuit = d["upper_circuit_limit"] / div
        q.lower_circuit = d["lower_circuit_limit"] / div
        q.high_52w = d["52_week_high_price"] / div
        q.low_52w = d["52_week_low_price"] / div
    if mode == DEPTH:
        raise MalformedFrame("DEPTH frames are decoded by the kit's own parser only")
    return Tick(d["token"], ex, mode, d["sequence_number"], d["exchange_timestamp"],
                d["last_traded_price"] / div, recv_ns, q)
