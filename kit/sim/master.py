"""The simulator's instrument master: a small generated one, consistent with its default tokens.

Served as Angel One's ``OpenAPIScripMaster.json`` (``kit.sim.exchange``), so
``kit.angel.instruments.InstrumentMaster.load`` reads it as it reads the real one.
"""
from __future__ import annotations

from datetime import date, timedelta

from kit.angel.instruments import Instrument
from kit.core.market import today_ist


# 2,500 generated NSE shares (SIMEQ0001-EQ ...): enough instruments to need all three
# market-data connections (1,000 subscriptions each) of one client code.
EQUITY_BLOCK = [str(200_001 + k) for k in range(2_500)]


def _weekday_on_or_after(day: date, weekday: int) -> date:
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def simulated_master(today: date | None = None) -> list[Instrument]:
    """A small instrument master consistent with the simulator's default tokens.

    99926000 is the NIFTY index; 43650–43654 are NIFTY calls and 43655–43659
    puts at 23,900–24,100 expiring on the nearest Tuesday (the weekly
    expiry), lot 65, tick ₹0.05. 43660–43669 are the same strikes a week
    later, 43670–43699 the month's at 23,150–23,850, 43700 the month's future;
    BANKNIFTY, two shares and an MCX crude oil future (450001, lot 100) round it off.
    """
    today = today or today_ist()
    weekly = _weekday_on_or_after(today, 1)      # NIFTY weeklies expire on Tuesdays
    next_week = weekly + timedelta(days=7)
    month_end = (weekly.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    monthly = month_end - timedelta(days=(month_end.weekday() - 1) % 7)
    if monthly < today:
        monthly = next_week
    rows = [
        Instrument("99926000", "Nifty 50", "NIFTY", "NSE", 1, "AMXIDX", None, 0.0, "", 1, 0.0),
        Instrument("99926009", "Nifty Bank", "BANKNIFTY", "NSE", 1, "AMXIDX", None, 0.0, "", 1, 0.0),
        Instrument("3045", "SBIN-EQ", "SBIN", "NSE", 1, "", None, 0.0, "", 1, 0.05),
        Instrument("2885", "RELIANCE-EQ", "RELIANCE", "NSE", 1, "", None, 0.0, "", 1, 0.05),
    ]
    strikes = [23_900, 23_950, 24_000, 24_050, 24_100]
    for first_token, expiry in ((43650, weekly), (43660, next_week)):
        code = expiry.strftime("%d%b%y").upper()
        for side_index, option_type in enumerate(("CE", "PE")):
            for k, strike in enumerate(strikes):
                token = str(first_token + side_index * len(strikes) + k)
                rows.append(Instrument(token, f"NIFTY{code}{strike}{option_type}", "NIFTY", "NFO", 2,
                                       "OPTIDX", expiry, float(strike), option_type, 65, 0.05))
    # 43670-43699: the month's contracts at strikes the weeklies do not have (a strip of 50 option
    # tokens from 43650 for load tests), so no expiry ever lists a strike twice.
    far = [23_150 + 50 * k for k in range(15)]
    code = monthly.strftime("%d%b%y").upper()
    for side_index, option_type in enumerate(("CE", "PE")):
        for k, strike in enumerate(far):
            rows.append(Instrument(str(43670 + side_index * len(far) + k), f"NIFTY{code}{strike}{option_type}",
                                   "NIFTY", "NFO", 2, "OPTIDX", monthly, float(strike), option_type, 65, 0.05))
    rows.append(Instrument("43700", f"NIFTY{monthly.strftime('%d%b%y').upper()}FUT", "NIFTY", "NFO", 2,
                           "FUTIDX", monthly, 0.0, "", 65, 0.05))
    code = monthly.strftime("%d%b%y").upper()
    for token, option_type in (("43800", "CE"), ("43801", "PE")):
        rows.append(Instrument(token, f"BANKNIFTY{code}52000{option_type}", "BANKNIFTY", "NFO", 2,
                               "OPTIDX", monthly, 52_000.0, option_type, 30, 0.05))
    # An MCX future, so orders in a segment with its own hours reach the simulated exchange.
    rows.append(Instrument("450001", f"CRUDEOIL{monthly.strftime('%d%b%y').upper()}FUT", "CRUDEOIL", "MCX", 5,
                           "FUTCOM", monthly, 0.0, "", 100, 1.0))
    rows.extend(Instrument(token, f"SIMEQ{k:04d}-EQ", f"SIMEQ{k:04d}", "NSE", 1, "", None, 0.0, "", 1, 0.05)
                for k, token in enumerate(EQUITY_BLOCK, 1))
    return rows
