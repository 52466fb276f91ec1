"""A market day's failures against the real SDK client and the real simulator, over loopback.

Reconnects with backoff, stalls, gaps, bad frames (fuzzed with hypothesis),
overload in both dispatch modes, and memory over a million ticks. No test
asserts on timing: waits poll with generous timeouts, and where a figure is
checked (lag, memory) the bound is far from what the machine does.
"""
from __future__ import annotations

import gc
import json
import random
import socket
import threading
import time
from collections import defaultdict

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kit
from conftest import wait_until
from kit.angel import wire
from kit.feed.dispatch import CALLBACK, QUEUE
from kit.sim.faults import Faults, is_packet
from kit.feed.live import FeedCredentials, Gap, ReconnectPolicy, SmartFeed
from kit.sim.server import Simulator
from kit.core.tick import LTP, SNAP_QUOTE

pytestmark = pytest.mark.timeout(300)

TOKENS = {2: ["43650", "43651", "43652", "43653"]}
FAST = ReconnectPolicy(initial_delay=0.01, max_delay=0.1, jitter=0.5)


class Journal(kit.Strategy):
    """Every tick and every gap, in the order the strategy saw them, and the threads it ran on."""

    def __init__(self, work=None):
        self.events: list[tuple] = []
        self.ticks = 0
        self.inside = 0
        self.overlaps = 0
        self.threads: set[str] = set()
        self.work = work

    def on_tick(self, tick):
        self.inside += 1
        if self.inside != 1:
            self.overlaps += 1
        self.events.append(("tick", tick.token, tick.seq))
        self.ticks += 1
        if self.work:
            self.work(tick)
        self.inside -= 1

    def on_gap(self, gap):
        self.inside += 1
        if self.inside != 1:
            self.overlaps += 1
        self.threads.add(threading.current_thread().name)
        self.events.append(("gap", gap.token, gap))
        self.inside -= 1

    def by_token(self):
        out = defaultdict(list)
        for kind, token, x in self.events:
            out[token].append((kind, x))
        return out


def connection(**settings) -> kit.ConnectionConfig:
    """The tests' connection settings: fast reconnects, and ``settings``."""
    return kit.ConnectionConfig(**{"reconnect": FAST, **settings})


def make_trader(sim, **overrides) -> kit.LiveTrader:
    settings_ = {"tokens": TOKENS, "name": f"resilience-{time.monotonic_ns()}", "connection": connection(),
                 **overrides}
    return kit.LiveTrader(kit.TraderConfig(feed="sim", **settings_), venue=kit.SimVenue(simulator=sim))


def n_tokens(tokens) -> int:
    return sum(len(t) for t in tokens.values())


def check_gaps_against_ticks(journal: Journal, gaps: list[Gap]) -> None:
    """Each token's ticks rise by one except across a reported gap, and each gap reached the
    strategy right before the first tick after it."""
    reported = {(g.token, g.first_seq_after): g for g in gaps}
    for token, events in journal.by_token().items():
        last_seq = None
        for i, (kind, x) in enumerate(events):
            if kind == "gap":
                assert events[i + 1] == ("tick", x.first_seq_after), f"{token}: gap not followed by its tick"
                assert x.last_seq_before == last_seq, f"{token}: gap starts at {x.last_seq_before}, last seen {last_seq}"
                continue
            if last_seq is not None and x != last_seq + 1:
                gap = reported.get((token, x))
                assert gap is not None, f"{token}: unreported jump {last_seq} -> {x}"
                assert gap.missed == x - last_seq - 1
                assert events[i - 1] == ("gap", gap), f"{token}: the strategy was not told before seq {x}"
            last_seq = x


# --------------------------------------------------------------------------- backoff
def test_backoff_grows_exponentially_is_capped_and_jittered():
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=8.0, jitter=0.2)
    rng = random.Random(1)
    for attempt in range(1, 12):
        base = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.2          # jittered, not constant
    assert ReconnectPolicy(jitter=0).delay(1, rng) == 0.2
    assert ReconnectPolicy(jitter=0, max_delay=30).delay(100, rng) == 30.0


