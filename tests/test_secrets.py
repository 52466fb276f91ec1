"""Secrets never leave: not in an exception, a traceback, a log line, a command's output or an exported script.

The canaries are distinctive random strings, so a hit can only be a leak. The
failure is real: the simulator's REST server answers the login and then stops
listening, so ``generateSession``'s own ``getProfile`` (the refresh token in
its URL) fails with a refused connection.
"""
from __future__ import annotations

import datetime
import importlib.util
import logging
import secrets
import subprocess
import sys
import textwrap
import traceback
import uuid
import warnings

import pyotp
import pytest

from conftest import ROOT
from kit.angel import sdk as sdk_adapter
from kit.research.export import ExportError, export_strategy
from kit.angel.session import Credentials, login
from kit.sim.rest import LOGIN_PATH, RestCredentials, RestSimulator


def _canary_credentials() -> RestCredentials:
    tag = secrets.token_hex(6)
    return RestCredentials(api_key=f"CANARY-KEY-{tag}", pin=str(1000 + secrets.randbelow(9000)),
                           jwt=f"CANARY.JWT.{tag}", refresh_token=f"CANARY-REFRESH-{tag}",
                           feed_token=f"CANARY-FEED-{tag}")


def _secret_values(c: RestCredentials) -> dict[str, str]:
    return {"refresh token": c.refresh_token, "JWT": c.jwt, "feed token": c.feed_token,
            "API key": c.api_key, "TOTP secret": c.totp_secret}


def _assert_clean(text: str, c: RestCredentials, where: str) -> None:
    for what, value in _secret_values(c).items():
        assert value not in text, f"the {what} is in {where}"


@pytest.fixture
def rest_down_after_login():
    """A REST simulator with canary credentials that stops listening right after answering the login."""
    rest = RestSimulator(_canary_credentials()).start()
    rest.go_down_after(LOGIN_PATH)
    yield rest
    rest.stop()


def _full_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))     # chained causes and contexts included


def test_control_the_sdks_own_exception_carries_the_refresh_token(rest_down_after_login):
    """Without the adapter, getProfile's refused connection names its URL, refresh token and all."""
    rest = rest_down_after_login
    c = rest.credentials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = sdk_adapter.SmartConnect(api_key=c.api_key, root=rest.url, timeout=5)
    with pytest.raises(Exception) as info:
        client.generateSession(c.client_code, c.pin, pyotp.TOTP(c.totp_secret).now())
    assert c.refresh_token in _full_traceback(info.value)


def test_a_failed_getprofile_leaks_nothing(rest_down_after_login, caplog, capfd):
    rest = rest_down_after_login
    c = rest.credentials
    with caplog.at_level(logging.DEBUG):                 # every kit logger, the SDK's and urllib3's
        with pytest.raises(sdk_adapter.SmartApiError) as info:
            login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=rest.url)
    exc = info.value
    assert "getProfile failed: ConnectionError" in str(exc) and "Connection refused" in str(exc)
    assert exc.kind == "ConnectionError"
    assert exc.__cause__ is None and exc.__context__ is None     # the original is not kept anywhere
    _assert_clean(str(exc) + repr(exc) + _full_traceback(exc), c, "the exception")
    assert "getProfile" in caplog.text                   # the failure was logged...
    _assert_clean(caplog.text, c, "the log")             # ...without a secret
    captured = capfd.readouterr()
    _assert_clean(captured.out + captured.err, c, "stdout/stderr")


def test_every_kit_logger_is_redacted_including_tracebacks(caplog):
    canary = "CANARY-LOG-" + secrets.token_hex(8)
    sdk_adapter.register_secret(canary)
    on_kit = []

    class Collect(logging.Handler):
        def emit(self, record):
            on_kit.append(self.format(record))

    user_handler = Collect()                    # a handler a user puts on "kit" after importing it
    logging.getLogger("kit").addHandler(user_handler)
    names = ["kit.feed.live", "kit.engine.trader", "kit.store.journal", "kit.broker.live", f"kit.anything.{uuid.uuid4().hex}"]
    try:
        with caplog.at_level(logging.DEBUG):
            for name in names:
                logger = logging.getLogger(name)
                logger.debug("debug with the token %s", canary)
                try:
                    raise RuntimeError(f"failed with url /x?token={canary}")
                except RuntimeError:
                    logger.exception("it failed")
            logging.getLogger("elsewhere").warning("control %s", canary)    # not a kit logger
    finally:
        logging.getLogger("kit").removeHandler(user_handler)
    kit_records = [r for r in caplog.records if r.name.startswith("kit.")]
    assert sorted({r.name for r in kit_records}) == sorted(names)
    kit_text = "\n".join(logging.Formatter().format(r) for r in kit_records)
    assert canary not in kit_text and "\n".join(on_kit).count(canary) == 0
    assert kit_text.count("debug with the token ***") == len(names)
    assert kit_text.count("RuntimeError: failed with url /x?***") == len(names)   # the traceback, redacted
    assert canary in caplog.text        # control: the capture does see an unredacted record


