"""``cluster evacuate`` and ``cluster restore``: take a member's containers off it (for
maintenance) and bring them back.

Evacuating marks the member first (placement skips it from then on), then handles each
running container by its ``cluster.evacuate`` key: ``stop`` stops it; ``migrate`` and ``auto``
would move it to another member, which needs container moves (the next release), so they
stop it as well and say so. Each stopped container is recorded in the admin root before it
is stopped, so ``restore`` starts exactly those again, even after an interrupted evacuation.
A container that cannot be stopped keeps running where it is; the error names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sysmgr.engine import cluster as ecluster
from sysmgr.errors import NotFound, SysmgrError

Progress = Callable[[str], None]
#: the cluster's manager (``client.cluster``): its store, spec() and backend()
Cluster = Any


@dataclass(frozen=True)
class Evacuation:
    """What ``evacuate`` did: the containers it stopped, and what it had to say."""

    member: str
    stopped: tuple[str, ...]
    notes: tuple[str, ...] = ()
#: what stands in for a move until containers can move between members
NO_MOVE = ("containers cannot move between cluster members yet (that comes with container "
           "migration): stopped instead")


def evacuate(cluster: Cluster, name: str, *, progress: Progress | None = None) -> Evacuation:
    cluster.spec(name)
    store = cluster.store
    backend = cluster.backend(name)           # unreachable: nothing is marked or stopped
    views = backend.container_views()
    store.set_evacuated(name, True)
    say = progress or (lambda _m: None)
    stopped: list[str] = []
    notes: list[str] = []
    failed: list[str] = []
    for v in sorted(views, key=lambda v: v.record.name):
        c = v.record.name
        if v.status.state == "STOPPED":
            continue
        mode = ecluster.evacuate_mode(v.expanded_config)
        if mode != "stop":
            notes.append(f"{c}: cluster.evacuate={mode}: {NO_MOVE}")
            say(notes[-1])
        store.record_evacuated(name, c, mode)
        try:
            backend.container_stop(c, timeout=None, force=False)
        except SysmgrError as e:
            store.forget_evacuated(name, c)   # still running: nothing for restore to start
            failed.append(f"{c} ({e.message})")
            continue
        stopped.append(c)
        say(f"stopped {c}")
    if failed:
        raise SysmgrError(
            f"evacuating {name}: not moved, still running there: {', '.join(failed)}"
            + (f"; stopped: {', '.join(stopped)}" if stopped else ""),
            hint=f"{name} stays EVACUATED; fix what is named and evacuate again, or "
                 f"'sysmgr cluster restore {name}'")
    return Evacuation(name, tuple(stopped), tuple(notes))


def restore(cluster: Cluster, name: str, *, progress: Progress | None = None
            ) -> list[str]:
    cluster.spec(name)
    store = cluster.store
    backend = cluster.backend(name)
    say = progress or (lambda _m: None)
    started: list[str] = []
    failed: list[str] = []
    for c, _mode in store.evacuated_containers(name):
        try:
            if backend.container_view(c).status.state == "STOPPED":
                backend.container_start(c)
                started.append(c)
                say(f"started {c}")
        except NotFound:
            say(f"{c} is gone from {name}: nothing to start")
        except SysmgrError as e:
            failed.append(f"{c} ({e.message})")
            continue
        store.forget_evacuated(name, c)
    if failed:
        raise SysmgrError(f"restoring {name}: could not start {', '.join(failed)}"
                          + (f"; started: {', '.join(started)}" if started else ""),
                          hint=f"{name} stays EVACUATED; 'sysmgr cluster restore {name}' "
                               "again starts what is left")
    store.set_evacuated(name, False)
    return started
