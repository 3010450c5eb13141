"""Move a stopped container onto another storage pool of this host (``lxc move NAME -s
POOL``), with its snapshots, keeping its identity (name, MACs, addresses, records).

Never the only copy: the volumes are copied first (the pools' own streams between pools of
one format, snapshots oldest first and each against the previous; tar otherwise), the
record is switched to the new pool, and only then is the old volume deleted. Each half
runs under an intent (:mod:`sysmgr.engine.journal`, op ``copy``, whose resolver deletes a
volume in the intent's pool when the record does not say that pool): a failure or a killed
sysmgr before the switch leaves the container where it was and removes the partial copy;
after it, the old volume goes.

Layer: engine.
"""

from __future__ import annotations

import dataclasses
import secrets

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import arrival, events, journal, records, volume_streams, volumes
from sysmgr.engine.host import Host
from sysmgr.engine.migration import markers
from sysmgr.errors import Conflict, Issue, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotStore


def move_to_pool(host: Host, name: str, pool: str) -> ContainerRecord:
    """Move stopped container ``name`` (with its snapshots) to storage pool ``pool``."""
    with host.locked():
        journal.recover(host)
        st = host.store
        rec = st.container(name)
        old = rec.pool
        st.pool(pool)
        if pool == old:
            raise Conflict(f"container {name!r} is on storage pool {pool!r} already")
        markers.refuse(rec, "move")
        if records.status(host, rec).state != STOPPED:
            raise Conflict(f"container {name!r} is running",
                           hint=f"stop it first: sysmgr stop {name}")
        src, dst = host.pool_driver(old), host.pool_driver(pool)
        snaps = [s.name for s in SnapshotStore(st).all(name)]
        if snaps and not dst.info.snapshots:
            raise ValidationError([Issue(
                f"storage pool {pool!r} (driver {dst.name}) cannot hold the container's "
                f"{len(snaps)} snapshot(s)", path="pool")],
                hint="choose a pool that can, or delete the snapshots first")
        new = dataclasses.replace(rec, pool=pool, devices=arrival.retarget(host, rec, pool))
        _, devs = records.expanded(host, new)
        issues = volumes.size_issues(host, devs, f"container {name}")
        if issues:
            raise ValidationError(issues)
        with journal.intent(host, "copy", container=name, pool=pool, snapshots=[]) as it, \
                volumes.full_is_clear(pool):
            _transfer(host, it, name, old, pool, snaps)
            size = mkeys.root_disk_size(devs)
            if size is not None or dst.info.quotas:
                volumes.check_size(host, name, pool, size)
                volumes.set_size(host, name, pool, size)
            with st.transaction():
                st.update_container(new)
                for s in SnapshotStore(st).all(name):  # their restores land on the new pool
                    SnapshotStore(st).set_devices(name, s.name, arrival.retarget(
                        host, ContainerRecord(name, "", pool, s.profiles, s.config, s.devices),
                        pool))
        # the record says the new pool now: the old copy goes (a failure here is finished by
        # the next recover: its record no longer names that pool)
        with journal.intent(host, "copy", container=name, pool=old):
            src.delete_container(name)
        events.container(host, name, "moved", detail=f"from storage pool {old} to {pool}")
        return st.container(name)


def _transfer(host: Host, it: journal.Intent, name: str, old: str, pool: str,
              snaps: list[str]) -> None:
    """Copy the snapshots (oldest first) and then the current tree of ``name``."""
    src, dst = host.pool_driver(old), host.pool_driver(pool)
    kind = volume_streams.kind_between(src, volume_streams.native_kind(dst))
    prev = None
    for snap in snaps:
        it.add("snapshots", snap)
        with volume_streams.open_volume(src, name, snap, kind=kind, base=prev) as stream:
            volume_streams.store_volume(dst, name, stream, kind=kind, snap=snap, intent=it)
        prev = snap
    if kind == volume_streams.TAR:
        with volume_streams.open_volume(src, name, None, kind=kind) as stream:
            volume_streams.store_volume(dst, name, stream, kind=kind, snap=None, intent=it)
        return
    # a pool stream is always of a snapshot: a temporary one of the current tree
    tmp = "move-" + secrets.token_hex(6)
    it.note(source_pool=old, source=name, source_snapshot=tmp)
    src.create_snapshot(name, tmp)
    try:
        with volume_streams.open_volume(src, name, tmp, kind=kind, base=prev) as stream:
            volume_streams.store_volume(dst, name, stream, kind=kind, snap=tmp, intent=it)
        dst.restore_snapshot(name, tmp)
        dst.delete_snapshot(name, tmp)
    finally:
        src.delete_snapshot(name, tmp)
