"""Historical candles through the real ``SmartConnect.getCandleData``, any range, one DataFrame in IST.

    from kit.angel.session import Credentials, login
    session = login(Credentials.from_env())
    df = kit.history(session, "99926000", "2024-01-01", "2024-06-30", interval="FIVE_MINUTE")
    df.loc["2024-03-01"]                     # DatetimeIndex in Asia/Kolkata
    kit.research.charts.candles_figure(df)

What it takes care of:

* **Per-request limits.** Angel One serves at most ``MAX_DAYS[interval]``
  days per request (ONE_MINUTE 30, THREE_MINUTE 60, FIVE/TEN_MINUTE 100,
  FIFTEEN/THIRTY_MINUTE 200, ONE_HOUR 400, ONE_DAY 2000). A longer range is
  split into chunks of exactly that span. Both ends of a request are
  inclusive, so neighbouring chunks share their edge candle; it is kept once.
* **Rate limits.** getCandleData allows 3 requests a second (500 a minute,
  5000 an hour). ``CANDLE_LIMITER`` spaces requests client-side, shared by
  every call in the process. If the server still answers with its plain-text
  HTTP 403 "exceeding access rate" (which the SDK raises as a DataException),
  the request is retried with exponential backoff, as are connection errors
  and timeouts.
* **The result.** One DataFrame indexed by candle start time in IST
  (``Asia/Kolkata``), sorted, no duplicate timestamps; columns ``open``,
  ``high``, ``low``, ``close`` (rupees) and ``volume``. ``df.attrs`` records
  how it was fetched: ``requests``, ``retries``, ``rate_limited``,
  ``duplicates_dropped``, ``chunks``.

An API error other than a rate limit (bad token, bad interval, ...) raises
``HistoryError`` with Angel One's message and error code.
"""
from __future__ import annotations

import logging
import random
import time
from datetime import date, datetime, timedelta

import pandas as pd
import requests

from kit.core.market import IST_ZONE
from kit.core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

CANDLE_PATH = "/rest/secure/angelbroking/historical/v1/getCandleData"
DATE_FORMAT = "%Y-%m-%d %H:%M"

# Days per request Angel One allows, per interval.
MAX_DAYS = {"ONE_MINUTE": 30, "THREE_MINUTE": 60, "FIVE_MINUTE": 100, "TEN_MINUTE": 100,
            "FIFTEEN_MINUTE": 200, "THIRTY_MINUTE": 200, "ONE_HOUR": 400, "ONE_DAY": 2000}
INTERVAL_MINUTES = {"ONE_MINUTE": 1, "THREE_MINUTE": 3, "FIVE_MINUTE": 5, "TEN_MINUTE": 10,
                    "FIFTEEN_MINUTE": 15, "THIRTY_MINUTE": 30, "ONE_HOUR": 60, "ONE_DAY": None}
COLUMNS = ["open", "high", "low", "close", "volume"]


class HistoryError(RuntimeError):
    """getCandleData refused a request, or kept failing after every retry."""


# The server counts arrivals; a 5% margin keeps network jitter from pushing a fourth
# request into the same second. Shared by every history() call in the process.
CANDLE_LIMITER = RateLimiter(((3, 1.05), (500, 60.0), (5000, 3600.0)))


