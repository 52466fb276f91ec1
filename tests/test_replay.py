"""Record a live session on the simulator, replay it through the same engine: the same signals, in every mode."""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.feed.dispatch import CALLBACK, MODES, POLL, QUEUE
from kit.research.examples import SmaCross
from kit.store.recording import read_recording

TOKENS = {2: ["43650", "43651", "43652"], 1: ["99926000"]}


class Seen(SmaCross):
    """The quickstart's crossover (trades often with fast=3, slow=8), remembering every tick it saw."""

    def __init__(self):
        super().__init__(fast=3, slow=8, qty=65)
        self.seen: list[tuple] = []

    def on_tick(self, tick):
        self.seen.append((tick.exchange_type, tick.token, tick.seq, tick.exchange_ts, tick.ltp))
        return super().on_tick(tick)


def live_session(sim, root, mode, *, per_token=400, queue_size=100_000, strategy=None):
    """A live trader on the simulator, recording; returns (trader, strategy, recording dir)."""
    rec_dir = root / f"rec-{mode}"
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens=TOKENS, mode=mode,
                                             dispatch=kit.DispatchConfig(queue_size=queue_size),
                                             record=str(rec_dir), name=f"live-{mode}-{time.monotonic_ns()}"),
                            venue=kit.SimVenue(simulator=sim))
    strategy = strategy or Seen()
    trader.strategy = strategy
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(per_token)
        total = per_token * 4
        assert wait_until(lambda: trader.feed.stats.ticks == total, 30), trader.status
        assert wait_until(lambda: trader.ticks_processed + trader.dispatcher.dropped == total, 30), trader.status
    finally:
        trader.stop()
    return trader, strategy, rec_dir


@pytest.fixture
def rec_root(tmp_path_factory):
    """Recordings go outside the test's working directory (in_tmp_cwd checks it stays empty)."""
    return tmp_path_factory.mktemp("recordings")


def replay(source, mode, strategy=None, *, speed=None, progress=False, **config):
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(source, speed=speed,
                                                                                    progress=progress),
                                             mode=mode, name=f"replay-{mode}-{time.monotonic_ns()}", **config))
    strategy = strategy or Seen()
    trader.strategy = strategy
    trader.run()
    trader.close()
    return trader, strategy


def signal_rows(trader):
    return [s.as_row() for s in trader.signals]


def fill_rows(trader):
    return trader.broker.fills_df()[["order_id", "token", "exchange_type", "side", "qty", "price", "tick_seq"]]


@pytest.mark.parametrize("mode", MODES)
def test_replaying_a_recorded_session_reproduces_its_signals_in_each_mode(sim, rec_root, in_tmp_cwd, mode):
    live, live_strategy, rec_dir = live_session(sim, rec_root, mode)
    assert live.status["dropped"] == 0
    assert len(live.signals) > 20            # the comparison is about something

    again, strategy = replay(rec_dir, mode)

    assert again.ticks_processed == live.ticks_processed == 1600
    assert strategy.seen == live_strategy.seen              # the same ticks, in the same order
    assert signal_rows(again) == signal_rows(live)          # hence the same signals
    pd.testing.assert_frame_equal(fill_rows(again), fill_rows(live))
    assert again.broker.pnl() == pytest.approx(live.broker.pnl(), abs=1e-6)
    assert again.metrics.count(mode) == 1600                # measured in the mode it ran in


def test_one_recording_gives_the_same_signals_in_every_replay_mode(sim, rec_root, in_tmp_cwd):
    live, _, rec_dir = live_session(sim, rec_root, CALLBACK)
    for mode in MODES:
        again, _ = replay(rec_dir, mode)
        assert signal_rows(again) == signal_rows(live), mode


