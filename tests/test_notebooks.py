"""Every notebook, executed top to bottom in a real kernel (nbclient), offline, on the simulator.

The kernel is this interpreter's ``python3`` kernelspec (the venv's own: its
``python`` is resolved to ``sys.executable``). Each run gets:

- a first cell that refuses non-loopback connections inside the kernel, as
  ``tests/conftest.py`` does for the test process;
- probe cells after the notebook's own, which read the kernel's live state
  and print it as one JSON line (``KIT_PROBE {...}``).

The assertions read both the notebook's own outputs (the tables it shows)
and the probes.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from kit.sim.server import Simulator

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = ("01_quickstart.ipynb", "02_latency_ab.ipynb", "03_live_smartapi.ipynb", "04_sweep.ipynb",
       "05_trading_day.ipynb")

LOOPBACK_GUARD = '''
import socket as _socket
_connect = _socket.socket.connect
def _loopback_only(self, address):
    if isinstance(address, tuple) and self.family in (_socket.AF_INET, _socket.AF_INET6):
        if not (address[0].startswith("127.") or address[0] in ("localhost", "::1")):
            raise ConnectionRefusedError(f"notebook test tried to reach {address!r}")
    return _connect(self, address)
_socket.socket.connect = _loopback_only
'''

PROBE = '''
import json as _json, sys as _sys, threading as _threading
def _probe(**values):
    values["executable"] = _sys.executable
    values["threads"] = sorted(t.name for t in _threading.enumerate())
    print("KIT_PROBE " + _json.dumps(values, default=str))
'''


def execute(name: str, cwd: Path, probes: list[str]) -> tuple[list, dict]:
    """Run a notebook plus probe cells; return its own executed cells and the last probe's values."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    own = len(nb.cells)
    nb.cells = [new_code_cell(LOOPBACK_GUARD + PROBE), *nb.cells, *(new_code_cell(p) for p in probes)]
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    probe = None
    for cell in nb.cells[own + 1:]:
        for out in cell.outputs:
            if out.output_type == "stream":
                for line in out.text.splitlines():
                    if line.startswith("KIT_PROBE "):
                        probe = json.loads(line.removeprefix("KIT_PROBE "))
    assert probe is not None, "the probe printed nothing"
    assert Path(probe["executable"]).resolve() == Path(sys.executable).resolve(), "not this venv's kernel"
    return nb.cells[1:own + 1], probe


def outputs_text(cells) -> str:
    """Everything the cells showed, as text (stream output and text/plain results)."""
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
                parts.append(out.data.get("text/html", ""))
            elif out.output_type == "error":
                parts.append("\n".join(out.traceback))
    return "\n".join(parts)


