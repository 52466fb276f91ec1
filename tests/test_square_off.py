"""The intraday square-off: at a segment's time the kit flattens its intraday positions, and keeps them flat.

Live: the real SmartConnect and order-update clients against the simulator,
with an injected clock (``LiveTrader(clock=...)``); the exchange's own
positions (what ``getPosition`` answers) are what must be flat. Paper: a
replayed afternoon, judged by the ticks' exchange time.
"""
from __future__ import annotations

import time
from datetime import datetime

import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.broker.risk import RiskLimits
from kit.core.market import IST
from kit.engine.square_off import SquareOff
from test_live_safety import outside_order, outside_session

pytestmark = pytest.mark.timeout(180)

NFO_A, NFO_B, NFO_C, MCX = "43650", "43651", "43652", "450001"


def ist(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST).timestamp()


class Clock:
    def __init__(self, text: str):
        self.t = ist(text)

    def set(self, text: str) -> None:
        self.t = ist(text)

    def __call__(self) -> float:
        return self.t


def net_qty(sim, token: str) -> int:
    return sum(int(p["netqty"]) for p in sim.orders.positions() if p["symboltoken"] == token)


def order(trader, token: str, exchange_type: int, side: str, qty: int, limit: float | None = None):
    signal = kit.Signal(token, side, qty, "LIMIT" if limit else "MARKET", limit, exchange_type)
    return trader.submit(signal)


@pytest.fixture
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("journal") / "journal.sqlite"


def test_live_square_off_flattens_the_segment_at_its_time_and_only_reducing_orders_pass(sim, journal, in_tmp_cwd):
    clock = Clock("2026-12-01 15:00:00")                 # a Tuesday; MCX closes at 23:55 in December
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="sim", paper=False, tokens={2: [NFO_A]}, journal=kit.JournalConfig(str(journal)),
        risk=RiskLimits(max_daily_loss=1_000_000, price_collar=None), name=f"square-off-{time.monotonic_ns()}"),
        venue=kit.SimVenue(simulator=sim), clock=clock)
    trader.start()
    try:
        assert trader.wait_connected(10) and trader.broker.wait_ready(10)
        trader.arm_live(confirm=sim.rest.credentials.client_code)
        for args in ((NFO_A, 2, "BUY", 65), (NFO_B, 2, "SELL", 130), (MCX, 5, "BUY", 100)):
            assert order(trader, *args)[1] is None
        resting, reason = order(trader, NFO_C, 2, "BUY", 65, limit=1.0)     # far below: it rests
        assert reason is None
        assert wait_until(lambda: (net_qty(sim, NFO_A), net_qty(sim, NFO_B), net_qty(sim, MCX)) == (65, -130, 100)
                          and trader.broker.order(resting.order_id).status == "OPEN", 10)

        clock.set("2026-12-01 15:10:00")                   # NSE/BSE/NFO/BFO: 20 minutes before the close
        assert wait_until(lambda: len(trader.square_off.results) == 1, 30)
        assert (net_qty(sim, NFO_A), net_qty(sim, NFO_B)) == (0, 0)          # the exchange's own positions
        assert net_qty(sim, MCX) == 100                                        # MCX squares off later
        book = {o["orderid"]: o for o in sim.orders.order_book()}
        assert book[trader.broker.order(resting.order_id).broker_order_id]["status"] == "cancelled"
        refused = order(trader, NFO_A, 2, "BUY", 65)[1]
        assert refused.startswith("intraday square-off: NFO intraday positions were squared off at 15:10 IST")
        assert "NFO intraday positions were squared off" in trader.status["square_off"]
        assert order(trader, MCX, 5, "BUY", 100)[1] is None                   # other segments trade on
        assert wait_until(lambda: net_qty(sim, MCX) == 200, 10)

        # A second look at the same session does nothing: no double flattening.
        arrivals = len(sim.orders.arrivals)
        clock.set("2026-12-01 15:20:00")
        trader.square_off.poll(clock())
        assert len(trader.square_off.results) == 1 and len(sim.orders.arrivals) == arrivals

        # A position opened outside the kit may be reduced, not grown.
        app = outside_session(sim)
        outside_order(app, sim, "BUY", 65, NFO_A)
        assert wait_until(lambda: getattr(trader.broker.position(NFO_A, 2), "qty", 0) == 65, 30)
        assert order(trader, NFO_A, 2, "BUY", 65)[1].startswith("intraday square-off: NFO")
        assert order(trader, NFO_A, 2, "SELL", 130)[1].startswith("intraday square-off: NFO")   # a flip grows it
        assert order(trader, NFO_A, 2, "SELL", 65)[1] is None
        assert wait_until(lambda: net_qty(sim, NFO_A) == 0, 10)

        clock.set("2026-12-01 23:35:00")                   # MCX: 20 minutes before its 23:55 close
        assert wait_until(lambda: len(trader.square_off.results) == 2 and net_qty(sim, MCX) == 0, 30)

        clock.set("2026-12-02 09:30:00")                   # the next session: trading as usual
        assert wait_until(lambda: trader.status["square_off"] == "", 10)
        assert order(trader, NFO_A, 2, "BUY", 65)[1] is None
        assert wait_until(lambda: net_qty(sim, NFO_A) == 65, 10)
    finally:
        trader.close()


