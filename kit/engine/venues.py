"""Venues: where a trader's ticks come from and its live orders go. A venue owns the connection.

    SimVenue     the embedded simulator (``kit.sim``): started on first use, a fixed throwaway
                 account, its REST server for live orders, its instrument master, its default
                 instruments. ``SimVenue(simulator=sim)`` shares a running simulator instead
                 (``close()`` then leaves it running).
    AngelVenue   Angel One: credentials from the environment or a ``.env`` file
                 (``kit.angel.session``), one login shared by the feed and the live broker, URLs
                 from ``ConnectionConfig`` or the environment.

A venue that logged in keeps the session valid with a ``SessionKeeper``
(``venue.keeper``, ``kit.angel.session_keeper``): renewed before the JWT
expires and when a token is refused; the feed and the order-update socket
take their credentials from it at every (re)connect.

A trader asks its venue for the feed's URL and credentials (``feed_target``),
for what the live broker's ``connect`` needs (``broker_link``) and for the
instrument master paper trading checks orders against (``instruments``). A
replay has no venue (``trader.venue is None``).

This is the only module of the product that imports ``kit.sim``, and only when
a simulator is wanted: importing ``kit`` loads no simulator.

    trader = kit.LiveTrader(kit.TraderConfig(feed="sim"), venue=kit.SimVenue(simulator=running_sim))
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from kit.engine.config import ConnectionConfig, SimConfig, TraderConfig
from kit.feed.live import FeedCredentials

if TYPE_CHECKING:
    from kit.angel.instruments import InstrumentMaster
    from kit.angel.session import Credentials, Session
    from kit.angel.session_keeper import SessionKeeper

__all__ = ["Venue", "SimVenue", "AngelVenue", "BrokerLink", "venue_for"]


@dataclass(frozen=True)
class BrokerLink:
    """What ``SmartApiBroker.connect`` needs: a logged-in ``SmartConnect``, the order-update socket's
    credentials and URL, and the instrument master."""
    client: object = field(repr=False)
    credentials: FeedCredentials = field(repr=False)
    order_update_url: str
    instruments: "InstrumentMaster" = field(repr=False)
    session: "SessionKeeper | None" = field(default=None, repr=False)


class Venue(Protocol):
    feed: str                       # the TraderConfig.feed it serves
    session: "Session | None"       # the REST login, once there is one
    keeper: "SessionKeeper | None"  # keeps that login valid, once there is one

    def start(self) -> None: ...                                    # idempotent
    def feed_target(self) -> tuple[str, FeedCredentials]: ...       # after start()
    def broker_link(self) -> BrokerLink: ...                        # after start()
    def instruments(self) -> "InstrumentMaster": ...                # after start()
    def default_tokens(self) -> dict | None: ...
    def client_code(self) -> str: ...
    def describe(self) -> str: ...                                  # where the feed comes from, for people
    def close(self) -> None: ...


class SimVenue:
    """The embedded simulator: no credentials, no internet."""
    feed = "sim"

    def __init__(self, config: SimConfig | None = None, *, tokens: dict | None = None, simulator=None,
                 session_margin: float | None = None):
        self.config = config or SimConfig()
        self.tokens = tokens
        self.simulator = simulator          # a Simulator, or anything with its interface (kit.bench.simproc)
        self._owns_simulator = simulator is None
        self.session: Session | None = None
        self.keeper: SessionKeeper | None = None
        self.session_margin = session_margin

    def start(self) -> None:
        if self.simulator is None:
            from kit.sim.server import Simulator
            c = self.config
            self.simulator = Simulator(port=c.port, tokens=self.tokens, rate=c.rate, seed=c.seed,
                                       delay_ms=c.delay_ms, token_lifetime=c.token_lifetime)
        self.simulator.start()

    def feed_target(self) -> tuple[str, FeedCredentials]:
        """The login's credentials once there is one (a live trader's); else the simulator's well-known ones."""
        if self.keeper is not None:
            return self.simulator.url, self.keeper.current()
        c = self.simulator.credentials
        return self.simulator.url, FeedCredentials(c.auth_token, c.api_key, c.client_code, c.feed_token)

    def _credentials(self) -> "Credentials":
        from kit.angel.session import Credentials
        rc = self.simulator.rest.credentials
        return Credentials(rc.api_key, rc.client_code, rc.pin, rc.totp_secret)

    def broker_link(self) -> BrokerLink:
        """Log in to the simulator's REST server, as a live trader logs in to Angel One's."""
        from kit.angel.session import login
        if self.session is None:
            self.session = login(self._credentials(), root=self.simulator.rest.url)
            self.keeper = _keeper(self.session, self._credentials, self.session_margin)
        return BrokerLink(self.session.client, self.session.feed, self.simulator.orders.url, self.instruments(),
                          self.keeper)

    def instruments(self) -> "InstrumentMaster":
        # Always fetched: a cached copy could be another simulator's that had the same port earlier today.
        return _master(self.simulator.orders.master_url, refresh=True)

    def default_tokens(self) -> dict:
        from kit.sim.server import DEFAULT_TOKENS
        return DEFAULT_TOKENS

    def client_code(self) -> str:
        if self.session is not None:
            return self.session.client_code
        if self.simulator is not None:
            return self.simulator.credentials.client_code
        from kit.sim.server import SimCredentials
        return SimCredentials().client_code

    def describe(self) -> str:
        return "simulator"

    def close(self) -> None:
        """Stop the simulator this venue started; a shared one keeps running."""
        if self.keeper is not None:
            self.keeper.stop()
        if self.session is not None:
            self.session.client.close()
        if self.simulator is not None and self._owns_simulator:
            self.simulator.stop()
            self.simulator = None

    def __repr__(self) -> str:
        return f"<SimVenue {getattr(self.simulator, 'url', 'not started')}>"


