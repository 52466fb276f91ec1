"""The notebooks in a real JupyterLab, driven through Debian's chromium by Playwright.

One JupyterLab serves every test of this module on 127.0.0.1 (a free port, a
random token, settings and runtime files in a temporary directory): a copy
of the quickstart, and a notebook written here that opens the dashboard of a
trader already running (as notebook 03 does). Chromium runs every cell, then
uses the dashboard the way a person does: Stop, Start, the mode toggle,
Flatten, Resume, and places a stop order from the kernel. The tests read the
status line (the net P&L among it), the message line, the strategy's
traceback, a stop's line label and the plotly graphs back from the page, ask the kernel
for the truth behind them (positions, halts), and save screenshots under
``artifacts/``; the quickstart's is also the README's ``docs/img/dashboard.png``.

Chromium is never downloaded: the test uses ``/usr/bin/chromium``
(``scripts/ensure-chromium.sh`` installs it in CI) and is skipped only when
that file is missing. The page may load nothing from beyond 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"
README_SHOT = ROOT / "docs" / "img" / "dashboard.png"    # the README's picture, taken by the quickstart test
README_SHOT_MAX_BYTES = 200_000
CHECKS = "dashboard_checks.ipynb"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing (scripts/ensure-chromium.sh installs Debian's chromium)"),
]

# Settings that keep JupyterLab from reaching out (news, update checks) and keep every cell in the DOM.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}?token={token}", method=method,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=5) as reply:
        body = reply.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab server on 127.0.0.1 for the module, serving a copy of the quickstart and the
    checks notebook; shut down through its API."""
    tmp_path = tmp_path_factory.mktemp("lab")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", served)
    write_checks_notebook(served / CHECKS)
    settings = tmp_path / "settings"
    for rel, values in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    for var in ("SMARTAPI_API_KEY", "SMARTAPI_CLIENT_CODE", "SMARTAPI_PIN", "SMARTAPI_TOTP_SECRET"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=served)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                api(port, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text())
                time.sleep(0.5)
        yield port, token
    finally:
        try:
            api(port, token, "/api/shutdown", method="POST")
            server.wait(30)
        except Exception:
            server.kill()
            server.wait(10)
        log.close()


def ticks_shown(page) -> int:
    text = page.locator(".kit-dashboard .kit-status .kit-ticks").inner_text(timeout=10_000)
    return int(text.replace(",", ""))


# The FigureWidget's element is the plotly graph div itself (plotly.js keeps the traces in gd.data).
GRAPH = """(cls) => {
    const el = document.querySelector(`.kit-dashboard .${cls}`);
    return el && (el.matches('.js-plotly-plot') ? el : el.querySelector('.js-plotly-plot'));
}"""


def graph_points(page, css_class: str) -> list[int]:
    """The number of x values of every trace in one of the dashboard's plotly graphs, as the page holds them."""
    return page.evaluate(f"""(cls) => {{
        const gd = ({GRAPH})(cls);
        return gd && gd.data ? gd.data.map(t => (t.x ? t.x.length : 0)) : null;
    }}""", css_class)


def latency_bars(page) -> dict:
    """Per mode, how many of the latency chart's stage bars hold a value."""
    return page.evaluate(f"""() => {{
        const gd = ({GRAPH})('kit-latency');
        if (!gd || !gd.data) return null;
        return Object.fromEntries(gd.data.map(t => [t.name, Array.from(t.y || []).filter(v => v !== null && v > 0).length]));
    }}""")


def poll(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_all_cells(page, timeout: float = 180) -> None:
    """Run All, retried: right after the page loads the kernel may not take it yet."""
    prompts = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"
    n_code = page.locator(prompts).count()
    assert n_code > 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll(lambda: page.evaluate("""() => {
                 const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                 return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                           && w.sessionContext.session.kernel.status === 'idle');
             }"""), 60, "an idle kernel")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        started = time.monotonic()
        while time.monotonic() - started < 60:
            texts = page.locator(prompts).all_inner_texts()
            if all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts):
                return
            time.sleep(0.5)
    raise AssertionError(f"not every cell ran: {page.locator(prompts).all_inner_texts()}")



