"""More instruments than one connection takes: subscriptions spread over up to three ``SmartFeed``s.

Angel One allows 1,000 token × mode subscriptions per market-data connection
and 3 connections per client code, so at most 3,000 in all. ``shard()``
splits ``{mode: {exchange_type: [token]}}`` into as few connections as fit,
in order (the first 1,000 on the first); more than 3,000 is a ``ValueError``
that says so, before anything connects.

``ShardedFeed`` runs one ``SmartFeed`` per part: each is its own
``ReconnectingSocket``, so each reconnects, resubscribes, reports its gaps and
detects its stalls on its own, and ``connections()`` shows each. All of them
hand their ticks to one ``on_tick`` (the trader's dispatcher) through one
lock: the dispatcher's producer side keeps a single writer at a time, ticks
reach it in one order of arrival, and in callback mode no two socket threads
are ever in the strategy together. A single-connection trader does not use
this class, and pays nothing for it.

    feed = ShardedFeed(url, creds, {kit.LTP: {1: tokens_2500}}, dispatcher.submit)
    feed.start(); feed.connections(); feed.stop()
"""
from __future__ import annotations

import dataclasses
import threading

from kit.feed.live import FeedStats, SmartFeed, _merge

MAX_PER_CONNECTION = 1000     # Angel One: token x mode subscriptions per market-data connection
MAX_CONNECTIONS = 3           # Angel One: market-data connections per client code
MAX_SUBSCRIPTIONS = MAX_PER_CONNECTION * MAX_CONNECTIONS


def count(subscriptions: dict) -> int:
    """Token x mode subscriptions in ``{mode: {exchange_type: [token]}}``."""
    return sum(len(set(tokens)) for by_exchange in subscriptions.values() for tokens in by_exchange.values())


def too_many(n: int) -> str:
    return (f"{n:,} token x mode subscriptions asked for; Angel One allows {MAX_PER_CONNECTION:,} per connection "
            f"and {MAX_CONNECTIONS} connections per client code, {MAX_SUBSCRIPTIONS:,} in all")


def shard(subscriptions: dict, per_connection: int = MAX_PER_CONNECTION,
          max_connections: int = MAX_CONNECTIONS) -> list[dict]:
    """``subscriptions`` split, in order, into parts of at most ``per_connection`` each."""
    n = count(subscriptions)
    if n > per_connection * max_connections:
        raise ValueError(too_many(n))
    parts: list[dict] = [{}]
    room = per_connection
    for mode, by_exchange in subscriptions.items():
        for exchange_type, tokens in by_exchange.items():
            for token in dict.fromkeys(tokens):
                if room == 0:
                    parts.append({})
                    room = per_connection
                parts[-1].setdefault(mode, {}).setdefault(exchange_type, []).append(token)
                room -= 1
    return parts


