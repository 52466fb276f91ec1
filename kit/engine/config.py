"""What a ``LiveTrader`` is built from: one ``TraderConfig`` composed of its parts' configs.

    kit.TraderConfig(feed="sim", mode="callback", sim=kit.SimConfig(rate=20))
    kit.TraderConfig(feed="replay", replay=kit.ReplayConfig("recordings/", speed=10.0))
    kit.TraderConfig(feed="replay", replay=..., capital=500_000, slippage=FixedTicks(1))    # paper's account
    kit.TraderConfig(feed="smartapi", paper=False, tokens={2: ["43650"]},
                     connection=kit.ConnectionConfig(env_file="~/.smartapi.env"),
                     journal=kit.JournalConfig(sync="NORMAL"), risk=kit.RiskLimits(max_daily_loss=5_000))

The top level holds what a run chooses every time: the feed, the instruments
and how they are subscribed, the dispatch mode (``trader.mode`` switches it
later), paper or live and the order product, paper's account (capital,
charges, slippage), the trader's name, a recording directory, and two memory
settings. Each part holds the settings of one
component, with defaults that work offline, and checks them in its own
``__post_init__``:

    sim         SimConfig         the embedded simulator (feed="sim"): rate, seed, delay_ms, port
    replay      ReplayConfig      the replayed ticks (feed="replay"): source, speed, progress
    connection  ConnectionConfig  reaching Angel One and keeping the sockets up: URLs, the .env file,
                                  reconnect policy, heartbeat, stall timeout, frame parser
    dispatch    DispatchConfig    the dispatcher's queue: queue_size, poll_interval
    metrics     MetricsConfig     latency measurement: window, latency
    journal     JournalConfig     the SQLite journal: path, sync
    risk        RiskLimits        pre-trade risk (kit.broker.risk), and the calendar it applies
    square_off  SquareOff         the intraday square-off time per segment (kit.engine.square_off; None: never)

A setting given at the wrong level is a ``TypeError`` that says where it lives:
``TraderConfig(sim_rate=20)`` says "sim_rate is not a TraderConfig field: it
is SimConfig.rate — TraderConfig(sim=SimConfig(rate=20))", and a misspelt one
gets a did-you-mean.
"""
from __future__ import annotations

import difflib
import functools
import os
from dataclasses import MISSING, dataclass, field, fields

from kit.core.charges import Charges
from kit.broker.risk import RiskLimits
from kit.broker.slippage import NoSlippage, SlippageModel
from kit.core.tick import LTP, MODE_NAMES
from kit.engine.errors import ErrorBudget
from kit.engine.square_off import SquareOff
from kit.engine.tokens import checked_tokens
from kit.feed import shards
from kit.feed.dispatch import MODES, QUEUE
from kit.feed.live import ReconnectPolicy

FEEDS = ("sim", "smartapi", "replay")
PARSERS = ("fast", "sdk")
JOURNAL_SYNCS = ("FULL", "NORMAL", "EXTRA")

__all__ = ["TraderConfig", "SimConfig", "ReplayConfig", "ConnectionConfig", "DispatchConfig", "MetricsConfig",
           "JournalConfig", "RiskLimits", "SquareOff", "ErrorBudget", "FEEDS"]