class RecordingPolicy(ReconnectPolicy):
    """The real policy, remembering the attempts it was asked about."""

    def delay(self, attempt, rng):
        self.__dict__.setdefault("attempts", []).append(attempt)
        return super().delay(attempt, rng)


@pytest.mark.parametrize("reset_after, expected", [(60.0, [1, 2, 3, 4, 5]), (0.0, [1, 1, 1, 1, 1])])
def test_backoff_resets_only_after_a_connection_that_stayed_up(in_tmp_cwd, reset_after, expected):
    """A server that accepts and drops straight away is not hammered at the initial delay."""
    policy = RecordingPolicy(initial_delay=0.01, max_delay=0.2, jitter=0, reset_after=reset_after)
    with Simulator(rate=0) as sim:
        c = sim.credentials
        feed = SmartFeed(sim.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token),
                         {LTP: TOKENS}, lambda t: None, reconnect=policy).start()
        try:
            for n in range(1, 6):
                assert wait_until(lambda: feed.stats.connects == n, 10)
                sim.drop_connections()
            assert wait_until(lambda: feed.stats.connects == 6, 10)
        finally:
            feed.stop()
    assert policy.attempts == expected
    assert feed.stats.disconnects == 5 and feed.stats.reconnects == 5


@pytest.mark.parametrize("reset_after, expected", [(60.0, [1, 2, 3, 4, 5]), (0.0, [1, 1, 1, 1, 1])])
def test_the_order_update_stream_backs_off_by_the_same_rule(in_tmp_cwd, reset_after, expected):
    """Its reconnects follow the feed's policy too: a connection dropped at once does not reset the backoff."""
    from kit.angel.order_updates import OrderUpdateStream
    from kit.angel.session import Credentials, login
    policy = RecordingPolicy(initial_delay=0.01, max_delay=0.2, jitter=0, reset_after=reset_after)
    with Simulator(rate=0) as sim:
        rc = sim.rest.credentials
        session = login(Credentials(rc.api_key, rc.client_code, rc.pin, rc.totp_secret), root=sim.rest.url)
        stream = OrderUpdateStream(sim.orders.url, session.feed, lambda message: None, reconnect=policy).start()
        try:
            for n in range(1, 6):
                assert wait_until(lambda: stream.stats.connects == n, 10)
                sim.orders.drop_connections()
            assert wait_until(lambda: stream.stats.connects == 6, 10)
        finally:
            stream.stop()
    assert policy.attempts == expected
    assert stream.stats.reconnects == 5


# --------------------------------------------------------------------------- reconnects and gaps
@pytest.mark.parametrize("mode", [QUEUE, CALLBACK])
def test_twenty_forced_disconnects_each_reconnect_resubscribe_and_report_the_gap(sim, in_tmp_cwd, mode):
    trader = make_trader(sim, mode=mode, dispatch=kit.DispatchConfig(queue_size=100_000))
    journal = trader.strategy = Journal()
    trader.start()
    missed_per_drop = [3 * i + 1 for i in range(20)]
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(5)
        assert wait_until(lambda: journal.ticks == 20, 10)
        for n, missed in enumerate(missed_per_drop, start=1):
            sim.faults.drop(missed=missed)
            assert wait_until(lambda: trader.status["reconnects"] == n and trader.status["connected"], 10), \
                trader.status
            sim.wait_for_subscribers(1)
            assert wait_until(lambda: sim.stats["subscriptions"] == 4, 5)       # every token restored
            assert trader.feed.subscriptions() == {LTP: TOKENS}
            sim.publish(5)
            assert wait_until(lambda: journal.ticks == 20 * (n + 1), 10), (n, trader.status)  # data flows
    finally:
        trader.stop()
    status = trader.status
    assert (status["reconnects"], status["disconnects"], status["connects"]) == (20, 20, 21)
    assert status["last_disconnect_reason"].startswith("dropped"), status["last_disconnect_reason"]
    # one gap per token per drop, exactly the ticks the market moved on meanwhile
    gaps = list(trader.gaps)
    assert len(gaps) == status["gaps"] == 20 * 4
    assert sorted(g.missed for g in gaps) == sorted(m for m in missed_per_drop for _ in range(4))
    assert status["missed_ticks"] == 4 * sum(missed_per_drop)
    assert all(g.seconds >= 0 and g.reconnect >= 1 for g in gaps)
    check_gaps_against_ticks(journal, gaps)
    assert sum(1 for e in journal.events if e[0] == "gap") == 80
    assert journal.overlaps == 0
    # on_gap ran where on_tick runs: the consumer thread in queue mode, the socket thread in callback mode
    expected_thread = "kit-feed" if mode == CALLBACK else "kit-consumer"
    assert journal.threads and all(t.startswith(expected_thread) for t in journal.threads), journal.threads


