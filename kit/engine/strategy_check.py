"""A strategy's shape, checked when it is assigned, so a mistake is one message at once, not one per tick.

    check_strategy(Breakout)       # TypeError: Breakout is a class; assign an instance: trader.strategy = Breakout()

What is checked: an instance, not a class; an ``on_tick`` of its own (not
``kit.Strategy``'s, which only raises) that can be called with one tick; and
the optional hooks, when present, callable as the engine calls them:
``on_start()``, ``on_stop()``, ``on_gap(gap)``.
"""
from __future__ import annotations

import inspect

from kit.core.strategy import Strategy

# hook -> the arguments the engine calls it with
HOOK_ARGS = {"on_tick": ("tick",), "on_start": (), "on_stop": (), "on_gap": ("gap",)}


def check_strategy(strategy, *, assign: str = "trader.strategy = {}") -> None:
    """Raise ``TypeError`` with one clear message if ``strategy`` cannot run; None passes.

    ``assign``: how the user hands a strategy over, with ``{}`` for it (the message shows the fix).
    """
    if strategy is None:
        return
    if isinstance(strategy, type):
        name = strategy.__name__
        raise TypeError(f"{name} is a class; assign an instance: {assign.format(name + '()')}")
    name = type(strategy).__name__
    on_tick = getattr(strategy, "on_tick", None)
    if on_tick is None:
        raise TypeError(f"{name} has no on_tick method: define on_tick(self, tick), returning None, "
                        "a kit.Signal or a list of Signals")
    if getattr(on_tick, "__func__", None) is Strategy.on_tick:
        raise TypeError(f"{name} does not define on_tick: a kit.Strategy subclass must define "
                        "on_tick(self, tick), returning None, a kit.Signal or a list of Signals")
    for hook, args in HOOK_ARGS.items():
        fn = on_tick if hook == "on_tick" else getattr(strategy, hook, None)
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError(f"{name}.{hook} is a {type(fn).__name__}, not a method: "
                            f"define {_spelled(hook, args)}")
        _check_call(name, hook, fn, args)


def _check_call(name: str, hook: str, fn, args: tuple) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):     # a builtin without a signature: nothing to check against
        return
    try:
        signature.bind(*args)
    except TypeError:
        takes = "one argument, the tick" if hook == "on_tick" else \
            "one argument, the gap" if args else "no argument"
        raise TypeError(f"{name}.{hook}{signature} cannot be called as the engine calls it, "
                        f"{hook}({', '.join(args)}): it must take {takes} besides self — "
                        f"define {_spelled(hook, args)}") from None


def _spelled(hook: str, args: tuple) -> str:
    return f"{hook}({', '.join(('self', *args))})"