def _strict(cls):
    """Make ``cls(unknown=...)`` a TypeError that says where ``unknown`` lives (see ``_misplaced``)."""
    init = cls.__init__
    names = frozenset(f.name for f in fields(cls) if f.init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for key in kwargs:
            if key not in names:
                raise TypeError(_misplaced(cls, key, kwargs[key]))
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@_strict
@dataclass
class SimConfig:
    """The embedded simulator, for ``feed="sim"`` (it streams ``TraderConfig.tokens``, or its own default set).

    ``rate``: ticks per second per instrument (0: only what a test publishes).
    ``port``: 0 picks a free port on 127.0.0.1. ``delay_ms``: added before each frame.
    ``token_lifetime``: seconds the tokens a login issues stay valid (None: never expire).
    """
    rate: float = 2.0
    seed: int = 7
    delay_ms: float = 0.0
    port: int = 0
    token_lifetime: float | None = None

    def __post_init__(self):
        if not (_number(self.rate) and self.rate >= 0):
            raise ValueError(f"SimConfig.rate is ticks per second per instrument, >= 0, not {self.rate!r}")
        if not (_number(self.delay_ms) and self.delay_ms >= 0):
            raise ValueError(f"SimConfig.delay_ms must be >= 0, not {self.delay_ms!r}")
        if not (isinstance(self.port, int) and not isinstance(self.port, bool) and 0 <= self.port <= 65535):
            raise ValueError(f"SimConfig.port must be 0 (any free port) or a port number, not {self.port!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"SimConfig.seed must be an int, not {self.seed!r}")
        if self.token_lifetime is not None and not (_number(self.token_lifetime) and self.token_lifetime > 0):
            raise ValueError(f"SimConfig.token_lifetime must be None (never expire) or > 0 s, not {self.token_lifetime!r}")


@_strict
@dataclass
class ReplayConfig:
    """The ticks of ``feed="replay"`` (``kit.feed.replay``).

    ``source``: a recording directory or a DataFrame of ticks. ``speed``: None
    replays as fast as possible; x replays x times the recorded pace.
    ``progress``: a ``tqdm.auto`` progress bar.
    """
    source: object = field(repr=False, compare=False)
    speed: float | None = None
    progress: bool = True

    def __post_init__(self):
        if self.source is None:
            raise ValueError("ReplayConfig needs a source: a recording directory or a DataFrame of ticks")
        if self.speed is not None and not (_number(self.speed) and self.speed > 0):
            raise ValueError("ReplayConfig.speed must be None (as fast as possible) or > 0")


@_strict
@dataclass
class ConnectionConfig:
    """Reaching the venue and keeping its sockets up.

    The URLs and ``env_file`` are Angel One's (``feed="smartapi"``): each URL
    left None comes from its environment variable (``SMARTAPI_ROOT_URL``,
    ``SMARTAPI_FEED_URL``, ``SMARTAPI_ORDER_UPDATE_URL``, ``SMARTAPI_MASTER_URL``)
    or Angel One's default, and the credentials from the environment or
    ``env_file``. The rest applies to the simulator's socket too: ``reconnect``
    (both sockets), the heartbeat, the stall timeout (None: never) and the
    frame ``parser`` ("fast", or "sdk" for the SDK's own). ``session_margin``:
    the session is renewed this many seconds before its JWT expires
    (``kit.angel.session_keeper``), and whenever a token is refused.
    """
    feed_url: str | None = None
    rest_url: str | None = None
    env_file: str | None = ".env"
    order_update_url: str | None = None
    instruments_url: str | None = None
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    heartbeat_interval: float = 10.0
    stall_timeout: float | None = 30.0
    parser: str = "fast"
    session_margin: float = 300.0

    def __post_init__(self):
        if not (_number(self.session_margin) and self.session_margin >= 0):
            raise ValueError(f"ConnectionConfig.session_margin must be >= 0 seconds, not {self.session_margin!r}")
        if not isinstance(self.reconnect, ReconnectPolicy):
            raise TypeError("ConnectionConfig.reconnect takes a kit.ReconnectPolicy, "
                            f"not {type(self.reconnect).__name__}")
        if not (_number(self.heartbeat_interval) and self.heartbeat_interval > 0):
            raise ValueError("ConnectionConfig.heartbeat_interval must be > 0 seconds, "
                             f"not {self.heartbeat_interval!r}")
        if self.stall_timeout is not None and not (_number(self.stall_timeout) and self.stall_timeout > 0):
            raise ValueError("ConnectionConfig.stall_timeout must be None (never) or > 0 seconds")
        if self.parser not in PARSERS:
            raise ValueError(f"ConnectionConfig.parser must be one of {PARSERS}, not {self.parser!r}")


@_strict
@dataclass
class DispatchConfig:
    """The dispatcher (``kit.feed.dispatch``); the mode itself is ``TraderConfig.mode``.

    ``queue_size``: the bounded queue of queue and poll modes (full: the oldest
    tick is dropped and counted; a replay waits instead). ``poll_interval``:
    poll mode's sleep between empty reads, in seconds.
    """
    queue_size: int = 1000
    poll_interval: float = 0.05

    def __post_init__(self):
        if not (isinstance(self.queue_size, int) and not isinstance(self.queue_size, bool) and self.queue_size > 0):
            raise ValueError(f"DispatchConfig.queue_size must be a positive int, not {self.queue_size!r}")
        if not (_number(self.poll_interval) and self.poll_interval > 0):
            raise ValueError(f"DispatchConfig.poll_interval must be > 0 seconds, not {self.poll_interval!r}")


@_strict
@dataclass
class MetricsConfig:
    """Latency per stage per mode (``kit.engine.metrics``).

    ``latency=False`` skips the per-tick stamps and ``metrics.record`` (signals,
    fills and positions are unaffected): for an as-fast-as-possible replay,
    where latency means little. ``window``: the last ticks the percentiles cover.
    """
    window: int = 100_000
    latency: bool = True

    def __post_init__(self):
        if not (isinstance(self.window, int) and not isinstance(self.window, bool) and self.window > 0):
            raise ValueError(f"MetricsConfig.window must be a positive int, not {self.window!r}")


@_strict
@dataclass
class JournalConfig:
    """The SQLite journal (``kit.store.journal``) that keeps orders, fills and positions across a restart.

    Live: always, at ``path`` or ``Journal.default_path(name, client_code)``.
    Paper: only when a ``path`` is given, so backtests and replays write no
    file. ``sync``: SQLite's synchronous level, "FULL" (survives a power cut),
    "NORMAL" (survives a killed process) or "EXTRA".
    """
    path: str | os.PathLike | None = None
    sync: str = "FULL"

    def __post_init__(self):
        if not isinstance(self.sync, str) or self.sync.upper() not in JOURNAL_SYNCS:
            raise ValueError(f"JournalConfig.sync must be one of {JOURNAL_SYNCS}, not {self.sync!r}")


@_strict
@dataclass
class TraderConfig:
    """Everything a ``LiveTrader`` needs; every field has a working offline default (see the module docstring).

    ``tokens``: ``{exchange_type: [token, ...]}`` or a list of trading symbols
    (``["NIFTY", "SBIN-EQ"]``, resolved through the venue's instrument master at
    ``start()``; a token or symbol it does not list is an error there); None
    means the simulator's default instruments (the NIFTY index and a strip of
    NIFTY options). ``error_budget``: halt new orders when the strategy keeps
    failing (``kit.engine.errors``; None: never).
    ``subscription_mode``: LTP, QUOTE or SNAP_QUOTE. ``record``: a directory
    where every tick the engine handles is recorded (``kit.store.recording``).
    ``signals_kept``: the last signals kept in ``trader.signals`` (a ring; the
    full history is in the journal or the recording). ``freeze_heap``: leave the
    objects that existed at ``start()`` out of the cyclic GC while trading
    (``kit.engine.heap``). ``product``: the orders' product type (live; on
    paper it picks the charges' segment and the margin rate).

    Costs and the account: ``charges`` on every fill, paper and live
    (``kit.Charges()``, Angel One's published rates; None: none). Paper only:
    ``capital`` rupees of a margin account that refuses an order it cannot
    carry (None: no account) and the ``slippage`` model of market fills
    (``kit.broker.slippage``; the default, ``NoSlippage()``, fills at the next
    tick's price). Live only: ``margin_check`` asks Angel One's margin API
    before each opening order (two requests an order; off by default).
    """
    feed: str = "sim"
    tokens: dict | list | None = None
    subscription_mode: int = LTP
    mode: str = QUEUE
    paper: bool = True
    product: str = "INTRADAY"
    capital: float | None = None
    charges: Charges | None = field(default_factory=Charges, compare=False)
    slippage: SlippageModel = field(default_factory=NoSlippage)
    margin_check: bool = False
    name: str = "default"
    record: str | None = None
    signals_kept: int = 10_000
    freeze_heap: bool = True
    sim: SimConfig = field(default_factory=SimConfig)
    replay: ReplayConfig | None = None
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    risk: RiskLimits = field(default_factory=RiskLimits)
    square_off: SquareOff | None = field(default_factory=SquareOff)
    error_budget: ErrorBudget | None = ErrorBudget()

    def __post_init__(self):
        for attr, part in _PARTS.items():
            value = getattr(self, attr)
            if not isinstance(value, part) and not (attr in ("replay", "square_off") and value is None):
                raise TypeError(_wrong_part(attr, part, value))
        if self.feed not in FEEDS:
            raise ValueError(f"feed must be one of {FEEDS}, not {self.feed!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.subscription_mode not in MODE_NAMES:
            raise ValueError(f"subscription_mode must be one of {sorted(MODE_NAMES)}")
        if self.feed == "replay" and self.replay is None:
            raise ValueError('feed="replay" needs replay=ReplayConfig(<recording directory or DataFrame of ticks>)')
        if self.feed == "replay" and not self.paper:
            raise ValueError('a replay trades on paper: live orders (paper=False) need feed="sim" or "smartapi"')
        if not (isinstance(self.signals_kept, int) and self.signals_kept > 0):
            raise ValueError(f"signals_kept must be a positive int, not {self.signals_kept!r}")
        if self.capital is not None and not (_number(self.capital) and self.capital > 0):
            raise ValueError(f"capital is the paper account's rupees, > 0 (None: no margin account), "
                             f"not {self.capital!r}")
        if not isinstance(self.margin_check, bool):
            raise TypeError(f"margin_check is True or False, not {self.margin_check!r}")
        if self.charges is not None and not isinstance(self.charges, Charges):
            raise TypeError(f"charges takes a kit.Charges (or None: no charges), not {type(self.charges).__name__}")
        if not isinstance(self.slippage, SlippageModel):
            raise TypeError(f"slippage takes a kit.broker.slippage model (NoSlippage(), FixedTicks(1), "
                            f"SpreadFraction(0.5), LatencyTicks(2)), not {type(self.slippage).__name__}")
        if self.error_budget is not None and not isinstance(self.error_budget, ErrorBudget):
            raise TypeError(f"error_budget takes a kit.ErrorBudget or None, not {type(self.error_budget).__name__}: "
                            "TraderConfig(error_budget=ErrorBudget(max_errors=20, window_s=10))")
        self.tokens = checked_tokens(self.tokens)
        n = len(self.tokens) if isinstance(self.tokens, list) else sum(map(len, (self.tokens or {}).values()))
        if n > shards.MAX_SUBSCRIPTIONS:
            raise ValueError(f"tokens: {shards.too_many(n)}")


# ---------------------------------------------------------------- where each setting lives
_PARTS = {"sim": SimConfig, "replay": ReplayConfig, "connection": ConnectionConfig, "dispatch": DispatchConfig,
          "metrics": MetricsConfig, "journal": JournalConfig, "risk": RiskLimits, "square_off": SquareOff}
# Where a part's setting goes when a TraderConfig holds a bare value instead of the part.
_PRIMARY = {"replay": "source", "journal": "path"}
# Flat names that prefix a setting with its part (sim_rate is SimConfig.rate): name -> (part attribute, field).
_RENAMED = {"sim_rate": ("sim", "rate"), "sim_seed": ("sim", "seed"), "sim_delay_ms": ("sim", "delay_ms"),
            "sim_port": ("sim", "port"), "replay_speed": ("replay", "speed"), "replay_progress": ("replay", "progress"),
            "metrics_window": ("metrics", "window"), "latency_metrics": ("metrics", "latency"),
            "journal_sync": ("journal", "sync")}


def _locations() -> dict[str, tuple[str | None, str]]:
    """Every setting's name -> (the TraderConfig attribute of its part, or None for the top level; its field)."""
    where: dict[str, tuple[str | None, str]] = {f.name: (None, f.name) for f in fields(TraderConfig)}
    for attr, part in _PARTS.items():
        for f in fields(part):
            where.setdefault(f.name, (attr, f.name))
    where.update(_RENAMED)
    return where


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 and "\n" not in text else "..."


def _spelled(attr: str | None, name: str, value) -> str:
    """How to write ``name=value`` where it lives: ``TraderConfig(sim=SimConfig(rate=20))``."""
    if attr is None:
        return f"TraderConfig({name}={_short(value)})"
    part = _PARTS[attr]
    required = [f.name for f in fields(part) if f.default is MISSING and f.default_factory is MISSING
                and f.name != name]
    args = "".join(f"{r}, " for r in required)
    return f"TraderConfig({attr}={part.__name__}({args}{name}={_short(value)}))"


def _owner(attr: str | None) -> str:
    return "TraderConfig" if attr is None else _PARTS[attr].__name__


def _misplaced(cls, key: str, value) -> str:
    where = _locations()
    if key in where:
        attr, name = where[key]
        if _owner(attr) == cls.__name__:
            return f"{key} is not a {cls.__name__} field: it is {name} — {cls.__name__}({name}={_short(value)})"
        return f"{key} is not a {cls.__name__} field: it is {_owner(attr)}.{name} — {_spelled(attr, name, value)}"
    own = [f.name for f in fields(cls)]
    guess = difflib.get_close_matches(key, [*own, *where], n=1)
    if not guess:
        return f"{key} is not a {cls.__name__} field (its fields: {', '.join(own)})"
    if guess[0] in own:
        return f"{key} is not a {cls.__name__} field: did you mean {guess[0]}?"
    attr, name = where[guess[0]]
    return (f"{key} is not a {cls.__name__} field: did you mean {_owner(attr)}.{name}? "
            f"({_spelled(attr, name, value)})")


def _wrong_part(attr: str, part: type, value) -> str:
    primary = _PRIMARY.get(attr)
    args = "..." if primary is None else f"{primary}={_short(value)}"
    return f"{attr} takes a {part.__name__}, not {type(value).__name__}: TraderConfig({attr}={part.__name__}({args}))"
