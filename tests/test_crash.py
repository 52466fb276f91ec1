"""``kill -9`` a live trading subprocess mid-run; the journal, reloaded and reconciled, equals the exchange.

The simulator runs in this process; the trader in a subprocess, with real
credentials from its environment, the real SmartConnect and the real
order-update client. After SIGKILL:

1. every order the exchange ever received is in the journal (written before sending);
2. nothing in the journal claims more than the exchange did;
3. a restarted trader, from the journal and one reconciliation, agrees with the
   exchange's order book and positions, order by order, and so does the journal file;
4. no credential is in the journal or in anything the subprocess printed or logged.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import kit
from conftest import wait_until
from kit.store.journal import Journal
from kit.broker.risk import RiskLimits
from kit.sim.server import Simulator

pytestmark = pytest.mark.timeout(240)

CHILD = Path(__file__).resolve().parent / "crash_child.py"
STATUS = {"complete": "COMPLETE", "open": "OPEN", "cancelled": "CANCELLED", "rejected": "REJECTED",
          "modified": "OPEN"}


def _reader(stream, lines: list) -> threading.Thread:
    t = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    t.start()
    return t


def _compare(orders: dict, book: list[dict]) -> list[str]:
    """Differences between the kit's orders ({client_id: record}) and the exchange's order book."""
    problems = []
    for row in book:
        mine = orders.get(row["ordertag"])
        if mine is None:
            problems.append(f"{row['ordertag']} at the exchange but not in the journal")
            continue
        expected = (row["orderid"], STATUS[row["status"]], int(row["filledshares"]))
        got = (mine["broker_order_id"], mine["status"], mine["filled_qty"])
        if got != expected:
            problems.append(f"{row['ordertag']}: kit {got}, exchange {expected}")
        elif mine["filled_qty"] and abs(mine["avg_price"] - row["averageprice"]) > 1e-6:
            problems.append(f"{row['ordertag']}: average price {mine['avg_price']} vs {row['averageprice']}")
    at_exchange = {row["ordertag"] for row in book}
    for client_id, mine in orders.items():
        if client_id not in at_exchange and mine["status"] not in ("REJECTED", "CANCELLED"):
            problems.append(f"{client_id} never reached the exchange but is {mine['status']}")
    return problems


def test_journal_equals_the_exchange_after_kill_9_and_a_restart(tmp_path, in_tmp_cwd, monkeypatch):
    journal_path = tmp_path.parent / f"{tmp_path.name}-journal" / "crash.sqlite"
    sim = Simulator(rate=30).start()
    # A PIN long and odd enough that finding it means a leak, not a coincidence in a timestamp.
    creds = sim.rest.credentials = dataclasses.replace(sim.rest.credentials, pin="PIN-CANARY-8d2f")
    secrets_ = [creds.api_key, creds.pin, creds.totp_secret, creds.jwt, creds.refresh_token, creds.feed_token]
    env = dict(os.environ, **creds.env())
    child = subprocess.Popen([sys.executable, str(CHILD), sim.rest.url, sim.url, sim.orders.url,
                              sim.orders.master_url, str(journal_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=tmp_path)        # in_tmp_cwd: the child must write nothing there either
    out, err = [], []
    readers = [_reader(child.stdout, out), _reader(child.stderr, err)]
    try:
        assert wait_until(lambda: "READY\n" in out or child.poll() is not None, 60), (out, err[-20:])
        assert "READY\n" in out, (out, "".join(err[-40:]))
        # Let it trade, then kill it without warning, mid-stream.
        assert wait_until(lambda: len(sim.orders.order_book()) >= 60, 90), len(sim.orders.order_book())
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
        for r in readers:
            r.join(10)
        sim.set_rate(0)                       # freeze prices: resting orders stay as they are
        book = sim.orders.order_book()

        # 1 and 2: the journal as the killed process left it.
        crashed = {o["client_id"]: o for o in Journal(journal_path).orders()}
        assert {row["ordertag"] for row in book} <= set(crashed), "an order reached the exchange unjournaled"
        by_broker_id = {row["orderid"]: row for row in book}
        for o in crashed.values():
            row = by_broker_id.get(o["broker_order_id"]) if o["broker_order_id"] else None
            if row is not None:
                assert o["filled_qty"] <= int(row["filledshares"]), (o, row)
            else:
                assert o["filled_qty"] == 0 and o["status"] in ("PENDING", "REJECTED", "CANCELLED"), o
        pending_at_crash = sum(o["status"] == "PENDING" for o in crashed.values())

        # 3: a restarted trader reloads the journal and reconciles with the exchange.
        for key, value in creds.env().items():
            monkeypatch.setenv(key, value)
        restarted = kit.LiveTrader(kit.TraderConfig(
            feed="smartapi", paper=False, tokens={2: ["43650"]},
            connection=kit.ConnectionConfig(env_file=None, rest_url=sim.rest.url, feed_url=sim.url,
                                            order_update_url=sim.orders.url, instruments_url=sim.orders.master_url),
            journal=kit.JournalConfig(str(journal_path)), risk=RiskLimits(max_daily_loss=1e9, enforce_hours="never"),
            name="crash-restart"))
        broker = restarted.broker
        assert broker.restored["orders"] == len(crashed)
        try:
            restarted.start()
            assert broker.wait_ready(20)
            reconciled = lambda: broker.stats["reconciles"] >= 1 and not any(  # noqa: E731
                o.status == "PENDING" for o in broker.open_orders())
            assert wait_until(reconciled, 60), broker.orders_df()
            live = {row.order_id: row._asdict() for row in broker.orders_df().itertuples(index=False)}
            assert _compare(live, book) == []
            positions = {p["symboltoken"]: int(p["netqty"]) for p in sim.orders.positions()}
            mine = {token: p.qty for (ex, token), p in broker.positions.items()}
            assert mine == positions
        finally:
            restarted.close()
        reopened = Journal(journal_path)
        assert _compare({o["client_id"]: o for o in reopened.orders()}, book) == []
        assert {p["token"]: p["qty"] for p in reopened.positions()} == positions
        print(f"\n{len(book)} orders at the exchange, {len(crashed)} in the journal at the kill "
              f"({pending_at_crash} PENDING), {len(reopened.fills())} fills; "
              f"{sum(o['status'] == 'OPEN' for o in reopened.orders())} still open")
    finally:
        if child.poll() is None:
            child.kill()
        sim.stop()

    # 4: the canary.
    stored = b"".join(p.read_bytes() for p in journal_path.parent.iterdir())
    printed = "".join(out) + "".join(err)
    assert "placeOrder" in printed                                 # the subprocess did log its requests...
    for secret in secrets_:
        assert secret not in printed, f"a credential in the subprocess output: {secret[:6]}…"
        assert secret.encode() not in stored, f"a credential in the journal: {secret[:6]}…"