class AngelVenue:
    """Angel One's SmartAPI. The login happens at the first ``start()`` and is kept across restarts."""
    feed = "smartapi"

    def __init__(self, connection: ConnectionConfig | None = None):
        self.connection = connection or ConnectionConfig()
        self.session: Session | None = None
        self.keeper: SessionKeeper | None = None

    def _credentials(self) -> "Credentials":
        from kit.angel.session import Credentials
        return Credentials.from_env(self.connection.env_file)     # read again at every fresh login

    def start(self) -> None:
        from kit.angel.session import login
        if self.session is None:
            c = self.connection
            self.session = login(self._credentials(), root=c.rest_url)
            self.keeper = _keeper(self.session, self._credentials, c.session_margin)

    def feed_url(self) -> str:
        from kit.angel.session import ANGEL_FEED_URL, FEED_URL_ENV
        return self.connection.feed_url or os.environ.get(FEED_URL_ENV) or ANGEL_FEED_URL

    def feed_target(self) -> tuple[str, FeedCredentials]:
        return self.feed_url(), self.keeper.current()

    def describe(self) -> str:
        """"Angel One", or the host that speaks its protocol instead (the simulator, a test double)."""
        from kit.angel.session import ANGEL_FEED_URL
        host = urllib.parse.urlsplit(self.feed_url()).hostname or ""
        return "Angel One" if host == urllib.parse.urlsplit(ANGEL_FEED_URL).hostname else f"SmartAPI at {host}"

    def broker_link(self) -> BrokerLink:
        from kit.angel.instruments import MASTER_URL_ENV
        from kit.angel.order_updates import ANGEL_ORDER_UPDATE_URL, ORDER_UPDATE_URL_ENV
        c = self.connection
        updates_url = c.order_update_url or os.environ.get(ORDER_UPDATE_URL_ENV) or ANGEL_ORDER_UPDATE_URL
        master_url = c.instruments_url or os.environ.get(MASTER_URL_ENV) or None
        return BrokerLink(self.session.client, self.keeper.current(), updates_url, _master(master_url), self.keeper)

    def instruments(self) -> "InstrumentMaster":
        return _master(self.connection.instruments_url)     # None: $SMARTAPI_MASTER_URL or Angel One's

    def default_tokens(self) -> None:
        return None                 # Angel One has no default instruments: TraderConfig(tokens=...) is required

    def client_code(self) -> str:
        if self.session is not None:
            return self.session.client_code
        from kit.angel.session import Credentials
        return Credentials.from_env(self.connection.env_file).client_code

    def close(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        if self.session is not None:
            self.session.client.close()     # its kept-alive connections; the login itself stays valid

    def __repr__(self) -> str:
        return f"<AngelVenue {'logged in' if self.session is not None else 'not logged in'}>"


def venue_for(config: TraderConfig) -> Venue | None:
    """The venue ``config.feed`` names; None for a replay."""
    if config.feed == "sim":
        # Symbols are resolved at start(); the simulator makes a market for any token subscribed.
        return SimVenue(config.sim, tokens=config.tokens if isinstance(config.tokens, dict) else None,
                        session_margin=config.connection.session_margin)
    if config.feed == "smartapi":
        return AngelVenue(config.connection)
    return None


def _keeper(session: "Session", credentials, margin: float | None) -> "SessionKeeper":
    from kit.angel.session_keeper import DEFAULT_MARGIN, SessionKeeper
    return SessionKeeper(session, credentials, margin=DEFAULT_MARGIN if margin is None else margin).start()


def _master(url: str | None, *, refresh: bool = False) -> "InstrumentMaster":
    from kit.angel.instruments import InstrumentMaster
    return InstrumentMaster.load(url, refresh=refresh)


def __getattr__(name):
    # ``kit.Simulator``: the simulator class itself, loaded on first use.
    if name == "Simulator":
        from kit.sim.server import Simulator
        return Simulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
