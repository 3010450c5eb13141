"""The loop file of a btrfs pool: create and format ``pool.img``, mount it, release it.

A pool without an existing btrfs ``source`` lives in a sparse file that sysmgr makes
(``truncate`` + ``mkfs.btrfs``) and loop-mounts; util-linux attaches the loop device with
autoclear, so unmounting detaches it. These functions know nothing of the pool's layout
inside the filesystem (that is :mod:`~sysmgr.drivers.storage.btrfs.pool`'s business).

Layer: drivers (storage).
"""

from __future__ import annotations

import contextlib
import os
import time

from sysmgr._util import proc
from sysmgr._util.safefs import rename_noreplace
from sysmgr.drivers.storage.base import STAGING, temp_name, unescape_mountinfo
from sysmgr.drivers.storage.btrfs.host import pool_error
from sysmgr._util.sizes import format_size
from sysmgr.errors import CommandFailed, Conflict, DriverError

MIN_LOOP_SIZE = 128 * 1024**2          # mkfs.btrfs refuses devices under ~109 MiB
_AUTO_MIN, _AUTO_MAX = 5 * 1024**3, 30 * 1024**3


def _mountinfo_at(path: str) -> tuple[str, str, set[str]] | None:
    """``(fstype, source, per-mount options)`` of the mount whose mount point is exactly
    ``path`` (the top one), or None."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if unescape_mountinfo(fields[4]) == path:
                fstype, source = right.split()[:2]
                found = (fstype, source, set(fields[5].split(",")))  # the last one is on top
    return found


def mount_at(path: str) -> tuple[str, str] | None:
    """``(fstype, source)`` of the mount whose mount point is exactly ``path``, or None."""
    found = _mountinfo_at(path)
    return (found[0], found[1]) if found is not None else None


#: per-mount flags of a loop pool on the host: a setuid binary or a device node inside a
#: volume is inert from the host's side (the container sees its root through its own bind
#: mount, which the runtime makes without them)
HOST_FLAGS = ("nosuid", "nodev")


def _harden(pool: str, mnt: str) -> None:
    """Add :data:`HOST_FLAGS` to the mount at ``mnt`` when it lacks one (a pool mounted by
    an older version): a remount changes only those flags, and containers already running
    keep their own copies of the mount."""
    found = _mountinfo_at(mnt)
    if found is None or found[2].issuperset(HOST_FLAGS):
        return
    try:
        proc.run(["mount", "-o", "remount," + ",".join(HOST_FLAGS), mnt])
    except CommandFailed as e:
        raise DriverError(f"storage pool {pool}: cannot remount {mnt} "
                          f"{','.join(HOST_FLAGS)}: {e.stderr.strip() or e}") from e


def loops_backing(image: str) -> list[str]:
    """Loop devices (``/dev/loopN``) whose backing file is ``image``."""
    image = os.path.realpath(image)
    found: list[str] = []
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return found
    for n in names:
        if not n.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{n}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue  # not attached
        if backing.removesuffix(" (deleted)") == image:
            found.append(f"/dev/{n}")
    return found


def auto_size(base: str) -> int:
    """LXD's automatic loop size: 20% of the free space under ``base``, 5 GiB to 30 GiB."""
    st = os.statvfs(base)
    return max(_AUTO_MIN, min(_AUTO_MAX, st.f_bavail * st.f_frsize // 5))


def make_image(pool: str, image_file: str, size: int) -> None:
    """A formatted ``image_file`` of ``size`` bytes: built under a temporary name beside it, so
    an existing image file is always a complete filesystem."""
    tmp = temp_name(os.path.dirname(image_file), STAGING, os.path.basename(image_file))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: costs nothing until written
        finally:
            os.close(fd)
        proc.run(["mkfs.btrfs", "-q", tmp])
        rename_noreplace(tmp, image_file)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, CommandFailed):
            raise DriverError(f"storage pool {pool}: mkfs.btrfs failed: "
                              f"{e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}") from e
        if isinstance(e, OSError):
            raise pool_error(pool, f"create {image_file}", e) from e
        raise


def mount_loop(pool: str, image_file: str, mnt: str) -> bool:
    """Loop-mount ``image_file`` at ``mnt`` unless it is already; return True if this call did."""
    current = mount_at(mnt)
    if current is not None:
        fstype, source = current
        if fstype != "btrfs" or (source.startswith("/dev/loop")
                                 and source not in loops_backing(image_file)):
            raise DriverError(f"storage pool {pool}: something else is mounted at {mnt} "
                              f"({fstype} from {source})")
        _harden(pool, mnt)
        return False
    try:
        # util-linux attaches a free loop device with autoclear: unmounting detaches it.
        # user_subvol_rm_allowed as LXD: a container's root may delete its own subvolumes.
        # nosuid,nodev: see HOST_FLAGS
        opts = ",".join(("loop", "user_subvol_rm_allowed", *HOST_FLAGS))
        proc.run(["mount", "-t", "btrfs", "-o", opts, image_file, mnt])
    except CommandFailed as e:
        raise DriverError(f"storage pool {pool}: cannot mount {image_file}: "
                          f"{e.stderr.strip() or e}") from e
    return True


def umount(image_file: str, mnt: str) -> None:
    """Unmount ``mnt`` (lazily if busy) and make sure the loop device of ``image_file`` goes."""
    if mount_at(mnt) is not None:
        try:
            proc.run(["umount", mnt])
        except CommandFailed:
            # busy (a process has a file open): detach now, the kernel finishes later
            proc.run(["umount", "-l", mnt])
    deadline = time.monotonic() + 5
    while True:
        loops = loops_backing(image_file)
        if not loops:
            return
        for dev in loops:
            # with autoclear set this is a no-op for a device still in use; the last
            # user (e.g. a copy of the mount in another mount namespace) releases it
            proc.run(["losetup", "-d", dev], check=False)
        if time.monotonic() > deadline:
            return  # held elsewhere: it is released when that holder lets go
        time.sleep(0.05)


def grow_image(pool: str, image_file: str, mnt: str, size: int) -> None:
    """Grow the pool's loop file to ``size`` bytes while it is mounted and in use: the file
    is extended (sparse), its loop device told (``losetup -c``) and the filesystem resized
    into the new space (``btrfs filesystem resize max``). A smaller ``size`` is a Conflict:
    a filesystem in use is never shrunk. If a step fails, the file goes back to its size."""
    try:
        old = os.stat(image_file).st_size
    except OSError as e:
        raise pool_error(pool, f"read {image_file}", e) from e
    if size < old:
        raise Conflict(f"storage pool {pool}: size {format_size(size)} is smaller than its "
                       f"loop file ({format_size(old)}): a pool in use is only grown")
    if size == old:
        return
    loops = loops_backing(image_file)
    if mount_at(mnt) is None or not loops:
        raise DriverError(f"storage pool {pool}: {image_file} is not mounted at {mnt}",
                          hint="sysmgr init mounts the pools")
    try:
        os.truncate(image_file, size)
        for dev in loops:
            proc.run(["losetup", "-c", dev])
        proc.run(["btrfs", "filesystem", "resize", "max", mnt])
    except (OSError, CommandFailed) as e:
        with contextlib.suppress(OSError, CommandFailed):  # the filesystem did not grow yet
            os.truncate(image_file, old)
            for dev in loops:
                proc.run(["losetup", "-c", dev])
        why = e.stderr.strip() if isinstance(e, CommandFailed) and e.stderr.strip() else e
        raise DriverError(f"storage pool {pool}: cannot grow {image_file}: {why}") from e
