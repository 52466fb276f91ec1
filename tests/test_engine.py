"""The engine end to end: the real SDK client over loopback against the real simulator."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

import kit
from conftest import wait_until
from kit.feed.dispatch import CALLBACK, MODES, POLL, QUEUE

TOKENS = {2: ["43650", "43651", "43652", "43653"]}


class Recorder(kit.Strategy):
    """Remembers every tick and which thread delivered it; flags any overlap."""

    def __init__(self):
        self.seen: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.inside = 0
        self.overlaps = 0
        self.started = self.stopped = 0

    def on_start(self):
        self.started += 1

    def on_stop(self):
        self.stopped += 1

    def on_tick(self, tick):
        self.inside += 1
        if self.inside != 1:
            self.overlaps += 1
        self.seen.append((tick.token, tick.seq))
        self.threads.add(threading.current_thread().name)
        self.inside -= 1


def assert_contiguous(seen, per_token: int | None = None):
    by_token = defaultdict(list)
    for token, seq in seen:
        by_token[token].append(seq)
    for token, seqs in by_token.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"token {token}: gap, duplicate or reorder"
        if per_token is not None:
            assert len(seqs) == per_token, f"token {token}: {len(seqs)} ticks, expected {per_token}"
    return by_token


def make_trader(sim, **overrides) -> kit.LiveTrader:
    settings = {"tokens": TOKENS, "name": f"test-{time.monotonic_ns()}", **overrides}
    cfg = kit.TraderConfig(feed="sim", **settings)
    return kit.LiveTrader(cfg, venue=kit.SimVenue(simulator=sim))   # the test's simulator, not one of its own


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_delivers_every_tick_in_order(sim, in_tmp_cwd, mode):
    trader = make_trader(sim, mode=mode, dispatch=kit.DispatchConfig(queue_size=100_000))
    rec = trader.strategy = Recorder()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(500)
        assert wait_until(lambda: len(rec.seen) == 2000, 20), trader.status
        assert_contiguous(rec.seen, per_token=500)
        assert rec.overlaps == 0
        expected_thread = "kit-feed" if mode == CALLBACK else "kit-consumer"
        assert all(name.startswith(expected_thread) for name in rec.threads), rec.threads
        assert trader.metrics.count(mode) == 2000
        assert trader.status["dropped"] == 0
    finally:
        trader.stop()
    assert rec.started == rec.stopped == 1


def test_switching_modes_every_few_ms_loses_duplicates_and_reorders_nothing(sim, in_tmp_cwd):
    trader = make_trader(sim, mode=QUEUE, dispatch=kit.DispatchConfig(queue_size=1_000_000))
    rec = trader.strategy = Recorder()
    trader.start()
    switches = 0
    stop = threading.Event()

    def toggler():
        nonlocal switches
        modes = [CALLBACK, QUEUE, CALLBACK, POLL]
        while not stop.is_set():
            trader.mode = modes[switches % len(modes)]
            switches += 1
            time.sleep(0.003)

    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        t = threading.Thread(target=toggler)
        t.start()
        for _ in range(10):
            sim.publish(600)          # 10 x 600 x 4 tokens = 24,000 ticks
        total = 24_000
        assert wait_until(lambda: len(rec.seen) == total, 60), (len(rec.seen), trader.status)
        stop.set()
        t.join()
        assert_contiguous(rec.seen, per_token=6000)
        assert rec.overlaps == 0
        d = trader.dispatcher
        assert d.dropped == 0
        assert d.handled_direct > 0 and d.handled_by_consumer > 0, d.stats()
        assert switches > 50
    finally:
        stop.set()
        trader.stop()


def test_queue_overflow_drops_the_oldest_and_counts_exactly(sim, in_tmp_cwd):
    gate, entered = threading.Event(), threading.Event()

    class Blocker(Recorder):
        def on_tick(self, tick):
            if not self.seen:
                entered.set()
                gate.wait(30)     # hold the consumer on the very first tick
            super().on_tick(tick)

    trader = make_trader(sim, mode=QUEUE, dispatch=kit.DispatchConfig(queue_size=100), tokens={2: ["43650"]})
    rec = trader.strategy = Blocker()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(1)
        assert entered.wait(10)
        sim.publish(999)
        assert wait_until(lambda: trader.feed.stats.ticks == 1000, 20)
        gate.set()
        assert wait_until(lambda: trader.dispatcher.depth == 0 and len(rec.seen) == 101, 20), trader.status
        seqs = [seq for _, seq in rec.seen]
        first = seqs[0]
        # the held first tick, then the newest 100: the 899 in between were dropped
        assert seqs == [first] + list(range(first + 900, first + 1000))
        assert trader.status["dropped"] == 899
        assert trader.dispatcher.max_depth == 100
    finally:
        gate.set()
        trader.stop()


def test_max_depth_never_reads_above_queue_size_even_when_the_consumer_empties_a_full_queue():
    import queue

    from kit.feed.dispatch import Dispatcher

    class ConsumerWinsTheRace(queue.SimpleQueue):
        """A full queue that the consumer empties between the producer's qsize() and get_nowait()."""
        race = False

        def get_nowait(self):
            if self.race:
                while self.qsize():
                    super().get_nowait()
            return super().get_nowait()

    d = Dispatcher(lambda tick, via: None, QUEUE, maxsize=10)     # no consumer: the queue fills
    d._queue = ConsumerWinsTheRace()
    for n in range(25):
        d.submit(n)
    assert (d.depth, d.max_depth, d.dropped) == (10, 10, 15)    # full: the oldest dropped, depth at its bound
    d._queue.race = True
    d.submit(25)
    assert d.max_depth == 10 and d.depth == 1


