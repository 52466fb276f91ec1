"""Strategy errors: kept where a notebook can read them, logged at a bounded rate, and held to a budget.

Every exception a strategy raises (in ``on_tick``, ``on_gap``, ``on_start``,
``on_stop``) and every bad value ``on_tick`` returns is one error. The last
``KEPT`` are kept with their traceback, whatever thread they happened on, so
``trader.errors`` shows them in the notebook even when the tick came on the
socket thread. The log gets the first few with their traceback and then one
line now and then: a strategy failing on every tick must not write a
traceback per tick.

The error budget (``ErrorBudget``, on by default): more than ``max_errors``
errors within ``window_s`` seconds close the trading gate under
``GATE_NAME``, so no new order goes out while the strategy is broken. The
stream goes on (ticks counted, charts live) and positions are left as they
are (flattening is the kill switch's job). ``trader.resume()`` reopens it.

Everything here is the slow path: nothing runs on a tick without an error.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from kit.core.market import IST, IST_ZONE

log = logging.getLogger(__name__)

GATE_NAME = "strategy_errors"
HOOKS = ("on_tick", "on_gap", "on_start", "on_stop", "output")
COLUMNS = ["time", "token", "symbol", "hook", "exception", "message", "traceback"]
KEPT = 500
LOGGED_IN_FULL = 10          # the first errors are logged with their traceback
LOG_EVERY = 1000             # then one line every LOG_EVERY errors
STACKS_KEPT = 100            # formatted stacks kept for reuse


@dataclass(frozen=True)
class ErrorBudget:
    """Halt new orders when more than ``max_errors`` strategy errors happen within ``window_s`` seconds.

        kit.TraderConfig(error_budget=kit.ErrorBudget(max_errors=50, window_s=60))
        kit.TraderConfig(error_budget=None)        # never halt for strategy errors
    """
    max_errors: int = 20
    window_s: float = 10.0

    def __post_init__(self):
        if not (isinstance(self.max_errors, int) and not isinstance(self.max_errors, bool) and self.max_errors >= 0):
            raise ValueError(f"ErrorBudget.max_errors is a count of errors, an int >= 0, not {self.max_errors!r}")
        if not (isinstance(self.window_s, (int, float)) and not isinstance(self.window_s, bool)
                and self.window_s > 0):
            raise ValueError(f"ErrorBudget.window_s is seconds, > 0, not {self.window_s!r}")

    def halt_reason(self) -> str:
        errors = "a strategy error" if self.max_errors == 0 else f"more than {self.max_errors} strategy errors"
        return f"{errors} in {self.window_s:g} s: new orders halted; fix the strategy, then trader.resume()"


class StrategyErrors:
    """The errors of one trader's strategies: counted, kept (a ring of ``KEPT``), logged, budgeted.

    ``record`` is called with the strategy lock held, so one thread at a time
    writes; readers copy the ring.
    """

    def __init__(self, gate, budget: ErrorBudget | None, *, kept: int = KEPT):
        self.count = 0
        self.last = ""                   # "TypeError: ..." of the last error
        self.last_traceback = ""
        self._records: deque[tuple] = deque(maxlen=kept)
        self._stacks: dict[tuple, str] = {}     # formatted stacks by the code places they pass through
        self._gate = gate
        self.budget = budget
        # The times of the last max_errors + 1 errors: the budget is spent when they fit in the window.
        self._recent: deque[float] = deque(maxlen=budget.max_errors + 1) if budget is not None else deque()

    def record(self, strategy, tick, exc: BaseException, hook: str) -> None:
        self.count += 1
        name = type(exc).__name__
        message = str(exc)
        self.last = f"{name}: {message}"
        text = self._traceback_text(exc)
        self.last_traceback = text
        token = getattr(tick, "token", None)
        exchange_type = getattr(tick, "exchange_type", None)
        self._records.append((time.time(), token, exchange_type, hook, name, message, text))
        self._log(strategy, tick, exc, hook)
        if self.budget is not None:
            self._spend()

    def _traceback_text(self, exc: BaseException) -> str:
        """``traceback.format_exception(exc)``, with the stack formatted once per place in the code: a
        strategy failing on every tick fails in the same place, and formatting is most of an error's cost."""
        tb = exc.__traceback__
        if tb is None or exc.__cause__ is not None or exc.__context__ is not None:
            return "".join(traceback.format_exception(exc))
        where = []
        while tb is not None:
            where.append((tb.tb_frame.f_code, tb.tb_lineno))
            tb = tb.tb_next
        key = tuple(where)
        stack = self._stacks.get(key)
        if stack is None:
            if len(self._stacks) >= STACKS_KEPT:
                self._stacks.clear()
            stack = self._stacks[key] = "".join(traceback.format_tb(exc.__traceback__))
        return f"Traceback (most recent call last):\n{stack}{''.join(traceback.format_exception_only(exc))}"

    def _log(self, strategy, tick, exc, hook: str) -> None:
        n = self.count
        name = type(strategy).__name__
        if n <= LOGGED_IN_FULL:
            if hook == "output":    # a bad return value has no traceback worth printing: its message says it all
                log.error("%s.on_tick returned a bad value on %r (error #%d): %s", name, tick, n, exc)
            else:
                log.error("%s.%s raised on %r (error #%d)", name, hook, tick, n, exc_info=exc)
            if n == LOGGED_IN_FULL:
                log.error("further strategy errors are logged once every %d; trader.errors has the last %d "
                          "with their tracebacks", LOG_EVERY, self._records.maxlen)
        elif n % LOG_EVERY == 0:
            log.error("%d strategy errors so far; the last: %s", n, self.last)

    def _spend(self) -> None:
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        if (len(recent) == recent.maxlen and now - recent[0] <= self.budget.window_s
                and not self._gate.is_closed(GATE_NAME)):
            reason = self.budget.halt_reason()
            self._gate.close(GATE_NAME, reason)
            log.error("ERROR BUDGET: %s (the last error: %s)", reason, self.last)

    @property
    def halted(self) -> str:
        """Why the budget halted new orders, or ""."""
        return self._gate.reasons.get(GATE_NAME, "")

    def restart_window(self) -> None:
        """Forget the errors counted toward the budget (a new strategy, or a resume)."""
        self._recent.clear()

    def resume(self) -> None:
        """Reopen the gate the budget closed and restart its window."""
        self._recent.clear()
        self._gate.open(GATE_NAME)

    def frame(self, symbol_of):
        """The kept errors as a DataFrame, newest last; ``symbol_of(token, exchange_type)`` names instruments."""
        import pandas as pd
        rows = [(datetime.fromtimestamp(t, IST), token, symbol_of(token, ex) if token is not None else "",
                 hook, name, message, text)
                for t, token, ex, hook, name, message, text in list(self._records)]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["time"] = pd.to_datetime(frame["time"], utc=True).dt.tz_convert(IST_ZONE)
        return frame
