"""Export a strategy class from a notebook to a standalone, runnable script.

    kit.export_strategy(MyStrategy, "strategies/my_strategy.py")
    # then:  <the kernel's python> strategies/my_strategy.py --feed sim --duration 10

The script holds the class, the imports it uses, and the helper functions,
classes, constants and module-level state it depends on from the notebook,
followed by a ``main()`` with the same options as ``python -m kit run``. Its
docstring (also its ``--help``) says which Python runs it and the command.

What the class uses is found with ``symtable`` (true free-variable analysis,
so locals, comprehension variables and attributes are not mistaken for
globals) and resolved against the namespace the class was defined in:

- anything importable from a module (built-in, standard library,
  site-packages, the kit) becomes an ``import`` line;
- classes and functions defined in the notebook are copied as source
  (``kit.research.export_source`` finds it), and what they use in turn;
- immutable constants are written as their value; module-level state (a
  dict the strategy fills, an object) as the statement that defined it.

Anything that cannot be written faithfully stops the export with one
``ExportError`` naming it and saying what to do: an object with no source, a
name that is not defined (a cell that was never run), state whose definition
is in no cell, or a value that looks like a credential. A credential is a
value the kit registered as secret (login secrets and tokens) or the value of
a ``SMARTAPI_*`` environment variable, which a strategy may have read before
any login; the error names the variable and never shows the value.
"""
from __future__ import annotations

import ast
import builtins
import datetime as _dt
import inspect
import re
import shlex
import sys
import types
from pathlib import Path

from kit.research.export_secrets import refuse_secret, refuse_secret_in_script
from kit.research.export_source import (ExportError, free_globals, initial_definition, rebound_globals,
                                        source_of_class, source_of_function)

__all__ = ["ExportError", "default_script_path", "export_strategy", "run_command"]

_LITERAL_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, list, dict, set, frozenset)
_IMMUTABLE_TYPES = (int, float, complex, str, bytes, bool, type(None), frozenset)


# --------------------------------------------------------------------------- the export
class _Plan:
    """Collects the parts of the script; a part comes after everything it uses."""

    def __init__(self, namespace: dict, origin: str, home: str, cells: list[str] | None):
        self.namespace, self.origin, self.home, self.cells = namespace, origin, home, cells
        self.imports: dict[str, None] = {}
        self.constants: list[str] = []
        self.definitions: list[str] = []
        self.done: set[str] = set()
        self.rebound: set[str] = set()      # names a function assigns through `global`: state

    def add_source(self, source: str, name: str) -> None:
        self.rebound |= rebound_globals(source)
        for dep in free_globals(source, name):
            self.require(dep, name)
        self.definitions.append(source.rstrip() + "\n")

    def require(self, name: str, used_by: str) -> None:
        if name in self.done:
            return
        self.done.add(name)
        if name not in self.namespace:
            if hasattr(builtins, name):
                return
            raise ExportError(f"{used_by} uses {name!r}, which is not defined in {self.origin} "
                              "(was the cell that defines it run, or was it deleted?)")
        value = self.namespace[name]
        if name in self.rebound:
            return self.add_state(name, value, used_by)
        if _is_literal(value) and _immutable(value):
            refuse_secret(name, value, used_by)
            self.constants.append(f"{name} = {value!r}\n")
            return
        line = _import_line(name, value, self.home, self.namespace)
        if line is not None:
            if line:
                self.imports[line] = None
            return
        function = inspect.unwrap(value) if callable(value) and hasattr(value, "__wrapped__") else value
        if (inspect.isclass(value) or inspect.isfunction(function)) and getattr(value, "__module__", None) == self.home:
            if function.__name__ == "<lambda>":
                raise ExportError(f"{used_by} uses {name!r}, a lambda; write it as a def to export it")
            if function.__name__ != name:
                raise ExportError(f"{used_by} uses {name!r}, an alias of {function.__name__}; use the original name")
            # The source of a decorated function includes its decorators (functools.lru_cache...).
            self.add_source(source_of_class(value, self.namespace) if inspect.isclass(value)
                            else source_of_function(function), name)
            return
        self.add_state(name, value, used_by)

    def add_state(self, name: str, value, used_by: str) -> None:
        """Module-level state is written as the statement that defined it, not as its current contents."""
        source = initial_definition(name, self.cells)
        if source is None:
            example = {dict: "{}", list: "[]", set: "set()"}.get(type(value), f"{type(value).__name__}(...)")
            raise ExportError(f"{used_by} uses {name!r}, module-level state (a {type(value).__name__}) whose "
                              f"definition is in no cell of {self.origin}, so the script cannot start from the same "
                              f"state: define {name} = {example} in a cell and run it, or build it in the "
                              f"strategy's __init__")
        self.add_source(source, name)


