"""One test per smartapi-python defect that kit/sdk_adapter.py contains."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import ROOT, wait_until
from kit.angel import sdk as sdk_adapter
from kit.feed.live import FeedCredentials, SmartFeed
from kit.angel.session import Credentials, CredentialsError, login
from kit.sim.rest import RestCredentials, RestSimulator

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
    assert _import_attempts("import kit.angel.sdk, kit") == []


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
        import kit.angel.sdk as a
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


def test_18_a_normal_close_is_neither_an_error_nor_logged_as_one(sim, in_tmp_cwd, caplog):
    caplog.set_level(logging.DEBUG)
    feed = _feed(sim).start()
    assert feed.wait_connected(10)
    sim.close_connections(1000, "end of session")          # the server closes, with the handshake
    assert wait_until(lambda: feed.stats.reconnects == 1 and feed.stats.connected, 10)
    feed.stop()                                            # and the kit closes, with the handshake
    assert wait_until(lambda: sim.stats["connections"] == 0, 5)
    assert feed.stats.socket_errors == 0, feed.stats.last_error
    assert feed.stats.last_disconnect_reason in ("closed by server: 1000 end of session", "stopped")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    # The order-update socket: its normal close reaches on_disconnect and nothing else.
    sock = _kit_order_socket(sim.orders.url, _jwt(sim))
    t = _in_thread(sock.connect)
    assert wait_until(lambda: len(sock.updates) == 1, 10)
    sock.close_connection()
    t.join(10)
    assert len(sock.closes) == 1 and not sock.errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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
    # the stall watchdog drops the connection from its own thread: the same race.
    # (Quick drops grow the backoff by design; a short cap keeps this test quick.)
    from kit.feed.live import ReconnectPolicy
    feed = _feed(sim, reconnect=ReconnectPolicy(initial_delay=0.01, max_delay=0.1)).start()
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
    connection = kit.ConnectionConfig(env_file=None, rest_url=sim.rest.url, feed_url=sim.url,
                                      instruments_url=sim.orders.master_url)
    trader = kit.LiveTrader(kit.TraderConfig(feed="smartapi", tokens={2: ["43650"]}, connection=connection,
                                             name="live-path"))
    trader.start()
    try:
        assert trader.wait_connected(10)
        assert trader.venue.session.feed.auth_token.startswith("Bearer ")
        sim.wait_for_subscribers(1)
        sim.publish(20)
        assert wait_until(lambda: trader.ticks_processed == 20, 10)
    finally:
        trader.close()


def test_11_the_tcp_socket_is_closed_after_a_close_handshake(sim, in_tmp_cwd):
    """websocket-client leaves the socket open when only the close frame was sent (or the
    server closed first); the server then waits half-closed. The adapter closes it."""
    import psutil

    def client_side():
        return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == sim.port]

    feed = _feed(sim).start()
    assert feed.wait_connected(10)
    held = feed._ws.wsapp.sock      # any reference (a debugger, a user's variable) keeps it from GC
    assert client_side()
    feed.stop()                     # the close handshake, read by the feed thread
    assert wait_until(lambda: not client_side(), 10), client_side()
    assert held.sock is None
    assert feed.stats.socket_errors == 0


# ---------------------------------------------------------------------------- the order-update socket (12–16)
def _jwt(sim) -> str:
    return "Bearer " + sim.rest.credentials.jwt


def _sdk_order_socket(url: str, jwt: str, received: list):
    """The SDK's own class, instrumented, with its retry delay cut so the control tests run fast."""
    class Probe(sdk_adapter.SmartWebSocketOrderUpdate):
        def on_message(self, wsapp, message):
            received.append(message)

    sock = Probe(jwt, "key", "SIM0001", "feed")
    sock.WEBSOCKET_URI = url
    sock.RETRY_DELAY_SECONDS = 0.05
    return sock


def _close_cleanly(sock) -> None:
    """Close an SDK socket with a plain close handshake read on its own thread.

    (The SDK's own ``close_connection`` races its socket thread and can hang it,
    which the kit's subclass also fixes; the controls must not depend on that race.)
    """
    app = sock.wsapp
    app.keep_running = False
    ws = app.sock
    if ws is not None and ws.connected:
        ws.send_close()
        # websocket-client never closes the TCP socket after send_close(): do it once the reply is in.
        threading.Timer(0.5, ws.shutdown).start()


