"""Containers: create, delete, and change their definition (live where the kernel allows).

Each operation validates everything first, so bad input changes nothing; multi-step changes
register their undo in a :class:`Reverter` and write an intent first
(:mod:`sysmgr.engine.journal`), so neither a failure half-way nor a killed sysmgr leaves a
half-created container. The pool is changed first and the record last.
"""

from __future__ import annotations

import os
import time
from typing import Mapping, Sequence

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import (
    confinement, disks, events, idmap, journal, lifecycle, pools, records, runspec, supervise,
    volumes)
from sysmgr.engine.host import DEFAULT_PROFILE, Host
from sysmgr.engine.migration import markers
from sysmgr.engine.nicrules import nic_problems
from sysmgr.engine.networks import NetworkEngine
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Conflict, Issue, NotFound, SysmgrError, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state import volumes as svol
from sysmgr.state.db import ContainerRecord, ImageRecord

Devices = Mapping[str, Mapping[str, str]]


def device_ref_issues(host: Host, devices: Devices, where: str = "devices") -> list[Issue]:
    """Devices that name a pool or a network this host does not have (or misuse one)."""
    issues = []
    for dname, dev in devices.items():
        pool = dev.get("pool")
        if dev.get("type") == "disk" and pool and not host.store.has_pool(pool):
            issues.append(Issue(f"storage pool {pool!r} not found", path=f"{where}.{dname}.pool"))
        elif pool and mkeys.is_bind_disk(dev) and not svol.exists(host.store, pool, dev["source"]):
            issues.append(Issue(f"storage volume {dev['source']!r} not found in storage pool "
                                f"{pool!r}", path=f"{where}.{dname}.source"))
    if any(d.get("type") == "nic" for d in devices.values()):
        facts = NetworkEngine(host).facts()
        issues += [Issue(r, path=p) for p, r in nic_problems(devices, facts, where=where)]
    return issues


def _check_expanded(host: Host, name: str, cfg: Mapping[str, str], devs: Devices) -> None:
    """A container's expansion is valid here: its devices, boot dependencies, disks."""
    problems = records.expansion_issues(cfg, devs) + supervise.depends_issues(host, name, cfg)
    problems += disks.issues(host, devs, privileged=idmap.is_privileged(cfg))
    if problems:
        raise ValidationError(problems)


# -- create -----------------------------------------------------------------------------------

def create_container(host: Host, name: str, image: str, *, profiles: Sequence[str] | None = None,
                     config: Mapping[str, str] | None = None, devices: Devices | None = None,
                     pool: str | None = None, description: str = "") -> ContainerRecord:
    """Create a stopped container from an image. Validates everything first."""
    with host.locked():
        rec, img, devs = _checked(host, name, image, profiles, config, devices, pool,
                                  description)
        journal.recover(host)  # an earlier, killed create of this name left its volume
        with volumes.full_is_clear(rec.pool):
            pools.ensure_image_in_pool(host, img, rec.pool)
        _make(host, rec, img, devs)
        events.container(host, name, "created", detail=f"from image {image}")
        return rec


def check_create(host: Host, name: str, image: str, *, profiles: Sequence[str] | None = None,
                 config: Mapping[str, str] | None = None, devices: Devices | None = None,
                 pool: str | None = None) -> None:
    """What :func:`create_container` checks before it changes anything (ValidationError,
    AlreadyExists), without creating: ``launch`` says "Creating" only for valid input."""
    with host.locked():
        _checked(host, name, image, profiles, config, devices, pool, "")


def _checked(host: Host, name: str, image: str, profiles: Sequence[str] | None,
             config: Mapping[str, str] | None, devices: Devices | None, pool: str | None,
             description: str) -> tuple[ContainerRecord, ImageRecord, dict[str, dict[str, str]]]:
    """The new container's record, its image and expanded devices, once all is valid."""
    profiles = list(profiles) if profiles is not None else [DEFAULT_PROFILE]
    cfg_in, devs_in = records.stringify(config, devices)
    issues = records.name_issues("container", name, mnames.name_problem)
    issues += records.config_issues(cfg_in, devs_in)
    st = host.store  # (the caller holds the lock)
    if st.has_container(name):
        raise AlreadyExists(f"container {name!r} already exists")
    issues += [Issue(f"profile {p!r} not found", path=f"profiles[{i}]")
               for i, p in enumerate(profiles) if not st.has_profile(p)]
    img = None
    try:
        img = st.image(image)
    except NotFound as e:
        issues.append(Issue(e.message, path="image"))
    if pool is not None:
        if not st.has_pool(pool):
            issues.append(Issue(f"storage pool {pool!r} not found", path="pool"))
        else:  # -s/--storage as in LXD: override the root disk's pool
            root = devs_in.get("root") or {}
            devs_in["root"] = {**{"type": "disk", "path": "/"}, **root, "pool": pool}
    issues += device_ref_issues(host, devs_in)
    if issues:
        raise ValidationError(issues)
    assert img is not None
    rec = ContainerRecord(name, img.fingerprint, "", profiles, cfg_in, devs_in, description,
                          {}, time.time())
    cfg, devs = records.expanded(host, rec)
    _check_expanded(host, name, cfg, devs)
    records.runtime(host, rec, cfg)  # runtime.engine: installed, or nothing is created (exit 2)
    rec.pool = records.root_pool(devs)
    NetworkEngine(host).check_addresses({name: devs})
    size_problems = volumes.size_issues(host, devs)
    if size_problems:
        raise ValidationError(size_problems)
    return rec, img, devs


