"""Containers as the API shows them: the record, its expansion, kernel status, usage, nics.

Read-only. A listing reads the state once (the containers, every profile, every image),
then each container's kernel status (and usage) once; networking is loaded only for
containers that have nics, and one listing reads each network's leases once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sysmgr.drivers.runtime.base import STOPPED, Status, Usage
from sysmgr.engine import idmap, records
from sysmgr.engine.host import Host
from sysmgr.errors import NotFound, SysmgrError
from sysmgr.state.db import ContainerRecord, ImageRecord, ProfileRecord


@dataclass
class ContainerView:
    """A container as the API shows it: the record, its expansion and its kernel status."""

    record: ContainerRecord
    expanded_config: dict[str, str]
    expanded_devices: dict[str, dict[str, str]]
    status: Status
    image: ImageRecord | None = None
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    disk_bytes: int | None = None    # root volume usage, with ``usage=True``
    # with ``counters=True`` while it runs: each nic's counters as the container sees them
    # ({"eth0": {"receive_bytes": ..., "transmit_packets": ...}}), and its root filesystem
    # ({"size", "free", "avail" (bytes), "fstype", "device", "mountpoint"})
    network: dict[str, dict[str, int]] = field(default_factory=dict)
    filesystem: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name


def view(host: Host, name: str, *, usage: bool = False, counters: bool = False
         ) -> ContainerView:
    """``usage``: with the cgroup's figures and the root volume's usage; ``counters``: also
    each nic's traffic counters and the root filesystem's size (``top``, ``metrics``)."""
    return _view(host, host.store.container(name), usage=usage or counters, counters=counters)


def views(host: Host, *, usage: bool = False, counters: bool = False) -> list[ContainerView]:
    """Every container's :func:`view`, the state read once."""
    usage = usage or counters
    st = host.store
    recs = st.containers()
    profiles = {p.name: p for p in st.profiles()}
    images = {i.fingerprint: i for i in st.images()}
    if counters or not usage:  # (top and metrics: the filesystem figures need it first)
        disks = disk_usages(host, recs) if usage else None
        pending = None
    else:  # measured while the rest is read (a dir pool's du of a hundred volumes: ~60 ms)
        pending, disks = disk_usages_begin(host, recs), {}
    cache: dict[str, Any] = {}  # one read of each network's leases for the whole list
    out = [_view(host, r, usage=usage, cache=cache, profiles=profiles, images=images,
                 disks=disks, counters=counters) for r in recs]
    if pending is not None:
        sizes = pending()
        for v in out:
            v.disk_bytes = sizes.get(v.name)
    return out


def _view(host: Host, rec: ContainerRecord, *, usage: bool = False,
          cache: dict[str, Any] | None = None, profiles: Mapping[str, ProfileRecord] | None = None,
          images: Mapping[str, ImageRecord] | None = None,
          disks: Mapping[str, int | None] | None = None, counters: bool = False
          ) -> ContainerView:
    """``profiles``, ``images``, ``disks`` (root volume usage): read once for a whole
    listing (else each is read here)."""
    cfg, devs = records.expanded(host, rec, override=profiles)
    status = records.status(host, rec)
    img = images.get(rec.image) if images is not None else _image(host, rec.image)
    use = None
    disk = None
    if usage:
        if status.state != STOPPED:
            use = usage_of(host, rec.name, detail=counters)
        disk = disks.get(rec.name) if disks is not None else disk_usage(host, rec)
    # nics and their IPv4 addresses (``list``'s IPV4 column, ``info``'s host interfaces)
    extra: dict[str, Any] = {}
    if records.has_nics(devs):
        from sysmgr.engine.nics import NicEngine  # networking (~15 ms): only containers with nics

        extra = NicEngine(host).view(rec, devs, status.pid if status.state != STOPPED else None,
                                     cache)
    extra["security"] = idmap.describe(cfg, rec.volatile)
    if status.state != STOPPED:
        extra["resource_views"] = _views(rec)
        # the engine its init runs under (a changed runtime.engine waits for the restart)
        extra["engine"] = str(rec.volatile.get(records.ENGINE) or host.runtime.name)
    for key in ("last_migration", "migration"):  # the last move, and one under way
        if isinstance(rec.volatile.get(key), dict):
            extra[key] = dict(rec.volatile[key])
    out = ContainerView(rec, cfg, devs, status, img, use, extra, disk)
    if use is not None and counters:
        out.network = nic_counters(host, extra.get("nics") or {}, cache)
        out.filesystem = filesystem(host, rec, devs, disk)
    return out


