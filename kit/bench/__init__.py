"""Benchmarks that test the seed document's claims against the kit, on this machine.

    make bench                       # or: python -m kit.bench [--quick] [--out DIR]

One run measures, on the same simulator stream (the simulator in its own
process, the real SDK client in this one), poll (the seed's current system),
queue and callback side by side: per-stage latency, simulator send -> strategy
entry, ticks/s, CPU per thread, peak RSS and queue memory, each as a ratio to
poll; then the flood throughput (against websocket-client alone as a
ceiling), the parser against the SDK's, and the dashboard's cost. It writes
``bench.json``, ``bench.md`` and a plotly ``bench.html``.

    from kit.bench import run
    results = run(quick=True, out="artifacts/bench")
    results["targets"]                # each target, its measured value, met or not

Modules: ``scenarios`` (the side-by-side runs), ``simproc`` (the simulator's
process), ``probes`` (stamps, CPU per thread, memory), ``parsers``,
``readpath`` (socket reads), ``report`` (JSON, Markdown, HTML), ``runner``.

``orderflood`` stands apart (``python -m kit.bench.orderflood [--quick]``): the
live order path with a strategy that signals on every tick at 5,000 ticks/s,
the send queue's bound and the tick path's p99 against never signalling.
"""
from .runner import run

__all__ = ["run"]