def _make(host: Host, rec: ContainerRecord, img: ImageRecord, devs: Devices) -> None:
    """The volume, its size, its hostname, the runtime directory and the record of a
    validated new container; all undone on failure."""
    name, st = rec.name, host.store
    drv = host.pool_driver(rec.pool)
    with journal.intent(host, "create", container=name, pool=rec.pool), \
            volumes.full_is_clear(rec.pool), Reverter() as r:
        rootfs = drv.create_container(name, img.fingerprint)
        r.add(lambda: drv.delete_container(name), f"delete volume of {name}")
        size = mkeys.root_disk_size(devs)
        if size is not None:
            volumes.check_size(host, name, rec.pool, size)
            volumes.set_size(host, name, rec.pool, size)
        records.write_hostname(rootfs, name)
        rdir = host.layout.container_dir(name)
        os.makedirs(rdir, exist_ok=True)
        r.add(lambda: records.remove_tree(rdir, ignore_errors=True), f"remove {rdir}")
        rec.volatile = {"image.os": img.metadata.get("properties", {}).get("os", "")}
        if img.metadata.get("environment"):
            rec.volatile[records.IMAGE_ENVIRONMENT] = dict(img.metadata["environment"])
        with st.transaction():
            st.add_container(rec)

        def unrecord() -> None:
            with st.transaction():
                st.delete_container(name)

        r.add(unrecord, f"remove the record of {name}")
        NetworkEngine(host).sync()  # MAC, host interface and address of its nics; leases
        r.success()


# -- delete -----------------------------------------------------------------------------------

def delete_container(host: Host, name: str, *, force: bool = False,
                     migration: str | None = None) -> None:
    """Delete a container, its volume and its snapshots (a running one only with ``force``).
    A container a move marks is deleted only by that move (``migration``), which also
    deletes a protected one: the copy left behind by a finished move."""
    error = delete_many(host, [name], force=force, migration=migration)[name]
    if error is not None:
        raise error


def delete_many(host: Host, names: Sequence[str], *, force: bool = False,
                migration: str | None = None) -> dict[str, SysmgrError | None]:
    """Delete several containers in one pass (see :func:`delete_container`): the running
    ones (``force``) are killed together (:func:`lifecycle.stop_many`), and the DHCP
    reservations and DNS names of their networks are pushed once at the end. A failure is
    that container's alone (the others are deleted). Returns each name's error, None for a
    deleted one."""
    out: dict[str, SysmgrError | None] = {}
    with host.locked():
        doomed: dict[str, records.Expanded] = {}
        for name in dict.fromkeys(names):
            try:
                doomed[name] = _deletable(host, name, force, migration)
            except SysmgrError as e:
                out[name] = e
        running = [n for n, ex in doomed.items()
                   if records.status(host, ex.record).state != STOPPED]
        for name, result in lifecycle.stop_many(host, running, force=True).items():
            if isinstance(result, SysmgrError):
                out[name] = result
                del doomed[name]
        networks = NetworkEngine(host)
        touched: set[str] = set()
        for name, ex in doomed.items():
            try:
                _remove(host, ex)
                out[name] = None
                touched.update(networks.networks_of(ex.record))
            except SysmgrError as e:
                out[name] = e
        if touched or any(records.has_nics(ex.devices) for ex in doomed.values()):
            networks.sync(touched=touched)  # their DHCP leases and DNS names go
        for name in doomed:
            if out[name] is None:
                events.container(host, name, "deleted")
    return {name: out[name] for name in dict.fromkeys(names)}


def _deletable(host: Host, name: str, force: bool, migration: str | None) -> records.Expanded:
    """The container's record, if it may be deleted now."""
    ex = records.read(host, name)
    markers.refuse(ex.record, "delete", allow=migration)
    if migration is None and \
            mkeys.parse_bool(ex.config.get("security.protection.delete", "false")):
        raise Conflict(f"container {name!r} is protected (security.protection.delete=true)",
                       hint=f"sysmgr config unset {name} security.protection.delete")
    if not force and records.status(host, ex.record).state != STOPPED:
        raise Conflict(f"container {name!r} is running", hint="stop it first or use --force")
    return ex


