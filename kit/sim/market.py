"""The simulated market: one seeded random walk per instrument, encoded as SmartAPI packets.

``SimInstrument`` is one token's market (price path, quote fields, order
book); ``Market`` holds every instrument the simulator has made, creating one
on first use for any token a client names. Prices are wire units (paise; 1e-7
rupee for currency derivatives), on the tick grid.
"""
from __future__ import annotations

import random

from kit.angel.wire import DEPTH_HEAD, DEPTH_SIDE, encode_ltp, encode_quote, encode_snap_quote, encode_token
from kit.core.market import BSE_CM, CDE_FO, NSE_CM, price_divisor
from kit.core.tick import DEPTH, LTP, QUOTE, SNAP_QUOTE

# Index levels the defaults should look like; other index tokens get a random level.
_INDEX_LEVELS = {(NSE_CM, "99926000"): 24_000.0, (NSE_CM, "99926009"): 52_000.0}
# Half-width of one tick's uniform price move, as a fraction of the opening price.
_MOVE = {"index": 0.00005, "cash": 0.0002, "derivative": 0.001, "currency": 0.0001}


def _kind(exchange_type: int, token: str) -> str:
    if exchange_type == CDE_FO:
        return "currency"
    if exchange_type in (NSE_CM, BSE_CM):
        return "index" if token.startswith("999") else "cash"
    return "derivative"


def _opening_rupees(rng: random.Random, kind: str, key: tuple[int, str]) -> float:
    if kind == "index":
        return _INDEX_LEVELS.get(key, rng.uniform(10_000, 60_000)) * rng.uniform(0.99, 1.01)
    if kind == "cash":
        return rng.uniform(100, 3_000)
    if kind == "currency":
        return rng.uniform(80, 90)
    return rng.uniform(20, 400)   # option premia


