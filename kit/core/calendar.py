"""When each Angel One segment trades: its regular sessions in IST, its holidays, and the user's own days.

    cal = Calendar()                                   # or kit.core.calendar.default_calendar()
    cal.is_open("NSE", datetime(2026, 12, 25, 10, 0, tzinfo=IST))      # False
    cal.why_closed("NSE", ...)       # 'closed: NSE holiday 2026-12-25 (Christmas)'
    cal.why_closed(5, ...)           # 'outside MCX hours 09:00–23:55 IST on 2026-12-01: it is 08:30 IST'
    cal.sessions(date(2026, 11, 24), "MCX")            # (Session(MCX 2026-11-24 17:00–23:30 ...),)
    cal.add_holiday(date(2027, 1, 1), segments=["MCX"], name="exchange closed")
    cal.add_session(date(2026, 11, 8), "18:00", "19:00", name="muhurat trading")   # every segment

Segments are Angel One's (``kit.core.market.EXCHANGE_TYPES``): pass the name
("NFO") or the feed's exchange type (2). Regular hours, IST, Monday to Friday:

    NSE, BSE (equity), NFO, BFO (F&O)   09:15–15:30
    CDS (currency), NCDEX               09:00–17:00
    MCX                                 09:00–23:30 while New York keeps daylight saving time
                                        (second Sunday of March to first Sunday of November),
                                        09:00–23:55 otherwise; ``Calendar(mcx_close="23:30")``
                                        fixes it, ``hours={"MCX": (...)}`` replaces both ends

Holidays: BSE and BFO from ``exchange-calendars``' XBOM (its data ships in the
wheel: nothing is downloaded); NSE, NFO, CDS and NCDEX from the kit's NSE
table; MCX from the kit's MCX table, where a holiday may close only the
morning (09:00–17:00) or the evening session (``kit.core.holidays``). NSE and
BSE share their equity holidays, so each source fills the other's missing
years. A year no source covers trades every weekday; a warning says so once.

User days win over listed ones: ``add_holiday`` closes a day; ``add_session``
adds a session (on a weekend or a holiday too: muhurat trading) and keeps
the day's others. A session starts at its start minute and ends before its
end minute. ``version`` counts changes, and ``cache()`` gives a dict that every
change clears (the risk manager keeps its per-minute answers in one).
"""
from __future__ import annotations

import logging
import threading
import warnings
import weakref
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from kit.core import holidays as listed
from kit.core.market import EXCHANGE_TYPES, EXCHANGES, IST

log = logging.getLogger(__name__)

SEGMENTS: tuple[str, ...] = tuple(EXCHANGE_TYPES)
REGULAR_HOURS: dict[str, tuple[str, str]] = {
    "NSE": ("09:15", "15:30"), "NFO": ("09:15", "15:30"), "BSE": ("09:15", "15:30"), "BFO": ("09:15", "15:30"),
    "CDS": ("09:00", "17:00"), "NCDEX": ("09:00", "17:00"), "MCX": ("09:00", "23:55"),
}
MCX_CLOSE_US_SUMMER = "23:30"        # MCX closes 25 minutes earlier while New York is on daylight saving time
MCX_EVENING_STARTS = "17:00"         # MCX's morning session ends, and its evening session starts, here
_BSE_FAMILY = frozenset({"BSE", "BFO"})
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def segment_name(segment: int | str) -> str:
    """"NFO" for "NFO", "nfo" or 2; a ValueError naming the known segments otherwise."""
    name = EXCHANGES.get(segment) if isinstance(segment, int) else str(segment).upper()
    if name not in EXCHANGE_TYPES:
        raise ValueError(f"unknown segment {segment!r}: one of {', '.join(SEGMENTS)} "
                         f"or their exchange types {sorted(EXCHANGES)}")
    return name


def minutes(hhmm: str) -> int:
    """Minutes after midnight of "HH:MM" (00:00 to 24:00)."""
    hours, sep, mins = str(hhmm).partition(":")
    if not (sep and hours.isdigit() and mins.isdigit() and len(mins) == 2
            and 0 <= int(mins) < 60 and int(hours) * 60 + int(mins) <= 24 * 60):
        raise ValueError(f"a time of day is 'HH:MM' (IST), not {hhmm!r}")
    return int(hours) * 60 + int(mins)


def us_daylight_saving(day: date) -> bool:
    """Whether New York keeps daylight saving time on ``day``: second Sunday of March to first Sunday of November.

    Both switches happen on a Sunday, when MCX is closed, so a whole Indian trading day is on one side.
    """
    march = date(day.year, 3, 8)
    starts = march + timedelta(days=(6 - march.weekday()) % 7)
    november = date(day.year, 11, 1)
    ends = november + timedelta(days=(6 - november.weekday()) % 7)
    return starts <= day < ends


