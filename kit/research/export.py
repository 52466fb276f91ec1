"""Export a strategy class from a notebook to a standalone, runnable script.

    kit.export_strategy(MyStrategy, "strategies/my_strategy.py")
    # then, on a server:  python strategies/my_strategy.py --feed sim --mode queue --duration 60

The script holds the class, the imports it uses, and the helper functions,
classes and constants it depends on from the notebook, followed by a ``main()``
that runs it with the same command line as ``python -m kit run``.

Finding the source: on Python 3.11 ``inspect.getsource`` fails for a class
defined in a notebook cell, but every cell's code stays in ``linecache``
under the file name its code objects carry. The class's own methods therefore
lead to the exact cell that defined *this* version of the class (not an older
or newer one), and ``ast`` cuts the class out of that cell. What the class
uses is found with ``symtable`` (true free-variable analysis, so locals,
comprehension variables and attributes are not mistaken for globals) and
resolved against the namespace the class was defined in.

Anything that cannot be written faithfully stops the export with
``ExportError`` naming it: an object with no source, a name that is not
defined (a cell that was never run), or a value that looks like a credential.
A credential is a value the kit registered as secret (login secrets and
tokens) or the value of a ``SMARTAPI_*`` environment variable, which a
strategy may have read before any login; the error names the variable and
never shows the value.
"""
from __future__ import annotations

import ast
import builtins
import datetime as _dt
import inspect
import linecache
import os
import re
import symtable
import sys
import textwrap
import types
from pathlib import Path

from kit.angel.sdk import redactor

_SECRET_NAME = re.compile(r"(?i)(api_?key|secret|passw|pin\b|^pin|totp|token|jwt|credential)")
_LITERAL_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, list, dict, set, frozenset)


class ExportError(RuntimeError):
    """The strategy cannot be exported as it stands; the message names what is missing."""


# --------------------------------------------------------------------------- finding source
def _code_objects(obj):
    """Code objects of the functions defined in a class body (methods, properties, static/class methods)."""
    for value in vars(obj).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        code = getattr(value, "__code__", None)
        if code is not None:
            yield code


def _cell_source(filename: str) -> str | None:
    lines = linecache.getlines(filename)
    return "".join(lines) if lines else None


def _source_of_class(cls) -> str:
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        pass
    for code in _code_objects(cls):
        text = _cell_source(code.co_filename)
        if text is None:
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node.name == cls.__name__
                    and node.lineno <= code.co_firstlineno <= node.end_lineno):
                start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                return textwrap.dedent("".join(text.splitlines(True)[start - 1:node.end_lineno]))
    raise ExportError(f"cannot find the source of class {cls.__qualname__}: it has no methods whose "
                      "source is still available (define it in a notebook cell or a .py file)")


def _source_of_function(fn) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ExportError(f"cannot find the source of function {fn.__qualname__}: {exc}") from None


# --------------------------------------------------------------------------- what a piece of source uses
def _free_globals(source: str, defined: str) -> list[str]:
    """Names that ``source`` reads from its module's globals, in first-use order."""
    table = symtable.symtable(source, "<export>", "exec")
    names: dict[str, None] = {}

    def visit(t, top: bool) -> None:
        for sym in t.get_symbols():
            # At the top, everything referenced (bases, decorators, defaults) comes from
            # the module; inside, only what the compiler resolved as an implicit global.
            if sym.is_referenced() and (top or sym.is_global()):
                names.setdefault(sym.get_name())
        for child in t.get_children():
            visit(child, False)

    visit(table, True)
    names.pop(defined, None)
    return list(names)


