"""Exchange calendars: each segment's hours and holidays, the user's own days, and live orders refused by them.

The live tests drive the real SmartConnect and order-update clients against
the simulator; only the clock is injected (``LiveTrader(clock=...)``).
"""
from __future__ import annotations

import time
from datetime import date, datetime

import pytest

import kit
from conftest import wait_until
from kit.broker.risk import RiskLimits
from kit.core.calendar import Calendar, us_daylight_saving
from kit.core.market import IST

pytestmark = pytest.mark.timeout(120)

NFO_TOKEN, NSE_TOKEN, MCX_TOKEN = "43650", "3045", "450001"


def ist(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=IST)


class Clock:
    def __init__(self, text: str):
        self.set(text)

    def set(self, text: str) -> None:
        self.t = ist(text).timestamp()

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------- the calendar itself
def test_weekends_and_regular_hours_per_segment():
    cal = Calendar()
    assert cal.why_closed("NSE", ist("2026-11-28 11:00")) == "closed: NSE does not trade on Saturdays (2026-11-28)"
    assert not cal.is_open(2, ist("2026-11-29 11:00"))
    for segment in ("NSE", "NFO", "BSE", "BFO"):
        assert not cal.is_open(segment, ist("2026-11-26 09:14")) and cal.is_open(segment, ist("2026-11-26 09:15"))
        assert cal.is_open(segment, ist("2026-11-26 15:29")) and not cal.is_open(segment, ist("2026-11-26 15:30"))
    for segment in ("CDS", 7):
        assert cal.is_open(segment, ist("2026-11-26 09:00")) and cal.is_open(segment, ist("2026-11-26 16:59"))
        assert not cal.is_open(segment, ist("2026-11-26 17:00"))
    with pytest.raises(ValueError, match="unknown segment 'NASDAQ'"):
        cal.is_open("NASDAQ", ist("2026-11-26 10:00"))


def test_a_known_nse_holiday_from_the_kits_table_and_a_bse_holiday_from_exchange_calendars():
    cal = Calendar()
    assert cal.why_closed("NSE", ist("2026-12-25 10:00")) == "closed: NSE holiday 2026-12-25 (Christmas)"
    assert cal.why_closed(2, ist("2026-01-15 10:00")).startswith("closed: NFO holiday 2026-01-15 (Municipal")
    # 2025-10-21 (Diwali) is in exchange-calendars' XBOM, not in the kit's table (which starts in 2026).
    assert cal.why_closed("BSE", ist("2025-10-21 10:00")) == \
        "closed: BSE holiday 2025-10-21 (listed by exchange-calendars' XBOM)"
    assert cal.is_open("BSE", ist("2025-10-23 10:00"))
    without = Calendar(exchange_calendars=False)       # the kit's NSE table fills BSE's 2026 alone
    assert without.holiday(date(2026, 12, 25), "BFO") == "Christmas"
    assert without.holiday(date(2025, 10, 21), "BSE") == ""


def test_mcx_evening_hours_follow_us_daylight_saving_and_its_half_holidays():
    cal = Calendar()
    assert us_daylight_saving(date(2026, 7, 1)) and not us_daylight_saving(date(2026, 12, 1))
    assert cal.is_open("MCX", ist("2026-07-01 23:29")) and not cal.is_open("MCX", ist("2026-07-01 23:30"))
    assert cal.is_open("MCX", ist("2026-12-01 23:54")) and not cal.is_open("MCX", ist("2026-12-01 23:55"))
    assert cal.why_closed(5, ist("2026-12-01 08:59")) == \
        "outside MCX hours 09:00–23:55 IST on 2026-12-01: it is 08:59 IST"
    # Guru Nanak Jayanti: NSE closed all day, MCX's evening session only.
    assert cal.why_closed("NSE", ist("2026-11-24 18:00")).startswith("closed: NSE holiday 2026-11-24")
    assert not cal.is_open("MCX", ist("2026-11-24 16:59")) and cal.is_open("MCX", ist("2026-11-24 17:00"))
    assert "(Prakash Gurpurb Sri Guru Nanak Dev: morning session closed)" in cal.why_closed("MCX", ist("2026-11-24 10:00"))
    assert cal.why_closed("MCX", ist("2026-12-25 18:00")) == "closed: MCX holiday 2026-12-25 (Christmas)"
    fixed = Calendar(mcx_close="23:30")
    assert not fixed.is_open("MCX", ist("2026-12-01 23:40"))


def test_the_users_holidays_sessions_and_hours_win():
    cal = Calendar()
    cal.add_holiday(date(2026, 12, 2), segments=["NFO"], name="exchange outage")
    assert cal.why_closed("NFO", ist("2026-12-02 10:00")) == "closed: NFO holiday 2026-12-02 (exchange outage)"
    assert cal.is_open("NSE", ist("2026-12-02 10:00"))
    cal.add_session(date(2026, 11, 8), "18:00", "19:15", name="muhurat trading")      # a Sunday
    assert cal.is_open("NSE", ist("2026-11-08 18:00")) and not cal.is_open("NSE", ist("2026-11-08 19:15"))
    assert [str(s) for s in cal.sessions(date(2026, 11, 8), "MCX")] == ["18:00–19:15"]
    cal.add_session(date(2026, 12, 25), "10:00", "11:00", segments="BSE", name="special session")
    assert cal.is_open("BSE", ist("2026-12-25 10:30")) and not cal.is_open("NSE", ist("2026-12-25 10:30"))
    cal.set_hours("CDS", "09:00", "15:30")
    assert not cal.is_open("CDS", ist("2026-12-01 16:00"))
    with pytest.raises(ValueError, match="start before it ends"):
        cal.add_session(date(2026, 12, 3), "11:00", "10:00")
    with pytest.raises(ValueError, match="HH:MM"):
        cal.set_hours("NSE", "9.15", "15:30")