# ---------------------------------------------------------------------- the checks notebook
CHECKS_CELLS = [
    """import time

import kit


class BuyEveryTenth(kit.Strategy):
    \"\"\"Buys one lot every tenth tick: a position that grows while trading is allowed.\"\"\"

    def __init__(self):
        self.n = 0

    def on_tick(self, tick):
        self.n += 1
        return kit.Signal.buy(tick, qty=65, reason="accumulate") if self.n % 10 == 0 else None


def price_model(tick):
    raise ValueError(f"no price model for {tick.token}")


class Raises(kit.Strategy):
    def on_tick(self, tick):
        return price_model(tick)


trader = kit.LiveTrader(kit.TraderConfig(feed="sim", sim=kit.SimConfig(rate=20), tokens={2: ["43650"]},
                                         name="checks"))
trader.strategy = BuyEveryTenth()
trader.start()
trader.wait_connected(30)
deadline = time.monotonic() + 60
while trader.metrics.count("queue") < 40 and time.monotonic() < deadline:   # queue-mode ticks before the dashboard
    time.sleep(0.05)
trader.metrics.count("queue")""",
    "dash = kit.dashboard(trader)   # created after start, as notebook 03 does\ndash",
]


def write_checks_notebook(path: Path) -> None:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CHECKS_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def kernel_eval(page, expr: str) -> str:
    """``expr`` evaluated in the notebook's kernel, as its repr: the truth behind what the page shows."""
    return page.evaluate("""async (expr) => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        const reply = await kernel.requestExecute({code: '', silent: true, store_history: false,
                                                   user_expressions: {r: expr}}).done;
        const r = reply.content.user_expressions.r;
        return r.status === 'ok' ? r.data['text/plain'] : `ERROR ${r.ename}: ${r.evalue}`;
    }""", expr)


def kernel_run(page, code: str) -> None:
    """Run ``code`` in the notebook's kernel, as a cell would, and wait for it to finish."""
    status = page.evaluate("""async (code) => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        const reply = await kernel.requestExecute({code}).done;
        return reply.content.status + ' ' + (reply.content.evalue || '');
    }""", code)
    assert status.startswith("ok"), status


def shut_down_kernel(page) -> None:
    """Free the CPU for the next test: its trader and simulator stop with the kernel."""
    try:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    except Exception as exc:      # the test's own failure matters more than this
        print(f"could not shut the kernel down: {exc}")


def latency_traces(page) -> dict:
    """Per mode of the latency chart: the orientation it was given and the one plotly laid it out
    with, its x and y lengths, its drawn bars and the widest of them as a share of the plot's width
    (a ghost bar spans the plot)."""
    return page.evaluate(f"""() => {{
        const gd = ({GRAPH})('kit-latency');
        if (!gd || !gd._fullData || !gd._fullLayout) return null;
        const plotWidth = gd._fullLayout._size.w;
        const drawn = {{}};     // only the traces with data get a layer; d3 binds each to its trace
        for (const layer of gd.querySelectorAll('.barlayer .trace')) {{
            const name = layer.__data__ && layer.__data__[0] && layer.__data__[0].trace.name;
            drawn[name] = Array.from(layer.querySelectorAll('.point path')).map(p => p.getBBox())
                               .filter(b => b.width > 0 && b.height > 0);
        }}
        return Object.fromEntries(gd.data.map((t, i) => {{
            const bars = drawn[t.name] || [];
            return [t.name, {{orientation: t.orientation, laid_out: gd._fullData[i].orientation || null,
                              x: (t.x || []).length, y: (t.y || []).length, bars: bars.length,
                              widest: bars.length ? Math.max(...bars.map(b => b.width)) / plotWidth : 0}}];
        }}));
    }}""")


