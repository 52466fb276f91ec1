"""kit.sweep and kit.walk_forward: the same results in this process, on local workers and on a real Dask cluster.

The recordings are tiny synthetic days (``kit.research.synthetic``) in the
recorder's layout; the cluster is a real ``LocalCluster`` with two worker
processes on 127.0.0.1, one for the module.
"""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import kit
from conftest import wait_until
from kit.research.backtest import backtest, read_recording
from kit.research.examples import SmaCross
from kit.research.sweep import TIMING_COLUMNS, sweep
from kit.research.synthetic import synthetic_days
from kit.research.walk_forward import walk_forward

GRID = {"fast": [3, 5], "slow": [10, 20]}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("recording")
    days = synthetic_days(root, days=4, ticks_per_day=2_500, tokens=2, seed=3)
    return root, days


@pytest.fixture(scope="module")
def cluster():
    import dask
    from distributed import Client, LocalCluster
    # A task that kills its worker fails at once rather than killing three more, and takes no other task
    # with it: a worker holds one task at a time (the scheduler lives in this process and reads these).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}), LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as local, Client(local, set_as_default=False) as client:
        yield local, client


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=TIMING_COLUMNS), b.drop(columns=TIMING_COLUMNS))


def test_a_module_strategy_sweeps_to_the_same_frame_serially_with_joblib_and_on_dask(recording, cluster):
    root, days = recording
    local, client = cluster
    serial = kit.sweep(SmaCross, GRID, root, n_jobs=1, progress=False)
    on_joblib = kit.sweep(SmaCross, GRID, root, n_jobs=2, progress=False)
    on_dask = kit.sweep(SmaCross, GRID, root, client=client, progress=False)
    by_address = kit.sweep(SmaCross, GRID, f"file://{root}", client=local.scheduler_address, progress=False)
    for other in (on_joblib, on_dask, by_address):
        same(serial.frame, other.frame)
    frame = serial.frame
    assert list(frame[["fast", "slow"]].itertuples(index=False, name=None)) == [(3, 10), (3, 20), (5, 10), (5, 20)]
    assert (frame["days"] == len(days)).all() and (frame["error"] == "").all() and not frame["partial"].any()
    assert (frame["ticks"] == 4 * 2_500).all() and (frame["trades"] > 0).all()
    assert not serial.partial

    # each (parameter set, day) is kit.backtest's result on that day
    per_day = kit.sweep(SmaCross, GRID, root, n_jobs=2, progress=False, per_day=True).frame
    row = per_day[(per_day["fast"] == 5) & (per_day["slow"] == 20) & (per_day["day"] == days[1])].iloc[0]
    alone = backtest(SmaCross(5, 20), read_recording(root, days=days[1]), progress=False)
    summary = alone.summary()
    assert row["pnl"] == pytest.approx(summary["net_pnl"]) and row["trades"] == summary["fills"]
    assert row["gross"] == pytest.approx(summary["total_pnl"]) and row["charges"] == pytest.approx(summary["charges"])
    assert row["charges"] > 0 and row["pnl"] == pytest.approx(row["gross"] - row["charges"])
    assert row["max_drawdown"] == pytest.approx(summary["max_drawdown"])
    assert frame.loc[3, "pnl"] == pytest.approx(per_day[(per_day["fast"] == 5) & (per_day["slow"] == 20)]["pnl"].sum())


def test_a_recording_at_an_fsspec_url_sweeps_as_the_same_files_on_disk(recording):
    import fsspec
    root, _ = recording
    memory = fsspec.filesystem("memory")
    memory.put(str(root), "/kit-test-recording", recursive=True)
    try:
        on_disk = kit.sweep(SmaCross, GRID, root, n_jobs=1, progress=False)
        in_memory = kit.sweep(SmaCross, GRID, "memory:///kit-test-recording", n_jobs=1, progress=False)
    finally:
        memory.rm("/kit-test-recording", recursive=True)
    same(on_disk.frame, in_memory.frame)
    assert (in_memory.frame["error"] == "").all() and (in_memory.frame["ticks"] == 4 * 2_500).all()


