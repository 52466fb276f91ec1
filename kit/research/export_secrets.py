"""What an exported script may not contain: credentials.

A credential is a value the kit registered as secret (login secrets and
tokens) or the value of a ``SMARTAPI_*`` environment variable, which a
strategy may have read before any login. Errors name the variable, never the value.
"""
from __future__ import annotations

import ast
import os
import re

from kit.angel.sdk import redactor
from kit.research.export_source import ExportError

_SECRET_NAME = re.compile(r"(?i)(api_?key|secret|passw|pin\b|^pin|totp|token|jwt|credential)")

# Secrets this long are refused anywhere in the script; shorter ones (a 4-digit PIN, a TOTP
# code, a client code) only as a whole string literal, or every year-like number would match.
_MIN_INSIDE = 8
_READ_IT = "Read it from the environment in the strategy instead (os.environ, or kit.angel.session.Credentials.from_env())."


def _known_secrets() -> list[tuple[str, str, bool]]:
    """``(value, what it is, refused inside longer text)``: registered secrets and ``SMARTAPI_*`` values."""
    known = {s: ("a credential the kit registered (a login secret or token)", len(s) >= _MIN_INSIDE)
             for s in redactor.secrets()}
    for var, value in sorted(os.environ.items()):
        value = value.strip()
        if var.startswith("SMARTAPI_") and len(value) >= 4:
            # URLs, paths and the client code are refused only as the whole value.
            known[value] = (f"the value of ${var}", len(value) >= _MIN_INSIDE and bool(_SECRET_NAME.search(var)))
    return [(value, what, inside) for value, (what, inside) in known.items()]


def _strings(value):
    """Every str (and bytes, decoded) inside a literal value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("latin-1")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from _strings(item)


def _secret_in(strings) -> str | None:
    """What secret one of ``strings`` equals or contains (``"the value of $SMARTAPI_API_KEY"``), or None."""
    known = _known_secrets()
    for text in strings:
        for value, what, inside in known:
            if text == value or (inside and value in text):
                return what
    return None


def refuse_secret(name: str, value, used_by: str) -> None:
    found = _secret_in(_strings(value))
    if found is None and _SECRET_NAME.search(name) and isinstance(value, str):
        found = "its name says it is a credential"
    if found is not None:
        raise ExportError(f"refusing to write {name!r} (used by {used_by}) into a script: {found}. {_READ_IT}")


def refuse_secret_in_script(text: str) -> None:
    """The whole script: long secrets anywhere (comments too), short ones as a whole string literal."""
    literals = [node.value if isinstance(node.value, str) else node.value.decode("latin-1")
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))]
    found = _secret_in([text, *literals])
    if found is not None:
        raise ExportError(f"refusing to write the script: it would contain {found}. {_READ_IT}")
