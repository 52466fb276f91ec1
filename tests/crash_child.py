"""A live trader that keeps trading until it is killed: the subprocess of tests/test_crash.py.

    python tests/crash_child.py REST_URL FEED_URL ORDER_UPDATE_URL MASTER_URL JOURNAL

Credentials come from the SMARTAPI_* environment variables, as for a real account.
It prints READY once armed, then trades on every third tick: MARKET buys and sells,
LIMIT orders a tick away (they fill soon) and far away (they rest).
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kit  # noqa: E402
from kit.risk import RiskLimits  # noqa: E402


class Churn(kit.Strategy):
    def __init__(self):
        self.n = 0

    def on_tick(self, tick):
        self.n += 1
        if self.n % 3:
            return None
        step = (self.n // 3) % 4
        if step == 0:
            return kit.Signal.buy(tick, 65, reason="market buy")
        if step == 1:
            return kit.Signal.sell(tick, 65, reason="market sell")
        if step == 2:
            return kit.Signal.buy(tick, 65, limit=round(max(0.05, tick.ltp - 0.05), 2), reason="near limit")
        return kit.Signal.sell(tick, 65, limit=round(tick.ltp + 50, 2), reason="far limit")


def main() -> int:
    rest_url, feed_url, updates_url, master_url, journal = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="smartapi", paper=False, tokens={2: ["43650", "43651"]}, env_file=None,
        rest_url=rest_url, feed_url=feed_url, order_update_url=updates_url, instruments_url=master_url,
        journal=journal, risk=RiskLimits(max_daily_loss=1e9, enforce_hours="never"), name="crash-child"))
    trader.strategy = Churn()
    trader.start()
    if not (trader.wait_connected(20) and trader.broker.wait_ready(20)):
        print("NOT CONNECTED", trader.status, flush=True)
        return 1
    trader.arm_live(confirm=trader.session.client_code)
    print("READY", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
