"""Shared fixtures: a running simulator, and a guard that nothing writes into the working directory."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    """No test may reach beyond this machine."""
    if isinstance(address, tuple) and self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ConnectionRefusedError(f"test tried to reach {address!r}: only loopback is allowed")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run the test from an empty directory and fail it if anything appears there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [], f"the test wrote into the working directory: {left}"


@pytest.fixture
def sim():
    from kit.sim.server import Simulator
    s = Simulator(rate=0).start()
    yield s
    s.stop()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def ctrl_c_after_banner(proc, delay: float) -> tuple[str, str]:
    """Wait for a headless run's "(Ctrl-C stops)" banner, SIGINT it ``delay`` s later; its (stdout, stderr).

    The process is killed if it has not ended within a minute.
    """
    import signal
    import time
    try:
        assert "Ctrl-C stops" in proc.stdout.readline()
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


class KernelSession:
    """A real IPython kernel (the one a notebook gets), driven cell by cell."""

    def __init__(self, cwd):
        from jupyter_client.manager import start_new_kernel
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute one cell; return what it printed; raise AssertionError with the traceback on error."""
        out, error = [], []

        def collect(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                error.append("\n".join(content["traceback"]))

        self.kc.execute_interactive(code, output_hook=collect, timeout=timeout)
        if error:
            raise AssertionError("cell failed:\n" + "\n".join(error))
        return "".join(out)

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path):
    session = KernelSession(tmp_path)
    session.run(f"import sys; sys.path.insert(0, {str(ROOT)!r})")
    yield session
    session.close()


@pytest.fixture(autouse=True)
def _kit_dirs_in_tmp(tmp_path_factory, monkeypatch):
    """Instrument caches and journals go to a per-test temporary directory, never to ~ or the cwd."""
    base = tmp_path_factory.mktemp("kit-dirs")
    monkeypatch.setenv("SMARTAPI_KIT_CACHE", str(base / "cache"))
    monkeypatch.setenv("SMARTAPI_KIT_DATA", str(base / "data"))
    yield base
