"""Finding the source a strategy export copies: classes, functions and module-level state.

On Python 3.11 ``inspect.getsource`` fails for a class defined in a notebook
cell, but every cell's code stays in ``linecache`` under the file name its
code objects carry. A class's own methods lead to the exact cell that defined
*this* version of the class. A class without methods of its own (a subclass
that only sets ``LOOKBACK = 8``, a ``@dataclass`` whose methods are generated
from ``<string>``) is looked for in the cells, newest first: the first
``class`` statement with the same name, bases and attributes (literal values
included) is the one that made it. Module-level state (``STATE = {}``) is
exported as the newest top-level assignment to its name, never as the
notebook's current contents.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import symtable
import sys
import textwrap
import types


class ExportError(RuntimeError):
    """The strategy cannot be exported as it stands; the message names what is missing."""


# --------------------------------------------------------------------------- notebook cells
def notebook_cells() -> list[str]:
    """File names of the notebook cells in ``linecache``, newest execution first."""
    shell = _ipython()
    if shell is not None:
        # ipykernel names a cell by a hash of its text, so re-running a cell reuses the
        # name; the execution counts say which run is the newest.
        runs = getattr(shell.compile, "_filename_map", {})
        return [name for name, _ in sorted(runs.items(), key=lambda item: item[1], reverse=True)
                if name in linecache.cache]
    # Outside IPython: entries that never expire (mtime None) were put there by an interactive tool.
    return [name for name, entry in reversed(list(linecache.cache.items()))
            if len(entry) == 4 and entry[1] is None]


def _ipython():
    module = sys.modules.get("IPython")
    get = getattr(module, "get_ipython", None)
    return get() if get is not None else None


def _cell_tree(filename: str) -> tuple[str, ast.Module] | None:
    lines = linecache.getlines(filename)
    if not lines:
        return None
    text = "".join(lines)
    try:
        return text, ast.parse(text)
    except SyntaxError:
        return None


def _cut(text: str, node: ast.stmt) -> str:
    start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
    return textwrap.dedent("".join(text.splitlines(True)[start - 1:node.end_lineno]))


# --------------------------------------------------------------------------- classes
def _code_objects(cls):
    """Code objects of the functions defined in a class body (methods, properties, static/class methods)."""
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        code = getattr(value, "__code__", None)
        if code is not None:
            yield code


def source_of_class(cls, namespace: dict) -> str:
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        pass
    for code in _code_objects(cls):
        found = _cell_tree(code.co_filename)
        if found is None:
            continue
        text, tree = found
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node.name == cls.__name__
                    and node.lineno <= code.co_firstlineno <= node.end_lineno):
                _check_bases(cls, node, namespace)
                return _cut(text, node)
    for filename in notebook_cells():
        found = _cell_tree(filename)
        if found is None:
            continue
        text, tree = found
        # The last statement of a cell is its newest definition there.
        for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)),
                           key=lambda n: n.lineno, reverse=True):
            if _same_class(cls, node):
                _check_bases(cls, node, namespace)
                return _cut(text, node)
    raise ExportError(f"cannot find the source of class {cls.__qualname__}: no notebook cell defines a class "
                      f"{cls.__name__} with its bases and attributes (was it changed after its cell ran, e.g. "
                      f"{cls.__name__}.X = ...? re-run the cell that defines it, with the change written there)")


def _mangled(cls_name: str, name: str) -> str:
    if name.startswith("__") and not name.endswith("__"):
        return f"_{cls_name.lstrip('_')}{name}"
    return name


def _same_class(cls, node: ast.ClassDef) -> bool:
    """Whether ``node`` could have made ``cls``: name, base names, attribute names and literal values."""
    if node.name != cls.__name__:
        return False
    bases = [b for b in cls.__bases__ if b is not object]
    if len(node.bases) != len(bases) or any(
            ast.unparse(expr).rpartition(".")[2] != base.__name__ for expr, base in zip(node.bases, bases)):
        return False
    # __slots__ names are descriptors the class statement made, not attributes it wrote.
    live = {k: v for k, v in vars(cls).items()
            if not (k.startswith("__") and k.endswith("__")) and not isinstance(v, types.MemberDescriptorType)}
    annotated, assigned = set(), {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotated.add(stmt.target.id)
            if stmt.value is not None:
                assigned[_mangled(cls.__name__, stmt.target.id)] = stmt.value
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        assigned[_mangled(cls.__name__, name.id)] = stmt.value
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            assigned[_mangled(cls.__name__, stmt.name)] = None
    assigned = {k: v for k, v in assigned.items() if not (k.startswith("__") and k.endswith("__"))}
    if annotated != set(vars(cls).get("__annotations__", {})):
        return False
    # A dataclass field(default_factory=...) leaves no class attribute: only annotated names may be missing.
    if not set(live) <= set(assigned) or not set(assigned) - set(live) <= annotated:
        return False
    for name, expr in assigned.items():
        if name in live and expr is not None:
            try:
                written = ast.literal_eval(expr)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if type(written) is not type(live[name]) or written != live[name]:
                return False
    doc = ast.get_docstring(node, clean=False)
    return doc is None or doc == cls.__doc__


def _check_bases(cls, node: ast.ClassDef, namespace: dict) -> None:
    """A base redefined after the class would be written as its new version: say so instead."""
    for expr, base in zip(node.bases, [b for b in cls.__bases__ if b is not object]):
        if isinstance(expr, ast.Name) and inspect.isclass(namespace.get(expr.id)) and namespace[expr.id] is not base:
            raise ExportError(f"{cls.__name__}'s base {expr.id} was redefined after {cls.__name__} was; "
                              f"re-run the cell that defines {cls.__name__}, then export it again")


# --------------------------------------------------------------------------- functions and state
def source_of_function(fn) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ExportError(f"cannot find the source of function {fn.__qualname__}: {exc}") from None


def initial_definition(name: str, filenames: list[str] | None = None) -> str | None:
    """The newest top-level ``name = ...`` statement in the notebook's cells (or in ``filenames``), or None."""
    for filename in notebook_cells() if filenames is None else filenames:
        found = _cell_tree(filename)
        if found is None:
            continue
        text, tree = found
        for stmt in reversed(tree.body):
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                targets = [stmt.target]
            else:
                continue
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return _cut(text, stmt)
    return None


# --------------------------------------------------------------------------- what a piece of source uses
def free_globals(source: str, defined: str) -> list[str]:
    """Names that ``source`` reads from its module's globals, in first-use order."""
    names: dict[str, None] = {}

    def visit(table, top: bool) -> None:
        for sym in table.get_symbols():
            # At the top, everything referenced (bases, decorators, defaults, a value's
            # expression) comes from the module; inside, globals read or rebound (`global n`).
            if (sym.is_referenced() and (top or sym.is_global())) or (not top and sym.is_declared_global()):
                names.setdefault(sym.get_name())
        for child in table.get_children():
            visit(child, False)

    visit(symtable.symtable(source, "<export>", "exec"), True)
    names.pop(defined, None)
    return list(names)


def rebound_globals(source: str) -> set[str]:
    """Names that functions in ``source`` assign through a ``global`` statement."""
    rebound = set()

    def visit(table) -> None:
        for sym in table.get_symbols():
            if sym.is_declared_global() and sym.is_assigned():
                rebound.add(sym.get_name())
        for child in table.get_children():
            visit(child)

    for child in symtable.symtable(source, "<export>", "exec").get_children():
        visit(child)
    return rebound
