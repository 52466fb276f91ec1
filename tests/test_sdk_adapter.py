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


# ---------------------------------------------------------------------------- against the simulator
def _feed(sim, subscriptions=None, **kw) -> SmartFeed:
    c = sim.credentials
    ticks = []
    feed = SmartFeed(sim.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token),
                     subscriptions if subscriptions is not None else {1: {2: ["43650", "43651"]}},
                     ticks.append, **kw)
    feed.received = ticks
    return feed


def test_4_unsubscribe_then_reconnect_restores_only_what_is_left(sim, in_tmp_cwd):
    feed = _feed(sim).start()
    try:
        assert feed.wait_connected(10)
        sim.wait_for_subscribers(1)
        feed.unsubscribe({2: ["43651"]})
        assert wait_until(lambda: sim.stats["subscriptions"] == 1, 5)
        sim.drop_connections()
        assert wait_until(lambda: feed.stats.reconnects == 1 and feed.stats.connected, 10)
        assert wait_until(lambda: sim.stats["subscriptions"] == 1, 5)
        assert feed.subscriptions() == {1: {2: ["43650"]}}
        sim.publish(5, {2: ["43650", "43651"]})
        assert wait_until(lambda: len(feed.received) == 5, 5)
        assert {t.token for t in feed.received} == {"43650"}
    finally:
        feed.stop()


def test_5_a_dropped_connection_is_reconnected_and_resubscribed_by_the_kit(sim, in_tmp_cwd):
    feed = _feed(sim).start()
    try:
        assert feed.wait_connected(10)
        sim.wait_for_subscribers(1)
        for n in range(1, 4):
            sim.drop_connections()
            assert wait_until(lambda: feed.stats.reconnects == n and feed.stats.connected, 10)
            sim.wait_for_subscribers(1)
            sim.publish(2)
        assert wait_until(lambda: len(feed.received) == 12, 10)
        assert feed.stats.connects == 4
    finally:
        feed.stop()


def test_6_a_clean_close_is_not_an_error_and_does_not_reconnect(sim, in_tmp_cwd):
    feed = _feed(sim).start()
    assert feed.wait_connected(10)
    feed.stop()
    time.sleep(0.3)
    assert feed.stats.socket_errors == 0, feed.stats.last_error
    assert feed.stats.reconnects == 0 and not feed.running
    assert sim.stats["connections"] == 0


def test_10_stop_ends_the_feed_thread_every_time(sim, in_tmp_cwd):
    # websocket-client's WebSocketApp.close() reads the server's close frame on the
    # calling thread, racing the feed thread's read; about one stop in three left the
    # feed thread polling its socket forever (a second feed after a re-run notebook cell).
    for i in range(12):
        feed = _feed(sim, name=f"stop-{i}").start()
        assert feed.wait_connected(10)
        sim.wait_for_subscribers(1)
        sim.publish(3)
        assert wait_until(lambda: len(feed.received) == 6, 10)
        thread = feed._thread
        feed.stop()
        assert not thread.is_alive(), f"stop {i}: the feed thread is still running"
        assert feed.stats.socket_errors == 0, feed.stats.last_error
        assert wait_until(lambda: sim.stats["connections"] == 0, 5)


def test_10_disconnect_from_another_thread_reconnects_every_time(sim, in_tmp_cwd):
    # the stall watchdog drops the connection from its own thread: the same race
    feed = _feed(sim).start()
    try:
        assert feed.wait_connected(10)
        for n in range(1, 9):
            sim.wait_for_subscribers(1)
            feed.disconnect()
            assert wait_until(lambda: feed.stats.reconnects == n and feed.stats.connected, 10), n
    finally:
        feed.stop()


def test_7_error_frames_reach_the_kit(sim, in_tmp_cwd):
    frames = []
    feed = _feed(sim, {1: {2: [str(t) for t in range(1001)]}})   # over the 1,000 limit
    feed.on_error_frame = frames.append
    feed.start()
    try:
        assert wait_until(lambda: feed.stats.error_frames == 1, 10)
        assert frames[0]["errorCode"] == "E1002" and feed.stats.last_error_frame == frames[0]
    finally:
        feed.stop()


def test_8_text_heartbeat_is_sent_and_pong_counted(sim, in_tmp_cwd):
    feed = _feed(sim, heartbeat_interval=0.2).start()
    try:
        assert wait_until(lambda: feed.stats.pongs >= 2, 10)
        assert feed.stats.heartbeats_sent >= 2 and sim.stats["pings"] >= 2
    finally:
        feed.stop()


def test_9_urllib3_warning_filters_survive_smartconnect():
    import warnings
    before = list(warnings.filters)
    sdk_adapter.smart_connect("k-123456", root="http://127.0.0.1:9")
    assert warnings.filters == before


def test_login_and_feed_through_the_real_clients_against_the_simulator(sim, in_tmp_cwd, monkeypatch):
    import kit
    for k, v in sim.rest.credentials.env().items():
        monkeypatch.setenv(k, v)
    trader = kit.LiveTrader(kit.TraderConfig(feed="smartapi", tokens={2: ["43650"]}, env_file=None,
                                             rest_url=sim.rest.url, feed_url=sim.url, name="live-path"))
    trader.start()
    try:
        assert trader.wait_connected(10)
        assert trader.session.feed.auth_token.startswith("Bearer ")
        sim.wait_for_subscribers(1)
        sim.publish(20)
        assert wait_until(lambda: trader.ticks_processed == 20, 10)
    finally:
        trader.close()
