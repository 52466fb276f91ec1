"""The headless runner a server runs unattended: ``python -m kit run STRATEGY.py``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ctrl_c_after_banner

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = ROOT / "examples" / "sma_cross.py"


def _run(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kit", "run", str(STRATEGY), "--feed", "sim", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_the_headless_quickstart_runs_and_reports_without_an_error_line(tmp_path):
    proc = _run("--duration", "3", "--rate", "20", cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "ERROR" not in err and "Traceback" not in err, err    # a clean stop is not an error
    processed = int(out.split("ticks_processed=")[1].split()[0])
    assert processed > 0 and "dropped=0" in out
    # The per-mode metrics table: a row per stage of the mode that ran, with its percentiles.
    table = out.split("latency per stage per mode (microseconds):")[1].split("ticks_received=")[0]
    assert "p50_us" in table and "p99_us" in table
    rows = [line.split() for line in table.splitlines() if line.strip()]
    assert ["queue", "dispatch"] in [r[:2] for r in rows]
    assert {"strategy", "total"} <= {r[0] for r in rows}
    assert list(tmp_path.iterdir()) == []                        # nothing written where it ran


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.3])
def test_ctrl_c_at_any_moment_after_the_banner_stops_cleanly(tmp_path, delay):
    # At 0 s the trader is still starting (simulator, login, socket); a KeyboardInterrupt
    # there used to escape with a traceback, and one landing just after a lock was taken
    # could leave stop() waiting forever.
    proc = _run("--duration", "0", "--rate", "50", cwd=tmp_path)
    out, err = ctrl_c_after_banner(proc, delay)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert "latency per stage per mode" in out and "ticks_processed=" in out
