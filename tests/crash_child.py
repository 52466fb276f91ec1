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
from kit.research.examples import Churn  # noqa: E402
from kit.broker.risk import RiskLimits  # noqa: E402


def main() -> int:
    rest_url, feed_url, updates_url, master_url, journal = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="smartapi", paper=False, tokens={2: ["43650", "43651"]},
        connection=kit.ConnectionConfig(env_file=None, rest_url=rest_url, feed_url=feed_url,
                                        order_update_url=updates_url, instruments_url=master_url),
        journal=kit.JournalConfig(journal), risk=RiskLimits(max_daily_loss=1e9, enforce_hours="never"),
        name="crash-child"))
    trader.strategy = Churn()
    trader.start()
    if not (trader.wait_connected(20) and trader.broker.wait_ready(20)):
        print("NOT CONNECTED", trader.status, flush=True)
        return 1
    trader.arm_live(confirm=trader.venue.session.client_code)
    print("READY", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
