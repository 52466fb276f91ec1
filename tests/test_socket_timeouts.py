"""Connect and handshake timeouts on both kit sockets, against a server that accepts TCP and never answers.

A silent server used to hold a socket thread forever: no reconnect, nothing in
the stats, and ``stop()`` waited out its join timeout and left the thread
running. Each attempt is now bounded by ``ReconnectPolicy.connect_timeout``,
counts as a failed connect, is retried, and ``stop()`` cuts a hung upgrade short.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import wait_until
from kit.feed.live import FeedCredentials, ReconnectPolicy, SmartFeed
from kit.angel.order_updates import OrderUpdateStream

CREDS = FeedCredentials("Bearer jwt-timeouts", "key-timeouts", "C1", "feed-timeouts")


class SilentServer:
    """Accepts every TCP connection on 127.0.0.1 and never sends a byte."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)          # so close() ends the accept loop at once
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def accepts(self) -> int:
        return len(self.accepted)

    def url(self, path: str = "/smart-stream") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _accept(self):
        while not self._closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted.append(conn)

    def closed_by_client(self, conn: socket.socket, timeout: float = 2.0) -> bool:
        """True once the client side has closed (or shut down) this connection."""
        conn.settimeout(timeout)
        try:
            while True:
                data = conn.recv(4096)       # the client's upgrade request, then EOF
                if not data:
                    return True
        except (socket.timeout, OSError):
            return False

    def close(self):
        self._closing.set()
        self._thread.join(2)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def _market_feed(url, policy):
    return SmartFeed(url, CREDS, {1: {2: ["43650"]}}, lambda tick: None, reconnect=policy,
                     name="kit-feed-timeouts")


def _order_stream(url, policy):
    return OrderUpdateStream(url, CREDS, lambda message: None, reconnect=policy, name="kit-order-updates-timeouts")


STREAMS = pytest.mark.parametrize("make", [_market_feed, _order_stream], ids=["market-feed", "order-updates"])


def _kit_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("kit-")}


def _timed_stop(stream) -> float:
    t0 = time.monotonic()
    stream.stop()
    return time.monotonic() - t0


@STREAMS
def test_a_hung_handshake_is_a_failed_connect_that_is_retried(silent, make):
    before = _kit_threads()
    stream = make(silent.url(), ReconnectPolicy(connect_timeout=0.3, initial_delay=0.05, max_delay=0.2))
    stream.start()
    try:
        assert wait_until(lambda: silent.accepts >= 3 and stream.stats.failed_connects >= 2, 10), \
            (silent.accepts, stream.stats)
        stats = stream.stats
        assert stats.connects == 0 and not stats.connected
        assert stats.reconnects >= 2 and stats.socket_errors >= 2
        assert stats.last_error == "ConnectTimeout: handshake timed out after 0.3 s"
    finally:
        took = _timed_stop(stream)
    assert took <= 2.0, f"stop() took {took:.2f} s"
    assert wait_until(lambda: not (_kit_threads() - before), 1), _kit_threads() - before


@STREAMS
def test_stop_cuts_a_hung_handshake_short(silent, make):
    before = _kit_threads()
    stream = make(silent.url(), ReconnectPolicy(connect_timeout=60))   # far longer than the test
    stream.start()
    assert wait_until(lambda: silent.accepts == 1, 5)
    time.sleep(0.3)                                  # the upgrade request is out; no answer comes
    assert stream.running and stream.stats.connects == 0
    took = _timed_stop(stream)
    assert took <= 2.0, f"stop() took {took:.2f} s"
    assert not stream.running
    assert not (_kit_threads() - before), _kit_threads() - before   # stop() already joined them
    assert silent.closed_by_client(silent.accepted[0]), "the client left its TCP connection open"
    # Cut short by the kit itself: neither an error nor a failed connect.
    assert stream.stats.socket_errors == 0 and stream.stats.failed_connects == 0, stream.stats
    assert silent.accepts == 1


@STREAMS
@pytest.mark.parametrize("seconds", [0.2, 0.8])
def test_the_timeout_is_the_policys(silent, make, seconds):
    stream = make(silent.url(), ReconnectPolicy(connect_timeout=seconds, initial_delay=30))
    stream.start()
    try:
        assert wait_until(lambda: silent.accepts == 1, 5)
        t0 = time.monotonic()
        assert wait_until(lambda: stream.stats.failed_connects == 1, 5)
        waited = time.monotonic() - t0
        assert seconds * 0.8 <= waited <= seconds + 0.5, waited
        assert stream.stats.last_error.endswith(f"handshake timed out after {seconds:g} s")
    finally:
        stream.stop()


def test_the_default_policy_bounds_every_connect():
    assert ReconnectPolicy().connect_timeout == 10.0
    feed = _market_feed("ws://127.0.0.1:9/x", ReconnectPolicy())
    stream = _order_stream("ws://127.0.0.1:9/x", ReconnectPolicy(connect_timeout=2.5))
    assert feed.reconnect.connect_timeout == 10.0 and stream.reconnect.connect_timeout == 2.5


def test_a_tcp_connect_timeout_is_reported_as_such(silent):
    """A listener whose backlog is full leaves further connects unanswered (SYNs dropped)."""
    silent.listener.close()                       # a fresh listener that never accepts
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):                        # fill the accept queue
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel completes loopback connects to a full backlog")
        except (socket.timeout, TimeoutError):
            pass
        finally:
            probe.close()
        feed = _market_feed(f"ws://127.0.0.1:{port}/x", ReconnectPolicy(connect_timeout=0.3, initial_delay=30))
        feed.start()
        try:
            assert wait_until(lambda: feed.stats.failed_connects == 1, 5), feed.stats
            assert feed.stats.last_error == "ConnectTimeout: connect timed out after 0.3 s"
        finally:
            feed.stop()
    finally:
        for s in fillers:
            s.close()
        full.close()


def test_connection_config_reconnect_carries_the_timeout_to_the_feed(sim, silent, in_tmp_cwd, monkeypatch):
    """The engine passes ``ConnectionConfig.reconnect`` to its feed: the timeout needs no engine setting of its own.

    The simulator serves the login and the instrument master; the feed URL is the silent server.
    """
    import kit
    for k, v in sim.rest.credentials.env().items():
        monkeypatch.setenv(k, v)
    before = _kit_threads()
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="smartapi", tokens={2: ["43650"]}, name="timeouts-wiring",
        connection=kit.ConnectionConfig(
            env_file=None, rest_url=sim.rest.url, feed_url=silent.url(), instruments_url=sim.orders.master_url,
            reconnect=kit.ReconnectPolicy(connect_timeout=0.3, initial_delay=0.05, max_delay=0.2))))
    try:
        trader.start()
        assert wait_until(lambda: trader.feed.stats.failed_connects >= 2, 10), trader.feed.stats
        assert trader.feed.stats.last_error == "ConnectTimeout: handshake timed out after 0.3 s"
        assert silent.accepts >= 2
    finally:
        t0 = time.monotonic()
        trader.close()
        took = time.monotonic() - t0
    assert took <= 2.0, f"close() took {took:.2f} s"
    assert wait_until(lambda: not (_kit_threads() - before), 2), _kit_threads() - before