class ShardedFeed:
    """Up to three ``SmartFeed`` connections behind one feed's interface. See the module docstring."""

    def __init__(self, url: str, credentials, subscriptions: dict, on_tick, *, name: str = "kit-feed",
                 **feed_options):
        parts = shard(subscriptions)
        lock = threading.Lock()

        def serialized(tick) -> None:       # several socket threads, one producer at a time
            with lock:
                on_tick(tick)
        deliver = on_tick if len(parts) == 1 else serialized
        self.name = name
        self.feeds = [SmartFeed(url, credentials, part, deliver, name=f"{name}-{i + 1}", **feed_options)
                      for i, part in enumerate(parts)]

    # ------------------------------------------------------------------ events, set on every connection
    def _set_all(self, attribute: str, handler) -> None:
        for feed in self.feeds:
            setattr(feed, attribute, handler)

    on_gap = property(lambda self: self.feeds[0].on_gap, lambda self, fn: self._set_all("on_gap", fn))
    on_connect = property(lambda self: self.feeds[0].on_connect, lambda self, fn: self._set_all("on_connect", fn))
    on_error_frame = property(lambda self: self.feeds[0].on_error_frame,
                              lambda self, fn: self._set_all("on_error_frame", fn))

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return any(feed.running for feed in self.feeds)

    def start(self) -> "ShardedFeed":
        for feed in self.feeds:
            feed.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        for feed in self.feeds:
            feed.stop(timeout)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        import time
        deadline = time.monotonic() + timeout
        return all(feed.wait_connected(max(0.0, deadline - time.monotonic())) for feed in self.feeds)

    def disconnect(self, reason: str = "requested") -> None:
        for feed in self.feeds:
            feed.disconnect(reason)

    # ------------------------------------------------------------------ subscriptions
    def subscriptions(self) -> dict:
        out: dict = {}
        for feed in self.feeds:
            for mode, by_exchange in feed.subscriptions().items():
                _merge(out, mode, by_exchange)
        return out

    def subscribe(self, tokens: dict, mode: int = 1) -> None:
        """Add ``{exchange_type: [token]}`` on the connections with room; a ValueError if they have none."""
        held = self.subscriptions()
        new = {e: [t for t in dict.fromkeys(toks) if t not in held.get(mode, {}).get(e, ())]
               for e, toks in tokens.items()}
        wanted = sum(map(len, new.values()))
        rooms = [MAX_PER_CONNECTION - count(feed.subscriptions()) for feed in self.feeds]
        if wanted > sum(rooms):
            raise ValueError(too_many(count(held) + wanted) + "; these connections have room for "
                             f"{sum(rooms):,} more")
        queue = [(e, t) for e, toks in new.items() for t in toks]
        for feed, room in zip(self.feeds, rooms):
            part, queue = queue[:room], queue[room:]
            if part:
                by_exchange: dict = {}
                for e, t in part:
                    by_exchange.setdefault(e, []).append(t)
                feed.subscribe(by_exchange, mode)

    def unsubscribe(self, tokens: dict, mode: int = 1) -> None:
        for feed in self.feeds:
            feed.unsubscribe(tokens, mode)

    # ------------------------------------------------------------------ what they report
    @property
    def gaps(self) -> list:
        """Every connection's gaps, in the order they were found."""
        return sorted((gap for feed in self.feeds for gap in list(feed.gaps)), key=lambda g: g.detected_at)

    @property
    def stats(self) -> FeedStats:
        """The connections' counters summed; ``connected`` only while every one is."""
        return combined([feed.stats for feed in self.feeds])

    def connections(self) -> list[dict]:
        return [connection_row(feed) for feed in self.feeds]


def connection_row(feed: SmartFeed) -> dict:
    """One connection as ``trader.status["connections"]`` shows it."""
    s = feed.stats
    return {"name": feed.name, "connected": s.connected, "subscriptions": count(feed.subscriptions()),
            "ticks": s.ticks, "reconnects": s.reconnects, "gaps": s.gaps, "missed_ticks": s.missed_ticks,
            "stalls": s.stalls, "auth_failed": s.auth_failed, "last_disconnect_reason": s.last_disconnect_reason}


def combined(all_stats: list[FeedStats]) -> FeedStats:
    out = FeedStats()
    latest = max(all_stats, key=lambda s: s.last_disconnect_at or 0.0)
    for f in dataclasses.fields(FeedStats):
        values = [getattr(s, f.name) for s in all_stats]
        if f.name == "connected":
            value = all(values)
        elif f.name == "auth_failed":
            value = any(values)
        elif f.name in ("last_disconnect_reason", "last_disconnect_at"):
            value = getattr(latest, f.name)
        elif f.name == "connected_since":
            value = None if None in values else max(values)
        elif f.name in ("next_retry_in", "lag_ms"):
            present = [v for v in values if v is not None]
            value = max(present) if present else None
        elif f.name == "max_lag_ms":
            value = max(values)
        elif f.name in ("last_error", "last_error_frame"):
            value = next((v for v in values if v), values[0])
        else:
            value = sum(values)
        setattr(out, f.name, value)
    return out