def test_a_gap_waits_behind_ticks_queued_before_the_drop(sim, in_tmp_cwd):
    """Queue mode: ticks from before the drop are still queued when the gap is found;
    the strategy must see them first, then the gap, then the tick after it."""
    gate, entered = threading.Event(), threading.Event()

    def hold_first(tick):
        if not entered.is_set():
            entered.set()
            gate.wait(30)

    trader = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]}, dispatch=kit.DispatchConfig(queue_size=10_000))
    journal = trader.strategy = Journal(work=hold_first)
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(10)
        assert entered.wait(10)
        assert wait_until(lambda: trader.feed.stats.ticks == 10, 10)
        sim.faults.drop(missed=7)
        assert wait_until(lambda: trader.status["reconnects"] == 1 and trader.status["connected"], 10)
        sim.wait_for_subscribers(1)
        sim.publish(3)
        assert wait_until(lambda: trader.status["gaps"] == 1 and trader.feed.stats.ticks == 13, 10)
        assert journal.ticks == 1                       # still held on the first tick
        gate.set()
        assert wait_until(lambda: journal.ticks == 13, 10)
    finally:
        gate.set()
        trader.stop()
    seqs = [x if kind == "tick" else "gap" for kind, _, x in journal.events]
    first = seqs[0]
    assert seqs == list(range(first, first + 10)) + ["gap"] + list(range(first + 17, first + 20))
    gap = trader.gaps[0]
    assert (gap.last_seq_before, gap.first_seq_after, gap.missed) == (first + 9, first + 17, 7)


def test_ticks_lost_in_flight_show_in_the_gap(in_tmp_cwd):
    """Frames still in the server's buffers when the connection is aborted are lost; the gaps
    after the reconnect account for every tick sent and not received."""
    tokens = {2: ["43650", "43651"]}
    slow = threading.Event()
    with Simulator(rate=0, tokens=tokens) as sim:
        trader = make_trader(sim, mode=CALLBACK, tokens=tokens, connection=connection(stall_timeout=None))
        # a slow strategy on the socket thread lets a backlog build up in the server's buffers
        journal = trader.strategy = Journal(work=lambda tick: slow.is_set() and time.sleep(0.001))
        trader.start()
        try:
            assert trader.wait_connected(10)
            sim.wait_for_subscribers(1)
            sim.publish(1)
            assert wait_until(lambda: journal.ticks == 2, 10)     # both tokens have a baseline
            slow.set()
            sim.set_rate(5_000)                                     # 10,000 ticks/s into ~1,000/s

            def server_buffered() -> int:
                return sim._apply(lambda: sum(c.ws.transport.get_write_buffer_size() for c in sim._clients))
            assert wait_until(lambda: server_buffered() > 0, 60)
            sim.faults.drop()
            sim.set_rate(0)
            slow.clear()
            assert wait_until(lambda: trader.status["reconnects"] == 1 and trader.status["connected"], 30)
            sim.wait_for_subscribers(1)
            sim.publish(1)
            last_seq = sim.stats["last_seq"]

            def caught_up():
                seen = journal.by_token()
                return all(seen[t] and seen[t][-1] == ("tick", last_seq[(2, t)]) for t in tokens[2])
            assert wait_until(caught_up, 60), trader.status
        finally:
            trader.close()
        stats = sim.stats
    lost = stats["sent"] + stats["dropped_slow_client"] - trader.feed.stats.ticks
    assert lost > 0, "the abort should have caught ticks in flight"
    # every lost tick is in a gap (a token whose in-flight frames all arrived has none)
    assert trader.status["missed_ticks"] == lost and 1 <= trader.status["gaps"] <= 2
    check_gaps_against_ticks(journal, list(trader.gaps))