NOTEBOOK_STRATEGY = '''
import kit
class Breakout(kit.Strategy):
    """Buys a new high of the last `lookback` ticks, sells a new low."""
    def __init__(self, lookback=20, qty=10):
        self.lookback, self.qty, self.prices = lookback, qty, {}

    def on_tick(self, tick):
        seen = self.prices.setdefault(tick.token, [])
        seen.append(tick.ltp)
        if len(seen) <= self.lookback:
            return None
        window = seen[-self.lookback - 1:-1]
        if tick.ltp > max(window):
            return kit.Signal.buy(tick, self.qty)
        if tick.ltp < min(window):
            return kit.Signal.sell(tick, self.qty)
        return None
'''


def test_a_strategy_defined_in_a_notebook_cell_sweeps_to_the_same_frame_everywhere(kernel, recording, cluster):
    root, _ = recording
    local, _ = cluster
    kernel.run(NOTEBOOK_STRATEGY)
    out = kernel.run(f"""
import json, pandas as pd
grid = {{"lookback": [10, 40], "qty": [5, 10]}}
frames = [kit.sweep(Breakout, grid, {str(root)!r}, n_jobs=1, progress=False).frame,
          kit.sweep(Breakout, grid, {str(root)!r}, n_jobs=2, progress=False).frame,
          kit.sweep(Breakout, grid, {str(root)!r}, client={local.scheduler_address!r}, progress=False).frame]
print(json.dumps([f.drop(columns=["ticks_per_s"]).to_dict("records") for f in frames]))
""")
    serial, on_joblib, on_dask = (pd.DataFrame(records) for records in json.loads(out))
    pd.testing.assert_frame_equal(serial, on_joblib)
    pd.testing.assert_frame_equal(serial, on_dask)
    # the class reached the workers by value: every row ran and traded
    assert (serial["error"] == "").all() and (serial["trades"] > 0).all()
    assert serial.loc[1, "pnl"] == pytest.approx(2 * serial.loc[0, "pnl"])     # twice the quantity, twice the P&L


def test_a_failing_parameter_set_and_an_unreadable_day_are_rows_with_their_error(recording, tmp_path, cluster):
    root, days = recording
    _, client = cluster
    grid = [{"fast": 3, "slow": 10}, {"fast": 30, "slow": 10}, {"fast": 5, "slow": 20}]
    for options in ({"n_jobs": 1}, {"n_jobs": 2}, {"client": client}):
        frame = kit.sweep(SmaCross, grid, root, progress=False, **options).frame
        assert len(frame) == 3
        assert frame.loc[1, "error"].count("ValueError: need 0 < fast < slow") == len(days)
        assert frame.loc[1, "days"] == 0 and pd.isna(frame.loc[1, "pnl"])
        assert (frame.loc[[0, 2], "error"] == "").all() and (frame.loc[[0, 2], "trades"] > 0).all()

    # a corrupt file in one day: that day's runs carry the error, the other days still count
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    next((broken / f"day={days[2]}").rglob("*.parquet")).write_bytes(b"not parquet")
    frame = kit.sweep(SmaCross, GRID, broken, n_jobs=2, progress=False).frame
    assert (frame["days"] == len(days) - 1).all()
    assert frame["error"].str.startswith(f"{days[2]}: reading {days[2]}:").all()


