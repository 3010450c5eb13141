"""Custom storage volumes (LXD's ``storage volume``): create, show, change and delete them,
attach them to containers and detach them.

A custom volume is a volume of its pool beside the containers' (the driver's
:meth:`~sysmgr.drivers.storage.base.StoragePool.custom_volumes` view): a btrfs subvolume with
a qgroup limit (``size``), or a directory on a dir pool, which cannot enforce a size (refused,
as for root disks). Its files keep container ids on disk (a new volume's root directory is
uid 0): it is attached through an idmapped mount, so the root of any unprivileged container
it is attached to owns it, whatever that container's map (:mod:`sysmgr.engine.disks`).

A volume is attached as a ``disk`` device (``pool: P, source: VOLUME, path: /data``), live
into a running container. It cannot be deleted, renamed or moved while a container or a
profile uses it: the error names them. Snapshots, copies and moves are in
:mod:`sysmgr.engine.volume_copies`.

Every change that makes a volume writes an intent first (``volume``, resolved by
:mod:`sysmgr.engine.journal`): the pool is changed first and the record last.

Layer: engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

from sysmgr._util.sizes import format_size, parse_size
from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine import containers, events, journal, records, volumes
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Conflict, Issue, NotFound, SysmgrError, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import volume_keys as mvol
from sysmgr.state import volumes as svol
from sysmgr.state.volumes import VolumeRecord, VolumeSnapshotRecord


@dataclass(frozen=True)
class VolumeView:
    """A volume as the API shows it: its record, what uses it, its usage and snapshots."""

    pool: str
    name: str
    driver: str
    config: dict[str, str]
    description: str
    created: float
    used_by: tuple[str, ...]          # containers whose (expanded) devices name it
    profiles: tuple[str, ...]         # profiles whose devices name it
    usage_bytes: int | None
    snapshots: tuple[VolumeSnapshotRecord, ...]


def exists(host: Host, pool: str, name: str) -> bool:
    return svol.exists(host.store, pool, name)


def view_of(host: Host, pool: str, name: str) -> StoragePool:
    """The custom-volume view of ``pool``'s driver (the volume's record must exist)."""
    svol.get(host.store, pool, name)
    return host.pool_driver(pool).custom_volumes()


def uses(dev: Mapping[str, str], pool: str, name: str) -> bool:
    """Whether device ``dev`` is a disk of volume ``pool``/``name``."""
    return dev.get("type") == "disk" and dev.get("pool") == pool and dev.get("source") == name \
        and mkeys.is_bind_disk(dev)


def users(host: Host, pool: str, name: str) -> tuple[list[str], list[str]]:
    """``(containers, profiles)`` using volume ``pool``/``name`` (containers: through their
    own devices or a profile's)."""
    st = host.store
    cts = [c.name for c in st.containers()
           if any(uses(d, pool, name) for d in records.expanded(host, c)[1].values())]
    profs = [p.name for p in st.profiles() if any(uses(d, pool, name) for d in p.devices.values())]
    return cts, profs


def refuse_if_used(host: Host, pool: str, name: str, what: str) -> None:
    """Conflict naming the containers and profiles that use the volume."""
    cts, profs = users(host, pool, name)
    if cts or profs:
        who = [f"container {c}" for c in cts] + [f"profile {p}" for p in profs]
        raise Conflict(f"cannot {what} storage volume {pool}/{name}: it is used by "
                       + ", ".join(who), hint=f"detach it first: sysmgr storage volume detach "
                                             f"{pool} {name} CONTAINER")


def view(host: Host, pool: str, name: str) -> VolumeView:
    rec = svol.get(host.store, pool, name)
    drv = host.pool_driver(pool)
    cts, profs = users(host, pool, name)
    try:
        usage = drv.custom_volumes().container_usage(name)
    except SysmgrError:
        usage = None
    return VolumeView(pool, name, drv.name, dict(rec.config), rec.description, rec.created,
                      tuple(cts), tuple(profs), usage,
                      tuple(svol.snapshots(host.store, pool, name)))


def views(host: Host, pool: str | None = None) -> list[VolumeView]:
    if pool is not None:
        host.store.pool(pool)
    return [view(host, r.pool, r.name) for r in svol.all_volumes(host.store, pool)]


# -- checks -------------------------------------------------------------------------------------

def check_new(host: Host, pool: str, name: str, config: Mapping[str, str]) -> StoragePool:
    """Everything about a volume about to be made: its name (free), its pool, its config
    (a size the pool can enforce); the pool's driver. Call under the root's lock."""
    issues = []
    reason = mvol.volume_name_problem(name)
    if reason:
        issues.append(Issue(f"invalid storage volume name {name!r}: {reason}", path="name"))
    issues += [Issue(r, path=p) for p, r in mvol.validate_volume_config(config)]
    if issues:
        raise ValidationError(issues)
    host.store.pool(pool)
    if svol.exists(host.store, pool, name):
        raise AlreadyExists(f"storage volume {name!r} already exists in storage pool {pool!r}")
    drv = host.pool_driver(pool)
    check_size(drv, config)
    return drv


def check_size(drv: StoragePool, config: Mapping[str, str]) -> int | None:
    """The size in bytes (None: unset); refused on a pool that cannot enforce it."""
    if not config.get("size"):
        return None
    if not drv.info.quotas:
        raise ValidationError([Issue(
            f"storage pool {drv.pool!r} (driver {drv.name}) cannot enforce a volume size; "
            "remove size or use a pool whose driver has quotas (btrfs)", path="config.size")])
    return parse_size(config["size"])


# -- create, change, delete -----------------------------------------------------------------------

def create(host: Host, pool: str, name: str, config: Mapping[str, str] | None = None,
           description: str = "") -> VolumeRecord:
    """Make an empty custom volume (root directory 0755, uid 0: container ids)."""
    cfg = {k: mkeys.value_to_str(v) for k, v in (config or {}).items()}
    with host.locked():
        journal.recover(host)
        drv = check_new(host, pool, name, cfg)
        drv.mount()  # a pool made before custom volumes existed gets their directories
        view = drv.custom_volumes()
        rec = VolumeRecord(pool, name, cfg, description, time.time())
        with journal.intent(host, "volume", volume=name, pool=pool) as it, \
                volumes.full_is_clear(pool), Reverter() as r:
            volumes.empty_volume(view, name, it)
            r.add(lambda: view.delete_container(name), f"delete storage volume {pool}/{name}")
            size = check_size(drv, cfg)
            if size is not None:
                view.set_quota(name, size)
            with host.store.transaction():
                svol.add(host.store, rec)
            r.success()
        events.emit(host, "lifecycle", f"storage-volume/{pool}/{name}", "created")
        return rec


def update(host: Host, pool: str, name: str, *, config: Mapping[str, str] | None = None,
           description: str | None = None) -> None:
    """Replace a volume's config and/or description; a new ``size`` applies at once (a
    quota), refused below what the volume already holds."""
    with host.locked():
        rec = svol.get(host.store, pool, name)
        new = VolumeRecord(pool, name, dict(rec.config), rec.description, rec.created)
        if config is not None:
            new.config = {k: mkeys.value_to_str(v) for k, v in config.items()}
            issues = [Issue(r, path=p) for p, r in mvol.validate_volume_config(new.config)]
            if issues:
                raise ValidationError(issues)
        if description is not None:
            new.description = description
        drv = host.pool_driver(pool)
        size = check_size(drv, new.config)
        if size != (parse_size(rec.config["size"]) if rec.config.get("size") else None):
            _resize(drv.custom_volumes(), name, size)
        with host.store.transaction():
            svol.update(host.store, new)


def _resize(view: StoragePool, name: str, size: int | None) -> None:
    used = view.container_usage(name) if size is not None else None
    if size is not None and used is not None and size < used:
        raise ValidationError([Issue(
            f"storage volume {view.pool}/{name}: size {format_size(size)} is below what it "
            f"holds ({format_size(used)})", path="config.size")], hint="free space in it first")
    view.set_quota(name, size)


def delete(host: Host, pool: str, name: str) -> None:
    """Delete a volume and its snapshots; refused while anything uses it."""
    with host.locked():
        journal.recover(host)
        view = view_of(host, pool, name)
        refuse_if_used(host, pool, name, "delete")
        view.delete_container(name)  # its snapshots first, then the volume
        with host.store.transaction():
            svol.delete(host.store, pool, name)
        events.emit(host, "lifecycle", f"storage-volume/{pool}/{name}", "deleted")


# -- attach, detach -------------------------------------------------------------------------------

def attach(host: Host, pool: str, name: str, container: str, path: str,
           device: str | None = None, *, readonly: bool = False) -> list[str]:
    """Add volume ``pool``/``name`` to ``container`` as disk device ``device`` (default:
    the volume's name) on ``path``; live into a running container. Returns the keys that
    wait for a restart (none where the runtime mounts live)."""
    with host.locked():
        svol.get(host.store, pool, name)
        rec = host.store.container(container)
        dev = device or name
        if dev in rec.devices:
            raise AlreadyExists(f"device {dev!r} already exists on {container!r}",
                                hint="give another device name")
        disk = {"type": "disk", "pool": pool, "source": name, "path": path}
        if readonly:
            disk["readonly"] = "true"
        return containers.update_container(host, container, devices={**rec.devices, dev: disk})


def detach(host: Host, pool: str, name: str, container: str, device: str | None = None
           ) -> list[str]:
    """Remove the disk device(s) of volume ``pool``/``name`` from ``container``'s own
    devices (``device``: only that one); unmounted live."""
    with host.locked():
        rec = host.store.container(container)
        mine = [d for d, v in rec.devices.items() if uses(v, pool, name)
                and (device is None or d == device)]
        if not mine:
            via = [d for d, v in records.expanded(host, rec)[1].items() if uses(v, pool, name)]
            hint = (f"it comes from a profile (device {via[0]!r}): override it with "
                    f"'sysmgr config device add {container} {via[0]} none'") if via else None
            raise NotFound(f"storage volume {pool}/{name} is not attached to {container!r}"
                           + (f" as device {device!r}" if device else ""), hint=hint)
        devices = {d: v for d, v in rec.devices.items() if d not in mine}
        return containers.update_container(host, container, devices=devices)
