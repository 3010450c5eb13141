"""Storage helpers shared by the engine's storage operations.

* the default pool driver for ``init`` (btrfs when the host can run it, else dir);
* root disk ``size``: refused on pools that cannot enforce it, refused below the current
  usage, applied with the pool's ``set_quota`` at create time and on every change (live);
* filling a volume from another pool's tree (an empty volume made through a temporary
  empty image: the pool interface has no "empty volume" call, and this works on every
  driver);
* translation of "No space left on device" into a clear "pool is full" error.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import Iterator, Mapping, Protocol, Sequence

from sysmgr._util import proc
from sysmgr._util.sizes import format_size
from sysmgr.drivers import registry
from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    CommandFailed, DriverError, DriverUnavailable, Issue, SysmgrError, ValidationError)
from sysmgr.model import keys as mkeys



class Notes(Protocol):
    """Where an operation notes what it creates on the way (a journal intent)."""

    def add(self, key: str, value: str) -> None: ...

Devices = Mapping[str, Mapping[str, str]]
DRIVER_ENV = "SYSMGR_STORAGE_DRIVER"


def default_driver() -> tuple[str, str]:
    """``(driver, why)`` for the default pool: ``$SYSMGR_STORAGE_DRIVER`` when set, else
    btrfs when its tools and binding are present, else dir."""
    forced = os.environ.get(DRIVER_ENV)
    if forced:
        return forced, f"from ${DRIVER_ENV}"
    try:
        registry.load("storage", "btrfs").check_host()
    except DriverUnavailable as e:
        return "dir", f"btrfs is not usable here: {e.message}" + (f" ({e.hint})" if e.hint else "")
    return "btrfs", "loop-backed; constant-time copies and snapshots, quotas"


def mount_all(host: Host) -> list[str]:
    """Mount every pool (after a host restart); return the names of pools that failed."""
    failed = []
    for rec in host.store.pools():
        try:
            host.pool_driver(rec.name).mount()
        except SysmgrError:
            failed.append(rec.name)
    return failed


# -- root disk size ---------------------------------------------------------------------------

def size_issues(host: Host, devices: Devices, who: str = "") -> list[Issue]:
    """Problems with the root disk's ``size`` of an expanded devices map: the pool cannot
    enforce it (no ``info.quotas``)."""
    size = mkeys.root_disk_size(devices)
    pool = mkeys.root_disk_pool(devices)
    if size is None or not pool or not host.store.has_pool(pool):
        return []
    drv = host.pool_driver(pool)
    if drv.info.quotas:
        return []
    where = f"{who}: " if who else ""
    return [Issue(f"{where}storage pool {pool!r} (driver {drv.name}) cannot enforce a root disk "
                  "size; remove size or use a pool whose driver has quotas (btrfs)",
                  path="devices.root.size")]


def check_size(host: Host, name: str, pool: str, size: int | None) -> None:
    """Refuse a size below what the container's volume already uses."""
    if size is None:
        return
    try:
        used = host.pool_driver(pool).container_usage(name)
    except SysmgrError:
        return
    if used is not None and size < used:
        raise ValidationError([Issue(
            f"container {name}: size {format_size(size)} is below its current disk usage "
            f"({format_size(used)})", path="devices.root.size")],
            hint="free space inside the container first, or choose a larger size")


def set_size(host: Host, name: str, pool: str, size: int | None) -> None:
    """Apply a root disk size (None removes the limit) to the container's volume."""
    drv = host.pool_driver(pool)
    if size is None and not drv.info.quotas:
        return
    drv.set_quota(name, size)


def resize(host: Host, changes: Sequence[tuple[str, str, int | None, int | None]]) -> None:
    """Apply ``(name, pool, old size, new size)`` changes, all or none: check every one
    first, then set them, undoing the ones done if a later one fails."""
    todo = [c for c in changes if c[2] != c[3]]
    issues: list[Issue] = []
    for name, pool, _old, new in todo:
        if new is not None:
            issues += size_issues(host, {"root": {"type": "disk", "path": "/", "pool": pool,
                                                  "size": str(new)}}, f"container {name}")
    if issues:
        raise ValidationError(issues)
    for name, pool, _old, new in todo:
        check_size(host, name, pool, new)
    with Reverter() as r:
        for name, pool, old, new in todo:
            set_size(host, name, pool, new)
            r.add(lambda n=name, p=pool, o=old: set_size(host, n, p, o), f"restore the size of {name}")
        r.success()


def size_changes(host: Host, names_devs: Mapping[str, tuple[Devices, Devices]]
                 ) -> list[tuple[str, str, int | None, int | None]]:
    """``name -> (old expanded devices, new expanded devices)`` to the size changes."""
    out = []
    for name, (old, new) in names_devs.items():
        o, n = mkeys.root_disk_size(old), mkeys.root_disk_size(new)
        pool = mkeys.root_disk_pool(new)
        if o != n and pool:
            out.append((name, pool, o, n))
    return out


# -- volumes from trees -------------------------------------------------------------------------

def pool_full(e: BaseException, pool: str) -> SysmgrError | None:
    """A clear error when ``e`` says the pool ran out of space (or quota), else None."""
    text = ""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        text = os.strerror(e.errno)
    elif isinstance(e, SysmgrError):
        text = e.message + " " + (e.stderr if isinstance(e, CommandFailed) else "")
    if "No space left on device" in text:
        return DriverError(f"storage pool {pool!r} is full (no space left on device)",
                           hint=f"free space in it or make it bigger ('sysmgr storage info {pool}' "
                                "shows its usage)")
    if "Disk quota exceeded" in text:
        return DriverError(f"the root disk size limit was reached on storage pool {pool!r}",
                           hint="raise devices.root.size")
    return None


@contextlib.contextmanager
def full_is_clear(pool: str) -> Iterator[None]:
    """Re-raise out-of-space errors of the block as :func:`pool_full` errors."""
    try:
        yield
    except (OSError, SysmgrError) as e:
        clear = pool_full(e, pool)
        if clear is None:
            raise
        raise clear from e


def empty_volume(drv: StoragePool, name: str, intent: Notes | None = None) -> str:
    """Create an empty, writable container volume ``name``; return its root path.

    Made from a temporary empty image, deleted again at once (constant time everywhere).
    The intent (if any) learns the temporary image first, so a crash cannot leak it.
    """
    fp = "tmp-" + secrets.token_hex(16)
    if intent is not None:
        intent.add("images", fp)
    with drv.create_image(fp):
        pass
    try:
        return drv.create_container(name, fp)
    finally:
        drv.delete_image(fp)


def copy_tree(src: str, dst: str) -> None:
    """Copy the contents of directory ``src`` into the existing directory ``dst``, keeping
    owners, modes, xattrs, hard links, sparseness (``cp -a``; reflinks where possible)."""
    proc.run(["cp", "-a", "--reflink=auto", "-T", "--", src, dst])
