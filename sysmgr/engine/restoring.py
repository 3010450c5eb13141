"""The two halves of restoring a snapshot that recovery needs too: checking that the
snapshot's definition still makes sense on this host, and swapping the container's filesystem
and record for the snapshot's.

:func:`sysmgr.engine.snapshots.restore` runs both under an intent; when sysmgr is killed in
between, :func:`sysmgr.engine.journal.recover` runs them again (the swap is atomic on the pool
and the record update idempotent). Neither imports the other: both import this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine import idshift, records, volumes
from sysmgr.engine.host import Host
from sysmgr.errors import Conflict, Issue, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotStore


def snapshot_pool(host: Host, name: str) -> tuple[ContainerRecord, StoragePool]:
    """The container's record and its pool's driver, which must be able to snapshot."""
    rec = host.store.container(name)
    drv = host.pool_driver(rec.pool)
    if not drv.info.snapshots:
        raise Conflict(f"storage pool {rec.pool!r} (driver {drv.name}) cannot take snapshots",
                       hint="move the container to a dir or btrfs pool (copy -s POOL)")
    return rec, drv


@dataclass(frozen=True)
class Restore:
    """A checked restore of snapshot ``snap`` of ``current``'s container."""

    current: ContainerRecord
    restored: ContainerRecord          # the record as the snapshot has it
    snap: str
    old_size: int | None               # root disk sizes before and after
    new_size: int | None
    disk_state: dict[str, str]         # the ids the snapshot's files carry (idshift)


def check(host: Host, name: str, snap: str) -> tuple[Restore, StoragePool]:
    """The restore of ``snap``, refused when its definition no longer fits this host
    (profiles gone, an invalid expansion, the root disk on another pool, a size the pool
    cannot enforce)."""
    rec, drv = snapshot_pool(host, name)
    s = SnapshotStore(host.store).get(name, snap)
    issues = [Issue(f"profile {p!r} (used by snapshot {snap}) no longer exists", path="profiles")
              for p in s.profiles if not host.store.has_profile(p)]
    if issues:
        raise ValidationError(issues, hint="re-create the profile, then restore again")
    new = ContainerRecord(**{**rec.__dict__, "profiles": list(s.profiles), "config": dict(s.config),
                             "devices": {k: dict(v) for k, v in s.devices.items()},
                             "description": s.description})
    cfg, devs = records.expanded(host, new)
    problems = [Issue(f"snapshot {snap}: {i.message}", path=i.path)
                for i in records.expansion_issues(cfg, devs)]
    if problems:
        raise ValidationError(problems)
    if records.root_pool(devs) != rec.pool:
        raise ValidationError(f"snapshot {snap} puts the root disk on pool "
                              f"{records.root_pool(devs)!r}, but {name} lives on {rec.pool!r}")
    size_problems = volumes.size_issues(host, devs, f"snapshot {snap}")
    if size_problems:
        raise ValidationError(size_problems)
    _, old_devs = records.expanded(host, rec)
    return Restore(rec, new, snap, mkeys.root_disk_size(old_devs), mkeys.root_disk_size(devs),
                   idshift.disk_state(s.volatile)), drv


def swap(host: Host, r: Restore, drv: StoragePool, *, recovering: bool = False) -> None:
    """Put the snapshot's filesystem and definition in place (the container is stopped),
    with the record of the ids its files carry on disk (the rest of the volatile state is
    read now: a forced restore stopped the container since :func:`check`)."""
    name = r.current.name
    drv.restore_snapshot(name, r.snap)
    if r.new_size != r.old_size or recovering:
        volumes.set_size(host, name, r.current.pool, r.new_size)
    volatile = idshift.with_state(host.store.container(name).volatile, r.disk_state)
    with host.store.transaction():
        host.store.update_container(dataclasses.replace(r.restored, volatile=volatile))
