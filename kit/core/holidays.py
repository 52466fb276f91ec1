"""The exchange holidays the kit keeps itself, dated and versioned; ``kit.core.calendar`` reads them.

Where a maintained source covers an exchange, the calendar uses it instead:
``exchange-calendars``' XBOM calendar is BSE's (equity and F&O), shipped in
its wheel, so nothing is downloaded. It has no NSE or MCX calendar, so those
are here. NSE and BSE close their equity and F&O segments on the same days,
so each list fills the other's gaps (a year one of them does not cover).

Update this file when an exchange publishes next year's list (NSE, BSE and
MCX publish in December) or announces a change, and bump ``VERSION``. A year
no list covers trades every weekday, and the calendar logs a warning once.
"""
from __future__ import annotations

from datetime import date

VERSION = "2026-11-30"

# NSE trading holidays (capital market and F&O; the kit also applies them to CDS and NCDEX).
# Source: NSE's "Trading holidays for the calendar year 2026" (nseindia.com, Resources >
# Exchange communication > Holidays, published December 2025), plus NSE's circular of
# 12 January 2026 declaring 15 January a trading holiday (Maharashtra municipal elections).
# Holidays falling on a weekend (Mahashivratri 15 Feb, Id-Ul-Fitr 21 Mar, Independence Day
# 15 Aug, Diwali Laxmi Pujan 8 Nov) are left out: weekends are closed anyway.
# 2027: NSE had not published its list when this was written; add it here when it does.
NSE_HOLIDAYS: dict[date, str] = {
    date(2026, 1, 15): "Municipal Corporation elections in Maharashtra",
    date(2026, 1, 26): "Republic Day",
    date(2026, 3, 3): "Holi",
    date(2026, 3, 26): "Shri Ram Navami",
    date(2026, 3, 31): "Shri Mahavir Jayanti",
    date(2026, 4, 3): "Good Friday",
    date(2026, 4, 14): "Dr. Baba Saheb Ambedkar Jayanti",
    date(2026, 5, 1): "Maharashtra Day",
    date(2026, 5, 28): "Bakri Id",
    date(2026, 6, 26): "Muharram",
    date(2026, 9, 14): "Ganesh Chaturthi",
    date(2026, 10, 2): "Mahatma Gandhi Jayanti",
    date(2026, 10, 20): "Dussehra",
    date(2026, 11, 10): "Diwali Balipratipada",
    date(2026, 11, 24): "Prakash Gurpurb Sri Guru Nanak Dev",
    date(2026, 12, 25): "Christmas",
}
NSE_YEARS: frozenset[int] = frozenset({2026})

# MCX closes a whole day, or only one of its two sessions: the morning one (09:00-17:00 IST)
# or the evening one (17:00 IST to the close).
CLOSED, MORNING_CLOSED, EVENING_CLOSED = "closed", "morning session closed", "evening session closed"

# MCX trading holidays, 2026. Source: MCX's holiday list for 2026 (mcxindia.com, Trading >
# Holidays, published December 2025), and its notice closing the morning session of
# 15 January 2026 (Maharashtra municipal elections).
MCX_HOLIDAYS: dict[date, tuple[str, str]] = {
    date(2026, 1, 1): ("New Year Day", EVENING_CLOSED),
    date(2026, 1, 15): ("Municipal Corporation elections in Maharashtra", MORNING_CLOSED),
    date(2026, 1, 26): ("Republic Day", CLOSED),
    date(2026, 3, 3): ("Holi", MORNING_CLOSED),
    date(2026, 3, 26): ("Shri Ram Navami", MORNING_CLOSED),
    date(2026, 3, 31): ("Shri Mahavir Jayanti", MORNING_CLOSED),
    date(2026, 4, 3): ("Good Friday", CLOSED),
    date(2026, 4, 14): ("Dr. Baba Saheb Ambedkar Jayanti", MORNING_CLOSED),
    date(2026, 5, 1): ("Maharashtra Day", MORNING_CLOSED),
    date(2026, 5, 28): ("Bakri Id", MORNING_CLOSED),
    date(2026, 6, 26): ("Muharram", MORNING_CLOSED),
    date(2026, 9, 14): ("Ganesh Chaturthi", MORNING_CLOSED),
    date(2026, 10, 2): ("Mahatma Gandhi Jayanti", CLOSED),
    date(2026, 10, 20): ("Dussehra", MORNING_CLOSED),
    date(2026, 11, 10): ("Diwali Balipratipada", MORNING_CLOSED),
    date(2026, 11, 24): ("Prakash Gurpurb Sri Guru Nanak Dev", MORNING_CLOSED),
    date(2026, 12, 25): ("Christmas", CLOSED),
}
MCX_YEARS: frozenset[int] = frozenset({2026})
