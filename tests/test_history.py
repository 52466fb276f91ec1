"""kit.history through the real SmartConnect.getCandleData against the simulator's REST side."""
from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import pandas as pd
import pytest

import kit
from kit.angel.candles import CANDLE_LIMITER, CANDLE_PATH, MAX_DAYS, HistoryError, RateLimiter, chunks, history, to_ist
from kit.angel.sdk import smart_connect
from kit.angel.session import Credentials, login
from kit.sim.candles import register_candles
from kit.sim.rest import RestSimulator

NIFTY = "99926000"


@pytest.fixture
def rest():
    server = RestSimulator()
    register_candles(server, seed=11)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def session(rest):
    c = rest.credentials
    return login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=rest.url)


def weekdays(first: date, last: date) -> list[date]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if d.weekday() < 5]


def raw(session, interval, fromdate, todate, token=NIFTY, exchange="NSE"):
    CANDLE_LIMITER.wait()      # direct calls share the process's 3/s budget with history()
    return session.client.getCandleData({"exchange": exchange, "symboltoken": token, "interval": interval,
                                         "fromdate": fromdate, "todate": todate})


def test_a_long_range_is_chunked_ordered_and_deduplicated_at_the_edges(rest, session, in_tmp_cwd):
    df = history(session, NIFTY, "2024-01-01 09:15", "2024-03-20 15:30", "ONE_MINUTE")
    # 80 days of one-minute candles: three requests of at most 30 days.
    assert rest.requests[CANDLE_PATH] == df.attrs["requests"] == 3 == df.attrs["chunks"]
    # The chunks end at 2024-01-31 09:15 and 2024-03-01 09:15, both trading minutes, both fetched twice.
    assert df.attrs["duplicates_dropped"] == 2
    assert len(df) == len(weekdays(date(2024, 1, 1), date(2024, 3, 20))) * 375
    assert df.index.is_monotonic_increasing and not df.index.has_duplicates
    assert str(df.index.tz) == "Asia/Kolkata" and df.index.name == "timestamp"
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert df.index[0] == pd.Timestamp("2024-01-01 09:15", tz="Asia/Kolkata")
    assert df.index[-1] == pd.Timestamp("2024-03-20 15:29", tz="Asia/Kolkata")
    minutes = df.index.hour * 60 + df.index.minute
    assert minutes.min() == 9 * 60 + 15 and minutes.max() == 15 * 60 + 29 and (df.index.day_of_week < 5).all()
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    # The edge candles are the ones the server gave for them: same as a direct request.
    edge = raw(session, "ONE_MINUTE", "2024-01-31 09:15", "2024-01-31 09:15")["data"][0]
    assert df.loc["2024-01-31 09:15:00+05:30"].tolist() == edge[1:]


def test_each_interval_is_split_at_its_own_limit(rest, session, in_tmp_cwd):
    start, end = datetime(2020, 1, 1), datetime(2024, 12, 31, 15, 30)
    for interval, days in MAX_DAYS.items():
        spans = chunks(start, end, interval)
        assert spans[0][0] == start and spans[-1][1] == end
        assert all(e - s <= timedelta(days=days) for s, e in spans)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))     # contiguous, sharing the edge
    daily = history(session, NIFTY, "2015-01-01", "2024-12-31", "ONE_DAY")
    assert daily.attrs["chunks"] == 2 and len(daily) == len(weekdays(date(2015, 1, 1), date(2024, 12, 31)))
    assert (daily.index.hour == 0).all()
    hourly = history(session, NIFTY, "2024-01-01", "2024-01-05", "ONE_HOUR")
    assert len(hourly) == 5 * 7 and hourly.index[0].strftime("%H:%M") == "09:15"   # 09:15 ... 15:15


def test_ranges_are_inclusive_at_both_ends_like_the_api(rest, session, in_tmp_cwd):
    one = raw(session, "ONE_MINUTE", "2024-01-02 09:15", "2024-01-02 09:20")
    assert [row[0] for row in one["data"]] == [f"2024-01-02T09:{m}:00+05:30" for m in range(15, 21)]
    five = raw(session, "FIVE_MINUTE", "2024-01-02 09:15", "2024-01-02 09:20")
    assert [row[0][11:16] for row in five["data"]] == ["09:15", "09:20"]
    weekend = raw(session, "ONE_MINUTE", "2024-01-06 00:00", "2024-01-07 23:59")
    assert weekend["status"] is True and weekend["data"] == []


def test_the_simulator_refuses_a_request_longer_than_the_interval_allows(rest, session, in_tmp_cwd):
    too_long = raw(session, "ONE_MINUTE", "2024-01-01 09:15", "2024-02-15 09:15")
    assert too_long["status"] is False and too_long["errorcode"] == "AB13000"
    assert "30 days" in too_long["message"] and too_long["data"] is None
    assert raw(session, "ONE_MINUTE", "2024-01-01 09:15", "2024-01-31 09:15")["status"] is True   # exactly 30