# --------------------------------------------------------------------------- stalls and heartbeat
def test_a_stall_is_detected_and_healed(in_tmp_cwd):
    with Simulator(rate=20, tokens=TOKENS) as sim:
        # A heartbeat much faster than the stall timeout: pongs keep arriving during the
        # stall, and must not hide it (a stall is judged by ticks, not frames).
        trader = make_trader(sim, mode=QUEUE, connection=connection(stall_timeout=1.0, heartbeat_interval=0.2))
        journal = trader.strategy = Journal()
        trader.start()
        try:
            assert trader.wait_connected(10)
            assert wait_until(lambda: journal.ticks >= 20, 10)
            sim.faults.stall()
            assert wait_until(lambda: trader.status["stalls"] >= 1, 15), trader.status
            assert wait_until(lambda: trader.status["reconnects"] >= 1 and trader.status["connected"], 10)
            assert trader.status["last_disconnect_reason"].startswith("stall"), trader.status
            assert trader.status["pongs"] >= 1
            sim.faults.unstall()
            before = journal.ticks
            assert wait_until(lambda: journal.ticks >= before + 20, 10), trader.status
            assert sim.stats["subscriptions"] == 4
        finally:
            trader.close()
    # the stall lost no tick: the simulator sent none meanwhile
    assert trader.status["gaps"] == 0


def test_no_stall_while_ticks_flow_and_none_without_subscriptions(in_tmp_cwd):
    with Simulator(rate=50, tokens=TOKENS) as sim:
        c = sim.credentials
        creds = FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token)
        busy = SmartFeed(sim.url, creds, {LTP: TOKENS}, lambda t: None, stall_timeout=2.0).start()
        idle = SmartFeed(sim.url, creds, {}, lambda t: None, stall_timeout=2.0).start()
        try:
            assert busy.wait_connected(10) and idle.wait_connected(10)
            time.sleep(3.0)
            assert busy.stats.ticks > 0
            assert busy.stats.stalls == 0 and idle.stats.stalls == 0
        finally:
            busy.stop()
            idle.stop()


# --------------------------------------------------------------------------- subscriptions across outages
def test_subscription_changes_while_disconnected_apply_on_reconnect(in_tmp_cwd):
    sim = Simulator(rate=0, tokens=TOKENS).start()
    c = sim.credentials
    got = []
    feed = SmartFeed(sim.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token),
                     {LTP: {2: ["43650", "43651"]}}, got.append, reconnect=FAST).start()
    try:
        assert feed.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.stop()                                    # the server goes away (close code 1001)
        assert wait_until(lambda: not feed.stats.connected and feed.stats.failed_connects >= 1, 10)
        assert feed.stats.last_disconnect_reason.startswith("closed by server: 1001"), feed.stats
        feed.subscribe({2: ["43652"]})                # while nobody is listening
        feed.unsubscribe({2: ["43651"]})
        assert feed.subscriptions() == {LTP: {2: ["43650", "43652"]}}
        sim.start()                                   # same port
        assert wait_until(lambda: feed.stats.connected, 10)
        assert wait_until(lambda: sim.stats["subscriptions"] == 2, 10)
        sim.publish(2)
        assert wait_until(lambda: len(got) == 4, 10)
        assert {t.token for t in got} == {"43650", "43652"}
        # and a stop/start of the feed keeps them too
        feed.stop()
        feed.start()
        assert feed.wait_connected(10)
        assert wait_until(lambda: sim.stats["subscriptions"] == 2, 10)
    finally:
        feed.stop()
        sim.stop()