def test_a_year_no_list_covers_trades_on_weekdays_and_says_so(caplog):
    cal = Calendar()
    assert cal.is_open("NSE", ist("2031-01-01 10:00"))
    assert "no holiday list covers NSE/BSE for 2031" in caplog.text


# ---------------------------------------------------------------------------- live orders, real clients
def live_trader(sim, journal, clock, calendar=None) -> kit.LiveTrader:
    limits = RiskLimits(max_daily_loss=1_000_000, price_collar=None, calendar=calendar)     # hours: "live"
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, tokens={2: [NFO_TOKEN]}, risk=limits,
                                             square_off=None, journal=kit.JournalConfig(str(journal)),
                                             name=f"calendar-{time.monotonic_ns()}"),
                            venue=kit.SimVenue(simulator=sim), clock=clock)
    trader.start()
    assert trader.wait_connected(10) and trader.broker.wait_ready(10)
    trader.arm_live(confirm=sim.rest.credentials.client_code)
    return trader


def order(trader, token: str, exchange_type: int, qty: int, side: str = "BUY"):
    return trader.submit(kit.Signal(token, side, qty, exchange_type=exchange_type))


def net_qty(sim, token: str) -> int:
    return sum(int(p["netqty"]) for p in sim.orders.positions() if p["symboltoken"] == token)


@pytest.fixture
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("journal") / "journal.sqlite"


def test_live_orders_are_refused_on_a_listed_holiday_and_outside_mcx_hours(sim, journal, in_tmp_cwd):
    clock = Clock("2026-12-25 10:00")
    trader = live_trader(sim, journal, clock)
    try:
        placed = len(sim.orders.arrivals)
        assert order(trader, NSE_TOKEN, 1, 1) == (None, "closed: NSE holiday 2026-12-25 (Christmas)")
        assert order(trader, NFO_TOKEN, 2, 65) == (None, "closed: NFO holiday 2026-12-25 (Christmas)")
        clock.set("2026-12-01 08:30")
        assert order(trader, MCX_TOKEN, 5, 100) == \
            (None, "outside MCX hours 09:00–23:55 IST on 2026-12-01: it is 08:30 IST")
        clock.set("2026-12-01 23:55")
        assert order(trader, MCX_TOKEN, 5, 100)[1].startswith("outside MCX hours 09:00–23:55 IST")
        assert len(sim.orders.arrivals) == placed                   # nothing reached the exchange
        clock.set("2026-12-01 23:50")                               # NSE is closed, MCX trades in the evening
        assert order(trader, NFO_TOKEN, 2, 65)[1].startswith("outside NFO hours 09:15–15:30 IST")
        sent, reason = order(trader, MCX_TOKEN, 5, 100)
        assert reason is None
        assert wait_until(lambda: net_qty(sim, MCX_TOKEN) == 100, 10)
    finally:
        trader.close()


def test_live_orders_honour_a_user_added_holiday_and_special_session(sim, journal, in_tmp_cwd):
    calendar = Calendar()
    calendar.add_holiday(date(2026, 12, 2), segments=["NFO"], name="exchange outage")
    calendar.add_session(date(2026, 12, 5), "18:00", "19:00", segments=["NFO"], name="muhurat trading")
    clock = Clock("2026-12-02 10:00")
    trader = live_trader(sim, journal, clock, calendar)
    try:
        assert order(trader, NFO_TOKEN, 2, 65) == (None, "closed: NFO holiday 2026-12-02 (exchange outage)")
        clock.set("2026-12-05 17:59")                               # a Saturday, before its special session
        assert order(trader, NFO_TOKEN, 2, 65)[1] == \
            "outside NFO hours 18:00–19:00 IST on 2026-12-05 (muhurat trading): it is 17:59 IST"
        clock.set("2026-12-05 18:30")
        assert order(trader, NFO_TOKEN, 2, 65)[1] is None
        assert wait_until(lambda: net_qty(sim, NFO_TOKEN) == 65, 10)
        # A holiday added while trading applies at once: the per-minute answer is forgotten.
        clock.set("2026-12-04 10:00")
        assert order(trader, NFO_TOKEN, 2, 65, "SELL")[1] is None
        calendar.add_holiday(date(2026, 12, 4), segments="NFO", name="closed by the exchange")
        assert order(trader, NFO_TOKEN, 2, 65, "SELL") == \
            (None, "closed: NFO holiday 2026-12-04 (closed by the exchange)")
        assert wait_until(lambda: net_qty(sim, NFO_TOKEN) == 0, 10)
    finally:
        trader.close()
