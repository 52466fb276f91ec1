"""A live trader whose journal's disk fills up (a file-size limit), then the kill switch.

Run by tests/test_live_safety.py in its own process, because the limit is
per process. Prints one JSON line of what it observed.
"""
from __future__ import annotations

import json
import resource
import signal
import sys
import time

import kit
from kit.broker.risk import RiskLimits
from kit.sim.server import Simulator

TOKEN = "43650"


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def main(journal_path: str) -> None:
    sim = Simulator(rate=0).start()
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="sim", paper=False, tokens={2: [TOKEN]}, journal=kit.JournalConfig(journal_path), name="full-disk",
        risk=RiskLimits(max_daily_loss=1e9, enforce_hours="never")), venue=kit.SimVenue(simulator=sim))
    trader.start()
    assert trader.wait_connected(10) and trader.broker.wait_ready(10)
    trader.arm_live(confirm=sim.rest.credentials.client_code)
    tick = kit.Tick(TOKEN, 2, 1, 0, 0, sim.last_price(2, TOKEN))
    first, _ = trader.submit(kit.Signal.buy(tick, 65))
    assert wait_until(lambda: trader.broker.order(first.order_id).status == "COMPLETE")
    assert wait_until(lambda: not trader.broker.open_orders())
    time.sleep(0.3)                                  # the fill's journal writes are done

    # The disk is full: no file of this process may grow past its first byte.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    sent_before = len(sim.orders.order_book())
    refused, _ = trader.submit(kit.Signal.buy(tick, 65))
    wait_until(lambda: trader.broker.order(refused.order_id).status != "PENDING")
    refused = trader.broker.order(refused.order_id)
    sent_after = len(sim.orders.order_book()) - sent_before
    status = trader.status
    _, next_signal = trader.submit(kit.Signal.buy(tick, 65))
    net_before = sum(int(p["netqty"]) for p in sim.orders.positions())
    report = trader.kill("disk full")
    wait_until(lambda: sum(int(p["netqty"]) for p in sim.orders.positions()) == 0)
    net_after = sum(int(p["netqty"]) for p in sim.orders.positions())
    print(json.dumps({"refused_status": refused.status, "refused_reason": refused.status_message,
                      "sent_after_failure": sent_after, "orders_blocked": status["orders_blocked"],
                      "journal_error": status["journal_error"], "next_signal": next_signal,
                      "net_before_kill": net_before, "net_after_kill": net_after,
                      "kill_error": report["error"]}))
    sys.stdout.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    trader.close()
    sim.stop()


if __name__ == "__main__":
    main(sys.argv[1])
