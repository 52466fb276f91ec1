"""What a paper fill costs: its charges, and the slippage models that move its price.

``FillCosts`` holds the models the paper broker prices fills by
(``PaperBroker(charges=, product=, slippage=)``) and what they read from the
instrument master:

* every fill carries its ``charges``: ``kit.core.charges.Charges().for_fill``
  for the broker's ``product``, the segment from the instrument master when
  there is one (``PaperBroker(charges=None)`` turns them off). Positions add
  them up and ``pnl()`` reports ``total`` (gross) and ``net = total - charges``.
* a slippage model (``kit.broker.slippage``: ``FixedTicks``,
  ``SpreadFraction``, ``LatencyTicks``) prices market fills worse or later;
  the default, ``NoSlippage()``, fills at the printed price of the next tick.
  ``slip`` and ``wait`` are the tick path's view of it (``kit.broker.paper_matching``
  applies them).
* ``spec``: an instrument's tick size, type and strike, which the charges,
  the slippage, a bracket's legs and the margin account all read.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kit.broker.slippage import NoSlippage, SlippageModel
from kit.core.charges import Charges

if TYPE_CHECKING:  # pragma: no cover
    from kit.angel.instruments import InstrumentMaster
    from kit.core.orders import Order

__all__ = ["FillCosts", "DEFAULT_CHARGES"]

log = logging.getLogger("kit.broker.paper")     # one logger for the paper broker, whichever part speaks

# How many (instrument, side, quantity, price) charges are remembered before starting afresh.
_CHARGES_REMEMBERED = 65_536


class _DefaultCharges:
    """``PaperBroker(charges=...)`` left out: Angel One's published rates, a new ``Charges()``."""

    def __repr__(self) -> str:
        return "Charges()"


DEFAULT_CHARGES = _DefaultCharges()


class FillCosts:
    """The charges model, product and slippage model paper fills are priced by, and the instrument
    master they read. Its caches are the caller's to guard (the broker's lock)."""

    def __init__(self, master: "InstrumentMaster | None", charges: "Charges | None | _DefaultCharges",
                 product: str, slippage: SlippageModel | None):
        self.master = master
        self.product = product
        self.model = Charges() if charges is DEFAULT_CHARGES else charges
        self.slippage = NoSlippage() if slippage is None else slippage

    # -- the settings (each change forgets what was worked out from the old one) --

    @property
    def master(self) -> "InstrumentMaster | None":
        return self._master

    @master.setter
    def master(self, master: "InstrumentMaster | None") -> None:
        self._master = master
        self._specs: dict[tuple[str, int], tuple] = {}            # (tick size, type, strike)
        self._forget_charges()

    @property
    def model(self) -> "Charges | None":
        return self._model

    @model.setter
    def model(self, model: "Charges | None") -> None:
        if model is not None and not callable(getattr(model, "for_fill", None)):
            raise TypeError(f"charges takes a kit.Charges (or None for none), not {type(model).__name__}")
        self._model = model
        self._forget_charges()

    @property
    def product(self) -> str:
        return self._product

    @product.setter
    def product(self, product: str) -> None:
        self._product = product
        self._forget_charges()

    @property
    def slippage(self) -> SlippageModel:
        return self._slippage

    @slippage.setter
    def slippage(self, slippage: SlippageModel) -> None:
        if not isinstance(slippage, SlippageModel):
            raise TypeError(f"slippage takes a kit.broker.slippage model (NoSlippage(), FixedTicks(n), ...), "
                            f"not {type(slippage).__name__}")
        self._slippage = slippage
        # The tick path's view of it: no call at all for the default, and the ticks a new order waits.
        self.slip = None if type(slippage) is NoSlippage else slippage.price
        self.wait = slippage.delay_ticks - 1

    def _forget_charges(self) -> None:
        self._segments: dict[tuple[str, int], str | None] = {}    # the charges' segment
        self._charged: dict[tuple, float] = {}                    # see charge

    # -- what an instrument is ------------------------------------------------

    def spec(self, token: str, exchange_type: int) -> tuple:
        """``(tick size or None, instrument type, strike)`` of an instrument, from the master (cached)."""
        key = (token, exchange_type)
        spec = self._specs.get(key)
        if spec is None:
            inst = self._master.get(token, exchange_type) if self._master is not None else None
            spec = self._specs[key] = ((inst.tick_size or None, inst.instrument_type or "", inst.strike or 0.0)
                                       if inst is not None else (None, "", 0.0))
        return spec

    # -- charges --------------------------------------------------------------

    def charge(self, order: "Order", price: float) -> float:
        """The charges of ``order`` filling whole at ``price``: ``Charges.for_fill(...).total``; the
        caller checks ``model`` is not None.

        Remembered by (instrument, side, quantity, price), the only inputs once the model and product
        are fixed: a replay fills the same quantity at the same few prices again and again, and a dict
        lookup costs a tenth of the arithmetic.
        """
        key = (order.token, order.exchange_type, order.side, order.qty, price)
        total = self._charged.get(key)
        if total is None:
            if len(self._charged) >= _CHARGES_REMEMBERED:
                self._charged.clear()
            total = self._charged[key] = self._charge_of(order, price)
        return total

    def _charge_of(self, order: "Order", price: float) -> float:
        model = self._model
        key = (order.token, order.exchange_type)
        try:
            segment = self._segments[key]
        except KeyError:
            instrument_type = self.spec(order.token, order.exchange_type)[1] or None
            segment = model.segment(order.exchange_type, order.token, self._product, instrument_type)
            try:
                model.rates(segment)
            except KeyError as exc:
                log.warning("paper broker: fills of token %s (exchange type %s) are not charged: %s",
                            order.token, order.exchange_type, exc.args[0])
                segment = None
            self._segments[key] = segment
        if segment is None:
            return 0.0
        return model.for_fill(order.exchange_type, segment, order.side, order.qty, price, self._product).total
