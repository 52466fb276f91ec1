"""Charges on a fill: brokerage, STT, exchange transaction, IPFT, SEBI fee, stamp duty and GST.

    from kit.core.charges import Charges
    c = Charges()
    c.for_fill(2, "NFO_OPT", "SELL", 65, 120.50)          # a ChargeBreakdown; .total in rupees
    c.for_fill(1, "2885", "BUY", 10, 2900.0, "INTRADAY")  # NSE cash: the product picks intraday/delivery
    c.for_fills(result.fills, instrument="options")       # the fills plus a column per component

Rates (NSE cash, NFO; BSE cash and MCX marked below as not yet checked): Angel One's standard plan as it
publishes it on its "charges" page
(angelone.in/exchange-transaction-charges), with the regulatory revisions in
force from 1 October 2024 (STT on F&O raised by the Union Budget 2024; NSE's
revised transaction and IPFT charges) and Angel One's delivery brokerage from
1 November 2024 (its notice "Pricing update 2024"). ``VERSION`` is that as-of
date. They change: check them against a contract note, and override what
differs, one rate (``dataclasses.replace(RATES["NFO_OPT"], stt_sell=...)``) or
the whole table (``Charges(table={...})``).

How each is charged (``turnover`` = qty × price; for options the price is the premium):

* brokerage: ``min(brokerage_flat, brokerage_pct × order value)`` per executed
  order; a fill that is part of a bigger order (``order_value``) pays its share.
* STT (securities transaction tax): ``stt_buy`` / ``stt_sell`` × turnover, by side.
* exchange transaction charges and NSE's IPFT: × turnover, both sides.
* SEBI turnover fee: ₹10 a crore, both sides.
* stamp duty: ``stamp_buy`` × turnover, buy side only.
* GST: 18% of brokerage + exchange + IPFT + SEBI (not of STT or stamp duty).

Amounts are not rounded (a contract note rounds each to the paisa), and
neither exercise/assignment STT nor DP charges on delivery sells are modelled.
The segment comes from the exchange type (``kit.core.market.EXCHANGE_TYPES``:
1 NSE cash, 2 NFO) and, for NFO, the instrument type: a table key, an
instrument master ``instrumenttype`` (OPTIDX, OPTSTK, FUTIDX, FUTSTK), a
trading symbol (…CE, …PE, …FUT), a ``{token: type}`` mapping or an
``InstrumentMaster``; when none says, ``Charges.derivative_default`` (options).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Mapping

from kit.core.market import EXCHANGE_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["VERSION", "RATES", "ChargeRates", "ChargeBreakdown", "Charges", "segment_of"]

# The as-of date of RATES. Source: Angel One, "Charges" (angelone.in/exchange-transaction-charges)
# and its notice "Pricing update 2024" (angelone.in/blog/pricing-update-2024-for-i-trade):
# regulatory rates w.e.f. 2024-10-01, delivery brokerage w.e.f. 2024-11-01.
VERSION = "2024-11-01"

_CRORE = 1e7
SEBI_FEE = 10 / _CRORE          # ₹10 per crore of turnover
GST = 0.18


@dataclass(frozen=True)
class ChargeRates:
    """The rates of one segment and product; fractions of turnover (0.001 is 0.1%), rupees for flat fees."""
    segment: str
    brokerage_flat: float = 20.0        # ₹ per executed order ...
    brokerage_pct: float = 0.0025       # ... or this fraction of the order's value, whichever is lower
    stt_buy: float = 0.0
    stt_sell: float = 0.0
    exchange: float = 0.0               # exchange transaction charges
    ipft: float = 0.0                   # NSE's Investor Protection Fund Trust levy
    sebi: float = SEBI_FEE
    stamp_buy: float = 0.0
    gst: float = GST                    # on brokerage + exchange + IPFT + SEBI


RATES: dict[str, ChargeRates] = {
    # NSE cash, bought and sold the same day (Angel One: INTRADAY).
    "NSE_EQ_INTRADAY": ChargeRates("NSE_EQ_INTRADAY", 20.0, 0.0025, stt_sell=0.00025, exchange=0.0000297,
                                   ipft=0.000001, stamp_buy=0.00003),
    # NSE cash, delivery (Angel One: DELIVERY); brokerage ₹20 or 0.1% from 2024-11-01.
    "NSE_EQ_DELIVERY": ChargeRates("NSE_EQ_DELIVERY", 20.0, 0.001, stt_buy=0.001, stt_sell=0.001,
                                   exchange=0.0000297, ipft=0.000001, stamp_buy=0.00015),
    # NSE equity futures (index and stock): on the traded value.
    "NFO_FUT": ChargeRates("NFO_FUT", 20.0, 0.0025, stt_sell=0.0002, exchange=0.0000173, ipft=0.000001,
                           stamp_buy=0.00002),
    # NSE equity options (index and stock): everything on the premium.
    "NFO_OPT": ChargeRates("NFO_OPT", 20.0, 0.0025, stt_sell=0.001, exchange=0.0003503, ipft=0.000005,
                           stamp_buy=0.00003),
    # Not yet checked against a contract note (brokers' published statutory rates, late 2024): BSE cash
    # (transaction charges ₹375 a crore for groups A and B) and MCX non-agri commodities (CTT on sells;
    # MCX's transaction charges; stamp duty on buys).
    "BSE_EQ_INTRADAY": ChargeRates("BSE_EQ_INTRADAY", 20.0, 0.0025, stt_sell=0.00025, exchange=0.0000375,
                                   stamp_buy=0.00003),
    "BSE_EQ_DELIVERY": ChargeRates("BSE_EQ_DELIVERY", 20.0, 0.001, stt_buy=0.001, stt_sell=0.001,
                                   exchange=0.0000375, stamp_buy=0.00015),
    "MCX_FUT": ChargeRates("MCX_FUT", 20.0, 0.0025, stt_sell=0.0001, exchange=0.000021, stamp_buy=0.00002),
    "MCX_OPT": ChargeRates("MCX_OPT", 20.0, 0.0025, stt_sell=0.0005, exchange=0.000418, stamp_buy=0.00003),
}


@dataclass(frozen=True)
class ChargeBreakdown:
    """One fill's charges in rupees, each component and their ``total``."""
    segment: str
    turnover: float
    brokerage: float
    stt: float
    exchange: float
    ipft: float
    sebi: float
    stamp: float
    gst: float

    @property
    def total(self) -> float:
        return self.brokerage + self.stt + self.exchange + self.ipft + self.sebi + self.stamp + self.gst

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["total"] = self.total
        return out


