"""Command line: ``python -m kit run STRATEGY.py`` and ``python -m kit sim``.

    python -m kit run path/to/strategy.py --feed sim --mode queue --duration 30
    python -m kit sim --port 8765 --rate 5

Exported strategy scripts (``kit.export_strategy``) take the same options as
``run``, through ``run_strategy_cli``.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import logging
import sys
import time
from pathlib import Path

from kit.feed.dispatch import MODES

# Ticks per second per instrument on the simulator, the quickstart's: a short run of a
# typical strategy sees enough ticks to trade, so an empty run never looks broken.
DEFAULT_SIM_RATE = 10.0


def load_strategy_class(path: str, class_name: str | None = None):
    """Import ``path`` as a module and return its strategy class (the only one, or ``class_name``)."""
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
        return candidates[class_name]
    if len(candidates) != 1:
        raise SystemExit(f"{path} defines {len(candidates)} strategy classes ({', '.join(candidates) or 'none'}); "
                         "pick one with --strategy-class")
    return next(iter(candidates.values()))


def _parse_tokens(spec: str | None) -> dict | None:
    """``"1:99926000,2:43650"`` -> ``{1: ["99926000"], 2: ["43650"]}``."""
    if not spec:
        return None
    tokens: dict = {}
    for item in spec.split(","):
        exchange, _, token = item.strip().partition(":")
        if not token or not exchange.isdigit():
            raise SystemExit(f"token {item!r} should look like EXCHANGE_TYPE:TOKEN, e.g. 2:43650")
        tokens.setdefault(int(exchange), []).append(token)
    return tokens


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feed", nargs="+", default=["sim"], metavar="FEED",
                        help="sim (default) | smartapi | replay FILE")
    parser.add_argument("--mode", choices=MODES, default="queue", help="dispatch mode (default queue)")
    parser.add_argument("--tokens", help="EXCHANGE_TYPE:TOKEN,... (default: the simulator's instruments)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds (default 30 for live feeds; a replay runs to its end); 0 runs until Ctrl-C")
    parser.add_argument("--rate", type=float, default=DEFAULT_SIM_RATE,
                        help=f"simulator ticks per second per token (default {DEFAULT_SIM_RATE:g}, the quickstart's)")
    parser.add_argument("--queue-size", type=int, default=1000)
    parser.add_argument("--live", action="store_true", help="route orders to Angel One instead of the paper broker")
    parser.add_argument("--record", metavar="DIR", help="record every received tick to Parquet under DIR")
    parser.add_argument("--signals-out", metavar="FILE", help="write every signal to this CSV at the end")


def config_from_args(args):
    from kit.engine.config import DispatchConfig, ReplayConfig, SimConfig, TraderConfig
    feed, *rest = args.feed
    settings = dict(mode=args.mode, tokens=_parse_tokens(args.tokens), sim=SimConfig(rate=args.rate),
                    dispatch=DispatchConfig(queue_size=args.queue_size), paper=not args.live, record=args.record)
    if feed == "replay":
        if len(rest) != 1:
            raise SystemExit("--feed replay needs the recording: --feed replay FILE")
        if not Path(rest[0]).exists():
            raise SystemExit(f"no such recording: {rest[0]}")
        settings.update(replay=ReplayConfig(rest[0], progress=False))
    elif rest or feed not in ("sim", "smartapi"):
        raise SystemExit(f"--feed must be sim, smartapi or 'replay FILE', not {' '.join(args.feed)!r}")
    return TraderConfig(feed=feed, **settings)


def run_strategy(strategy, args) -> int:
    """Run ``strategy`` headless as ``args`` say; the queue consumer is this (main) thread."""
    from kit.engine.trader import LiveTrader
    trader = LiveTrader(config_from_args(args))
    trader.strategy = strategy
    if args.duration is None:
        duration = None if args.feed[0] == "replay" else 30.0
    else:
        duration = args.duration or None
    with trader.ctrl_c_stops_run():     # from the moment the line below says so
        print(f"running {type(strategy).__name__} on feed={' '.join(args.feed)} mode={args.mode} "
              f"for {duration or 'ever'} s (Ctrl-C stops)", flush=True)
        started = time.monotonic()
        trader.run(duration=duration)
        # run() starts the feed, then consumes for `duration`: a full run is reported as that long.
        elapsed = time.monotonic() - started
        if duration and elapsed >= duration:
            elapsed = duration
    trader.close()
    print_report(trader)
    if args.signals_out:
        trader.signals_df().to_csv(args.signals_out, index=False)
    print(verdict(type(strategy).__name__, trader.status, elapsed, args), flush=True)
    return 0


def verdict(name: str, status: dict, elapsed: float, args) -> str:
    """The last line: what the run amounted to and, when nothing happened, what to try."""
    signals, ticks = status["signals"], status["ticks_processed"]
    where = "of the recording" if args.feed[0] == "replay" else f"in {elapsed:.0f} s"
    line = f"{signals} signals from {ticks} ticks {where}"
    if ticks == 0:
        return f"{line}: no tick reached {name}; check --feed and --tokens"
    if signals:
        return line
    if args.feed[0] == "replay":
        return f"{line}: {name} did not trigger on this recording"
    hint = f"a longer --duration (this run: {elapsed:.0f} s)"
    if args.feed[0] == "sim":
        hint += f" or a higher --rate (this run: {args.rate:g} ticks/s per instrument)"
    return f"{line}: {name} did not trigger; try {hint}"


def run_strategy_cli(strategy_class, argv=None, prog: str | None = None, doc: str | None = None) -> int:
    """The command line of an exported strategy script: ``doc`` (how to run it) is its ``--help``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc or f"Run {strategy_class.__name__} headless.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Defaults: --feed sim --mode queue --rate {DEFAULT_SIM_RATE:g} --duration 30 "
               "(a replay runs to its end).")
    add_run_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    return run_strategy(strategy_class(), args)


def print_report(trader) -> None:
    import pandas as pd
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:,.1f}".format):
        print("\nlatency per stage per mode (microseconds):")
        summary = trader.metrics.summary()
        print(summary if len(summary) else "(no tick was processed)")
        status = trader.status
        print("\n" + "  ".join(f"{k}={status[k]}" for k in
                               ("ticks_received", "ticks_processed", "dropped", "strategy_errors", "signals",
                                "reconnects", "malformed_frames", "stalls", "gaps", "missed_ticks")))
        print(f"P&L: realized {status['realized_pnl']:,.2f}  unrealized {status['unrealized_pnl']:,.2f}  "
              f"charges {status['charges']:,.2f}  net {status['net_pnl']:,.2f}", flush=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sim"]:       # the simulator parses its own options
        from kit.sim.server import main as sim_main
        return sim_main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a strategy file headless and print the metrics")
    run.add_argument("strategy", help="a .py file defining one Strategy class")
    run.add_argument("--strategy-class")
    run.add_argument("-v", "--verbose", action="store_true")
    add_run_options(run)
    sub.add_parser("sim", help="run the embedded simulator as a server (see: python -m kit sim --help)")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    return run_strategy(load_strategy_class(args.strategy, args.strategy_class)(), args)


if __name__ == "__main__":
    sys.exit(main())