def test_a_kit_log_line_still_reaches_stderr_without_logging_configured():
    """The redacting handler on "kit" must not swallow what Python prints when nothing is configured."""
    code = textwrap.dedent(f"""
        import logging, sys
        sys.path.insert(0, {str(ROOT)!r})
        import kit.angel.sdk as a
        a.register_secret("CANARY-STDERR-0123456789")
        logging.getLogger("kit.feed.live").warning("token %s", "CANARY-STDERR-0123456789")
        logging.getLogger("kit.feed.live").info("not shown: below WARNING")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip() == "token ***", out.stderr


def test_python_m_kit_run_prints_no_secret_when_getprofile_fails(rest_down_after_login, tmp_path):
    rest = rest_down_after_login
    c = rest.credentials
    strategy = tmp_path / "quiet.py"
    strategy.write_text("import kit\n\nclass Quiet(kit.Strategy):\n    def on_tick(self, tick):\n        return None\n")
    env = {**c.env(), "SMARTAPI_ROOT_URL": rest.url, "SMARTAPI_FEED_URL": "ws://127.0.0.1:9/smart-stream",
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "kit", "run", str(strategy), "--feed", "smartapi",
                          "--tokens", "2:43650", "--duration", "1", "--verbose"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode != 0
    assert "getProfile failed" in out.stderr, out.stderr      # the failure is told...
    _assert_clean(out.stdout + out.stderr, c, "the output of python -m kit run")   # ...without a secret
    assert rest.requests.get(LOGIN_PATH) == 1


# ---------------------------------------------------------------------------- export
def _module(tmp_path, source: str):
    """Import ``source`` as a module from a file, as a strategy file or notebook namespace would hold it."""
    name = f"secret_strategy_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _export(module, tmp_path):
    target = tmp_path / "out" / "exported.py"
    export_strategy(module.S, target, namespace=vars(module))
    return target


def test_an_export_after_the_failed_login_holds_no_token(rest_down_after_login, tmp_path):
    rest = rest_down_after_login
    c = rest.credentials
    with pytest.raises(sdk_adapter.SmartApiError):
        login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=rest.url)
    plain = _module(tmp_path, """
        import kit
        LIMIT = 3
        class S(kit.Strategy):
            def on_tick(self, tick):
                return None if tick.ltp < LIMIT else None
    """)
    _assert_clean(_export(plain, tmp_path).read_text(), c, "the exported script")
    # A token the session received, kept under a name that says nothing: refused all the same.
    holder = _module(tmp_path, f"""
        import kit
        SESSION = {c.refresh_token!r}
        class S(kit.Strategy):
            def on_tick(self, tick):
                return SESSION and None
    """)
    with pytest.raises(ExportError) as info:
        _export(holder, tmp_path)
    assert "'SESSION'" in str(info.value) and "a credential the kit registered" in str(info.value)
    _assert_clean(str(info.value), c, "the export error")


API_KEY_AS_MODULE_CONSTANT = """
    import os, kit
    K = os.environ["SMARTAPI_API_KEY"]
    class S(kit.Strategy):
        def on_tick(self, tick):
            return K and None
"""
API_KEY_AS_CLASS_ATTRIBUTE = """
    import os, kit
    K = os.environ["SMARTAPI_API_KEY"]
    class S(kit.Strategy):
        key = K
        def on_tick(self, tick):
            return self.key and None
"""
API_KEY_PASTED_INTO_THE_CLASS = """
    import kit
    class S(kit.Strategy):
        key = {value!r}
        def on_tick(self, tick):
            return self.key and None
"""


@pytest.mark.parametrize("source", [API_KEY_AS_MODULE_CONSTANT, API_KEY_AS_CLASS_ATTRIBUTE,
                                    API_KEY_PASTED_INTO_THE_CLASS],
                         ids=["module-constant", "class-attribute", "pasted-literal"])
def test_an_api_key_read_from_the_environment_is_refused_by_name(tmp_path, monkeypatch, source):
    value = "CANARY-ENV-KEY-" + secrets.token_hex(8)     # never registered: no login happened
    monkeypatch.setenv("SMARTAPI_API_KEY", value)
    module = _module(tmp_path, source.format(value=value))
    with pytest.raises(ExportError) as info:
        _export(module, tmp_path)
    assert "SMARTAPI_API_KEY" in str(info.value) and value not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_strategy_that_reads_the_environment_at_run_time_exports_without_the_value(tmp_path, monkeypatch):
    value = "CANARY-ENV-KEY-" + secrets.token_hex(8)
    monkeypatch.setenv("SMARTAPI_API_KEY", value)
    module = _module(tmp_path, """
        import os, kit
        class S(kit.Strategy):
            key = os.environ["SMARTAPI_API_KEY"]      # read again where the script runs
            def on_tick(self, tick):
                return self.key and None
    """)
    text = _export(module, tmp_path).read_text()
    assert 'os.environ["SMARTAPI_API_KEY"]' in text and value not in text


def test_a_short_secret_is_refused_as_a_value_not_as_digits_elsewhere(tmp_path, monkeypatch):
    year = str(datetime.date.today().year)       # the script's header carries today's date
    monkeypatch.setenv("SMARTAPI_PIN", year)
    module = _module(tmp_path, f"""
        import kit
        QTY = {year}
        class S(kit.Strategy):
            def on_tick(self, tick):
                return QTY and None
    """)
    assert year in _export(module, tmp_path).read_text()     # a number and a date are no PIN
    module = _module(tmp_path, f"""
        import kit
        CODE = "{year}"
        class S(kit.Strategy):
            def on_tick(self, tick):
                return CODE and None
    """)
    with pytest.raises(ExportError, match=r"\$SMARTAPI_PIN"):
        _export(module, tmp_path)