def test_parity_holds_even_when_the_live_queue_dropped_ticks(sim, rec_root, in_tmp_cwd):
    """The recording is what the strategy saw: dropped ticks are not in it, so the replay agrees."""
    gate, entered = threading.Event(), threading.Event()

    class SlowStart(Seen):
        def on_tick(self, tick):
            if not self.seen:
                entered.set()
                gate.wait(30)           # hold the consumer while the feed overflows the queue
            return super().on_tick(tick)

    rec_dir = rec_root / "rec"
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens=TOKENS, mode=QUEUE,
                                             dispatch=kit.DispatchConfig(queue_size=50),
                                             record=str(rec_dir), name=f"drops-{time.monotonic_ns()}"),
                            venue=kit.SimVenue(simulator=sim))
    live_strategy = trader.strategy = SlowStart()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(1)
        assert entered.wait(10)
        sim.publish(300)
        assert wait_until(lambda: trader.feed.stats.ticks == 4 * 301, 20)
        gate.set()
        assert wait_until(lambda: trader.ticks_processed + trader.dispatcher.dropped == 4 * 301, 20)
        sim.publish(200)      # and a stretch without drops, so the strategy trades
        assert wait_until(lambda: trader.ticks_processed + trader.dispatcher.dropped == 4 * 501, 20)
    finally:
        gate.set()
        recorder = trader.recorder
        trader.stop()
    assert trader.status["dropped"] > 0
    assert recorder.stats["dropped_while_recording"] == trader.status["dropped"]
    assert len(read_recording(rec_dir)) == trader.ticks_processed

    again, strategy = replay(rec_dir, CALLBACK)
    assert strategy.seen == live_strategy.seen
    assert signal_rows(again) == signal_rows(trader) and len(trader.signals) > 0


def test_replay_stamps_receipt_at_emission_and_keeps_the_exchange_fields(sim, rec_root, in_tmp_cwd):
    _, _, rec_dir = live_session(sim, rec_root, CALLBACK, per_token=50)
    recorded = read_recording(rec_dir)

    class Stamps(kit.Strategy):
        def __init__(self):
            self.rows = []

        def on_tick(self, tick):
            self.rows.append((tick.token, tick.seq, tick.exchange_ts, tick.recv_ns))

    before = time.perf_counter_ns()
    trader, strategy = replay(rec_dir, QUEUE, Stamps())
    after = time.perf_counter_ns()
    got = pd.DataFrame(strategy.rows, columns=["token", "seq", "exchange_ts", "recv_ns"])
    assert got[["token", "seq", "exchange_ts"]].equals(recorded[["token", "seq", "exchange_ts"]])
    assert (got["recv_ns"] > before).all() and (got["recv_ns"] < after).all()
    assert got["recv_ns"].is_monotonic_increasing
    assert not got["recv_ns"].isin(recorded["recv_ns"]).any()          # restamped, not copied
    summary = trader.metrics.summary()
    assert summary.loc[("queue", "dispatch"), "samples"] == 200         # latency from emission


def test_a_dataframe_with_only_token_and_ltp_replays_and_bad_rows_are_counted(in_tmp_cwd):
    ticks = pd.DataFrame({"token": ["A", "B", "A", None, "A", "B"], "ltp": [10.0, 20.0, 10.5, 1.0, np.nan, 21.0]})

    class Keep(kit.Strategy):
        def __init__(self):
            self.seen = []

        def on_tick(self, tick):
            self.seen.append((tick.token, tick.seq, tick.ltp, tick.exchange_type, tick.mode))

    trader, strategy = replay(ticks, CALLBACK, Keep())
    assert strategy.seen == [("A", 1, 10.0, 1, 1), ("B", 1, 20.0, 1, 1), ("A", 2, 10.5, 1, 1), ("B", 2, 21.0, 1, 1)]
    assert trader.status["malformed_frames"] == 2          # no token / no ltp: skipped, counted


def test_a_replay_source_without_prices_is_refused_at_start(in_tmp_cwd, rec_root):
    with pytest.raises(ValueError, match="ltp"):
        kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(pd.DataFrame({"token": ["A"]})),
                                        name="bad-source")).start()
    with pytest.raises(FileNotFoundError):
        kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(str(rec_root / "nothing")),
                                        name="bad-path")).start()
    with pytest.raises(ValueError, match="replay="):
        kit.TraderConfig(feed="replay")
    assert not [t for t in threading.enumerate() if t.name.startswith("kit-replay")]


