"""What a journal costs paper trading: submit + fill per order, journal FULL / NORMAL / none.

    .venv/bin/python scripts/bench_paper_journal.py --orders 2000 [--dir DIR]

Each order is a MARKET submit and the tick that fills it, straight on a
``PaperBroker`` (no engine, no strategy), so the figures are the broker's own
cost on the tick thread: two journal commits per order (the order, then its
fill with the position). The journal goes to a temporary directory under
``--dir`` (default: the system temp directory; put it on the disk your
journals live on, since an fsync costs what that disk makes it cost).
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_order_us(orders: int, sync: str | None, workdir: str) -> list[float]:
    """Microseconds of submit + fill, one sample per order."""
    from kit.broker.paper import PaperBroker
    from kit.store.journal import Journal
    from kit.core.strategy import Signal
    from kit.core.tick import Tick
    journal = Journal(Path(workdir) / f"paper-{sync}.sqlite", synchronous=sync) if sync else None
    broker = PaperBroker(journal=journal)
    samples = []
    for i in range(orders):
        tick = Tick("43650", 2, 1, i + 1, 0, 100.0 + (i % 7) * 0.05)
        signal = Signal.buy(tick, 65) if i % 2 == 0 else Signal.sell(tick, 65)
        started = time.perf_counter_ns()
        broker.submit(signal, tick)
        fills = broker.on_tick(Tick("43650", 2, 1, i + 2, 0, tick.ltp))
        samples.append((time.perf_counter_ns() - started) / 1e3)
        assert len(fills) == 1
    broker.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="where the temporary journals go")
    args = parser.parse_args()
    import numpy as np
    with tempfile.TemporaryDirectory(dir=args.dir) as workdir:
        print(f"{args.orders} paper orders, MARKET submit + the tick that fills it, journals in {workdir}")
        print(f"{'journal':<16}{'p50 µs':>10}{'p90 µs':>10}{'p99 µs':>10}{'max µs':>10}{'orders/s':>10}")
        for sync in (None, "NORMAL", "FULL"):
            samples = np.array(per_order_us(args.orders, sync, workdir))
            p50, p90, p99 = np.percentile(samples, (50, 90, 99))
            label = f"synchronous={sync}" if sync else "none"
            print(f"{label:<16}{p50:>10.1f}{p90:>10.1f}{p99:>10.1f}{samples.max():>10.1f}"
                  f"{len(samples) / samples.sum() * 1e6:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
