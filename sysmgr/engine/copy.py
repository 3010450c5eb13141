"""Copy and rename containers (``lxc copy`` / ``lxc move OLD NEW``).

A copy gets a new identity: its own name (and ``/etc/hostname``), a fresh record with no
volatile state (MAC addresses and other generated values are made anew at its first start)
but the record of the ids its files carry on disk (:mod:`sysmgr.engine.idshift`),
no ``hwaddr`` pinned on its own nic devices, and no snapshots (like ``lxc copy
--instance-only``). On the same pool it is the pool's ``copy_container`` (a snapshot: constant
time on btrfs); onto another pool it streams with ``send``/``receive`` when both pools speak
the same stream format, else copies the tree into an empty volume.

A rename is for stopped containers: the pool's volume (with its snapshots), the runtime
directory, the record (snapshot records follow), and ``/etc/hostname`` when it held the old
name.

Both write an intent first (:mod:`sysmgr.engine.journal`) and the record last.

Layer: engine.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Mapping

from sysmgr._util import safefs
from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import confinement, events, idshift, journal, records, volumes
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Conflict, Issue, SysmgrError, ValidationError
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotStore
from sysmgr.state.snapshots import rename_container as rename_record

# volatile keys a copy keeps: what describes its image, nothing about the original's identity
KEEP_VOLATILE = ("image.os", "image.meta", "image.environment")


def _check_new_name(host: Host, name: str) -> None:
    reason = mnames.name_problem(name)
    if reason:
        raise ValidationError([Issue(f"invalid container name {name!r}: {reason}", path="name")])
    if host.store.has_container(name):
        raise AlreadyExists(f"container {name!r} already exists")


def changed_definition(profiles: list[str], config: dict[str, str],
                       devices: dict[str, dict[str, str]], changes: Mapping[str, Any] | None
                       ) -> tuple[list[str], dict[str, str], dict[str, dict[str, str]]]:
    """A copy's definition with ``lxc copy``'s changes (``changes``: ``profiles`` replacing
    the list unless None, ``config`` keys set, ``devices`` set whole, locally)."""
    if not changes:
        return list(profiles), dict(config), {k: dict(v) for k, v in devices.items()}
    new_profiles = changes.get("profiles")
    return (list(profiles) if new_profiles is None else [str(p) for p in new_profiles],
            {**config, **{str(k): str(v) for k, v in (changes.get("config") or {}).items()}},
            {**{k: dict(v) for k, v in devices.items()},
             **{str(k): {str(a): str(b) for a, b in v.items()}
                for k, v in (changes.get("devices") or {}).items()}})


def copy(host: Host, src: str, dst: str, *, snapshot: str | None = None,
         pool: str | None = None, changes: Mapping[str, Any] | None = None) -> ContainerRecord:
    """Copy container ``src`` (or its snapshot ``snapshot``) to a new, stopped ``dst``,
    on ``pool`` (default: the source's pool), its definition changed by ``changes`` (see
    :func:`changed_definition`)."""
    with host.locked():
        journal.recover(host)
        st = host.store
        source = st.container(src)
        _check_new_name(host, dst)
        profiles, config, devices, description, disk = _definition(host, source, snapshot,
                                                                   changes)
        target = pool or source.pool
        st.pool(target)
        rec = ContainerRecord(dst, source.image, target, list(profiles), dict(config), devices,
                              description, {k: v for k, v in source.volatile.items() if k in KEEP_VOLATILE},
                              time.time())
        rec.volatile.update(disk)  # the ids its files carry: its first start shifts from there
        if target != source.pool:
            _, src_devs = records.expanded(host, rec)
            root = next((n for n, d in src_devs.items() if mkeys.is_root_disk(d)), "root")
            rec.devices[root] = {**src_devs.get(root, {"type": "disk", "path": "/"}), "pool": target}
        cfg, devs = records.expanded(host, rec)
        problems = mexpand.validate_expanded(cfg, devs)
        if problems:
            raise ValidationError([Issue(r, path=p) for p, r in problems])
        issues = volumes.size_issues(host, devs, f"container {dst}")
        if issues:
            raise ValidationError(issues)
        src_drv, dst_drv = host.pool_driver(source.pool), host.pool_driver(target)
        if snapshot is not None and not src_drv.info.snapshots:
            raise Conflict(f"storage pool {source.pool!r} has no snapshots")
        with journal.intent(host, "copy", container=dst, pool=target) as it, \
                volumes.full_is_clear(target), Reverter() as r:
            if target == source.pool:
                path = dst_drv.copy_container(src, dst, snapshot=snapshot)
            else:
                path = _copy_across(host, it, src, dst, snapshot, source.pool, target)
            r.add(lambda: dst_drv.delete_container(dst), f"delete volume of {dst}")
            size = mkeys.root_disk_size(devs)
            if size is not None or dst_drv.info.quotas:
                volumes.check_size(host, dst, target, size)
                volumes.set_size(host, dst, target, size)  # its own limit, not the source's
            records.write_hostname(path, dst)
            rdir = host.layout.container_dir(dst)
            os.makedirs(rdir, exist_ok=True)
            r.add(lambda: records.remove_tree(rdir, ignore_errors=True), f"remove {rdir}")
            with st.transaction():
                st.add_container(rec)
            r.success()
        events.container(host, dst, "copied", detail=f"from {src}/{snapshot}" if snapshot else f"from {src}")
        return rec


def _definition(host: Host, source: ContainerRecord, snapshot: str | None,
                changes: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """The copy's profiles, config, devices (no pinned MACs), description and the ids its
    files carry: the source's (or its snapshot's), changed by ``changes``."""
    st = host.store
    if snapshot is not None:
        s = SnapshotStore(st).get(source.name, snapshot)
        profiles, config, devices, description = s.profiles, s.config, s.devices, s.description
        disk = idshift.disk_state(s.volatile)
    else:
        profiles, config, devices = source.profiles, source.config, source.devices
        description, disk = source.description, idshift.disk_state(source.volatile)
    profiles, config, devices = changed_definition(profiles, config, devices, changes)
    devices = {k: {dk: dv for dk, dv in d.items() if not (d.get("type") == "nic" and dk == "hwaddr")}
               for k, d in devices.items()}
    missing = [Issue(f"profile {p!r} not found", path=f"profiles[{i}]")
               for i, p in enumerate(profiles) if not st.has_profile(p)]
    missing += records.config_issues(config, devices) if changes else []
    if missing:
        raise ValidationError(missing)
    return profiles, config, devices, description, disk


def _copy_across(host: Host, it: journal.Intent, src: str, dst: str, snapshot: str | None,
                 src_pool: str, dst_pool: str) -> str:
    """A copy onto another pool: a stream when the formats match, else a tree copy."""
    src_drv, dst_drv = host.pool_driver(src_pool), host.pool_driver(dst_pool)
    same_format = (src_drv.info.send_receive and dst_drv.info.send_receive
                   and src_drv.info.stream_format == dst_drv.info.stream_format)
    if same_format:
        snap = snapshot
        if snap is None:  # a stream needs a snapshot: a temporary one of the live volume
            snap = "copy-" + secrets.token_hex(6)
            it.note(source_pool=src_pool, source=src, source_snapshot=snap)
            src_drv.create_snapshot(src, snap)
        try:
            with src_drv.send(src, snap) as stream:
                path = dst_drv.receive(dst, stream, snap=snap)
            dst_drv.delete_snapshot(dst, snap)  # the copy starts without snapshots
        finally:
            if snapshot is None:
                src_drv.delete_snapshot(src, snap)
        return path
    path = volumes.empty_volume(dst_drv, dst, it)
    tree = src_drv.snapshot_path(src, snapshot) if snapshot else src_drv.container_path(src)
    volumes.copy_tree(tree, path)
    return path


def rename(host: Host, old: str, new: str) -> None:
    """Rename a stopped container."""
    with host.locked():
        journal.recover(host)
        st = host.store
        rec = st.container(old)
        _check_new_name(host, new)
        if records.status(host, host.store.container(old)).state != STOPPED:
            raise Conflict(f"container {old!r} is running", hint=f"stop it first: sysmgr stop {old}")
        confinement.release(host, old)  # its next start loads one under the new name
        drv = host.pool_driver(rec.pool)
        rdir_old, rdir_new = host.layout.container_dir(old), host.layout.container_dir(new)
        with journal.intent(host, "rename", container=old, new=new, pool=rec.pool), Reverter() as r:
            path = drv.rename_container(old, new)
            r.add(lambda: drv.rename_container(new, old), f"rename volume {new} back to {old}")
            if os.path.isdir(rdir_old):
                os.rename(rdir_old, rdir_new)
                r.add(lambda: os.rename(rdir_new, rdir_old), f"rename {rdir_new} back")
            with st.transaction():
                rename_record(st, old, new)
            r.success()
        events.container(host, new, "renamed", detail=f"from {old}")
        try:
            if safefs.read_file(path, "/etc/hostname").decode(errors="replace").strip() == old:
                records.write_hostname(path, new)
        except (SysmgrError, OSError):
            pass  # no /etc/hostname (or unreadable): nothing to template
