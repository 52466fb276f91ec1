"""The simulated exchange's stop-loss orders, brackets (ROBO), GTT rules, margin, RMS limits and charges
estimate, through the real SmartConnect logged in against the simulator.

Prices are driven with ``sim.trade_at`` on a ``rate=0`` simulator: nothing else moves them, and the
exchange has judged each tick when the call returns. Order updates are read from the order socket.
"""
from __future__ import annotations

import contextlib
import json

import pytest
from websockets.sync.client import connect

from conftest import wait_until
from kit.angel.session import Credentials, login
from kit.core.charges import Charges
from kit.core.margin import margin_required
from kit.core.orders import bracket_legs

pytestmark = pytest.mark.timeout(120)

NFO, NSE = 2, 1
OPTION = "43650"        # a NIFTY weekly call in the simulator's master: lot 65, tick 0.05, strike 23,900


@pytest.fixture
def session(sim):
    return _login(sim)


def _login(sim):
    c = sim.rest.credentials
    return login(Credentials(c.api_key, c.client_code, c.pin, c.totp_secret), root=sim.rest.url)


def symbol(sim, token: str) -> str:
    return next(i.symbol for (ex, t), i in sim.orders.instruments.items() if t == token)


def order(sim, token=OPTION, side="BUY", qty=65, kind="MARKET", price=None, trigger=None, variety=None,
          exchange="NFO", product="INTRADAY", tag="t1", **extra) -> dict:
    stop = kind.startswith("STOPLOSS")
    params = {"variety": variety or ("STOPLOSS" if stop else "NORMAL"), "tradingsymbol": symbol(sim, token),
              "symboltoken": token, "transactiontype": side, "exchange": exchange, "ordertype": kind,
              "producttype": product, "duration": "DAY", "quantity": str(qty), "ordertag": tag,
              "price": f"{price:.2f}" if price is not None else "0"}
    if trigger is not None:
        params["triggerprice"] = f"{trigger:.2f}"
    params.update(extra)
    return params


@contextlib.contextmanager
def updates(sim, jwt: str):
    """An order-update connection whose AB00 greeting has been read."""
    with connect(sim.orders.url, additional_headers={"Authorization": jwt}, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["order-status"] == "AB00"
        yield ws


def next_update(ws) -> tuple[str, dict]:
    message = json.loads(ws.recv(timeout=10))
    return message["order-status"], message["orderData"]


def place(client, params) -> str:
    reply = client.placeOrderFullResponse(params)
    assert reply["status"] is True, reply
    return reply["data"]["orderid"]


def row(sim, order_id: str) -> dict:
    return next(o for o in sim.orders.order_book() if o["orderid"] == order_id)


def modify(sim, order_id, kind, qty=65, price=0.0, trigger=None, variety="STOPLOSS") -> dict:
    params = {"variety": variety, "orderid": order_id, "ordertype": kind, "producttype": "INTRADAY",
              "duration": "DAY", "price": f"{price:.2f}", "quantity": str(qty),
              "tradingsymbol": symbol(sim, OPTION), "symboltoken": OPTION, "exchange": "NFO"}
    if trigger is not None:
        params["triggerprice"] = f"{trigger:.2f}"
    return params


def retry(call, timeout: float = 5.0):
    """``call()``'s answer, asked again while the route's rate limit refuses it (a plain-text 403)."""
    answer = []

    def attempt():
        try:
            answer.append(call())
            return True
        except Exception:
            return False
    assert wait_until(attempt, timeout), "the call kept failing"
    return answer[0]


# --------------------------------------------------------------------------- stop-loss orders
def test_a_stop_market_sell_triggers_on_the_first_tick_at_or_below_its_trigger_and_fills_there(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        order_id = place(session.client, order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=98.0))
        code, data = next_update(ws)
        assert (code, data["status"], data["triggerprice"], data["variety"]) == \
            ("AB10", "trigger pending", 98.0, "STOPLOSS")
        sim.trade_at(NFO, OPTION, 98.05)                  # above the trigger: nothing happens
        assert row(sim, order_id)["status"] == "trigger pending"
        sim.trade_at(NFO, OPTION, 97.55)                  # the first tick at or below 98
        opened, done = next_update(ws), next_update(ws)
    assert (opened[0], opened[1]["status"]) == ("AB01", "open")
    assert (done[0], done[1]["status"], done[1]["orderid"]) == ("AB05", "complete", order_id)
    assert done[1]["averageprice"] == pytest.approx(97.55)
    book = row(sim, order_id)
    assert (book["status"], book["triggerprice"], book["variety"], book["ordertype"], book["price"]) == \
        ("complete", 98.0, "STOPLOSS", "STOPLOSS_MARKET", 0.0)
    assert [(p["symboltoken"], p["netqty"]) for p in sim.orders.positions()] == [(OPTION, "-65")]


def test_a_stop_already_through_the_price_is_rejected_and_a_malformed_one_refused(sim, session):
    client = session.client
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        place(client, order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=100.5))
        code, data = next_update(ws)
        assert code == "AB03" and data["status"] == "rejected"
        assert "trigger price should be below the last traded price" in data["text"].lower()
        place(client, order(sim, side="BUY", kind="STOPLOSS_LIMIT", trigger=100.0, price=100.5))
        code, data = next_update(ws)
        assert code == "AB03" and "trigger price should be above the last traded price" in data["text"].lower()
        place(client, order(sim, side="BUY", kind="STOPLOSS_LIMIT", trigger=101.0, price=100.5))
        code, data = next_update(ws)      # a BUY stop's limit below its trigger
        assert code == "AB03" and "less than or equal to the limit price" in data["text"]
    for bad in (order(sim, side="SELL", kind="STOPLOSS_MARKET"),                   # no trigger
                order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=0.0),
                order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=95.0, variety="NORMAL"),
                order(sim, side="SELL", kind="LIMIT", price=95.0, variety="STOPLOSS")):
        reply = client.placeOrderFullResponse(bad)
        assert reply["status"] is False and reply["errorcode"] == "AB4001", (bad, reply)
    assert [o["status"] for o in sim.orders.order_book()] == ["rejected"] * 3


