"""Backtest results: tables, the equity curve against the broker's own P&L, the chart."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import kit
from kit.feed.dispatch import MODES
from kit.research.examples import SmaCross
from kit.research.backtest import backtest
from kit.bench.replay import synthetic_ticks
from kit.store.recording import table_to_frame


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    return table_to_frame(synthetic_ticks(6000, tokens=3))


def test_the_same_result_in_every_mode(ticks, in_tmp_cwd):
    results = [backtest(SmaCross(3, 8), ticks, mode=mode, progress=False) for mode in MODES]
    first = results[0]
    assert len(first.fills) > 50
    for other in results[1:]:
        for table in ("signals", "orders", "fills"):
            a = getattr(first, table).drop(columns=["submit_ns", "fill_ns"], errors="ignore")
            b = getattr(other, table).drop(columns=["submit_ns", "fill_ns"], errors="ignore")
            pd.testing.assert_frame_equal(a, b)
        pd.testing.assert_frame_equal(first.equity, other.equity)
    assert [r.stats["mode"] for r in results] == list(MODES)


def test_tables_point_at_the_ticks_they_happened_on(ticks, in_tmp_cwd):
    result = backtest(SmaCross(3, 8), ticks, progress=False)
    fills, replayed = result.fills, result.ticks
    assert len(replayed) == len(ticks) == result.stats["ticks"]
    at = replayed.iloc[fills["tick_index"]]
    # A fill happens on a later tick of its own instrument, whose seq it records.
    assert (at["token"].to_numpy() == fills["token"].to_numpy()).all()
    assert (at["seq"].to_numpy() == fills["tick_seq"].to_numpy()).all()
    assert (at["time"].to_numpy() == fills["time"].to_numpy()).all()
    assert (at["ltp"].to_numpy() == fills["price"].to_numpy()).all()       # MARKET: next tick's ltp
    orders = result.orders
    assert len(orders) == len(result.signals)
    filled = orders[orders["status"] == "COMPLETE"]
    assert len(filled) == len(fills) and len(orders) - len(filled) <= 1       # the last may still be open
    assert (filled["tick_index"].to_numpy() < fills.set_index("order_id").loc[filled["order_id"], "tick_index"]
            .to_numpy()).all()
    assert str(result.equity.index.tz) == "Asia/Kolkata"


def test_risk_rejections_leave_orders_aligned_with_accepted_signals(ticks, in_tmp_cwd):
    class Alternating(SmaCross):
        def __init__(self):
            super().__init__(3, 8)
            self.n = 0

        def on_tick(self, tick):
            signal = super().on_tick(tick)
            if signal is not None:
                self.n += 1
                signal.qty = 650 if self.n % 3 == 0 else 65      # every third one is too large
            return signal

    result = backtest(Alternating(), ticks, progress=False, risk=kit.RiskLimits(max_qty_per_order=100))
    assert result.stats["rejected_signals"] > 0
    accepted = result.signals[result.signals["qty"] <= 100]
    assert len(result.orders) == len(accepted)
    assert (result.orders["tick_index"].to_numpy() == accepted["tick_index"].to_numpy()).all()
    assert (result.orders["tick_seq"].to_numpy() == accepted["tick_seq"].to_numpy()).all()


def test_equity_curve_matches_the_broker_after_every_tick(ticks, in_tmp_cwd):
    """The curve is computed after the run; check it against broker.pnl() taken live at each tick."""
    sample = ticks.iloc[:3000]
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(sample, progress=False),
                                             mode="callback", metrics=kit.MetricsConfig(latency=False),
                                             name=f"pnl-{time.monotonic_ns()}"))
    trader.strategy = SmaCross(3, 8)
    observed = []
    trader.add_tick_listener(lambda tick: observed.append(trader.broker.pnl()))
    run = kit.research.backtest.Backtest(trader)
    trader.run()
    trader.close()
    result = run.result()
    live = pd.DataFrame(observed)
    assert len(live) == len(result.equity) == 3000
    assert len(result.fills) > 20
    np.testing.assert_allclose(result.equity["realized"], live["realized"], atol=1e-6)
    np.testing.assert_allclose(result.equity["unrealized"], live["unrealized"], atol=1e-6)
    np.testing.assert_allclose(result.equity["total"].iloc[-1], result.pnl["total"], atol=1e-6)
    summary = result.summary()
    assert summary["fills"] == len(result.fills) and summary["max_drawdown"] <= 0


def test_plot_shows_price_trades_and_equity(ticks, in_tmp_cwd):
    result = backtest(SmaCross(3, 8), ticks, progress=False)
    fig = result.plot()
    assert isinstance(fig, go.Figure)
    names = [trace.name for trace in fig.data]
    assert names == ["ltp", "buy", "sell", "total", "realized"]
    token = result.fills.groupby("token").size().idxmax()
    buys = result.fills[(result.fills["token"] == token) & (result.fills["side"] == "BUY")]
    assert list(fig.data[1].y) == buys["price"].tolist()
    json.loads(fig.to_json())                               # serialisable, as a notebook needs
    small = result.plot(token="43651", max_points=500)
    assert len(small.data[0].x) <= 520 and small.layout.annotations[0].text.startswith("43651")
    with pytest.raises(ValueError, match="not in the replayed ticks"):
        result.plot(token="nope")


def test_backtest_from_a_recording_directory_and_a_failing_strategy(tmp_path_factory, ticks, in_tmp_cwd):
    from kit.store.recording import TickRecorder, table_to_ticks
    root = tmp_path_factory.mktemp("bt-recording")
    recorder = TickRecorder(root).start()
    for t in table_to_ticks(synthetic_ticks(2000, tokens=2)):
        recorder.append(t)
    recorder.stop()

    class Flaky(SmaCross):
        def on_tick(self, tick):
            if tick.seq % 100 == 0:
                raise RuntimeError("bad luck")
            return super().on_tick(tick)

    result = backtest(Flaky(3, 8), str(root), progress=False)
    assert result.stats["ticks"] == 2000
    expected = int((result.ticks["seq"] % 100 == 0).sum())
    assert expected > 10 and result.stats["strategy_errors"] == expected   # counted; the replay went on
    assert len(result.fills) > 0
