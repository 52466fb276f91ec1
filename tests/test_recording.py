"""Recording ticks to Parquet and reading them back: exact, partitioned, crash-tolerant."""
from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.angel import wire
from kit.store.recording import (QUOTE_COLUMNS, TICK_COLUMNS, TickRecorder, read_recording, read_recording_table,
                           table_to_ticks)
from kit.sim.market import SimInstrument
from kit.core.tick import DEPTH, LTP, QUOTE, SNAP_QUOTE

DAY_MS = 1_767_240_900_000        # 2026-01-01 09:45 IST


@pytest.fixture
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("recording")


def wire_ticks(n: int, start_ms: int = DAY_MS, modes=(LTP, QUOTE, SNAP_QUOTE, DEPTH)) -> list:
    """Ticks as the feed decodes them, from the simulator's own packets, every mode."""
    instruments = [SimInstrument(7, 2, "43650"), SimInstrument(7, 1, "99926000"), SimInstrument(7, 13, "1234")]
    out = []
    for i in range(n):
        inst = instruments[i % len(instruments)]
        inst.advance(start_ms + i * 10)
        out.append(wire.parse_tick(inst.encode(modes[i % len(modes)]), time.perf_counter_ns()))
    return out


def test_every_mode_round_trips_exactly_in_order(root):
    ticks = wire_ticks(2000)
    recorder = TickRecorder(root, flush_interval=0.02, roll_interval=0.05).start()
    for t in ticks[:1000]:
        recorder.append(t)
    time.sleep(0.3)                  # several flushes and rolls: several files per partition
    for t in ticks[1000:]:
        recorder.append(t)
    recorder.stop()
    assert recorder.stats["ticks_written"] == 2000 and recorder.stats["write_errors"] == 0

    back = table_to_ticks(read_recording_table(root))
    assert back == ticks             # every field of Tick and Quote, recv_ns included, same order

    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    session = recorder.session_id
    assert files == [f"day=2026-01-01/exchange_type=1/token=99926000/{session}.parquet",
                     f"day=2026-01-01/exchange_type=13/token=1234/{session}.parquet",
                     f"day=2026-01-01/exchange_type=2/token=43650/{session}.parquet"]   # merged at stop
    assert not list(root.rglob(".*"))


def test_read_recording_gives_flat_columns_and_filters_by_day_and_token(root):
    first = wire_ticks(300, DAY_MS, modes=(SNAP_QUOTE,))
    second = wire_ticks(300, DAY_MS + 86_400_000, modes=(LTP,))
    recorder = TickRecorder(root).start()
    for t in first + second:
        recorder.append(t)
    recorder.stop()

    df = read_recording(root)
    assert list(df.columns[:7]) == TICK_COLUMNS
    assert set(QUOTE_COLUMNS) <= set(df.columns)
    assert len(df) == 600 and list(df["rec_seq"]) == list(range(600))
    assert df["best_buy_price"].iloc[0].tolist() == [p for p, _, _ in first[0].quote.best_buy]
    assert df["volume"].dtype == "Int64" and df["volume"].isna().sum() == 300    # LTP ticks have no quote
    assert (df["recv_ns"].to_numpy() == [t.recv_ns for t in first + second]).all()

    day2 = read_recording(root, days="2026-01-02")
    assert len(day2) == 300 and set(day2["day"]) == {"2026-01-02"}
    assert not set(QUOTE_COLUMNS) & set(day2.columns)      # an LTP-only selection has no quote columns
    one = read_recording(root, tokens="43650", days=["2026-01-01", "2026-01-02"])
    assert set(one["token"]) == {"43650"} and len(one) == 200
    assert read_recording(root, exchange_type=13)["token"].unique().tolist() == ["1234"]
    assert len(read_recording(root / "day=2026-01-02")) == 300          # any level of the tree


