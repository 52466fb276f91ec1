"""Exporting a strategy defined in a real kernel's notebook cells to a standalone script."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, KernelSession, ctrl_c_after_banner

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
dash.refresh()              # interval=None: the message line is drawn by refresh()
print(dash.message.value)
dash.export_path.value = "out/custom.py"
assert callable(kit.export_strategy)  # the public name
dash.export_button.click()
dash.refresh()
print(dash.message.value)
dash.close(); trader.close()
""")
    assert "exported Momentum to strategies/momentum.py" in out
    # The message gives a command that runs as written: an interpreter with the kit, the absolute path.
    assert f"{(tmp_path / 'strategies' / 'momentum.py').resolve()} --feed sim --duration 10" in out
    assert "run: python strategies" not in out
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


# --------------------------------------------------------------------------- every kind of strategy a notebook holds
# One kernel and one recording for all the cases below: each case runs its cells in the same
# notebook (as a user would, one after the other), backtests the strategy there, exports it,
# and runs the script on the same recording.
BREAKOUT = '''
import collections
class Breakout(kit.Strategy):
    LOOKBACK = 20
    QTY = 65
    def __init__(self):
        self.recent, self.long = {}, set()
    def on_tick(self, tick):
        window = self.recent.setdefault(tick.token, collections.deque(maxlen=self.LOOKBACK))
        signal = None
        if len(window) == self.LOOKBACK:
            if tick.ltp > max(window) and tick.token not in self.long:
                self.long.add(tick.token)
                signal = kit.Signal.buy(tick, qty=self.QTY, reason="up")
            elif tick.ltp < min(window) and tick.token in self.long:
                self.long.discard(tick.token)
                signal = kit.Signal.sell(tick, qty=self.QTY, reason="down")
        window.append(tick.ltp)
        return signal
'''
CASES = {
    # the quickstart's subclass: no method of its own, so no code object leads to its cell
    "attribute-only subclass": ([BREAKOUT, "class FastBreakout(Breakout):\n    LOOKBACK = 8"],
                                "FastBreakout", ["class Breakout(kit.Strategy):", "    LOOKBACK = 8"]),
    # a dataclass's methods are generated (their code says <string>); a field without a default
    "dataclass helper": (['''
from dataclasses import dataclass, field
@dataclass
class Band:
    width: float
    qty: int = 65
    seen: list = field(default_factory=list)
''', '''
class BandMove(kit.Strategy):
    def __init__(self):
        self.band, self.last = Band(width=0.0004), {}
    def on_tick(self, tick):
        before, self.last[tick.token] = self.last.get(tick.token), tick.ltp
        if before and abs(tick.ltp - before) / before > self.band.width:
            return kit.Signal.buy(tick, self.band.qty) if tick.ltp > before else kit.Signal.sell(tick, self.band.qty)
'''], "BandMove", ["from dataclasses import dataclass, field", "@dataclass\nclass Band:"]),
    # built-in (C) modules: imported in the script, never copied; monotonic does not change the signals
    "built-in imports": (['''
from time import monotonic
from itertools import count
import itertools, sys
class Timed(kit.Strategy):
    def __init__(self):
        self.n, self.seen_at, self.pairs = count(1), 0.0, itertools.pairwise
    def on_tick(self, tick):
        self.seen_at = monotonic()
        if next(self.n) % 37 == 0 and sys.maxsize:
            return kit.Signal.buy(tick, 65)
'''], "Timed", ["from time import monotonic", "from itertools import count", "import itertools", "import sys"]),
    # module-level state the strategy fills: the script starts from the cell's definition, not from
    # what the notebook's run left in it
    "module-level dict": (['LAST = {}\nMOVES = collections.Counter()', '''
class Remembers(kit.Strategy):
    def on_tick(self, tick):
        before, LAST[tick.token] = LAST.get(tick.token), tick.ltp
        if before is not None and tick.ltp != before:
            MOVES[tick.token] += 1
            if MOVES[tick.token] % 25 == 0:
                return kit.Signal.sell(tick, 65)
'''], "Remembers", ["\nLAST = {}\n", "\nMOVES = collections.Counter()\n", "import collections"]),
    # helpers from other cells, nested: a function calling a function and a class
    "helpers from other cells": ([
        "def pct_move(previous, now):\n    return (now - previous) / previous if previous else 0.0",
        "class Side:\n    @staticmethod\n    def of(move):\n        return 'BUY' if move > 0 else 'SELL'",
        "def decide(previous, now, threshold=0.0005):\n    move = pct_move(previous, now)\n"
        "    return None if abs(move) < threshold else Side.of(move)",
        '''
class Nested(kit.Strategy):
    def __init__(self):
        self.last = {}
    def on_tick(self, tick):
        side = decide(self.last.get(tick.token), tick.ltp)
        self.last[tick.token] = tick.ltp
        return side and kit.Signal(tick.token, side, 65, exchange_type=tick.exchange_type)
'''], "Nested", ["def pct_move(", "class Side:", "def decide("]),
}


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """A kernel with kit imported and a recording of a simulator session (2 options, 200 ticks/s each, 3 s)."""
    home = tmp_path_factory.mktemp("notebook")
    session = KernelSession(home)
    recording = home / "rec"
    try:
        # Instrument caches and journals in the temporary directory, as the autouse fixture does for tests.
        session.run(f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
                    f"os.environ.update(SMARTAPI_KIT_CACHE={str(home / 'cache')!r}, "
                    f"SMARTAPI_KIT_DATA={str(home / 'data')!r})\nimport kit, kit.research.export")
        session.run(f"""
trader = kit.LiveTrader(kit.TraderConfig(feed="sim", name="export-cases", tokens={{2: ["43650", "43651"]}},
                                         record={str(recording)!r}, sim=kit.SimConfig(rate=200, seed=11)))
trader.strategy = kit.examples.Null()
trader.start(); trader.wait_connected()
import time; time.sleep(3)
trader.close()
""")
        yield session, home, recording
    finally:
        session.close()


