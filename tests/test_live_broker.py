"""Live orders end to end: the real SmartConnect and the real order-update client against the simulator.

place -> ack -> update -> fill -> position, modify and cancel, every kind of
rejection, missed updates recovered from the order book, client-side pacing
under Angel One's rate limit, an unanswered request that must not be resent,
the kill switch, and a restart that restores from the journal.
"""
from __future__ import annotations

import time

import pytest

import kit
from conftest import wait_until
from kit.broker.live import PENDING
from kit.feed.live import ReconnectPolicy
from kit.store.journal import Journal
from kit.broker.risk import RiskLimits
from kit.sim.exchange import PLACE_PATH

pytestmark = pytest.mark.timeout(180)

TOKEN = "43650"
# Far-from-market LIMIT prices make resting orders here; the price collar has tests of its own.
LIMITS = RiskLimits(max_daily_loss=1_000_000, enforce_hours="never", price_collar=None)


def live_trader(sim, journal, *, arm=True, strategy=None, **overrides) -> kit.LiveTrader:
    settings = dict(feed="sim", paper=False, tokens={2: [TOKEN, "43651"]}, risk=LIMITS,
                    journal=kit.JournalConfig(str(journal)), name=f"live-{time.monotonic_ns()}")
    settings.update(overrides)
    trader = kit.LiveTrader(kit.TraderConfig(**settings), venue=kit.SimVenue(simulator=sim))
    if strategy is not None:
        trader.strategy = strategy
    trader.start()
    assert trader.wait_connected(10) and trader.broker.wait_ready(10)
    sim.wait_for_subscribers(1)
    if arm:
        trader.arm_live(confirm=sim.rest.credentials.client_code)
    return trader


def a_tick(sim, token=TOKEN) -> kit.Tick:
    return kit.Tick(token, 2, 1, 0, 0, sim.last_price(2, token))


def settled(trader, order_id, status=None):
    order = trader.broker.order(order_id)
    return order is not None and order.status != PENDING and (status is None or order.status == status)


def sim_order(sim, broker_order_id) -> dict:
    return next(o for o in sim.orders.order_book() if o["orderid"] == broker_order_id)


@pytest.fixture
def journal(tmp_path_factory):
    return tmp_path_factory.mktemp("journal") / "journal.sqlite"


# ---------------------------------------------------------------------------- the double opt-in
def test_live_is_opt_in_twice(sim, journal, in_tmp_cwd):
    paper = kit.LiveTrader(kit.TraderConfig(name="paper-default"))
    assert paper.config.paper and paper.broker.name == "paper"
    with pytest.raises(RuntimeError, match="paper"):
        paper.arm_live(confirm="SIM0001")
    paper.close()

    class Buyer(kit.Strategy):
        def on_tick(self, tick):
            return kit.Signal.buy(tick, 65)

    reasons = []
    trader = live_trader(sim, journal, arm=False, strategy=Buyer())
    trader.add_signal_listener(lambda s, reason: reasons.append(reason))
    try:
        sim.publish(2, {2: [TOKEN]})
        assert wait_until(lambda: len(reasons) == 2, 10)
        assert reasons == ["live trading is not armed: call trader.arm_live(confirm=<your client code>) first"] * 2
        order, reason = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert order is None and reason.startswith("live trading is not armed")
        # Even a direct broker call, past the risk checks, does not reach the exchange unarmed.
        direct = trader.broker.submit(kit.Signal.buy(a_tick(sim), 65))
        assert direct.status == "REJECTED" and direct.status_message.startswith("live trading is not armed")
        with pytest.raises(ValueError, match="client code"):
            trader.arm_live(confirm="SOMEONE-ELSE")
        assert not trader.status["armed"]
        assert sim.orders.order_book() == []
        trader.arm_live(confirm="SIM0001")
        assert trader.status["armed"]
        sim.publish(1, {2: [TOKEN]})
        assert wait_until(lambda: len(sim.orders.order_book()) == 1, 10)
        trader.disarm_live()
        sim.publish(1, {2: [TOKEN]})
        assert wait_until(lambda: len(reasons) == 4, 10)
        assert reasons[-1].startswith("live trading is not armed")
    finally:
        trader.close()


