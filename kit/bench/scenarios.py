"""The dispatch modes side by side on one simulator stream.

A scenario is one simulator (in a child process, see ``simproc``) and one
stream: a rate per token, or a flood (``publish``: as fast as the server can
write). Each *variant* (a dispatch mode, optionally with the SDK's parser or
with the dashboard open) runs as a fresh ``LiveTrader`` on that simulator for
one *phase*; variants take turns, round after round, so slow drifts in the
machine's load fall on every variant alike.

In each phase the trader connects, warms up, then is measured for a window:

- per-stage latency from ``trader.metrics`` (the rings ``summary()`` reads),
  pooled over the rounds;
- wire -> strategy (simulator send stamp to strategy entry) and receive ->
  strategy, from a ``Probe`` around a real strategy (``SmaCross``, which
  trades, so the order stage is exercised too);
- ticks handled per second, drops, the deepest the queue got;
- CPU seconds per thread role and of the simulator's process;
- the process's peak RSS, sampled every 20 ms by the main thread (which
  otherwise only sleeps, like the seed's main thread in callback mode).
"""
from __future__ import annotations

import gc
import logging
import re
import time
from dataclasses import dataclass, field, replace
from time import perf_counter

import numpy as np

from kit.feed.dispatch import CALLBACK, POLL, QUEUE
from kit.engine.config import ConnectionConfig, DispatchConfig, TraderConfig
from kit.engine.trader import LiveTrader
from kit.engine.venues import SimVenue
from kit.research.examples import SmaCross
from kit.engine.metrics import STAGES
from .probes import Probe, ThreadCpu, percentiles, rss_bytes
from .simproc import SimProcess

log = logging.getLogger(__name__)

RSS_SAMPLE_S = 0.02


@dataclass(frozen=True)
class Variant:
    mode: str
    parser: str = "fast"
    dashboard: bool = False
    queue_size: int = 1000      # DispatchConfig's default

    @property
    def name(self) -> str:
        if self.mode == RAW:
            return RAW
        extras = ((["SDK parser"] if self.parser == "sdk" else []) + (["dashboard"] if self.dashboard else [])
                  + ([f"queue_size {self.queue_size:,}"] if self.queue_size != 1000 else []))
        return f"{self.mode} ({', '.join(extras)})" if extras else self.mode


RAW = "websocket-client alone"
CEILING = Variant(RAW)   # flood only: the library the SDK stands on, counting frames
MODES_SIDE_BY_SIDE = (Variant(POLL), Variant(QUEUE), Variant(CALLBACK))


@dataclass
class Scenario:
    key: str
    title: str
    tokens: dict
    rate_per_token: float = 0.0      # ticks/s per token; 0 with a flood
    window_s: float = 5.0            # measured seconds per phase (rate scenarios)
    warmup_s: float = 0.5
    flood_per_token: int = 0         # ticks per token per phase (flood)
    variants: tuple = MODES_SIDE_BY_SIDE
    notes: list = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens.values())

    @property
    def offered(self) -> str:
        if self.flood_per_token:
            return f"{self.flood_per_token * self.n_tokens:,} ticks as fast as the server writes"
        return f"{self.rate_per_token * self.n_tokens:,.0f} ticks/s"


def option_tokens(n: int) -> dict:
    """``n`` NIFTY option tokens on NSE F&O (the simulator's default strip, extended)."""
    return {2: [str(43650 + i) for i in range(n)]}


# --------------------------------------------------------------------------- dashboard
def open_dashboard(trader):
    """``(handle, None)`` with ``kit.ui.dashboard``'s dashboard streaming ``trader``, or ``(None, why not)``.

    Outside a kernel ipywidgets has no frontend, but the dashboard's refresh
    thread still builds every update, which is the cost measured here.
    """
    try:
        from kit.ui import dashboard as ui
    except ImportError as exc:
        return None, f"kit.ui.dashboard is not importable ({exc})"
    factory = getattr(ui, "dashboard", None)
    if not callable(factory):
        return None, "kit.ui.dashboard has no dashboard(trader)"
    dash = factory(trader)
    start = getattr(dash, "start", None)
    if callable(start) and not getattr(dash, "running", False):
        start()
    return dash, None


def close_dashboard(dash) -> None:
    for name in ("close", "stop"):
        fn = getattr(dash, name, None)
        if callable(fn):
            fn()
            return


def dashboard_available() -> tuple[bool, str | None]:
    try:
        from kit.ui import dashboard as ui
    except ImportError as exc:
        return False, f"kit.ui.dashboard is not importable ({exc})"
    if not callable(getattr(ui, "dashboard", None)):
        return False, "kit.ui.dashboard has no dashboard(trader)"
    return True, None