def test_rate_limit_answers_are_retried_until_history_recovers(rest, session, in_tmp_cwd):
    rest.limit(CANDLE_PATH, 1, 1.0)        # the server now allows 1/s, the client paces for 3/s
    df = history(session, NIFTY, "2024-01-01", "2024-05-31", "ONE_MINUTE",
                 limiter=RateLimiter([(3, 1.0)]), backoff=0.2)
    assert rest.rate_limited[CANDLE_PATH] >= 1                     # the simulator's limit really triggered
    assert df.attrs["rate_limited"] == rest.rate_limited[CANDLE_PATH] and df.attrs["retries"] >= 1
    assert df.attrs["requests"] == df.attrs["chunks"] + df.attrs["retries"]
    assert len(df) == len(weekdays(date(2024, 1, 1), date(2024, 5, 31))) * 375
    assert not df.index.has_duplicates


def test_two_clients_at_once_trip_the_limit_and_both_recover(rest, session, in_tmp_cwd):
    # A second real client on the same account (a second process, say), holding the session's token.
    other = smart_connect(rest.credentials.api_key, root=rest.url, access_token=session.client.access_token)
    results, errors = {}, []

    def fetch(name, s):
        try:   # each with its own 3/s limiter, as two processes would be
            results[name] = history(s, NIFTY, "2024-01-01", "2024-04-30", "ONE_MINUTE",
                                    limiter=RateLimiter([(3, 1.0)]), backoff=0.2)
        except Exception as exc:     # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(n, s)) for n, s in (("a", session), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert rest.rate_limited[CANDLE_PATH] >= 1
    pd.testing.assert_frame_equal(results["a"], results["b"], check_like=False)


def test_retries_run_out_into_a_clear_error(rest, session, in_tmp_cwd):
    rest.limit(CANDLE_PATH, 1, 60.0)
    raw(session, "ONE_MINUTE", "2024-01-02 09:15", "2024-01-02 09:20")          # uses the only slot
    with pytest.raises(HistoryError, match="rate limited after 2 retries"):
        history(session, NIFTY, "2024-01-02", "2024-01-03", max_retries=2, backoff=0.01)


def test_api_errors_and_bad_arguments_are_reported(rest, session, in_tmp_cwd):
    with pytest.raises(HistoryError, match=r"Invalid exchange .NYSE. \(AB13000\)"):
        history(session, NIFTY, "2024-01-02", "2024-01-03", exchange="NYSE")
    with pytest.raises(ValueError, match="interval must be one of"):
        history(session, NIFTY, "2024-01-02", "2024-01-03", "TWO_MINUTE")
    with pytest.raises(ValueError, match="after end"):
        history(session, NIFTY, "2024-01-03", "2024-01-02")


def test_dates_are_read_as_ist(in_tmp_cwd):
    assert to_ist("2024-01-02") == datetime(2024, 1, 2, 0, 0)
    assert to_ist("2024-01-02", end=True) == datetime(2024, 1, 2, 23, 59)
    assert to_ist(date(2024, 1, 2), end=True) == datetime(2024, 1, 2, 23, 59)
    assert to_ist(pd.Timestamp("2024-01-02 03:45", tz="UTC")) == datetime(2024, 1, 2, 9, 15)
    assert to_ist("2024-01-02 09:15:59") == datetime(2024, 1, 2, 9, 15)


def test_candles_are_deterministic_and_agree_across_overlapping_requests(rest, session, in_tmp_cwd):
    a = history(session, "43650", "2024-02-01", "2024-02-10", "FIVE_MINUTE", exchange="NFO")
    b = history(session, "43650", "2024-02-05 12:00", "2024-02-20", "FIVE_MINUTE", exchange="NFO")
    shared = a.index.intersection(b.index)
    assert len(shared) > 100
    pd.testing.assert_frame_equal(a.loc[shared], b.loc[shared])
    other = history(session, "43651", "2024-02-01", "2024-02-10", "FIVE_MINUTE", exchange="NFO")
    assert not other["close"].equals(a["close"])


def test_the_rate_limiter_never_lets_a_window_overflow(in_tmp_cwd):
    now = [0.0]
    limiter = RateLimiter([(3, 1.0), (5, 10.0)], monotonic=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s))
    times = []
    for _ in range(12):
        limiter.wait()
        times.append(now[0])            # when this call was let through
        now[0] += 0.01
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[3:]))
    assert all(b - a >= 10.0 - 1e-9 for a, b in zip(times, times[5:]))


def test_the_embedded_simulator_serves_candles_to_a_logged_in_session(in_tmp_cwd):
    sim = kit.Simulator(rate=0).start()
    try:
        c = sim.rest.credentials
        s = login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=sim.rest.url)
        df = kit.history(s, NIFTY, "2024-01-01", "2024-01-05", "FIFTEEN_MINUTE")
        assert len(df) == 5 * 25
    finally:
        sim.stop()
