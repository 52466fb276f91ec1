"""The instrument master: Angel One's ``OpenAPIScripMaster.json``, cached for the day, searchable.

Every order names its instrument twice, by token and by trading symbol, and
must respect the contract's lot size and tick size. All of that comes from
the master file Angel One publishes every morning as one plain HTTPS GET of a
JSON array (all values strings; strike × 100; tick size in paise).

    master = InstrumentMaster.load()                     # downloaded once per IST day, then read from the cache
    master.get("99926000", 1)                            # Instrument(token='99926000', symbol='Nifty 50', ...)
    master.by_symbol("NIFTY25NOV2524000CE", "NFO")
    chain = master.options("NIFTY", spot=24_012, width=2)   # nearest (weekly) expiry, ATM ± 2 strikes, CE + PE
    tokens_of(chain)                                     # {2: ['43651', ...]} for TraderConfig(tokens=...)
    master.search("banknifty", exchange="NFO")           # a DataFrame

Where things live: the cache directory is ``$SMARTAPI_KIT_CACHE`` or the
platform's user cache directory (``~/.cache/smartapi-kit`` on Linux), never
the working directory. The URL is ``$SMARTAPI_MASTER_URL`` or Angel One's;
tests point it at the simulator, which serves a small generated master.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from kit.core.market import EXCHANGE_TYPES, EXCHANGES, IST, today_ist

if TYPE_CHECKING:  # pragma: no cover
    import pandas

log = logging.getLogger(__name__)

MASTER_URL = "https://margincalculator.angelbroking.com/OpenAPI_File/files/OpenAPIScripMaster.json"
MASTER_URL_ENV = "SMARTAPI_MASTER_URL"
CACHE_DIR_ENV = "SMARTAPI_KIT_CACHE"
APP_NAME = "smartapi-kit"

_REQUIRED_FIELDS = ("token", "symbol", "exch_seg")


class InstrumentMasterError(RuntimeError):
    """The master could not be downloaded, read or understood."""


def cache_dir() -> Path:
    """Where downloaded files are kept: ``$SMARTAPI_KIT_CACHE`` or the user cache directory."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))



@dataclass(frozen=True, slots=True)
class Instrument:
    """One contract, in the units the rest of the kit uses (rupees, units of quantity).

    ``strike`` is rupees (the file stores strike × 100), ``tick_size`` is
    rupees (the file stores paise), ``expiry`` a ``date`` (None for cash and
    indices), ``option_type`` "CE", "PE" or "".
    """
    token: str
    symbol: str
    name: str
    exchange: str
    exchange_type: int
    instrument_type: str
    expiry: date | None
    strike: float
    option_type: str
    lot_size: int
    tick_size: float

    @classmethod
    def from_row(cls, row: dict) -> "Instrument":
        exchange = row["exch_seg"]
        symbol = row["symbol"]
        instrument_type = row.get("instrumenttype", "") or ""
        expiry_text = (row.get("expiry") or "").strip()
        expiry = datetime.strptime(expiry_text, "%d%b%Y").date() if expiry_text else None
        option_type = symbol[-2:] if instrument_type.startswith("OPT") and symbol[-2:] in ("CE", "PE") else ""
        return cls(token=str(row["token"]), symbol=symbol, name=row.get("name", "") or "",
                   exchange=exchange, exchange_type=EXCHANGE_TYPES.get(exchange, 0),
                   instrument_type=instrument_type, expiry=expiry,
                   strike=_number(row.get("strike")) / 100.0, option_type=option_type,
                   lot_size=max(1, int(_number(row.get("lotsize")) or 1)),
                   tick_size=_number(row.get("tick_size")) / 100.0)

    def to_row(self) -> dict:
        """The master file's own format (all strings), as Angel One publishes it."""
        return {"token": self.token, "symbol": self.symbol, "name": self.name,
                "expiry": self.expiry.strftime("%d%b%Y").upper() if self.expiry else "",
                "strike": f"{self.strike * 100:.6f}", "lotsize": str(self.lot_size),
                "instrumenttype": self.instrument_type, "exch_seg": self.exchange,
                "tick_size": f"{self.tick_size * 100:.6f}"}


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def tokens_of(instruments: Iterable[Instrument]) -> dict[int, list[str]]:
    """``{exchange_type: [token, ...]}``, the shape ``TraderConfig(tokens=...)`` takes."""
    out: dict[int, list[str]] = {}
    for inst in instruments:
        out.setdefault(inst.exchange_type, []).append(inst.token)
    return out


