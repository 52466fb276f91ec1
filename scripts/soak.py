"""Soak: a long run of the live path against the simulator, with a fault every N seconds.

    python scripts/soak.py                       # 10 min, 2,000 ticks/s over 50 tokens, a fault every 30 s
    python scripts/soak.py --minutes 1 --rate 500 --fault-every 10 --mode callback --json soak.json

The simulator runs in this process, as in a notebook (``feed="sim"``); the
client is the real SDK client. Faults rotate through ``kit.sim.faults.KINDS``:
drop (with ticks missed meanwhile), stall, malformed / truncated / oversized /
wrong-mode frames, an error frame, slow (every frame delayed).

Reported: ticks sent vs received vs processed and where the difference went
(gaps the kit reported, queue drops), reconnects and why, stalls, bad frames
counted vs injected, latency percentiles (engine: receive -> strategy done;
age: wall clock - exchange timestamp when the strategy finished, which
includes socket backlog and queue wait), recovery time per fault, and RSS.
Not part of CI: it runs for minutes.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kit  # noqa: E402
from kit.feed.dispatch import MODES  # noqa: E402
from kit.sim.faults import KINDS  # noqa: E402
from kit.sim.server import Simulator  # noqa: E402


class LogHistogram:
    """Percentiles in fixed memory: counts per 1/16 octave (±2.2 %), 1 µs to ~10^9 µs."""

    STEPS = 16

    def __init__(self):
        self.counts = [0] * (self.STEPS * 31)
        self.n = 0
        self.max = 0.0

    def add(self, us: float) -> None:
        self.n += 1
        if us > self.max:
            self.max = us
        i = int(math.log2(us) * self.STEPS) if us > 1 else 0
        self.counts[min(i, len(self.counts) - 1)] += 1

    def percentile(self, p: float) -> float:
        if not self.n:
            return float("nan")
        rank, seen = p / 100 * self.n, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(self.max, 2 ** ((i + 0.5) / self.STEPS))
        return self.max


class Sma(kit.Strategy):
    """SMA-20 per token, no orders (orders are kept by design, so they would grow memory
    with the trades); on a gap the token's window restarts, as a careful strategy would."""

    def __init__(self):
        self.windows: dict = {}
        self.gaps = 0

    def on_tick(self, tick):
        w = self.windows.get(tick.token)
        if w is None:
            w = self.windows[tick.token] = [[], 0.0]
        w[0].append(tick.ltp)
        w[1] += tick.ltp
        if len(w[0]) > 20:
            w[1] -= w[0].pop(0)
        return None

    def on_gap(self, gap):
        self.gaps += 1
        self.windows.pop(gap.token, None)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="ticks per second over all tokens")
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    ap.add_argument("--mode", choices=MODES, default="queue")
    ap.add_argument("--stall-timeout", type=float, default=3.0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")

    tokens = {2: [str(43650 + i) for i in range(args.tokens)]}
    duration = args.minutes * 60
    sim = Simulator(rate=args.rate / args.tokens, tokens=tokens, seed=11).start()
    faults = sim.faults
    faults.stall_seconds = args.stall_timeout * 2
    trader = kit.LiveTrader(kit.TraderConfig(
        feed="sim", tokens=tokens, mode=args.mode, dispatch=kit.DispatchConfig(queue_size=10_000), name="soak",
        connection=kit.ConnectionConfig(stall_timeout=args.stall_timeout, heartbeat_interval=10.0,
                                        reconnect=kit.ReconnectPolicy(initial_delay=0.2, max_delay=5.0, jitter=0.25))),
        venue=kit.SimVenue(simulator=sim))
    strategy = trader.strategy = Sma()
    age = LogHistogram()          # wall clock - exchange timestamp, when the strategy is done (µs)
    trader.add_tick_listener(lambda t: age.add(max(0.0, time.time() * 1e6 - t.exchange_ts * 1e3)))

    rss_at_start = rss_mb()
    trader.start()
    if not trader.wait_connected(15):
        print("could not connect to the simulator", file=sys.stderr)
        return 1
    started = time.monotonic()
    print(f"soak: {args.minutes:g} min, {args.rate:g} ticks/s over {args.tokens} tokens, mode {args.mode}, "
          f"a fault every {args.fault_every:g} s; RSS {rss_at_start:.1f} MB before start, pid {os.getpid()}",
          flush=True)

    rss_samples: list[tuple[float, float]] = [(0.0, rss_mb())]
    reasons: Counter = Counter()
    recoveries: dict[str, list[float]] = {}
    injected: list[tuple[float, str, str]] = []
    last_disconnect_at = None
    next_fault, fault_index, next_report = args.fault_every, 0, 30.0
    pending: list[tuple[str, float, int, int]] = []    # (kind, injected at, reconnects, processed) awaiting recovery

    while (elapsed := time.monotonic() - started) < duration:
        time.sleep(0.05)
        status = trader.status
        if status["last_disconnect_at"] != last_disconnect_at and status["last_disconnect_at"]:
            last_disconnect_at = status["last_disconnect_at"]
            reasons[status["last_disconnect_reason"].split(":")[0]] += 1
        # recovery: after a drop or a stall, back connected and ticks processed again
        for item in list(pending):
            kind, at, reconnects, processed = item
            if status["connected"] and status["reconnects"] > reconnects and status["ticks_processed"] > processed:
                recoveries.setdefault(kind, []).append(elapsed - at)
                pending.remove(item)
        if elapsed >= next_fault and status["connected"]:
            kind = KINDS[fault_index % len(KINDS)]
            fault_index += 1
            before = trader.status
            what = faults.inject(kind)
            injected.append((round(elapsed, 1), kind, what))
            if kind in ("drop", "stall"):
                pending.append((kind, elapsed, before["reconnects"], trader.status["ticks_processed"]))
            next_fault += args.fault_every
        if elapsed >= next_report:
            rss_samples.append((round(elapsed), rss_mb()))
            print(f"  {elapsed:5.0f}s  processed {status['ticks_processed']:>9,}  reconnects {status['reconnects']:>3}  "
                  f"stalls {status['stalls']:>2}  gaps {status['gaps']:>4}  malformed {status['malformed_frames']:>4}  "
                  f"age p50 {age.percentile(50) / 1e3:7.1f} ms  RSS {rss_samples[-1][1]:.1f} MB"
                  f"  last fault: {injected[-1][2] if injected else '-'}", flush=True)
            next_report += 30.0

    # Stop the ticker, let what is in flight arrive, then count.
    faults.clear()
    sim.set_rate(0)
    feed = trader.feed.stats
    quiet_since, last = time.monotonic(), -1
    while time.monotonic() - quiet_since < 2.0:
        if (feed.ticks, trader.ticks_processed) != last:
            last, quiet_since = (feed.ticks, trader.ticks_processed), time.monotonic()
        time.sleep(0.1)
    run_seconds = time.monotonic() - started
    rss_at_end = rss_mb()
    status = trader.status
    sim_stats = sim.stats
    summary = trader.metrics.summary("us")
    trader.close()
    sim.stop()

    sent = sim_stats["sent"]
    received = feed.ticks
    lost_in_flight = sent - received                     # written by the server, never read (drops)
    missed = status["missed_ticks"]                      # what the gaps reported
    unexplained = lost_in_flight + faults.missed_injected + sim_stats["dropped_slow_client"] - missed
    engine = summary.loc[(args.mode, "total")] if (args.mode, "total") in summary.index else None
    figures = {
        "minutes": round(run_seconds / 60, 2), "rate": args.rate, "tokens": args.tokens, "mode": args.mode,
        "faults": dict(Counter(k for _, k, _ in injected)),
        "ticks_sent": sent, "ticks_received": received, "ticks_processed": status["ticks_processed"],
        "queue_dropped": status["dropped"], "lost_in_flight_at_drops": lost_in_flight,
        "missed_while_disconnected_injected": faults.missed_injected,
        "simulator_shed_slow_client": sim_stats["dropped_slow_client"],
        "gaps": status["gaps"], "gap_missed_ticks": missed, "gap_unexplained_ticks": unexplained,
        "strategy_on_gap_calls": strategy.gaps,
        "reconnects": status["reconnects"], "disconnect_reasons": dict(reasons), "stalls": status["stalls"],
        "malformed_counted": status["malformed_frames"], "malformed_injected": faults.bad_frames["malformed"],
        "error_frames_counted": status["error_frames"], "error_frames_injected": faults.bad_frames["error_frames"],
        "strategy_errors": status["strategy_errors"],
        "engine_total_us": None if engine is None else {k: round(float(engine[k]), 1)
                                                          for k in ("p50_us", "p90_us", "p99_us", "max_us")},
        "engine_window_ticks": int(engine["samples"]) if engine is not None else 0,
        "age_ms": {f"p{p}": round(age.percentile(p) / 1e3, 2) for p in (50, 90, 99, 99.9)}
        | {"max": round(age.max / 1e3, 1)},
        "max_feed_lag_ms": round(status["max_feed_lag_ms"], 1),
        "recovery_s": {k: {"n": len(v), "p50": round(sorted(v)[len(v) // 2], 2), "max": round(max(v), 2)}
                       for k, v in recoveries.items()},
        "rss_mb": {"before_start": round(rss_at_start, 1), "first_sample": round(rss_samples[0][1], 1),
                   "end": round(rss_at_end, 1), "max": round(max(r for _, r in rss_samples + [(0, rss_at_end)]), 1)},
        "rss_samples": rss_samples,
    }
    print("\n" + report(figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures | {"injected": injected}, indent=2))
    return 0


def report(f: dict) -> str:
    e = f["engine_total_us"] or {}
    lines = [
        f"soak finished: {f['minutes']} min at {f['rate']:g} ticks/s over {f['tokens']} tokens ({f['mode']} mode)",
        f"faults injected      {sum(f['faults'].values())}: "
        + ", ".join(f"{k} {v}" for k, v in f["faults"].items()),
        f"ticks sent           {f['ticks_sent']:,}",
        f"ticks received       {f['ticks_received']:,}   (lost in flight at drops: {f['lost_in_flight_at_drops']:,})",
        f"ticks processed      {f['ticks_processed']:,}   (queue drops: {f['queue_dropped']:,})",
        f"gaps reported        {f['gaps']:,} covering {f['gap_missed_ticks']:,} ticks = "
        f"{f['lost_in_flight_at_drops']:,} lost in flight + {f['missed_while_disconnected_injected']:,} "
        f"missed while disconnected + {f['simulator_shed_slow_client']:,} shed; unexplained "
        f"{f['gap_unexplained_ticks']:,}; strategy told {f['strategy_on_gap_calls']:,} times",
        f"reconnects           {f['reconnects']}  ({', '.join(f'{k} {v}' for k, v in f['disconnect_reasons'].items())});"
        f" stalls detected {f['stalls']}",
        f"bad frames counted   malformed {f['malformed_counted']}/{f['malformed_injected']} injected, "
        f"error frames {f['error_frames_counted']}/{f['error_frames_injected']}",
        f"recovery (s)         " + ", ".join(f"{k}: p50 {v['p50']} max {v['max']} (n={v['n']})"
                                            for k, v in f["recovery_s"].items()),
        f"engine latency       receive -> strategy done, last {f['engine_window_ticks']:,} ticks: "
        f"p50 {e.get('p50_us')} µs, p90 {e.get('p90_us')} µs, p99 {e.get('p99_us')} µs, max {e.get('max_us')} µs",
        f"tick age when done   (wall - exchange ts, all ticks) p50 {f['age_ms']['p50']} ms, p90 {f['age_ms']['p90']} ms, "
        f"p99 {f['age_ms']['p99']} ms, p99.9 {f['age_ms']['p99.9']} ms, max {f['age_ms']['max']} ms",
        f"RSS                  {f['rss_mb']['first_sample']} MB at start -> {f['rss_mb']['end']} MB at end "
        f"(max {f['rss_mb']['max']} MB)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
