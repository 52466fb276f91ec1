"""getCandleData on the REST simulator: deterministic candles within NSE hours.

Registered on a ``RestSimulator`` (``Simulator`` does it in its constructor):

    POST /rest/secure/angelbroking/historical/v1/getCandleData
    {"exchange": "NSE", "symboltoken": "99926000", "interval": "FIVE_MINUTE",
     "fromdate": "2024-01-01 09:15", "todate": "2024-01-05 15:30"}
    -> {"status": true, "message": "SUCCESS", "errorcode": "", "data": [["2024-01-01T09:15:00+05:30", o, h, l, c, v], ...]}

Like the real API: at most 3 requests a second (plain-text 403 beyond),
``fromdate`` and ``todate`` both inclusive (a candle is served when its start
time is in the range; daily candles are stamped 00:00 and served by date),
at most ``MAX_DAYS[interval]`` days per request, else
``{"status": false, "errorcode": "AB13000", ...}``. The error code and
message texts are the simulator's own (Angel One's exact wording is
unverified); the shape is the API's.

The prices are a function of (seed, exchange, token, day, minute) only, so
any two requests agree on every candle they share, whatever their ranges:
Monday to Friday, 09:15-15:30 IST, 375 one-minute steps a day from an
opening level that drifts slowly from day to day, on a ₹0.05 grid. No
candle after the current time is served.
"""
from __future__ import annotations

import zlib
from datetime import datetime, timedelta

import numpy as np

from kit.core.market import EXCHANGE_TYPES, IST
from kit.angel.candles import CANDLE_PATH, INTERVAL_MINUTES, MAX_DAYS
from kit.sim.rest import RestRequest, RestSimulator, reply

DATE_FORMAT = "%Y-%m-%d %H:%M"
OPEN_MINUTE = 9 * 60 + 15          # 09:15
MINUTES_PER_DAY = 375              # 09:15 .. 15:30
TICK = 0.05
INVALID = "AB13000"
# Opening levels the defaults should look like; other tokens get a seeded level.
_LEVELS = {"99926000": 24_000.0, "99926009": 52_000.0}