class InstrumentMaster:
    """The day's instruments, indexed by (exchange type, token) and by (exchange, symbol).

    Rows are kept as the file has them and turned into ``Instrument`` objects
    on lookup, so loading the full ~150,000-row master stays about a second.
    """

    def __init__(self, rows: list[dict], *, source: str = "", fetched_at: float | None = None,
                 stale: bool = False):
        self._rows = rows
        self.source = source
        self.fetched_at = fetched_at
        self.stale = stale
        self._by_token: dict[tuple[int, str], dict] = {}
        self._by_symbol: dict[tuple[str, str], dict] = {}
        self._cache: dict[tuple[int, str], Instrument] = {}
        for row in rows:
            exchange = row.get("exch_seg", "")
            key = (EXCHANGE_TYPES.get(exchange, 0), str(row.get("token", "")))
            self._by_token[key] = row
            self._by_symbol[(exchange, row.get("symbol", ""))] = row
        self._frame = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, url: str | None = None, *, cache: str | Path | None = None, refresh: bool = False,
             timeout: float = 60.0) -> "InstrumentMaster":
        """The master from today's cached copy, or downloaded (and cached) if there is none.

        A download that fails falls back to an older cached copy, with a
        warning and ``stale=True``; with no copy at all it raises
        ``InstrumentMasterError``.
        """
        url = url or os.environ.get(MASTER_URL_ENV) or MASTER_URL
        directory = Path(cache) if cache is not None else cache_dir()
        path = directory / _cache_name(url)
        if not refresh and path.exists() and _fetched_today(path):
            return cls.from_file(path, source=url)
        try:
            rows = _download(url, timeout)
        except InstrumentMasterError as exc:
            if path.exists():
                log.warning("instrument master: %s; using the cached copy from %s", exc,
                            datetime.fromtimestamp(path.stat().st_mtime, IST).isoformat(timespec="minutes"))
                master = cls.from_file(path, source=url)
                master.stale = True
                return master
            raise
        _write_atomically(path, rows)
        return cls(rows, source=url, fetched_at=time.time())

    @classmethod
    def from_file(cls, path: str | Path, *, source: str = "") -> "InstrumentMaster":
        path = Path(path)
        try:
            rows = _validated(json.loads(path.read_bytes()), str(path))
        except (OSError, ValueError) as exc:
            raise InstrumentMasterError(f"cannot read the instrument master {path}: {exc}") from exc
        return cls(rows, source=source or str(path), fetched_at=path.stat().st_mtime)

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self._rows)

    def get(self, token: str, exchange_type: int | None = None) -> Instrument | None:
        """The instrument with this token (None if unknown).

        Token numbers are per exchange: leave ``exchange_type`` out only when
        the token is listed on one exchange (else ValueError).
        """
        token = str(token)
        if exchange_type is not None:
            key = (int(exchange_type), token)
            inst = self._cache.get(key)
            if inst is None:
                row = self._by_token.get(key)
                if row is None:
                    return None
                inst = self._cache[key] = Instrument.from_row(row)
            return inst
        found = [ex for ex in EXCHANGES if (ex, token) in self._by_token]
        if len(found) > 1:
            raise ValueError(f"token {token!r} is listed on {[EXCHANGES[e] for e in found]}; pass exchange_type")
        return self.get(token, found[0]) if found else None

    def __getitem__(self, key) -> Instrument:
        token, exchange_type = key if isinstance(key, tuple) else (key, None)
        inst = self.get(token, exchange_type)
        if inst is None:
            raise KeyError(f"no instrument with token {token!r}" +
                           (f" on exchange type {exchange_type}" if exchange_type is not None else ""))
        return inst

    def by_symbol(self, symbol: str, exchange: str | None = None) -> Instrument | None:
        """The instrument with this trading symbol, e.g. ``("SBIN-EQ", "NSE")``."""
        if exchange is not None:
            row = self._by_symbol.get((exchange.upper(), symbol))
            return self.get(row["token"], EXCHANGE_TYPES.get(row["exch_seg"], 0)) if row else None
        for ex in EXCHANGE_TYPES:
            inst = self.by_symbol(symbol, ex)
            if inst is not None:
                return inst
        return None

    def lot_size(self, token: str, exchange_type: int) -> int | None:
        inst = self.get(token, exchange_type)
        return inst.lot_size if inst else None

    def expiries(self, name: str, *, exchange: str = "NFO", instrument_type: str = "OPTIDX",
                 on_or_after: date | None = None) -> list[date]:
        """Expiry dates of ``name``'s contracts still alive (today in IST or later), soonest first."""
        first = on_or_after or today_ist()
        seen = set()
        for row in self._rows:
            if (row.get("name") == name and row.get("exch_seg") == exchange
                    and row.get("instrumenttype") == instrument_type and row.get("expiry")):
                seen.add(row["expiry"])
        dates = sorted(datetime.strptime(e, "%d%b%Y").date() for e in seen)
        return [d for d in dates if d >= first]

    def options(self, name: str, spot: float, *, width: int = 5, expiry: date | str = "nearest",
                option_type: str | None = None, exchange: str = "NFO",
                instrument_type: str = "OPTIDX") -> list[Instrument]:
        """Options on ``name`` near the money: the strike nearest ``spot`` ± ``width`` strikes.

        ``expiry`` is a date, "nearest" (for NIFTY, the weekly contract) or
        "next"; ``option_type`` "CE" or "PE" keeps one side. Sorted by strike,
        CE before PE.

            master.options("NIFTY", spot=24_012, width=1)
            # [23950 CE, 23950 PE, 24000 CE, 24000 PE, 24050 CE, 24050 PE] of the nearest expiry
        """
        if isinstance(expiry, str):
            alive = self.expiries(name, exchange=exchange, instrument_type=instrument_type)
            index = {"nearest": 0, "next": 1}.get(expiry)
            if index is None:
                raise ValueError("expiry must be a date, 'nearest' or 'next'")
            if len(alive) <= index:
                raise LookupError(f"no {expiry} expiry for {name} {instrument_type} on {exchange}")
            expiry = alive[index]
        wanted_expiry = expiry.strftime("%d%b%Y").upper()
        chain = [Instrument.from_row(row) for row in self._rows
                 if row.get("name") == name and row.get("exch_seg") == exchange
                 and row.get("instrumenttype") == instrument_type
                 and (row.get("expiry") or "").upper() == wanted_expiry]
        if option_type is not None:
            chain = [i for i in chain if i.option_type == option_type.upper()]
        if not chain:
            raise LookupError(f"no {name} options expiring {expiry} on {exchange}")
        strikes = sorted({i.strike for i in chain})
        atm = min(range(len(strikes)), key=lambda k: (abs(strikes[k] - spot), strikes[k]))
        kept = set(strikes[max(0, atm - width): atm + width + 1])
        return sorted((i for i in chain if i.strike in kept), key=lambda i: (i.strike, i.option_type))

    def search(self, text: str, *, exchange: str | None = None) -> "pandas.DataFrame":
        """Rows whose symbol or name contains ``text`` (case-insensitive), as a DataFrame."""
        frame = self.frame()
        needle = text.upper()
        mask = frame["symbol"].str.upper().str.contains(needle, regex=False) | \
            frame["name"].str.upper().str.contains(needle, regex=False)
        if exchange is not None:
            mask &= frame["exchange"] == exchange.upper()
        return frame[mask].reset_index(drop=True)

    def frame(self) -> "pandas.DataFrame":
        """Every instrument as a DataFrame (built on first use, then kept)."""
        if self._frame is None:
            import pandas as pd
            self._frame = pd.DataFrame(
                {"token": [r.get("token", "") for r in self._rows],
                 "symbol": [r.get("symbol", "") for r in self._rows],
                 "name": [r.get("name", "") for r in self._rows],
                 "exchange": [r.get("exch_seg", "") for r in self._rows],
                 "instrument_type": [r.get("instrumenttype", "") for r in self._rows],
                 "expiry": [r.get("expiry", "") for r in self._rows],
                 "strike": [_number(r.get("strike")) / 100.0 for r in self._rows],
                 "lot_size": [int(_number(r.get("lotsize")) or 1) for r in self._rows],
                 "tick_size": [_number(r.get("tick_size")) / 100.0 for r in self._rows]})
        return self._frame

    def __repr__(self) -> str:
        return f"<InstrumentMaster {len(self)} instruments from {self.source or 'memory'}{' (stale)' if self.stale else ''}>"