COMPONENTS = ["brokerage", "stt", "exchange", "ipft", "sebi", "stamp", "gst"]

_OPTION_TYPES = {"OPTIDX", "OPTSTK", "OPTIONS", "OPTION", "OPT"}
_FUTURE_TYPES = {"FUTIDX", "FUTSTK", "FUTURES", "FUTURE", "FUT"}


def _kind(text: str | None) -> str | None:
    """"OPT" or "FUT" from an instrument type or a trading symbol; None when it says neither."""
    if not text:
        return None
    word = str(text).strip().upper()
    if word in _OPTION_TYPES or word.startswith("OPT") or re.search(r"\d(CE|PE)$", word):  # ...24000CE, OPTFUT
        return "OPT"
    if word in _FUTURE_TYPES or word.startswith("FUT") or word.endswith("FUT"):            # FUTCOM, ...NOVFUT
        return "FUT"
    return None


def segment_of(exchange_type: int, product: str = "INTRADAY", instrument: str | None = None, *,
               derivative_default: str = "OPT") -> str:
    """The table key of a fill: ``NSE_EQ_INTRADAY`` / ``NSE_EQ_DELIVERY`` for NSE cash (by
    ``product``), ``NFO_OPT`` / ``NFO_FUT`` for NFO (by ``instrument``, else ``derivative_default``).
    Other exchanges: ``<EXCHANGE>_EQ_<PRODUCT>`` or ``<EXCHANGE>_<OPT|FUT>``, for a table that has them."""
    exchanges = {v: k for k, v in EXCHANGE_TYPES.items()}
    exchange = exchanges.get(int(exchange_type), str(exchange_type))
    if exchange in ("NSE", "BSE"):
        return f"{exchange}_EQ_{'DELIVERY' if str(product).upper() == 'DELIVERY' else 'INTRADAY'}"
    return f"{exchange}_{_kind(instrument) or derivative_default}"