def _kit_order_socket(url: str, jwt: str, **kwargs):
    sock = sdk_adapter.KitOrderUpdateSocket(url, jwt, "key", "SIM0001", "feed", **kwargs)
    sock.updates, sock.texts, sock.errors, sock.closes = [], [], [], []
    sock.on_update = sock.updates.append
    sock.on_text = lambda kind, payload: sock.texts.append(kind)
    sock.on_socket_error = sock.errors.append
    sock.on_connect = lambda: None
    sock.on_disconnect = lambda code, reason: sock.closes.append(code)
    return sock


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_12_closing_the_order_update_socket_does_not_reconnect(sim, in_tmp_cwd):
    stats = sim.orders.socket.stats
    # Control: the SDK's class answers even a deliberate, clean close by reconnecting.
    received = []
    sdk = _sdk_order_socket(sim.orders.url, _jwt(sim), received)
    control = _in_thread(sdk.connect)
    assert wait_until(lambda: received, 10)
    _close_cleanly(sdk)
    assert wait_until(lambda: stats["connections_total"] == 2 and len(received) == 2, 10)
    sdk.MAX_CONNECTION_RETRY_ATTEMPTS = 0
    _close_cleanly(sdk)
    control.join(10)
    assert wait_until(lambda: sim.orders.socket.connections == 0, 10)
    # The kit's subclass: a close is final, and connect() returns promptly.
    sock = _kit_order_socket(sim.orders.url, _jwt(sim))
    t = _in_thread(sock.connect)
    assert wait_until(lambda: len(sock.updates) == 1, 10)            # the AB00 greeting
    sock.close_connection()
    t.join(10)
    assert not t.is_alive() and sock.closes and not sock.errors
    time.sleep(0.3)
    assert stats["connections_total"] == 3 and sim.orders.socket.connections == 0


def test_13_a_refused_token_is_not_retried(sim, in_tmp_cwd):
    from kit.angel.order_updates import OrderUpdateStream
    stats = sim.orders.socket.stats
    sdk = _sdk_order_socket(sim.orders.url, "Bearer forged", [])
    sdk.connect()                                                    # control: 1 + 2 retries, each after a sleep
    assert stats["rejected_handshakes"] == 3
    stream = OrderUpdateStream(sim.orders.url, FeedCredentials("Bearer forged", "key", "SIM0001", "feed"),
                               lambda m: None)
    stream.start()
    try:
        assert wait_until(lambda: stream.stats.auth_failed and not stream.running, 10)
        assert stats["rejected_handshakes"] == 4 and "401" in stream.stats.last_error
    finally:
        stream.stop()


def test_14_pongs_are_not_order_updates(sim, in_tmp_cwd):
    received = []
    sdk = _sdk_order_socket(sim.orders.url, _jwt(sim), received)
    sdk.HEARTBEAT_INTERVAL_SECONDS = 0.1
    sdk.MAX_CONNECTION_RETRY_ATTEMPTS = 0
    control = _in_thread(sdk.connect)
    assert wait_until(lambda: b"" in received, 10)                   # control: a pong delivered as a message
    _close_cleanly(sdk)
    control.join(10)
    sock = _kit_order_socket(sim.orders.url, _jwt(sim), protocol_ping_interval=0.1)
    t = _in_thread(sock.connect)
    try:
        assert wait_until(lambda: sock.last_pong_timestamp is not None, 10)
        assert wait_until(lambda: sock.send_heartbeat() and "pong" in sock.texts, 10)   # Angel One's text ping
        time.sleep(0.5)
        assert [u["order-status"] for u in sock.updates] == ["AB00"]   # only the greeting
    finally:
        sock.close_connection()
        t.join(10)


def _self_signed_cert(directory):
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_15_wss_certificates_are_verified(tmp_path):
    import ssl
    from websockets.sync.server import serve
    cert, key = _self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def greet(ws):
        ws.send(json.dumps({"order-status": "AB00", "orderData": {}}))
        for _ in ws:
            pass

    with serve(greet, "127.0.0.1", 0, ssl=context) as server:
        _in_thread(server.serve_forever)
        url = f"wss://127.0.0.1:{server.socket.getsockname()[1]}/smart-order-update"
        received = []
        sdk = _sdk_order_socket(url, "Bearer x", received)
        sdk.MAX_CONNECTION_RETRY_ATTEMPTS = 0
        control = _in_thread(sdk.connect)
        assert wait_until(lambda: received, 10)                      # control: CERT_NONE accepts anyone
        _close_cleanly(sdk)
        control.join(10)
        sock = _kit_order_socket(url, "Bearer x")
        sock.connect()                                               # returns after the failed handshake
        server.shutdown()
    assert sock.updates == [] and "CERTIFICATE_VERIFY_FAILED" in str(sock.errors[0])