# --------------------------------------------------------------------------- download and cache
def _cache_name(url: str) -> str:
    if url == MASTER_URL:
        return "OpenAPIScripMaster.json"
    # Another source (a simulator, a mirror) must never be mistaken for Angel One's file.
    return f"OpenAPIScripMaster-{hashlib.sha1(url.encode()).hexdigest()[:12]}.json"


def _fetched_today(path: Path) -> bool:
    return datetime.fromtimestamp(path.stat().st_mtime, IST).date() == today_ist()


def _download(url: str, timeout: float) -> list[dict]:
    import requests
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise InstrumentMasterError(f"download of {url} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise InstrumentMasterError(f"download of {url} failed: HTTP {response.status_code}")
    try:
        return _validated(response.json(), url)
    except ValueError as exc:
        raise InstrumentMasterError(f"{url} is not an instrument master: {exc}") from exc


def _validated(data, where: str) -> list[dict]:
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where}: expected a non-empty JSON array")
    for row in data[:50]:
        if not isinstance(row, dict) or any(f not in row for f in _REQUIRED_FIELDS):
            raise ValueError(f"{where}: rows need {', '.join(_REQUIRED_FIELDS)}; got {str(row)[:120]}")
    return data


def _write_atomically(path: Path, rows: list[dict]) -> None:
    """Write then rename, so a crash mid-write never leaves a truncated cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".master-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
