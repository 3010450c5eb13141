"""Disks into and out of a running container (LXD's hotplug), for the native runtime.

P forks a helper H per operation (:func:`.helper.in_helper`: non-dumpable, as a copy of the
host's interpreter about to enter the container's mount namespace must be); a failure comes
back as the helper's exception, and a helper stuck for :data:`TIMEOUT` seconds is killed.

Mount, unprivileged container (the same path as a start, :mod:`.binds`)::

    H   open_tree(source) in the host's namespace, unshare(mnt) into a private M1,
        attributes on the tree (read-only, propagation, idmap via init's user namespace),
        park it under a tmpfs in M1, join init's user namespace as its root,
        unshare(mnt) into M3 (owned by the container's root: the kernel locks the parked
        copy there), open_tree(parked) -> the locked tree, setns(init's mnt),
        make the mount point inside (safefs, by fd), move_mount onto it

A privileged container's root could undo any lock: H sets the attributes and moves the tree
in directly. Unmount: H joins init's mount namespace, opens the parent directory inside the
container's root (symlinks resolved within it) and unmounts the entry there, never following
a last symlink; nothing mounted there is success.

Layer: runtime driver.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from sysmgr._util import linux, safefs
from sysmgr.drivers.runtime.native import binds, helper, userns
from sysmgr.drivers.runtime.native.plan import Mount
from sysmgr.errors import DriverError, SysmgrError

TIMEOUT = 30.0  # a mount or unmount that takes longer is stuck (a hung NFS source...)


def mount(pid: int, disk: Mount, what: str) -> None:
    """Mount ``disk`` (a bind: source, target, flags, propagation, idmap) into the running
    container whose init is host pid ``pid``; ``what`` starts every error message."""
    _run(lambda: _mount(pid, disk), what)


def unmount(pid: int, path: str, what: str) -> None:
    """Unmount what is mounted on ``path`` in the container whose init is ``pid``."""
    _run(lambda: _unmount(pid, path), what)


def _run(body: Callable[[], None], what: str) -> None:
    """Run ``body`` in a forked, non-dumpable helper; DriverError with its reason."""
    try:
        helper.in_helper(body, what="the mount helper", timeout=TIMEOUT)
    except (OSError, SysmgrError) as e:
        raise DriverError(f"{what}: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    if isinstance(e, SysmgrError):
        return e.message
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f" ({e.filename})" if e.filename else "")
    return str(e)


def _mount(pid: int, disk: Mount) -> None:
    user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    mnt_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    tree = binds.open_tree(disk.source, disk.flags)
    if userns.own_userns(pid):
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        binds.set_attrs(tree, disk.flags, disk.propagation, user_fd if disk.idmap else None)
        linux.mount("tmpfs", userns.STAGE_PARENT, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0755,size=64k")
        parked = binds.park(tree, userns.BINDS, 0)
        os.close(tree)
        userns.become_root(user_fd)
        linux.unshare(linux.CLONE_NEWNS)  # owned by the container's root: the copy is locked
        tree = binds.open_tree(parked, disk.flags)
    else:
        binds.set_attrs(tree, disk.flags, disk.propagation, None)
    linux.setns(mnt_fd, linux.CLONE_NEWNS)
    binds.attach("/", disk.target, tree)


def _unmount(pid: int, path: str) -> None:
    mnt_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    linux.setns(mnt_fd, linux.CLONE_NEWNS)
    parent, base = os.path.split(os.path.normpath("/" + path.lstrip("/")))
    try:
        pfd = safefs.open_path("/", parent, os.O_PATH | os.O_DIRECTORY)
    except SysmgrError:
        return  # its directory is gone: nothing can be mounted there
    os.fchdir(pfd)
    try:
        linux.umount2(base, linux.MNT_DETACH | linux.UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise
