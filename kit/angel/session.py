"""Angel One login: credentials from the environment (or a ``.env`` file) to a session.

    creds = Credentials.from_env()          # SMARTAPI_API_KEY, SMARTAPI_CLIENT_CODE,
                                            # SMARTAPI_PIN, SMARTAPI_TOTP_SECRET
    session = login(creds)                  # SmartConnect.generateSession(code, PIN, TOTP)
    session.feed                            # what the market-data socket needs
    session.expires_at                      # the JWT's ``exp`` (epoch seconds), None if it has none

``kit.angel.session_keeper.SessionKeeper`` keeps a session valid: it renews
the tokens before they expire and when one is refused.

Secret values are registered with the log redactor the moment they are read
(the tokens the moment the SDK stores them, before the call that may fail),
no object here shows them in its ``repr``, and a failed call raises an error
whose text is redacted and chains no original (``SmartApiError``).
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import pyotp
from dotenv import dotenv_values

from kit.angel.stream import FeedCredentials
from kit.angel.sdk import SmartApiError, register_secret, smart_connect  # noqa: F401 (SmartApiError: login raises it)

ENV_NAMES = {
    "api_key": "SMARTAPI_API_KEY",
    "client_code": "SMARTAPI_CLIENT_CODE",
    "pin": "SMARTAPI_PIN",
    "totp_secret": "SMARTAPI_TOTP_SECRET",
}
ROOT_URL_ENV = "SMARTAPI_ROOT_URL"         # REST base URL (default: Angel One's)
FEED_URL_ENV = "SMARTAPI_FEED_URL"         # market-data socket URL (default: Angel One's)
ANGEL_FEED_URL = "wss://smartapisocket.angelone.in/smart-stream"


class CredentialsError(RuntimeError):
    """Credentials are missing or were refused."""


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    client_code: str
    pin: str = field(repr=False)
    totp_secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env_file: str | None = ".env", environ: dict | None = None) -> "Credentials":
        """Environment variables win over the file; the file is read, never exported to ``os.environ``."""
        values = {}
        if env_file and os.path.exists(env_file):
            values.update({k: v for k, v in dotenv_values(env_file).items() if v})
        values.update({k: v for k, v in (os.environ if environ is None else environ).items() if v})
        missing = [env for env in ENV_NAMES.values() if not values.get(env)]
        if missing:
            raise CredentialsError("missing credentials: set " + ", ".join(missing)
                                   + (f" in the environment or in {env_file}" if env_file else ""))
        creds = cls(**{name: values[env].strip() for name, env in ENV_NAMES.items()})
        register_secret(creds.api_key, creds.pin, creds.totp_secret)
        return creds


@dataclass
class Session:
    """A logged-in SmartConnect client and the feed credentials it yielded."""
    client: object = field(repr=False)
    feed: FeedCredentials
    client_code: str

    @property
    def expires_at(self) -> float | None:
        """When the JWT stops being accepted (its ``exp``, epoch seconds); None if it does not say."""
        return jwt_expiry(self.feed.auth_token)


def jwt_expiry(token: str | None) -> float | None:
    """The ``exp`` claim of a JWT ("Bearer " prefix allowed), without verifying it; None if unreadable."""
    try:
        payload = (token or "").removeprefix("Bearer ").strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
    except (IndexError, ValueError, AttributeError, TypeError):
        return None


def login(creds: Credentials, *, root: str | None = None, timeout: float = 7.0) -> Session:
    """Log in through the real ``SmartConnect.generateSession``.

    Raises ``CredentialsError`` if the login is refused, and ``SmartApiError``
    (redacted text, no chained original) if the call itself fails: a network
    error, or ``getProfile`` failing after the login succeeded.
    """
    root = root or os.environ.get(ROOT_URL_ENV) or None
    register_secret(creds.api_key, creds.pin, creds.totp_secret)   # however creds was built
    client = smart_connect(creds.api_key, root=root, timeout=timeout)
    return Session(client, log_in(client, creds), creds.client_code)


def log_in(client, creds: Credentials) -> FeedCredentials:
    """``generateSession`` on ``client`` (a new one, or a session's own, whose tokens it replaces).

    Raises as ``login`` does.
    """
    register_secret(creds.api_key, creds.pin, creds.totp_secret)
    totp = pyotp.TOTP(creds.totp_secret).now()
    register_secret(totp)
    reply = client.generateSession(creds.client_code, creds.pin, totp)
    if not isinstance(reply, dict) or not reply.get("status") or not reply.get("data"):
        message = reply.get("message", "no reason given") if isinstance(reply, dict) else repr(reply)
        code = reply.get("errorcode", "") if isinstance(reply, dict) else ""
        raise CredentialsError(f"login refused for client {creds.client_code}: {message} {code}".strip())
    data = reply["data"]
    jwt, refresh, feed_token = data["jwtToken"], data.get("refreshToken"), data["feedToken"]
    register_secret(jwt, jwt.removeprefix("Bearer ").strip(), refresh, feed_token)
    return FeedCredentials(jwt, creds.api_key, creds.client_code, feed_token)