def test_ticks_per_s_of_each_mode_counts_only_the_time_spent_in_that_mode():
    from kit.engine.metrics import LatencyMetrics
    ms = 1_000_000
    metrics = LatencyMetrics(window=1000)
    # 1,000 ticks/s throughout: queue for 100 ms, callback for 100 ms, queue again for 100 ms.
    for via, start in ((QUEUE, 0), (CALLBACK, 100), (QUEUE, 200)):
        for k in range(100):
            t = (start + k) * ms
            metrics.record(via, t - 5_000, t, t + 12_345)
    summary = metrics.summary()
    assert summary.loc[(QUEUE, "dispatch"), "ticks_per_s"] == 1000.0       # was 199 / 0.299 s = 665.6
    assert summary.loc[(CALLBACK, "dispatch"), "ticks_per_s"] == 1000.0
    assert summary.loc[(QUEUE, "strategy"), "p50_us"] == 12.3               # rounded for reading
    assert summary.loc[(QUEUE, "total"), "p99_us"] == 17.3
    assert list(summary.columns) == ["ticks", "samples", "ticks_per_s", "p50_us", "p90_us", "p99_us", "max_us"]


@pytest.mark.parametrize("mode", [QUEUE, CALLBACK])
def test_a_raising_strategy_does_not_stop_the_stream(sim, in_tmp_cwd, mode, caplog):
    class Flaky(Recorder):
        def on_tick(self, tick):
            super().on_tick(tick)
            if tick.seq % 3 == 0:
                raise RuntimeError(f"bad tick {tick.seq}")

    trader = make_trader(sim, mode=mode, tokens={2: ["43650"]})
    rec = trader.strategy = Flaky()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(300)
        assert wait_until(lambda: len(rec.seen) == 300, 20)
        assert trader.strategy_errors == sum(1 for _, s in rec.seen if s % 3 == 0)
        assert "bad tick" in trader.last_strategy_error
        assert "Flaky.on_tick raised" in caplog.text and "seq=" in caplog.text  # logged with the tick
        assert trader.feed.running
    finally:
        trader.stop()