@pytest.mark.parametrize("backend", ["joblib", "dask"])
def test_a_worker_process_that_dies_is_reported_and_the_finished_rows_are_kept(recording, cluster, backend):
    import os
    root, days = recording
    _, client = cluster

    def dies_on_fast_30(fast, slow):     # a crash no Python handler sees: the process just ends
        if fast == 30:
            os._exit(3)
        return SmaCross(fast, slow)

    grid = [{"fast": 3, "slow": 10}, {"fast": 5, "slow": 20}, {"fast": 30, "slow": 40}]
    options = {"n_jobs": 2} if backend == "joblib" else {"client": client}
    frame = kit.sweep(dies_on_fast_30, grid, root, chunk_size=1, progress=False, **options).frame
    assert frame.loc[2, "error"] != "" and frame.loc[2, "days"] == 0
    assert ("TerminatedWorkerError" if backend == "joblib" else "KilledWorker") in frame.loc[2, "error"]
    if backend == "dask":     # Dask reschedules what the dead worker held: every other row is complete
        assert (frame.loc[[0, 1], "days"] == len(days)).all() and (frame.loc[[0, 1], "error"] == "").all()
    else:                     # joblib stops with the worker: what had not finished carries the error too
        failed = frame["error"] != ""
        assert (frame.loc[~failed, "days"] == len(days)).all()
        assert frame.loc[failed, "error"].str.contains("TerminatedWorkerError").all()
    assert wait_until(lambda: len(client.nthreads()) == 2, timeout=60)    # the nanny restarted its worker


@pytest.mark.parametrize("backend", ["serial", "joblib", "dask"])
def test_an_interrupted_sweep_returns_what_finished_marked_partial(recording, cluster, backend):
    root, days = recording
    _, client = cluster
    options = {"serial": {"n_jobs": 1}, "joblib": {"n_jobs": 2}, "dask": {"client": client}}[backend]
    seen = []

    def interrupt_after_two(done, total):
        seen.append((done, total))
        if done == 2:
            raise KeyboardInterrupt     # what a kernel interrupt raises in the cell's thread

    # chunk_size=1: 16 tasks of one day × one parameter set
    result = kit.sweep(SmaCross, GRID, root, chunk_size=1, progress=interrupt_after_two, **options)
    assert result.partial and seen == [(1, 16), (2, 16)]
    frame = result.frame
    assert frame["days"].sum() == 2 and frame["partial"].all()
    full = kit.sweep(SmaCross, GRID, root, n_jobs=1, progress=False, per_day=True).frame
    finished = sorted(result.runs)
    assert len(finished) == 2
    for index, day in finished:     # what finished is right, not a fragment
        expected = full[(full["fast"] == result.param_sets[index]["fast"]) &
                        (full["slow"] == result.param_sets[index]["slow"]) & (full["day"] == day)]
        assert result.runs[(index, day)].pnl == pytest.approx(expected["pnl"].iloc[0])
    if backend == "dask":    # the remaining tasks were cancelled on the cluster
        assert wait_until(lambda: not any(client.processing().values()), timeout=30)


def test_walk_forward_picks_the_in_sample_best_and_reports_it_out_of_sample(recording):
    root, days = recording
    wf = kit.walk_forward(SmaCross, GRID, root, train=2, test=1, metric="pnl", n_jobs=2, progress=False)
    frame = wf.frame
    assert list(frame["window"]) == [0, 1]
    assert [list(t) for t in frame["train_days"]] == [days[0:2], days[1:3]]
    assert [list(t) for t in frame["test_days"]] == [[days[2]], [days[3]]]
    for _, row in frame.iterrows():
        inside = sweep(SmaCross, GRID, root, days=list(row["train_days"]), n_jobs=1, progress=False).frame
        best = inside.loc[inside["pnl"].idxmax()]
        assert (row["fast"], row["slow"]) == (best["fast"], best["slow"])
        assert row["in_sample_pnl"] == pytest.approx(best["pnl"])
        outside = sweep(SmaCross, [{"fast": int(best["fast"]), "slow": int(best["slow"])}], root,
                        days=list(row["test_days"]), n_jobs=1, progress=False).frame
        assert row["out_of_sample_pnl"] == pytest.approx(outside["pnl"].iloc[0])
    figure = wf.figure()
    assert [t.name for t in figure.data] == ["in sample", "out of sample", "cumulative P&L"]

    by_sharpe = walk_forward(SmaCross, GRID, root, train=3, test=1, metric="sharpe", n_jobs=1, progress=False).frame
    assert len(by_sharpe) == 1 and "out_of_sample_sharpe" in by_sharpe