def test_arming_needs_a_daily_loss_limit(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal, arm=False, risk=RiskLimits(enforce_hours="never"))
    try:
        with pytest.raises(ValueError, match="max_daily_loss"):
            trader.arm_live(confirm="SIM0001")
    finally:
        trader.close()


def test_live_defaults_cap_the_order_rate_and_enforce_hours():
    trader = kit.LiveTrader(kit.TraderConfig(paper=False, name="defaults-only"))
    try:
        limits = trader.risk.limits
        assert limits.max_orders_per_second == 10 and limits.max_orders_per_minute == 250
        assert limits.enforce_hours == "live"
    finally:
        trader.close()


# ---------------------------------------------------------------------------- the order life cycle
def test_place_ack_update_fill_position(sim, journal, in_tmp_cwd):
    class BuyOnceSellOnce(kit.Strategy):
        def __init__(self):
            self.n = 0

        def on_tick(self, tick):
            self.n += 1
            if self.n == 1:
                return kit.Signal.buy(tick, 130, reason="entry")

    fills = []
    trader = live_trader(sim, journal, strategy=BuyOnceSellOnce())
    trader.broker.add_fill_listener(fills.append)
    try:
        sim.publish(1, {2: [TOKEN]})
        assert wait_until(lambda: len(trader.broker.orders_df()) == 1, 10)
        entry = trader.broker.orders_df().iloc[0]
        assert wait_until(lambda: settled(trader, entry.order_id, "COMPLETE"), 10), trader.broker.orders_df()
        order = trader.broker.order(entry.order_id)
        at_exchange = sim_order(sim, order.broker_order_id)
        assert at_exchange["ordertag"] == order.order_id                  # the kit's id travels as ordertag
        assert order.filled_qty == 130 and order.avg_price == pytest.approx(at_exchange["averageprice"])
        assert order.symbol == at_exchange["tradingsymbol"] and order.reason == "entry"
        assert wait_until(lambda: len(fills) == 1, 5)
        assert fills[0].qty == 130 and fills[0].price == pytest.approx(order.avg_price)
        assert trader.broker.position(TOKEN, 2).qty == 130
        assert sim.orders.positions()[0]["netqty"] == "130"

        exit_order, reason = trader.submit(kit.Signal.sell(a_tick(sim), 130))
        assert reason is None and exit_order.status == PENDING
        assert wait_until(lambda: settled(trader, exit_order.order_id, "COMPLETE"), 10)
        sold = trader.broker.order(exit_order.order_id)
        position = trader.broker.position(TOKEN, 2)
        assert position.qty == 0
        assert position.realized_pnl == pytest.approx((sold.avg_price - order.avg_price) * 130, abs=1e-6)
        assert float(sim.orders.positions()[0]["realised"]) == pytest.approx(position.realized_pnl, abs=0.01)
        assert trader.status["realized_pnl"] == pytest.approx(position.realized_pnl, abs=1e-6)
    finally:
        trader.close()
    # Journal: the intent was durable before anything came back from the exchange.
    kinds = [e["kind"] for e in Journal(journal).events() if e["client_id"] == entry.order_id]
    assert kinds[0] == "intent" and "ack" in kinds and "update" in kinds
    latency = trader.broker.latency_summary()
    assert {"submit_call", "journal", "rest", "submit_to_ack", "submit_to_fill"} <= set(latency.index)


def test_limit_order_modify_and_cancel(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    broker = trader.broker
    try:
        far, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65, limit=1.0))
        assert wait_until(lambda: settled(trader, far.order_id, "OPEN") and broker.order(far.order_id).broker_order_id, 10)
        assert broker.modify(far.order_id, price=1.5, qty=130)
        assert wait_until(lambda: broker.order(far.order_id).limit_price == 1.5, 10)
        assert broker.order(far.order_id).qty == 130
        assert broker.cancel(far.order_id)
        assert wait_until(lambda: settled(trader, far.order_id, "CANCELLED"), 10)
        assert not broker.cancel(far.order_id) and not broker.modify(far.order_id, price=2.0)
        assert sim_order(sim, broker.order(far.order_id).broker_order_id)["status"] == "cancelled"

        resting, _ = trader.submit(kit.Signal.sell(a_tick(sim), 65, limit=9999.0))
        assert wait_until(lambda: settled(trader, resting.order_id, "OPEN") and broker.order(resting.order_id).broker_order_id, 10)
        assert broker.modify(resting.order_id, price=0.05)               # now marketable: it fills
        assert wait_until(lambda: settled(trader, resting.order_id, "COMPLETE"), 10)
        assert broker.position(TOKEN, 2).qty == -65
    finally:
        trader.close()


