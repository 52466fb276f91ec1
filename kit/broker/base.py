"""The broker contract: what the engine, risk and the dashboard may ask of a broker, paper or live.

``PaperBroker`` and ``SmartApiBroker`` both satisfy ``Broker``
(``tests/test_broker_protocol.py`` checks them, signatures included), so code
written against it runs unchanged on either:

    def exposure_report(broker: Broker) -> dict:
        return {key: broker.exposure(p.token, p.exchange_type) for key, p in broker.positions.items()}

Both also hand out ``gtt`` (``kit.broker.gtt.GttBook``: GTT rules) and take
``modify`` (a resting order's price, quantity or stop trigger).

The live broker adds what only real orders need (``wait_settled``,
``check_positions``, ``reconcile``, ``latency_summary``, arming); those are
not part of the contract.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from kit.core.orders import Fill, Order, Position

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from kit.angel.instruments import InstrumentMaster
    from kit.broker.gtt import GttBook
    from kit.core.strategy import Signal
    from kit.core.tick import Tick


@runtime_checkable
class Broker(Protocol):
    """Orders from signals, fills, positions and P&L, thread-safe. Money in rupees, quantities in units."""

    live: bool                                   # True: real money (arming, trading hours apply)
    name: str                                    # "paper" or "smartapi"
    instruments: "InstrumentMaster | None"       # the instrument master its orders are checked against
    bad_marks: int                               # ticks whose price was not believed as a P&L mark
    gtt: "GttBook"                               # GTT rules, paper or at Angel One

    def on_tick(self, tick: "Tick") -> tuple[Fill, ...]:
        """Mark the instrument's last price; returns the fills this tick made (paper), else ``NO_FILLS``."""
        ...

    def submit(self, signal: "Signal", tick: "Tick | None" = None) -> Order:
        """Accept ``signal`` as an order; returns a copy (``REJECTED`` with ``status_message`` if refused)."""
        ...

    def cancel(self, order_id: str) -> bool:
        """Cancel an active order; False if it is unknown or no longer active."""
        ...

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None,
               trigger: float | None = None) -> bool:
        """Change an active order's limit price, quantity or stop trigger; False if refused (logged why)."""
        ...

    def cancel_all(self) -> int:
        """Cancel every active order; returns how many cancels were made or requested."""
        ...

    def flatten(self, reason: str = "flatten", *, exchange_types=None) -> list[Order]:
        """A MARKET order against every non-zero position (of ``exchange_types`` only, if given); returns them."""
        ...

    def open_orders(self) -> list[Order]:
        """Copies of the orders still active, oldest first."""
        ...

    def position(self, token: str, exchange_type: int | None = None) -> Position | None:
        """The position in ``token`` (None if nothing ever filled there)."""
        ...

    @property
    def positions(self) -> dict[tuple[int, str], Position]:
        """Every traded instrument's position, keyed by (exchange type, token)."""
        ...

    def exposure(self, token: str, exchange_type: int) -> int:
        """Signed units held plus the unfilled units of active orders in this instrument, in O(1)."""
        ...

    def pnl(self) -> dict[str, float]:
        """``{"realized", "unrealized", "total" (gross), "charges", "net" (total - charges)}`` over all positions."""
        ...

    def last_price(self, token: str, exchange_type: int) -> float:
        """The last plausible price seen for this instrument (0.0: none yet)."""
        ...

    def lot_size(self, token: str, exchange_type: int) -> int | None:
        """The instrument master's lot size (None without a master or for an unknown instrument)."""
        ...

    def add_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Call ``listener(fill)`` after every fill; what it raises is logged and swallowed."""
        ...

    def remove_fill_listener(self, listener: Callable[[Fill], object]) -> None:
        """Stop calling ``listener``; a no-op if it was never added."""
        ...

    def orders_df(self) -> "pandas.DataFrame":
        """One row per order."""
        ...

    def fills_df(self) -> "pandas.DataFrame":
        """One row per fill, oldest first."""
        ...

    def positions_df(self) -> "pandas.DataFrame":
        """One row per traded instrument."""
        ...

    def close(self) -> None:
        """Release what the broker holds (its journal, its threads). Final for a journaled broker."""
        ...
