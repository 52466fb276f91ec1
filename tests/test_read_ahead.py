"""The SDK adapter's read-ahead buffer: the same bytes, frames and errors as the socket itself."""
from __future__ import annotations

import random
import socket
import threading
import time

import pytest
import websocket

import kit
from conftest import wait_until
from kit.angel.sdk import KitWebSocketV2, ReadAhead
from kit.angel.wire import encode_ltp, parse_tick

pytestmark = pytest.mark.timeout(60)


def server_frame(payload: bytes) -> bytes:
    return bytes((0x82, len(payload))) + payload   # unmasked binary frame, as a server sends it


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_recv_returns_the_stream_in_order_and_never_more_than_asked(pair):
    a, b = pair
    data = random.Random(1).randbytes(300_000)
    sender = threading.Thread(target=b.sendall, args=(data,))
    sender.start()
    ahead, got, rng = ReadAhead(a, size=4096), bytearray(), random.Random(2)
    while len(got) < len(data):
        n = rng.choice([1, 2, 51, 123, 4000, 9000])
        chunk = ahead.recv(n)
        assert 0 < len(chunk) <= n
        got += chunk
    sender.join()
    assert bytes(got) == data
    assert ahead.pending() == 0


def test_pending_counts_buffered_bytes_then_asks_the_inner_socket(pair):
    a, b = pair
    b.sendall(b"x" * 100)                      # one small send: one read gets all of it
    ahead = ReadAhead(a)
    assert ahead.pending() == 0                # nothing read yet; a plain socket holds nothing for us
    assert ahead.recv(10) == b"x" * 10
    assert ahead.pending() == 90
    assert ahead.recv(1000) == b"x" * 90       # the rest, no more than is buffered
    assert ahead.pending() == 0

    class TlsLike:
        """Stands in for ssl.SSLSocket: decrypted bytes it holds count as pending."""
        def pending(self):
            return 7

        def gettimeout(self):
            return None
    assert ReadAhead(TlsLike()).pending() == 7


def test_a_peer_close_reads_as_end_of_stream(pair):
    a, b = pair
    ahead = ReadAhead(a)
    b.sendall(b"abc")
    b.close()
    got = b""
    while True:
        chunk = ahead.recv(2)
        if not chunk:
            break
        got += chunk
    assert got == b"abc"


def test_everything_but_recv_is_the_socket_itself(pair):
    a, _ = pair
    ahead = ReadAhead(a)
    assert ahead.fileno() == a.fileno()
    assert ahead.gettimeout() == a.gettimeout()
    a.settimeout(2.5)
    assert ahead.gettimeout() == 2.5


def test_websocket_client_reads_whole_frames_split_anywhere(pair):
    a, b = pair
    frames = [server_frame(encode_ltp(2, str(43650 + i % 7), i + 1, 1_700_000_000_000, 10_000 + i))
              for i in range(3000)]
    stream = b"".join(frames)

    def send_in_odd_pieces():
        rng, pos = random.Random(3), 0
        while pos < len(stream):
            step = rng.choice([1, 5, 53, 100, 5000])
            b.sendall(stream[pos:pos + step])
            pos += step
            if rng.random() < 0.01:
                time.sleep(0.001)   # a frame cut across two reads
    sender = threading.Thread(target=send_in_odd_pieces)
    sender.start()
    ws = websocket.WebSocket()
    ws.sock, ws.connected = ReadAhead(a, size=4096), True
    seqs = []
    for _ in frames:
        opcode, frame = ws.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_BINARY
        seqs.append(parse_tick(frame.data).seq)
    sender.join()
    assert seqs == list(range(1, 3001))


@pytest.mark.parametrize("read_ahead", [True, False])
def test_the_real_client_delivers_a_burst_in_order_either_way(sim, read_ahead):
    ws = KitWebSocketV2(sim.url, *(getattr(sim.credentials, k) for k in
                                   ("auth_token", "api_key", "client_code", "feed_token")), read_ahead=read_ahead)
    seen, opened = [], threading.Event()
    ws.on_tick = lambda tick: seen.append((tick.token, tick.seq))
    ws.on_connect = lambda resubscribed: opened.set()
    ws.on_text = ws.on_malformed = ws.on_disconnect = ws.on_socket_error = lambda *a: None
    thread = threading.Thread(target=ws.connect, daemon=True)
    thread.start()
    try:
        assert opened.wait(10)
        ws.subscribe("t", kit.LTP, [{"exchangeType": 2, "tokens": ["43650", "43651"]}])
        sim.wait_for_subscribers(1)
        sim.publish(2000)
        assert wait_until(lambda: len(seen) == 4000, 30), len(seen)
        for token in ("43650", "43651"):
            seqs = [s for t, s in seen if t == token]
            assert seqs == list(range(1, 2001))
        assert isinstance(ws.wsapp.sock.sock, ReadAhead) is read_ahead
    finally:
        ws.close_connection()
        thread.join(10)
    assert not thread.is_alive()
