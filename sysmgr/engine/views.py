"""Containers as the API shows them: the record, its expansion, kernel status, usage, nics.

Read-only. A listing reads the state once (the containers, every profile, every image),
then each container's kernel status (and usage) once; networking is loaded only for
containers that have nics, and one listing reads each network's leases once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

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

    @property
    def name(self) -> str:
        return self.record.name


def view(host: Host, name: str, *, usage: bool = False) -> ContainerView:
    return _view(host, host.store.container(name), usage=usage)


def views(host: Host, *, usage: bool = False) -> list[ContainerView]:
    st = host.store
    recs = st.containers()
    profiles = {p.name: p for p in st.profiles()}
    images = {i.fingerprint: i for i in st.images()}
    disks = disk_usages(host, recs) if usage else None
    cache: dict[str, Any] = {}  # one read of each network's leases for the whole list
    return [_view(host, r, usage=usage, cache=cache, profiles=profiles, images=images,
                  disks=disks) for r in recs]


def _view(host: Host, rec: ContainerRecord, *, usage: bool = False,
          cache: dict[str, Any] | None = None, profiles: Mapping[str, ProfileRecord] | None = None,
          images: Mapping[str, ImageRecord] | None = None,
          disks: Mapping[str, int | None] | None = None) -> ContainerView:
    """``profiles``, ``images``, ``disks`` (root volume usage): read once for a whole
    listing (else each is read here)."""
    cfg, devs = records.expanded(host, rec, override=profiles)
    status = records.status(host, rec)
    img = images.get(rec.image) if images is not None else _image(host, rec.image)
    use = None
    disk = None
    if usage:
        if status.state != STOPPED:
            use = host.runtime.usage(records.cgroup_path(host, rec.name))
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
    for key in ("last_migration", "migration"):  # the last move, and one under way
        if isinstance(rec.volatile.get(key), dict):
            extra[key] = dict(rec.volatile[key])
    return ContainerView(rec, cfg, devs, status, img, use, extra, disk)


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
    by_pool: dict[str, list[str]] = {}
    for rec in recs:
        by_pool.setdefault(rec.pool, []).append(rec.name)
    found: dict[str, int | None] = {}
    for pool, names in by_pool.items():
        try:
            found.update(host.pool_driver(pool).containers_usage(names))
        except SysmgrError:
            pass  # usage is informational: a pool that cannot say leaves it unknown
    return found


def _views(rec: ContainerRecord) -> str:
    """Whose memory, CPUs and uptime a running container's /proc shows."""
    from sysmgr.engine import lxcfs  # only for running containers

    if rec.volatile.get(lxcfs.VOLATILE) is not None:
        return "its own (lxcfs)"
    return f"the host's ({'lxcfs was not running at its start' if lxcfs.state().installed else 'lxcfs is not installed'})"