def _run_script(script, *args, cwd):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k.startswith("SMARTAPI_KIT_")}}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_notebook_strategy_exports_to_the_same_signals(notebook, case, tmp_path):
    kernel, _, recording = notebook
    cells, name, expected = CASES[case]
    for cell in cells:
        kernel.run(cell)
    notebook_csv, script_csv, script = tmp_path / "nb.csv", tmp_path / "script.csv", tmp_path / "s.py"
    # The notebook runs first: state it fills must not leak into the script.
    kernel.run(f"""
r = kit.backtest({name}(), {str(recording)!r}, mode="queue", progress=False)
r.signals.to_csv({str(notebook_csv)!r}, index=False)
kit.research.export.export_strategy({name}, {str(script)!r})
""")
    text = script.read_text()
    for snippet in expected:
        assert snippet in text, f"{case}: {snippet!r} missing from\n{text}"
    out = _run_script(script, "--feed", "replay", str(recording), "--signals-out", str(script_csv), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import pandas as pd
    nb, sc = pd.read_csv(notebook_csv, dtype=str), pd.read_csv(script_csv, dtype=str)
    assert len(nb) >= 3, f"{case}: the strategy should trade on this recording"
    cols = ["token", "side", "qty", "tick_seq"]
    assert nb[cols].to_dict("records") == sc[cols].to_dict("records"), case
    ticks = out.stdout.split("ticks_processed=")[1].split()[0]
    assert out.stdout.strip().splitlines()[-1] == f"{len(nb)} signals from {ticks} ticks of the recording"


def test_the_newest_matching_definition_of_an_attribute_only_class_is_exported(notebook, tmp_path):
    kernel, _, _ = notebook
    kernel.run(BREAKOUT)
    kernel.run("class Quick(Breakout):\n    LOOKBACK = 8\nolder = Quick")
    kernel.run("class Quick(Breakout):\n    LOOKBACK = 5")
    older, newer = tmp_path / "older.py", tmp_path / "newer.py"
    out = kernel.run(f"""
kit.research.export.export_strategy(older, {str(older)!r})
kit.research.export.export_strategy(Quick, {str(newer)!r})
Quick.LOOKBACK = 6    # changed after its cell ran: no cell defines this class any more
try:
    kit.research.export.export_strategy(Quick, {str(tmp_path / 'changed.py')!r})
except kit.research.export.ExportError as exc:
    print(exc)
""")
    assert "LOOKBACK = 8" in older.read_text() and "LOOKBACK = 5" not in older.read_text()
    assert "LOOKBACK = 5" in newer.read_text() and "LOOKBACK = 8" not in newer.read_text()
    assert "cannot find the source of class Quick" in out and "Quick.X = ..." in out
    assert not (tmp_path / "changed.py").exists()
    # A base redefined after the subclass would be written as its new version: refused, saying why.
    kernel.run("class Quick(Breakout):\n    LOOKBACK = 5")
    kernel.run(BREAKOUT)
    out = kernel.run(f"""
try:
    kit.research.export.export_strategy(Quick, {str(tmp_path / 'stale.py')!r})
except kit.research.export.ExportError as exc:
    print(exc)
""")
    assert "Quick's base Breakout was redefined after Quick was; re-run the cell that defines Quick" in out


def test_a_global_the_strategy_rebinds_is_exported_as_its_definition(notebook, tmp_path):
    kernel, _, _ = notebook
    kernel.run("TICKS = 0\nclass Counts(kit.Strategy):\n    def on_tick(self, tick):\n"
               "        global TICKS\n        TICKS += 1")
    script = tmp_path / "counts.py"
    kernel.run(f"Counts().on_tick(None); Counts().on_tick(None)\n"
               f"kit.research.export.export_strategy(Counts, {str(script)!r})")
    assert "\nTICKS = 0\n" in script.read_text() and "TICKS = 2" not in script.read_text()


def test_the_script_says_which_python_runs_it_and_how(notebook, tmp_path):
    kernel, _, _ = notebook
    kernel.run("class Never(kit.Strategy):\n    def on_tick(self, tick):\n        return None")
    script = tmp_path / "never.py"
    python = kernel.run(f"kit.research.export.export_strategy(Never, {str(script)!r}); print(sys.executable)").strip()
    top = script.read_text().split('"""')[1]
    command = f"{python} {script.resolve()}"
    assert f"Run it with a Python that has the kit package installed, such as the one\nthat exported it ({python})" in top
    assert f"    {command} --feed sim --duration 10\n" in top
    # The command written there works, and --help says the same.
    out = subprocess.run([*command.split(), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"{command} --feed sim --duration 10" in out.stdout and "--rate RATE" in out.stdout
    assert "Defaults: --feed sim --mode queue --rate 10" in out.stdout
    # A Python without the kit says which one to use, instead of a bare ModuleNotFoundError.
    bare = subprocess.run(["/usr/bin/python3", "-I", str(script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert bare.returncode != 0 and "Traceback" not in bare.stderr
    assert f"this script needs the kit package. Run it with {python}" in bare.stderr


def test_a_default_run_signals_and_an_empty_run_says_what_to_try(notebook, tmp_path):
    """At the defaults, a short run of the quickstart's strategy trades; a run with no signal says so."""
    kernel, _, _ = notebook
    kernel.run(BREAKOUT)
    kernel.run("class FastBreakout(Breakout):\n    LOOKBACK = 8")
    kernel.run("class Never(kit.Strategy):\n    def on_tick(self, tick):\n        return None")
    fast, never = tmp_path / "fast_breakout.py", tmp_path / "never.py"
    kernel.run(f"kit.research.export.export_strategy(FastBreakout, {str(fast)!r})\n"
               f"kit.research.export.export_strategy(Never, {str(never)!r})")
    out = _run_script(fast, "--feed", "sim", "--duration", "3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert int(last.split()[0]) > 0 and "signals from" in last and last.endswith(" ticks in 3 s"), out.stdout
    out = _run_script(never, "--feed", "sim", "--duration", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("0 signals from ") and last.endswith(
        "Never did not trigger; try a longer --duration (this run: 1 s) "
        "or a higher --rate (this run: 10 ticks/s per instrument)"), out.stdout
