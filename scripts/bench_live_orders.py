"""Ack latency of live orders: the real SmartConnect and order-update clients against the simulator.

    .venv/bin/python scripts/bench_live_orders.py --orders 200 --rate 10

Sends MARKET orders through a LiveTrader(paper=False) on the embedded
simulator, ``--rate`` per second, and prints the broker's per-stage latency
(``SmartApiBroker.latency_summary``) and the journal's commit latency for
synchronous=FULL and NORMAL. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(orders: int, rate: float, sync: str, workdir: str):
    import kit
    from kit.broker.risk import RiskLimits
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="sim", paper=False, sim=kit.SimConfig(rate=0), tokens={2: ["43650"]},
        journal=kit.JournalConfig(f"{workdir}/bench-{sync}.sqlite", sync=sync),
        risk=RiskLimits(max_daily_loss=1e9, enforce_hours="never"), name=f"bench-{sync}"))
    trader.start()
    assert trader.wait_connected(20) and trader.broker.wait_ready(20)
    trader.arm_live(confirm=trader.venue.session.client_code)
    sim = trader.venue.simulator
    for i in range(orders):
        tick = kit.Tick("43650", 2, 1, i, 0, sim.last_price(2, "43650"))
        trader.submit(kit.Signal.buy(tick, 65) if i % 2 == 0 else kit.Signal.sell(tick, 65))
        time.sleep(1 / rate)
    deadline = time.monotonic() + 60
    while trader.broker.open_orders() and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = trader.broker.latency_summary("ms")
    commits = trader.broker.journal.commit_latency()
    trader.close()
    return summary, commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    args = parser.parse_args()
    import pandas as pd
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("SMARTAPI_KIT_CACHE", workdir)
        os.environ.setdefault("SMARTAPI_KIT_DATA", workdir)
        for sync in ("FULL", "NORMAL"):
            summary, commits = run(args.orders, args.rate, sync, workdir)
            with pd.option_context("display.width", 160, "display.float_format", "{:,.3f}".format):
                print(f"\n{args.orders} MARKET orders at {args.rate:g}/s, journal synchronous={sync} "
                      f"(milliseconds):\n{summary}")
            print(f"journal commits: {commits['commits']}, p50 {commits['p50_us'] / 1e3:.2f} ms, "
                  f"p99 {commits['p99_us'] / 1e3:.2f} ms, max {commits['max_us'] / 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