def test_16_no_log_directory_and_no_message_logging(sim, in_tmp_cwd, caplog):
    sock = _kit_order_socket(sim.orders.url, _jwt(sim))
    with caplog.at_level(logging.DEBUG):
        t = _in_thread(sock.connect)
        assert wait_until(lambda: len(sock.updates) == 1, 10)
        sock.close_connection()
        t.join(10)
    assert "Received message" not in caplog.text and "AB00" not in caplog.text
    # in_tmp_cwd fails the test if logs/ appeared


def test_3_no_secret_on_the_order_path(in_tmp_cwd, caplog, capfd, tmp_path_factory):
    """Canary credentials through login, orders, a refused order, a failed cancel and the journal."""
    import kit
    from kit.store.journal import Journal
    from kit.broker.risk import RiskLimits
    from kit.sim.server import SimCredentials, Simulator
    canary = SimCredentials(auth_token="CANARYJWT.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlLWNhbmFyeQ",
                            api_key="CANARY-API-KEY-5c1d", feed_token="CANARY-FEED-TOKEN-77aa")
    sim = Simulator(rate=0, credentials=canary)
    sim.rest.credentials = RestCredentials(client_code=canary.client_code, api_key=canary.api_key,
                                           pin="PIN-CANARY-3141", jwt=canary.auth_token,
                                           feed_token=canary.feed_token)
    secrets_ = [canary.auth_token, canary.api_key, canary.feed_token, "PIN-CANARY-3141",
                sim.rest.credentials.totp_secret, sim.rest.credentials.refresh_token]
    journal = tmp_path_factory.mktemp("canary") / "journal.sqlite"
    sim.start()
    trader = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, tokens={2: ["43650"]},
                                             journal=kit.JournalConfig(str(journal)),
                                             risk=RiskLimits(max_daily_loss=1e6, enforce_hours="never"),
                                             name="canary"), venue=kit.SimVenue(simulator=sim))
    try:
        with caplog.at_level(logging.DEBUG):
            trader.start()
            assert trader.broker.wait_ready(10)
            trader.arm_live(confirm=canary.client_code)
            tick = kit.Tick("43650", 2, 1, 0, 0, sim.last_price(2, "43650"))
            good, _ = trader.submit(kit.Signal.buy(tick, 65))
            sim.orders.reject_next("RMS:Margin Exceeds")
            trader.submit(kit.Signal.buy(tick, 65))
            trader.broker.product = "NOPE"                           # REST refusal: the SDK logs its headers
            trader.submit(kit.Signal.buy(tick, 65))
            assert wait_until(lambda: not trader.broker.open_orders(), 10)
            trader.broker.cancel(good.order_id)                      # already complete: no-op
            exported = trader.broker.orders_df().to_csv() + trader.broker.fills_df().to_csv()
            shown = repr(trader) + repr(trader.status) + repr(trader.venue.session) + repr(trader.broker)
            print(exported, shown)
    finally:
        trader.close()
        sim.stop()
    assert "Error occurred while making a POST request" in caplog.text   # the SDK did log the refusal...
    captured = capfd.readouterr()
    stored = b"".join(p.read_bytes() for p in journal.parent.iterdir())
    assert len(Journal(journal).orders()) == 3
    everything = caplog.text + captured.out + captured.err + exported + shown
    for secret in secrets_:
        assert secret not in everything, secret[:8]
        assert secret.encode() not in stored, secret[:8]


def test_17_the_refresh_token_in_a_logged_request_line_is_masked(sim, in_tmp_cwd, caplog):
    c = sim.rest.credentials
    with caplog.at_level(logging.DEBUG):
        login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=sim.rest.url)
    profile_lines = [r.getMessage() for r in caplog.records if "getProfile" in r.getMessage()]
    assert any(line.startswith("http://") and "getProfile?***" in line for line in profile_lines)  # urllib3's line
    assert c.refresh_token not in caplog.text and c.jwt not in caplog.text