def test_the_figure_is_a_heatmap_over_two_parameters_and_parallel_coordinates_otherwise(recording):
    root, _ = recording
    two = kit.sweep(SmaCross, GRID, root, days=None, n_jobs=1, progress=False)
    heatmap = two.figure().data[0]
    assert heatmap.type == "heatmap" and list(heatmap.x) == ["10", "20"] and list(heatmap.y) == ["3", "5"]
    assert heatmap.z[1][1] == pytest.approx(two.frame.loc[3, "pnl"])
    three = kit.sweep(SmaCross, {"fast": [3, 5], "slow": [10, 20], "qty": [1, 2]}, root, n_jobs=1, progress=False)
    assert three.figure().data[0].type == "parcoords"


SLOW_STRATEGY = '''
import time, kit
class SlowStart(kit.examples.SmaCross):
    """Takes a second to start, so a sweep of it is still running when the kernel is interrupted."""
    def on_start(self):
        time.sleep(1.0)
        super().on_start()
'''


def test_interrupting_the_kernel_stops_a_joblib_sweep_and_keeps_what_finished(kernel, recording, tmp_path):
    root, _ = recording
    kernel.run(SLOW_STRATEGY)
    ticks = tmp_path / "done"
    msg_id = kernel.kc.execute(f"""
import pathlib
def note(done, total):
    pathlib.Path({str(ticks)!r}).write_text(str(done))
result = kit.sweep(SlowStart, {GRID!r}, {str(root)!r}, n_jobs=2, chunk_size=1, progress=note)
""")
    # interrupt once the first task has finished: the sweep is then running, with 15 tasks to go
    assert wait_until(lambda: ticks.exists() and ticks.read_text() != "", timeout=120)
    kernel.km.interrupt_kernel()
    reply = kernel.kc.get_shell_msg(timeout=120)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=120)
    assert reply["content"]["status"] == "ok", reply["content"]      # the cell ended normally: no traceback
    out = kernel.run("import json\nprint(json.dumps(dict(partial=result.partial, days=int(result.frame['days'].sum()),"
                     " rows_partial=bool(result.frame['partial'].all()), errors=list(result.frame['error']))))")
    state = json.loads(out)
    assert state["partial"] and state["rows_partial"]
    assert 1 <= state["days"] < 16 and all(e == "" for e in state["errors"])
    # the workers are usable again: the next sweep runs to the end
    again = kernel.run(f"again = kit.sweep(kit.examples.SmaCross, {GRID!r}, {str(root)!r}, n_jobs=2, progress=False)\n"
                       "print(again.partial, int(again.frame['days'].min()))")
    assert again.split() == ["False", "4"]


def test_the_sweep_benchmark_prints_every_figure_side_by_side(capsys):
    from kit.bench.sweep import main
    assert main(["--quick", "--days", "2", "--ticks", "3000"]) == 0
    out = capsys.readouterr().out
    for line in ("replay floor (Null, callback, metrics off)", "one backtest (SmaCross 5/20, one day)",
                 "sweep, 1 worker (in this process)", "sweep, 2 workers (joblib, loky)",
                 "sweep, 2 workers (Dask LocalCluster)"):
        assert re.search(rf"^{re.escape(line)}\s+[\d,]+", out, re.M), out
    for workers in ("joblib, loky", "Dask LocalCluster"):    # a peak RSS for each of the two workers
        row = next(r for r in out.splitlines() if workers in r)
        assert len(re.findall(r"[\d,]+ MB", row)) == 2, row
    assert re.search(r"scaling 1 → 2 workers: joblib \d+\.\d\d×, Dask \d+\.\d\d×", out)
    assert "load average" in out
