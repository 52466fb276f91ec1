"""The shapes ``TraderConfig(tokens=...)`` takes, checked when the config is built.

    {2: ["43650", "43651"], 1: ["99926000"]}    exchange type -> tokens (an int token becomes a str)
    ["NIFTY", "BANKNIFTY", "SBIN-EQ"]           trading symbols, resolved through the venue's instrument
                                                master at start() (kit.engine.instrument_names)

Anything else is a TypeError or ValueError at once, naming both shapes with an example.
"""
from __future__ import annotations

from kit.core.market import EXCHANGES

SHAPES = ("tokens takes {exchange_type: [token, ...]}, e.g. tokens={2: ['43650', '43651'], 1: ['99926000']}, "
          "or a list of trading symbols, e.g. tokens=['NIFTY', 'BANKNIFTY']")


def checked_tokens(tokens) -> dict[int, list[str]] | list[str] | None:
    """``tokens`` in its canonical shape (a new dict or list), or an error that says what was expected."""
    if tokens is None:
        return None
    if isinstance(tokens, str):
        raise TypeError(f"tokens={tokens!r} is one string; {SHAPES} (tokens=[{tokens!r}])")
    if isinstance(tokens, dict):
        return _by_exchange(tokens)
    if isinstance(tokens, (list, tuple)):
        if not tokens:
            raise ValueError(f"tokens is empty; {SHAPES}")
        wrong = next((t for t in tokens if not isinstance(t, str) or not t.strip()), None)
        if wrong is not None:
            hint = (f" (a token needs its exchange type: tokens={{2: [{str(wrong)!r}]}})"
                    if isinstance(wrong, int) and not isinstance(wrong, bool) else "")
            raise TypeError(f"tokens as a list holds trading symbols (strings), and {wrong!r} is not one{hint}; "
                            f"{SHAPES}")
        return [t.strip() for t in tokens]
    raise TypeError(f"tokens is a {type(tokens).__name__}; {SHAPES}")


def _by_exchange(tokens: dict) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for exchange_type, listed in tokens.items():
        if isinstance(exchange_type, bool) or not isinstance(exchange_type, int) or exchange_type not in EXCHANGES:
            raise ValueError(f"tokens has the key {exchange_type!r}: keys are exchange types, ints among "
                             f"{sorted(EXCHANGES)} (1 NSE cash, 2 NSE F&O, ...); {SHAPES}")
        if isinstance(listed, (str, int)) or not isinstance(listed, (list, tuple, set, frozenset)):
            raise TypeError(f"tokens[{exchange_type}] is {listed!r}: each exchange type takes a list of tokens, "
                            f"e.g. tokens={{{exchange_type}: [{str(listed)!r}]}}; {SHAPES}")
        kept = []
        for token in listed:
            if isinstance(token, bool) or not isinstance(token, (str, int)) or not str(token).strip():
                raise TypeError(f"tokens[{exchange_type}] holds {token!r}: a token is a str such as '43650'; "
                                f"{SHAPES}")
            kept.append(str(token).strip())
        if not kept:
            raise ValueError(f"tokens[{exchange_type}] is empty; {SHAPES}")
        out[exchange_type] = kept
    if not out:
        raise ValueError(f"tokens is empty; {SHAPES}")
    return out