def test_a_full_queue_makes_the_replay_wait_instead_of_dropping(in_tmp_cwd):
    n = 3000
    ticks = pd.DataFrame({"token": [str(i % 3) for i in range(n)], "ltp": 100.0 + np.arange(n) % 7})

    class Slow(kit.Strategy):
        def __init__(self):
            self.seqs = []

        def on_tick(self, tick):
            self.seqs.append((tick.token, tick.seq))
            if len(self.seqs) % 500 == 0:
                time.sleep(0.01)

    trader, strategy = replay(ticks, QUEUE, Slow(), dispatch=kit.DispatchConfig(queue_size=4))
    assert trader.dispatcher.dropped == 0 and trader.dispatcher.max_depth <= 4
    assert strategy.seqs == [(str(i % 3), i // 3 + 1) for i in range(n)]


def test_switching_modes_during_a_replay_loses_and_reorders_nothing(in_tmp_cwd):
    n = 200_000
    ticks = pd.DataFrame({"token": [str(i % 5) for i in range(n)], "ltp": 100.0 + (np.arange(n) % 11)})
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False), mode=QUEUE,
                                             name="switching"))
    seqs = []

    class Keep(kit.Strategy):
        def on_tick(self, tick):
            seqs.append((tick.token, tick.seq))

    trader.strategy = Keep()
    trader.start()
    modes = [CALLBACK, QUEUE, POLL, CALLBACK]
    switches = 0
    while not trader.feed.finished and switches < 2000:
        trader.mode = modes[switches % len(modes)]
        switches += 1
        time.sleep(0.002)
    trader.mode = CALLBACK
    assert trader.feed.wait_finished(60)
    trader.close()
    assert seqs == [(str(i % 5), i // 5 + 1) for i in range(n)]
    assert trader.dispatcher.dropped == 0
    assert switches > 3


def test_paced_replay_keeps_the_recorded_spacing_and_skips_long_gaps(in_tmp_cwd):
    base = 1_767_240_900_000_000_000
    spacing = [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0 + 3600, 1.2 + 3600]      # seconds; an hour-long gap
    ticks = pd.DataFrame({"token": "A", "ltp": 100.0, "seq": range(1, 9),
                          "recv_epoch_ns": [base + int(s * 1e9) for s in spacing]})
    stamps = []

    class Stamp(kit.Strategy):
        def on_tick(self, tick):
            stamps.append(tick.recv_ns)

    started = time.monotonic()
    replay(ticks, CALLBACK, Stamp(), speed=2.0)
    took = time.monotonic() - started
    gaps = np.diff(stamps) / 1e9
    # Never faster than the recording divided by the speed (lower bounds only: the machine may be slow).
    assert all(g >= 0.1 * 0.9 for g in gaps[:5])
    assert gaps[6] >= 0.1 * 0.9
    assert took < 60          # the hour was skipped, not waited


def test_stop_during_a_replay_then_start_plays_it_again(in_tmp_cwd):
    n = 50
    ticks = pd.DataFrame({"token": "A", "ltp": 100.0 + np.arange(n), "seq": np.arange(1, n + 1),
                          "recv_epoch_ns": 1_767_240_900_000_000_000 + np.arange(n) * 100_000_000})
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, speed=1.0, progress=False),
                                             name="restart"))
    seen = []

    class Keep(kit.Strategy):
        def on_tick(self, tick):
            seen.append(tick.seq)

    trader.strategy = Keep()
    trader.start()
    assert wait_until(lambda: len(seen) >= 3, 10)
    trader.stop()
    first = len(seen)
    assert first < n
    assert not [t for t in threading.enumerate() if t.name.startswith(("kit-replay", "kit-consumer"))]
    trader.config.replay.speed = None
    trader.start()
    assert trader.feed.wait_finished(20)
    trader.close()
    assert seen[:first] == list(range(1, first + 1)) and seen[first:] == list(range(1, n + 1))


def test_progress_bar_runs_without_disturbing_the_replay(in_tmp_cwd, capsys):
    ticks = pd.DataFrame({"token": "A", "ltp": 100.0 + np.arange(5000) % 3})
    trader, _ = replay(ticks, CALLBACK, kit.examples.Null(), progress=True)
    assert trader.ticks_processed == 5000
    assert "5.00k" in capsys.readouterr().err       # tqdm wrote its final count