def _remove(host: Host, ex: records.Expanded) -> None:
    """Remove a stopped container's leftovers, volume, files and record."""
    name = ex.record.name
    records.runtime(host, ex.record, ex.config).cleanup(records.cgroup_path(host, name))
    confinement.release(host, name)
    # the record goes last: if removing the volume fails, the container stays listed;
    # an unmounted pool (after a restart) would make the volume look already gone
    drv = host.pool_driver(ex.record.pool)
    if not drv.has_container(name):
        drv.mount()
    drv.delete_container(name)
    records.remove_tree(host.layout.container_dir(name), ignore_errors=True)
    with host.store.transaction():
        host.store.delete_container(name)


# -- definition -------------------------------------------------------------------------------

def update_container(host: Host, name: str, *, config: Mapping[str, str] | None = None,
                     devices: Devices | None = None, profiles: Sequence[str] | None = None,
                     description: str | None = None) -> list[str]:
    """Replace the given parts of a container's local definition.

    Live keys are applied at once to a running container; returns the keys whose change
    takes effect only after a restart (empty when everything applied live)."""
    with host.locked():
        rec = host.store.container(name)
        new = _replaced(rec, config, devices, profiles, description)
        issues = records.config_issues(new.config, new.devices) + device_ref_issues(host, new.devices)
        issues += [Issue(f"profile {p!r} not found", path=f"profiles[{i}]")
                   for i, p in enumerate(new.profiles) if not host.store.has_profile(p)]
        if issues:
            raise ValidationError(issues)
        old_cfg, old_devs = records.expanded(host, rec)
        cfg, devs = records.expanded(host, new)
        _check_expanded(host, name, cfg, devs)
        if records.root_pool(devs) != rec.pool:
            raise ValidationError(
                f"changing the root disk's pool of {name!r} ({rec.pool} -> "
                f"{records.root_pool(devs)}) is not supported",
                hint="copy or export/import the container to another pool")
        networks = NetworkEngine(host)
        networks.check_addresses({name: devs})
        # the root disk's size is a quota: set now (live), refused below the usage
        volumes.resize(host, volumes.size_changes(host, {name: (old_devs, devs)}))
        with Reverter() as r:
            with host.store.transaction():
                host.store.update_container(new)
            r.add(lambda: _put_back(host, rec), f"restore the definition of {name}")
            networks.sync()  # nic records follow the devices (a running nic: at restart)
            pending = apply_live(host, name, old_cfg, old_devs)  # a disk that fails undoes all
            r.success()
        return pending


def _put_back(host: Host, rec: ContainerRecord) -> None:
    with host.store.transaction():
        host.store.update_container(rec)
    NetworkEngine(host).sync()


def _replaced(rec: ContainerRecord, config: Mapping[str, str] | None, devices: Devices | None,
              profiles: Sequence[str] | None, description: str | None) -> ContainerRecord:
    new = ContainerRecord(**{**rec.__dict__})
    cfg, devs = records.stringify(config, devices)
    if config is not None:
        new.config = cfg
    if devices is not None:
        new.devices = devs
    if profiles is not None:
        new.profiles = list(profiles)
    if description is not None:
        new.description = description
    return new


def apply_live(host: Host, name: str, old_cfg: Mapping[str, str],
               old_devs: Devices | None = None) -> list[str]:
    """Push changed live keys and disks into a running container; return keys needing a
    restart."""
    ex = records.read(host, name)
    init = records.init_record(ex.record)
    if init is None or host.runtime_for(init).status(init).state == STOPPED:
        return []
    new_n, old_n = mkeys.normalize_config(ex.config), mkeys.normalize_config(old_cfg)
    changed = {k for k in set(new_n) | set(old_n) if new_n.get(k) != old_n.get(k)}
    pending = sorted(k for k in changed if not mkeys.is_live(k))
    devs = ex.devices
    rt = host.runtime_for(init)
    hotplug = rt.info.live_mounts  # else a disk waits for the restart, as others
    if old_devs is not None and devs != old_devs:
        pending += [f"devices.{d}" for d in sorted(set(devs) | set(old_devs))
                    if devs.get(d) != old_devs.get(d)
                    and not (mkeys.device_change_is_live(old_devs.get(d), devs.get(d))
                             and (hotplug or not _bind_disk_change(old_devs.get(d), devs.get(d))))]
        if hotplug:
            disks.apply_live(host, name, init, old_devs, devs, not idmap.is_privileged(ex.config))
    if any(k.startswith("limits.") for k in changed):
        rt.set_limits(records.cgroup_path(host, name), runspec.limits(ex.config))
    records.need_restart(host, name, pending)
    return pending


def _bind_disk_change(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> bool:
    return any(d is not None and mkeys.is_bind_disk(d) for d in (old, new))


def set_config(host: Host, name: str, values: Mapping[str, str], unset: Sequence[str] = ()
               ) -> list[str]:
    """Set and unset local config keys (``sysmgr config set/unset``)."""
    rec = host.store.container(name)
    cfg = dict(rec.config)
    for k in unset:
        if k not in cfg:
            raise NotFound(f"config key {k!r} is not set on {name!r}")
        del cfg[k]
    cfg.update({k: mkeys.value_to_str(v) for k, v in values.items()})
    return update_container(host, name, config=cfg)