def test_every_kind_of_rejection_says_why(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    try:
        local, reason = trader.submit(kit.Signal.buy(a_tick(sim), 10))
        assert local.status == "REJECTED" and reason == "qty 10 is not a multiple of the lot size 65 of " + \
            sim_symbol(sim)
        off_grid, reason = trader.submit(kit.Signal.buy(a_tick(sim), 65, limit=10.03))
        assert "not a multiple of the tick size 0.05" in reason
        unknown, reason = trader.submit(kit.Signal("12345678", "BUY", 1, exchange_type=2))
        assert reason == "token 12345678 is not in the instrument master for NFO"
        assert sim.orders.order_book() == []                              # none of them was sent

        sim.orders.reject_next("RMS:Margin Exceeds")
        margin, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert wait_until(lambda: settled(trader, margin.order_id, "REJECTED"), 10)
        assert trader.broker.order(margin.order_id).status_message == "RMS:Margin Exceeds"
    finally:
        trader.close()
    recorded = {o["client_id"]: o for o in Journal(journal).orders()}
    assert recorded[local.order_id]["status"] == "REJECTED"             # local rejections are journaled too
    assert "lot size" in recorded[local.order_id]["status_message"]


def sim_symbol(sim, token=TOKEN) -> str:
    return sim.orders.instruments[(2, token)].symbol


def test_a_refused_request_is_rejected_with_the_brokers_message(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal, product="NOPE")
    try:
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert wait_until(lambda: settled(trader, order.order_id), 10)
        assert trader.broker.order(order.order_id).status_message == "Invalid producttype 'NOPE' (AB1012)"
    finally:
        trader.close()


def test_partial_fills_become_separate_fills(sim, journal, in_tmp_cwd):
    sim.orders.fill_chunk = 65
    trader = live_trader(sim, journal)
    try:
        limit = round(sim.last_price(2, TOKEN) - 0.05, 2)
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), 195, limit=limit))
        assert wait_until(lambda: settled(trader, order.order_id, "OPEN"), 10)
        for _ in range(1000):
            sim.publish(1, {2: [TOKEN]})
            if sim.orders.order_book()[0]["status"] == "complete":
                break
        assert wait_until(lambda: settled(trader, order.order_id, "COMPLETE"), 10)
        fills = trader.broker.fills_df()
        assert list(fills["qty"]) == [65, 65, 65]
        assert fills["price"].tolist() == pytest.approx([limit] * 3)
        assert trader.broker.position(TOKEN, 2).qty == 195
    finally:
        trader.close()


# ---------------------------------------------------------------------------- failures
def test_updates_missed_while_the_socket_was_down_come_from_the_order_book(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal,
                         connection=kit.ConnectionConfig(reconnect=ReconnectPolicy(initial_delay=1.5, jitter=0)))
    stream = trader.broker.stream
    try:
        sim.orders.drop_connections()              # from now until the reconnect, updates are lost
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert wait_until(lambda: settled(trader, order.order_id, "COMPLETE"), 20), trader.broker.orders_df()
        assert wait_until(lambda: stream.stats.reconnects >= 1 and stream.stats.connected, 20)
    finally:
        trader.close()
    kinds = [e["kind"] for e in Journal(journal).events() if e["client_id"] == order.order_id]
    assert "orderbook" in kinds and "update" not in kinds


