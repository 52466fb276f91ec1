"""The trader's view of its venue's instrument master: names for people, and the tokens it may subscribe.

    names = InstrumentNames(venue, instruments_url)
    names.name("99926000", 1)              # 'Nifty 50' (as the master spells it); the token when unknown
    names.resolve({2: ["43650"]})          # checked against the master: an unknown token is a ValueError
    names.resolve(["NIFTY", "SBIN"])       # trading symbols -> {1: ['99926000', '3045']}

The master is the venue's (``venue.instruments()``: the simulator's for
``feed="sim"``, Angel One's for ``"smartapi"``); a replay has no venue and
uses ``ConnectionConfig.instruments_url`` when one is set.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kit.angel.instruments import Instrument, InstrumentMaster
    from kit.engine.venues import Venue

log = logging.getLogger(__name__)

RETRY_AFTER_S = 60.0        # a master that failed to load is not asked for again before this


class InstrumentNames:
    def __init__(self, venue: "Venue | None", instruments_url: str | None = None):
        self._venue = venue
        self._url = instruments_url
        self._master: InstrumentMaster | None = None
        self._failed_at = float("-inf")
        self._names: dict[tuple[str, int | None], str] = {}
        self._lock = threading.Lock()

    def master(self) -> "InstrumentMaster | None":
        """The master, loaded once; None when there is none (yet), or it could not be loaded lately."""
        if self._master is not None:
            return self._master
        with self._lock:
            if self._master is None and time.monotonic() - self._failed_at >= RETRY_AFTER_S:
                try:
                    self._master = self.load()
                except Exception as exc:
                    self._failed_at = time.monotonic()
                    log.warning("no instrument names: the instrument master could not be loaded (%s: %s)",
                                type(exc).__name__, exc)
        return self._master

    def required(self) -> "InstrumentMaster":
        """The master, loading it now if need be; what stops it loading is raised."""
        master = self._master or self.load()
        if master is None:
            raise ValueError("no instrument master to check tokens against: set "
                             "ConnectionConfig(instruments_url=...)")
        return master

    def load(self) -> "InstrumentMaster | None":
        """The master now, or an exception saying why not (None: this trader has no master at all)."""
        if self._venue is not None:
            if getattr(self._venue, "feed", None) == "sim" and getattr(self._venue, "simulator", None) is None:
                raise RuntimeError("the simulator is not started yet")
            master = self._venue.instruments()
        elif self._url:
            from kit.angel.instruments import InstrumentMaster
            master = InstrumentMaster.load(self._url)
        else:
            return None
        self._master = master
        return master

    def name(self, token, exchange_type: int | None = None) -> str:
        """The trading symbol of ``token``, or ``str(token)`` when unknown. Never raises; cached."""
        key = (str(token), exchange_type)
        known = self._names.get(key)
        if known is not None:
            return known
        master = self.master()
        if master is None:
            return key[0]            # not cached: the master may load later
        try:
            inst = master.get(key[0], exchange_type)
        except Exception:           # listed on two exchanges and none given, or not a token at all
            inst = None
        name = self._names[key] = inst.symbol if inst is not None else key[0]
        return name

    def resolve(self, tokens, master: "InstrumentMaster") -> dict[int, list[str]]:
        """``{exchange_type: [token, ...]}`` for ``tokens`` (that shape, or a list of trading symbols).

        Anything ``master`` does not list is a ValueError that names it.
        """
        if isinstance(tokens, dict):
            unknown = [f"{token!r} (exchange type {ex})" for ex, listed in tokens.items() for token in listed
                       if master.get(token, ex) is None]
            if unknown:
                raise ValueError(f"{_listing(unknown)} not in the instrument master ({master.source}): "
                                 "subscribe only listed instruments; find them with "
                                 "trader.venue.instruments().search('NIFTY')")
            return tokens
        out: dict[int, list[str]] = {}
        unknown = []
        for symbol in tokens:
            inst = find_symbol(master, symbol)
            if inst is None:
                unknown.append(repr(symbol))
            else:
                out.setdefault(inst.exchange_type, []).append(inst.token)
        if unknown:
            raise ValueError(f"{_listing(unknown)} not a trading symbol in the instrument master ({master.source}): "
                             "find the right spelling with trader.venue.instruments().search('NIFTY'), "
                             "or pass tokens={exchange_type: [token, ...]}")
        return out


def find_symbol(master: "InstrumentMaster", symbol: str) -> "Instrument | None":
    """The instrument a person means by ``symbol``: the master's trading symbol ("NIFTY27NOV2524000CE",
    "SBIN-EQ"), an index by its name ("NIFTY" for "Nifty 50"), or a share by its name ("SBIN")."""
    inst = master.by_symbol(symbol)
    if inst is not None:
        return inst
    for exchange in ("NSE", "BSE"):
        inst = master.by_symbol(f"{symbol}-EQ", exchange)
        if inst is not None:
            return inst
    frame = master.frame()
    match = frame[(frame["name"] == symbol) & (frame["instrument_type"] == "AMXIDX")]
    if len(match):
        row = match.sort_values("exchange", key=lambda e: e != "NSE").iloc[0]
        return master.by_symbol(row["symbol"], row["exchange"])
    return None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
    return f"{shown} {'is' if len(items) == 1 else 'are'}"
