"""What an exported strategy script's ``main()`` runs: the options of ``python -m kit run``, honestly reported.

The script's docstring is its ``--help`` (which Python runs it, the command).
The simulator streams 10 ticks per second per instrument, as in the
quickstart, so a short run of a typical strategy sees enough ticks to trade;
and the last line always says how many signals came from how many ticks,
with what to try when there were none, so an empty run never looks broken.
"""
from __future__ import annotations

import argparse
import logging
import time

DEFAULT_SIM_RATE = 10.0     # ticks per second per instrument, the quickstart's


def run_exported(strategy_class, argv=None, *, prog: str | None = None, doc: str | None = None) -> int:
    from kit.__main__ import add_run_options, config_from_args, print_report
    from kit.engine.trader import LiveTrader

    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Defaults: --feed sim --mode queue --rate {DEFAULT_SIM_RATE:g} --duration 30 "
               "(a replay runs to its end).")
    add_run_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(rate=DEFAULT_SIM_RATE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trader = LiveTrader(config_from_args(args))
    trader.strategy = strategy_class()
    replay = args.feed[0] == "replay"
    if args.duration is None:
        duration = None if replay else 30.0
    else:
        duration = args.duration or None
    with trader.ctrl_c_stops_run():     # from the moment the line below says so
        print(f"running {strategy_class.__name__} on feed={' '.join(args.feed)} mode={args.mode} "
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
    print(verdict(strategy_class.__name__, trader.status, elapsed, args), flush=True)
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
