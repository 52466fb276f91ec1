"""``python -m kit.bench``: run the benchmark and print where the report is.

    python -m kit.bench                    # full run, a few minutes
    python -m kit.bench --quick            # seconds; what the CI smoke test runs
    python -m kit.bench --only flood --rounds 5 --out /tmp/bench

The live order path under a signal on every tick is a separate run:
``python -m kit.bench.orderflood [--quick]`` (see kit/bench/orderflood.py).
"""
from __future__ import annotations

import argparse
import sys

from .runner import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one round (a smoke test)")
    parser.add_argument("--out", default="artifacts/bench", help="directory for bench.json/.md/.html")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per scenario (default 2, flood 4; --quick: 1)")
    parser.add_argument("--only", nargs="+", choices=["rate20", "rate1000", "flood"], help="run only these scenarios")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, out=args.out, rounds=args.rounds, only=args.only)
    from .report import md_table, targets_table
    if results["targets"]:
        print("\n" + md_table(targets_table(results)))
    print("\n" + "\n".join(f"{k}: {v}" for k, v in results["paths"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
