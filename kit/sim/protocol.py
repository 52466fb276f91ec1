"""The simulated market-data socket's protocol: handshake credentials, requests, error frames.

What Angel One's ``smart-stream`` accepts: four handshake headers
(``SimCredentials``), JSON subscribe / unsubscribe requests
(``parse_request``), and the E1001 / E1002 error frames it answers with.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from kit.core.market import FEED_EXCHANGE_NAMES
from kit.core.tick import MODE_NAMES
from kit.sim.tokens import AUTH, FEED, jwt_shaped as _fake_jwt

PATH = "/smart-stream"
SUBSCRIBE, UNSUBSCRIBE = 1, 0
INVALID_REQUEST = ("E1001", "Invalid Request Payload.")
SUBSCRIPTION_LIMIT = ("E1002", "Subscription limit exceeded")
HANDSHAKE_HEADERS = ("Authorization", "x-api-key", "x-client-code", "x-feed-token")


@dataclass(frozen=True)
class SimCredentials:
    """What a client must present in the handshake. Fixed defaults, so a
    simulator in another process (``python -m kit sim``) is reachable with them too."""
    auth_token: str = _fake_jwt({"sub": "SIM0001", "iss": "kit-simulator", "token": "auth"})
    api_key: str = "sim-api-key"
    client_code: str = "SIM0001"
    feed_token: str = _fake_jwt({"sub": "SIM0001", "iss": "kit-simulator", "token": "feed"})

    def headers(self) -> dict[str, str]:
        """The handshake headers, exactly as SmartWebSocketV2 sends them (the JWT raw)."""
        return {"Authorization": self.auth_token, "x-api-key": self.api_key,
                "x-client-code": self.client_code, "x-feed-token": self.feed_token}


def handshake_problem(headers, creds: SimCredentials, tokens=None) -> str | None:
    """Why a handshake with these headers is refused (HTTP 401), or None to accept it.

    ``tokens`` (a ``kit.sim.tokens.SessionTokens``) judges the JWT and feed token:
    any it issued and has not expired or revoked; without it, only ``creds``'s."""
    if not all(h in headers for h in HANDSHAKE_HEADERS):
        return "Missing headers: Authorization, x-api-key, x-client-code and x-feed-token are required"
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        auth = auth[len("Bearer "):]
    if not (tokens.valid(AUTH, auth) if tokens is not None else auth == creds.auth_token):
        return "Invalid Authorization token"
    if headers["x-api-key"] != creds.api_key:
        return "Invalid x-api-key"
    if headers["x-client-code"] != creds.client_code:
        return "Invalid x-client-code"
    feed = headers["x-feed-token"]
    if not (tokens.valid(FEED, feed) if tokens is not None else feed == creds.feed_token):
        return "Invalid x-feed-token"
    return None


def error_frame(correlation: str, error: tuple[str, str]) -> str:
    return json.dumps({"correlationID": correlation, "errorCode": error[0], "errorMessage": error[1]})


def _valid_token(token) -> bool:
    return isinstance(token, str) and 0 < len(token) <= 24 and token.isascii() and "\0" not in token


def parse_request(request) -> tuple[int, int, list[tuple[int, str]]] | None:
    """``(action, mode, [(exchange type, token), ...])`` of a well-formed request, else None."""
    if not isinstance(request, dict):
        return None
    action, params = request.get("action"), request.get("params")
    if type(action) is not int or action not in (SUBSCRIBE, UNSUBSCRIBE) or not isinstance(params, dict):
        return None
    mode, token_list = params.get("mode"), params.get("tokenList")
    if type(mode) is not int or mode not in MODE_NAMES or not isinstance(token_list, list) or not token_list:
        return None
    keys = []
    for entry in token_list:
        if not isinstance(entry, dict):
            return None
        exchange_type, tokens = entry.get("exchangeType"), entry.get("tokens")
        if type(exchange_type) is not int or exchange_type not in FEED_EXCHANGE_NAMES or not isinstance(tokens, list):
            return None
        for token in tokens:
            if not _valid_token(token):
                return None
            keys.append((exchange_type, token))
    return action, mode, keys


def token_keys(tokens) -> list[tuple[int, str]]:
    """``{exchange type: [token, ...]}`` or ``[(exchange type, token), ...]`` as a key list."""
    if isinstance(tokens, Mapping):
        return [(int(ex), str(t)) for ex, toks in tokens.items() for t in toks]
    return [(int(ex), str(t)) for ex, t in tokens]
