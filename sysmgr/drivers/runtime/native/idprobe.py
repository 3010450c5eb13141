"""Can this filesystem be idmapped? Asked of the kernel, not guessed from a name.

An unprivileged container's root filesystem is attached through an idmapped mount
(:func:`.userns.stage`). Whether a filesystem allows that depends on the filesystem and the
kernel (ext4, btrfs, xfs: yes; tmpfs only from Linux 6.3; ramfs, NFS, most FUSE: no), so the
probe does what a start would: ``open_tree(OPEN_TREE_CLONE)`` of the path, then
``mount_setattr(MOUNT_ATTR_IDMAP)`` with a throwaway user namespace, and closes both. The clone
is never attached anywhere: closing its fd frees it, and no mount is left behind.

The answer is a property of the filesystem, so it is kept per filesystem (``st_dev``, with the
mount's unique id: anonymous device numbers of ramfs or tmpfs are reused once one is
unmounted) for the life of the process: a start costs a ``stat`` and a ``statx`` once a
filesystem has been asked.

Layer: runtime driver.
"""

from __future__ import annotations

import errno
import os
import threading

from sysmgr._util import linux
from sysmgr.drivers.runtime.native import userns
from sysmgr.errors import DriverError

#: errors that mean "this filesystem (or kernel) has no idmapped mounts"
_CANNOT = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM})
#: any map will do: the namespace only has to exist and have one
_PROBE_MAP = ((0, 65534, 1),)

_lock = threading.Lock()
_known: dict[tuple[int, int], bool] = {}


def can_idmap(path: str) -> bool:
    """Whether the filesystem holding ``path`` (which must exist) can be idmapped."""
    key = _filesystem(path)
    with _lock:
        if key not in _known:
            _known[key] = _probe(path)
        return _known[key]


def _filesystem(path: str) -> tuple[int, int]:
    """``(st_dev, mount id)`` of ``path``."""
    try:
        return os.stat(path).st_dev, linux.mount_id(path)
    except OSError as e:
        raise DriverError(f"cannot probe {path} for idmapped mounts: {e.strerror}") from e


def _probe(path: str) -> bool:
    try:
        tree = linux.open_tree(path)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EINVAL):
            return False  # a kernel without the new mount API
        raise DriverError(f"cannot probe {path} for idmapped mounts: {e.strerror}") from e
    try:
        ns_fd = userns.make_userns(_PROBE_MAP, _PROBE_MAP)
        try:
            linux.mount_setattr_idmap(tree, ns_fd)
        except OSError as e:
            if e.errno in _CANNOT:
                return False
            raise DriverError(f"cannot probe {path} for idmapped mounts: {e.strerror}") from e
        finally:
            os.close(ns_fd)
        return True
    finally:
        os.close(tree)


def forget() -> None:
    """Drop every answer (tests that mount and unmount filesystems in one process)."""
    with _lock:
        _known.clear()