# --------------------------------------------------------------------------- one phase
def _wait(predicate, timeout: float, rss: list) -> bool:
    deadline = perf_counter() + timeout
    while perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(RSS_SAMPLE_S)
        rss.append(rss_bytes())
    return predicate()


def run_phase(sim: SimProcess, sc: Scenario, v: Variant, cpu: ThreadCpu, round_no: int) -> dict:
    """One variant, one window; returns raw samples and counters."""
    gc.collect()
    cfg = TraderConfig(feed="sim", tokens=sc.tokens, mode=v.mode,
                       connection=ConnectionConfig(parser=v.parser, stall_timeout=None),
                       dispatch=DispatchConfig(queue_size=v.queue_size),
                       # One name per variant: a trader created under a name still in use closes the old one.
                       name=f"bench-{sc.key}-" + re.sub(r"\W+", "-", v.name).strip("-"))
    trader = LiveTrader(cfg, venue=SimVenue(simulator=sim))    # the scenario's shared simulator
    probe = trader.strategy = Probe(SmaCross())
    dash = None
    rss: list[int] = [rss_bytes()]
    try:
        trader.start()
        if not trader.wait_connected(30):
            raise RuntimeError(f"{v.name}: the feed did not connect: {trader.status}")
        sim.wait_for_subscribers(1, 10)
        if v.dashboard:
            dash, why = open_dashboard(trader)
            if dash is None:
                raise RuntimeError(why)
        d = trader.dispatcher
        # warm up: caches, the strategy's windows, the socket's buffers
        if sc.flood_per_token:
            target = trader.ticks_processed + 50 * sc.n_tokens
            sim.publish(50)
            _wait(lambda: trader.ticks_processed + d.dropped >= target, 30, rss)
        else:
            time.sleep(sc.warmup_s)
        trader.metrics.reset()
        mark, processed0, dropped0 = probe.mark(), trader.ticks_processed, d.dropped
        sent0 = sim.stats["sent"]
        before = cpu.sample()
        t0 = perf_counter()
        if sc.flood_per_token:
            total = sc.flood_per_token * sc.n_tokens
            sim.publish(sc.flood_per_token)      # returns once the server has written every frame
            published = perf_counter() - t0
            done = _wait(lambda: trader.ticks_processed - processed0 + d.dropped - dropped0 >= total, 120, rss)
            if not done:
                log.warning("%s: only %d of %d flood ticks arrived", v.name,
                            trader.ticks_processed - processed0 + d.dropped - dropped0, total)
        else:
            published = None
            _wait(lambda: perf_counter() - t0 >= sc.window_s, sc.window_s + 1, rss)
        wall = perf_counter() - t0
        after = cpu.sample()
        handled = trader.ticks_processed - processed0
        dropped = d.dropped - dropped0
        end = probe.mark()
        sent = sim.stats["sent"] - sent0
        summary = trader.metrics.summary()
        stages = {s: trader.metrics.samples(v.mode, s) for s in STAGES}
        # Slice (a copy) before numpy sees it: the strategy thread is still appending.
        wire = np.array(probe.wire[mark:end], dtype=np.int64)
        recv = np.array(probe.recv[mark:end], dtype=np.int64)
        max_depth = d.max_depth
        signals = len(trader.signals)
        status = trader.status
    finally:
        if dash is not None:
            close_dashboard(dash)
        trader.stop()
    rate_from_summary = None
    if (v.mode, "dispatch") in summary.index:
        rate_from_summary = float(summary.loc[(v.mode, "dispatch"), "ticks_per_s"])
    return {
        "round": round_no, "wall_s": wall, "published_s": published, "handled": handled, "dropped": dropped,
        "sent": sent, "max_queue_depth": max_depth, "signals": signals,
        "delivery_rate": rate_from_summary, "cpu_s": ThreadCpu.seconds(before, after),
        "peak_rss": max(rss), "stages": stages, "wire": wire, "recv": recv,
        "errors": {k: status[k] for k in ("strategy_errors", "malformed_frames", "reconnects")},
    }