# --------------------------------------------------------------------------- every fault kind, one run
def test_every_fault_kind_is_survived_and_counted(in_tmp_cwd):
    tokens = {2: [str(t) for t in range(43650, 43660)]}
    with Simulator(rate=20, tokens=tokens) as sim:
        trader = make_trader(sim, tokens=tokens, mode=QUEUE,
                             connection=connection(stall_timeout=1.0, heartbeat_interval=0.5))
        journal = trader.strategy = Journal()
        faults = sim.faults
        faults.stall_seconds, faults.slow_seconds, faults.slow_ms, faults.drop_missed = 2.5, 1.5, 400, 30
        trader.start()
        try:
            assert trader.wait_connected(10)
            assert wait_until(lambda: journal.ticks >= 100, 20)     # every token has ticked: gaps can be seen
            for kind in Faults.KINDS:
                assert wait_until(lambda: trader.status["connected"], 15), (kind, trader.status)
                sim.wait_for_subscribers(1)
                before = journal.ticks
                faults.inject(kind)
                if kind == "stall":
                    assert wait_until(lambda: trader.status["stalls"] >= 1, 15), trader.status
                if kind == "slow":
                    # frames 400 ms late: the lag (wall clock - exchange time) shows it
                    assert wait_until(lambda: trader.status["max_feed_lag_ms"] >= 300, 15), trader.status
                # ticks keep coming after every fault
                assert wait_until(lambda: journal.ticks >= before + 20, 20), (kind, trader.status)
            bad = faults.bad_frames
            feed = trader.feed.stats
            assert wait_until(lambda: feed.malformed == bad["malformed"] and
                              feed.error_frames == bad["error_frames"], 10), (feed, bad)
        finally:
            faults.clear()
            trader.close()
    status = trader.status
    assert status["reconnects"] >= 2 and status["stalls"] >= 1           # the drop and the stall
    assert status["malformed_frames"] == bad["malformed"] == 4 * faults.burst
    assert status["gaps"] >= 10 and status["missed_ticks"] >= 10 * 30    # the drop's 30 per token
    assert journal.overlaps == 0


# --------------------------------------------------------------------------- fuzzing
def _packet(mode: int, body: bytes) -> bytes:
    size = wire.PACKET_SIZE[mode]
    return (bytes([mode]) + body)[:size].ljust(size, b"\0")


def frame_strategy():
    """Frames a broken or hostile server might send: packets, near-packets, junk, text."""
    modes = st.sampled_from([1, 2, 3, 4])
    sizes = st.sampled_from(sorted(wire.PACKET_SIZE.values()))
    packet = st.builds(_packet, modes, st.binary(min_size=0, max_size=64))
    return st.one_of(
        packet,                                                            # valid (random fields)
        st.binary(min_size=0, max_size=600),                               # junk of any size
        st.builds(lambda size, mode, body: (bytes([mode]) + body)[:size].ljust(size, b"\x07"),
                  sizes, st.integers(0, 255), st.binary(max_size=64)),     # packet size, any mode byte
        st.builds(lambda p, cut: p[:cut], packet, st.integers(0, 442)),    # truncated
        st.builds(lambda p, n: p + b"\xab" * n, packet, st.integers(1, 70_000)),  # oversized
        st.builds(lambda code, msg: json.dumps({"correlationID": "fz", "errorCode": code, "errorMessage": msg}),
                  st.text(max_size=8), st.text(max_size=40)),              # error frames
        st.text(max_size=80),                                              # any text
        st.just("pong"),
    )


