"""The dashboard's control row and what each click does.

Click handlers run on the kernel's thread. They act on the trader and post
a message (``_post``); they write no widget. The refresh thread is the one
writer of every widget, the message line included, and a click wakes it at
once. Every action posts a message, so an old one (an export error) never
outlives the next click or toggle.

Flatten waits for the exchange when trading live (``trader.kill(...,
flatten=True, timeout=...)`` waits for the cancels and the flattening fills),
so it runs on a worker thread of its own and posts its result when done.
"""
from __future__ import annotations

import html
import logging
import threading
import time

import ipywidgets as widgets

from kit.engine.trader import current_trader
from kit.research import palette
from kit.ui import status as words

log = logging.getLogger(__name__)

FLATTEN_TIMEOUT = 10.0    # seconds Flatten waits for the exchange (live) before reporting what it saw
MODE_TOOLTIPS = {"poll": "the seed's get_nowait + sleep(50 ms) baseline",
                 "queue": "bounded queue, blocking get on a consumer thread",
                 "callback": "strategy runs on the socket thread"}


class Controls:
    """Mixin for ``Dashboard``: the buttons, the toggle, the token choice and their handlers."""

    def _build_controls(self, trader, mode_order, token_options, token) -> widgets.HBox:
        self._message = ("", False)       # (text, error), posted by the handlers, written by the refresh thread
        self._message_shown = None
        self._flattening = threading.Event()
        self.mode_toggle = widgets.ToggleButtons(options=list(mode_order), value=trader.mode,
                                                 tooltips=[MODE_TOOLTIPS.get(m, m) for m in mode_order],
                                                 style={"button_width": "78px"})
        self.start_button = _button("Start", "play", "90px", style="success")
        self.stop_button = _button("Stop", "stop", "90px")
        self.kill_button = _button("Kill switch", "power-off", "120px", style="danger",
                                   tooltip="halt trading: reject every new signal, cancel open orders")
        self.flatten_button = _button("Flatten", "compress", "95px", style="warning",
                                      tooltip="halt trading, cancel open orders and close every position "
                                              "with market orders")
        self.resume_button = _button("Resume", "play-circle", "95px",
                                     tooltip="lift the halt: new signals are accepted again")
        self.export_button = _button("Export", "file-export", "90px",
                                     tooltip="write the current strategy to a standalone script")
        self.export_path = widgets.Text(value="", placeholder="strategies/<strategy>.py",
                                        layout=widgets.Layout(width="210px"))
        self.token_select = widgets.Dropdown(options=token_options, value=token, description="instrument",
                                             layout=widgets.Layout(width="320px"))
        self.message = widgets.HTML()
        self.message.add_class("kit-message")

        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(self._on_stop)
        self.kill_button.on_click(self._on_kill)
        self.flatten_button.on_click(self._on_flatten)
        self.resume_button.on_click(self._on_resume)
        self.export_button.on_click(self._on_export)
        self.mode_toggle.observe(self._on_mode, names="value")
        self.token_select.observe(self._on_token, names="value")
        return widgets.HBox([self.mode_toggle, self.start_button, self.stop_button, self.kill_button,
                             self.flatten_button, self.resume_button, self.token_select, self.export_button,
                             self.export_path],
                            layout=widgets.Layout(align_items="center", flex_flow="row wrap"))

    def _control_widgets(self) -> tuple:
        return (self.mode_toggle, self.start_button, self.stop_button, self.kill_button, self.flatten_button,
                self.resume_button, self.export_button, self.export_path, self.token_select, self.message)

    # ------------------------------------------------------------------ kernel thread
    def _on_start(self, _button=None) -> None:
        if self._replaced():
            self._post("this trader was replaced by a newer one of the same name; "
                       "run kit.dashboard(trader) for the new one", error=True)
            return
        self._act("start", lambda: (self.trader.start(),
                                    f"started on the {self.trader.config.feed} feed, mode {self.trader.mode}")[1])

    def _on_stop(self, _button=None) -> None:
        self._act("stop", lambda: (self.trader.stop(), "stopped")[1])

    def _on_kill(self, _button=None) -> None:
        """Halt trading first (no new order can pass), then cancel what is still open."""
        def kill():
            # The engine's kill switch, without flattening and without waiting for the exchange.
            report = self.trader.kill("kill switch pressed in the dashboard", flatten=False, timeout=0)
            return (f"KILL SWITCH: trading halted, {report['cancelled']} open order(s) cancelled; "
                    "the feed keeps running. Resume lifts the halt")
        self._act("kill switch", kill, error=True)

    def _on_flatten(self, _button=None) -> None:
        if self._flattening.is_set():
            self._post("a flatten is already under way")
            return
        self._flattening.set()
        self._post("FLATTEN: halting, cancelling open orders, closing positions…", error=True)
        threading.Thread(target=self._flatten, name=f"kit-flatten-{self.trader.config.name}", daemon=True).start()

    def _flatten(self) -> None:
        """On its own thread: the live kill path waits for the exchange up to FLATTEN_TIMEOUT."""
        try:
            report = self.trader.kill("flatten pressed in the dashboard", flatten=True, timeout=FLATTEN_TIMEOUT)
            left = {self._name(token, exchange_type): qty for (exchange_type, token), qty in report["positions"].items()}
            text = (f"FLATTEN: trading halted, {report['cancelled']} open order(s) cancelled, "
                    f"{len(report['flatten_orders'])} closing order(s) sent")
            if report["error"]:
                text += f"; {report['error']}"
            if self.trader.broker.live:
                text += "; settled" if report["settled"] else f"; not all settled after {FLATTEN_TIMEOUT:g} s"
                text += f"; positions still open: {left}" if left else "; no position left"
            else:
                text += " (paper: they fill on the next tick of each instrument)"
            text += ". Resume lifts the halt"
            self._post(text, error=True)
        except Exception as exc:
            log.exception("flatten failed")
            self._post(f"flatten failed: {type(exc).__name__}: {exc}", error=True)
        finally:
            self._flattening.clear()
            self._refresh_soon()

    def _on_resume(self, _button=None) -> None:
        self._act("resume", lambda: (self.trader.resume(), "resumed: new signals are accepted again")[1])

    def _on_export(self, _button=None) -> None:
        """Write the running strategy's class, with what it uses from the notebook, to a script."""
        from kit.research.export import ExportError, default_script_path, export_strategy, run_command
        strategy = self.trader.strategy
        if strategy is None:
            self._post("no strategy to export: assign trader.strategy first", error=True)
            return
        path = self.export_path.value.strip() or str(default_script_path(type(strategy)))
        try:
            written = export_strategy(type(strategy), path)
            self._post(f"exported {type(strategy).__name__} to {written}; run: {run_command(written)} --feed sim "
                       "--duration 10")
        except ExportError as exc:
            self._post(f"export failed: {exc}", error=True)
        except Exception as exc:
            log.exception("export failed")
            self._post(f"export failed: {type(exc).__name__}: {exc}", error=True)

    def _on_mode(self, change) -> None:
        # trader.mode first, then _applied_mode: a refresh in between sees the
        # trader already in the new mode and leaves the toggle as it is.
        self.trader.mode = change["new"]
        self._applied_mode = change["new"]
        self._post(f"mode {change['new']}")

    def _on_token(self, change) -> None:
        if self._relabelling:
            return
        self._token = change["new"]
        self._post(f"charting {self._name(change['new'])}")

    def _act(self, what: str, action, *, error: bool = False) -> None:
        try:
            self._post(action(), error=error)
        except Exception as exc:   # shown, not raised: a click has no cell to raise into
            log.exception("%s failed", what)
            self._post(f"{what} failed: {type(exc).__name__}: {exc}", error=True)

    def _post(self, text: str, *, error: bool = False) -> None:
        """The message line's next text (IST clock), shown by the refresh thread, which this wakes."""
        stamp = time.strftime("%H:%M:%S", time.gmtime(time.time() + 5.5 * 3600))
        self._message = (f"{stamp} {text}", error)
        self._refresh_soon()

    def _message_html(self) -> str:
        text, error = self._message
        if not text:
            return ""
        return f'<span style="color:{palette.ERROR if error else palette.MUTED}">{html.escape(text)}</span>'

    def _replaced(self) -> bool:
        return current_trader(self.trader.config.name) is not self.trader

    def _sync_controls(self, status: dict) -> None:
        """Button states from the trader's status (refresh thread)."""
        running, halted = status["running"], bool(words.halt_reasons(status))
        self.start_button.disabled = running
        self.stop_button.disabled = not running
        self.kill_button.disabled = status["halted"]
        self.kill_button.description = "Halted" if status["halted"] else "Kill switch"
        self.flatten_button.disabled = self._flattening.is_set()
        self.resume_button.disabled = not halted
        mode = self.trader.mode
        if mode != self._applied_mode:      # changed in code: follow it
            self._applied_mode = mode
            self.mode_toggle.value = mode
        shown = self._message
        if shown is not self._message_shown:
            self._message_shown = shown
            self.message.value = self._message_html()


def _button(description: str, icon: str, width: str, *, style: str = "", tooltip: str = "") -> widgets.Button:
    return widgets.Button(description=description, icon=icon, button_style=style, tooltip=tooltip,
                          layout=widgets.Layout(width=width))