def cell_with(cells, source_start: str):
    matches = [c for c in cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert len(matches) == 1, f"expected one cell starting with {source_start!r}"
    return matches[0]


def count(threads: list[str], name: str) -> int:
    return sum(1 for t in threads if t == name)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No SmartAPI credentials or URLs reach the kernel, and it runs in an empty directory."""
    for var in ("SMARTAPI_API_KEY", "SMARTAPI_CLIENT_CODE", "SMARTAPI_PIN", "SMARTAPI_TOTP_SECRET",
                "SMARTAPI_ROOT_URL", "SMARTAPI_FEED_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize("name", ALL)
def test_committed_notebooks_carry_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_a_notebook_run_and_committed_with_its_outputs_is_stored_without_them(tmp_path):
    """What `make setup` arranges (.gitattributes + `nbstripout --install`): outputs stay in the working copy."""
    import shutil
    import subprocess
    root = NOTEBOOKS.parent

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@127.0.0.1", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    shutil.copy(root / ".gitattributes", tmp_path / ".gitattributes")
    subprocess.run([str(Path(sys.executable).parent / "nbstripout"), "--install"], cwd=tmp_path, check=True)
    nb = nbformat.v4.new_notebook(cells=[new_code_cell("print(1)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[0].execution_count = 1
    nbformat.write(nb, tmp_path / "run.ipynb")
    git("add", ".gitattributes", "run.ipynb")
    git("commit", "-q", "-m", "a run notebook")
    stored = nbformat.reads(git("show", "HEAD:run.ipynb"), as_version=4)
    assert stored.cells[0].outputs == [] and stored.cells[0].execution_count is None
    assert nbformat.read(tmp_path / "run.ipynb", as_version=4).cells[0].outputs    # the user's copy keeps them


def test_quickstart_streams_trades_swaps_and_rerunning_cells_leaves_one_of_everything(offline):
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    rerun = [cell_with(nb.cells, s).source for s in ("trader = kit.LiveTrader", "dash = kit.dashboard",
                                                     "trader.start()")]
    cells, probe = execute("01_quickstart.ipynb", offline, [
        # the charts keep refreshing while a synchronous cell runs
        "n0 = dash.refreshes; time.sleep(1.5); refreshed_during_sleep = dash.refreshes - n0",
        "first = dict(status=trader.status, signals=len(trader.signals), strategy=type(trader.strategy).__name__,\n"
        "             modes=sorted(trader.metrics.summary().index.get_level_values('mode').unique()),\n"
        "             price_points=len(dash.price_fig.data[0].x), latency_bars=[list(t.y) for t in dash.latency_fig.data],\n"
        "             status_line=dash.status_line.value, refreshed_during_sleep=refreshed_during_sleep)",
        # re-run the trader, dashboard and start cells, as a user would
        *rerun,
        "time.sleep(1.0)",
        "_probe(first=first, after_rerun=trader.status, dashboard_refreshing=dash.refreshing)",
    ])
    text = outputs_text(cells)
    assert "Traceback" not in text
    first = probe["first"]
    assert first["status"]["connected"] and first["status"]["ticks_processed"] > 100
    assert first["status"]["strategy_errors"] == 0 and first["status"]["dropped"] == 0
    assert first["signals"] > 0 and first["strategy"] == "FastBreakout"
    assert first["modes"] == ["callback", "poll", "queue"]
    assert first["price_points"] > 0
    assert all(v is not None for bars in first["latency_bars"] for v in bars[:2])  # dispatch, strategy per mode
    assert "<b class='kit-ticks'>" in first["status_line"]
    assert first["refreshed_during_sleep"] >= 2

    # the notebook's own tables: signals, positions, the latency summary with all three modes
    summary = cell_with(cells, 'for mode in ("poll", "callback", "queue")').outputs[0].data["text/plain"]
    for mode in ("poll", "queue", "callback"):
        assert re.search(rf"^{mode}\s+dispatch", summary, re.M), summary
    assert "BUY" in cell_with(cells, "trader.signals_df().tail()").outputs[0].data["text/plain"]

    # after re-running the cells: one feed, one consumer, one simulator, one refresh thread
    threads = probe["threads"]
    for name in ("kit-feed-quickstart", "kit-feed-quickstart-heartbeat", "kit-consumer-quickstart",
                 "kit-simulator", "kit-sim-rest", "kit-dashboard-quickstart"):
        assert count(threads, name) == 1, (name, threads)
    assert probe["after_rerun"]["connected"] and probe["after_rerun"]["ticks_processed"] > 0
    assert probe["dashboard_refreshing"]


def test_latency_ab_measures_each_mode_on_one_feed(offline):
    cells, probe = execute("02_latency_ab.ipynb", offline, [
        "_probe(counts={m: trader.metrics.count(m) for m in MODES}, processed=trader.ticks_processed,\n"
        "       received=trader.status['ticks_received'], signals=len(trader.signals),\n"
        "       table=summary.reset_index().to_dict('records'), running=trader.running)",
    ])
    text = outputs_text(cells)
    assert "Traceback" not in text
    counts = probe["counts"]
    assert all(counts[m] > 0 for m in ("poll", "queue", "callback")), counts
    assert sum(counts.values()) == probe["processed"] == probe["received"]   # none lost to a switch
    assert probe["signals"] > 0 and not probe["running"]
    rows = {(r["mode"], r["stage"]): r for r in probe["table"]}
    for mode in ("poll", "queue", "callback"):
        for stage in ("dispatch", "strategy", "total"):
            row = rows[(mode, stage)]
            assert row["ticks"] == counts[mode] and 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]

    # the table and the comparison the notebook shows
    p50 = cell_with(cells, 'p50 = summary["p50_us"]').outputs[0].data["text/plain"]
    assert [line.split()[0] for line in p50.splitlines()[2:]] == ["poll", "queue", "callback"]
    ratios = cell_with(cells, "total = summary.xs").outputs[0].text
    assert "poll is" in ratios and "x queue" in ratios and "x callback" in ratios
    # the plot: one distribution per mode, one point per measured tick
    plot = cell_with(cells, "from kit.research.charts import latency_cdf_figure").outputs[0].data["application/vnd.plotly.v1+json"]
    assert [t["name"].split()[0] for t in plot["data"]] == ["poll", "queue", "callback"]
    from kit.research.palette import MODE_COLORS      # the dashboard's colours
    assert {t["name"].split()[0]: t["line"]["color"] for t in plot["data"]} == MODE_COLORS


def _secrets_absent(text: str, secrets: dict) -> None:
    for name, value in secrets.items():
        if value.isdigit() and len(value) <= 6:
            # A 4-digit PIN (or a TOTP code) is also a substring of prices and counts by chance
            # ("24,139.5625"): a leak shows it standing alone, as a value.
            found = re.search(rf"(?<![\w.,]){value}(?![\w.,])", text)
            assert found is None, f"the notebook showed the {name}: ...{text[max(0, found.start() - 80):found.end() + 80]}..."
        else:
            assert value not in text, f"the notebook showed the {name}"


def test_live_notebook_without_credentials_runs_the_same_path_against_the_simulator(offline):
    cells, probe = execute("03_live_smartapi.ipynb", offline, [
        "c = sim.rest.credentials\n"
        "_probe(live=LIVE, status=trader.status, logged_in=trader.venue.session.client_code,\n"
        "       logins=sim.rest.requests, paper=trader.config.paper, feed=trader.config.feed,\n"
        "       secrets=dict(api_key=c.api_key, pin=c.pin, totp_secret=c.totp_secret, jwt=c.jwt,\n"
        "                    feed_token=c.feed_token, refresh_token=c.refresh_token))",
    ])
    text = outputs_text(cells)
    assert "missing credentials" in text and "the local simulator (offline)" in text
    assert probe["live"] is False and probe["paper"] is True and probe["feed"] == "smartapi"
    assert probe["logged_in"] == "SIM0001"
    assert any("loginByPassword" in path for path in probe["logins"]), probe["logins"]
    assert probe["status"]["connected"] and probe["status"]["ticks_processed"] > 0
    _secrets_absent(text, probe["secrets"])


def test_live_notebook_with_credentials_takes_the_live_branch(offline, monkeypatch):
    """Credentials and endpoint URLs in the environment, as on a trading desk; here the endpoint is a simulator."""
    with Simulator(rate=20) as sim:
        env = sim.rest.credentials.env()
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SMARTAPI_ROOT_URL", sim.rest.url)
        monkeypatch.setenv("SMARTAPI_FEED_URL", sim.url)
        monkeypatch.setenv("SMARTAPI_MASTER_URL", sim.orders.master_url)
        cells, probe = execute("03_live_smartapi.ipynb", offline, [
            "_probe(live=LIVE, has_sim='sim' in globals(), status=trader.status)",
        ])
        logins = sim.rest.requests
    text = outputs_text(cells)
    assert probe["live"] is True and not probe["has_sim"]
    assert "Angel One (credentials found)" in text
    assert any("loginByPassword" in path for path in logins), logins
    assert probe["status"]["connected"] and probe["status"]["ticks_processed"] > 0
    _secrets_absent(text, {"api key": env["SMARTAPI_API_KEY"], "PIN": env["SMARTAPI_PIN"],
                           "TOTP secret": env["SMARTAPI_TOTP_SECRET"]})


DASK_WORKERS = '''
import psutil as _psutil
def _dask_workers():
    """This kernel's child processes that are Dask workers (multiprocessing spawns; loky's are not)."""
    return [p.pid for p in _psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
'''


def test_sweep_notebook_sweeps_locally_and_on_dask_and_leaves_no_cluster_running(offline):
    nb = nbformat.read(NOTEBOOKS / "04_sweep.ipynb", as_version=4)
    start_cluster = cell_with(nb.cells, "from dask.distributed import Client, LocalCluster").source
    close_cluster = cell_with(nb.cells, "client.close()").source
    cells, probe = execute("04_sweep.ipynb", offline, [
        DASK_WORKERS + "after_notebook = _dask_workers()",
        start_cluster, start_cluster,     # a re-run closes the previous cluster first
        "rerun = dict(workers=_dask_workers(), cluster_workers=len(cluster.workers), link=client.dashboard_link)",
        close_cluster,
        "_probe(after_notebook=after_notebook, rerun=rerun, after_close=_dask_workers(), partial=result.partial,\n"
        "       frame=result.frame.drop(columns=['ticks_per_s']).to_dict('records'), windows=len(wf.frame),\n"
        "       client=client.status, cluster=str(cluster.status))",
    ])
    text = outputs_text(cells)
    assert "Traceback" not in text
    frame = pd.DataFrame(probe["frame"])
    assert len(frame) == 12 and not probe["partial"] and (frame["error"] == "").all()
    assert (frame["days"] == 4).all() and (frame["trades"] > 0).all()
    assert probe["windows"] == 2
    # the notebook showed the heatmap, its dashboard link, and the same results on Dask
    heatmap = cell_with(cells, "result.figure()").outputs[0].data["application/vnd.plotly.v1+json"]
    assert heatmap["data"][0]["type"] == "heatmap"
    link = outputs_text([cell_with(cells, "from dask.distributed import Client, LocalCluster")])
    assert re.search(r"Dask dashboard: http://127\.0\.0\.1:\d+/status", link), link
    assert "the same results as locally" in outputs_text([cell_with(cells, "on_dask = kit.sweep")])
    # no cluster left: none after the notebook, one of two workers after re-running its cell twice, none after closing
    assert probe["after_notebook"] == [] and probe["after_close"] == []
    assert len(probe["rerun"]["workers"]) == 2 and probe["rerun"]["cluster_workers"] == 2
    assert probe["client"] == "closed" and "closed" in probe["cluster"]


def test_trading_day_notebook_runs_the_day_and_the_journal_agrees_with_the_exchange(offline):
    cells, probe = execute("05_trading_day.ipynb", offline, [
        "_probe(running=trader.running, renewals=trader.status['session_renewals'], positions=exchange_positions())",
    ])
    text = outputs_text(cells)
    assert "Traceback" not in text
    assert "09:14 before the open: outside NFO hours 09:15–15:30 IST on 2026-12-01: it is 09:14 IST" in text
    assert "11:00 session renewals: 1" in text
    assert re.search(r"12:30 connections: #1 1000 subs up .*#2 1000 subs up reconnects \d+ gaps 1000, "
                     r"#3 50 subs up .*missed ticks: 3000", text), text
    assert "15:10 square-off: intraday square-off:" in text and "NFO intraday positions were squared off" in text
    assert "15:10 positions at the exchange: {'43650': 0, '43651': 0}" in text
    assert "15:31 an order after the close: outside NFO hours" in text
    assert "journal: 8 orders, exchange: 8; every status agrees: True" in text
    assert probe["running"] is False and probe["renewals"] == 1 and probe["positions"] == {"43650": 0, "43651": 0}
    assert not [t for t in probe["threads"] if t.startswith("kit-")]      # closed: nothing of the kit left