def test_start_stop_start_in_one_process(sim, in_tmp_cwd):
    trader = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]})
    rec = trader.strategy = Recorder()
    for round_ in range(3):
        trader.start()
        trader.start()                      # idempotent
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(50)
        assert wait_until(lambda: len(rec.seen) == 50 * (round_ + 1), 20), trader.status
        trader.stop()
        trader.stop()                       # idempotent
        assert wait_until(lambda: not [t for t in threading.enumerate()
                                       if t.name.startswith(("kit-feed", "kit-consumer"))], 10)
    assert_contiguous(rec.seen)
    assert rec.started == rec.stopped == 3


def test_the_heap_is_left_out_of_the_gc_while_any_trader_runs_and_only_then(sim, in_tmp_cwd):
    import gc
    assert gc.get_freeze_count() == 0
    first = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]}, name="heap-a")
    second = make_trader(sim, mode=CALLBACK, tokens={2: ["43651"]}, name="heap-b")
    unfrozen = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]}, name="heap-c", freeze_heap=False)
    try:
        unfrozen.start()
        assert gc.get_freeze_count() == 0                      # opted out
        first.start()
        assert gc.get_freeze_count() > 10_000                  # the modules, the simulator, pandas...
        second.start()
        first.stop()
        assert gc.get_freeze_count() > 10_000                  # the second still trades
        second.stop()
        assert gc.get_freeze_count() == 0                      # the last one out unfreezes
        first.start()
        assert gc.get_freeze_count() > 0                       # and start/stop/start freezes again
    finally:
        for trader in (first, second, unfrozen):
            trader.close()
    assert gc.get_freeze_count() == 0


def test_malformed_frames_are_counted_and_skipped(sim, in_tmp_cwd):
    trader = make_trader(sim, mode=CALLBACK, tokens={2: ["43650"]})
    rec = trader.strategy = Recorder()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(10)
        sim.send_raw(b"\x01\x02garbage")              # truncated
        sim.send_raw(bytes([9]) + bytes(50))            # 51 bytes, unknown mode
        sim.send_raw(b"\x01" * 5000)                    # oversized
        sim.send_raw("not json at all")                 # unknown text
        sim.send_raw('{"correlationID": "ab", "errorCode": "E1002", "errorMessage": "Subscription limit exceeded"}')
        sim.publish(10)
        assert wait_until(lambda: len(rec.seen) == 20, 10)
        stats = trader.feed.stats
        assert wait_until(lambda: stats.malformed == 3 and stats.unknown_text == 1 and stats.error_frames == 1, 5)
        assert stats.last_error_frame["errorCode"] == "E1002"
        assert trader.status["malformed_frames"] == 3
        assert_contiguous(rec.seen, per_token=20)
        assert trader.feed.running and stats.connected
    finally:
        trader.stop()


def test_wrong_credentials_are_refused_surfaced_and_survived(sim, in_tmp_cwd):
    from kit.feed.live import FeedCredentials, SmartFeed
    feed = SmartFeed(sim.url, FeedCredentials("Bearer wrong", "wrong", "X", "wrong"), {1: TOKENS}, lambda t: None)
    feed.start()
    try:
        assert wait_until(lambda: feed.stats.auth_failed, 10)
        assert wait_until(lambda: not feed.running, 10)   # no hammering with retries
        assert feed.stats.connects == 0 and "401" in feed.stats.last_error
    finally:
        feed.stop()


def test_swapping_the_strategy_while_ticks_flow(sim, in_tmp_cwd):
    trader = make_trader(sim, mode=CALLBACK, tokens={2: ["43650"]})
    first, second = Recorder(), Recorder()
    trader.strategy = first
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(100)
        assert wait_until(lambda: len(first.seen) == 100, 10)
        trader.strategy = second
        sim.publish(100)
        assert wait_until(lambda: len(second.seen) == 100, 10)
        assert first.stopped == 1 and second.started == 1
        assert_contiguous(first.seen + second.seen, per_token=200)
    finally:
        trader.stop()


