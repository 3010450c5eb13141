"""``cluster evacuate`` and ``cluster restore``: take a member's containers off it (for
maintenance) and bring them back.

Evacuating marks the member first (placement skips it from then on), then handles each
running container by its ``cluster.evacuate`` key: ``migrate`` moves it (near-live where
the pools allow, :mod:`sysmgr.api.migration`) to the member placement chooses; ``auto`` does
the same, and stops it when no member can take it or the move fails; ``stop`` stops it.
Each container is recorded in the admin root before it is touched (``stop``, or
``moved:<member>``), so ``restore`` starts exactly the stopped ones again and moves the
moved ones back, even after an interrupted evacuation. A container that could be neither
moved nor stopped keeps running where it is; the error names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sysmgr.api import migration
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
    moved: tuple[tuple[str, str], ...] = ()   # (container, the member it went to)


MOVED = "moved:"   # the recorded mode of a moved container: moved:<member>


def evacuate(cluster: Cluster, name: str, *, progress: Progress | None = None) -> Evacuation:
    cluster.spec(name)
    store = cluster.store
    backend = cluster.backend(name)           # unreachable: nothing is marked or stopped
    views = backend.container_views()
    store.set_evacuated(name, True)
    say = progress or (lambda _m: None)
    stopped: list[str] = []
    moved: list[tuple[str, str]] = []
    notes: list[str] = []
    failed: list[str] = []
    for v in sorted(views, key=lambda v: v.record.name):
        c = v.record.name
        if v.status.state == "STOPPED":
            continue
        mode = ecluster.evacuate_mode(v.expanded_config)
        if mode in ("auto", "migrate"):
            dest, why = _destination(cluster, v)
            if dest is not None:
                store.record_evacuated(name, c, MOVED + dest)
                try:
                    r = migration.move(cluster, c, name, dest, progress=say)
                    moved.append((c, dest))
                    say(f"moved {c} to {dest}" + (f" (down {r.downtime.total:.2f} s)"
                                                  if r.downtime else ""))
                    continue
                except SysmgrError as e:
                    why = f"the move to {dest} failed: {e.message}"
                    store.forget_evacuated(name, c)
            if mode == "migrate":
                failed.append(f"{c} ({why})")
                continue
            notes.append(f"{c}: cluster.evacuate=auto: {why}; stopped instead")
            say(notes[-1])
        store.record_evacuated(name, c, "stop")
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
            + (f"; stopped: {', '.join(stopped)}" if stopped else "")
            + (f"; moved: {', '.join(c for c, _ in moved)}" if moved else ""),
            hint=f"{name} stays EVACUATED; fix what is named and evacuate again, or "
                 f"'sysmgr cluster restore {name}'")
    return Evacuation(name, tuple(stopped), tuple(notes), tuple(moved))


def _destination(cluster: Cluster, view: Any) -> tuple[str | None, str]:
    """The member placement chooses for a container leaving its member (evacuated
    members are skipped), or None and why not."""
    try:
        return cluster.choose(None, target=None, config=view.expanded_config,
                              profiles=[]), ""
    except SysmgrError as e:
        return None, e.message


def restore(cluster: Cluster, name: str, *, progress: Progress | None = None
            ) -> list[str]:
    cluster.spec(name)
    store = cluster.store
    backend = cluster.backend(name)
    say = progress or (lambda _m: None)
    started: list[str] = []
    failed: list[str] = []
    for c, mode in store.evacuated_containers(name):
        try:
            if mode.startswith(MOVED):
                _move_back(cluster, c, mode[len(MOVED):], name, say)
                started.append(c)
            elif backend.container_view(c).status.state == "STOPPED":
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
        raise SysmgrError(f"restoring {name}: could not bring back {', '.join(failed)}"
                          + (f"; back: {', '.join(started)}" if started else ""),
                          hint=f"{name} stays EVACUATED; 'sysmgr cluster restore {name}' "
                               "again brings back what is left")
    store.set_evacuated(name, False)
    return started


def _move_back(cluster: Cluster, c: str, dest: str, home: str, say: Progress) -> None:
    """Move container ``c`` from where evacuating ``home`` put it (``dest``) back home."""
    where = cluster.locate(c)   # NotFound: deleted meanwhile
    if where == home:           # the move never happened (or was rolled back)
        say(f"{c} is on {home} already")
        return
    if where != dest:
        say(f"{c} moved on to {where} meanwhile: moving it from there")
    cluster.store.set_evacuated(home, False)  # placement may choose it again (the move needs it)
    try:
        migration.move(cluster, c, where, home, progress=say)
    finally:
        cluster.store.set_evacuated(home, True)
    say(f"moved {c} back to {home}")