def run_raw_phase(sim: SimProcess, sc: Scenario, round_no: int) -> dict:
    """The ceiling: websocket-client alone, counting frames, on the same flood.

    No SDK, no parsing, no kit: what the rest of the stack is compared with
    when the machine's load makes absolute figures move.
    """
    import json

    import websocket
    count = [0, 0, 0]   # frames, first ns, last ns

    def on_data(_app, data, data_type, _cont):
        if data_type == 2:
            now = time.perf_counter_ns()
            if count[0] == 0:
                count[1] = now
            count[0] += 1
            count[2] = now

    def on_open(app):
        app.send(json.dumps({"correlationID": "bench", "action": 1, "params": {
            "mode": 1, "tokenList": [{"exchangeType": e, "tokens": t} for e, t in sc.tokens.items()]}}))

    app = websocket.WebSocketApp(sim.url, header=sim.credentials.headers(), on_open=on_open, on_data=on_data)
    import threading
    thread = threading.Thread(target=app.run_forever, name="kit-feed-raw", daemon=True)
    thread.start()
    rss: list[int] = [rss_bytes()]
    try:
        sim.wait_for_subscribers(1, 30)
        sim.publish(50)
        _wait(lambda: count[0] >= 50 * sc.n_tokens, 30, rss)
        count[:] = [0, 0, 0]
        total = sc.flood_per_token * sc.n_tokens
        t0 = perf_counter()
        sim.publish(sc.flood_per_token)
        _wait(lambda: count[0] >= total, 120, rss)
        wall = perf_counter() - t0
        n, first, last = count
    finally:
        app.close()
        thread.join(10)
    return {"round": round_no, "wall_s": wall, "handled": n, "dropped": 0,
            "delivery_rate": (n - 1) / ((last - first) / 1e9) if last > first else None}


# --------------------------------------------------------------------------- a scenario
def _curve(ns: np.ndarray, points: int = 101) -> list[float]:
    """Quantiles 0..100 % in µs: enough to draw a distribution without storing every sample."""
    if ns.size == 0:
        return []
    return [round(float(x) / 1e3, 3) for x in np.percentile(ns, np.linspace(0, 100, points))]


def aggregate(v: Variant, phases: list[dict], flood: bool) -> dict:
    wall = sum(p["wall_s"] for p in phases)
    handled = sum(p["handled"] for p in phases)
    cpu_s: dict = {}
    for p in phases:
        for k, s in p["cpu_s"].items():
            cpu_s[k] = cpu_s.get(k, 0.0) + s
    latency = {s: percentiles(np.concatenate([p["stages"][s] for p in phases])) for s in STAGES}
    wire = np.concatenate([p["wire"] for p in phases])
    recv = np.concatenate([p["recv"] for p in phases])
    latency["recv_to_strategy"] = percentiles(recv)
    latency["wire_to_strategy"] = percentiles(wire)
    # each round's median, to show how much the machine's load moved them
    for name, per_phase in (("dispatch", [p["stages"]["dispatch"] for p in phases]),
                            ("recv_to_strategy", [p["recv"] for p in phases]),
                            ("wire_to_strategy", [p["wire"] for p in phases])):
        latency[name]["p50_rounds"] = [round(float(np.median(a)) / 1e3, 1) if a.size else None for a in per_phase]
    received = handled + sum(p["dropped"] for p in phases)
    kit_cpu = cpu_s.get("socket", 0) + cpu_s.get("consumer", 0)
    cpu_per_tick = round(1e6 * kit_cpu / received, 2) if received and kit_cpu else None
    if flood:
        rates = [p["delivery_rate"] for p in phases if p["delivery_rate"]]
        per_round = [round(r) for r in rates]
        rate = max(rates) if rates else 0.0
    else:
        per_round = [round(p["handled"] / p["wall_s"], 1) for p in phases]
        rate = handled / wall if wall else 0.0
    return {
        "variant": v.name, "mode": v.mode, "parser": v.parser, "dashboard": v.dashboard,
        "rounds": len(phases), "wall_s": round(wall, 3), "ticks": handled,
        "sent": sum(p["sent"] for p in phases), "dropped": sum(p["dropped"] for p in phases),
        "ticks_per_s": rate, "ticks_per_s_rounds": per_round,
        "ticks_per_s_median": float(np.median(per_round)) if per_round else 0.0,
        "max_queue_depth": max(p["max_queue_depth"] for p in phases),
        "signals": sum(p["signals"] for p in phases),
        "latency_us": latency,
        "wire_to_strategy_curve_us": _curve(wire),
        "cpu_pct": {k: round(100 * s / wall, 1) for k, s in cpu_s.items()} if wall else {},
        "peak_rss_mb": round(max(p["peak_rss"] for p in phases) / 2**20, 1),
        # CPU of the kit's threads per tick received (handled or dropped): unlike ticks/s, this
        # hardly moves when other processes take the cores. Its inverse is what one free core
        # would sustain (the GIL lets only one of the threads run Python at a time).
        "cpu_us_per_tick": cpu_per_tick,
        "capacity_per_s": round(1e6 / cpu_per_tick) if cpu_per_tick else None,
        # every thread of this process (the dashboard's refresh thread too) per tick received
        "process_cpu_us_per_tick": round(1e6 * cpu_s.get("process", 0) / received, 2) if received else None,
        "process_cpu_us_per_tick_rounds": [
            round(1e6 * p["cpu_s"]["process"] / (p["handled"] + p["dropped"]), 2)
            if p["cpu_s"].get("process") and p["handled"] + p["dropped"] else None for p in phases],
        "errors": {k: sum(p["errors"][k] for p in phases) for k in phases[0]["errors"]},
    }