def test_paper_orders_and_metrics_summary(sim, in_tmp_cwd):
    class BuyThenSell(kit.Strategy):
        def __init__(self):
            self.n = 0

        def on_tick(self, tick):
            self.n += 1
            if self.n == 5:
                return kit.Signal.buy(tick, 65)
            if self.n == 20:
                return kit.Signal.sell(tick, 65)

    trader = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]})
    trader.strategy = BuyThenSell()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(40)
        assert wait_until(lambda: trader.ticks_processed == 40, 10)
    finally:
        trader.stop()
    fills = trader.broker.fills_df()
    assert len(fills) == 2 and list(fills["side"]) == ["BUY", "SELL"]
    assert trader.broker.positions_df()["qty"].tolist() == [0]
    summary = trader.metrics.summary()
    assert {"dispatch", "strategy", "order", "total"} <= set(summary.loc["queue"].index)
    assert summary.loc[("queue", "order"), "samples"] == 2
    assert (summary["p50_us"] <= summary["p99_us"]).all()
    assert len(trader.signals_df()) == 2


def test_recreating_a_trader_by_name_closes_the_old_one(in_tmp_cwd):
    a = kit.LiveTrader(kit.TraderConfig(name="cell", sim=kit.SimConfig(rate=50)))
    a.strategy = Recorder()
    a.start()
    assert a.wait_connected(10)
    b = kit.LiveTrader(kit.TraderConfig(name="cell", sim=kit.SimConfig(rate=50)))   # the cell ran again
    assert not a.running and a.venue.simulator is None
    b.close()


def test_run_on_the_main_thread_handles_everything_received(sim, in_tmp_cwd):
    trader = make_trader(sim, mode=QUEUE, tokens={2: ["43650"]}, dispatch=kit.DispatchConfig(queue_size=100_000))
    rec = trader.strategy = Recorder()
    publisher = threading.Thread(target=lambda: (sim.wait_for_subscribers(1, 10), sim.publish(3000)))
    publisher.start()
    trader.run(duration=2.0)            # consumes on this thread, as a script does
    publisher.join()
    assert len(rec.seen) == trader.feed.stats.ticks == 3000
    assert threading.main_thread().name in rec.threads
    assert_contiguous(rec.seen, per_token=3000)


# ---------------------------------------------------------------------------- the config, the venue, status
@pytest.mark.parametrize("settings, message", [
    (dict(sim_rate=20), "sim_rate is not a TraderConfig field: it is SimConfig.rate — "
                        "TraderConfig(sim=SimConfig(rate=20))"),
    (dict(replay_speed=2.0), "it is ReplayConfig.speed — TraderConfig(replay=ReplayConfig(source, speed=2.0))"),
    (dict(stall_timeout=None), "it is ConnectionConfig.stall_timeout — TraderConfig(connection=ConnectionConfig("),
    (dict(max_daily_loss=5000), "it is RiskLimits.max_daily_loss — "
                                "TraderConfig(risk=RiskLimits(max_daily_loss=5000))"),
    (dict(journal="paper.sqlite"), "journal takes a JournalConfig, not str: "
                                   "TraderConfig(journal=JournalConfig(path='paper.sqlite'))"),
    (dict(queue_sise=10), "did you mean DispatchConfig.queue_size?"),
    (dict(nmae="x"), "nmae is not a TraderConfig field: did you mean name?"),
])
def test_a_setting_in_the_wrong_place_says_where_it_lives(settings, message):
    with pytest.raises(TypeError) as refused:
        kit.TraderConfig(**settings)
    assert message in str(refused.value)


def test_each_part_checks_its_own_settings():
    with pytest.raises(TypeError, match="queue_size is not a SimConfig field: it is DispatchConfig.queue_size"):
        kit.SimConfig(queue_size=5)
    with pytest.raises(TypeError, match="did you mean reconnect"):
        kit.ConnectionConfig(reconect=kit.ReconnectPolicy())
    with pytest.raises(TypeError, match="sim_rate is not a TraderConfig field"):
        kit.LiveTrader(name="overrides", sim_rate=3)       # LiveTrader's overrides are TraderConfig fields
    for bad in (lambda: kit.SimConfig(rate=-1), lambda: kit.DispatchConfig(queue_size=0),
                lambda: kit.ConnectionConfig(parser="mine"), lambda: kit.JournalConfig(sync="OFF"),
                lambda: kit.MetricsConfig(window=0), lambda: kit.ReplayConfig(None),
                lambda: kit.ReplayConfig("x", speed=0), lambda: kit.TraderConfig(feed="replay"),
                lambda: kit.TraderConfig(feed="replay", replay=kit.ReplayConfig("x"), paper=False)):
        with pytest.raises(ValueError):
            bad()


