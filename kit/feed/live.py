"""The market-data feed: the real SDK client on a background thread, kept connected.

``SmartFeed`` is the market-data protocol on ``kit.angel.stream``'s
``ReconnectingSocket``: that base runs the client's blocking ``connect()``,
reconnects with backoff after any drop that was not ``stop()`` and sends the
text ``ping`` heartbeat; the SDK client's own ``resubscribe()`` restores every
subscription. This module adds what is the feed's own: subscriptions kept
across connections, stall detection (no tick for ``stall_timeout`` seconds
while subscribed: disconnect, then reconnect) and feed-lag samples (wall clock
minus the exchange timestamp of the newest tick: a backlog in the socket
buffers, which the receive stamp cannot see).

After a reconnect, the first tick of each instrument is compared with the last
one before the drop; a hole in the sequence numbers is reported as a ``Gap``
(``feed.gaps``, ``on_gap``). Only those first ticks pay for the check: the
feed swaps in the checking callback on reconnect and swaps it out once every
instrument has ticked again.

    feed = SmartFeed(url, creds, {kit.LTP: {2: ["43650"]}}, on_tick=print)
    feed.start(); ...; feed.stop()

Callbacks are named for events, as in pykiteconnect's ticker: ``on_tick``,
``on_connect``, ``on_disconnect``, ``on_error_frame``, ``on_gap``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from kit.angel.sdk import KitWebSocketV2
from kit.angel.stream import FeedCredentials, ReconnectingSocket, ReconnectPolicy, StreamStats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gap:
    """Ticks of one instrument the feed never received, found after a reconnect.

    ``missed`` is ``first_seq_after - last_seq_before - 1``: exact when the
    feed numbers each instrument's ticks consecutively (the simulator does);
    otherwise it is the distance in sequence numbers. ``seconds`` is the
    exchange time between the last tick before and the first tick after.
    """
    token: str
    exchange_type: int
    last_seq_before: int
    first_seq_after: int
    missed: int
    seconds: float
    reconnect: int = 0        # the feed's reconnect count when the gap was found
    detected_at: float = 0.0  # epoch seconds
    recv_ns: int = 0          # receive stamp of the first tick after the gap


@dataclass
class FeedStats(StreamStats):
    """The connection's counters (``StreamStats``) and the market data's. Single writer per field."""
    ticks: int = 0
    malformed: int = 0
    error_frames: int = 0
    unknown_text: int = 0
    last_error_frame: dict | None = None
    gaps: int = 0
    missed_ticks: int = 0
    unsubscribed_ticks: int = 0       # ticks for instruments nobody subscribed: counted, dropped
    lag_ms: float | None = None       # wall clock - exchange ts of the newest tick, last sample
    max_lag_ms: float = 0.0

    @property
    def frames(self) -> int:
        """Every frame received: ticks, malformed and text frames (derived: the tick path writes one counter)."""
        return self.ticks + self.malformed + self.pongs + self.error_frames + self.unknown_text


class SmartFeed(ReconnectingSocket):
    """Keeps one SmartAPI market-data connection alive on a background thread."""

    GAP_HISTORY = 10_000   # gaps kept in ``feed.gaps``; the counters in ``stats`` keep counting
    kind = "feed"
    _log = log

    def __init__(self, url: str, credentials: FeedCredentials, subscriptions: dict, on_tick, *,
                 parser: str = "fast", reconnect: ReconnectPolicy | None = None,
                 heartbeat_interval: float = 10.0, stall_timeout: float | None = None,
                 verify_tls: bool = True, name: str = "kit-feed", session=None):
        """``subscriptions``: ``{mode: {exchange_type: [token, ...]}}``. ``session``: a
        ``kit.angel.session_keeper.SessionKeeper`` the credentials come from at every connect."""
        super().__init__(url, credentials, FeedStats(), reconnect=reconnect,
                         heartbeat_interval=heartbeat_interval, verify_tls=verify_tls, name=name, session=session)
        self._initial_subscriptions = {m: {e: list(t) for e, t in ex.items()} for m, ex in subscriptions.items()}
        self.on_tick = on_tick
        self.on_connect = None          # fn(resubscribed: bool)
        self.on_error_frame = None      # fn(payload: dict)
        self.on_gap = None              # fn(gap: Gap), socket thread, just before the tick that revealed it
        self.parser = parser
        self.stall_timeout = stall_timeout
        self.gaps: deque[Gap] = deque(maxlen=self.GAP_HISTORY)
        # Subscriptions not yet sent on a connection ({mode: {exchange_type: [token]}});
        # once sent, the SDK client's own record holds them.
        self._pending = {m: {e: list(t) for e, t in ex.items()} for m, ex in self._initial_subscriptions.items()}
        self._subs_lock = threading.Lock()
        self._handler_lock = threading.Lock()     # serialises swaps of the client's on_tick
        # The last tick of each instrument, {exchange_type: {token: Tick}}: written on the
        # hot path (one dict store), read for gaps after a reconnect and for lag samples.
        self._last: defaultdict = defaultdict(dict)
        # {exchange_type: frozenset(tokens)} subscribed in any mode: a tick for anything else is
        # counted and dropped, so no per-token state grows for instruments nobody asked for.
        self._wanted: dict[int, frozenset] = _wanted(self._initial_subscriptions)
        # After a reconnect: the instruments not yet seen again, with their last tick before the drop.
        self._baseline: dict = {}
        # The watch thread's view of the tick counter: stalls are judged by it, so the hot path
        # pays nothing for them. Ticks, not frames: a server that answers pings but sends no
        # market data is stalled.
        self._ticks_seen, self._last_change, self._lag_seen_ns = -1, time.monotonic(), 0

    # ------------------------------------------------------------------ the client
    def _new_client(self) -> KitWebSocketV2:
        c = self.credentials
        with self._subs_lock:
            if self._ws is not None:   # a restart keeps what the last connection had subscribed
                for mode, by_exchange in self._ws.subscriptions().items():
                    _merge(self._pending, mode, by_exchange)
            ws = KitWebSocketV2(self.url, c.auth_token, c.api_key, c.client_code, c.feed_token,
                                parser=self.parser, verify_tls=self.verify_tls,
                                connect_timeout=self.reconnect.connect_timeout)
            self._ws = ws
        ws.on_tick = self._on_tick
        ws.on_text = self._on_text
        ws.on_malformed = self._on_malformed
        ws.on_connect = self._on_connect
        return ws

    def _stopping(self, ws) -> None:
        # From now on no tick reaches on_tick: a backlog still in the socket buffers
        # is discarded, not handed to a strategy that was told to stop.
        with self._handler_lock:
            ws.on_tick = _discard

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, tokens: dict, mode: int = 1) -> None:
        """``tokens``: ``{exchange_type: [token, ...]}``; sent now if connected, and kept for reconnects."""
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        with self._subs_lock:
            if self._ws is not None and self.stats.connected:
                try:
                    self._ws.subscribe("kit", mode, token_list)
                except Exception as exc:
                    # The SDK records the request before sending it, so the reconnect restores it.
                    log.warning("feed %s: subscribe not sent (%s); it will be sent on reconnect", self.name, exc)
            else:
                _merge(self._pending, mode, tokens)
        self._wanted = _wanted(self.subscriptions())

    def unsubscribe(self, tokens: dict, mode: int = 1) -> None:
        token_list = [{"exchangeType": e, "tokens": list(t)} for e, t in tokens.items()]
        with self._subs_lock:
            _remove(self._pending, mode, tokens)
            if self._ws is not None and self._ws.has_subscriptions():
                try:
                    self._ws.unsubscribe("kit", mode, token_list)   # updates the record, then sends
                except Exception as exc:
                    log.info("feed %s: unsubscribe recorded, not sent (%s)", self.name, exc)
        self._wanted = _wanted(self.subscriptions())
        # No gap is owed for an instrument nobody listens to any more.
        for e, toks in tokens.items():
            for store in (self._last.get(e), self._baseline.get(e)):
                if store is not None:
                    for t in toks:
                        store.pop(t, None)

    def subscriptions(self) -> dict:
        """{mode: {exchange_type: [tokens]}}: what the feed keeps subscribed, sent or still to send."""
        with self._subs_lock:
            out = self._ws.subscriptions() if self._ws is not None else {}
            for mode, by_exchange in self._pending.items():
                _merge(out, mode, by_exchange)
        return out

    # ------------------------------------------------------------------ stalls and lag (heartbeat thread)
    def _watch_period(self) -> float:
        return min(1.0, self.heartbeat_interval, (self.stall_timeout or 4.0) / 4)

    def _reset_liveness(self, now: float) -> None:
        self._ticks_seen, self._last_change = -1, now

    def _stalled(self, now: float) -> str | None:
        ticks = self.stats.ticks
        if ticks != self._ticks_seen:
            self._ticks_seen, self._last_change = ticks, now
            self._lag_seen_ns = self._sample_lag(self._lag_seen_ns)
            return None
        silent = now - self._last_change
        if self.stall_timeout and silent > self.stall_timeout and self._ws.has_subscriptions():
            return f"no tick for {silent:.1f}s"
        return None

    def _sample_lag(self, after_ns: int) -> int:
        """Lag of the newest tick: its receive time on the wall clock minus its exchange timestamp.

        The receive stamp starts when the socket thread reads a frame, so a
        backlog waiting in socket buffers (a slow callback-mode strategy) is
        invisible to it; the exchange timestamp shows it. On Angel One's feed
        the timestamp has about 1 s resolution, so read this to the second.
        """
        newest = None
        try:
            for by_token in list(self._last.values()):
                for tick in list(by_token.values()):
                    if newest is None or tick.recv_ns > newest.recv_ns:
                        newest = tick
        except RuntimeError:   # resized by the socket thread while we looked; sample next time
            return after_ns
        if newest is None or newest.recv_ns <= after_ns or newest.exchange_ts <= 0:
            return after_ns
        wall_offset_ns = time.time_ns() - time.perf_counter_ns()
        lag = (newest.recv_ns + wall_offset_ns) / 1e6 - newest.exchange_ts
        self.stats.lag_ms = lag
        if lag > self.stats.max_lag_ms:
            self.stats.max_lag_ms = lag
        return newest.recv_ns

    # ------------------------------------------------------------------ events from the SDK client
    def _on_tick(self, tick) -> None:
        self.stats.ticks += 1
        tokens = self._wanted.get(tick.exchange_type)
        if tokens is None or tick.token not in tokens:
            self._unsubscribed(tick)
            return
        self._last[tick.exchange_type][tick.token] = tick
        self.on_tick(tick)

    def _unsubscribed(self, tick) -> None:
        stats = self.stats
        stats.unsubscribed_ticks += 1
        if stats.unsubscribed_ticks <= 10 or stats.unsubscribed_ticks % 1000 == 0:
            log.warning("feed %s: dropped tick #%d for %s/%s, which is not subscribed", self.name,
                        stats.unsubscribed_ticks, tick.exchange_type, tick.token)

    def _on_tick_after_reconnect(self, tick) -> None:
        """``_on_tick`` plus the gap check, in place only until every instrument has ticked again."""
        baseline = self._baseline
        by_token = baseline.get(tick.exchange_type)
        if by_token is not None:
            before = by_token.pop(tick.token, None)
            if before is not None:
                if not by_token:
                    baseline.pop(tick.exchange_type, None)
                if tick.seq > before.seq + 1:
                    self._report_gap(before, tick)
        if not baseline:
            with self._handler_lock:
                if not self._stop.is_set():
                    self._ws.on_tick = self._on_tick
        self._on_tick(tick)

    def _report_gap(self, before, after) -> None:
        stats = self.stats
        gap = Gap(after.token, after.exchange_type, before.seq, after.seq, after.seq - before.seq - 1,
                  (after.exchange_ts - before.exchange_ts) / 1000, stats.reconnects, time.time(),
                  after.recv_ns)
        stats.gaps += 1
        stats.missed_ticks += gap.missed
        self.gaps.append(gap)
        if stats.gaps <= 10 or stats.gaps % 1000 == 0:
            log.warning("feed %s: gap #%d on %s/%s: seq %d -> %d, %d missed over %.1fs", self.name, stats.gaps,
                        gap.exchange_type, gap.token, gap.last_seq_before, gap.first_seq_after, gap.missed,
                        gap.seconds)
        if self.on_gap:
            try:
                self.on_gap(gap)
            except Exception:
                log.exception("feed %s: on_gap handler failed", self.name)

    def _on_text(self, kind: str, payload) -> None:
        stats = self.stats
        if kind == "pong":
            stats.pongs += 1
        elif kind == "error":
            stats.error_frames += 1
            stats.last_error_frame = payload
            if stats.error_frames <= 10 or stats.error_frames % 1000 == 0:
                # A server may send anything: an oversized message is cut short in the log.
                log.warning("feed %s: server error frame #%d %.40s: %.200s", self.name, stats.error_frames,
                            payload.get("errorCode"), payload.get("errorMessage"))
            if self.on_error_frame:
                self.on_error_frame(payload)
        else:
            stats.unknown_text += 1
            if stats.unknown_text <= 10 or stats.unknown_text % 1000 == 0:
                log.warning("feed %s: unexpected text frame #%d %.80r", self.name, stats.unknown_text, payload)

    def _on_malformed(self, frame, exc) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= 10 or self.stats.malformed % 1000 == 0:
            log.warning("feed %s: skipped malformed frame #%d (%d bytes): %s",
                        self.name, self.stats.malformed, len(frame), exc)

    def _on_connect(self, resubscribed: bool) -> None:
        with self._subs_lock:   # with the pending list: a subscribe() now either sees connected or is sent here
            self._opened()
            for mode, by_exchange in self._pending.items():
                if by_exchange:
                    self._ws.subscribe("kit", mode, [{"exchangeType": e, "tokens": list(t)}
                                                     for e, t in by_exchange.items()])
            self._pending.clear()
        # What each instrument last carried before the drop: its first tick now is checked against it.
        baseline = {e: dict(by_token) for e, by_token in list(self._last.items()) if by_token}
        if baseline:
            self._baseline = baseline
            with self._handler_lock:
                if not self._stop.is_set():
                    self._ws.on_tick = self._on_tick_after_reconnect
        self._connected.set()
        if self.on_connect:
            self.on_connect(resubscribed)


def _discard(tick) -> None:
    """The client's tick handler once the feed is stopping."""


def _wanted(subscriptions: dict) -> dict[int, frozenset]:
    """{mode: {exchange_type: [tokens]}} -> {exchange_type: frozenset(tokens in any mode)}."""
    out: dict[int, set] = {}
    for by_exchange in subscriptions.values():
        for e, tokens in by_exchange.items():
            out.setdefault(e, set()).update(str(t) for t in tokens)
    return {e: frozenset(t) for e, t in out.items()}


def _merge(target: dict, mode: int, by_exchange: dict) -> None:
    """Add ``{exchange_type: [token]}`` to ``target[mode]``, keeping order, without duplicates."""
    slot = target.setdefault(mode, {})
    for e, toks in by_exchange.items():
        have = slot.setdefault(e, [])
        have.extend(t for t in toks if t not in have)


def _remove(target: dict, mode: int, by_exchange: dict) -> None:
    slot = target.get(mode)
    if not slot:
        return
    for e, toks in by_exchange.items():
        kept = [t for t in slot.get(e, []) if t not in toks]
        if kept:
            slot[e] = kept
        else:
            slot.pop(e, None)
    if not slot:
        target.pop(mode, None)