def register_candles(rest: RestSimulator, *, seed: int = 7, per_second: int = 3) -> "CandleServer":
    """Serve getCandleData on ``rest``, limited to ``per_second`` requests a second."""
    server = CandleServer(seed)
    rest.route("POST", CANDLE_PATH)(server.handle)
    rest.limit(CANDLE_PATH, per_second, 1.0)
    return server


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a fast, well-spread hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(key: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from uint64 keys."""
    return (_mix(key) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class CandleServer:
    """Builds the candles and answers requests in the API's shapes."""

    def __init__(self, seed: int = 7):
        self.seed = seed

    # ------------------------------------------------------------------ the route
    def handle(self, req: RestRequest):
        b = req.body
        exchange, token, interval = b.get("exchange"), b.get("symboltoken"), b.get("interval")
        if exchange not in EXCHANGE_TYPES:
            return reply(status=False, message=f"Invalid exchange {exchange!r}", errorcode=INVALID)
        if not isinstance(token, str) or not token.strip():
            return reply(status=False, message="Invalid symboltoken", errorcode=INVALID)
        if interval not in MAX_DAYS:
            return reply(status=False, message=f"Invalid interval {interval!r}", errorcode=INVALID)
        try:
            start = datetime.strptime(str(b.get("fromdate")), DATE_FORMAT)
            end = datetime.strptime(str(b.get("todate")), DATE_FORMAT)
        except ValueError:
            return reply(status=False, message="Invalid date format, expected yyyy-MM-dd HH:mm", errorcode=INVALID)
        if start > end:
            return reply(status=False, message="fromdate is after todate", errorcode=INVALID)
        if end - start > timedelta(days=MAX_DAYS[interval]):
            return reply(status=False, errorcode=INVALID,
                         message=f"Date range exceeds the maximum of {MAX_DAYS[interval]} days for {interval}")
        return reply(self.candles(exchange, token.strip(), interval, start, end))

    # ------------------------------------------------------------------ the model
    def candles(self, exchange: str, token: str, interval: str, start: datetime, end: datetime) -> list[list]:
        """Rows ``[ts "+05:30", open, high, low, close, volume]`` whose start is in [start, end] (naive IST)."""
        now = datetime.now(IST).replace(tzinfo=None)
        end = min(end, now)
        if start > end:
            return []
        days = np.arange(np.datetime64(start.date(), "D"), np.datetime64(end.date(), "D") + 1)
        days = days[((days.astype(np.int64) + 3) % 7) < 5]          # 1970-01-01 was a Thursday
        if not len(days):
            return []
        o, h, lo, c, v = self._minutes(exchange, token, days.astype(np.int64))
        step = INTERVAL_MINUTES[interval] or MINUTES_PER_DAY
        starts = np.arange(0, MINUTES_PER_DAY, step)
        opens = o[:, starts]
        closes = c[:, np.minimum(starts + step, MINUTES_PER_DAY) - 1]
        highs = np.maximum.reduceat(h, starts, axis=1)
        lows = np.minimum.reduceat(lo, starts, axis=1)
        volumes = np.add.reduceat(v, starts, axis=1)
        if INTERVAL_MINUTES[interval] is None:        # daily candles are stamped at midnight, served by date
            stamps = days.astype("datetime64[m]")[:, None] + np.zeros(1, dtype="timedelta64[m]")
            keep = np.ones(stamps.shape, dtype=bool)
        else:
            stamps = (days.astype("datetime64[m]")[:, None] + np.timedelta64(OPEN_MINUTE, "m")
                      + starts.astype("timedelta64[m]")[None, :])
            keep = (stamps >= np.datetime64(start, "m")) & (stamps <= np.datetime64(end, "m"))
        text = np.char.add(np.datetime_as_string(stamps[keep], unit="s"), "+05:30")
        return [[t, float(a), float(b), float(d), float(e), int(f)] for t, a, b, d, e, f in
                zip(text.tolist(), opens[keep], highs[keep], lows[keep], closes[keep], volumes[keep])]

    def _minutes(self, exchange: str, token: str, day_numbers: np.ndarray):
        """One-minute open/high/low/close/volume, shape (days, 375), for these day numbers."""
        with np.errstate(over="ignore"):      # the hash relies on wrapping uint64 arithmetic
            return self._minutes_unchecked(exchange, token, day_numbers)

    def _minutes_unchecked(self, exchange: str, token: str, day_numbers: np.ndarray):
        ident = np.uint64(zlib.crc32(f"{self.seed}:{exchange}:{token}".encode()))
        base_u = float(_uniform(np.array([ident], dtype=np.uint64))[0])
        base = _LEVELS.get(token, 100.0 + 2900.0 * base_u)
        d = day_numbers.astype(np.float64)
        phase = 2 * np.pi * base_u
        day_key = ident * np.uint64(1_000_003) + day_numbers.astype(np.uint64) * np.uint64(0x9E3779B1)
        level = base * np.exp(0.12 * np.sin(2 * np.pi * d / 365.25 + phase) + 0.04 * np.sin(2 * np.pi * d / 29.0)
                              + 0.02 * (_uniform(day_key) - 0.5))
        minute = np.arange(MINUTES_PER_DAY, dtype=np.uint64)
        key = day_key[:, None] * np.uint64(4099) + minute[None, :] * np.uint64(8)
        steps = 0.0006 * np.sqrt(12.0) * (_uniform(key) - 0.5)          # ~0.06% per minute
        close = level[:, None] * np.exp(np.cumsum(steps, axis=1))
        open_ = np.concatenate([level[:, None], close[:, :-1]], axis=1)
        high = np.maximum(open_, close) * (1 + 0.0004 * _uniform(key + np.uint64(1)))
        low = np.minimum(open_, close) * (1 - 0.0004 * _uniform(key + np.uint64(2)))
        o, h, lo, c = (np.maximum(TICK, np.round(np.round(x / TICK) * TICK, 2)) for x in (open_, high, low, close))
        h = np.maximum(h, np.maximum(o, c))
        lo = np.minimum(lo, np.minimum(o, c))
        shape = 1.0 + 1.5 * ((minute.astype(np.float64) - 187.0) / 187.0) ** 2   # busy open and close
        volume = ((1_000 + 49_000 * _uniform(key + np.uint64(3))) * shape[None, :]).astype(np.int64)
        return o, h, lo, c, volume
