"""A backtest in a real Jupyter kernel: the replay's notebook progress bar, the result tables and the chart."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    """
import kit, numpy as np, pandas as pd
n = 20_000
ticks = pd.DataFrame({"token": [str(43650 + i % 3) for i in range(n)],
                      "exchange_type": 2, "ltp": np.round(100 + np.cumsum(np.random.default_rng(3).integers(-2, 3, n) * 0.05), 2)})
""",
    # The replay runs on its thread while the cell returns; the bar is a widget under this cell.
    """
trader = kit.LiveTrader(kit.TraderConfig(feed="replay", replay=kit.ReplayConfig(ticks), mode="queue",
                                         name="nb-replay"))
trader.strategy = kit.examples.SmaCross(3, 8)
trader.start()
""",
    """
assert trader.feed.wait_finished(60)
trader.stop()
print("processed", trader.ticks_processed, "signals", len(trader.signals))
""",
    """
result = kit.backtest(kit.examples.SmaCross(3, 8), ticks)
print("same signals", result.signals["tick_seq"].tolist() == [s.tick_seq for s in trader.signals])
result.plot()
""",
]


@pytest.mark.timeout(240)
def test_replay_and_backtest_in_a_kernel(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in CELLS])
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   store_widget_state=True).execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "processed 20000 signals" in text and "same signals True" in text
    widgets = [o for o in nb.cells[1].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "the replay's progress bar should be a notebook widget"
    plot = nb.cells[3].outputs[-1].get("data", {})
    assert "application/vnd.plotly.v1+json" in plot or "text/html" in plot