def test_ten_thousand_fuzzed_frames_through_the_real_client_are_survived_and_counted(sim, in_tmp_cwd):
    """sim.send_frames -> websocket -> the real SDK client -> kit adapter -> feed counters -> engine."""
    # no heartbeat during the run: every pong counted must be one the fuzzer sent
    trader = make_trader(sim, mode=CALLBACK, tokens={2: ["43650"]}, connection=connection(heartbeat_interval=3600))
    journal = trader.strategy = Journal()
    trader.start()
    assert trader.wait_connected(10)
    sim.wait_for_subscribers(1)
    feed = trader.feed.stats
    expected = defaultdict(int)
    sent = 0

    @settings(max_examples=160, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(frame_strategy(), min_size=65, max_size=90))
    def batch(frames):
        nonlocal sent
        for kind, n in sim.faults.frames(frames).items():
            expected[kind] += n
        sent += len(frames)
        assert wait_until(lambda: (feed.ticks, feed.malformed, feed.error_frames, feed.unknown_text, feed.pongs) ==
                          (expected["ticks"], expected["malformed"], expected["error_frames"],
                           expected["unknown_text"], expected["pongs"]), 20), (dict(expected), feed)

    try:
        batch()
        assert sent >= 10_000, sent
        assert expected["malformed"] > 3000 and expected["ticks"] > 1000, dict(expected)
        # Valid packets for instruments nobody subscribed (random tokens) are counted and dropped.
        assert feed.unsubscribed_ticks > 0
        assert wait_until(lambda: journal.ticks + feed.unsubscribed_ticks == expected["ticks"], 10)
        assert feed.connected and feed.connects == 1 and feed.reconnects == 0 and feed.socket_errors == 0
        assert trader.status["malformed_frames"] == expected["malformed"]
        assert trader.strategy_errors == 0 and trader.dispatcher.handler_errors == 0
    finally:
        trader.stop()
    print(f"\nfuzz: {sent} frames, {dict(expected)}")


@settings(max_examples=10_000, deadline=None, database=None)
@given(st.binary(max_size=600))
def test_parse_tick_raises_only_malformed_frame_on_any_bytes(data):
    try:
        tick = wire.parse_tick(data, 1)
    except wire.MalformedFrame:
        assert not is_packet(data)
    else:
        assert is_packet(data) and tick.mode == data[0] and tick.recv_ns == 1


@settings(max_examples=5_000, deadline=None, database=None)
@given(st.sampled_from(sorted(wire.PACKET_SIZE.items())), st.integers(0, 255), st.binary(max_size=450))
def test_packet_sized_frames_with_the_wrong_mode_are_rejected(mode_size, mode_byte, body):
    mode, size = mode_size
    frame = (bytes([mode_byte]) + body)[:size].ljust(size, b"\0")
    if mode_byte == mode:
        assert wire.parse_tick(frame).mode == mode
    else:
        with pytest.raises(wire.MalformedFrame):
            wire.parse_tick(frame)


# --------------------------------------------------------------------------- overload
MANY = {2: [str(t) for t in range(43650, 43700)]}     # 50 tokens


def _overload(mode: str, seconds: float = 4.0):
    """50 tokens x 60 ticks/s = 3,000 ticks/s into a strategy that handles about 500/s."""
    lags_ms = []
    with Simulator(rate=60, tokens=MANY) as sim:
        trader = make_trader(sim, tokens=MANY, mode=mode, dispatch=kit.DispatchConfig(queue_size=1000),
                             connection=connection(stall_timeout=None))
        journal = trader.strategy = Journal(work=lambda tick: time.sleep(0.002))
        trader.add_tick_listener(lambda t: lags_ms.append(time.time() * 1000 - t.exchange_ts))
        rss = psutil.Process().memory_info().rss
        trader.start()
        try:
            assert trader.wait_connected(10)
            time.sleep(seconds)
            sim.set_rate(0)
            status = trader.status
        finally:
            trader.stop()
            rss_after = psutil.Process().memory_info().rss
        sent = sim.stats["sent"]
    return trader, journal, status, lags_ms, sent, rss, rss_after


def test_overload_in_queue_mode_drops_the_oldest_counts_them_and_stays_bounded(in_tmp_cwd):
    trader, journal, status, lags_ms, sent, rss, rss_after = _overload(QUEUE)
    d = trader.dispatcher
    assert status["dropped"] > 0 and d.max_depth == 1000
    # every tick received was either handled or dropped (or left queued at stop); none vanished
    assert trader.feed.stats.ticks == journal.ticks + d.dropped + d.depth
    # the socket kept up: the backlog sat in the bounded queue, not in the socket buffers
    assert trader.feed.stats.ticks >= sent * 0.9, (trader.feed.stats.ticks, sent)
    assert rss_after - rss < 50 * 2**20
    dispatch = trader.metrics.samples(QUEUE, "dispatch")
    print(f"\nqueue overload: sent {sent}, received {trader.feed.stats.ticks}, handled {journal.ticks}, "
          f"dropped {d.dropped}, feed lag max {status['max_feed_lag_ms']:.0f} ms, "
          f"dispatch (queue wait) p50 {sorted(dispatch)[len(dispatch) // 2] / 1e6:.0f} ms, "
          f"tick age when handled p50 {sorted(lags_ms)[len(lags_ms) // 2]:.0f} ms")