def save_readme_shot(dash) -> int:
    """The dashboard, as the README shows it: a palette PNG under README_SHOT_MAX_BYTES."""
    from PIL import Image
    raw = ARTIFACTS / "dashboard-raw.png"
    dash.screenshot(path=str(raw))
    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(raw).convert("RGB")
    for colours in (256, 128, 64):
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(README_SHOT, optimize=True)
        if README_SHOT.stat().st_size <= README_SHOT_MAX_BYTES:
            break
    return README_SHOT.stat().st_size


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, launched once for the module; every request beyond loopback is refused and listed."""
    from playwright.sync_api import sync_playwright
    refused: list[str] = []

    def loopback_only(route):
        host = route.request.url.split("/")[2].split(":")[0] if "://" in route.request.url else ""
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", loopback_only)
            yield context, refused
        finally:
            browser.close()


def open_notebook(chromium, lab, name: str):
    context, _ = chromium
    port, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}?reset&token={token}")   # reset: no tab restored from the last test
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
    run_all_cells(page)
    dash = page.locator(".kit-dashboard")
    dash.wait_for(timeout=60_000)
    dash.scroll_into_view_if_needed()
    return page, dash


def test_quickstart_in_jupyterlab_runs_and_the_dashboard_answers_clicks(lab, chromium):
    page, dash = open_notebook(chromium, lab, "01_quickstart.ipynb")
    try:
        status = dash.locator(".kit-status")
        poll(lambda: ticks_shown(page) > 0, 30, "the status line to count ticks")

        # Stop, then Start again, with the dashboard's own buttons
        dash.get_by_role("button", name="Stop").click()
        poll(lambda: "stopped" in status.inner_text(), 30, "the status line to say stopped")
        stopped_at = ticks_shown(page)
        clicked = time.monotonic()
        dash.get_by_role("button", name="Start").click()
        poll(lambda: "running" in status.inner_text() and ticks_shown(page) > stopped_at, 30,
             "ticks counted again after Start")
        print(f"Start click to ticks counted on the page: {time.monotonic() - clicked:.2f} s")

        # the mode toggle reaches the trader, and the latency chart fills the new mode's bars
        clicked = time.monotonic()
        dash.locator(".widget-toggle-buttons").get_by_role("button", name="callback").click()
        poll(lambda: "mode callback" in status.inner_text(), 30, "the status line to show callback mode")
        print(f"mode click to status line: {time.monotonic() - clicked:.2f} s")
        poll(lambda: (latency_bars(page) or {}).get("callback", 0) >= 3, 30, "callback latency bars")

        price = poll(lambda: (p := graph_points(page, "kit-price")) and p[0] > 10 and p, 30,
                     "price points in the chart")
        throughput = poll(lambda: (p := graph_points(page, "kit-throughput")) and p[0] > 2 and p, 30,
                          "throughput points")
        bars = latency_bars(page)
        assert bars["queue"] >= 3 and bars["callback"] >= 3, bars
        print(f"price chart points per trace {price}, throughput {throughput}, latency bars {bars}")
        assert ticks_shown(page) > stopped_at
        title = page.evaluate(f"() => ({GRAPH})('kit-price').layout.title.text")
        assert not title.split()[0].isdigit(), f"the price chart names its instrument by token: {title}"

        # The README's picture: with a signal or two on the price chart when the breakout has fired.
        try:
            poll(lambda: sum((graph_points(page, "kit-price") or [0])[1:3]) >= 2, 45, "signals on the price chart")
        except AssertionError:
            print("no signal on the charted instrument yet: the picture shows the price alone")
        size = save_readme_shot(dash)
        print(f"{README_SHOT.relative_to(ROOT)}: {size:,} bytes")
        assert size <= README_SHOT_MAX_BYTES
        page.screenshot(path=str(ARTIFACTS / "quickstart-page.png"))
    finally:
        shut_down_kernel(page)
        page.close()
    assert chromium[1] == [], f"the page tried to load from beyond loopback: {chromium[1]}"


def test_a_dashboard_opened_on_a_running_trader_flattens_resumes_and_shows_strategy_errors(lab, chromium):
    page, dash = open_notebook(chromium, lab, CHECKS)
    try:
        status = dash.locator(".kit-status")
        message = dash.locator(".kit-message")
        poll(lambda: ticks_shown(page) > 0, 30, "the status line to count ticks")

        # Only queue mode has handled ticks: its bars stand upright, the other modes draw nothing.
        traces = poll(lambda: (t := latency_traces(page)) and t["queue"]["bars"] >= 3 and t, 30, "queue latency bars")
        print(f"latency chart, dashboard created after start: {traces}")
        assert all(t["orientation"] == "v" for t in traces.values()), traces
        assert traces["queue"]["laid_out"] == "v", traces
        assert traces["queue"]["x"] == traces["queue"]["y"] == traces["queue"]["bars"] >= 3, traces
        assert traces["queue"]["widest"] < 0.4, traces        # one bar per stage, not a band across the plot
        for mode in ("poll", "callback"):
            assert traces[mode]["x"] == traces[mode]["y"] == traces[mode]["bars"] == 0, traces
        dash.locator(".widget-toggle-buttons").get_by_role("button", name="callback").click()
        traces = poll(lambda: (t := latency_traces(page)) and t["callback"]["bars"] >= 3 and t, 30,
                      "callback latency bars")
        assert traces["callback"]["laid_out"] == "v" and traces["callback"]["widest"] < 0.4, traces
        assert traces["poll"]["bars"] == 0, traces

        # Flatten: the position the strategy built is closed, and trading stays halted.
        position = 'trader.broker.position("43650").qty'
        poll(lambda: int(kernel_eval(page, position)) > 0, 30, "a position opened by the strategy")
        assert dash.get_by_role("button", name="Resume").is_disabled()
        dash.get_by_role("button", name="Flatten").click()
        poll(lambda: "closing order(s) sent" in message.inner_text(), 30, "Flatten's report in the message line")
        poll(lambda: kernel_eval(page, position) == "0", 30, "the position flat after Flatten")
        poll(lambda: "TRADING HALTED" in status.inner_text(), 30, "the status line to show the halt")
        assert kernel_eval(page, "trader.risk.halted") == "True"

        # Resume reopens the gate: the status line says so, and the strategy trades again.
        resume = dash.get_by_role("button", name="Resume")
        poll(lambda: resume.is_enabled(), 30, "Resume enabled while halted")
        resume.click()
        poll(lambda: "TRADING HALTED" not in status.inner_text() and "resumed" in message.inner_text(), 30,
             "the halt lifted on the page")
        poll(lambda: int(kernel_eval(page, position)) > 0, 30, "a new position after Resume")

        # An open stop is a labelled line on the price chart; the status line shows the net P&L after charges.
        kernel_run(page, "last = trader.broker.last_price('43650', 2)\n"
                         "stop, why = trader.submit(kit.Signal('43650', 'SELL', 65, 'STOPLOSS_MARKET', None, 2, "
                         "'a stop on the chart', trigger_price=round(round(last * 0.85 / 0.05) * 0.05, 2)))\n"
                         "assert stop is not None and stop.status == 'OPEN', why")
        label = kernel_eval(page, "f'SL SELL 65 @{stop.trigger_price:,.2f}'").strip("'")
        poll(lambda: label in (page.evaluate(f"() => (({GRAPH})('kit-price').layout.annotations || [])"
                                             ".map(a => a.text)") or []), 30,
             f"the stop's line labelled {label} in the price chart's layout")
        drawn = page.locator(".kit-dashboard .kit-price .annotation-text").all_text_contents()
        assert label in drawn, drawn                                                     # and drawn on the page
        net = dash.locator(".kit-status .kit-net").inner_text()
        assert re.fullmatch(r"-?₹[\d,]+\.\d\d", net), net
        assert "net P&L" in status.inner_text() and "charges" in status.inner_text()
        assert kernel_eval(page, "trader.broker.pnl()['charges'] > 0") == "True"     # Flatten's fills were charged
        dash.screenshot(path=str(ARTIFACTS / "checks-after-resume.png"))

        # A strategy that raises on the tick thread: its traceback in the page, then the error budget's halt.
        kernel_run(page, "trader.strategy = Raises()")
        error = dash.locator(".kit-error")
        error.wait_for(timeout=30_000)
        error.get_by_text("strategy error #").first.click()      # unfold it, as a person would
        trace = dash.locator(".kit-traceback")
        poll(lambda: trace.is_visible() and "price_model" in trace.inner_text(), 30, "the traceback in the page")
        assert "Traceback" in trace.inner_text() and "ValueError: no price model for 43650" in trace.inner_text()
        poll(lambda: "strategy errors in" in status.inner_text() and "TRADING HALTED" in status.inner_text(), 30,
             "the error budget's halt on the status line")
        assert kernel_eval(page, "bool(trader.status['strategy_halt'])") == "True"
        assert dash.get_by_role("button", name="Resume").is_enabled()
        dash.screenshot(path=str(ARTIFACTS / "checks-strategy-error.png"))
    finally:
        shut_down_kernel(page)
        page.close()
    assert chromium[1] == [], f"the page tried to load from beyond loopback: {chromium[1]}"