def test_a_stop_limit_rests_when_the_market_gaps_past_its_limit_then_fills_at_its_limit(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        order_id = place(session.client, order(sim, side="SELL", kind="STOPLOSS_LIMIT", trigger=98.0, price=97.5))
        assert next_update(ws)[0] == "AB10"
        sim.trade_at(NFO, OPTION, 97.0)                   # triggers, but 97.0 is below the SELL limit 97.5
        code, data = next_update(ws)
        assert (code, data["status"], data["filledshares"]) == ("AB01", "open", "0")
        sim.trade_at(NFO, OPTION, 97.45)                  # still below the limit
        assert row(sim, order_id)["status"] == "open"
        sim.trade_at(NFO, OPTION, 97.7)                   # crosses the limit: fills at the limit
        code, data = next_update(ws)
    assert (code, data["status"]) == ("AB05", "complete")
    assert data["averageprice"] == pytest.approx(97.5) and data["price"] == 97.5 and data["triggerprice"] == 98.0


def test_a_stop_limit_that_triggers_marketable_fills_at_the_ticks_price(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        place(session.client, order(sim, side="BUY", kind="STOPLOSS_LIMIT", trigger=102.0, price=103.0))
        assert next_update(ws)[0] == "AB10"
        sim.trade_at(NFO, OPTION, 102.3)
        assert next_update(ws)[0] == "AB01"
        code, data = next_update(ws)
    assert code == "AB05" and data["averageprice"] == pytest.approx(102.3)


def test_modifying_the_trigger_shows_in_the_book_and_changes_when_it_fires(sim, session):
    client = session.client
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        order_id = place(client, order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=95.0))
        assert next_update(ws)[0] == "AB10"
        assert client.modifyOrder(modify(sim, order_id, "STOPLOSS_MARKET", trigger=98.0))["status"] is True
        code, data = next_update(ws)
        assert (code, data["triggerprice"]) == ("AB04", 98.0)
        assert (row(sim, order_id)["status"], row(sim, order_id)["triggerprice"]) == ("trigger pending", 98.0)
        # A trigger the price has already passed is refused; the order keeps its trigger.
        refused = client.modifyOrder(modify(sim, order_id, "STOPLOSS_MARKET", trigger=100.5))
        assert refused["status"] is False and "below the last traded price" in refused["message"]
        refused = client.modifyOrder(modify(sim, order_id, "LIMIT", price=99.0, variety="NORMAL"))
        assert refused["status"] is False and "stop-loss types" in refused["message"]
        assert row(sim, order_id)["triggerprice"] == 98.0
        sim.trade_at(NFO, OPTION, 97.9)                   # would not have reached the old trigger, 95
        assert next_update(ws)[0] == "AB01"
        code, data = next_update(ws)
    assert code == "AB05" and data["averageprice"] == pytest.approx(97.9)


def test_a_pending_stop_can_be_cancelled(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        order_id = place(session.client, order(sim, side="SELL", kind="STOPLOSS_MARKET", trigger=95.0))
        assert next_update(ws)[0] == "AB10"
        assert session.client.cancelOrder(order_id, "STOPLOSS")["status"] is True
        code, data = next_update(ws)
        assert (code, data["status"]) == ("AB02", "cancelled")
        sim.trade_at(NFO, OPTION, 90.0)
    assert row(sim, order_id)["status"] == "cancelled" and sim.orders.trade_book() == []


# --------------------------------------------------------------------------- brackets
def test_a_bracket_entry_fill_places_both_legs_and_the_target_filling_cancels_the_stop(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        entry = place(session.client, order(sim, variety="ROBO", product="BO", tag="br1",
                                            squareoff="2.00", stoploss="1.00", trailingStopLoss="0"))
        steps = [next_update(ws) for _ in range(4)]
        assert [(code, d["orderid"] == entry) for code, d in steps[:2]] == [("AB01", True), ("AB05", True)]
        assert steps[1][1]["averageprice"] == pytest.approx(100.0)
        (t_code, target), (s_code, stop) = steps[2], steps[3]
        want_target, want_stop = bracket_legs("BUY", 65, 100.0, 2.0, 1.0, 0.05)
        assert (t_code, target["ordertype"], target["transactiontype"], target["price"], target["quantity"]) == \
            ("AB01", "LIMIT", "SELL", want_target.limit_price, "65")
        assert (s_code, stop["ordertype"], stop["transactiontype"], stop["triggerprice"], stop["status"]) == \
            ("AB10", "STOPLOSS_MARKET", "SELL", want_stop.trigger_price, "trigger pending")
        for leg in (target, stop):
            assert (leg["parentorderid"], leg["ordertag"], leg["variety"], leg["producttype"]) == \
                (entry, "", "ROBO", "BO")
        sim.trade_at(NFO, OPTION, 102.1)                  # crosses the target (a resting SELL at 102)
        done, cancelled = next_update(ws), next_update(ws)
    assert (done[0], done[1]["orderid"], done[1]["averageprice"]) == ("AB05", target["orderid"], 102.0)
    assert (cancelled[0], cancelled[1]["orderid"]) == ("AB02", stop["orderid"])
    assert f"other leg of bracket {entry} filled" in cancelled[1]["text"]
    position = sim.orders.positions()[0]
    assert (position["netqty"], position["realised"]) == ("0", f"{2.0 * 65:.2f}")


def test_a_bracket_stop_firing_cancels_the_target(sim, session):
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        entry = place(session.client, order(sim, side="SELL", kind="LIMIT", price=100.0, variety="ROBO",
                                            squareoff="2.00", stoploss="1.00"))
        steps = [next_update(ws) for _ in range(4)]       # entry open, complete; target; stop
        target, stop = steps[2][1], steps[3][1]
        assert (target["price"], stop["triggerprice"], target["transactiontype"]) == (98.0, 101.0, "BUY")
        sim.trade_at(NFO, OPTION, 101.2)
        fired = [next_update(ws) for _ in range(3)]
    assert [(code, d["orderid"]) for code, d in fired] == \
        [("AB01", stop["orderid"]), ("AB05", stop["orderid"]), ("AB02", target["orderid"])]
    assert fired[1][1]["averageprice"] == pytest.approx(101.2)
    assert f"other leg of bracket {entry} filled" in fired[2][1]["text"]
    assert sim.orders.positions()[0]["netqty"] == "0"


def test_a_bracket_entry_cancelled_before_it_fills_has_no_legs_and_malformed_ones_are_refused(sim, session):
    client = session.client
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        entry = place(client, order(sim, kind="LIMIT", price=90.0, variety="ROBO", squareoff="2", stoploss="1"))
        assert next_update(ws)[0] == "AB01"
        assert client.cancelOrder(entry, "ROBO")["status"] is True
        assert next_update(ws)[0] == "AB02"
        sim.trade_at(NFO, OPTION, 89.0)
    assert [(o["orderid"], o["status"]) for o in sim.orders.order_book()] == [(entry, "cancelled")]
    for bad in (order(sim, variety="ROBO", squareoff="2"),                         # no stoploss
                order(sim, variety="ROBO", squareoff="0", stoploss="1"),
                order(sim, variety="ROBO", squareoff="2", stoploss="1", product="DELIVERY"),
                order(sim, product="BO")):                                         # BO is for ROBO only
        reply = client.placeOrderFullResponse(bad)
        assert reply["status"] is False and reply["errorcode"] in ("AB4001", "AB1012"), (bad, reply)


# --------------------------------------------------------------------------- GTT rules
def _rule(sim, trigger, price, side="BUY", qty=65) -> dict:
    return {"tradingsymbol": symbol(sim, OPTION), "symboltoken": OPTION, "exchange": "NFO",
            "transactiontype": side, "producttype": "CARRYFORWARD", "price": price, "qty": qty,
            "triggerprice": trigger, "disclosedqty": 0, "timeperiod": 365}


def test_a_gtt_rule_is_listed_modified_and_fires_once_on_a_crossing_tick(sim, session):
    client = session.client
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        rule_id = client.gttCreateRule(_rule(sim, trigger=95.0, price=95.5))["data"]["id"]   # as the SDK reads it
        assert isinstance(rule_id, str) and rule_id
        listed = client.gttLists(["NEW"], 1, 10)["data"]
        assert [(r["id"], r["status"], r["triggerprice"], r["price"], r["qty"]) for r in listed] == \
            [(rule_id, "NEW", 95.0, 95.5, 65)]
        details = client.gttDetails(rule_id)["data"]
        for name in ("id", "tradingsymbol", "symboltoken", "exchange", "transactiontype", "producttype", "price",
                     "qty", "triggerprice", "disclosedqty", "status", "createddate", "updateddate", "expirydate",
                     "clientid"):
            assert name in details, name
        assert details["clientid"] == sim.rest.credentials.client_code
        assert client.gttModifyRule({"id": rule_id, "symboltoken": OPTION, "exchange": "NFO", "price": 96.5,
                                     "qty": 65, "triggerprice": 96.0, "disclosedqty": 0,
                                     "timeperiod": 365})["data"]["id"] == rule_id
        assert client.gttDetails(rule_id)["data"]["triggerprice"] == 96.0
        sim.trade_at(NFO, OPTION, 96.5)                   # above the new trigger
        assert client.gttDetails(rule_id)["data"]["status"] == "NEW" and sim.orders.order_book() == []
        sim.trade_at(NFO, OPTION, 95.95)                  # crosses it downwards: the rule fires
        (opened, data), (done, filled) = next_update(ws), next_update(ws)
        sim.trade_at(NFO, OPTION, 90.0)                   # once only
    assert (opened, data["ordertype"], data["price"], data["variety"], data["transactiontype"]) == \
        ("AB01", "LIMIT", 96.5, "NORMAL", "BUY")
    assert (done, filled["averageprice"], filled["producttype"]) == ("AB05", 95.95, "CARRYFORWARD")
    fired = client.gttDetails(rule_id)["data"]
    assert (fired["status"], fired["orderid"]) == ("SENTTOEXCHANGE", data["orderid"])
    assert len(sim.orders.order_book()) == 1
    assert [(p["symboltoken"], p["netqty"]) for p in sim.orders.positions()] == [(OPTION, "65")]
    # A fired rule cannot be changed (KitSmartConnect returns the refusal as it came: SDK adapter 24).
    refused = client.gttModifyRule({"id": rule_id, "symboltoken": OPTION, "exchange": "NFO", "price": 90.0,
                                    "qty": 65, "triggerprice": 89.0})
    assert refused["status"] is False and "SENTTOEXCHANGE" in refused["message"]


def test_a_cancelled_gtt_rule_lists_as_cancelled_and_never_fires(sim, session):
    client = session.client
    sim.trade_at(NFO, OPTION, 100.0)
    first = client.gttCreateRule(_rule(sim, trigger=105.0, price=104.0, side="SELL"))["data"]["id"]
    second = client.gttCreateRule(_rule(sim, trigger=110.0, price=109.0, side="SELL"))["data"]["id"]
    cancelled = client.gttCancelRule({"id": first, "symboltoken": OPTION, "exchange": "NFO"})
    assert cancelled["status"] is True
    assert [(r["id"], r["status"]) for r in client.gttLists(["CANCELLED"], 1, 10)["data"]] == [(first, "CANCELLED")]
    everything = client.gttLists(["NEW", "SENTTOEXCHANGE", "CANCELLED"], 1, 10)["data"]
    assert [r["id"] for r in everything] == [second, first]                      # newest first
    assert [r["id"] for r in client.gttLists(["NEW", "CANCELLED"], 2, 1)["data"]] == [first]
    sim.trade_at(NFO, OPTION, 106.0)
    assert sim.orders.order_book() == []
    again = client.gttCancelRule({"id": first, "symboltoken": OPTION, "exchange": "NFO"})
    assert again["status"] is False


# --------------------------------------------------------------------------- margin, RMS, charges
def test_the_margin_api_answers_for_an_nse_intraday_buy_and_an_nfo_option_sell(sim, session):
    client = session.client
    sbin = {"exchange": "NSE", "qty": 10, "price": 800, "productType": "INTRADAY", "token": "3045",
            "tradeType": "BUY", "orderType": "LIMIT"}
    short_call = {"exchange": "NFO", "qty": 65, "price": 120.5, "productType": "CARRYFORWARD", "token": "43652",
                  "tradeType": "SELL", "orderType": "LIMIT"}
    answer = client.getMarginApi({"positions": [sbin]})["data"]
    assert answer["totalMarginRequired"] == pytest.approx(margin_required(NSE, "INTRADAY", "BUY", 10, 800.0))
    assert answer["totalMarginRequired"] == pytest.approx(1600.0)
    strike = sim.orders.instruments[(NFO, "43652")].strike
    answer = client.getMarginApi({"positions": [short_call]})["data"]
    assert answer["totalMarginRequired"] == pytest.approx(
        margin_required(NFO, "CARRYFORWARD", "SELL", 65, 120.5, "OPTIDX", strike))
    assert answer["marginComponents"]["spanMargin"] == pytest.approx(answer["totalMarginRequired"])
    # No price: the option's current price; a buy pays its premium.
    sim.trade_at(NFO, "43652", 80.0)
    answer = client.getMarginApi({"positions": [dict(short_call, tradeType="BUY", price=0), sbin]})["data"]
    assert answer["totalMarginRequired"] == pytest.approx(80.0 * 65 + 1600.0)
    assert answer["marginComponents"]["totOptionsPremium"] == pytest.approx(80.0 * 65)
    refused = client.getMarginApi({"positions": [dict(sbin, tradeType="HOLD")]})
    assert refused["status"] is False and refused["errorcode"] == "AB4001"


@pytest.fixture
def small_account():
    from kit.sim.server import Simulator
    s = Simulator(rate=0, funds=200_000).start()
    yield s
    s.stop()


def test_an_order_beyond_the_funds_is_rejected_while_an_exit_of_the_same_size_passes(small_account):
    sim = small_account
    assert sim.orders.funds == 200_000
    session = _login(sim)
    sim.trade_at(NSE, "3045", 500.0)
    buy = order(sim, token="3045", exchange="NSE", qty=1500)     # 1500 x 500 x 20 % = 150,000 of 200,000
    with updates(sim, session.feed.auth_token) as ws:
        place(session.client, buy)
        assert [next_update(ws)[0] for _ in range(2)] == ["AB01", "AB05"]
        place(session.client, buy)                                # another 150,000: 50,000 are left
        code, data = next_update(ws)
        assert (code, data["status"]) == ("AB03", "rejected")
        assert data["text"].startswith("RMS:Margin Exceeds")
        assert "Required:150000.00" in data["text"] and "Available:50000.00" in data["text"]
        place(session.client, dict(buy, transactiontype="SELL"))  # the exit needs no margin
        assert [next_update(ws)[0] for _ in range(2)] == ["AB01", "AB05"]
        place(session.client, buy)                                # the margin was freed
        assert [next_update(ws)[0] for _ in range(2)] == ["AB01", "AB05"]
    assert [o["status"] for o in sim.orders.order_book()] == ["complete", "rejected", "complete", "complete"]


def test_get_rms_falls_by_the_blocked_margin_after_a_fill(sim, session):
    client = session.client
    before = retry(client.rmsLimit)["data"]
    assert float(before["net"]) == pytest.approx(10_000_000.0) and float(before["utiliseddebits"]) == 0.0
    for name in ("net", "availablecash", "availableintradaypayin", "availablelimitmargin", "collateral",
                 "m2munrealized", "m2mrealized", "utiliseddebits", "utilisedspan", "utilisedoptionpremium"):
        assert isinstance(before[name], str), name
    sim.trade_at(NFO, OPTION, 100.0)
    with updates(sim, session.feed.auth_token) as ws:
        place(client, order(sim))                                        # 65 at 100: 6,500 of premium
        assert [next_update(ws)[0] for _ in range(2)] == ["AB01", "AB05"]
        place(client, order(sim, kind="LIMIT", price=90.0, side="BUY"))  # open: 65 x 90 more blocked
        assert next_update(ws)[0] == "AB01"
    after = retry(client.rmsLimit)["data"]
    blocked = 6_500.0 + 5_850.0
    assert float(after["utiliseddebits"]) == pytest.approx(blocked)
    assert float(after["utilisedoptionpremium"]) == pytest.approx(blocked)
    assert float(after["net"]) == pytest.approx(10_000_000.0 - blocked)
    assert float(before["net"]) - float(after["net"]) == pytest.approx(blocked)


def test_estimate_charges_is_the_kit_model_in_angel_ones_shape(sim, session):
    client = session.client
    option_sell = {"product_type": "CARRYFORWARD", "transaction_type": "SELL", "quantity": "65",
                   "price": "120.50", "exchange": "NFO", "symbol_name": symbol(sim, "43652"), "token": "43652"}
    cash_buy = {"product_type": "INTRADAY", "transaction_type": "BUY", "quantity": "10", "price": "800",
                "exchange": "NSE", "symbol_name": "SBIN-EQ", "token": "3045"}
    model = [Charges().for_fill(NFO, "43652", "SELL", 65, 120.5, "CARRYFORWARD", instrument="OPTIDX"),
             Charges().for_fill(NSE, "3045", "BUY", 10, 800.0, "INTRADAY")]
    assert [m.segment for m in model] == ["NFO_OPT", "NSE_EQ_INTRADAY"]
    data = client.estimateCharges({"orders": [option_sell, cash_buy]})["data"]
    for got, want in zip(data["charges"], model):
        assert got["total_charges"] == pytest.approx(want.total)
        assert got["trade_value"] == pytest.approx(want.turnover)
        parts = {b["name"]: b for b in got["breakup"]}
        assert parts["Angel One Brokerage"]["amount"] == pytest.approx(want.brokerage)
        external = {b["name"]: b["amount"] for b in parts["External Charges"]["breakup"]}
        assert external == pytest.approx({"Exchange Transaction Charges": want.exchange + want.ipft,
                                          "SEBI Fees": want.sebi, "Stamp Duty": want.stamp})
        taxes = {b["name"]: b["amount"] for b in parts["Taxes"]["breakup"]}
        assert taxes == pytest.approx({"Security Transaction Tax": want.stt, "GST": want.gst})
        assert sum(b["amount"] for b in got["breakup"]) == pytest.approx(want.total)
    assert data["summary"]["total_charges"] == pytest.approx(sum(m.total for m in model))
    assert data["summary"]["trade_value"] == pytest.approx(65 * 120.5 + 8_000.0)
    # The simulator's estimate can be made to differ from the kit's model, as Angel One's real one does.
    sim.orders.estimate_bias = 0.1
    biased = client.estimateCharges({"orders": [cash_buy]})["data"]
    assert biased["summary"]["total_charges"] == pytest.approx(model[1].total * 1.1)