def test_the_venue_owns_the_connection(sim, in_tmp_cwd):
    assert kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig("x"), name="no-venue")).venue is None
    assert isinstance(kit.LiveTrader(kit.TraderConfig(feed="smartapi", name="angel")).venue, kit.AngelVenue)
    with pytest.raises(ValueError, match="serves feed='sim'"):
        kit.LiveTrader(kit.TraderConfig(feed="smartapi", name="mismatch"), venue=kit.SimVenue(simulator=sim))
    shared = make_trader(sim, tokens={2: ["43650"]})
    shared.start()
    assert shared.wait_connected(10)
    shared.close()
    assert sim.running and shared.venue.simulator is sim          # a shared simulator outlives the trader


def test_only_the_venues_import_the_simulator():
    import ast
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(kit.__file__).parent
    allowed = {root / "engine" / "venues.py", root / "__main__.py"}
    importers = []
    for path in root.rglob("*.py"):
        if path in allowed or path.parent.name in ("sim", "bench"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n == "kit.sim" or n.startswith("kit.sim.") for n in names):
                importers.append(str(path.relative_to(root)))
    assert importers == []
    loaded = subprocess.run([sys.executable, "-c", "import kit, sys; print(sorted(m for m in sys.modules "
                             "if m.startswith('kit.sim')))"], capture_output=True, text=True, timeout=120,
                            cwd=root.parent)
    assert loaded.stdout.strip() == "[]", loaded.stderr


PAPER_STATUS = {
    "running": False, "connected": False, "mode": QUEUE, "active_mode": QUEUE, "ticks_received": 0,
    "ticks_processed": 0, "queue_depth": 0, "max_queue_depth": 0, "dropped": 0, "strategy_errors": 0,
    "last_strategy_error": "", "strategy_halt": "", "signals": 0,
    "rejected_signals": 0, "malformed_frames": 0, "error_frames": 0, "reconnects": 0, "stalls": 0,
    "auth_failed": False, "connects": 0, "disconnects": 0, "failed_connects": 0, "last_disconnect_reason": "",
    "last_disconnect_at": None, "connected_since": None, "next_retry_in": None, "gaps": 0, "missed_ticks": 0,
    "heartbeats_sent": 0, "pongs": 0, "unknown_text_frames": 0, "socket_errors": 0, "last_error": "",
    "feed_lag_ms": None, "max_feed_lag_ms": 0.0, "live": False, "armed": False, "halted": False, "halt_reason": "",
    "orders_blocked": "", "loss_stop": "", "last_rejection": "", "square_off": "", "open_orders": 0,
    "bad_marks": 0, "realized_pnl": 0.0, "unrealized_pnl": 0.0, "pnl": 0.0, "charges": 0.0, "net_pnl": 0.0,
    "connections": [], "session_expires_at": None, "session_renewals": 0, "session_renewed_at": None,
    "session_error": "", "session_retry_in": None,
}
LIVE_ONLY_STATUS = {"orders_queued", "journal_error", "position_differences", "positions_checked_at"}


def test_status_is_composed_from_the_parts_and_keeps_every_key(sim, in_tmp_cwd):
    paper = make_trader(sim, tokens={2: ["43650"]})
    assert paper.status == PAPER_STATUS                          # a trader that never started
    paper.start()
    assert paper.wait_connected(10)
    status = paper.status
    assert set(status) == set(PAPER_STATUS) and status["running"] and status["connected"] and status["connects"] == 1
    paper.close()
    live = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, name="live-status"),
                          venue=kit.SimVenue(simulator=sim))
    try:
        assert set(live.status) == set(PAPER_STATUS) | LIVE_ONLY_STATUS and live.status["live"]
    finally:
        live.close()