def afternoon() -> pd.DataFrame:
    """NFO and MCX ticks every 5 s from 15:00 to 15:20 IST on 2026-12-01, interleaved."""
    rows = []
    start = int(ist("2026-12-01 15:00:00") * 1000)
    for i in range(240):
        for token, exchange_type, price in ((NFO_A, 2, 100.0 + (i % 7) * 0.05), (MCX, 5, 6000.0 + i % 5)):
            rows.append({"token": token, "exchange_type": exchange_type, "mode": 1, "seq": i + 1,
                         "exchange_ts": start + i * 5000 + (0 if exchange_type == 2 else 2500), "ltp": price})
    return pd.DataFrame(rows)


class BuyAndAddLater(kit.Strategy):
    """Buys one lot of each on its first tick, then asks for more NFO on every NFO tick after 15:12."""

    def __init__(self):
        self.bought = set()

    def on_tick(self, tick):
        if tick.token not in self.bought:
            self.bought.add(tick.token)
            return kit.Signal.buy(tick, 65 if tick.exchange_type == 2 else 100)
        if tick.exchange_type == 2 and tick.exchange_ts >= ist("2026-12-01 15:12:00") * 1000:
            return kit.Signal.buy(tick, 65)
        return None


def replay(square_off, enforce_hours: str):
    ticks = afternoon()
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False),
                                             mode="callback", risk=RiskLimits(enforce_hours=enforce_hours),
                                             square_off=square_off, name="square-off-replay"))
    trader.strategy = BuyAndAddLater()
    refusals = []
    trader.add_signal_listener(lambda signal, reason: refusals.append(reason) if reason else None)
    trader.run()
    trader.close()
    return ticks, trader, refusals


def test_a_replayed_day_is_squared_off_by_the_paper_broker_at_the_first_tick_after_the_time(in_tmp_cwd):
    ticks, trader, refusals = replay(SquareOff(), "always")
    fills = trader.broker.fills_df()
    nfo = ticks[ticks.token == NFO_A].set_index("seq")
    sells = fills[(fills.token == NFO_A) & (fills.side == "SELL")]
    assert len(sells) == 1 and sells.iloc[0].qty == 65
    sold_at = nfo.loc[sells.iloc[0].tick_seq, "exchange_ts"]
    assert sold_at >= ist("2026-12-01 15:10:00") * 1000 > nfo.loc[sells.iloc[0].tick_seq - 1, "exchange_ts"]
    positions = {key: p.qty for key, p in trader.broker.positions.items()}
    assert positions == {(2, NFO_A): 0, (5, MCX): 100}                    # MCX's square-off is at 23:35
    # The 15:12-15:20 NFO ticks each asked for a lot more: every one refused, with the reason.
    assert len(refusals) == 96 and all(r.startswith("intraday square-off: NFO intraday positions were "
                                                    "squared off at 15:10 IST on 2026-12-01") for r in refusals)
    # The same rule by a time of one's own; and off, nothing is squared off.
    _, at_1515, _ = replay(SquareOff(at={"NFO": "15:15"}), "always")
    sell = at_1515.broker.fills_df().query("side == 'SELL'")
    assert nfo.loc[sell.iloc[0].tick_seq, "exchange_ts"] == ist("2026-12-01 15:15:00") * 1000
    _, never, _ = replay(None, "always")
    assert never.broker.position(NFO_A, 2).qty == 65 * (1 + 96 - 1)         # the last one has no tick to fill at
