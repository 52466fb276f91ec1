"""A day in fast-forward: one live trading day against the simulator, its failures included (issue 15).

A live, armed trader (the real SmartConnect, SmartWebSocketV2 and
order-update clients) trades a Tuesday from 09:14 to 15:31 IST on an injected
clock that the test moves forward; nothing waits for wall time except for
what it reads. Over the day: 2,050 instruments stream over the three
connections Angel One allows; a strategy builds an intraday position in two
NIFTY options; the session is revoked mid-morning and renewed (a fresh
login), both sockets coming back with their subscriptions; one connection is
dropped while the market moves on, and comes back reporting its gap; at the
square-off time the exchange's own positions go flat and the strategy's
further orders are refused; after the close orders are refused with the
calendar's reason; ``stop()`` leaves no kit thread; and the journal agrees
with the simulator's order book and positions, order by order.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

import kit
from conftest import wait_until
from kit.broker.risk import RiskLimits
from kit.core.market import IST
from kit.sim.master import EQUITY_BLOCK
from kit.sim.server import Simulator

pytestmark = pytest.mark.timeout(120)

NFO_A, NFO_B = "43650", "43651"            # NIFTY options, lot 65
SHARES = EQUITY_BLOCK[:2048]               # + the 2 options: 2,050 instruments, 1,000 + 1,000 + 50
LOT = 65


def ist(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=IST).timestamp()


class Clock:
    """The trader's IST clock, moved forward by the test."""

    def __init__(self, text: str):
        self.t = ist(text)

    def set(self, text: str) -> None:
        assert ist(text) >= self.t, "the day only goes forward"
        self.t = ist(text)

    def __call__(self) -> float:
        return self.t


class BuildAPosition(kit.Strategy):
    """On each tick of the options: buy a lot of A and sell a lot of B. Records every tick's sequence number."""

    def __init__(self):
        self.seqs: dict[tuple[int, str], list[int]] = {}

    def on_tick(self, tick):
        self.seqs.setdefault((tick.exchange_type, tick.token), []).append(tick.seq)
        if tick.token == NFO_A:
            return kit.Signal.buy(tick, LOT)
        if tick.token == NFO_B:
            return kit.Signal.sell(tick, LOT)
        return None


def net_qty(sim, token: str) -> int:
    return sum(int(p["netqty"]) for p in sim.orders.positions() if p["symboltoken"] == token)


def kit_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("kit-") and t.is_alive())


