"""The simulator's order side on the wire: the real SmartConnect for REST, a plain websockets client
for the order-update socket."""
from __future__ import annotations

import contextlib
import json
import threading

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import wait_until
from kit.angel.session import Credentials, login
from kit.sim.exchange import PLACE_PATH
from kit.sim.rest import RATE_LIMIT_TEXT

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def session(sim):
    c = sim.rest.credentials
    return login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=sim.rest.url)


def symbol(sim, token: str) -> str:
    return next(i.symbol for (ex, t), i in sim.orders.instruments.items() if t == token)


def order(sim, token="43650", side="BUY", qty=65, kind="MARKET", price=None, tag="t1") -> dict:
    params = {"variety": "NORMAL", "tradingsymbol": symbol(sim, token), "symboltoken": token,
              "transactiontype": side, "exchange": "NFO", "ordertype": kind, "producttype": "INTRADAY",
              "duration": "DAY", "quantity": str(qty), "ordertag": tag}
    if price is not None:
        params["price"] = f"{price:.2f}"
    return params


@contextlib.contextmanager
def updates(sim, jwt: str):
    """An order-update connection whose AB00 greeting has been checked."""
    with connect(sim.orders.url, additional_headers={"Authorization": jwt}, open_timeout=10) as ws:
        greeting = json.loads(ws.recv(timeout=10))
        assert greeting["order-status"] == "AB00" and greeting["user-id"] == sim.rest.credentials.client_code
        yield ws


