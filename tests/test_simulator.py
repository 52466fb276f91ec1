"""The embedded simulator, driven by a plain ``websockets`` sync client on 127.0.0.1.

Timing assertions are deliberately loose: these run on loaded two-core machines.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from kit.sim.server import DEFAULT_TOKENS, SimCredentials, Simulator
from kit.core.tick import DEPTH, LTP, QUOTE, SNAP_QUOTE
from kit.angel.wire import parse_tick

pytestmark = pytest.mark.timeout(60)

OPTIONS = DEFAULT_TOKENS[2]


def open_client(sim: Simulator, headers: dict | None = None, **kwargs):
    kwargs.setdefault("open_timeout", 10)
    return connect(sim.url, additional_headers=sim.credentials.headers() if headers is None else headers,
                   compression=None, **kwargs)


def request(action: int, mode: int, tokens: dict, correlation: str = "test1") -> str:
    return json.dumps({"correlationID": correlation, "action": action,
                       "params": {"mode": mode, "tokenList": [{"exchangeType": ex, "tokens": toks}
                                                              for ex, toks in tokens.items()]}})


def subscribe(sim: Simulator, ws, mode: int, tokens: dict) -> None:
    ws.send(request(1, mode, tokens))
    sim.wait_for_subscribers()


def recv_ticks(ws, n: int, timeout: float = 10.0) -> list:
    return [parse_tick(ws.recv(timeout=timeout)) for _ in range(n)]


def recv_until_quiet(ws, quiet: float = 0.3, limit: int = 10_000) -> list:
    """Whatever is still in flight, until nothing arrives for ``quiet`` seconds."""
    frames = []
    for _ in range(limit):
        try:
            frames.append(ws.recv(timeout=quiet))
        except TimeoutError:
            return frames
    raise AssertionError("the feed never went quiet")


def assert_contiguous(ticks) -> dict:
    by_token = defaultdict(list)
    for t in ticks:
        by_token[t.key].append(t.seq)
    for key, seqs in by_token.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or reorder for {key}"
    return by_token


# --------------------------------------------------------------------------- handshake
def test_handshake_without_headers_is_rejected_with_401(sim):
    with pytest.raises(InvalidStatus) as err:
        open_client(sim, headers={})
    assert err.value.response.status_code == 401
    assert "required" in err.value.response.headers["x-error-message"]
    assert sim.stats["rejected_handshakes"] == 1
    assert sim.stats["connections_total"] == 0


def test_handshake_with_a_wrong_header_names_it(sim):
    headers = dict(sim.credentials.headers(), **{"x-feed-token": "stale"})
    with pytest.raises(InvalidStatus) as err:
        open_client(sim, headers=headers)
    assert err.value.response.status_code == 401
    assert "x-feed-token" in err.value.response.headers["x-error-message"]


def test_handshake_accepts_raw_and_bearer_jwt(sim):
    with open_client(sim):
        pass
    headers = dict(sim.credentials.headers(), Authorization="Bearer " + sim.credentials.auth_token)
    with open_client(sim, headers=headers):
        pass
    assert sim.stats["connections_total"] == 2
    assert sim.stats["rejected_handshakes"] == 0


def test_custom_credentials_are_the_ones_checked():
    creds = SimCredentials(auth_token="a.b.c", api_key="k", client_code="C1", feed_token="f")
    with Simulator(rate=0, credentials=creds) as s:
        with open_client(s, headers=creds.headers()):
            pass
        with pytest.raises(InvalidStatus):
            open_client(s, headers=SimCredentials().headers())


# --------------------------------------------------------------------------- ticks
def test_ltp_ticks_decode_with_contiguous_seq_per_token():
    with Simulator(rate=20) as s, open_client(s) as ws:
        subscribe(s, ws, LTP, {1: ["99926000"], 2: OPTIONS[:2]})
        frames = [ws.recv(timeout=10) for _ in range(30)]
    assert all(len(f) == 51 for f in frames)
    ticks = [parse_tick(f) for f in frames]
    by_token = assert_contiguous(ticks)
    assert set(by_token) == {(1, "99926000"), (2, OPTIONS[0]), (2, OPTIONS[1])}
    assert all(seqs[0] == 1 for seqs in by_token.values())   # only subscribed tokens tick
    for t in ticks:
        assert t.mode == LTP
        assert round(t.ltp * 100) % 5 == 0 and t.ltp >= 0.05   # ₹0.05 grid
        assert abs(t.exchange_ts / 1000 - time.time()) < 60
        if t.token == "99926000":
            assert 20_000 < t.ltp < 28_000
        else:
            assert 15 < t.ltp < 450


def test_quote_and_snap_quote_are_coherent(sim):
    with open_client(sim) as ws:
        ws.send(request(1, QUOTE, {2: [OPTIONS[0]]}))
        subscribe(sim, ws, SNAP_QUOTE, {1: ["99926000"]})
        sim.publish(5)
        frames = [ws.recv(timeout=10) for _ in range(10)]
    sizes = {parse_tick(f).mode: len(f) for f in frames}
    assert sizes == {QUOTE: 123, SNAP_QUOTE: 379}
    for t in map(parse_tick, frames):
        q = t.quote
        assert q.low <= t.ltp <= q.high and q.low <= q.avg_price <= q.high
        assert q.volume >= q.last_traded_qty > 0 and q.close > 0 and q.open > 0
        if t.mode == SNAP_QUOTE:
            assert len(q.best_buy) == len(q.best_sell) == 5
            bids, asks = [p for p, _, _ in q.best_buy], [p for p, _, _ in q.best_sell]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert bids[0] < asks[0] and bids[0] <= t.ltp <= asks[0]
            assert q.lower_circuit < t.ltp < q.upper_circuit
            assert q.low_52w <= q.low and q.high <= q.high_52w


def test_depth_subscription_gets_20_level_packets(sim):
    with open_client(sim) as ws:
        subscribe(sim, ws, DEPTH, {1: ["99926000"]})
        sim.publish(2)
        frames = [ws.recv(timeout=10) for _ in range(2)]
    assert [len(f) for f in frames] == [443, 443]
    q = parse_tick(frames[0]).quote
    assert len(q.best_buy) == len(q.best_sell) == 20
    assert q.best_buy[0][0] < q.best_sell[0][0]


def test_latest_mode_wins_and_unsubscribe_stops_a_token(sim):
    with open_client(sim) as ws:
        ws.send(request(1, LTP, {2: OPTIONS[:2]}))
        ws.send(request(1, QUOTE, {2: [OPTIONS[0]]}))       # same token, new mode
        ws.send(request(0, LTP, {2: [OPTIONS[1]]}))
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"              # requests are handled in order
        assert sim.stats["subscriptions"] == 1
        sim.publish(3)
        frames = recv_until_quiet(ws)
    assert [(len(f), parse_tick(f).token) for f in frames] == [(123, OPTIONS[0])] * 3


def test_unknown_tokens_tick_deterministically():
    def first_prices(seed):
        with Simulator(rate=0, seed=seed) as s, open_client(s) as ws:
            subscribe(s, ws, LTP, {2: ["777001"], 13: ["1234"]})
            s.publish(20)
            return [(t.key, t.ltp) for t in recv_ticks(ws, 40)]
    assert first_prices(7) == first_prices(7)
    assert first_prices(7) != first_prices(8)


# --------------------------------------------------------------------------- control frames
def test_text_ping_gets_text_pong(sim):
    with open_client(sim) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"
    assert sim.stats["pings"] == 1


@pytest.mark.parametrize("payload, correlation", [
    ("not json at all", ""),
    ('{"correlationID": "abc123", "action": 7, "params": {}}', "abc123"),
    ('{"correlationID": "c2", "action": 1, "params": {"mode": 9, "tokenList": []}}', "c2"),
    ('{"correlationID": "c3", "action": 1, "params": {"mode": 1, '
     '"tokenList": [{"exchangeType": 2, "tokens": [43650]}]}}', "c3"),
    ('[1, 2, 3]', ""),
])
def test_bad_request_gets_e1001_with_correlation_id_echoed(sim, payload, correlation):
    with open_client(sim) as ws:
        ws.send(payload)
        error = json.loads(ws.recv(timeout=10))
    assert error == {"correlationID": correlation, "errorCode": "E1001",
                     "errorMessage": "Invalid Request Payload."}
    assert sim.stats["subscriptions"] == 0
    assert sim.stats["error_frames_sent"] == 1


def test_more_than_1000_subscriptions_gets_e1002(sim):
    tokens = [str(100_000 + i) for i in range(1001)]
    with open_client(sim) as ws:
        ws.send(request(1, LTP, {2: tokens}, correlation="many"))
        error = json.loads(ws.recv(timeout=10))
        assert error["errorCode"] == "E1002" and error["correlationID"] == "many"
        assert sim.stats["subscriptions"] == 1000
        ws.send(request(1, QUOTE, {2: tokens[:1]}))         # re-moding an existing one still fits
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"


# --------------------------------------------------------------------------- publish and floods
def test_publish_delivers_exactly_n_per_token_in_order(sim):
    tokens = {1: ["99926000"], 2: OPTIONS[:3]}
    with open_client(sim, max_queue=None) as ws:
        subscribe(sim, ws, LTP, tokens)
        started = time.perf_counter()
        sim.publish(5_000)
        ticks = recv_ticks(ws, 20_000)
        elapsed = time.perf_counter() - started
        assert recv_until_quiet(ws) == []
    by_token = assert_contiguous(ticks)
    assert {k: (v[0], v[-1]) for k, v in by_token.items()} == {
        (1, "99926000"): (1, 5000), **{(2, t): (1, 5000) for t in OPTIONS[:3]}}
    assert [t.key for t in ticks[:4]] == [(1, "99926000")] + [(2, t) for t in OPTIONS[:3]]   # round-robin
    stats = sim.stats
    assert stats["sent"] == 20_000 and stats["sent_by_token"][(2, OPTIONS[0])] == 5_000
    assert stats["last_seq"][(1, "99926000")] == 5_000
    print(f"\n20,000 LTP frames published and received in {elapsed:.2f} s ({20_000 / elapsed:,.0f}/s)")


def test_publish_and_automatic_ticks_share_one_sequence():
    with Simulator(rate=50) as s, open_client(s, max_queue=None) as ws:
        subscribe(s, ws, LTP, {2: OPTIONS[:2]})
        recv_ticks(ws, 5)
        s.publish(500)
        ticks = recv_ticks(ws, 1000)
        s.pause()
        ticks += [parse_tick(f) for f in recv_until_quiet(ws)]
    assert_contiguous(ticks)


def test_publish_to_named_tokens_only():
    with Simulator(rate=0, tokens={2: ["1", "2"]}) as s, open_client(s) as ws:
        subscribe(s, ws, QUOTE, {2: ["1", "2"]})
        s.publish(4, tokens=[(2, "2")])
        ticks = [parse_tick(f) for f in recv_until_quiet(ws)]
    assert [(t.token, t.seq) for t in ticks] == [("2", i) for i in range(1, 5)]


def test_send_raw_delivers_the_bytes_as_given(sim):
    with open_client(sim) as ws:
        ws.send("ping")                                     # the server has registered us once it answers
        assert ws.recv(timeout=10) == "pong"
        sim.send_raw(b"\x01\x02garbage")
        sim.send_raw("some text")
        assert ws.recv(timeout=10) == b"\x01\x02garbage"
        assert ws.recv(timeout=10) == "some text"


def test_publish_without_start_is_an_error():
    with pytest.raises(RuntimeError):
        Simulator().publish(1)


# --------------------------------------------------------------------------- failures and lifecycle
def test_drop_connections_aborts_clients_but_keeps_listening(sim):
    with open_client(sim) as ws:
        subscribe(sim, ws, LTP, {2: OPTIONS[:1]})
        sim.drop_connections()
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=10)
    assert sim.stats["connections"] == 0 and sim.stats["subscriptions"] == 0
    with open_client(sim) as ws:
        subscribe(sim, ws, LTP, {2: OPTIONS[:1]})
        sim.publish(1)
        assert parse_tick(ws.recv(timeout=10)).seq == 1


def test_pause_stops_ticks_and_resume_restarts_them():
    with Simulator(rate=40) as s, open_client(s) as ws:
        subscribe(s, ws, LTP, {2: OPTIONS[:1]})
        before = recv_ticks(ws, 5)
        s.pause()
        before += [parse_tick(f) for f in recv_until_quiet(ws, quiet=1.0)]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
        ws.send("ping")                                     # the connection itself stays alive
        assert ws.recv(timeout=10) == "pong"
        s.resume()
        after = recv_ticks(ws, 3)
    assert_contiguous(before + after)


def test_rate_is_roughly_honoured():
    with Simulator(rate=20) as s, open_client(s) as ws:
        subscribe(s, ws, LTP, {2: OPTIONS[:2]})
        recv_ticks(ws, 1)
        started, n = time.monotonic(), 0
        while time.monotonic() - started < 2.0:
            ws.recv(timeout=10)
            n += 1
        s.set_rate(0)
    assert 30 <= n <= 160   # 80 expected


def test_set_rate_from_zero_starts_ticking(sim):
    with open_client(sim) as ws:
        subscribe(sim, ws, LTP, {2: OPTIONS[:1]})
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        sim.set_rate(50)
        assert parse_tick(ws.recv(timeout=10)).seq == 1


def test_delay_is_added_before_every_send():
    with Simulator(rate=0, delay_ms=200) as s, open_client(s) as ws:
        subscribe(s, ws, LTP, {2: OPTIONS[:1]})
        s.publish(1)
        tick = parse_tick(ws.recv(timeout=10))
        assert time.time() * 1000 - tick.exchange_ts >= 150
        sent = time.monotonic()
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"
        assert time.monotonic() - sent >= 0.15


def test_start_stop_start_on_one_object_keeps_port_and_sequence():
    s = Simulator(rate=0)
    s.stop()                                                # stopping a stopped one is harmless
    assert s.start() is s and s.start() is s
    port = s.port
    try:
        with open_client(s) as ws:
            subscribe(s, ws, LTP, {2: OPTIONS[:1]})
            s.publish(3)
            assert [t.seq for t in recv_ticks(ws, 3)] == [1, 2, 3]
            s.stop()
            s.stop()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        assert not s.running
        s.start()
        assert s.port == port
        with open_client(s) as ws:
            subscribe(s, ws, LTP, {2: OPTIONS[:1]})
            s.publish(2)
            assert [t.seq for t in recv_ticks(ws, 2)] == [4, 5]
    finally:
        s.stop()


def test_starts_while_an_event_loop_runs_in_this_thread():
    """As in a notebook cell, where the kernel's loop owns the main thread."""
    async def cell():
        with Simulator(rate=0) as s, open_client(s) as ws:
            subscribe(s, ws, LTP, {2: OPTIONS[:1]})
            s.publish(1)
            return parse_tick(ws.recv(timeout=10)).seq
    assert asyncio.run(cell()) == 1


def test_start_reports_a_busy_port():
    with Simulator(rate=0) as first:
        with pytest.raises(OSError):
            Simulator(port=first.port).start()


def test_only_loopback():
    with pytest.raises(ValueError):
        Simulator(host="0.0.0.0")
    assert Simulator().url.startswith("ws://127.0.0.1:")