class SimInstrument:
    """One token's market: a seeded random walk plus the running day's quote fields.

    Prices are wire units (paise; 1e-7 rupee for currency derivatives), always
    a multiple of the tick size and never below one tick. The walk and traded
    quantities come from ``rng`` alone, so a token's price path depends only on
    the seed, not on who subscribed in which mode; order-book details come from
    a second generator, ``book``.
    """
    __slots__ = ("key", "exchange_type", "token", "rng", "book", "tick_size", "step", "lot",
                 "seq", "exchange_ts", "ltp", "ltq", "volume", "turnover", "open", "high", "low",
                 "close", "open_interest", "upper", "lower", "high_52w", "low_52w")

    def __init__(self, seed: int, exchange_type: int, token: str):
        encode_token(token)   # fail early on a token the wire cannot carry
        self.key = (exchange_type, token)
        self.exchange_type, self.token = exchange_type, token
        self.rng = rng = random.Random(f"{seed}:{exchange_type}:{token}")
        self.book = random.Random(f"{seed}:{exchange_type}:{token}:book")
        kind = _kind(exchange_type, token)
        unit = price_divisor(exchange_type)
        self.tick_size = 25_000 if exchange_type == CDE_FO else 5   # ₹0.0025 / ₹0.05
        self.close = self._on_tick_grid(_opening_rupees(rng, kind, self.key) * unit)
        self.step = max(1, round(self.close * _MOVE[kind] / self.tick_size))
        self.lot = 1 if kind in ("index", "cash") else 65
        self.seq = 0
        self.exchange_ts = 0
        self.ltp = self.open = self.high = self.low = self._on_tick_grid(self.close * rng.uniform(0.995, 1.005))
        self.ltq = self.volume = self.turnover = 0
        self.open_interest = rng.randint(1_000, 50_000) * self.lot if kind in ("derivative", "currency") else 0
        self.upper = self._on_tick_grid(self.close * 1.2)
        self.lower = self._on_tick_grid(self.close * 0.8)
        self.high_52w = self._on_tick_grid(self.close * rng.uniform(1.05, 1.5))
        self.low_52w = self._on_tick_grid(self.close * rng.uniform(0.5, 0.95))

    def _on_tick_grid(self, price: float) -> int:
        return max(self.tick_size, round(price / self.tick_size) * self.tick_size)

    def advance(self, now_ms: int) -> None:
        """One trade: the next sequence number, a price move, a traded quantity."""
        rng, step, tick = self.rng, self.step, self.tick_size
        ltp = self.ltp + (int(rng.random() * (2 * step + 1)) - step) * tick
        if ltp < tick:
            ltp = tick
        self.ltp = ltp
        if ltp > self.high:
            self.high = ltp
        elif ltp < self.low:
            self.low = ltp
        self.ltq = ltq = (1 + int(rng.random() * 20)) * self.lot
        self.volume += ltq
        self.turnover += ltq * ltp
        self.seq += 1
        self.exchange_ts = now_ms

    def encode(self, mode: int) -> bytes:
        """The current tick as a packet of ``mode``."""
        if mode == LTP:
            return encode_ltp(self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp)
        if mode == QUOTE:
            return encode_quote(self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp,
                                **self._quote_fields())
        if mode == SNAP_QUOTE:
            bid = self._best_bid()
            self.open_interest = max(0, self.open_interest + self.book.randint(-5, 5) * self.lot)
            return encode_snap_quote(
                self.exchange_type, self.token, self.seq, self.exchange_ts, self.ltp,
                **self._quote_fields(),
                # Last traded time in epoch seconds, as users report the feed sends it (unverified).
                ltt=self.exchange_ts // 1000, oi=self.open_interest,
                oi_change=0,   # documented as a dummy field
                best_five=[(1, q, p, o) for q, p, o in self._levels(5, bid, -1)]
                + [(0, q, p, o) for q, p, o in self._levels(5, bid + self.tick_size, +1)],
                upper=self.upper, lower=self.lower,
                high_52w=max(self.high_52w, self.high), low_52w=min(self.low_52w, self.low))
        if mode == DEPTH:
            bid = self._best_bid()
            return encode_depth(self.exchange_type, self.token, self.seq, self.exchange_ts,
                                self._levels(20, bid, -1), self._levels(20, bid + self.tick_size, +1))
        raise ValueError(f"unknown mode {mode}")

    def _quote_fields(self) -> dict:
        resting = self.volume // 4 + 10 * self.lot
        return dict(ltq=self.ltq, avg=self.turnover // self.volume if self.volume else self.ltp,
                    volume=self.volume,
                    buy_qty=round(resting * self.book.uniform(0.5, 1.5)),
                    sell_qty=round(resting * self.book.uniform(0.5, 1.5)),
                    open_=self.open, high=self.high, low=self.low, close=self.close)

    def _best_bid(self) -> int:
        """The touch is one tick wide and straddles the LTP: the last trade hit the bid or lifted the ask."""
        return self.ltp - self.tick_size if self.book.random() < 0.5 else self.ltp

    def _levels(self, n: int, best: int, side: int) -> list[tuple[int, int, int]]:
        """``n`` (qty, price, orders) levels from ``best`` outwards: down for bids (side -1), up for asks.

        A level that would fall below one tick is empty (all zeros), as on the real feed.
        """
        book, tick = self.book, self.tick_size
        levels = []
        for i in range(n):
            price = best + side * i * tick
            if price < tick:
                levels.append((0, 0, 0))
                continue
            orders = book.randint(1, 25)
            levels.append((orders * book.randint(1, 8) * self.lot, price, orders))
        return levels


def encode_depth(exchange_type: int, token: str, seq: int, exchange_ts: int,
                 bids: list[tuple[int, int, int]], asks: list[tuple[int, int, int]]) -> bytes:
    """A 443-byte DEPTH packet; ``bids`` / ``asks``: twenty (qty, price, orders) each."""
    return (DEPTH_HEAD.pack(DEPTH, exchange_type, encode_token(token), seq, exchange_ts)
            + DEPTH_SIDE.pack(*(v for level in bids for v in level))
            + DEPTH_SIDE.pack(*(v for level in asks for v in level)))


class Market:
    """Every instrument the simulator knows, by ``(exchange type, token)``; made on first use."""

    def __init__(self, seed: int, keys=()):
        self.seed = seed
        self.instruments: dict[tuple[int, str], SimInstrument] = {key: SimInstrument(seed, *key) for key in keys}

    def instrument(self, key: tuple[int, str]) -> SimInstrument:
        inst = self.instruments.get(key)
        if inst is None:
            inst = self.instruments[key] = SimInstrument(self.seed, *key)
        return inst

    def skip(self, n: int, instruments, now_ms: int) -> int:
        """Advance each instrument ``n`` ticks that nobody is sent; the number of ticks skipped."""
        for inst in instruments:
            for _ in range(n):
                inst.advance(now_ms)
        return n * len(instruments)

    def last_seq(self) -> dict[tuple[int, str], int]:
        return {key: inst.seq for key, inst in self.instruments.items() if inst.seq}