def _import_line(name: str, value, home: str, namespace: dict) -> str | None:
    """``from time import monotonic`` for a value importable from a module; "" for a builtin; None otherwise."""
    if isinstance(value, types.ModuleType):
        return f"import {value.__name__}" if value.__name__ == name else f"import {value.__name__} as {name}"
    if getattr(builtins, name, None) is value:
        return ""
    module = getattr(value, "__module__", None)
    public_name = getattr(value, "__name__", None) if isinstance(getattr(value, "__name__", None), str) else None
    if module == home:
        return None
    candidates = []
    if isinstance(module, str):
        # The package first: `from kit import Signal` rather than `from kit.core.strategy import Signal`.
        candidates += [module.partition(".")[0], module]
    if public_name is None:
        # An instance (sys.stdout): any loaded public module that holds it under this name.
        candidates += sorted((m for m in list(sys.modules) if not m.startswith("_") and "._" not in m), key=len)
    for module_name in candidates:
        mod = sys.modules.get(module_name)
        if mod is None or module_name in ("__main__", home) or vars(mod) is namespace:
            continue
        for attr in dict.fromkeys(a for a in (public_name, name) if a):
            if vars(mod).get(attr) is value:
                return f"from {module_name} import {attr}" + ("" if attr == name else f" as {name}")
    return None


def _immutable(value) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    return isinstance(value, _IMMUTABLE_TYPES)


def _is_literal(value) -> bool:
    if not isinstance(value, _LITERAL_TYPES):
        return False
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


SCRIPT_TEMPLATE = '''\
#!/usr/bin/env python3
"""{name}, exported from {origin} on {date} by kit.export_strategy.

Run it with a Python that has the kit package installed, such as the one
that exported it ({python}); from any directory on this machine:

    {command} --feed sim --duration 10
    {command} --feed replay recordings/session --mode callback
    {command} --help

Elsewhere, install the kit there first (pip install <the kit's repository>).
It runs headless; in queue mode the consumer runs on the main thread, and
Ctrl-C stops cleanly and prints the metrics summary.
"""
try:
    import kit
except ModuleNotFoundError as exc:
    raise SystemExit(f"{{exc}}: this script needs the kit package. Run it with {python}") from None
{imports}
{constants}
{definitions}

def main(argv=None) -> int:
    from kit.__main__ import run_strategy_cli
    return run_strategy_cli({name}, argv, prog={filename!r}, doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
'''


def _import_block(lines) -> str:
    """``import x`` lines, then one ``from m import a, b`` line per module, sorted."""
    plain, names = [], {}
    for line in lines:
        if line.startswith("from "):
            module, _, what = line[5:].partition(" import ")
            names.setdefault(module, []).append(what)
        else:
            plain.append(line)
    return "".join(f"{line}\n" for line in sorted(plain)) + \
        "".join(f"from {m} import {', '.join(sorted(names[m]))}\n" for m in sorted(names))


def default_script_path(cls) -> Path:
    """``strategies/<snake_case class name>.py``, where the dashboard's Export button writes."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return Path("strategies") / f"{snake}.py"


def run_command(path: str | Path) -> str:
    """The command that runs an exported script here: this Python (it has the kit) and the script's absolute path."""
    return f"{_python_command()} {shlex.quote(str(Path(path).resolve()))}"


def _python_command() -> str:
    python = shlex.quote(sys.executable or "python3")
    if _kit_installed():
        return python
    return f"PYTHONPATH={shlex.quote(str(Path(__file__).resolve().parents[2]))} {python}"


def _kit_installed() -> bool:
    """Whether this Python finds the kit without a path set by hand (sys.path.insert in a notebook)."""
    from importlib.metadata import packages_distributions
    return "kit" in packages_distributions()


def export_strategy(cls, path: str | Path, *, namespace: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``cls`` and what it depends on to ``path`` as a runnable script; return the path.

    ``namespace`` defaults to the globals the class was defined in (a notebook's
    user namespace, or its module's). Raises one ``ExportError`` per problem,
    its message saying what to change.
    """
    if not inspect.isclass(cls) or not callable(getattr(cls, "on_tick", None)):
        raise ExportError(f"{cls!r} is not a strategy class (it needs an on_tick method)")
    module = sys.modules.get(cls.__module__)
    if namespace is None:
        namespace = vars(module) if module is not None else {}
    notebook = cls.__module__ == "__main__" and not getattr(module, "__file__", None)
    origin = "the notebook" if notebook else f"module {cls.__module__}"
    # Where module-level state is defined: the notebook's cells, or the module's file.
    cells = None if notebook or module is None else [module.__file__]
    plan = _Plan(namespace, origin, cls.__module__, cells)
    plan.done.add(cls.__name__)
    plan.add_source(source_of_class(cls, namespace), cls.__name__)
    plan.imports.pop("import kit", None)     # the script's first import, with its own message
    path = Path(path)
    text = SCRIPT_TEMPLATE.format(
        name=cls.__name__, origin=origin, date=_dt.date.today().isoformat(), filename=path.name,
        python=_python_command(), command=run_command(path),
        imports=_import_block(plan.imports),
        constants="".join(plan.constants),
        definitions="\n\n".join(plan.definitions))
    ast.parse(text)  # never write a script that does not compile
    refuse_secret_in_script(text)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
