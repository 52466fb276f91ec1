"""One test per smartapi-python defect that kit/sdk_adapter.py contains."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, wait_until
from kit import sdk_adapter
from kit.feed import FeedCredentials, SmartFeed
from kit.session import Credentials, CredentialsError, login
from kit.simulator_rest import RestCredentials, RestSimulator

NETWORK_PROBE = textwrap.dedent("""
    import socket, sys, json
    sys.path.insert(0, {root!r})
    attempts = []
    real_getaddrinfo = socket.getaddrinfo
    def refuse(host, *a, **k):
        if host not in ("127.0.0.1", "localhost", "::1"):
            attempts.append(host)
            raise OSError("offline test")
        return real_getaddrinfo(host, *a, **k)
    socket.getaddrinfo = refuse
    {import_line}
    print(json.dumps(attempts))
""")


def _import_attempts(import_line: str) -> list[str]:
    code = NETWORK_PROBE.format(root=str(ROOT), import_line=import_line)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_1_importing_the_sdk_makes_no_network_call():
    # The control shows the probe can see the SDK's lookup; the adapter must prevent it.
    assert _import_attempts("import SmartApi") == ["api.ipify.org"]
    assert _import_attempts("import kit.sdk_adapter, kit") == []


def test_2_no_log_directory_and_no_global_logzero_setup(in_tmp_cwd):
    import logzero
    handlers_before = list(logzero.logger.handlers)
    sdk_adapter.smart_connect("some-api-key", root="http://127.0.0.1:9")
    sdk_adapter.KitWebSocketV2("ws://127.0.0.1:9/smart-stream", "jwt-x", "some-api-key", "C1", "feed-x")
    assert list(logzero.logger.handlers) == handlers_before
    # in_tmp_cwd fails the test if logs/ appeared


def test_2_control_the_unpatched_sdk_does_write_logs(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import kit.sdk_adapter as a
        a._ws2_module.os = os; a._ws2_module.logzero = __import__("logzero")
        a.SmartWebSocketV2("jwt", "key", "client", "feed")
        print(os.path.isdir("logs"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.stdout.strip().endswith("True"), out.stderr


def test_3_failed_login_leaks_no_secret(in_tmp_cwd, caplog, capfd):
    rest = RestSimulator().start()
    try:
        canary = RestCredentials(api_key="CANARY-KEY-1f2e3d", pin="9137", totp_secret=rest.credentials.totp_secret)
        rest.credentials = RestCredentials(client_code=canary.client_code, api_key=canary.api_key,
                                           pin="1111", totp_secret=canary.totp_secret)
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(CredentialsError, match="Invalid PIN"):
                login(Credentials(canary.api_key, canary.client_code, canary.pin, canary.totp_secret), root=rest.url)
        captured = capfd.readouterr()
        everything = caplog.text + captured.out + captured.err
        assert "Error occurred while making a POST request" in caplog.text  # the SDK did log the failure...
        for secret in (canary.api_key, canary.pin, canary.totp_secret):
            assert secret not in everything  # ...but not the secrets
    finally:
        rest.stop()


def test_3_redactor_masks_secret_looking_fields():
    text = sdk_adapter.redactor.redact("Request: {'clientcode': 'A1', 'password': '4321', 'totp': '123456'}")
    assert "4321" not in text and "123456" not in text and "'clientcode': 'A1'" in text


def test_4_subscription_state_is_per_instance_and_not_aliased():
    a = sdk_adapter.KitWebSocketV2("ws://127.0.0.1:9/x", "jwt-a", "key-a", "C1", "feed-a")
    b = sdk_adapter.KitWebSocketV2("ws://127.0.0.1:9/x", "jwt-b", "key-b", "C2", "feed-b")
    assert a.input_request_dict is not b.input_request_dict
    assert a.input_request_dict is not sdk_adapter.SmartWebSocketV2.input_request_dict
