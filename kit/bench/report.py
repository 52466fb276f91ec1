"""The benchmark's results as JSON, Markdown tables and a plotly HTML page."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

MODE_ORDER = ("poll", "queue", "callback")
# The seed document's figures (system-architecture-comparison.md).
SEED_LATENCY_MS = {"poll": 75.0, "callback": 45.0}
SEED_THROUGHPUT = {"poll": 20.0, "callback": 100.0}
SEED_CPU = {"poll": "35–50 % (main 30–40, socket 5–10)", "callback": "30–40 % (main < 1, socket 30–40)"}


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def _us(x) -> str:
    """A latency in µs, switching to ms past 10 ms so a table stays readable."""
    if x is None:
        return "–"
    return f"{x / 1000:,.1f} ms" if x >= 10_000 else f"{x:,.1f} µs"


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tables
def targets_table(results: dict) -> pd.DataFrame:
    rows = [{"target": t["name"], "goal": t["goal"], "measured": t["measured"],
             "met": {True: "yes", False: "no", None: "not settled"}[t["met"]]} for t in results["targets"]]
    return pd.DataFrame(rows)


def modes_table(scenario: dict) -> pd.DataFrame:
    rows = []
    for name, r in scenario["runs"].items():
        if r.get("ceiling"):
            continue
        lat, cpu, vs = r["latency_us"], r["cpu_pct"], r.get("vs_poll", {})
        rows.append({
            "mode": name,
            "ticks/s": _fmt(r["ticks_per_s"], 0 if r["ticks_per_s"] >= 100 else 1),
            "wire→strategy p50 / p99": f"{_us(lat['wire_to_strategy']['p50'])} / {_us(lat['wire_to_strategy']['p99'])}",
            "dispatch p50 / p99": f"{_us(lat['dispatch']['p50'])} / {_us(lat['dispatch']['p99'])}",
            "recv→strategy p50": _us(lat["recv_to_strategy"]["p50"]),
            "CPU % socket / consumer / main": f"{cpu.get('socket', 0):.1f} / {cpu.get('consumer', 0):.1f} / "
                                              f"{cpu.get('main', 0):.1f}",
            "peak RSS MB": _fmt(r["peak_rss_mb"]),
            "max queue (bytes)": f"{r['max_queue_depth']:,} ({r.get('queue_peak_bytes', 0) / 1024:,.0f} KiB)",
            "dropped": f"{r['dropped']:,}",
            "wire→strategy p50 vs poll": (f"{vs['wire_to_strategy_p50_speedup']:,.0f}× faster"
                                          if vs.get("wire_to_strategy_p50_speedup") and name != "poll" else "1×"),
        })
    return pd.DataFrame(rows)


def flood_table(scenario: dict) -> pd.DataFrame:
    rows = []
    for name, r in scenario["runs"].items():
        lat = r.get("latency_us", {})
        rows.append({
            "variant": name,
            "ticks/s (best round)": _fmt(r["ticks_per_s"], 0),
            "rounds": ", ".join(f"{x:,.0f}" for x in r["ticks_per_s_rounds"]),
            "% of websocket-client alone": _fmt(r.get("pct_of_ceiling")),
            "CPU µs per tick": _fmt(r.get("cpu_us_per_tick"), 2),
            "one free core would do": (f"{r['capacity_per_s']:,.0f}/s" if r.get("capacity_per_s") else "–"),
            "dropped": f"{r['dropped']:,}",
            "vs poll": f"{r['vs_poll']['ticks_per_s_ratio']:,.1f}×" if r.get("vs_poll", {}).get("ticks_per_s_ratio")
            else "–",
            "strategy p50": _us(lat.get("strategy", {}).get("p50")),
        })
    return pd.DataFrame(rows)


def parser_table(parser: dict) -> pd.DataFrame:
    rows = []
    for mode, r in parser.items():
        rows.append({"mode": f"{mode} ({r['packet_bytes']} B)", "SDK _parse_binary_data": f"{r['sdk_us']:.2f} µs",
                     "kit parse_sdk_dict": f"{r['fast_dict_us']:.2f} µs", "ratio (same dict)": f"{r['dict_ratio']:.1f}×",
                     "kit parse_tick": f"{r['fast_tick_us']:.2f} µs",
                     "SDK → Tick": f"{r['sdk_tick_us']:.2f} µs" if "sdk_tick_us" in r else "–",
                     "ratio (to Tick)": f"{r['tick_ratio']:.1f}×" if "tick_ratio" in r else "–"})
    return pd.DataFrame(rows)


def seed_table(results: dict) -> pd.DataFrame:
    rate = results["scenarios"].get("rate1000", {}).get("runs", {})
    flood = results["scenarios"].get("flood", {}).get("runs", {})
    rows = []
    for mode in ("poll", "callback"):
        lat = rate.get(mode, {}).get("latency_us", {}).get("wire_to_strategy", {})
        thr = flood.get(mode, {}).get("ticks_per_s")
        cpu = rate.get(mode, {}).get("cpu_pct", {})
        rows.append({"mode": mode,
                     "seed: latency": f"~{SEED_LATENCY_MS[mode]:.0f} ms (incl. 30–40 ms network)",
                     "measured: wire→strategy p50 (loopback)": _us(lat.get("p50")),
                     "seed: max ticks/s": f"{SEED_THROUGHPUT[mode]:.0f}",
                     "measured: ticks/s (flood)": _fmt(thr, 0),
                     "seed: CPU": SEED_CPU[mode],
                     "measured: CPU at 1,000 ticks/s": (f"{cpu.get('process', 0):.1f} % (consumer "
                                                        f"{cpu.get('consumer', 0):.1f}, socket {cpu.get('socket', 0):.1f})"
                                                        if cpu else "–")})
    return pd.DataFrame(rows)


def markdown(results: dict) -> str:
    m = results["meta"]
    out = [f"# kit.bench — {m['started']}", "",
           f"{m['machine']}; {'quick run' if m['quick'] else 'full run'}; load average "
           f"{m['load_start']} at start, {m['load_end']} at end; {m['elapsed_s']:.0f} s.", "",
           "## Targets", "", md_table(targets_table(results)), "",
           "## The seed's claims", "", md_table(seed_table(results)), ""]
    for key, sc in results["scenarios"].items():
        out += [f"## {sc['title']}", "", f"{sc['offered']} over {sc['tokens']} token(s), {sc['rounds']} round(s)."]
        out += [""] + [f"- {n}" for n in sc.get("notes", [])] + [""]
        out += [md_table(flood_table(sc) if sc["flood_per_token"] else modes_table(sc)), ""]
    out += ["## Parser (µs per packet, best of several passes)", "", md_table(parser_table(results["parser"])), ""]
    rp = results["read_path"]
    out += ["## Socket read path (websocket-client, CPU µs per LTP frame)", "",
            f"plain {rp['plain_us']:.2f} µs, with the kit's read-ahead {rp['read_ahead_us']:.2f} µs "
            f"({rp['ratio']:.2f}×).", ""]
    wc = results.get("wake_cost")
    if wc:
        out += ["## What waking up costs here (one parse_tick, median)", "",
                f"{wc['after_50_ms_idle_us']:.1f} µs right after the thread slept 50 ms (20 ticks/s), "
                f"{wc['after_1_ms_idle_us']:.1f} µs after 1 ms (1,000 ticks/s), {wc['in_a_loop_us']:.2f} µs in a "
                "loop (a flood). Latencies at low rates are paid on cold caches; read them against this.", ""]
    qm = results["queue_memory"]
    out += ["## Queue memory (a full queue of 1,000 ticks, tracemalloc)", "",
            ", ".join(f"{k}: {v['bytes_per_tick']:.0f} B/tick, {v['bytes'] / 1024:,.0f} KiB full" for k, v in qm.items())
            + " (the seed estimated 100 B/tick, ~100 KB).", ""]
    d = results["dashboard"]
    out += ["## Dashboard", "", d["summary"], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- figures
def _figures(results: dict) -> list[tuple[str, go.Figure]]:
    figs = []
    rate_scenarios = [sc for sc in results["scenarios"].values() if not sc["flood_per_token"]]
    # 1. wire -> strategy per mode per scenario, log scale, with the seed's claims
    fig = go.Figure()
    for q, dash in (("p50", None), ("p99", "dot")):
        for sc in rate_scenarios:
            modes = [m for m in MODE_ORDER if m in sc["runs"]]
            fig.add_bar(name=f"{sc['title']} {q}", x=modes,
                        y=[sc["runs"][m]["latency_us"]["wire_to_strategy"][q] for m in modes],
                        marker_pattern_shape="/" if dash else None)
    for mode, ms in SEED_LATENCY_MS.items():
        fig.add_hline(y=ms * 1000, line_dash="dash", annotation_text=f"seed's {mode} claim {ms:.0f} ms")
    fig.update_layout(barmode="group", yaxis_type="log", yaxis_title="µs (log)",
                      title="Simulator send → strategy entry, through the real SDK client")
    figs.append(("Wire to strategy", fig))
    # 2. distributions (quantile curves) per mode
    fig = go.Figure()
    for sc in rate_scenarios:
        for m in MODE_ORDER:
            curve = sc["runs"].get(m, {}).get("wire_to_strategy_curve_us")
            if curve:
                fig.add_scatter(x=curve, y=[i / (len(curve) - 1) for i in range(len(curve))],
                                name=f"{sc['title']}: {m}", mode="lines")
    fig.update_layout(xaxis_type="log", xaxis_title="wire → strategy, µs (log)", yaxis_title="fraction of ticks",
                      title="Latency distribution (ECDF)")
    figs.append(("Latency distribution", fig))
    # 3. stages
    fig = go.Figure()
    for sc in rate_scenarios:
        for stage in ("dispatch", "strategy", "order", "total"):
            modes = [m for m in MODE_ORDER if m in sc["runs"]]
            fig.add_bar(name=f"{sc['title']}: {stage}", x=[f"{sc['key']} {m}" for m in modes],
                        y=[sc["runs"][m]["latency_us"][stage]["p50"] for m in modes])
    fig.update_layout(barmode="group", yaxis_type="log", yaxis_title="p50 µs (log)",
                      title="Per-stage latency p50 (trader.metrics)")
    figs.append(("Stages", fig))
    # 4. flood throughput
    flood = results["scenarios"].get("flood")
    if flood:
        names = list(flood["runs"])
        fig = go.Figure(go.Bar(x=names, y=[flood["runs"][n]["ticks_per_s"] for n in names],
                               text=[f"{flood['runs'][n]['ticks_per_s']:,.0f}" for n in names]))
        fig.add_hline(y=60_000, line_dash="dash", annotation_text="target callback 60,000/s")
        fig.add_hline(y=50_000, line_dash="dot", annotation_text="target queue 50,000/s")
        fig.add_hline(y=100, line_dash="dash", annotation_text="seed's callback claim 100/s")
        fig.update_layout(yaxis_title="LTP ticks/s handled (best round)", title="Flood throughput")
        figs.append(("Throughput", fig))
    # 5. CPU per thread
    fig = go.Figure()
    labels, per_role = [], {}
    for sc in results["scenarios"].values():
        for name, r in sc["runs"].items():
            if r.get("ceiling"):
                continue
            labels.append(f"{sc['key']} {name}")
            for role in ("socket", "consumer", "main", "heartbeat", "dashboard", "other", "simulator"):
                per_role.setdefault(role, []).append(r["cpu_pct"].get(role, 0.0))
    for role, values in per_role.items():
        fig.add_bar(name=role, x=labels, y=values)
    fig.update_layout(barmode="stack", yaxis_title="% of one core", title="CPU per thread (simulator: its own process)")
    figs.append(("CPU", fig))
    # 6. parser
    p = results["parser"]
    fig = go.Figure()
    for key, label in (("sdk_us", "SDK _parse_binary_data"), ("fast_dict_us", "kit parse_sdk_dict"),
                       ("fast_tick_us", "kit parse_tick")):
        fig.add_bar(name=label, x=list(p), y=[p[m][key] for m in p])
    fig.update_layout(barmode="group", yaxis_title="µs per packet", title="Parser")
    figs.append(("Parser", fig))
    return figs


def write(results: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "html": out / "bench.html"}
    paths["json"].write_text(json.dumps(results, indent=1, default=float))
    md = markdown(results)
    paths["markdown"].write_text(md)
    parts = [f"<html><head><meta charset='utf-8'><title>kit.bench</title>"
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}</style></head><body>",
             f"<h1>kit.bench</h1><p>{html.escape(results['meta']['machine'])}; load average "
             f"{results['meta']['load_start']} → {results['meta']['load_end']}</p>",
             "<h2>Targets</h2>", targets_table(results).to_html(index=False),
             "<h2>The seed's claims</h2>", seed_table(results).to_html(index=False)]
    for sc in results["scenarios"].values():
        table = flood_table(sc) if sc["flood_per_token"] else modes_table(sc)
        parts += [f"<h2>{html.escape(sc['title'])}</h2><p>{html.escape(sc['offered'])}</p>",
                  "".join(f"<p>{html.escape(n)}</p>" for n in sc.get("notes", [])), table.to_html(index=False)]
    wc = results.get("wake_cost")
    if wc:
        parts.append(f"<h2>What waking up costs here</h2><p>one parse_tick: {wc['after_50_ms_idle_us']:.1f} µs after "
                     f"a 50 ms sleep, {wc['after_1_ms_idle_us']:.1f} µs after 1 ms, {wc['in_a_loop_us']:.2f} µs in a loop</p>")
    parts += ["<h2>Parser</h2>", parser_table(results["parser"]).to_html(index=False),
              f"<h2>Dashboard</h2><p>{html.escape(results['dashboard']['summary'])}</p>"]
    for i, (title, fig) in enumerate(_figures(results)):
        fig.update_layout(height=480, margin=dict(t=60, b=60))
        parts += [f"<h2>{html.escape(title)}</h2>",
                  fig.to_html(full_html=False, include_plotlyjs=(i == 0))]   # plotly.js inlined once: works offline
    parts.append("</body></html>")
    paths["html"].write_text("\n".join(parts))
    return paths
