"""The simulated account's session tokens: which are valid, and until when.

Angel One's login answers with three tokens: a JWT for REST and the sockets'
``Authorization``, a refresh token for ``generateTokens``, and a feed token
for the market-data socket; the JWT carries its expiry in its ``exp`` claim.
``SessionTokens`` hands them out and judges them, for every part of the
simulator (REST, the market-data socket, the order-update socket):

* The well-known tokens (``SimCredentials``'s, so a client in another process
  can reach ``python -m kit sim``) are valid from the start and never expire;
  without a ``lifetime`` a login answers with them. A renewal always issues
  fresh ones.
* With a ``lifetime`` (seconds), each login and each ``generateTokens`` issues
  fresh JWT-shaped tokens whose ``exp`` says when they stop being accepted;
  the refresh token lives ``refresh_lifetime`` (None: until revoked).
  Tokens issued earlier stay valid until their own expiry, as signed JWTs do.
* ``revoke()`` ends every token issued so far (a session killed at the
  broker); ``refuse_logins`` makes logins fail (a locked account).

Thread-safe: REST handlers, the socket loop and the order socket all ask.
"""
from __future__ import annotations

import base64
import json
import secrets
import threading
import time

AUTH, REFRESH, FEED = "auth", "refresh", "feed"


def jwt_shaped(claims: dict) -> str:
    """A string shaped like a JWT (three base64url parts) carrying ``claims``; its signature is not real."""
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    header = part(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(b'kit-simulator-signature')}"


class SessionTokens:
    """Issues and checks the simulated account's tokens. See the module docstring."""

    def __init__(self, client_code: str, jwt: str, refresh_token: str, feed_token: str, *,
                 lifetime: float | None = None, refresh_lifetime: float | None = None, clock=time.time):
        self.client_code = client_code
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime
        self.refuse_logins = False
        self.issued = 0                  # logins and renewals answered with tokens
        self.renewals = 0                # generateTokens answered with tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._well_known = (jwt, refresh_token, feed_token)
        # token -> (kind, expiry in epoch seconds or None)
        self._valid: dict[str, tuple[str, float | None]] = {
            jwt: (AUTH, None), refresh_token: (REFRESH, None), feed_token: (FEED, None)}

    def valid(self, kind: str, token: str | None) -> bool:
        """True if ``token`` is a ``kind`` token that was issued, is not revoked and has not expired."""
        if not token:
            return False
        with self._lock:
            entry = self._valid.get(token)
        if entry is None or entry[0] != kind:
            return False
        return entry[1] is None or self._clock() < entry[1]

    def login(self) -> dict | None:
        """The tokens a successful login answers with; None while logins are refused."""
        if self.refuse_logins:
            return None
        return self._issue()

    def renew(self, refresh_token: str | None) -> dict | None:
        """``generateTokens``: new tokens for a valid refresh token, else None."""
        if not self.valid(REFRESH, refresh_token):
            return None
        self.renewals += 1
        return self._issue(refresh_token)

    def revoke(self) -> int:
        """End every token issued so far, the well-known ones too; returns how many."""
        with self._lock:
            n = len(self._valid)
            self._valid.clear()
        return n

    def _issue(self, refresh_token: str | None = None) -> dict:
        jwt, refresh, feed = self._well_known
        with self._lock:
            self.issued += 1
            if refresh_token is None and self.lifetime is None and all(t in self._valid for t in self._well_known):
                return {"jwtToken": jwt, "refreshToken": refresh, "feedToken": feed}
            now = self._clock()
            expiry = None if self.lifetime is None else now + self.lifetime
            tokens = {"jwtToken": self._new(AUTH, now, expiry), "feedToken": self._new(FEED, now, expiry)}
            if refresh_token is None:
                refresh_expiry = None if self.refresh_lifetime is None else now + self.refresh_lifetime
                refresh_token = self._new(REFRESH, now, refresh_expiry)
            tokens["refreshToken"] = refresh_token
            return tokens

    def _new(self, kind: str, now: float, expiry: float | None) -> str:
        claims = {"sub": self.client_code, "iss": "kit-simulator", "token": kind, "iat": int(now),
                  "jti": secrets.token_urlsafe(12)}
        if expiry is not None:
            claims["exp"] = round(expiry, 3)     # a NumericDate may carry fractions: sub-second test lifetimes
        token = jwt_shaped(claims)
        self._valid[token] = (kind, expiry)
        return token