def test_a_trading_day_in_fast_forward(tmp_path_factory, in_tmp_cwd):
    before = set(kit_threads())
    clock = Clock("2026-12-01 09:14")                    # a Tuesday, no holiday
    sim = Simulator(rate=0).start()
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="sim", paper=False, tokens={1: SHARES, 2: [NFO_A, NFO_B]}, product="INTRADAY",
        journal=kit.JournalConfig(str(tmp_path_factory.mktemp("journal") / "journal.sqlite")), square_off=kit.SquareOff(),
        risk=RiskLimits(max_daily_loss=1_000_000, price_collar=None), name=f"day-{time.monotonic_ns()}",
        dispatch=kit.DispatchConfig(queue_size=20_000),
        connection=kit.ConnectionConfig(reconnect=kit.ReconnectPolicy(initial_delay=0.05, max_delay=0.5))),
        venue=kit.SimVenue(simulator=sim), clock=clock)
    trader.strategy = strategy = BuildAPosition()
    refusals: list[str] = []
    trader.add_signal_listener(lambda signal, reason: refusals.append(reason) if reason else None)
    everything = {1: SHARES, 2: [NFO_A, NFO_B]}

    def market(n: int = 1) -> None:
        """Every instrument ticks ``n`` times; wait until the strategy saw each one's last tick."""
        sim.publish(n, everything)
        last = sim.stats["last_seq"]
        assert wait_until(lambda: all(strategy.seqs.get(key, [0])[-1] == seq for key, seq in last.items()), 60), \
            f"{sum(1 for k, s in last.items() if strategy.seqs.get(k, [0])[-1] != s)} instruments behind"

    def position(a: int, b: int) -> None:
        assert wait_until(lambda: (net_qty(sim, NFO_A), net_qty(sim, NFO_B)) == (a, b), 15), \
            (net_qty(sim, NFO_A), net_qty(sim, NFO_B), refusals[-3:])

    try:
        trader.start()
        assert trader.wait_connected(20) and trader.broker.wait_ready(10)
        sim.wait_for_subscribers(3, timeout=20)
        assert sim.stats["connections"] == 3 and sim.stats["subscriptions"] == 2050
        rows = trader.status["connections"]
        assert [r["subscriptions"] for r in rows] == [1000, 1000, 50] and all(r["connected"] for r in rows)
        trader.arm_live(confirm=sim.rest.credentials.client_code)

        # 09:14: before the open, the strategy's orders are refused with the calendar's reason.
        market()
        # The strategy has seen the ticks; its signals reach risk just after: wait for the refusals themselves.
        assert wait_until(lambda: len(refusals) >= 2, 10) and len(refusals) == 2, refusals
        assert all(r.startswith("outside NFO hours 09:15–15:30 IST on 2026-12-01") for r in refusals), refusals
        assert not sim.orders.arrivals                       # nothing reached the exchange

        # 09:20: the market is open; every instrument ticks, the strategy builds its position.
        clock.set("2026-12-01 09:20")
        market()
        position(LOT, -LOT)

        # 11:00: the session is revoked at the broker (refresh token too); the kit logs in afresh.
        clock.set("2026-12-01 11:00")
        renewals = trader.status["session_renewals"]
        sim.faults.revoke_session()
        assert wait_until(lambda: trader.status["session_renewals"] > renewals, 30), trader.venue.keeper.status()
        assert wait_until(lambda: trader.wait_connected(0) and trader.broker.stream.stats.connected
                          and all(r["connected"] for r in trader.status["connections"]), 30)
        sim.wait_for_subscribers(3, timeout=20)
        assert trader.status["session_error"] == "" and trader.status["orders_blocked"] == ""
        keeper = trader.venue.keeper
        assert keeper.renewals == renewals + 1 and keeper.by_login == 1      # four refused sockets, one login
        market()
        position(2 * LOT, -2 * LOT)

        # 12:30: the second connection is dropped while the market moves on 3 ticks it never gets.
        clock.set("2026-12-01 12:30")
        reconnects = [r["reconnects"] for r in trader.status["connections"]]
        gaps_before = len(trader.feed.gaps)
        sim.drop_connections(missed=3, holding=(1, SHARES[1500]))
        assert wait_until(lambda: trader.status["connections"][1]["reconnects"] == reconnects[1] + 1
                          and trader.status["connections"][1]["connected"], 30)
        sim.wait_for_subscribers(3, timeout=20)
        market()
        position(3 * LOT, -3 * LOT)
        rows = trader.status["connections"]
        assert [r["reconnects"] for r in rows] == [reconnects[0], reconnects[1] + 1, reconnects[2]]
        new_gaps = trader.feed.gaps[gaps_before:]
        assert {g.token for g in new_gaps} == set(SHARES[1000:2000])
        assert all(g.first_seq_after - g.last_seq_before - 1 == 3 for g in new_gaps)

        # Every tick the simulator sent is seen once, in order, or inside a reported gap.
        gapped = {(g.exchange_type, g.token): set(range(g.last_seq_before + 1, g.first_seq_after))
                  for g in trader.feed.gaps}
        last = sim.stats["last_seq"]
        assert len(last) == 2050
        for key, seq in last.items():
            seen = strategy.seqs[key]
            assert seen == sorted(set(seen)) and seen[0] == 1, key
            assert set(range(1, seq + 1)) - set(seen) == gapped.get(key, set()), key

        # 15:10: NFO's square-off time (20 minutes before the close): the exchange's positions go flat.
        clock.set("2026-12-01 15:10")
        assert wait_until(lambda: trader.square_off.results, 30)
        trader.square_off.join(30)
        position(0, 0)
        assert not trader.square_off.results[-1].get("error"), trader.square_off.results
        assert "NFO intraday positions were squared off at 15:10" in trader.status["square_off"]
        refused = len(refusals)
        clock.set("2026-12-01 15:12")
        market()                                           # the strategy asks again: refused, both
        assert wait_until(lambda: len(refusals) >= refused + 2, 10) and len(refusals) == refused + 2, refusals
        assert all(r.startswith("intraday square-off: NFO") for r in refusals[-2:]), refusals
        position(0, 0)

        # 15:31: the close has come: new orders are refused with the calendar's reason.
        clock.set("2026-12-01 15:31")
        tick = kit.Tick(NFO_A, 2, 1, 0, 0, sim.last_price(2, NFO_A))
        order, reason = trader.submit(kit.Signal.sell(tick, LOT), tick)
        assert order is None and reason.startswith("outside NFO hours 09:15–15:30 IST on 2026-12-01: it is 15:31 IST")
        assert trader.status["session_renewals"] > renewals

        trader.stop()
        assert not trader.running
        # The feed's connections, the dispatcher's consumer and the square-off clock are gone; the broker's
        # order-update stream and the session stay until close() (a stopped trader can start again).
        assert wait_until(lambda: not [n for n in kit_threads() if n not in before and n.startswith(
            ("kit-feed", "kit-consumer", "kit-square-off"))], 10), kit_threads()

        # The journal agrees with the exchange: every order's final status and fills, and the positions.
        journal = trader.broker.journal
        book = {row["orderid"]: row for row in sim.orders.order_book()}
        orders = journal.orders()
        assert len(orders) == len(book) == 3 * 2 + 2    # the strategy's 6, and the square-off's 2
        for o in orders:
            row = book[o["broker_order_id"]]
            assert o["status"].lower() == row["status"], (o, row)
            assert int(o["filled_qty"]) == int(row["filledshares"]), (o, row)
        held = {(p["exchange_type"], p["token"]): p["qty"] for p in journal.positions()}
        assert held == {(2, NFO_A): 0, (2, NFO_B): 0}
        assert {p["symboltoken"]: int(p["netqty"]) for p in sim.orders.positions()} == {NFO_A: 0, NFO_B: 0}
        assert trader.broker.position_differences_df().empty
    finally:
        trader.close()
    try:
        # close(): nothing of the trader's is left running; only the simulator's own threads.
        assert wait_until(lambda: all(n in before or n.startswith("kit-sim") for n in kit_threads()), 10), \
            kit_threads()
    finally:
        sim.stop()
