"""The floor plan holds: small modules and functions, no import circle in the API or the
engine, no private name used across modules. (The layer contracts are import-linter's, in
``pyproject.toml``.) Read from the source with ``ast``: imports under ``TYPE_CHECKING`` and
inside functions count too, since they tie modules together just the same."""

from __future__ import annotations

import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "sysmgr")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, tuple[str, ast.Module]]:
    out = {}
    for dirpath, _dirs, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, ".")
            name = rel.removesuffix(".__init__")
            with open(path) as fh:
                src = fh.read()
            out[name] = (src, ast.parse(src, path))
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_pkg = MODULES[module][1] is not None and module + ".__init__" not in MODULES
    parts = base if is_pkg and _is_package(module) else base[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _is_package(module: str) -> bool:
    return os.path.isdir(os.path.join(os.path.dirname(PKG), *module.split(".")))


def _imports(module: str) -> set[str]:
    """Every sysmgr module ``module`` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(MODULES[module][1]):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sysmgr")}
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node)
            if not src.startswith("sysmgr"):
                continue
            for a in node.names:
                found.add(f"{src}.{a.name}" if f"{src}.{a.name}" in MODULES else src)
    return {m for m in found if m in MODULES and m != module}


def test_no_module_is_over_600_lines() -> None:
    long = {m: src.count("\n") for m, (src, _) in MODULES.items()
            if src.count("\n") > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_60_lines() -> None:
    long = []
    for m, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _cycles(package: str) -> list[list[str]]:
    """Import circles among the modules of ``package`` (Tarjan's strongly connected
    components of more than one module)."""
    nodes = [m for m in MODULES if m.startswith(package + ".")]
    edges = {m: {i for i in _imports(m) if i.startswith(package + ".")} for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["sysmgr.api", "sysmgr.engine", "sysmgr.model"])
def test_no_import_circle(package: str) -> None:
    assert _cycles(package) == []


def test_no_private_name_crosses_modules() -> None:
    """``from X import _name`` and ``X._name`` (X a sysmgr module) only within X itself."""
    found = []
    for m, (_, tree) in MODULES.items():
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(m, node)
                for a in node.names:
                    full = f"{src}.{a.name}"
                    if full in MODULES:
                        aliases[a.asname or a.name] = full
                    elif a.name.startswith("_") and not a.name.startswith("__") \
                            and src.startswith("sysmgr") and src != m:
                        found.append(f"{m}: from {src} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and aliases[node.value.id] != m:
                found.append(f"{m}: {node.value.id}.{node.attr}")
    assert not found, found
