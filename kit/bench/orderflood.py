"""The live order path under a signal flood: a strategy that signals on every tick at 5,000 ticks/s.

    python -m kit.bench.orderflood            # 2 rounds of ~10 s per variant, a few minutes
    python -m kit.bench.orderflood --quick    # 1 round of ~2 s per variant
    python -m kit.bench.orderflood --rounds 3 --json /tmp/orderflood.json

Two variants run on the LIVE path (``TraderConfig(paper=False, feed="sim")``,
armed with ``arm_live``): the real ``SmartConnect`` and order-update clients
against the kit's simulator, which runs in a child process (``simproc``) so
that its CPU does not compete with the trader's GIL:

- **never signals**: a strategy that counts ticks and returns None;
- **signals every tick**: the same, returning a one-lot MARKET signal (qty 65,
  alternately BUY and SELL) on every tick.

Two diagnostics split the second one's cost in two (``--no-diagnostics``
leaves them out; they are not judged): **every tick, 1 order/h** is the same
flood through the same checks with one order in all (``max_orders_per_hour=1``),
**1 signal/500 ticks** the same ~10 orders a second without the flood.

The live risk limits always cap the order rate (``RiskLimits.for_live``: 10/s,
250/min), so almost every signal is rejected by risk, with a reason; the few
accepted go to the broker's send queue (``broker.queued``, refused beyond
``broker.max_queued``) and from it, paced and journaled, to the exchange.
What it shows, side by side:

(a) the send queue stays bounded: ``broker.queued`` sampled every 5 ms from a
    thread, its maximum against ``max_queued``; the exchange receives no more
    orders than the rate cap allows; memory does not grow with the signals;
(b) the tick path's latency: p99 with the signalling strategy within 2x of
    the never-signalling one.

Latency is ``trader.metrics``' ``total`` stage: from the socket thread's
receive stamp to the end of the tick's work (the strategy returned and, for a
signal, risk checked it and the broker queued or refused it). It is the one
stage that covers the whole on-tick path, the queue wait included, so it is
what a strategy's decision actually waits for; the pass/fail line judges it.
The handler part alone (``total - dispatch``, per tick: strategy + risk +
broker, without the queue wait) is shown too: there the never-signalling
strategy does almost nothing, so its ratio is large while its absolute cost
stays in microseconds.

Each phase gets a fresh simulator (an empty order book and position list, and
the exchange's own rate limits untouched), a fresh trader name and journal,
and is stopped before its latency rings are read (so they line up tick by
tick) and closed before the next; variants alternate (ABBA) over the rounds, and
the figures printed are the medians over rounds.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np

from kit.feed.dispatch import MODES, QUEUE
from kit.engine.config import ConnectionConfig, JournalConfig, TraderConfig
from kit.engine.trader import LiveTrader
from kit.engine.venues import SimVenue
from kit.broker.risk import RiskLimits
from kit.core.strategy import Signal, Strategy
from .probes import ThreadCpu, rss_bytes
from .simproc import SimProcess

TOKENS = {2: [str(43650 + i) for i in range(10)]}   # NIFTY options in the simulator's master, lot 65
QTY = 65                                            # one lot
TICKS_PER_S = 5_000
SAMPLE_S = 0.005                                    # broker.queued is sampled this often
P99_TARGET = 2.0                                    # signalling p99 / never-signalling p99
# Large enough never to trip here (the point is the rate cap), as arm_live requires one.
MAX_DAILY_LOSS = 1e9

class NeverSignal(Strategy):
    """Counts ticks; never signals."""

    def __init__(self):
        self.n = 0

    def on_tick(self, tick):
        self.n += 1
        return None


class SignalEveryTick(NeverSignal):
    """A one-lot MARKET signal on every tick, alternately BUY and SELL (positions stay small)."""

    def on_tick(self, tick):
        self.n += 1
        if self.n & 1:
            return Signal.buy(tick, QTY, reason="orderflood")
        return Signal.sell(tick, QTY, reason="orderflood")


class SignalEvery500Ticks(NeverSignal):
    """A one-lot MARKET signal every 500th tick: 10 a second at 5,000 ticks/s, the orders without the flood."""

    def on_tick(self, tick):
        self.n += 1
        if self.n % 500 == 0:
            return Signal.buy(tick, QTY, reason="orderflood") if self.n % 1000 else \
                Signal.sell(tick, QTY, reason="orderflood")
        return None


@dataclass(frozen=True)
class Variant:
    name: str
    slug: str
    strategy: type
    limits: tuple = ()        # (field, value) pairs added to the RiskLimits


NEVER = Variant("never signals", "never", NeverSignal)
EVERY = Variant("signals every tick", "every", SignalEveryTick)
# Diagnostics: the two halves of EVERY's cost, apart.
# The same flood through the same checks, rejected by the same rate cap, with one order in all.
CAPPED = Variant("every tick, 1 order/h", "capped", SignalEveryTick, (("max_orders_per_hour", 1),))
# The same ~10 orders a second, without the flood of rejected signals.
SPARSE = Variant("1 signal/500 ticks", "sparse", SignalEvery500Ticks)
VARIANTS = (NEVER, EVERY)
DIAGNOSTICS = (CAPPED, SPARSE)


class QueueSampler:
    """A thread reading ``broker.queued`` every ``interval`` seconds; keeps the maximum."""

    def __init__(self, broker, interval: float = SAMPLE_S):
        self.broker, self.interval = broker, interval
        self.max = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kit-bench-queue-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            q = self.broker.queued
            self.samples += 1
            if q > self.max:
                self.max = q

    def start(self) -> "QueueSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _wait(predicate, timeout: float) -> bool:
    deadline = perf_counter() + timeout
    while perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _counters(trader) -> dict:
    broker = trader.broker
    return {"received": trader.feed.stats.ticks, "processed": trader.ticks_processed,
            "dropped": trader.dispatcher.dropped, "signals": trader.signal_count,
            "rejected": trader.rejected_signals, "risk_rejections": trader.risk.rejections,
            "queue_full": broker.stats["queue_full"], "broker_rejections": broker.stats["rejected"]}


def _max_in_any_second(arrivals_ns: list[int]) -> int:
    """The most requests that arrived within any 1 s (a sliding window over the arrival times)."""
    best, lo = 0, 0
    for hi, t in enumerate(arrivals_ns):
        while t - arrivals_ns[lo] >= 1_000_000_000:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _pct(ns: np.ndarray) -> dict:
    if ns.size == 0:
        return {"n": 0, "p50": None, "p99": None}
    p50, p99 = np.percentile(ns, (50, 99))
    return {"n": int(ns.size), "p50": float(p50) / 1e3, "p99": float(p99) / 1e3}


def run_phase(variant: Variant, *, window_s: float, warmup_s: float, mode: str, journal: Path,
              round_no: int = 0) -> dict:
    """One variant, one window, on a fresh simulator and a fresh live trader; returns its figures."""
    gc.collect()
    name = f"bench-orderflood-{variant.slug}"
    limits = RiskLimits(max_daily_loss=MAX_DAILY_LOSS, enforce_hours="never", **dict(variant.limits))
    with SimProcess(tokens=TOKENS, rate=TICKS_PER_S / len(TOKENS[2]), stamp_send_ns=False) as sim:
        cfg = TraderConfig(feed="sim", paper=False, tokens=TOKENS, mode=mode, name=name,
                           connection=ConnectionConfig(stall_timeout=None), journal=JournalConfig(str(journal)),
                           risk=limits)
        trader = LiveTrader(cfg, venue=SimVenue(simulator=sim))     # shared: close() leaves it to the with-block
        trader.strategy = variant.strategy()
        broker = trader.broker
        sampler = QueueSampler(broker)
        cpu = ThreadCpu(sim.pid)
        armed_at = None
        try:
            trader.start()
            if not (trader.wait_connected(30) and broker.wait_ready(30)):
                raise RuntimeError(f"{variant.name}: the feed or the order-update socket did not connect: "
                                   f"{trader.status['last_error']}")
            sim.wait_for_subscribers(1, 10)
            sampler.start()
            armed_at = perf_counter()
            trader.arm_live(confirm=sim.rest.credentials.client_code)
            if not _wait(lambda: trader.risk.gate.refusal() is None, 30):
                raise RuntimeError(f"{variant.name}: live trading did not open: {trader.risk.gate.refusal()}")
            time.sleep(warmup_s)          # caches, the socket's buffers, the signal ring filling up
            trader.metrics.reset()
            sent0, book0 = sim.stats["sent"], len(sim.orders.order_book())
            before = _counters(trader)
            cpu0 = cpu.sample()
            rss0 = rss_bytes()
            t0 = perf_counter()
            time.sleep(window_s / 2)
            rss_mid = rss_bytes()
            time.sleep(max(0.0, t0 + window_s - perf_counter()))
            wall = perf_counter() - t0
            cpu1 = cpu.sample()
            rss1 = rss_bytes()
            after = _counters(trader)
            sent1, book1 = sim.stats["sent"], len(sim.orders.order_book())
            # Stopped before the rings are read: the consumer appends no more, so the dispatch and
            # total rings line up tick by tick (the ticks still queued are handled, and counted, first).
            trader.stop()
            summary = trader.metrics.summary()
            dispatch = trader.metrics.samples(mode, "dispatch")
            total = trader.metrics.samples(mode, "total")
        finally:
            sampler.stop()
            trader.close()
            stopped_at = perf_counter()
        # After close(): nothing more reaches the exchange (orders still queued were cancelled).
        book = sim.orders.order_book()
        arrivals = sorted(t for t, kind in sim.orders.arrivals if kind == "place")
    d = {k: after[k] - before[k] for k in before}
    spent = ThreadCpu.seconds(cpu0, cpu1)
    n = min(total.size, dispatch.size)
    handler = total[-n:] - dispatch[-n:] if n else np.array([], dtype=np.int64)
    tot = _pct(total)
    if (mode, "total") in summary.index:   # the same figures trader.metrics.summary() shows
        tot["p50"] = float(summary.loc[(mode, "total"), "p50_us"])
        tot["p99"] = float(summary.loc[(mode, "total"), "p99_us"])
    return {
        "variant": variant.name, "round": round_no, "wall_s": wall,
        "offered_per_s": (sent1 - sent0) / wall, "delivered_per_s": d["received"] / wall,
        "ticks_received": d["received"], "ticks_processed": d["processed"], "dropped": d["dropped"],
        "signals": d["signals"], "accepted": d["signals"] - d["rejected"], "rejected": d["rejected"],
        "rejected_by_risk": d["risk_rejections"], "rejected_queue_full": d["queue_full"],
        "rejected_by_broker": d["broker_rejections"],
        "exchange_orders_window": book1 - book0,
        "exchange_orders_total": len(book), "armed_s": stopped_at - armed_at,
        "exchange_max_in_1s": _max_in_any_second(arrivals),
        "max_queued_seen": sampler.max, "max_queued": broker.max_queued, "queue_samples": sampler.samples,
        "max_orders_per_second": trader.risk.limits.max_orders_per_second,
        "rss_start_mb": rss0 / 2**20, "rss_end_mb": rss1 / 2**20,
        "rss_growth_mb": (rss1 - rss0) / 2**20, "rss_growth_second_half_mb": (rss1 - rss_mid) / 2**20,
        "latency_us": {"total": tot, "handler": _pct(handler)},
        # % of one core over the window; "other" is the broker's order threads, the sampler, ...
        "cpu_pct_process": 100 * spent["process"] / wall,
        "cpu_pct_tick_threads": 100 * (spent["socket"] + spent["consumer"]) / wall,
        "cpu_pct_other_threads": 100 * (spent["other"] + spent["heartbeat"]) / wall,
        "cpu_pct_simulator": 100 * spent.get("simulator", 0.0) / wall,
        "strategy_errors": trader.strategy_errors,
    }


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _ratios(a: list[dict], b: list[dict], stage: str) -> list[float]:
    """p99 of ``b`` over p99 of ``a``, round by round (each round ran both back to back)."""
    return [y["latency_us"][stage]["p99"] / x["latency_us"][stage]["p99"] for x, y in zip(a, b)
            if x["latency_us"][stage]["p99"] and y["latency_us"][stage]["p99"]]


def summarise(phases: list[dict]) -> dict:
    """Medians over rounds per variant, the paired p99 ratios to never signalling, and the verdicts."""
    names = list(dict.fromkeys(p["variant"] for p in phases))
    by = {v: [p for p in phases if p["variant"] == v] for v in names}
    numeric = [k for k, v in phases[0].items() if isinstance(v, (int, float)) and k != "round"]
    med = {}
    for v, runs in by.items():
        med[v] = {k: _median([r[k] for r in runs]) for k in numeric}
        med[v]["latency_us"] = {stage: {q: _median([r["latency_us"][stage][q] for r in runs]) for q in ("p50", "p99")}
                                for stage in ("total", "handler")}
        med[v]["max_queued_seen_all"] = max(r["max_queued_seen"] for r in runs)
        med[v]["rounds"] = len(runs)
        if v != NEVER.name and NEVER.name in by:
            for stage in ("total", "handler"):
                rounds = _ratios(by[NEVER.name], runs, stage)
                med[v][f"p99_ratio_{stage}"] = _median(rounds)
                med[v][f"p99_ratio_{stage}_rounds"] = [round(x, 2) for x in rounds]
    ratio = med.get(EVERY.name, {}).get("p99_ratio_total")
    return {
        "median": med, "variants": names,
        "p99_ratio": ratio, "p99_pass": ratio is not None and ratio <= P99_TARGET,
        "queue_bounded": all(r["max_queued_seen"] <= r["max_queued"] for r in phases),
        # A sliding 1 s window admits at most max_orders_per_second: over T s, at most that times (T + 1).
        "exchange_within_cap": all(r["exchange_orders_total"] <= r["max_orders_per_second"] * (r["armed_s"] + 1)
                                   for r in phases),
    }


def _rows(results: dict) -> list[tuple]:
    s = results["summary"]
    cols = [s["median"][v] for v in s["variants"]]

    def num(key, fmt="{:,.0f}"):
        return tuple(fmt.format(x[key]) if x.get(key) is not None else "-" for x in cols)

    def lat(stage, q):
        return tuple(f"{x['latency_us'][stage][q]:,.1f}" if x["latency_us"][stage][q] is not None else "-"
                     for x in cols)

    return [
        ("ticks/s offered by the simulator", *num("offered_per_s")),
        ("ticks/s delivered (received by the feed)", *num("delivered_per_s")),
        ("ticks processed", *num("ticks_processed")),
        ("ticks dropped", *num("dropped")),
        ("signals", *num("signals")),
        ("accepted orders (risk and broker)", *num("accepted")),
        ("rejected signals", *num("rejected")),
        ("  by risk (the rate caps)", *num("rejected_by_risk")),
        ("  by the broker: send queue full", *num("rejected_queue_full")),
        ("orders at the exchange, in the window", *num("exchange_orders_window")),
        ("orders at the exchange, trader's life", *num("exchange_orders_total")),
        ("  armed for (s)", *num("armed_s", "{:,.1f}")),
        ("  most within any 1 s (exchange caps 20)", *num("exchange_max_in_1s")),
        ("max broker.queued seen / max_queued", *(f"{x['max_queued_seen_all']:,} / {x['max_queued']:,.0f}"
                                                   for x in cols)),
        ("broker.queued samples (every 5 ms)", *num("queue_samples")),
        ("RSS at window start (MB)", *num("rss_start_mb", "{:,.1f}")),
        ("RSS growth over the window (MB)", *num("rss_growth_mb", "{:+,.2f}")),
        ("  in its second half (MB)", *num("rss_growth_second_half_mb", "{:+,.2f}")),
        ("total p50 (µs): receive -> done", *lat("total", "p50")),
        ("total p99 (µs): receive -> done", *lat("total", "p99")),
        ("  p99 / never signals", *num("p99_ratio_total", "{:.2f}x")),
        ("handler p50 (µs): strategy+risk+broker", *lat("handler", "p50")),
        ("handler p99 (µs): strategy+risk+broker", *lat("handler", "p99")),
        ("  p99 / never signals", *num("p99_ratio_handler", "{:.2f}x")),
        ("CPU, trader process (% of a core)", *num("cpu_pct_process")),
        ("  socket + consumer threads", *num("cpu_pct_tick_threads")),
        ("  other threads (orders, updates, ...)", *num("cpu_pct_other_threads")),
        ("CPU, simulator process (% of a core)", *num("cpu_pct_simulator")),
        ("strategy errors", *num("strategy_errors")),
    ]


def format_report(results: dict) -> str:
    s, meta = results["summary"], results["meta"]
    names = s["variants"]
    rows = _rows(results)
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(n), *(len(r[i + 1]) for r in rows)) for i, n in enumerate(names)]

    def line(cells):
        return "  ".join([f"{cells[0]:<{w0}}"] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths)]).rstrip()

    out = [f"Live order path under a signal flood: {meta['offered']}, dispatch mode {meta['mode']}, "
           f"{meta['rounds']} round(s) of {meta['window_s']:g} s per variant; medians over rounds",
           f"{meta['machine']}; load average {meta['load_start']} -> {meta['load_end']}", "",
           line(["", *names]), line(["-" * w0, *("-" * w for w in widths)])]
    out += [line(r) for r in rows]
    every = s["median"].get(EVERY.name)
    if every is None:
        return "\n".join(out)
    seen = max(m["max_queued_seen_all"] for m in s["median"].values())
    out += ["",
            "Latency is trader.metrics' 'total' stage: the socket thread's receive stamp to the end of the "
            "tick's work (strategy, then risk and the broker for a signal), queue wait included: the whole "
            "on-tick path. 'handler' is total - dispatch per tick: the same without the queue wait.",
            "every tick, 1 order/h: the same signal flood and checks with one order in all; "
            "1 signal/500 ticks: the same ~10 orders/s without the flood (diagnostics, not judged).",
            "",
            f"{'PASS' if s['queue_bounded'] else 'FAIL'}  send queue bounded: max broker.queued seen {seen} "
            f"<= max_queued {every['max_queued']:.0f}",
            f"{'PASS' if s['exchange_within_cap'] else 'FAIL'}  orders at the exchange within the risk cap "
            f"({every['max_orders_per_second']:.0f}/s x (armed seconds + 1)) in every phase",
            f"{'PASS' if s['p99_pass'] else 'FAIL'}  tick-path p99 (total), signals every tick / never signals: "
            + (f"{s['p99_ratio']:.2f}x (per round {', '.join(f'{x:.2f}' for x in every['p99_ratio_total_rounds'])})"
               if s["p99_ratio"] is not None else "not measured") + f"; target <= {P99_TARGET:g}x"]
    return "\n".join(out)


def run(*, quick: bool = False, rounds: int | None = None, window_s: float | None = None, mode: str = QUEUE,
        diagnostics: bool = True, say=print) -> dict:
    """Run the variants in alternating order for ``rounds`` rounds; returns every phase and the summary."""
    rounds = rounds or (1 if quick else 2)
    window_s = window_s or (2.0 if quick else 10.0)
    warmup_s = 0.5 if quick else 1.0
    variants = VARIANTS + (DIAGNOSTICS if diagnostics else ())
    kit_log = logging.getLogger("kit")
    level = kit_log.level
    # Rejected signals are logged at a bounded rate (a few lines a second): kept off the report.
    kit_log.setLevel(logging.ERROR)
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    phases = []
    try:
        with tempfile.TemporaryDirectory(prefix="kit-orderflood-") as tmp:
            for r in range(rounds):
                for v in (variants if r % 2 == 0 else variants[::-1]):
                    p = run_phase(v, window_s=window_s, warmup_s=warmup_s, mode=mode, round_no=r,
                                  journal=Path(tmp) / f"{v.slug}-round{r}.sqlite")
                    phases.append(p)
                    say(f"  round {r + 1}/{rounds}  {v.name:<22} {p['ticks_processed']:>7,} ticks "
                        f"{p['delivered_per_s']:>6,.0f}/s  signals {p['signals']:>6,}  accepted {p['accepted']:>4,}  "
                        f"exchange {p['exchange_orders_total']:>4,}  max queued {p['max_queued_seen']:>3}  "
                        f"p99 {p['latency_us']['total']['p99'] or 0:>9,.1f} µs")
    finally:
        kit_log.setLevel(level)
    meta = {"quick": quick, "rounds": rounds, "window_s": window_s, "warmup_s": warmup_s, "mode": mode,
            "offered": f"{TICKS_PER_S:,} ticks/s over {len(TOKENS[2])} tokens",
            "machine": f"{os.cpu_count()} CPU, {platform.processor() or platform.machine()}, "
                       f"Python {platform.python_version()}",
            "load_start": load_start, "load_end": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    return {"meta": meta, "phases": phases, "summary": summarise(phases)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench.orderflood", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~2 s per variant, one round")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 2; --quick: 1)")
    parser.add_argument("--window", type=float, default=None,
                        help="measured seconds per phase (default 10; --quick: 2)")
    parser.add_argument("--mode", choices=MODES, default=QUEUE, help="the trader's dispatch mode (default queue)")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="only the two variants judged (never signals, signals every tick)")
    parser.add_argument("--json", default=None, help="also write every phase's figures to this file")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, rounds=args.rounds, window_s=args.window, mode=args.mode,
                  diagnostics=not args.no_diagnostics)
    print()
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
