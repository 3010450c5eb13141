"""Quotas of a btrfs pool: qgroup limits and usage counters.

A container's disk limit is the ``max_referenced`` limit of its subvolume's level-0 qgroup,
set with the ``BTRFS_IOC_QGROUP_LIMIT`` ioctl; its usage is that qgroup's ``referenced``
counter, read from sysfs (``/sys/fs/btrfs/<fsid>/qgroups``). Quotas are enabled on a pool's
filesystem by its first limit, never just to read or clear one.

Layer: drivers (storage).
"""

from __future__ import annotations

import fcntl
import os
import struct
import uuid

from sysmgr._util import proc
from sysmgr.drivers.storage.btrfs.host import btrfsutil, pool_error
from sysmgr.errors import CommandFailed, DriverError

_IOC_FS_INFO = 0x8400941F              # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args[1024])
_IOC_QGROUP_LIMIT = 0x8030942B         # _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
_IOC_QUOTA_RESCAN_STATUS = 0x8040942D  # _IOR(0x94, 45, struct btrfs_ioctl_quota_rescan_args)
_QGROUP_LIMIT_MAX_RFER = 1
_QGROUP_CLEAR = 2**64 - 1              # "no limit" for a field of BTRFS_IOC_QGROUP_LIMIT


def _dir_ioctl(path: str, request: int, arg: bytes | bytearray) -> None:
    """``ioctl(request, arg)`` on the directory ``path`` (a bytearray ``arg`` is filled in)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, arg)
    finally:
        os.close(fd)


def set_limit(path: str, size_bytes: int | None) -> None:
    """BTRFS_IOC_QGROUP_LIMIT on the subvolume (qgroupid 0 = the subvolume's own qgroup);
    None removes the limit. Raises OSError."""
    value = _QGROUP_CLEAR if size_bytes is None else size_bytes
    _dir_ioctl(path, _IOC_QGROUP_LIMIT, struct.pack("=Q5Q", 0, _QGROUP_LIMIT_MAX_RFER, value, 0, 0, 0))


class Qgroups:
    """The qgroups of the filesystem holding one pool (mounted at or containing ``path``).

    Constructed without I/O; the filesystem id is read on first use and kept.
    """

    def __init__(self, pool: str, path: str) -> None:
        self.pool = pool
        self.path = path
        self._fsid: str | None = None

    def sysfs_dir(self) -> str | None:
        """``/sys/fs/btrfs/<fsid>/qgroups`` when quotas are enabled on the filesystem."""
        if self._fsid is None:
            buf = bytearray(1024)
            try:
                _dir_ioctl(self.path, _IOC_FS_INFO, buf)
            except OSError as e:
                raise pool_error(self.pool, "read the filesystem id", e) from e
            self._fsid = str(uuid.UUID(bytes=bytes(buf[16:32])))
        q = f"/sys/fs/btrfs/{self._fsid}/qgroups"
        try:
            with open(os.path.join(q, "enabled")) as f:
                return q if f.read().strip() == "1" else None
        except OSError:
            return None

    def rescan_running(self) -> bool:
        buf = bytearray(64)
        try:
            _dir_ioctl(self.path, _IOC_QUOTA_RESCAN_STATUS, buf)
        except OSError:
            return False
        return struct.unpack_from("=Q", buf)[0] != 0

    def value(self, subvolume: str, field: str) -> int | None:
        """A counter of the subvolume's level-0 qgroup, or None when quotas are off or the
        numbers are not trustworthy yet (a rescan after enabling is still running)."""
        q = self.sysfs_dir()
        if q is None:
            return None
        bu = btrfsutil()
        try:
            subvol = bu.subvolume_id(subvolume)
            if field in ("referenced", "exclusive"):
                with open(os.path.join(q, "inconsistent")) as f:
                    if f.read().strip() != "0" or self.rescan_running():
                        return None
                bu.sync(self.path)  # counters are updated at transaction commit
            with open(os.path.join(q, f"0_{subvol}", field)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def enable(self) -> None:
        """Turn quotas on for the filesystem (DriverError when btrfs refuses)."""
        try:
            # enabling starts the kernel's one-off accounting scan; sysmgr never runs
            # "btrfs quota rescan" itself (canonical/lxd#7029)
            proc.run(["btrfs", "quota", "enable", self.path])
        except CommandFailed as e:
            raise DriverError(f"storage pool {self.pool}: cannot enable quotas: "
                              f"{e.stderr.strip() or e}") from e
