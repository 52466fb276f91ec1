"""Market constants: India's time zone, Angel One's exchange segments.

One module so that every part of the kit agrees on them: the feed's
exchange types, the instrument master's segment names, the candle API's
exchanges all come from here. When each segment trades (its sessions and
holidays) is ``kit.core.calendar``'s.

    market.IST                      # the tzinfo for Indian Standard Time (no daylight saving)
    market.IST_ZONE                 # "Asia/Kolkata": the same zone by name, for pandas and Parquet
    market.EXCHANGE_TYPES["NFO"]    # 2: the feed's exchange type of a segment
    market.EXCHANGES[2]             # "NFO"
    market.today_ist()              # the IST calendar date now
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
IST_ZONE = "Asia/Kolkata"

# Angel One's segments (the instrument master's ``exch_seg``, the order API's ``exchange``) and the
# feed's exchange type for each; 7 is NCDEX's commodity segment, which the feed calls ncx_fo.
EXCHANGE_TYPES: dict[str, int] = {"NSE": 1, "NFO": 2, "BSE": 3, "BFO": 4, "MCX": 5, "NCDEX": 7, "CDS": 13}
EXCHANGES: dict[int, str] = {v: k for k, v in EXCHANGE_TYPES.items()}

# The feed's own names for the exchange types, and their constants.
NSE_CM, NSE_FO, BSE_CM, BSE_FO, MCX_FO, NCX_FO, CDE_FO = 1, 2, 3, 4, 5, 7, 13
FEED_EXCHANGE_NAMES: dict[int, str] = {
    NSE_CM: "nse_cm", NSE_FO: "nse_fo", BSE_CM: "bse_cm", BSE_FO: "bse_fo",
    MCX_FO: "mcx_fo", NCX_FO: "ncx_fo", CDE_FO: "cde_fo",
}


def price_divisor(exchange_type: int) -> float:
    """Wire prices are paise; currency derivatives carry 1e7 per rupee."""
    return 10_000_000.0 if exchange_type == CDE_FO else 100.0


def today_ist() -> date:
    """Today's date in India, whatever the machine's time zone."""
    return datetime.now(IST).date()
