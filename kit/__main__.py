"""Command line: ``python -m kit run STRATEGY.py`` and ``python -m kit sim``.

    python -m kit run path/to/strategy.py --feed sim --mode queue --duration 30
    python -m kit sim --port 8765 --rate 5
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import logging
import sys
from pathlib import Path

from .dispatch import MODES
from .strategy import Strategy


def load_strategy(path: str, class_name: str | None = None) -> Strategy:
    """Import ``path`` as a module and instantiate its strategy class (the only one, or ``class_name``)."""
    file = Path(path)
    if not file.exists():
        raise SystemExit(f"no such strategy file: {path}")
    spec = importlib.util.spec_from_file_location(f"kit_user_strategy_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    candidates = {name: obj for name, obj in vars(module).items()
                  if inspect.isclass(obj) and obj.__module__ == module.__name__
                  and callable(getattr(obj, "on_tick", None))}
    if class_name:
        if class_name not in candidates:
            raise SystemExit(f"{path} defines no strategy class {class_name!r} (found: {', '.join(candidates) or 'none'})")
        return candidates[class_name]()
    if len(candidates) != 1:
        raise SystemExit(f"{path} defines {len(candidates)} strategy classes ({', '.join(candidates) or 'none'}); "
                         "pick one with --strategy-class")
    return next(iter(candidates.values()))()


def _parse_tokens(spec: str | None) -> dict | None:
    """``"1:99926000,2:43650"`` -> ``{1: ["99926000"], 2: ["43650"]}``."""
    if not spec:
        return None
    tokens: dict = {}
    for item in spec.split(","):
        exchange, _, token = item.strip().partition(":")
        if not token:
            raise SystemExit(f"token {item!r} should look like EXCHANGE_TYPE:TOKEN, e.g. 2:43650")
        tokens.setdefault(int(exchange), []).append(token)
    return tokens


def cmd_run(args) -> int:
    from .engine import LiveTrader, TraderConfig
    strategy = load_strategy(args.strategy, args.strategy_class)
    config = TraderConfig(feed=args.feed, mode=args.mode, tokens=_parse_tokens(args.tokens),
                          sim_rate=args.rate, queue_size=args.queue_size)
    trader = LiveTrader(config)
    trader.strategy = strategy
    print(f"running {type(strategy).__name__} on feed={args.feed} mode={args.mode} "
          f"for {args.duration or 'ever'} s (Ctrl-C stops)", flush=True)
    trader.run(duration=args.duration)
    trader.close()
    print_report(trader)
    return 0


def print_report(trader) -> None:
    import pandas as pd
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:,.1f}".format):
        print("\nlatency per stage per mode (microseconds):")
        print(trader.metrics.summary())
        status = trader.status
        print("\n" + "  ".join(f"{k}={status[k]}" for k in
                               ("ticks_received", "ticks_processed", "dropped", "strategy_errors", "signals",
                                "reconnects", "malformed_frames", "stalls", "gaps", "missed_ticks")))
        print(f"P&L: realized {status['realized_pnl']:,.2f}  unrealized {status['unrealized_pnl']:,.2f}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sim"]:       # the simulator parses its own options
        from .simulator import main as sim_main
        return sim_main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a strategy file headless and print the metrics")
    run.add_argument("strategy", help="a .py file defining one Strategy class")
    run.add_argument("--strategy-class")
    run.add_argument("--feed", choices=["sim", "smartapi"], default="sim")
    run.add_argument("--mode", choices=MODES, default="queue")
    run.add_argument("--tokens", help="EXCHANGE_TYPE:TOKEN,... (default: the simulator's instruments)")
    run.add_argument("--duration", type=float, default=30.0, help="seconds; 0 runs until Ctrl-C")
    run.add_argument("--rate", type=float, default=2.0, help="simulator ticks per second per token")
    run.add_argument("--queue-size", type=int, default=1000)
    run.set_defaults(func=cmd_run)
    sub.add_parser("sim", help="run the embedded simulator as a server (see: python -m kit sim --help)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "duration", None) == 0:
        args.duration = None
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