def ist(when: datetime | float | int) -> datetime:
    """``when`` in IST: an aware datetime converted, a naive one taken as IST, a number as epoch seconds."""
    if isinstance(when, (int, float)):
        return datetime.fromtimestamp(when, IST)
    return when.replace(tzinfo=IST) if when.tzinfo is None else when.astimezone(IST)


@dataclass(frozen=True)
class Session:
    """One trading session of a segment on a day, IST; ``note`` says why it is not the regular one."""
    segment: str
    day: date
    start: str
    end: str
    note: str = ""

    @property
    def opens(self) -> datetime:
        return datetime.combine(self.day, datetime.min.time(), IST) + timedelta(minutes=minutes(self.start))

    @property
    def closes(self) -> datetime:
        return datetime.combine(self.day, datetime.min.time(), IST) + timedelta(minutes=minutes(self.end))

    def __contains__(self, when) -> bool:
        t = ist(when)
        return t.date() == self.day and minutes(self.start) <= t.hour * 60 + t.minute < minutes(self.end)

    def __str__(self) -> str:
        return f"{self.start}–{self.end}"


class Calendar:
    """Sessions and holidays of every segment, with the user's additions. See the module docstring."""

    def __init__(self, *, hours: dict | None = None, mcx_close: str | None = None,
                 exchange_calendars: bool = True):
        self._hours = dict(REGULAR_HOURS)
        for segment, (start, end) in (hours or {}).items():
            self._hours[segment_name(segment)] = _checked_span(start, end)
        self._mcx_fixed = "MCX" in {segment_name(s) for s in (hours or {})}
        if mcx_close is not None:
            self._hours["MCX"] = _checked_span(self._hours["MCX"][0], mcx_close)
            self._mcx_fixed = True
        self._use_xbom = exchange_calendars
        self._xbom: tuple[date, date, frozenset] | None = None
        self._lock = threading.Lock()
        self._user_holidays: dict[tuple[str, date], str] = {}
        self._user_sessions: dict[tuple[str, date], tuple[Session, ...]] = {}
        self._warned: set[tuple[str, int]] = set()
        self._watchers: list = []          # weak references to the caches a change clears
        self.version = 0

    def cache(self) -> dict:
        """An empty dict for answers drawn from this calendar, cleared at every change (held weakly)."""
        cache = _Cache()
        self._watchers = [w for w in self._watchers if w() is not None] + [weakref.ref(cache)]
        return cache

    def _changed(self) -> None:
        self.version += 1
        for ref in self._watchers:
            cache = ref()
            if cache is not None:
                cache.clear()

    # ------------------------------------------------------------------ the user's days
    def add_holiday(self, day: date, segments=None, name: str = "holiday") -> None:
        """Close ``day`` for ``segments`` (default: every one); the user's own sessions that day still trade."""
        for segment in _segments(segments):
            self._user_holidays[(segment, day)] = name
        self._changed()

    def add_session(self, day: date, start: str, end: str, segments=None, name: str = "special session") -> None:
        """Add a session on ``day`` (IST, e.g. muhurat trading) for ``segments`` (default: every one)."""
        start, end = _checked_span(start, end)
        for segment in _segments(segments):
            key = (segment, day)
            self._user_sessions[key] = tuple(sorted(
                (*self._user_sessions.get(key, ()), Session(segment, day, start, end, name)),
                key=lambda s: minutes(s.start)))
        self._changed()

    def set_hours(self, segments, start: str, end: str) -> None:
        """Replace the regular hours of ``segments`` (for MCX this also ends the daylight-saving rule)."""
        span = _checked_span(start, end)
        for segment in _segments(segments):
            self._hours[segment] = span
            self._mcx_fixed |= segment == "MCX"
        self._changed()

    # ------------------------------------------------------------------ questions
    def holiday(self, day: date, segment: int | str) -> str:
        """The name of the holiday closing ``segment`` all day on ``day`` ("" if none)."""
        segment = segment_name(segment)
        user = self._user_holidays.get((segment, day))
        if user is not None:
            return user
        name, part = self._listed(day, segment)
        return name if part == listed.CLOSED else ""

    def sessions(self, day: date, segment: int | str) -> tuple[Session, ...]:
        """The sessions of ``segment`` on ``day``, earliest first (empty on a weekend or a holiday)."""
        segment = segment_name(segment)
        extra = self._user_sessions.get((segment, day), ())
        if day.weekday() >= 5 or (segment, day) in self._user_holidays:
            return extra
        name, part = self._listed(day, segment)
        if part == listed.CLOSED:
            return extra
        start, end = self._hours[segment]
        if segment == "MCX" and not self._mcx_fixed and us_daylight_saving(day):
            end = MCX_CLOSE_US_SUMMER
        note = f"{name}: {part}" if part else ""
        if part == listed.MORNING_CLOSED:
            start = max(start, MCX_EVENING_STARTS, key=minutes)
        elif part == listed.EVENING_CLOSED:
            end = min(end, MCX_EVENING_STARTS, key=minutes)
        regular = (Session(segment, day, start, end, note),) if minutes(start) < minutes(end) else ()
        return tuple(sorted(regular + extra, key=lambda s: minutes(s.start)))

    def session(self, day: date, segment: int | str) -> Session | None:
        """The first session of ``segment`` on ``day`` (most days have one), or None."""
        found = self.sessions(day, segment)
        return found[0] if found else None

    def is_open(self, segment: int | str, when: datetime | float) -> bool:
        t = ist(when)
        return any(t in s for s in self.sessions(t.date(), segment))

    def why_closed(self, segment: int | str, when: datetime | float) -> str:
        """"" while ``segment`` trades at ``when``, else a sentence saying why not."""
        segment = segment_name(segment)
        t = ist(when)
        day = t.date()
        found = self.sessions(day, segment)
        if any(t in s for s in found):
            return ""
        if not found:
            name = self.holiday(day, segment)
            if name:
                return f"closed: {segment} holiday {day} ({name})"
            return f"closed: {segment} does not trade on {_DAY_NAMES[day.weekday()]}s ({day})"
        spans = ", ".join(str(s) for s in found)
        notes = "; ".join(s.note for s in found if s.note)
        return (f"outside {segment} hours {spans} IST on {day}{f' ({notes})' if notes else ''}: "
                f"it is {t:%H:%M} IST")

    # ------------------------------------------------------------------ the listed holidays
    def _listed(self, day: date, segment: str) -> tuple[str, str]:
        """(name, part closed) of the listed holiday on ``day``, ("", "") on a trading day."""
        if segment == "MCX":
            if day.year in listed.MCX_YEARS:
                return listed.MCX_HOLIDAYS.get(day, ("", ""))
            return self._unlisted(day, segment)
        bse_first = segment in _BSE_FAMILY
        for source in ((self._xbom_holiday, self._nse_holiday) if bse_first
                       else (self._nse_holiday, self._xbom_holiday)):
            found = source(day)
            if found is not None:
                return (found, listed.CLOSED) if found else ("", "")
        return self._unlisted(day, segment)

    def _unlisted(self, day: date, segment: str) -> tuple[str, str]:
        key = ("MCX" if segment == "MCX" else "NSE/BSE", day.year)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("calendar: no holiday list covers %s for %d (kit.core.holidays %s): every weekday "
                        "counts as a trading day; add holidays with Calendar.add_holiday", key[0], day.year,
                        listed.VERSION)
        return "", ""

    @staticmethod
    def _nse_holiday(day: date) -> str | None:
        """The NSE table's holiday name, "" on a trading day, None for a year it does not cover."""
        return listed.NSE_HOLIDAYS.get(day, "") if day.year in listed.NSE_YEARS else None

    def _xbom_holiday(self, day: date) -> str | None:
        """exchange-calendars' XBOM: the holiday's name (from the NSE table when it lists the day),
        "" on a trading day, None outside the dates it covers."""
        if not self._use_xbom:
            return None
        first, last, closed = self._xbom_days()
        if not first <= day <= last:
            return None
        if day not in closed:
            return ""
        return listed.NSE_HOLIDAYS.get(day) or "listed by exchange-calendars' XBOM"

    def _xbom_days(self) -> tuple[date, date, frozenset]:
        with self._lock:
            if self._xbom is None:
                import exchange_calendars      # imported on first use: it brings pandas
                with warnings.catch_warnings():   # its deprecation warnings are its own, not the user's
                    warnings.simplefilter("ignore")
                    xbom = exchange_calendars.get_calendar("XBOM")
                    first, last = xbom.first_session.date(), xbom.last_session.date()
                    trading = {d.date() for d in xbom.sessions}
                weekdays = (first + timedelta(days=n) for n in range((last - first).days + 1))
                self._xbom = (first, last, frozenset(d for d in weekdays if d.weekday() < 5 and d not in trading))
            return self._xbom


class _Cache(dict):
    """A dict that can be weakly referenced."""


def _segments(segments) -> tuple[str, ...]:
    if segments is None:
        return SEGMENTS
    if isinstance(segments, (str, int)):
        segments = (segments,)
    return tuple(segment_name(s) for s in segments)


def _checked_span(start: str, end: str) -> tuple[str, str]:
    if not minutes(start) < minutes(end):
        raise ValueError(f"a session must start before it ends: {start}–{end}")
    return str(start), str(end)


_default: Calendar | None = None


def default_calendar() -> Calendar:
    """The calendar every part of the kit uses unless given another (``RiskLimits(calendar=...)``)."""
    global _default
    if _default is None:
        _default = Calendar()
    return _default