# --------------------------------------------------------------------------- the export
class _Plan:
    """Collects the parts of the script in dependency order."""

    def __init__(self, namespace: dict, origin: str):
        self.namespace = namespace
        self.origin = origin
        self.imports: dict[str, None] = {"import kit": None}
        self.constants: list[str] = []
        self.definitions: list[str] = []
        self.done: set[str] = set()

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
        if isinstance(value, types.ModuleType):
            self.imports[f"import {value.__name__}" if value.__name__ == name
                         else f"import {value.__name__} as {name}"] = None
        elif _defined_elsewhere(value):
            module, qualname = value.__module__, value.__qualname__
            line = f"from {module} import {qualname}" if qualname == name else f"from {module} import {qualname} as {name}"
            self.imports[line] = None
        elif inspect.isclass(value) or inspect.isfunction(value):
            if getattr(value, "__name__", name) != name:
                raise ExportError(f"{used_by} uses {name!r}, an alias of {value.__name__}; use the original name")
            source = _source_of_class(value) if inspect.isclass(value) else _source_of_function(value)
            if inspect.isfunction(value) and value.__name__ == "<lambda>":
                raise ExportError(f"{used_by} uses {name!r}, a lambda; write it as a def to export it")
            for dep in _free_globals(source, name):
                self.require(dep, name)
            self.definitions.append(source.rstrip() + "\n")
        elif _is_literal(value):
            _refuse_secret(name, value, used_by)
            self.constants.append(f"{name} = {value!r}\n")
        else:
            raise ExportError(f"{used_by} uses {name!r}, a {type(value).__name__} object with no source code; "
                              "build it inside the strategy (e.g. in __init__) or make it a literal constant")


def _defined_elsewhere(value) -> bool:
    """A class or function importable from a real module (not the notebook, not a script run as __main__)."""
    module = getattr(value, "__module__", None)
    if not module or module in ("__main__", "builtins") or not (inspect.isclass(value) or callable(value)):
        return False
    mod = sys.modules.get(module)
    return mod is not None and getattr(mod, "__file__", None) is not None and \
        getattr(mod, getattr(value, "__qualname__", ""), None) is value


def _is_literal(value) -> bool:
    if not isinstance(value, _LITERAL_TYPES):
        return False
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


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


def _refuse_secret(name: str, value, used_by: str) -> None:
    found = _secret_in(_strings(value))
    if found is None and _SECRET_NAME.search(name) and isinstance(value, str):
        found = "its name says it is a credential"
    if found is not None:
        raise ExportError(f"refusing to write {name!r} (used by {used_by}) into a script: {found}. {_READ_IT}")


def _refuse_secret_in_script(text: str) -> None:
    """The whole script: long secrets anywhere (comments too), short ones as a whole string literal."""
    literals = [node.value if isinstance(node.value, str) else node.value.decode("latin-1")
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))]
    found = _secret_in([text, *literals])
    if found is not None:
        raise ExportError(f"refusing to write the script: it would contain {found}. {_READ_IT}")


SCRIPT_TEMPLATE = '''\
#!/usr/bin/env python3
"""{name}, exported from {origin} on {date} by kit.export_strategy.

Run it headless; in queue mode the consumer runs on the main thread, and
Ctrl-C stops cleanly and prints the metrics summary:

    python {filename} --feed sim --mode queue --duration 60
    python {filename} --feed replay recordings/session --mode callback
    python {filename} --help
"""
{imports}
{constants}
{definitions}

def main(argv=None) -> int:
    from kit.__main__ import run_strategy_cli
    return run_strategy_cli({name}, argv, prog={filename!r})


if __name__ == "__main__":
    raise SystemExit(main())
'''


def default_script_path(cls) -> Path:
    """``strategies/<snake_case class name>.py``, where the dashboard's Export button writes."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return Path("strategies") / f"{snake}.py"


def export_strategy(cls, path: str | Path, *, namespace: dict | None = None, overwrite: bool = True) -> Path:
    """Write ``cls`` and what it depends on to ``path`` as a runnable script; return the path.

    ``namespace`` defaults to the globals the class was defined in (a notebook's
    user namespace, or its module's).
    """
    if not inspect.isclass(cls) or not callable(getattr(cls, "on_tick", None)):
        raise ExportError(f"{cls!r} is not a strategy class (it needs an on_tick method)")
    if namespace is None:
        namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    origin = "the notebook" if cls.__module__ == "__main__" else f"module {cls.__module__}"
    plan = _Plan(namespace, origin)
    plan.done.add(cls.__name__)
    source = _source_of_class(cls)
    for dep in _free_globals(source, cls.__name__):
        plan.require(dep, cls.__name__)
    plan.definitions.append(source.rstrip() + "\n")
    path = Path(path)
    text = SCRIPT_TEMPLATE.format(
        name=cls.__name__, origin=origin, date=_dt.date.today().isoformat(), filename=path.name,
        imports="\n".join(sorted(plan.imports)) + "\n",
        constants="".join(plan.constants),
        definitions="\n\n".join(plan.definitions))
    ast.parse(text)  # never write a script that does not compile
    _refuse_secret_in_script(text)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