def test_19_a_silent_upgrade_times_out_and_a_close_reaches_it(in_tmp_cwd):
    import socket
    listener = socket.create_server(("127.0.0.1", 0))   # accepts (the kernel's backlog) and never answers
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}/smart-order-update"
    try:
        # Control: the SDK's client waits for the upgrade reply forever, and its close cannot reach it.
        sdk = _sdk_order_socket(url, "Bearer x", [])
        sdk.MAX_CONNECTION_RETRY_ATTEMPTS = 0
        control = _in_thread(sdk.connect)
        time.sleep(1.0)
        sdk.close_connection()
        control.join(0.5)
        assert control.is_alive()
        conn, _ = listener.accept()
        conn.close()                                     # the server gives up: the control ends
        control.join(5)
        assert not control.is_alive()
        # The kit's client: the attempt fails after connect_timeout, reported as such...
        sock = _kit_order_socket(url, "Bearer x", connect_timeout=0.3)
        t0 = time.monotonic()
        sock.connect()
        assert time.monotonic() - t0 < 2 and not sock.updates
        assert [str(e) for e in sock.errors] == ["handshake timed out after 0.3 s"]
        assert isinstance(sock.errors[0], sdk_adapter.ConnectTimeout)
        # ...and close_connection() ends a hung upgrade at once, as no error.
        sock = _kit_order_socket(url, "Bearer x", connect_timeout=60)
        t = _in_thread(sock.connect)
        time.sleep(0.5)
        t0 = time.monotonic()
        sock.close_connection()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 1 and not sock.errors
    finally:
        listener.close()


def test_20_session_calls_raise_redacted_errors_and_register_tokens_first(in_tmp_cwd):
    import traceback
    import warnings

    import pyotp
    rest = RestSimulator(RestCredentials(refresh_token="CANARY-REFRESH-20-" + time.strftime("%H%M%S"))).start()
    c = rest.credentials
    login_path = "/rest/auth/angelbroking/user/v1/loginByPassword"
    rest.limit(login_path, 10, 1.0)                  # two logins in a second
    try:
        rest.go_down_after(login_path)               # getProfile is refused
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            control = sdk_adapter.SmartConnect(api_key=c.api_key, root=rest.url, timeout=5)
        with pytest.raises(Exception) as raw:
            control.generateSession(c.client_code, c.pin, pyotp.TOTP(c.totp_secret).now())
        assert c.refresh_token in str(raw.value)          # control: the SDK's exception carries it
        rest.start()
        rest.go_down_after(login_path)
        client = sdk_adapter.smart_connect(c.api_key, root=rest.url, timeout=5)
        with pytest.raises(sdk_adapter.SmartApiError) as clean:
            client.generateSession(c.client_code, c.pin, pyotp.TOTP(c.totp_secret).now())
        text = "".join(traceback.format_exception(clean.value))
        assert "getProfile failed: ConnectionError" in text and "getProfile?***" in text
        assert c.refresh_token not in text and clean.value.__context__ is None
        secrets_ = sdk_adapter.redactor.secrets()
        assert {c.refresh_token, c.jwt, c.feed_token} <= secrets_     # registered before getProfile ran
    finally:
        rest.stop()


def test_21_requests_reuse_one_connection(sim, in_tmp_cwd):
    creds = Credentials(**{k: getattr(sim.rest.credentials, k) for k in ("api_key", "client_code", "pin", "totp_secret")})
    session = login(creds, root=sim.rest.url)
    try:
        before = sim.rest.connections
        for i in range(8):      # cancels of unknown orders: answered (status false), 20/s allowed
            assert session.client.cancelOrder(f"unknown{i}", "NORMAL")["status"] is False
        assert sim.rest.connections - before <= 1      # eight calls, one kept-alive connection
    finally:
        session.client.close()

    # Control: the SDK's own SmartConnect opens a connection per call, as the counter shows.
    plain = sdk_adapter.SmartConnect(api_key=creds.api_key, root=sim.rest.url,
                                     access_token=session.feed.auth_token.removeprefix("Bearer "))
    before = sim.rest.connections
    for i in range(3):
        plain.cancelOrder(f"unknown{i}", "NORMAL")
    assert sim.rest.connections - before == 3


def test_21_the_environment_proxy_settings_still_apply(sim, in_tmp_cwd, monkeypatch):
    """Read once at construction (not per call), the environment's proxy still routes the requests."""
    import requests
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")        # nothing listens: a refused proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = sdk_adapter.smart_connect(sim.rest.credentials.api_key, root=sim.rest.url, timeout=5)
    with pytest.raises(requests.exceptions.ProxyError):
        proxied.cancelOrder("unknown", "NORMAL")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = sdk_adapter.smart_connect(sim.rest.credentials.api_key, root=sim.rest.url, timeout=5)
    with pytest.raises(Exception, match="Invalid Token"):                # the simulator's answer: reached it
        direct.cancelOrder("unknown", "NORMAL")



