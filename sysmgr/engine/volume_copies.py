"""Snapshots, copies and moves of custom storage volumes (``storage volume snapshot|restore|
copy|move``).

A snapshot is a read-only copy of the volume in its pool (constant time on btrfs, a full copy
on dir) plus a record of the volume's config then; a restore makes the volume that snapshot
again (the other snapshots stay), refused while a running container has it mounted.

A copy gets the volume's config and description and, unless ``volume_only``, its snapshots
(oldest first, with their records). On the same pool without snapshots it is the pool's own
copy (a snapshot: constant time on btrfs); otherwise each snapshot and then the volume travel
as a stream (:mod:`sysmgr.engine.volume_streams`): the pool's own (``btrfs send``, incremental
from the previous snapshot) between pools of one format, else a tar of each tree. A move is a
rename on the same pool, else a copy with the snapshots and then the delete of the source:
the source goes only once the copy is complete. Neither is done while anything uses the
volume.

Each operation writes an intent first (``volume``, :mod:`sysmgr.engine.journal`): a killed
copy leaves neither the half-made volume nor the temporary snapshot of its source.

Layer: engine.
"""

from __future__ import annotations

import secrets
import time

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine import custom_volumes, events, journal, records, volume_streams, volumes
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.engine.snapshots import check_name, next_name
from sysmgr.errors import AlreadyExists, Conflict
from sysmgr.state import volumes as svol
from sysmgr.state.volumes import VolumeRecord, VolumeSnapshotRecord


def _with_snapshots(view: StoragePool, what: str) -> None:
    if not view.info.snapshots:
        raise Conflict(f"storage pool {view.pool!r} (driver {view.name}) has no snapshots: "
                       f"cannot {what}")


# -- snapshots ------------------------------------------------------------------------------------

def snapshot(host: Host, pool: str, name: str, snap: str | None = None) -> VolumeSnapshotRecord:
    """Snapshot volume ``pool``/``name`` (``snapN`` by default, LXD's names)."""
    with host.locked():
        journal.recover(host)
        view = custom_volumes.view_of(host, pool, name)
        _with_snapshots(view, "snapshot a volume")
        st = host.store
        snap = snap or next_name([s.name for s in svol.snapshots(st, pool, name)])
        check_name(snap)
        if svol.has_snapshot(st, pool, name, snap):
            raise AlreadyExists(f"snapshot {name}/{snap} already exists in storage pool {pool!r}")
        rec = svol.get(st, pool, name)
        out = VolumeSnapshotRecord(pool, name, snap, time.time(), dict(rec.config), rec.description)
        with volumes.full_is_clear(pool), Reverter() as r:
            view.create_snapshot(name, snap)
            r.add(lambda: view.delete_snapshot(name, snap), f"delete snapshot {name}/{snap}")
            with st.transaction():
                svol.add_snapshot(st, out)
            r.success()
        events.emit(host, "lifecycle", f"storage-volume/{pool}/{name}/{snap}", "snapshot-created")
        return out


def delete_snapshot(host: Host, pool: str, name: str, snap: str) -> None:
    with host.locked():
        view = custom_volumes.view_of(host, pool, name)
        svol.get_snapshot(host.store, pool, name, snap)
        view.delete_snapshot(name, snap)
        with host.store.transaction():
            svol.delete_snapshot(host.store, pool, name, snap)


def restore(host: Host, pool: str, name: str, snap: str) -> None:
    """Make the volume its snapshot ``snap`` again (config too); refused while a running
    container has it mounted (stop it, or detach the volume, first)."""
    with host.locked():
        view = custom_volumes.view_of(host, pool, name)
        s = svol.get_snapshot(host.store, pool, name, snap)
        running = [c for c in custom_volumes.users(host, pool, name)[0]
                   if records.status(host, host.store.container(c)).state != STOPPED]
        if running:
            raise Conflict(f"cannot restore storage volume {pool}/{name}: running containers "
                           f"have it mounted: {', '.join(running)}", hint="stop them first")
        view.restore_snapshot(name, snap)
        size = custom_volumes.check_size(host.pool_driver(pool), s.config)
        if view.info.quotas:
            view.set_quota(name, size)
        rec = svol.get(host.store, pool, name)
        with host.store.transaction():
            svol.update(host.store, VolumeRecord(pool, name, dict(s.config), rec.description,
                                                 rec.created))


# -- copy and move --------------------------------------------------------------------------------

