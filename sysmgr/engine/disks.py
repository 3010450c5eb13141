"""Disk devices with a source: host files and directories, and custom volumes, bound into
containers (LXD's ``disk`` devices other than the root disk).

- :func:`mounts`: what a start mounts, from the expanded devices, in LXD's order (shorter
  container paths first): each source resolved (a custom volume is its directory on its
  pool), checked (a missing one fails the start, or with ``required=false`` is skipped
  with a warning), idmapped where asked (``shift=true``; a custom volume always, for an
  unprivileged container: its files keep container ids on disk, as a root filesystem's do).
- :func:`issues`: what can be said when the device is written (``shift`` on a filesystem
  that cannot be idmapped, a custom volume that does not exist).
- :func:`apply_live`: a running container's disks follow a change at once (the runtime's
  ``info.live_mounts``): what went or changed is unmounted, what came or changed is mounted;
  on a failure the ones done are undone.

Layer: engine.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

from sysmgr.drivers.runtime.base import DiskMount, InitRecord
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import Conflict, Issue, NotFound
from sysmgr.model import keys as mkeys

Devices = Mapping[str, Mapping[str, str]]
Warn = Callable[[str], None]


def _flag(dev: Mapping[str, str], key: str) -> bool:
    return mkeys.parse_bool(dev.get(key) or mkeys.DEVICE_TYPES["disk"][key].default or "false")


def is_volume(dev: Mapping[str, str]) -> bool:
    """A custom volume (``pool`` + ``source``), not a host path."""
    return bool(dev.get("pool")) and mkeys.is_bind_disk(dev)


def source_path(host: Host, dev: Mapping[str, str]) -> str:
    """The host path a bind disk mounts: its ``source``, or its custom volume's directory."""
    if is_volume(dev):
        return host.pool_driver(dev["pool"]).custom_volumes().container_path(dev["source"])
    return mkeys.normalize_path(dev["source"])


def disk_mount(host: Host, dev: Mapping[str, str], unprivileged: bool) -> DiskMount:
    """The runtime's view of one bind disk (``unprivileged``: the container has an id map)."""
    shift = unprivileged and (_flag(dev, "shift") or is_volume(dev))
    return DiskMount(source=source_path(host, dev), path=mkeys.normalize_path(dev["path"]),
                     readonly=_flag(dev, "readonly"), shift=shift,
                     recursive=_flag(dev, "recursive"),
                     propagation=(dev.get("propagation") or "private").strip().lower())


def _check(host: Host, name: str, dname: str, dev: Mapping[str, str], d: DiskMount,
           warn: Warn | None) -> bool:
    """Whether disk ``dname`` of container ``name`` can be mounted: a missing source is
    an error, or (``required=false``) a warning and False; a source to idmap on a
    filesystem that cannot be idmapped is an error."""
    what = f"container {name}: disk device {dname!r}"
    if not os.path.exists(d.source):
        src = f"storage volume {dev['pool']}/{dev['source']}" if is_volume(dev) else d.source
        if _flag(dev, "required"):
            raise NotFound(f"{what}: its source {src} does not exist",
                           hint=f"create it, or set required=false on the device to start "
                                f"without it: sysmgr config device set {name} {dname} "
                                "required=false")
        if warn is not None:
            warn(f"{what}: its source {src} does not exist; not mounted (required=false)")
        return False
    if d.shift and not host.runtime.can_idmap(d.source):
        if is_volume(dev):
            raise Conflict(f"{what}: storage volume {dev['pool']}/{dev['source']} is on a "
                           "filesystem that cannot be idmapped",
                           hint="use a volume of a pool on ext4, btrfs or xfs, or set "
                                "security.privileged=true")
        raise Conflict(f"{what}: {d.source} is on a filesystem that cannot be idmapped "
                       "(shift), and sysmgr never shifts host paths",
                       hint="unset shift (its files then show as nobody inside), set "
                            "security.privileged=true, or use a source on ext4, btrfs or xfs")
    return True