def _logged_in(sim):
    creds = Credentials(**{k: getattr(sim.rest.credentials, k) for k in ("api_key", "client_code", "pin", "totp_secret")})
    return login(creds, root=sim.rest.url)


def test_22_generate_token_says_why_it_was_refused_and_keeps_every_new_token(sim, in_tmp_cwd):
    from kit.sim.rest import TOKEN_PATH, reply
    session = _logged_in(sim)
    client = session.client
    answers = [reply(status=False, message="Refresh token is expired", errorcode="AB8099"),
               reply({"jwtToken": "rotated-jwt-22-" + "x" * 12, "feedToken": "rotated-feed-22-" + "y" * 12,
                      "refreshToken": "rotated-refresh-22-" + "z" * 12})]
    sim.rest.route("POST", TOKEN_PATH, secure=False)(lambda req: answers[0])
    try:
        before = client.access_token, client.feed_token, client.refresh_token
        # Control: the SDK's own generateToken turns the refusal into a TypeError that hides why.
        with pytest.raises(TypeError):
            sdk_adapter.SmartConnect.generateToken(client, client.refresh_token)
        refused = client.generateToken(client.refresh_token)
        assert refused["status"] is False and refused["message"] == "Refresh token is expired"
        assert (client.access_token, client.feed_token, client.refresh_token) == before
        answers.pop(0)
        renewed = client.generateToken(client.refresh_token)["data"]
        assert (client.access_token, client.feed_token, client.refresh_token) == (
            renewed["jwtToken"], renewed["feedToken"], renewed["refreshToken"])    # the SDK keeps the old refresh
        assert set(renewed.values()) <= sdk_adapter.redactor.secrets()
    finally:
        client.close()


def test_23_a_refused_token_is_reported_with_the_token_the_request_carried(sim, in_tmp_cwd):
    import inspect
    session = _logged_in(sim)
    client = session.client
    refused = []
    client.on_token_refused = refused.append
    try:
        assert client.getProfile(client.refresh_token)["status"] is True
        assert refused == []
        sim.rest.tokens.revoke()
        with pytest.raises(Exception, match="Invalid Token"):
            client.position()
        assert refused == [client.access_token]
        # The SDK's own hook is called with no argument: its owner cannot tell which token was refused.
        assert list(inspect.signature(sdk_adapter.SmartConnect.setSessionExpiryHook).parameters) == ["self", "method"]
    finally:
        client.close()


def test_24_a_refused_gtt_rule_says_why_and_lists_take_a_tuple(sim, in_tmp_cwd):
    from kit.sim.rest import reply
    session = _logged_in(sim)
    client = session.client
    path = "/gtt-service/rest/secure/angelbroking/gtt/v1/createRule"
    answers = [reply(status=False, message="Trigger price is too close to LTP", errorcode="AB9011")]
    sim.rest.route("POST", path)(lambda req: answers[0])
    params = {"tradingsymbol": "X-EQ", "symboltoken": "2885", "exchange": "NSE", "transactiontype": "BUY",
              "producttype": "DELIVERY", "price": 100, "qty": 1, "triggerprice": 100, "disclosedqty": 0,
              "timeperiod": 365}
    try:
        # Control: the SDK's own gttCreateRule turns the refusal into a TypeError that hides why.
        with pytest.raises(TypeError):
            sdk_adapter.SmartConnect.gttCreateRule(client, dict(params))
        refused = client.gttCreateRule(dict(params))
        assert refused["status"] is False and refused["message"] == "Trigger price is too close to LTP"
        answers[0] = reply({"id": "4242"})
        assert client.gttCreateRule(dict(params))["data"]["id"] == "4242"
        # The SDK answers a tuple of statuses with an error string instead of the call.
        assert isinstance(sdk_adapter.SmartConnect.gttLists(client, ("NEW",), 1, 10), str)
        listed = []
        sim.rest.route("POST", "/rest/secure/angelbroking/gtt/v1/ruleList")(
            lambda req: listed.append(req.body) or reply([]))
        assert client.gttLists(("NEW", "CANCELLED"), 1, 10)["status"] is True
        assert listed[0]["status"] == ["NEW", "CANCELLED"]
    finally:
        client.close()