def test_the_pacer_keeps_every_window(monkeypatch):
    from kit.core.ratelimit import RateLimiter
    clock = [0.0]
    pacer = RateLimiter(((20, 1.0), (50, 60.0)), margin=0.25, monotonic=lambda: clock[0],
                        sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    sent = []
    for _ in range(120):
        pacer.wait()
        sent.append(clock[0])
        clock[0] += 0.001                         # each request takes a millisecond
    for i, t in enumerate(sent):
        assert sum(1 for u in sent[i:] if u - t < 1.25 - 1e-9) <= 20
        assert sum(1 for u in sent[i:] if u - t < 60.25 - 1e-9) <= 50
    assert sent[20] >= 1.25 and sent[50] >= 60.25


def test_many_orders_are_each_placed_exactly_once_under_the_rate_limit(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    try:
        orders = [trader.broker.submit(kit.Signal.buy(a_tick(sim), 65)) for _ in range(45)]
        assert all(o.status == PENDING for o in orders)
        assert wait_until(lambda: all(settled(trader, o.order_id, "COMPLETE") for o in orders), 60)
    finally:
        trader.close()
    tags = sorted(o["ordertag"] for o in sim.orders.order_book())
    assert tags == sorted(o.order_id for o in orders)                  # each exactly once
    print(f"\npacer waited {trader.broker.pacer.waited_s:.2f} s for 45 orders; "
          f"403s from the simulator: {sim.rest.rate_limited.get(PLACE_PATH, 0)}")


def test_a_rate_limited_request_is_retried_because_it_was_not_placed(sim, journal, in_tmp_cwd):
    sim.rest.limit(PLACE_PATH, 2, 1.0)             # a stricter exchange than the pacer expects
    trader = live_trader(sim, journal)
    try:
        orders = [trader.broker.submit(kit.Signal.buy(a_tick(sim), 65)) for _ in range(6)]
        assert wait_until(lambda: all(settled(trader, o.order_id, "COMPLETE") for o in orders), 60)
    finally:
        trader.close()
    assert sim.rest.rate_limited[PLACE_PATH] >= 1 and trader.broker.stats["rate_limited"] >= 1
    assert sorted(o["ordertag"] for o in sim.orders.order_book()) == sorted(o.order_id for o in orders)


def test_an_unanswered_place_is_never_resent_and_is_found_by_its_tag(sim, journal, in_tmp_cwd):
    slow_until = time.monotonic() + 60
    real_place = sim.orders._place

    def slow_place(req):
        if time.monotonic() < slow_until:
            time.sleep(1.0)                        # longer than the client's timeout below
        return real_place(req)

    trader = live_trader(sim, journal)
    try:
        sim.rest.route("POST", PLACE_PATH)(slow_place)
        trader.venue.session.client.timeout = 0.3
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert wait_until(lambda: trader.broker.stats["send_unknown"] == 1, 10)
        assert trader.broker.order(order.order_id).status == PENDING
        assert "no answer to the place request" in trader.broker.order(order.order_id).status_message
        assert wait_until(lambda: settled(trader, order.order_id, "COMPLETE"), 20), trader.broker.orders_df()
        assert len(sim.orders.order_book()) == 1                       # placed once, never twice
        assert trader.broker.order(order.order_id).broker_order_id == sim.orders.order_book()[0]["orderid"]
        # A cancel asked for while the outcome is unknown is sent once the order book names the order.
        resting, _ = trader.submit(kit.Signal.sell(a_tick(sim), 65, limit=9999.0))
        assert wait_until(lambda: trader.broker.stats["send_unknown"] == 2, 10)
        assert trader.broker.cancel(resting.order_id)
        assert wait_until(lambda: settled(trader, resting.order_id, "CANCELLED"), 20), trader.broker.orders_df()
        assert [o["status"] for o in sim.orders.order_book()] == ["complete", "cancelled"]
    finally:
        slow_until = 0
        trader.close()


def test_an_unreachable_broker_rejects_the_order_as_never_sent(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    try:
        sim.rest.stop()
        order, _ = trader.submit(kit.Signal.buy(a_tick(sim), 65))
        assert wait_until(lambda: settled(trader, order.order_id, "REJECTED"), 20)
        assert trader.broker.order(order.order_id).status_message.startswith("could not reach the broker")
    finally:
        trader.close()
        sim.rest.start()
    assert sim.orders.order_book() == []


# ---------------------------------------------------------------------------- kill switch and restart
def test_live_kill_switch_cancels_flattens_and_halts(sim, journal, in_tmp_cwd):
    class Buyer(kit.Strategy):
        def on_tick(self, tick):
            return kit.Signal.buy(tick, 65)

    reasons = []
    trader = live_trader(sim, journal)
    trader.add_signal_listener(lambda s, reason: reasons.append(reason))
    broker = trader.broker
    try:
        held, _ = trader.submit(kit.Signal.buy(a_tick(sim), 130))
        resting, _ = trader.submit(kit.Signal.buy(a_tick(sim, "43651"), 65, limit=0.05))
        assert wait_until(lambda: settled(trader, held.order_id, "COMPLETE") and
                          settled(trader, resting.order_id, "OPEN"), 10)
        trader.disarm_live()                       # the kill switch works unarmed: it only reduces risk
        report = trader.kill("test kill")
        assert report["cancelled"] == 1 and len(report["flatten_orders"]) == 1
        assert report["open_orders"] == 0 and report["positions"] == {}
        assert broker.order(resting.order_id).status == "CANCELLED"
        assert broker.position(TOKEN, 2).qty == 0
        assert {p["symboltoken"]: p["netqty"] for p in sim.orders.positions()} == {TOKEN: "0"}
        trader.arm_live(confirm="SIM0001")
        trader.strategy = Buyer()
        sim.publish(2, {2: [TOKEN]})
        assert wait_until(lambda: len(reasons) == 2, 10)
        assert reasons == ["trading halted: test kill"] * 2
        assert trader.status["halted"]
    finally:
        trader.close()


def test_a_restarted_trader_restores_orders_and_positions_from_the_journal(sim, journal, in_tmp_cwd):
    trader = live_trader(sim, journal)
    try:
        filled, _ = trader.submit(kit.Signal.buy(a_tick(sim), 130))
        resting, _ = trader.submit(kit.Signal.sell(a_tick(sim), 65, limit=9999.0))
        assert wait_until(lambda: settled(trader, filled.order_id, "COMPLETE") and
                          settled(trader, resting.order_id, "OPEN"), 10)
        before = trader.broker.orders_df()
    finally:
        trader.close()
    again = kit.LiveTrader(kit.TraderConfig(feed="sim", paper=False, tokens={2: [TOKEN]}, risk=LIMITS,
                                            journal=kit.JournalConfig(str(journal)), name="restarted"),
                           venue=kit.SimVenue(simulator=sim))
    try:
        # Restored at construction, before any login:
        position = again.broker.position(TOKEN, 2)
        assert position.qty == 130
        # Marked at its fill until a tick comes, not at 0 (which would show the whole position as lost).
        assert position.last_price == position.avg_price and position.unrealized_pnl == 0
        assert [o.order_id for o in again.broker.open_orders()] == [resting.order_id]
        restored = again.broker.orders_df()
        assert restored[["order_id", "status", "filled_qty", "avg_price", "broker_order_id"]].equals(
            before[["order_id", "status", "filled_qty", "avg_price", "broker_order_id"]])
        again.start()
        assert again.broker.wait_ready(10)
        assert wait_until(lambda: again.broker.stats["reconciles"] >= 1, 10)
        assert again.broker.orders_df()[["order_id", "status", "filled_qty"]].equals(
            before[["order_id", "status", "filled_qty"]])              # nothing duplicated or lost
        assert again.broker.cancel(resting.order_id)                   # and it can still be managed
        assert wait_until(lambda: settled(again, resting.order_id, "CANCELLED"), 10)
        assert len(sim.orders.order_book()) == 2
    finally:
        again.close()


def test_the_journal_scrubs_long_secrets_but_never_corrupts_numbers(tmp_path, monkeypatch):
    import kit.store.journal
    from kit.angel.sdk import SecretRedactor
    redactor = SecretRedactor()                                     # this test's own: the global one is forever
    redactor.register("4242", "123456", "LONG-SECRET-KEY-0099")    # a PIN, a TOTP code, an API key
    monkeypatch.setattr(kit.store.journal, "redactor", redactor)
    journal = Journal(tmp_path / "j.sqlite")
    journal.record("update", client_id="k1", payload={"orderid": "261126004242123456", "price": 4242.5,
                                                      "text": "echo LONG-SECRET-KEY-0099", "ns": 1234564242})
    journal.close()
    event = Journal(tmp_path / "j.sqlite").events()[0]["payload"]
    assert event == {"orderid": "261126004242123456", "price": 4242.5, "text": "echo ***", "ns": 1234564242}