def test_files_in_progress_are_ignored_and_rows_of_an_interrupted_merge_are_read_once(root):
    ticks = wire_ticks(400, modes=(LTP,))
    recorder = TickRecorder(root).start()
    for t in ticks:
        recorder.append(t)
    recorder.stop()
    partition = next(root.rglob("token=43650"))
    merged = next(partition.glob("*.parquet"))
    shutil.copy(merged, partition / f"{recorder.session_id}-000001.parquet")    # a part the merge did not delete
    (partition / ".half-written.parquet.inprogress").write_bytes(b"PAR1 not finished")
    df = read_recording(root)
    assert len(df) == 400 and not df.duplicated(["session_id", "rec_seq"]).any()
    assert df.attrs["skipped_files"] == []


def test_a_corrupt_file_is_skipped_named_and_the_rest_still_reads(root, caplog):
    ticks = wire_ticks(300, modes=(LTP,))
    recorder = TickRecorder(root).start()
    for t in ticks:
        recorder.append(t)
    recorder.stop()
    broken = next(root.rglob("token=43650")) / "copied-from-elsewhere.parquet"
    broken.write_bytes(b"not parquet at all")
    df = read_recording(root)
    assert len(df) == 300
    assert df.attrs["skipped_files"] == [str(broken)]
    assert "skipped unreadable file" in caplog.text


def test_a_failed_write_is_counted_and_retried_without_losing_ticks(root, caplog):
    ticks = wire_ticks(90, modes=(LTP,))
    blocker = root / "day=2026-01-01"
    blocker.write_text("a file where the day directory should go")     # a real OS error on mkdir
    recorder = TickRecorder(root, flush_interval=0.02, roll_interval=0.02).start()
    for t in ticks:
        recorder.append(t)
    assert wait_until(lambda: recorder.stats["write_errors"] >= 2, 10)
    assert "write failed" in caplog.text
    blocker.unlink()
    recorder.stop()
    assert recorder.stats["ticks_written"] == 90
    assert table_to_ticks(read_recording_table(root)) == ticks


def test_a_recorder_restarted_after_stop_keeps_both_stretches(root):
    ticks = wire_ticks(200, modes=(LTP,))
    recorder = TickRecorder(root)
    for half in (ticks[:100], ticks[100:]):
        recorder.start()
        for t in half:
            recorder.append(t)
        recorder.stop()
    assert table_to_ticks(read_recording_table(root)) == ticks
    assert len(list(root.rglob("*.parquet"))) == 3        # still one file per partition


def test_an_empty_recording_reads_as_an_empty_frame(root):
    TickRecorder(root).start().stop()
    df = read_recording(root)
    assert len(df) == 0 and list(df.columns[:7]) == TICK_COLUMNS
    with pytest.raises(FileNotFoundError):
        read_recording(root / "missing")


def test_a_running_trader_records_and_stop_recording_writes_everything(sim, root, in_tmp_cwd):
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", tokens={2: ["43650", "43651"]}, mode="callback",
                                             name=f"rec-{time.monotonic_ns()}"), venue=kit.SimVenue(simulator=sim))
    trader.strategy = kit.examples.Null()
    trader.start()
    try:
        assert trader.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(10)                                    # before recording: not in the file
        assert wait_until(lambda: trader.ticks_processed == 20, 10)
        recorder = trader.start_recording(root, flush_interval=0.05)
        assert trader.start_recording(root) is recorder    # idempotent
        sim.publish(100)
        assert wait_until(lambda: trader.ticks_processed == 220, 10)
        recorder.flush()
        assert len(read_recording(root)) == 200            # readable while still recording
        assert trader.stop_recording() is recorder
        assert trader.recorder is None and not recorder.running
        sim.publish(5)                                     # after: not recorded
        assert wait_until(lambda: trader.ticks_processed == 230, 10)
    finally:
        trader.stop()
    df = read_recording(root)
    assert len(df) == 200
    for token, rows in df.groupby("token"):
        assert rows["seq"].tolist() == list(range(11, 111))
    assert (df["recv_epoch_ns"] - time.time_ns()).abs().max() < 600e9   # wall clock, not perf_counter