def test_overload_in_callback_mode_shows_the_backlog_as_lag(in_tmp_cwd):
    trader, journal, status, lags_ms, sent, rss, rss_after = _overload(CALLBACK)
    assert status["dropped"] == 0
    # the socket thread is busy in the strategy: frames wait in socket buffers, unread,
    # so the lag (wall clock - exchange time) grows to seconds ...
    assert status["max_feed_lag_ms"] > 1000, status
    assert max(lags_ms) > 1000
    # ... while the receive stamp, taken when a frame is finally read, sees none of it
    dispatch = trader.metrics.samples(CALLBACK, "dispatch")
    assert sorted(dispatch)[len(dispatch) // 2] < 1e9 / 100, "dispatch p50 should be far below 10 ms"
    assert rss_after - rss < 50 * 2**20
    print(f"\ncallback overload: sent {sent}, handled {journal.ticks}, feed lag max "
          f"{status['max_feed_lag_ms']:.0f} ms, dispatch p50 {sorted(dispatch)[len(dispatch) // 2] / 1e3:.0f} us, "
          f"tick age when handled p50 {sorted(lags_ms)[len(lags_ms) // 2]:.0f} ms")


def test_the_simulator_sheds_ticks_for_a_client_that_stops_reading():
    """websockets' broadcast has no backpressure; the simulator caps each client's buffer."""
    from websockets.sync.client import connect
    with Simulator(rate=400, tokens=MANY) as sim:      # 20,000 SNAP_QUOTE ticks/s, ~7.6 MB/s
        sim.max_client_buffer = 512 * 1024
        sock = socket.create_connection(("127.0.0.1", sim.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with connect(sim.url, sock=sock, additional_headers=sim.credentials.headers(),
                     compression=None, open_timeout=10, ping_interval=None) as ws:
            ws.send(json.dumps({"action": 1, "params": {"mode": SNAP_QUOTE, "tokenList": [
                {"exchangeType": 2, "tokens": MANY[2]}]}}))
            sim.wait_for_subscribers(1)
            # stop reading; the simulator keeps ticking
            assert wait_until(lambda: sim.stats["dropped_slow_client"] > 0, 60), sim.stats
            buffered = sim._apply(lambda: max(c.ws.transport.get_write_buffer_size() for c in sim._clients))
            # at most the cap plus what one ticker wake-up writes
            assert buffered < sim.max_client_buffer + 2 * 2**20, buffered
            sim.set_rate(0)
            # the connection is intact: the client can read again, in order
            ticks = [wire.parse_tick(ws.recv(timeout=10)) for _ in range(200)]
            assert all(t.mode == SNAP_QUOTE for t in ticks)
            # (draining megabytes through a 4 KB window would take a minute: abort instead)
            sim.drop_connections()


# --------------------------------------------------------------------------- memory over a million ticks
class QuietSma(kit.examples.SmaCross):
    """The SMA crossover's work on every tick, without its orders: each signal is kept (by design),
    so a strategy that trades would grow memory with its trades, not with the ticks."""

    def on_tick(self, tick):
        super().on_tick(tick)
@pytest.mark.parametrize("mode", [QUEUE, CALLBACK])
def test_rss_is_flat_over_a_million_ticks(in_tmp_cwd, mode):
    """1,000,000 ticks after a 100,000-tick warm-up; RSS must stay within 10 MB.

    The first 200,000 (and the warm-up) go through the real socket: simulator ->
    websocket -> SDK client -> adapter -> feed -> dispatcher -> engine. The other
    800,000 are fed, as encoded packets, to the SDK client's own frame handler
    (``_on_data``) on a helper thread while the socket is idle: the same path
    minus the kernel, at about four times the speed (the in-process simulator
    shares the GIL and would make this test take a minute per mode).
    """
    with Simulator(rate=0, tokens=MANY) as sim:
        trader = make_trader(sim, tokens=MANY, mode=mode, dispatch=kit.DispatchConfig(queue_size=1000),
                             connection=connection(stall_timeout=None))
        trader.strategy = QuietSma()
        trader.start()
        proc = psutil.Process()

        def handled() -> int:
            return trader.ticks_processed + trader.dispatcher.dropped

        def through_socket(per_token: int) -> None:
            target = handled() + per_token * 50
            sim.publish(per_token)
            assert wait_until(lambda: handled() == target, 120), trader.status

        def direct(n_per_token: int) -> None:
            ws = trader.feed._ws
            seq = {tok: sim.stats["last_seq"][(2, tok)] for tok in MANY[2]}
            target = handled() + n_per_token * 50
            now_ms = int(time.time() * 1000)
            for i in range(n_per_token):
                for tok in MANY[2]:
                    seq[tok] += 1
                    ws._on_data(None, wire.encode_ltp(2, tok, seq[tok], now_ms, 10_000 + i % 500), 2, True)
                while trader.dispatcher.depth > 500:   # queue mode: keep pace with the consumer, drop nothing
                    time.sleep(0.0005)
            assert wait_until(lambda: handled() == target, 120), trader.status

        try:
            assert trader.wait_connected(10)
            sim.wait_for_subscribers(1)
            through_socket(2_000)                      # warm-up: 100,000
            gc.collect()
            rss_start = proc.memory_info().rss
            through_socket(4_000)                      # 200,000
            direct(16_000)                             # 800,000
            gc.collect()
            rss_end = proc.memory_info().rss
        finally:
            trader.close()
    total = trader.feed.stats.ticks
    assert total == 1_100_000 and trader.status["malformed_frames"] == 0
    assert trader.ticks_processed >= 1_000_000          # the strategy did the work (the direct part never drops)
    growth_mb = (rss_end - rss_start) / 2**20
    print(f"\n{mode}: RSS {rss_start / 2**20:.1f} MB -> {rss_end / 2**20:.1f} MB ({growth_mb:+.1f} MB) "
          f"over 1,000,000 ticks; dropped {trader.dispatcher.dropped}")
    assert abs(growth_mb) <= 10, growth_mb


# --------------------------------------------------------------------------- status
def test_status_shows_every_resilience_counter(sim, in_tmp_cwd):
    trader = make_trader(sim)
    before = trader.status
    trader.start()
    try:
        assert trader.wait_connected(10)
        status = trader.status
    finally:
        trader.stop()
    keys = {"connected", "reconnects", "stalls", "malformed_frames", "error_frames", "dropped", "connects",
            "disconnects", "failed_connects", "last_disconnect_reason", "last_disconnect_at", "connected_since",
            "next_retry_in", "gaps", "missed_ticks", "heartbeats_sent", "pongs", "unknown_text_frames",
            "socket_errors", "last_error", "feed_lag_ms", "max_feed_lag_ms"}
    assert keys <= set(before) and keys <= set(status)
    assert set(before) == set(status)                  # stable keys, stopped or running
    assert status["connects"] == 1 and status["connected_since"] is not None


def test_stop_in_callback_mode_delivers_no_tick_after_on_stop(in_tmp_cwd):
    """A backlog still in the socket buffers at stop() is discarded, not handed to a stopped strategy."""
    stopped = threading.Event()
    after_stop = []

    class Slow(Journal):
        def on_tick(self, tick):
            if stopped.is_set():
                after_stop.append(tick.seq)
            time.sleep(0.002)

        def on_stop(self):
            stopped.set()

    with Simulator(rate=60, tokens=MANY) as sim:
        trader = make_trader(sim, tokens=MANY, mode=CALLBACK, connection=connection(stall_timeout=None))
        trader.strategy = Slow()
        trader.start()
        assert trader.wait_connected(10)
        assert wait_until(lambda: trader.status["max_feed_lag_ms"] > 500, 30)   # a backlog has built up
        trader.stop()
        assert not trader.feed.running
    assert after_stop == []
