"""Exporting a strategy defined in a real kernel's notebook cells to a standalone script."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, ctrl_c_after_banner

STRATEGY_CELLS = [
    # cell 1: imports and a constant
    "import kit\nimport math as m\nTHRESHOLD = 0.0005\nQTY = 65",
    # cell 2: a helper the strategy uses, which uses another constant
    "def pct_move(previous, now):\n    return (now - previous) / previous if previous else 0.0",
    # cell 3: the strategy
    '''
class Momentum(kit.Strategy):
    """Buys a jump, sells a drop."""
    def __init__(self):
        self.last = {}

    def on_tick(self, tick):
        previous = self.last.get(tick.token)
        self.last[tick.token] = tick.ltp
        move = pct_move(previous, tick.ltp)
        if m.fabs(move) < THRESHOLD:
            return None
        side = [s for s in ("BUY", "SELL")][0 if move > 0 else 1]
        return kit.Signal(tick.token, side, QTY, exchange_type=tick.exchange_type)
''',
]


def test_export_writes_a_script_with_its_helpers_and_constants(kernel, tmp_path):
    for cell in STRATEGY_CELLS:
        kernel.run(cell)
    script = tmp_path / "strategies" / "momentum.py"
    kernel.run(f"import kit.research.export; print(kit.research.export.export_strategy(Momentum, {str(script)!r}))")
    text = script.read_text()
    assert "class Momentum(kit.Strategy):" in text
    assert "def pct_move(previous, now):" in text
    assert "THRESHOLD = 0.0005" in text and "QTY = 65" in text
    assert "import math as m" in text and "import kit" in text
    assert text.index("def pct_move") < text.index("class Momentum")
    # runs headless on the simulator, consumer on the main thread, prints the summary
    out = subprocess.run([sys.executable, str(script), "--feed", "sim", "--duration", "3", "--rate", "50"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "latency per stage per mode" in out.stdout and "queue" in out.stdout


def test_the_newest_definition_of_a_redefined_class_is_exported(kernel, tmp_path):
    kernel.run("import kit\nclass S(kit.Strategy):\n    def on_tick(self, tick):\n        return 'old'")
    kernel.run("class S(kit.Strategy):\n    def on_tick(self, tick):\n        return None  # new")
    script = tmp_path / "s.py"
    kernel.run(f"import kit.research.export; kit.research.export.export_strategy(S, {str(script)!r})")
    assert "# new" in script.read_text() and "'old'" not in script.read_text()


def test_export_names_what_it_cannot_resolve(kernel, tmp_path):
    kernel.run("import kit, kit.research.export\nglobals()['SEEN'] = set()")
    kernel.run("class UsesState(kit.Strategy):\n    def on_tick(self, tick):\n        return SEEN.add(tick.token)")
    kernel.run("class UsesMissing(kit.Strategy):\n    def on_tick(self, tick):\n        return never_run_helper(tick)")
    kernel.run("API_KEY = 'sk-live-0123456789'\n"
               "class UsesSecret(kit.Strategy):\n    def on_tick(self, tick):\n        return API_KEY and None")
    target = tmp_path / "x.py"
    out = kernel.run(f"""
for cls in (UsesState, UsesMissing, UsesSecret):
    try:
        kit.research.export.export_strategy(cls, {str(target)!r})
    except kit.research.export.ExportError as exc:
        print(cls.__name__, '->', exc)
""")
    # State whose definition is in no cell cannot be exported faithfully: say what to do.
    assert "UsesState -> UsesState uses 'SEEN', module-level state (a set) whose definition is in no cell" in out
    assert "define SEEN = set() in a cell and run it, or build it in the strategy's __init__" in out
    assert "UsesMissing -> UsesMissing uses 'never_run_helper', which is not defined" in out
    assert "UsesSecret -> refusing to write 'API_KEY'" in out
    assert not target.exists()
    assert "sk-live" not in out.split("UsesSecret ->")[1]


def test_exported_script_reproduces_the_notebook_signals_on_a_recording(kernel, tmp_path):
    """The notebook strategy and its exported script, on the same recorded ticks, in each mode."""
    recording = tmp_path / "rec"
    for cell in STRATEGY_CELLS:
        kernel.run(cell)
    # Record a real simulator session from the kernel (the strategy runs live while it records).
    kernel.run(f"""
import time
trader = kit.LiveTrader(kit.TraderConfig(feed="sim", name="export-rec", tokens={{2: ["43650", "43651"]}},
                                         record={str(recording)!r}, sim=kit.SimConfig(rate=200, seed=11)))
trader.strategy = Momentum()
trader.start(); time.sleep(3); trader.close()
print("recorded", trader.ticks_processed)
""")
    script = tmp_path / "momentum.py"
    kernel.run(f"import kit.research.export; kit.research.export.export_strategy(Momentum, {str(script)!r})")
    for mode in ("queue", "callback", "poll"):
        notebook_csv, script_csv = tmp_path / f"nb-{mode}.csv", tmp_path / f"script-{mode}.csv"
        kernel.run(f"""
r = kit.backtest(Momentum(), {str(recording)!r}, mode={mode!r}, progress=False)
r.signals.to_csv({str(notebook_csv)!r}, index=False)
print(len(r.signals))
""")
        out = subprocess.run([sys.executable, str(script), "--feed", "replay", str(recording), "--mode", mode,
                              "--signals-out", str(script_csv)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        import pandas as pd
        nb, sc = pd.read_csv(notebook_csv, dtype=str), pd.read_csv(script_csv, dtype=str)
        assert len(nb) > 10, "the strategy should trade on this recording"
        cols = ["token", "side", "qty", "tick_seq"]
        assert nb[cols].to_dict("records") == sc[cols].to_dict("records"), mode


def test_the_dashboard_export_button_writes_the_running_strategy(kernel, tmp_path):
    for cell in STRATEGY_CELLS:
        kernel.run(cell)
    out = kernel.run("""
trader = kit.LiveTrader(kit.TraderConfig(feed="sim", name="export-button"))
trader.strategy = Momentum()
dash = kit.dashboard(trader, interval=None)
dash.export_button.click()
print(dash.message.value)
dash.export_path.value = "out/custom.py"
assert callable(kit.export_strategy)  # the public name
dash.export_button.click()
print(dash.message.value)
dash.close(); trader.close()
""")
    assert "exported Momentum to strategies/momentum.py" in out
    assert "class Momentum(kit.Strategy):" in (tmp_path / "strategies" / "momentum.py").read_text()
    assert (tmp_path / "out" / "custom.py").exists()


def test_ctrl_c_stops_the_exported_script_cleanly_with_the_summary(kernel, tmp_path):
    for cell in STRATEGY_CELLS:
        kernel.run(cell)
    script = tmp_path / "momentum.py"
    kernel.run(f"import kit.research.export; kit.research.export.export_strategy(Momentum, {str(script)!r})")
    proc = subprocess.Popen([sys.executable, str(script), "--feed", "sim", "--duration", "0", "--rate", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    out, err = ctrl_c_after_banner(proc, 3)      # 3 s: let ticks flow through the main-thread consumer
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "latency per stage per mode" in out and "ticks_processed=" in out
    processed = int(out.split("ticks_processed=")[1].split()[0])
    assert processed > 0