def chunks(start: datetime, end: datetime, interval: str) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` split into inclusive spans of at most ``MAX_DAYS[interval]`` days.

    Each chunk starts where the previous ended: the edge candle is fetched
    twice and de-duplicated, so no candle can fall between two chunks.
    """
    if interval not in MAX_DAYS:
        raise ValueError(f"interval must be one of {list(MAX_DAYS)}, not {interval!r}")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    span = timedelta(days=MAX_DAYS[interval])
    out = []
    s = start
    while True:
        e = min(s + span, end)
        out.append((s, e))
        if e >= end:
            return out
        s = e


def to_ist(value, *, end: bool = False) -> datetime:
    """A str / date / datetime / Timestamp as a naive IST datetime, to the minute.

    Naive values are IST; aware ones are converted. A bare date means the
    start of that day, or its last minute (23:59) when ``end`` is true.
    """
    if isinstance(value, str):
        bare_date = ":" not in value
        value = pd.Timestamp(value)
    else:
        bare_date = isinstance(value, date) and not isinstance(value, datetime)
        value = pd.Timestamp(value)
    if value.tzinfo is not None:
        value = value.tz_convert(IST_ZONE).tz_localize(None)
    if bare_date and end:
        value = value.normalize() + pd.Timedelta(hours=23, minutes=59)
    return value.floor("min").to_pydatetime()


def _client_of(client):
    # A kit.angel.session.Session carries its logged-in SmartConnect as .client.
    inner = getattr(client, "client", None)
    return inner if inner is not None and hasattr(inner, "getCandleData") else client


def history(client, token, start, end, interval: str = "ONE_MINUTE", *, exchange: str = "NSE",
            limiter: RateLimiter | None = None, max_retries: int = 6, backoff: float = 0.5,
            progress: bool = False) -> pd.DataFrame:
    """Candles for ``token`` from ``start`` to ``end`` (both inclusive) as one DataFrame in IST.

    ``client``: a logged-in ``SmartConnect`` (``kit.angel.sdk.smart_connect``)
    or a ``kit.angel.session.Session``. ``start`` / ``end``: str, date, datetime or
    Timestamp; naive means IST. ``exchange``: NSE, NFO, BSE, BFO, MCX, CDS.
    ``limiter``: defaults to the process-wide ``CANDLE_LIMITER``.
    ``max_retries`` / ``backoff``: for rate-limit answers and network errors,
    waits of ``backoff × 2**attempt`` seconds (±25 %).

        df = history(session, "99926000", "2024-01-01", "2024-03-31", "FIVE_MINUTE")
    """
    api = _client_of(client)
    start, end = to_ist(start), to_ist(end, end=True)
    spans = chunks(start, end, interval)
    limiter = limiter or CANDLE_LIMITER
    stats = {"requests": 0, "retries": 0, "rate_limited": 0, "duplicates_dropped": 0, "chunks": len(spans)}
    frames = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(spans), unit="request", desc=f"history {token} {interval}")
    try:
        for s, e in spans:
            params = {"exchange": exchange, "symboltoken": str(token), "interval": interval,
                      "fromdate": s.strftime(DATE_FORMAT), "todate": e.strftime(DATE_FORMAT)}
            frames.append(_rows_frame(_fetch(api, params, limiter, max_retries, backoff, stats)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    df = pd.concat(frames) if frames else _rows_frame([])
    df = df.sort_index(kind="stable")
    repeated = df.index.duplicated(keep="last")
    stats["duplicates_dropped"] = int(repeated.sum())
    df = df[~repeated]
    df.attrs.update(stats)
    return df


def _fetch(api, params: dict, limiter: RateLimiter, max_retries: int, backoff: float, stats: dict) -> list:
    # Imported here so the simulator can share this module's tables without loading the SDK.
    from kit.angel.sdk import is_rate_limit_error
    for attempt in range(max_retries + 1):
        limiter.wait()
        stats["requests"] += 1
        try:
            answer = api.getCandleData(dict(params))    # the SDK deletes None values from what it is given
        except Exception as exc:
            if is_rate_limit_error(exc):
                stats["rate_limited"] += 1
                why = "rate limited"
            elif isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                why = f"{type(exc).__name__}"
            else:
                raise HistoryError(f"getCandleData {params['symboltoken']} {params['interval']} "
                                   f"{params['fromdate']}..{params['todate']} failed: {exc}") from exc
            if attempt == max_retries:
                raise HistoryError(f"getCandleData still {why} after {max_retries} retries "
                                   f"({params['fromdate']}..{params['todate']})") from exc
            delay = backoff * 2 ** attempt * random.uniform(0.75, 1.25)
            stats["retries"] += 1
            log.info("getCandleData %s; retry %d in %.2fs", why, attempt + 1, delay)
            time.sleep(delay)
            continue
        if not isinstance(answer, dict) or not answer.get("status"):
            message = answer.get("message") if isinstance(answer, dict) else repr(answer)
            code = answer.get("errorcode", "") if isinstance(answer, dict) else ""
            raise HistoryError(f"getCandleData refused {params['symboltoken']} {params['interval']} "
                               f"{params['fromdate']}..{params['todate']}: {message} ({code})")
        return answer.get("data") or []      # a holiday or a range before listing: no rows
    raise AssertionError("unreachable")


def _rows_frame(rows: list) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c != "volume" else "int64") for c in COLUMNS},
                            index=pd.DatetimeIndex([], tz=IST_ZONE, name="timestamp"))
    frame = pd.DataFrame(rows, columns=["timestamp", *COLUMNS])
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp"), format="ISO8601", utc=True)).tz_convert(IST_ZONE)
    frame.index = index.rename("timestamp")
    return frame.astype({"open": "float64", "high": "float64", "low": "float64", "close": "float64",
                         "volume": "int64"})
