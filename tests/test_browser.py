"""The quickstart in a real JupyterLab, driven through Debian's chromium by Playwright.

JupyterLab serves a copy of the quickstart on 127.0.0.1 (a free port, a
random token, settings and runtime files in a temporary directory). Chromium
opens it, runs every cell, then uses the dashboard the way a person does:
Stop, Start, the mode toggle. The test reads the status line and the plotly
graphs back from the page, and saves screenshots under ``artifacts/``.

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


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the quickstart; shut down through its API."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", served)
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


def test_quickstart_in_jupyterlab_runs_and_the_dashboard_answers_clicks(lab):
    from playwright.sync_api import sync_playwright
    port, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    refused = []

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
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/lab/tree/01_quickstart.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            run_all_cells(page)

            dash = page.locator(".kit-dashboard")
            dash.wait_for(timeout=60_000)
            dash.scroll_into_view_if_needed()
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

            page.wait_for_timeout(1500)        # let a few refreshes land before the picture
            dash.screenshot(path=str(ARTIFACTS / "quickstart-dashboard.png"))
            page.screenshot(path=str(ARTIFACTS / "quickstart-page.png"))
        finally:
            browser.close()
    assert refused == [], f"the page tried to load from beyond loopback: {refused}"
