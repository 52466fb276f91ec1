"""More than 1,000 instruments: three market-data connections, as Angel One allows one client code.

The real SmartWebSocketV2 clients stream 2,500 instruments from the
simulator, which holds each connection to 1,000 subscriptions and the client
code to 3 connections (HTTP 429 beyond). Every instrument ticks; one
connection killed and restored reports its own gap; a 3,001st subscription
and a 4th connection are refused with a reason.
"""
from __future__ import annotations

import threading

import pytest

import kit
from conftest import wait_until
from kit.feed import shards
from kit.feed.live import FeedCredentials, SmartFeed
from kit.sim.master import EQUITY_BLOCK
from kit.sim.server import Simulator

pytestmark = pytest.mark.timeout(180)


class Seen(kit.Strategy):
    def __init__(self):
        self.seqs: dict[str, list[int]] = {}
        self.inside = 0
        self.overlaps = 0
        self.threads: set[str] = set()

    def on_tick(self, tick):
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.threads.add(threading.current_thread().name)
        self.seqs.setdefault(tick.token, []).append(tick.seq)
        self.inside -= 1


def test_shards_split_in_order_and_refuse_more_than_three_thousand():
    parts = shards.shard({1: {1: EQUITY_BLOCK}})
    assert [shards.count(p) for p in parts] == [1000, 1000, 500]
    assert [t for p in parts for t in p[1][1]] == EQUITY_BLOCK
    assert len(shards.shard({1: {1: EQUITY_BLOCK[:1000]}})) == 1
    too_many = {1: [str(300_000 + i) for i in range(3001)]}
    with pytest.raises(ValueError, match="3,001 token x mode subscriptions.*1,000 per connection and 3 connections"):
        shards.shard({1: too_many})
    with pytest.raises(ValueError, match="3,001 token x mode"):
        kit.TraderConfig(tokens=too_many)
    kit.TraderConfig(tokens={1: too_many[1][:3000]})          # exactly the limit is fine


@pytest.mark.parametrize("mode", ["callback", "queue"])
def test_2500_instruments_over_three_connections_every_one_ticking(mode):
    sim = Simulator(rate=0).start()
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens={1: EQUITY_BLOCK}, mode=mode,
                                             name=f"shards-{mode}", dispatch=kit.DispatchConfig(queue_size=20_000),
                                             connection=kit.ConnectionConfig(
                                                 reconnect=kit.ReconnectPolicy(initial_delay=0.05, max_delay=0.5))),
                            venue=kit.SimVenue(simulator=sim))
    trader.strategy = seen = Seen()
    try:
        trader.start()
        assert trader.wait_connected(20)
        sim.wait_for_subscribers(3, timeout=20)
        stats = sim.stats
        assert stats["connections"] == 3 and stats["subscriptions"] == 2500
        rows = trader.status["connections"]
        assert [r["subscriptions"] for r in rows] == [1000, 1000, 500] and all(r["connected"] for r in rows)

        sim.publish(2)
        assert wait_until(lambda: len(seen.seqs) == 2500 and all(len(s) == 2 for s in seen.seqs.values()), 60)
        assert seen.overlaps == 0

        # The second connection is killed; the market moves on 3 ticks it never receives.
        second = EQUITY_BLOCK[1500]
        sim.faults.drop(missed=3, holding=(1, second))
        assert wait_until(lambda: trader.status["connections"][1]["reconnects"] == 1
                          and trader.status["connections"][1]["connected"], 20)
        sim.wait_for_subscribers(3, timeout=20)
        sim.publish(1)
        assert wait_until(lambda: all(s[-1] == sim.stats["last_seq"][(1, t)] for t, s in seen.seqs.items()), 60)
        rows = trader.status["connections"]
        assert [r["reconnects"] for r in rows] == [0, 1, 0]
        assert [r["gaps"] for r in rows] == [0, 1000, 0] and rows[1]["missed_ticks"] == 3000
        gapped = {g.token for g in trader.feed.gaps}
        assert gapped == set(EQUITY_BLOCK[1000:2000])
        for token, seqs in seen.seqs.items():
            expected = [1, 2, 6] if token in gapped else [1, 2, 3]
            assert seqs == expected, token
        status = trader.status
        assert status["ticks_received"] == 2500 * 3 and status["gaps"] == 1000 and status["missed_ticks"] == 3000
        assert seen.overlaps == 0

        # A 3,001st subscription is refused before anything is sent.
        with pytest.raises(ValueError, match="3,001 token x mode subscriptions"):
            trader.feed.subscribe({1: [str(400_000 + i) for i in range(501)]})

        # A fourth connection of the same client code is refused by the server with 429.
        c = sim.credentials
        fourth = SmartFeed(sim.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token),
                           {1: {1: ["3045"]}}, lambda tick: None,
                           reconnect=kit.ReconnectPolicy(initial_delay=0.2, max_delay=0.5), name="fourth")
        fourth.start()
        try:
            assert wait_until(lambda: "429" in fourth.stats.last_error, 10), fourth.stats
            assert not fourth.stats.connected and fourth.stats.connects == 0
        finally:
            fourth.stop()
        assert sim.stats["connections"] == 3
    finally:
        trader.close()
        sim.stop()
