"""A session that expires is renewed; one that cannot be renewed halts trading, visibly.

The real SmartConnect, SmartWebSocketV2 and order-update clients trade
against the simulator, whose tokens expire after ``token_lifetime`` seconds
(JWT-shaped, with ``exp``) and can be revoked on demand. What must hold:
every tick the simulator sent is either seen by the strategy or reported
in a gap; every order placed before and after a renewal is in both the
journal and the simulator's order book, filled; the tokens never show in
the logs.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest

import kit
from conftest import wait_until
from kit.angel.session import jwt_expiry
from kit.broker.risk import RiskLimits
from kit.sim.server import Simulator

pytestmark = pytest.mark.timeout(120)

TOKENS = ["43650", "43651", "43652"]
LIMITS = RiskLimits(max_daily_loss=1_000_000, enforce_hours="never")


class SeqRecorder(kit.Strategy):
    def __init__(self):
        self.seen: dict[str, list[int]] = {t: [] for t in TOKENS}
        self.threads: set[str] = set()

    def on_tick(self, tick):
        self.seen[tick.token].append(tick.seq)


@pytest.fixture
def sim():
    s = Simulator(rate=0, token_lifetime=3.0, tokens={2: TOKENS}).start()
    yield s
    s.stop()


def live_trader(sim, tmp_path, *, margin: float = 2.0) -> kit.LiveTrader:
    config = kit.TraderConfig(
        feed="sim", paper=False, tokens={2: TOKENS}, risk=LIMITS, name=f"renew-{time.monotonic_ns()}",
        journal=kit.JournalConfig(str(tmp_path / "journal.sqlite")),
        connection=kit.ConnectionConfig(session_margin=margin,
                                        reconnect=kit.ReconnectPolicy(initial_delay=0.05, max_delay=0.5)))
    trader = kit.LiveTrader(config, venue=kit.SimVenue(simulator=sim, session_margin=margin))
    trader.strategy = SeqRecorder()
    trader.start()
    assert trader.wait_connected(10) and trader.broker.wait_ready(10)
    trader.arm_live(confirm=sim.rest.credentials.client_code)
    return trader


class Ticking:
    """Publishes a tick per token every few ms on its own thread: ticks flow through the switch."""

    def __init__(self, sim):
        self.sim, self._stop = sim, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            try:
                self.sim.publish(1, {2: TOKENS})
            except RuntimeError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def assert_no_tick_lost(sim, trader):
    """Every sequence number the simulator generated is either seen or inside a reported gap."""
    sim.publish(1, {2: TOKENS})            # a last tick per token, after every switch
    last = sim.stats["last_seq"]
    strategy = trader.strategy
    assert wait_until(lambda: all(strategy.seen[t] and strategy.seen[t][-1] == last[(2, t)] for t in TOKENS), 20)
    gaps = {t: set() for t in TOKENS}
    for gap in trader.feed.gaps:
        gaps[gap.token].update(range(gap.last_seq_before + 1, gap.first_seq_after))
    for token in TOKENS:
        seen = strategy.seen[token]
        assert len(seen) == len(set(seen)), f"{token}: a tick was delivered twice"
        assert seen == sorted(seen), f"{token}: ticks out of order"
        missing = set(range(seen[0], last[(2, token)] + 1)) - set(seen) - gaps[token]
        assert not missing, f"{token}: ticks lost without a gap reported: {sorted(missing)[:10]}"
        assert seen[0] == 1, f"{token}: the first ticks were lost before the trader saw any"


def order_through(trader, sim, token="43650"):
    tick = kit.Tick(token, 2, 1, 0, 0, sim.last_price(2, token))
    order, refusal = trader.submit(kit.Signal.buy(tick, 65), tick)
    assert refusal is None, refusal
    assert wait_until(lambda: trader.broker.order(order.order_id).status == "COMPLETE", 15), \
        trader.broker.order(order.order_id)
    return order.order_id


def assert_books_agree(trader, sim, order_ids):
    tagged = {row["ordertag"]: row for row in sim.orders.order_book()}
    journal = trader.broker.orders_df().set_index("order_id")
    for order_id in order_ids:
        assert tagged[order_id]["status"] == "complete"
        assert journal.loc[order_id, "status"] == "COMPLETE"
        assert int(journal.loc[order_id, "filled_qty"]) == int(tagged[order_id]["filledshares"]) == 65


def test_the_session_is_renewed_before_it_expires_without_losing_ticks_or_orders(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    trader = live_trader(sim, tmp_path)
    try:
        keeper = trader.venue.keeper
        first_token = keeper.current().auth_token
        expires = jwt_expiry(first_token)
        assert expires is not None and expires - time.time() < 3.5      # the simulator's JWT says when
        assert trader.status["session_expires_at"] == expires
        before = order_through(trader, sim)
        with Ticking(sim):
            # Renewed 2 s before the 3 s token's expiry (well, at half its life: 1.5 s): twice, here.
            assert wait_until(lambda: keeper.renewals >= 2, 20), keeper.status()
            # Each renewal reconnects both sockets, a moment after it: wait for the reconnects themselves,
            # not for "connected", which the sockets still are just before the second one.
            assert wait_until(lambda: trader.feed.stats.reconnects >= 2 and trader.broker.stream.stats.connects >= 3
                              and trader.feed.stats.connected and trader.broker.stream.stats.connected, 20), \
                (trader.feed.stats, trader.broker.stream.stats)
        assert keeper.by_refresh >= 2 and keeper.by_login == 0
        new_token = keeper.current().auth_token
        assert new_token != first_token and jwt_expiry(new_token) > expires
        assert time.time() > expires          # the first token has expired meanwhile
        assert sim.rest.tokens.renewals >= 2
        # Both sockets reconnected with the new tokens, and still work.
        assert trader.feed.stats.reconnects >= 2 and trader.broker.stream.stats.connects >= 3
        after = order_through(trader, sim)
        assert_no_tick_lost(sim, trader)
        assert_books_agree(trader, sim, [before, after])
        status = trader.status
        assert status["session_error"] == "" and status["session_renewals"] >= 2 and status["orders_blocked"] == ""
    finally:
        trader.close()
    logged = caplog.text
    for secret in (first_token, new_token, first_token.removeprefix("Bearer ")):
        assert secret not in logged


def test_a_revoked_session_is_renewed_by_a_fresh_login(sim, tmp_path):
    sim.rest.tokens.lifetime = None           # no renewal before expiry: only the refusal triggers one
    trader = live_trader(sim, tmp_path)
    try:
        keeper = trader.venue.keeper
        before = order_through(trader, sim)
        with Ticking(sim):
            assert wait_until(lambda: sum(map(len, trader.strategy.seen.values())) > 30, 10)
            sim.faults.revoke_session()       # refresh token too: only a new login helps
            assert wait_until(lambda: keeper.renewals >= 1, 20), keeper.status()
            assert wait_until(lambda: trader.feed.stats.connected and trader.broker.stream.stats.connected, 10)
        assert keeper.by_login == 1
        assert "refused the token" in keeper.last_reason or "Invalid Token" in keeper.last_reason
        assert trader.feed.stats.reconnects >= 1 and not trader.feed.stats.auth_failed
        after = order_through(trader, sim)
        assert_no_tick_lost(sim, trader)
        assert_books_agree(trader, sim, [before, after])
    finally:
        trader.close()


def test_rest_invalid_token_renews_the_session(sim, tmp_path):
    sim.rest.tokens.lifetime = None
    trader = live_trader(sim, tmp_path)
    try:
        keeper = trader.venue.keeper
        sim.faults.revoke_session(drop=False)     # the sockets stay up; the next REST call is refused
        try:
            trader.broker.check_positions()       # refused, unless the reconciler's own call came first
        except Exception as exc:
            assert "Invalid Token" in str(exc)
        assert wait_until(lambda: keeper.renewals == 1, 20), keeper.status()
        assert keeper.last_reason == "REST answered Invalid Token" and keeper.by_login == 1
        trader.broker.check_positions()           # the same client, with the new JWT
        assert_books_agree(trader, sim, [order_through(trader, sim)])
    finally:
        trader.close()


def test_a_renewal_that_fails_halts_trading_with_the_reason_and_recovers(sim, tmp_path):
    sim.rest.tokens.lifetime = None
    trader = live_trader(sim, tmp_path)
    try:
        keeper = trader.venue.keeper
        keeper.retry = kit.ReconnectPolicy(initial_delay=0.2, max_delay=1.0, jitter=0)
        sim.faults.refuse_logins()
        sim.faults.revoke_session()
        # (The first attempt may meet the login route's 1/s limit instead, right after the trader's login.)
        assert wait_until(lambda: "login refused" in trader.status["session_error"], 20), trader.status
        status = trader.status
        assert "could not be renewed" in status["orders_blocked"] and "login refused" in status["orders_blocked"]
        assert keeper.failures >= 1
        tick = kit.Tick("43650", 2, 1, 0, 0, sim.last_price(2, "43650"))
        order, refusal = trader.submit(kit.Signal.buy(tick, 65), tick)
        assert order is None and "could not be renewed" in refusal
        assert wait_until(lambda: keeper.failures >= 2, 10)          # retried with backoff
        sim.faults.refuse_logins(False)
        assert wait_until(lambda: keeper.renewals == 1, 20), keeper.status()
        assert wait_until(lambda: trader.status["orders_blocked"] == "", 10), trader.status
        assert trader.wait_connected(10) and trader.broker.wait_ready(10)
        assert_books_agree(trader, sim, [order_through(trader, sim)])
    finally:
        trader.close()


def test_two_renewals_at_once_renew_once(sim, tmp_path):
    sim.rest.tokens.lifetime = None
    trader = live_trader(sim, tmp_path)
    try:
        keeper = trader.venue.keeper
        results, token = [], keeper.current().auth_token      # both found this one wanting
        threads = [threading.Thread(target=lambda: results.append(keeper.renew("test", replacing=token)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == [True, True] and keeper.renewals == 1 and sim.rest.tokens.renewals == 1
    finally:
        trader.close()
