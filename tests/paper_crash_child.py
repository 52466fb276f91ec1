"""A journaled paper trader that keeps trading until it is killed: the subprocess of tests/test_paper_journal.py.

    python tests/paper_crash_child.py JOURNAL

Replays synthetic ticks as fast as it can and trades on every third tick: MARKET
buys and sells, LIMIT orders a tick away (they fill soon) and far away (they
rest). Prints ``FILL <order id>`` from a fill listener, which runs only after
the fill is journaled and applied: what this process held in memory.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kit  # noqa: E402
from kit.research.examples import Churn  # noqa: E402
from kit.bench.replay import synthetic_ticks  # noqa: E402


def main() -> int:
    ticks = synthetic_ticks(300_000, tokens=2)
    trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks, progress=False),
                                             journal=kit.JournalConfig(sys.argv[1]), name="paper-crash-child"))
    trader.broker.add_fill_listener(lambda fill: print("FILL", fill.order_id, flush=True))
    trader.strategy = Churn(near_limit=0.05)
    trader.run()
    print("FINISHED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
