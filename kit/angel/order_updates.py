"""The order-update stream: Angel One's ``smart-order-update`` socket on a background thread, kept connected.

``OrderUpdateStream`` is the order-update protocol on ``kit.angel.stream``'s
``ReconnectingSocket``, around one ``KitOrderUpdateSocket`` (the SDK's client
with its defects contained): a dropped connection is reconnected with the
``ReconnectPolicy``; a refused token (HTTP 401/403) stops the stream, since
retrying cannot fix it (with a ``session``, it asks the session to renew and
reconnects with the new token). The text ``ping`` goes out every
``heartbeat_interval`` seconds, and the connection is dropped and reconnected
when no frame came back for three intervals.

Updates sent while the socket was down are lost (the server does not replay
them), so ``on_connect`` fires after every (re)connect: the live broker
reconciles against the order book then.

    stream = OrderUpdateStream(url, creds, on_update=print)
    stream.on_connect = lambda: print("connected")
    stream.start(); stream.wait_connected(10); ...; stream.stop()
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kit.angel.sdk import KitOrderUpdateSocket
from kit.angel.stream import FeedCredentials, ReconnectingSocket, ReconnectPolicy, StreamStats

log = logging.getLogger(__name__)

ANGEL_ORDER_UPDATE_URL = "wss://tns.angelone.in/smart-order-update"
ORDER_UPDATE_URL_ENV = "SMARTAPI_ORDER_UPDATE_URL"


@dataclass
class OrderStreamStats(StreamStats):
    """The connection's counters (``StreamStats``) and the updates'."""
    updates: int = 0
    unknown_frames: int = 0


class OrderUpdateStream(ReconnectingSocket):
    """Keeps one order-update connection alive and hands every JSON update to ``on_update``.

    ``on_update(message)`` and ``on_connect()`` run on the stream's socket
    thread, one at a time, in arrival order.
    """

    kind = "order updates"
    _log = log

    def __init__(self, url: str, credentials: FeedCredentials, on_update, *,
                 reconnect: ReconnectPolicy | None = None, heartbeat_interval: float = 10.0,
                 verify_tls: bool = True, name: str = "kit-order-updates", session=None):
        super().__init__(url, credentials, OrderStreamStats(), reconnect=reconnect,
                         heartbeat_interval=heartbeat_interval, verify_tls=verify_tls, name=name, session=session)
        self.on_update = on_update
        self.on_connect = None
        self._last_pong = 0.0      # monotonic; any frame counts, since it proves the connection alive

    def _new_client(self) -> KitOrderUpdateSocket:
        c = self.credentials
        sock = KitOrderUpdateSocket(self.url, c.auth_token, c.api_key, c.client_code, c.feed_token,
                                    verify_tls=self.verify_tls, connect_timeout=self.reconnect.connect_timeout)
        sock.on_update = self._on_update
        sock.on_text = self._on_text
        sock.on_connect = self._on_connect
        return sock

    # ------------------------------------------------------------------ stalls (heartbeat thread)
    def _stalled(self, now: float) -> str | None:
        silent = now - self._last_pong
        return f"no pong for {silent:.1f}s" if silent > 3 * self.heartbeat_interval else None

    def _reset_liveness(self, now: float) -> None:
        self._last_pong = now

    # ------------------------------------------------------------------ events from the socket
    def _on_update(self, message: dict) -> None:
        self.stats.updates += 1
        self._last_pong = time.monotonic()
        try:
            self.on_update(message)
        except Exception:
            log.exception("order updates %s: the update handler failed on %.200r", self.name, message)

    def _on_text(self, kind: str, payload) -> None:
        if kind == "pong":
            self.stats.pongs += 1
            self._last_pong = time.monotonic()
        else:
            self.stats.unknown_frames += 1
            log.warning("order updates %s: unexpected frame %.80r", self.name, payload)

    def _on_connect(self) -> None:
        self._opened()
        self._last_pong = time.monotonic()
        self._connected.set()
        if self.on_connect:
            try:
                self.on_connect()
            except Exception:
                log.exception("order updates %s: on_connect failed", self.name)
