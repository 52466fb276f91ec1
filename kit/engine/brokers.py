"""The trader's broker: paper or live, its journal, and its connection through the venue."""
from __future__ import annotations

from typing import TYPE_CHECKING

from kit.broker.base import Broker
from kit.broker.paper import PaperBroker
from kit.broker.risk import RiskManager
from kit.engine.config import TraderConfig

if TYPE_CHECKING:
    from kit.engine.venues import Venue


def make_broker(config: TraderConfig, risk: RiskManager, venue: "Venue | None") -> Broker:
    """A ``PaperBroker`` (journaled only when ``config.journal.path`` is set; its product, capital,
    charges and slippage from the config), or for ``paper=False`` a ``SmartApiBroker`` journaled at
    that path or the default one for the venue's client code (its product, charges and margin check)."""
    journal_config, collar = config.journal, risk.limits.price_collar
    paper = {"price_collar": collar, "product": config.product, "capital": config.capital,
             "charges": config.charges, "slippage": config.slippage}
    if config.paper and journal_config.path is None:
        return PaperBroker(**paper)
    from kit.store.journal import Journal
    path = journal_config.path or Journal.default_path(config.name, client_code=venue.client_code())
    journal = Journal(path, synchronous=journal_config.sync, owner=config.name)
    try:
        if config.paper:
            return PaperBroker(journal=journal, **paper)
        from kit.broker.live import SmartApiBroker
        return SmartApiBroker(journal, product=config.product, name=config.name, gate=risk.gate,
                              price_collar=collar, charges=config.charges, margin_check=config.margin_check)
    except BaseException:       # e.g. a paper trader given a live trader's journal: leave it unlocked
        journal.close()
        raise


def connect_broker(broker: Broker, venue: "Venue", config: TraderConfig) -> None:
    """Connect a live broker once (a restart keeps it connected); give paper the instrument master,
    so it refuses what live would (unknown tokens, odd lots, off-tick prices)."""
    if not broker.live:
        if broker.instruments is None:
            broker.instruments = venue.instruments()
    elif not broker.connected:
        link = venue.broker_link()
        broker.connect(link.client, link.credentials, link.order_update_url, link.instruments,
                       reconnect=config.connection.reconnect, session=link.session)