def aggregate_ceiling(phases: list[dict]) -> dict:
    rates = [p["delivery_rate"] for p in phases if p["delivery_rate"]]
    return {"variant": RAW, "ceiling": True, "rounds": len(phases), "ticks": sum(p["handled"] for p in phases),
            "dropped": 0, "ticks_per_s": max(rates) if rates else 0.0, "ticks_per_s_rounds": [round(r) for r in rates],
            "ticks_per_s_median": float(np.median(rates)) if rates else 0.0,
            "cpu_us_per_tick": None}


def ratios_to_poll(runs: dict) -> None:
    """Adds ``vs_poll`` to every run: latency speed-ups (poll / run) and throughput (run / poll)."""
    poll = runs.get(POLL)
    if poll is None:
        return
    for run in runs.values():
        if run.get("ceiling"):
            continue
        r = {}
        for stage in ("wire_to_strategy", "dispatch", "total"):
            for q in ("p50", "p99"):
                a, b = poll["latency_us"][stage][q], run["latency_us"][stage][q]
                r[f"{stage}_{q}_speedup"] = round(a / b, 1) if a and b else None
        r["ticks_per_s_ratio"] = round(run["ticks_per_s"] / poll["ticks_per_s"], 2) if poll["ticks_per_s"] else None
        pc, rc = poll["cpu_pct"].get("process"), run["cpu_pct"].get("process")
        r["process_cpu_ratio"] = round(rc / pc, 2) if pc and rc is not None else None
        run["vs_poll"] = r


def round_order(variants, r: int) -> list:
    """Round ``r``'s running order: rotated each round, with a dashboard variant beside its plain twin.

    The twins run back to back, in alternating order, so that their
    comparison sees the machine in the same state (its load moves a single
    run by tens of percent here).
    """
    twins = {v: replace(v, dashboard=False) for v in variants if v.dashboard}
    plain = [v for v in variants if v not in twins]
    k = r % len(plain)
    order = []
    for v in plain[k:] + plain[:k]:
        pair = [v] + [d for d, twin in twins.items() if twin == v]
        order += pair if r % 2 == 0 else pair[::-1]
    return order + [d for d, twin in twins.items() if twin not in plain]


def run_scenario(sc: Scenario, rounds: int, say=print) -> dict:
    flood = bool(sc.flood_per_token)
    phases: dict[str, list] = {v.name: [] for v in sc.variants}
    started = time.time()
    with SimProcess(tokens=sc.tokens, rate=sc.rate_per_token) as sim:
        cpu = ThreadCpu(sim.pid)
        for r in range(rounds):
            for v in round_order(sc.variants, r):
                phase = run_raw_phase(sim, sc, r) if v.mode == RAW else run_phase(sim, sc, v, cpu, r)
                phases[v.name].append(phase)
                rate = phase["delivery_rate"] if flood else phase["handled"] / phase["wall_s"]
                say(f"  {sc.key:<10} round {r + 1}/{rounds}  {v.name:<28} {phase['handled']:>8,} ticks  "
                    f"{rate or 0:>10,.0f}/s  dropped {phase['dropped']:,}")
    runs = {v.name: aggregate_ceiling(phases[v.name]) if v.mode == RAW else aggregate(v, phases[v.name], flood)
            for v in sc.variants}
    ratios_to_poll(runs)
    ceiling = runs.get(RAW)
    for run in runs.values():
        if ceiling and ceiling["ticks_per_s"] and not run.get("ceiling"):
            run["pct_of_ceiling"] = round(100 * run["ticks_per_s"] / ceiling["ticks_per_s"], 1)
    return {"key": sc.key, "title": sc.title, "offered": sc.offered, "tokens": sc.n_tokens,
            "rate_per_token": sc.rate_per_token, "flood_per_token": sc.flood_per_token,
            "window_s": None if flood else sc.window_s, "rounds": rounds, "notes": sc.notes,
            "elapsed_s": round(time.time() - started, 1), "runs": runs}
