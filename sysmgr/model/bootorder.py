"""Boot order: which containers start when the host comes up, and in what order.

Model layer, pure. LXD's rules for ``boot.autostart``: ``true`` starts the container at every
boot, ``false`` never, and unset restores the last state (start it if it was running when the
host went down). Among the containers to start, ``boot.autostart.priority`` higher starts first
(then by name) and ``boot.autostart.delay`` seconds pass after starting one before the next.
``boot.depends`` (a comma-separated list of container names) orders a container after the
ones it names: it starts only once they run.

:func:`boot_order` turns the containers to start into steps: a topological order of the
``boot.depends`` edges in which, among the containers whose dependencies are placed, the
highest priority goes first. A dependency cycle cannot be ordered: it is reported and its
members start by priority, their dependencies on each other dropped. Dependencies outside the
set (already running, or not started at boot) stay as requirements the engine checks when it
comes to that step ("waiting for db1").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from sysmgr.model.keyrules import parse_bool
from sysmgr.model.names import name_problem

DEPENDS_KEY = "boot.depends"


def parse_depends(value: str) -> tuple[str, ...]:
    """``boot.depends``: container names separated by commas, as a sorted tuple without
    repeats (their order does not matter: each one must run).

    Raises:
        ValueError: with a readable reason (an empty item, an invalid container name).
    """
    names = [n.strip() for n in value.split(",")]
    if any(not n for n in names):
        raise ValueError(f"invalid dependency list {value!r}: expected container names "
                         "separated by commas, such as db1,cache1")
    for n in names:
        reason = name_problem(n)
        if reason:
            raise ValueError(f"invalid container name {n!r} in the dependency list: {reason}")
    return tuple(sorted(set(names)))


def normalize_depends(value: str) -> str:
    """``"db2, db1,db1"`` -> ``"db1,db2"``: the same dependencies read the same in diffs."""
    return ",".join(parse_depends(value))


def depends_of(config: Mapping[str, str]) -> tuple[str, ...]:
    """The dependencies an expanded config names (none when unset or invalid)."""
    value = config.get(DEPENDS_KEY) or ""
    try:
        return parse_depends(value) if value else ()
    except ValueError:
        return ()


def wants_boot_start(autostart: str | None, last_state: str | None) -> bool:
    """LXD's rule: ``boot.autostart`` true, or unset and the container ran when the host
    went down (``last_state`` RUNNING)."""
    if autostart is None or autostart == "":
        return last_state == "RUNNING"
    try:
        return parse_bool(autostart)
    except ValueError:
        return False


def _int(value: str | None) -> int:
    try:
        return max(0, int(str(value or "0").strip()))
    except ValueError:
        return 0


@dataclass(frozen=True)
class BootEntry:
    """A container to start at boot."""

    name: str
    priority: int = 0
    delay: int = 0
    depends: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, str]) -> "BootEntry":
        return cls(name, _int(config.get("boot.autostart.priority")),
                   _int(config.get("boot.autostart.delay")), depends_of(config))


@dataclass(frozen=True)
class Step:
    """Start ``name`` once every container in ``requires`` runs; then wait ``delay`` s."""

    name: str
    requires: tuple[str, ...] = ()
    delay: int = 0


@dataclass(frozen=True)
class BootPlan:
    steps: tuple[Step, ...]
    cycles: tuple[tuple[str, ...], ...]  # each as a path back to its start: (a, b, a)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> tuple[str, ...] | None:
    """One cycle of ``graph`` (node -> the nodes it depends on) as ``(a, b, ..., a)``, or
    None. Edges to nodes outside the graph are ignored. Deterministic: nodes by name."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if nxt in on_path:
                return tuple(path[path.index(nxt):]) + (nxt,)
            if nxt in graph and nxt not in done:
                done.add(nxt)
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph[nxt])))
        done.add(start)
    return None


def cycle_through(graph: Mapping[str, Iterable[str]], start: str) -> tuple[str, ...] | None:
    """A shortest cycle through ``start`` as ``(start, ..., start)``, or None."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dep in sorted(graph.get(node, ())):
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return (start,) + tuple(reversed(path))[1:] + (start,)
                if dep not in parent and dep in graph:
                    parent[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return None


def describe_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def boot_order(entries: Sequence[BootEntry]) -> BootPlan:
    """The order to start ``entries`` in (see the module docstring)."""
    by_name = {e.name: e for e in entries}
    # cycles first, so their members take their place by priority among all the others
    dropped: dict[str, set[str]] = {n: set() for n in by_name}  # edges inside a cycle

    def deps(n: str, among: Iterable[str]) -> list[str]:
        return [d for d in by_name[n].depends if d in among and d not in dropped[n]]

    cycles: list[tuple[str, ...]] = []
    while (cycle := find_cycle({n: deps(n, by_name) for n in by_name})) is not None:
        cycles.append(cycle)
        for n in cycle:
            dropped[n].update(cycle)
    remaining = set(by_name)
    steps: list[Step] = []
    while remaining:
        ready = [by_name[n] for n in remaining if not deps(n, remaining)]
        e = min(ready, key=lambda x: (-x.priority, x.name))  # acyclic: something is ready
        remaining.discard(e.name)
        steps.append(Step(e.name, tuple(d for d in e.depends if d not in dropped[e.name]),
                          e.delay))
    return BootPlan(tuple(steps), tuple(cycles))