def next_update(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def test_the_order_socket_wants_the_session_token(sim, session):
    with pytest.raises(InvalidStatus) as err:
        connect(sim.orders.url, additional_headers={"Authorization": "Bearer forged"}, open_timeout=10)
    assert err.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(sim.orders.url, open_timeout=10)
    with updates(sim, session.feed.auth_token) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"


def test_a_fourth_connection_is_refused_with_429(sim, session):
    jwt = session.feed.auth_token
    with updates(sim, jwt), updates(sim, jwt), updates(sim, jwt):
        with pytest.raises(InvalidStatus) as err:
            connect(sim.orders.url, additional_headers={"Authorization": jwt}, open_timeout=10)
        assert err.value.response.status_code == 429


def test_market_order_open_then_complete_at_the_current_price(sim, session):
    client = session.client
    price = sim.last_price(2, "43650")
    with updates(sim, session.feed.auth_token) as ws:
        reply = client.placeOrderFullResponse(order(sim, tag="mkt1"))
        assert reply["status"] is True and reply["data"]["script"] == symbol(sim, "43650")
        order_id = reply["data"]["orderid"]
        first, second = next_update(ws), next_update(ws)
    assert first["order-status"] == "AB01" and first["orderData"]["status"] == "open"
    assert second["order-status"] == "AB05"
    data = second["orderData"]
    assert data["orderid"] == order_id and data["ordertag"] == "mkt1" and data["status"] == "complete"
    assert data["filledshares"] == "65" and data["unfilledshares"] == "0"
    assert data["averageprice"] == pytest.approx(price)              # rupees, not paise
    book = client.orderBook()["data"]
    assert [(o["orderid"], o["status"]) for o in book] == [(order_id, "complete")]
    assert wait_until(lambda: _positions(client) is not None, 5)     # the 1/s limit may need a moment


def _positions(client):
    try:
        rows = client.position()["data"]
    except Exception:
        return None
    assert [(r["symboltoken"], r["netqty"]) for r in rows] == [("43650", "65")]
    return rows


def test_limit_rests_until_a_tick_crosses_it_then_fills_at_the_limit(sim, session):
    client = session.client
    limit = round(sim.last_price(2, "43651") - 0.05, 2)
    with updates(sim, session.feed.auth_token) as ws:
        order_id = client.placeOrderFullResponse(order(sim, "43651", kind="LIMIT", price=limit))["data"]["orderid"]
        assert next_update(ws)["orderData"]["status"] == "open"
        for _ in range(200):                       # ticks until the random walk reaches the limit
            sim.publish(1, {2: ["43651"]})
            if sim.orders.order_book()[0]["status"] == "complete":
                break
        done = next_update(ws)
    assert done["order-status"] == "AB05" and done["orderData"]["orderid"] == order_id
    assert done["orderData"]["averageprice"] == pytest.approx(limit)


def test_modify_cancel_and_their_refusals(sim, session):
    client = session.client
    with updates(sim, session.feed.auth_token) as ws:
        order_id = client.placeOrderFullResponse(order(sim, kind="LIMIT", price=1.0))["data"]["orderid"]
        assert next_update(ws)["order-status"] == "AB01"
        modify = {"variety": "NORMAL", "orderid": order_id, "ordertype": "LIMIT", "producttype": "INTRADAY",
                  "duration": "DAY", "price": "1.50", "quantity": "130", "tradingsymbol": symbol(sim, "43650"),
                  "symboltoken": "43650", "exchange": "NFO"}
        assert client.modifyOrder(modify)["status"] is True
        modified = next_update(ws)
        assert modified["order-status"] == "AB04"
        assert modified["orderData"]["quantity"] == "130" and modified["orderData"]["price"] == 1.5
        assert client.cancelOrder(order_id, "NORMAL")["status"] is True
        cancelled = next_update(ws)
    assert cancelled["order-status"] == "AB02" and cancelled["orderData"]["status"] == "cancelled"
    again = client.cancelOrder(order_id, "NORMAL")
    assert again["status"] is False and "cannot be cancelled" in again["message"]
    assert client.cancelOrder("999", "NORMAL")["errorcode"] == "AB1013"


def test_exchange_rejections_arrive_as_ab03_with_the_text(sim, session):
    client = session.client
    with updates(sim, session.feed.auth_token) as ws:
        odd = client.placeOrderFullResponse(order(sim, qty=10))
        assert odd["status"] is True                                   # REST accepts; the exchange rejects
        rejected = next_update(ws)
        assert rejected["order-status"] == "AB03"
        assert rejected["orderData"]["text"] == "Quantity should be a multiple of the lot size 65"
        sim.orders.reject_next("RMS:Margin Exceeds")
        client.placeOrderFullResponse(order(sim))
        assert next_update(ws)["orderData"]["text"] == "RMS:Margin Exceeds"
        off_grid = client.placeOrderFullResponse(order(sim, kind="LIMIT", price=10.03))
        assert off_grid["status"] is True and "tick size" in next_update(ws)["orderData"]["text"]
    bad = client.placeOrderFullResponse(dict(order(sim), producttype="NOPE"))
    assert bad["status"] is False and bad["errorcode"] == "AB1012"
    assert {o["status"] for o in sim.orders.order_book()} == {"rejected"}


def test_a_resting_order_fills_in_chunks_when_fill_chunk_is_set(sim, session):
    sim.orders.fill_chunk = 65
    limit = round(sim.last_price(2, "43652") - 0.05, 2)
    with updates(sim, session.feed.auth_token) as ws:
        session.client.placeOrderFullResponse(order(sim, "43652", kind="LIMIT", price=limit, qty=195))
        assert next_update(ws)["order-status"] == "AB01"
        for _ in range(1000):
            sim.publish(1, {2: ["43652"]})
            if sim.orders.order_book()[0]["status"] == "complete":
                break
        steps = [next_update(ws) for _ in range(3)]
    assert [(u["order-status"], u["orderData"]["filledshares"], u["orderData"]["unfilledshares"]) for u in steps] \
        == [("AB01", "65", "130"), ("AB01", "130", "65"), ("AB05", "195", "0")]
    assert all(u["orderData"]["averageprice"] == pytest.approx(limit) for u in steps)
    assert [t["fillsize"] for t in sim.orders.trade_book()] == ["65", "65", "65"]


def test_order_routes_are_rate_limited_with_plain_text_403(sim, session):
    headers = {"X-PrivateKey": sim.rest.credentials.api_key, "Authorization": session.feed.auth_token,
               "Content-Type": "application/json"}
    statuses, bodies = [], []

    def fire():
        for _ in range(10):
            r = requests.post(sim.rest.url + PLACE_PATH, data=json.dumps(order(sim)), headers=headers, timeout=10)
            statuses.append(r.status_code)
            bodies.append(r.text)

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 403 in statuses and statuses.count(200) >= 20
    assert RATE_LIMIT_TEXT in bodies[statuses.index(403)]
    assert sim.rest.rate_limited[PLACE_PATH] == statuses.count(403)