def usage_of(host: Host, name: str, *, detail: bool = False) -> Usage:
    """The cgroup's figures (``detail``: the runtime's); a container without a memory limit
    may use the host's memory."""
    # every engine's cgroup is at the same path, in sysmgr's layout: read as sysmgr reads it
    use = host.runtime.usage(records.cgroup_path(host, name), detail=detail)
    if detail and use.memory_limit_bytes is None and use.memory_bytes is not None:
        from sysmgr._util import hostinfo  # usage only (the hot listings skip it)

        use = dataclasses.replace(use, memory_limit_bytes=hostinfo.memory_total())
    return use


def nic_counters(host: Host, nics: Mapping[str, Mapping[str, Any]],
                 cache: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """Each nic's traffic counters by its name inside, as the container sees them (read on
    the veths' host ends: one netlink dump for a whole listing, kept in ``cache``)."""
    if not nics:
        return {}
    cache = {} if cache is None else cache
    if "traffic" not in cache:
        from sysmgr.engine.nics import NicEngine  # networking: containers with nics only

        try:
            cache["traffic"] = NicEngine(host).driver.traffic()
        except SysmgrError:
            cache["traffic"] = {}  # counters are informational: never fail a listing
    from sysmgr.drivers.network.base import inside_counters

    out: dict[str, dict[str, int]] = {}
    for dname, nic in nics.items():
        found = cache["traffic"].get(nic.get("host_name") or "")
        if found is not None:
            out[str(nic.get("name") or dname)] = inside_counters(found)
    return out


def filesystem(host: Host, rec: ContainerRecord, devs: Mapping[str, Mapping[str, str]],
               used: int | None) -> dict[str, Any]:
    """The root filesystem's size and free space (LXD's root metrics): the quota less the
    volume's usage when the root disk has a size, else the pool's filesystem's."""
    try:
        driver = host.pool_driver(rec.pool)
        st = os.statvfs(driver.container_path(rec.name))
    except (SysmgrError, OSError):
        return {}
    size, free, avail = (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize,
                         st.f_bavail * st.f_frsize)
    from sysmgr.model import keys as mkeys  # usage only (the model's key tables)

    quota = mkeys.root_disk_size(devs)
    if quota and used is not None:
        size = quota
        free = avail = max(0, min(avail, quota - used))
    return {"device": "root", "mountpoint": "/", "fstype": driver.name, "size": size,
            "free": free, "avail": avail}


def _image(host: Host, fingerprint: str) -> ImageRecord | None:
    try:
        return host.store.image(fingerprint)
    except NotFound:
        return None  # deleted since: the container keeps its own root filesystem


def disk_usage(host: Host, rec: ContainerRecord) -> int | None:
    """Bytes used by the root volume (qgroup counters on btrfs, a walk elsewhere); None
    when the pool cannot say (usage is informational: it never fails a listing)."""
    try:
        return host.pool_driver(rec.pool).container_usage(rec.name)
    except SysmgrError:
        return None


def disk_usages(host: Host, recs: list[ContainerRecord]) -> dict[str, int | None]:
    """:func:`disk_usage` of every container of a listing, each pool asked once (a dir
    pool walks them all in one pass)."""
    return disk_usages_begin(host, recs)()


def disk_usages_begin(host: Host, recs: list[ContainerRecord]
                      ) -> Callable[[], dict[str, int | None]]:
    """:func:`disk_usages` begun now (every pool's ``du`` started); the call returned
    collects them."""
    by_pool: dict[str, list[str]] = {}
    for rec in recs:
        by_pool.setdefault(rec.pool, []).append(rec.name)
    begun = []
    for pool, names in by_pool.items():
        try:
            begun.append(host.pool_driver(pool).containers_usage_begin(names))
        except SysmgrError:
            pass  # usage is informational: a pool that cannot say leaves it unknown

    def collect() -> dict[str, int | None]:
        found: dict[str, int | None] = {}
        for finish in begun:
            try:
                found.update(finish())
            except SysmgrError:
                pass
        return found

    return collect


def _views(rec: ContainerRecord) -> str:
    """Whose memory, CPUs and uptime a running container's /proc shows."""
    from sysmgr.engine import lxcfs  # only for running containers

    if rec.volatile.get(lxcfs.VOLATILE) is not None:
        return "its own (lxcfs)"
    return f"the host's ({'lxcfs was not running at its start' if lxcfs.state().installed else 'lxcfs is not installed'})"