def mounts(host: Host, name: str, devices: Devices, unprivileged: bool,
           warn: Warn | None = None) -> tuple[DiskMount, ...]:
    """The disks a start of container ``name`` mounts, in order (see the module doc)."""
    out = []
    for dname in mkeys.disk_order(devices):
        dev = devices[dname]
        d = disk_mount(host, dev, unprivileged)
        if _check(host, name, dname, dev, d, warn):
            out.append(d)
    return tuple(out)


def issues(host: Host, devices: Devices, *, privileged: bool, who: str = "") -> list[Issue]:
    """What is wrong with the bind disks of a container's expanded devices on this host,
    said when they are written: ``shift`` on a filesystem that cannot be idmapped (an
    existing source; a missing one is checked at start). A privileged container has no
    user namespace to idmap into: its ``shift`` does nothing (as in LXD)."""
    if privileged or not host.runtime.info.user_namespaces:
        return []
    out = []
    for dname, dev in sorted(devices.items()):
        if not mkeys.is_bind_disk(dev) or is_volume(dev) or not _flag(dev, "shift"):
            continue
        src = mkeys.normalize_path(dev["source"])
        if os.path.exists(src) and not host.runtime.can_idmap(src):
            out.append(Issue(f"{who + ': ' if who else ''}shift: {src} is on a filesystem that "
                             "cannot be idmapped (ext4, btrfs and xfs can be; tmpfs from "
                             "Linux 6.3)", path=f"devices.{dname}.shift"))
    return out


def changes(old: Devices, new: Devices) -> tuple[list[str], list[str]]:
    """``(gone, came)``: the bind disks to unmount (removed or changed; deepest first) and
    to mount (added or changed; LXD's order) when a container's devices go from ``old`` to
    ``new``."""
    o = mkeys.normalize_devices({k: v for k, v in old.items() if mkeys.is_bind_disk(v)})
    n = mkeys.normalize_devices({k: v for k, v in new.items() if mkeys.is_bind_disk(v)})
    gone = [d for d in reversed(mkeys.disk_order(old)) if d in o and o[d] != n.get(d)]
    came = [d for d in mkeys.disk_order(new) if d in n and n[d] != o.get(d)]
    return gone, came


def check_live(host: Host, name: str, old: Devices, new: Devices, unprivileged: bool) -> None:
    """Raise what :func:`apply_live` would about the disks that come (a missing source,
    a filesystem that cannot be idmapped), before anything is changed."""
    for dname in changes(old, new)[1]:
        _check(host, name, dname, new[dname], disk_mount(host, new[dname], unprivileged), None)


def apply_live(host: Host, name: str, init: InitRecord, old: Devices, new: Devices,
               unprivileged: bool, warn: Warn | None = None) -> None:
    """Make the running container ``name`` (init ``init``) mount ``new``'s bind disks
    instead of ``old``'s: unmount what went or changed, then mount what came or changed;
    on a failure, what was done is undone and the error raised."""
    gone, came = changes(old, new)
    rt = host.runtime_for(init)
    with Reverter() as r:
        for dname in gone:
            path = mkeys.normalize_path(old[dname]["path"])
            rt.unmount_disk(init, path)
            prev = disk_mount(host, old[dname], unprivileged)
            r.add(lambda d=prev: _remount(host, init, d), f"mount {prev.path} again")
        for dname in came:
            d = disk_mount(host, new[dname], unprivileged)
            if not _check(host, name, dname, new[dname], d, warn):
                continue
            rt.mount_disk(init, d)
            r.add(lambda p=d.path: rt.unmount_disk(init, p), f"unmount {d.path}")
        r.success()


def _remount(host: Host, init: InitRecord, d: DiskMount) -> None:
    if os.path.exists(d.source):
        host.runtime_for(init).mount_disk(init, d)