class Charges:
    """The charges model: ``for_fill`` for one fill, ``for_fills`` for a fills table.

    ``table``: segment key → ``ChargeRates`` (default ``RATES``; a partial dict
    overrides just those keys). ``instruments``: what tells options from futures
    for a token, a ``{token: instrumenttype or symbol}`` mapping or an
    ``InstrumentMaster`` (anything with ``get(token, exchange_type)``).
    ``derivative_default``: "OPT" or "FUT", for a derivative nothing describes.
    """

    def __init__(self, table: Mapping[str, ChargeRates] | None = None, *, instruments=None,
                 derivative_default: str = "OPT"):
        self.table: dict[str, ChargeRates] = {**RATES, **(table or {})}
        self.instruments = instruments
        self.derivative_default = derivative_default
        self.version = VERSION if table is None else f"{VERSION}+custom"

    def __repr__(self) -> str:
        return f"Charges(version={self.version!r}, segments={sorted(self.table)})"

    def _describe(self, token, exchange_type: int) -> str | None:
        source = self.instruments
        if source is None or token is None:
            return None
        if isinstance(source, Mapping):
            return source.get(str(token))
        found = source.get(str(token), int(exchange_type))
        if found is None:
            return None
        return getattr(found, "instrument_type", None) or getattr(found, "symbol", None)

    def segment(self, exchange_type: int, token_or_segment=None, product: str = "INTRADAY",
                instrument: str | None = None) -> str:
        """The table key a fill is charged by (see ``segment_of``)."""
        if isinstance(token_or_segment, str) and token_or_segment in self.table:
            return token_or_segment
        described = instrument or _kind(token_or_segment if isinstance(token_or_segment, str)
                                        and not token_or_segment.isdigit() else None) \
            or self._describe(token_or_segment, exchange_type)
        return segment_of(exchange_type, product, described, derivative_default=self.derivative_default)

    def rates(self, segment: str) -> ChargeRates:
        try:
            return self.table[segment]
        except KeyError:
            raise KeyError(f"no charge rates for segment {segment!r}; the table has {sorted(self.table)} "
                           f"(add one: Charges(table={{{segment!r}: ChargeRates(...)}}))") from None

    def for_fill(self, exchange_type: int, token_or_segment, side: str, qty: float, price: float,
                 product: str = "INTRADAY", *, instrument: str | None = None,
                 order_value: float | None = None) -> ChargeBreakdown:
        """The charges of one fill of ``qty`` at ``price`` (the premium, for an option).

        ``token_or_segment``: a table key ("NFO_OPT"), a trading symbol or a token.
        ``order_value``: the value of the whole order this fill is part of, when
        it is only part of it: the brokerage is per executed order, so the fill
        pays its share of ``min(flat, pct × order_value)``.
        """
        rates = self.rates(self.segment(exchange_type, token_or_segment, product, instrument))
        turnover = abs(float(qty)) * float(price)
        order_value = turnover if order_value is None else float(order_value)
        if order_value > 0:
            per_order = min(rates.brokerage_flat, rates.brokerage_pct * order_value)
            brokerage = per_order * turnover / order_value
        else:
            brokerage = 0.0
        buy = str(side).upper() == "BUY"
        stt = (rates.stt_buy if buy else rates.stt_sell) * turnover
        exchange = rates.exchange * turnover
        ipft = rates.ipft * turnover
        sebi = rates.sebi * turnover
        stamp = rates.stamp_buy * turnover if buy else 0.0
        gst = rates.gst * (brokerage + exchange + ipft + sebi)
        return ChargeBreakdown(rates.segment, turnover, brokerage, stt, exchange, ipft, sebi, stamp, gst)

    def for_fills(self, fills: "pandas.DataFrame", product: str = "INTRADAY", *,
                  instrument: str | None = None) -> "pandas.DataFrame":
        """``fills`` (a broker's ``fills_df()`` or a backtest's ``fills``: token, exchange_type,
        side, qty, price, and order_id when there) plus ``segment``, ``turnover``, a column per
        component and ``charges`` (their total). A ``product`` or ``instrument`` column, when the
        table has one, wins over the arguments. An order filled in parts pays its brokerage once,
        shared by its fills. The input is not changed."""
        import pandas as pd

        out = fills.copy()
        columns = ["segment", "turnover", *COMPONENTS, "charges"]
        if not len(out):
            for name in columns:
                out[name] = pd.Series(dtype=object if name == "segment" else float)
            return out
        turnover = out["qty"].abs().astype(float) * out["price"].astype(float)
        if "order_id" in out:
            order_value = turnover.groupby(out["order_id"]).transform("sum")
        else:
            order_value = turnover
        products = out["product"] if "product" in out else [product] * len(out)
        instruments = out["instrument"] if "instrument" in out else [instrument] * len(out)
        rows = [self.for_fill(ex, tok, side, qty, price, prod, instrument=inst, order_value=value).as_dict()
                for ex, tok, side, qty, price, prod, inst, value in
                zip(out["exchange_type"], out["token"], out["side"], out["qty"], out["price"],
                    products, instruments, order_value)]
        table = pd.DataFrame(rows, index=out.index)
        for name in columns:
            out[name] = table["total" if name == "charges" else name]
        return out

    def summary(self, fills: "pandas.DataFrame", gross: float, product: str = "INTRADAY", *,
                instrument: str | None = None) -> dict:
        """``{"gross", "charges", "net", <component>...}`` for ``fills`` against a gross P&L."""
        charged = self.for_fills(fills, product, instrument=instrument)
        parts = {name: float(charged[name].sum()) if len(charged) else 0.0 for name in COMPONENTS}
        total = math.fsum(parts.values())
        return {"gross": float(gross), "charges": total, "net": float(gross) - total, **parts}