def copy(host: Host, pool: str, name: str, dst_pool: str, dst: str, *,
         volume_only: bool = False) -> VolumeRecord:
    """Copy volume ``pool``/``name`` to a new ``dst_pool``/``dst`` (with its snapshots
    unless ``volume_only``)."""
    with host.locked():
        journal.recover(host)
        return _copy(host, pool, name, dst_pool, dst, volume_only=volume_only)


def _copy(host: Host, pool: str, name: str, dst_pool: str, dst: str, *,
          volume_only: bool) -> VolumeRecord:
    st = host.store
    src_view = custom_volumes.view_of(host, pool, name)
    rec = svol.get(st, pool, name)
    drv = custom_volumes.check_new(host, dst_pool, dst, rec.config)
    drv.mount()
    dst_view = drv.custom_volumes()
    snaps = [] if volume_only else svol.snapshots(st, pool, name)
    if snaps:
        _with_snapshots(dst_view, "receive the volume's snapshots (copy it with --volume-only)")
    out = VolumeRecord(dst_pool, dst, dict(rec.config), rec.description, time.time())
    with journal.intent(host, "volume", volume=dst, pool=dst_pool) as it, \
            volumes.full_is_clear(dst_pool), Reverter() as r:
        r.add(lambda: dst_view.delete_container(dst), f"delete storage volume {dst_pool}/{dst}")
        if not snaps and pool == dst_pool:
            dst_view.copy_container(name, dst)
        else:
            _stream(it, src_view, name, dst_view, dst, [s.name for s in snaps])
        size = custom_volumes.check_size(drv, out.config)
        if dst_view.info.quotas:
            dst_view.set_quota(dst, size)  # its own limit, not what the stream carried
        with st.transaction():
            svol.add(st, out)
            for s in snaps:
                svol.add_snapshot(st, VolumeSnapshotRecord(dst_pool, dst, s.name, s.created,
                                                           s.config, s.description))
        r.success()
    events.emit(host, "lifecycle", f"storage-volume/{dst_pool}/{dst}", "copied",
                detail=f"from {pool}/{name}")
    return out


def _stream(it: journal.Intent, src: StoragePool, name: str, dst: StoragePool, new: str,
            snaps: list[str]) -> None:
    """Each snapshot of ``src``'s volume ``name`` (oldest first), then the volume itself,
    into ``dst``'s new volume ``new``: the pools' own stream (incremental, the volume as one
    more temporary snapshot) where they share a format, else tars."""
    kind = volume_streams.kind_between(src, volume_streams.native_kind(dst))
    if kind == volume_streams.TAR:
        for s in snaps:
            with volume_streams.open_volume(src, name, s, kind=kind) as stream:
                volume_streams.store_volume(dst, new, stream, kind=kind, snap=s, intent=it)
        with volume_streams.open_volume(src, name, None, kind=kind) as stream:
            volume_streams.store_volume(dst, new, stream, kind=kind, snap=None, intent=it)
        return
    tmp = "copy-" + secrets.token_hex(6)
    it.note(source_pool=src.pool, source=name, source_snapshot=tmp)
    src.create_snapshot(name, tmp)
    try:
        base = None
        for s in snaps + [tmp]:
            with volume_streams.open_volume(src, name, s, kind=kind, base=base) as stream:
                volume_streams.store_volume(dst, new, stream, kind=kind, snap=s)
            base = s
        dst.restore_snapshot(new, tmp)  # the volume as it was, beside its snapshots
        dst.delete_snapshot(new, tmp)
    finally:
        src.delete_snapshot(name, tmp)


def move(host: Host, pool: str, name: str, dst_pool: str, dst: str) -> VolumeRecord:
    """Rename volume ``pool``/``name`` (same pool), or move it with its snapshots to
    ``dst_pool``: copied first, the source deleted only once the copy is complete."""
    with host.locked():
        journal.recover(host)
        view = custom_volumes.view_of(host, pool, name)
        custom_volumes.refuse_if_used(host, pool, name, "move")
        if pool != dst_pool:
            out = _copy(host, pool, name, dst_pool, dst, volume_only=False)
            view.delete_container(name)
            with host.store.transaction():
                svol.delete(host.store, pool, name)
            return out
        rec = svol.get(host.store, pool, name)
        custom_volumes.check_new(host, pool, dst, rec.config)
        with Reverter() as r:
            view.rename_container(name, dst)
            r.add(lambda: view.rename_container(dst, name), f"rename {dst} back to {name}")
            with host.store.transaction():
                svol.rename(host.store, pool, name, dst)
            r.success()
        events.emit(host, "lifecycle", f"storage-volume/{pool}/{dst}", "renamed",
                    detail=f"from {name}")
        return svol.get(host.store, pool, dst)
