"""The charges model: a few fills against hand-computed figures, and a backtest's gross, charges and net."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import kit
from kit.bench.replay import synthetic_ticks
from kit.core.charges import RATES, VERSION, ChargeRates, Charges, segment_of
from kit.research.backtest import backtest
from kit.research.examples import SmaCross
from kit.store.recording import table_to_frame

NFO, NSE = 2, 1


def check(breakdown, **expected):
    for name, value in expected.items():
        got = getattr(breakdown, name)
        assert got == (value if isinstance(value, str) else pytest.approx(value, rel=1e-9, abs=1e-9)), name


def test_nfo_option_buy_and_sell_of_one_nifty_lot():
    c = Charges()
    # BUY 1 lot (65) at a premium of 120.50: turnover 65 × 120.50 = 7,832.50
    buy = c.for_fill(NFO, "NFO_OPT", "BUY", 65, 120.50)
    check(buy,
          turnover=7832.50,
          brokerage=19.58125,         # min(₹20, 0.25% × 7,832.50 = 19.58125)
          stt=0.0,                    # STT on options: sell side only
          exchange=2.74372475,        # 0.03503% × 7,832.50 (on premium)
          ipft=0.0391625,             # 0.0005% × 7,832.50
          sebi=0.0078325,             # ₹10/crore = 0.0001% × 7,832.50
          stamp=0.234975,             # 0.003% × 7,832.50, buy side only
          gst=4.026954555)            # 18% × (19.58125 + 2.74372475 + 0.0391625 + 0.0078325 = 22.37196975)
    # 19.58125 + 0 + 2.74372475 + 0.0391625 + 0.0078325 + 0.234975 + 4.026954555
    assert buy.total == pytest.approx(26.633899305)

    # SELL the lot at 140.00: turnover 65 × 140 = 9,100
    sell = c.for_fill(NFO, "NFO_OPT", "SELL", 65, 140.00)
    check(sell,
          turnover=9100.0,
          brokerage=20.0,             # min(₹20, 0.25% × 9,100 = 22.75)
          stt=9.1,                    # 0.1% × 9,100, on the sell side's premium
          exchange=3.18773,           # 0.03503% × 9,100
          ipft=0.0455,                # 0.0005% × 9,100
          sebi=0.0091,                # 0.0001% × 9,100
          stamp=0.0,                  # no stamp duty on a sell
          gst=4.1836194)              # 18% × (20 + 3.18773 + 0.0455 + 0.0091 = 23.24233)
    assert sell.total == pytest.approx(36.5259494)
    # The segment from a trading symbol, an instrument type or the master's type for a token is the same.
    assert c.for_fill(NFO, "NIFTY25NOV2524000CE", "SELL", 65, 140.00) == sell
    assert c.for_fill(NFO, "43650", "SELL", 65, 140.00, instrument="OPTIDX") == sell
    assert Charges(instruments={"43650": "OPTIDX"}).for_fill(NFO, "43650", "SELL", 65, 140.0) == sell


def test_nse_equity_intraday_buy_and_sell():
    c = Charges()
    # BUY 100 at 1,500: turnover 150,000
    buy = c.for_fill(NSE, "2885", "BUY", 100, 1500.0, "INTRADAY")
    check(buy, segment="NSE_EQ_INTRADAY", turnover=150_000.0,
          brokerage=20.0,             # min(₹20, 0.25% × 150,000 = 375)
          stt=0.0,                    # intraday STT: sell side only
          exchange=4.455,             # 0.00297% × 150,000
          ipft=0.15,                  # 0.0001% × 150,000
          sebi=0.15,                  # 0.0001% × 150,000
          stamp=4.5,                  # 0.003% × 150,000, buy side
          gst=4.4559)                 # 18% × (20 + 4.455 + 0.15 + 0.15 = 24.755)
    assert buy.total == pytest.approx(33.7109)   # 20 + 4.455 + 0.15 + 0.15 + 4.5 + 4.4559
    # SELL 100 at 1,510: turnover 151,000
    sell = c.for_fill(NSE, "2885", "SELL", 100, 1510.0, "INTRADAY")
    check(sell, turnover=151_000.0,
          brokerage=20.0,
          stt=37.75,                  # 0.025% × 151,000
          exchange=4.4847,            # 0.00297% × 151,000
          ipft=0.151, sebi=0.151,     # 0.0001% × 151,000 each
          stamp=0.0,
          gst=4.461606)               # 18% × (20 + 4.4847 + 0.151 + 0.151 = 24.7867)
    assert sell.total == pytest.approx(66.998306)


def test_segments_overrides_and_orders_filled_in_parts():
    assert segment_of(NSE, "DELIVERY") == "NSE_EQ_DELIVERY"
    assert segment_of(NFO, instrument="FUTIDX") == "NFO_FUT"
    assert segment_of(NFO, instrument="NIFTY25NOVFUT") == "NFO_FUT"
    assert segment_of(NFO) == "NFO_OPT"                      # nothing says: the default
    assert VERSION and set(RATES) >= {"NSE_EQ_INTRADAY", "NSE_EQ_DELIVERY", "NFO_OPT", "NFO_FUT"}
    delivery = Charges().for_fill(NSE, "2885", "BUY", 10, 1000.0, "DELIVERY")
    assert delivery.brokerage == pytest.approx(10.0)          # min(₹20, 0.1% × 10,000)
    assert delivery.stt == pytest.approx(10.0)                # 0.1% on the buy side too
    # One rate replaced, the rest kept.
    zero = Charges(table={"NFO_OPT": dataclasses.replace(RATES["NFO_OPT"], brokerage_flat=0.0)})
    assert zero.for_fill(NFO, "NFO_OPT", "BUY", 65, 120.5).brokerage == 0.0
    with pytest.raises(KeyError, match="BFO_FUT"):
        Charges().for_fill(4, "1", "BUY", 1, 100.0, instrument="FUTIDX")
    assert Charges(table={"BFO_FUT": ChargeRates("BFO_FUT")}).for_fill(4, "1", "BUY", 1, 100.0,
                                                                      instrument="FUTIDX").total > 0
    # MCX futures: CTT 0.01 % on the sell, MCX 0.0021 %, no stamp duty on a sell; ₹20 brokerage.
    gold = Charges().for_fill(5, "450001", "SELL", 100, 7_000.0, instrument="FUTCOM")     # ₹7 lakh
    assert gold.segment == "MCX_FUT" and gold.stt == pytest.approx(70.0) and gold.exchange == pytest.approx(14.7)
    assert gold.brokerage == 20.0 and gold.stamp == 0.0
    assert gold.gst == pytest.approx(0.18 * (20.0 + 14.7 + 0.7))
    # An order filled in two parts pays one brokerage, shared by turnover.
    fills = pd.DataFrame({"order_id": ["a", "a", "b"], "token": ["43650"] * 3, "exchange_type": [NFO] * 3,
                          "side": ["BUY", "BUY", "SELL"], "qty": [65, 65, 130], "price": [100.0, 100.0, 100.0]})
    charged = Charges().for_fills(fills)
    assert charged["brokerage"].tolist() == pytest.approx([10.0, 10.0, 20.0])   # 0.25% × 13,000 > ₹20
    assert list(fills.columns) == ["order_id", "token", "exchange_type", "side", "qty", "price"]  # untouched
    assert charged["charges"].sum() == pytest.approx(sum(
        Charges().for_fill(NFO, "NFO_OPT", s, q, 100.0, order_value=13_000).total
        for s, q in (("BUY", 65), ("BUY", 65), ("SELL", 130))))
    assert kit.Charges is Charges


def test_a_backtest_reports_gross_charges_and_net(in_tmp_cwd):
    ticks = table_to_frame(synthetic_ticks(1500, tokens=2))      # NIFTY option tokens on NFO
    result = backtest(SmaCross(3, 8), ticks, progress=False)
    assert len(result.fills) > 0
    pnl_before, fill_columns = dict(result.pnl), list(result.fills.columns)
    report = result.pnl_after_charges()
    assert report["gross"] == result.pnl["total"]
    assert report["charges"] > 0
    assert report["net"] == pytest.approx(report["gross"] - report["charges"])
    assert result.net_pnl == pytest.approx(report["net"])
    per_fill = result.charges
    assert len(per_fill) == len(result.fills) and (per_fill["segment"] == "NFO_OPT").all()
    assert per_fill["charges"].sum() == pytest.approx(report["charges"])
    # Nothing the backtest already reported changed.
    assert result.pnl == pnl_before and list(result.fills.columns) == fill_columns
    # Futures rates on the same fills: a different, still positive, figure.
    futures = result.pnl_after_charges(instrument="futures")
    assert 0 < futures["charges"] != report["charges"]
