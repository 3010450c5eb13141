"""The admin root's journal of moves between members, and settling a move cut short.

The mover (:mod:`sysmgr.api.mover`) records each move in ``<admin root>/cluster/migrations/
<id>.json`` before anything changes (its id, the container's name on both members, both
members, the mover's pid, the phase and — once known — the decision) and removes it when
the move is done. A move whose mover died (or that failed where a member could not be
reached) stays recorded; :func:`settle` finishes or rolls it back on both members from the
target's record, and :func:`settle_pending` does that for every move whose mover is gone
(``sysmgr move NAME`` again, ``sysmgr init`` on the admin root).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sysmgr.engine import journal
from sysmgr.errors import SysmgrError

#: cluster manager (``client.cluster``): spec(), backend(), admin_root
Cluster = Any


@dataclass
class Entry:
    """One move, as the admin root records it until it is settled."""

    id: str
    name: str
    new_name: str
    source: str
    target: str
    owner: dict[str, Any] = field(default_factory=journal.owner)
    phase: str = "copying"
    decision: str = ""              # "", "moved" or "stayed" once known


def journal_dir(admin_root: str) -> str:
    return os.path.join(admin_root, "cluster", "migrations")


def write(admin_root: str, e: Entry) -> None:
    d = journal_dir(admin_root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, f"{e.id}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(asdict(e), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def remove(admin_root: str, e: Entry) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(journal_dir(admin_root), f"{e.id}.json"))


def entries(admin_root: str) -> list[Entry]:
    """Every recorded move (unfinished ones: finished moves remove theirs)."""
    out = []
    try:
        names = sorted(os.listdir(journal_dir(admin_root)))
    except FileNotFoundError:
        return []
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            with open(os.path.join(journal_dir(admin_root), n)) as f:
                out.append(Entry(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue
    return out


def settle(cluster: Cluster, entry: Entry, *, target_optional: bool = False) -> list[str]:
    """Finish or roll back the move ``entry`` on both members (its decision, or the
    target's record when it has none); the journal entry goes once both are done.

    Moved: the target goes first (its copy is cleared and started at once), then the
    source's copy is deleted. Stayed: the target's copy is deleted first (it might have been
    started), then the source's mark cleared and the container started again — except when
    the target never committed (``target_optional``): then the source goes first and not
    reaching the target is no failure (its partial copy removes itself: its endpoint, or its
    next recovery). A member that cannot be reached leaves the entry (with its decision) for
    the next try, and the name running nowhere twice.
    """
    if not entry.decision:
        m = cluster.backend(entry.target).migration_marker(entry.new_name)  # may be unreachable
        entry.decision = "moved" if m is not None and m.get("id") == entry.id else "stayed"
        write(cluster.admin_root, entry)
    moved = entry.decision == "moved"
    steps = [(entry.target, entry.new_name), (entry.source, entry.name)]
    if target_optional and not moved:
        steps.reverse()
    said = []
    for member, name in steps:
        try:
            line = cluster.backend(member).migration_settle(name, entry.id, moved=moved)
        except SysmgrError:
            if target_optional and member == entry.target and not moved:
                continue
            raise
        if line:
            said.append(f"{member}: {line}")
    remove(cluster.admin_root, entry)
    return said


def settle_pending(cluster: Cluster, name: str | None = None) -> list[str]:
    """Settle the moves whose mover is gone (of container ``name`` only, when given)."""
    said = []
    for e in entries(cluster.admin_root):
        if (name is not None and name not in (e.name, e.new_name)) or journal.owner_alive(e.owner):
            continue
        # before "committing" the target cannot hold a committed copy
        said += settle(cluster, e, target_optional=e.phase in ("copying", "stopped"))
        said.append(f"settled the interrupted move of {e.name} ({e.source} -> {e.target}): "
                    f"{'moved' if e.decision == 'moved' else 'it stays on ' + e.source}")
    return said


def settle_all(cluster: Cluster) -> list[str]:
    """:func:`settle_pending` for every container; a move that cannot be settled yet (a
    member unreachable) is named, not raised."""
    said = []
    for e in entries(cluster.admin_root):
        if journal.owner_alive(e.owner):
            continue
        try:
            said += settle_pending(cluster, e.name)
        except SysmgrError as err:
            said.append(f"the interrupted move of {e.name} ({e.source} -> {e.target}) could "
                        f"not be settled yet: {err.message}")
    return said


