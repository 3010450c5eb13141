"""What the btrfs driver needs from the host, and how it reports a failed host call.

The ``btrfsutil`` binding (imported on first use, so importing the driver needs nothing), the
btrfs-progs tools, the ``statfs`` check that a ``source`` directory is on btrfs, and the one
error shape the driver's modules share (:func:`pool_error`).

Layer: drivers (storage).
"""

from __future__ import annotations

import ctypes
import os
from types import ModuleType

from sysmgr._util import proc
from sysmgr.errors import DriverError, DriverUnavailable, ValidationError

BTRFS_SUPER_MAGIC = 0x9123683E

_BTRFSUTIL_HINT = ("apt-get install libbtrfsutil-dev && pip install 'btrfsutil<6.14' "
                   "(newer releases need a newer libbtrfsutil than Debian 12 has)")
_PROGS_HINT = "apt-get install btrfs-progs"


def btrfsutil() -> ModuleType:
    """The btrfsutil binding, imported on first use (a missing one is a host problem)."""
    try:
        # local import: an optional C binding, needed only once a btrfs pool is used
        import btrfsutil  # type: ignore[import-not-found]
    except ImportError as e:  # not installed, or built against a newer libbtrfsutil
        raise DriverUnavailable(f"the btrfs storage driver needs the btrfsutil Python binding: {e}",
                                hint=_BTRFSUTIL_HINT) from e
    return btrfsutil


def need(prog: str) -> None:
    """DriverUnavailable unless the btrfs-progs tool ``prog`` is on the PATH."""
    if proc.which(prog) is None:
        raise DriverUnavailable(f"the btrfs storage driver needs {prog} (btrfs-progs)", hint=_PROGS_HINT)


def pool_error(pool: str, what: str, e: OSError) -> DriverError:
    """``storage pool P: cannot WHAT: REASON`` for a failed host call (raise it ``from e``)."""
    return DriverError(f"storage pool {pool}: cannot {what}: {e.strerror or e}")


class _Statfs(ctypes.Structure):
    # only the leading field matters; the buffer is sized for the whole struct statfs
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL(None, use_errno=True)


def fs_type(path: str) -> int:
    """``statfs(path).f_type`` (the filesystem's magic number)."""
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.f_type & 0xFFFFFFFF


def check_btrfs_dir(pool: str, path: str) -> None:
    """ValidationError unless ``path`` is an existing directory on a btrfs filesystem."""
    try:
        magic = fs_type(path)
    except FileNotFoundError:
        raise ValidationError(f"storage pool {pool}: source {path} does not exist",
                              hint="create it on a btrfs filesystem, or set size: to use a loop file"
                              ) from None
    except OSError as e:
        raise ValidationError(f"storage pool {pool}: cannot check source {path}: {e.strerror}") from e
    if magic != BTRFS_SUPER_MAGIC:
        raise ValidationError(f"storage pool {pool}: source {path} is not on a btrfs filesystem",
                              hint="point source at a btrfs directory, or set size: to have "
                                   "sysmgr create a btrfs loop file")
    if not os.path.isdir(path):
        raise ValidationError(f"storage pool {pool}: source {path} is not a directory")
