"""The ``btrfs`` storage driver: subvolumes, snapshots, qgroup quotas, send/receive.

Images are read-only subvolumes; a container volume is a writable snapshot of its image, so
creating one takes constant time whatever the image's size. Snapshots, restores and copies
are snapshots too. Quotas are qgroup limits on the referenced bytes of a container's
subvolume; streams are ``btrfs send`` / ``btrfs receive`` (full, or incremental from a
snapshot both pools hold).

Two ways to get a pool, as LXD does:

* ``source: /some/btrfs/dir`` — an existing directory on a btrfs filesystem (checked with
  ``statfs``: a non-btrfs path is rejected before anything changes); it must be empty or a
  sysmgr pool already.
* ``size: 10GiB`` (or no config at all) — a sparse loop file ``<dir>/pool.img`` that sysmgr
  creates (``truncate`` + ``mkfs.btrfs``) and loop-mounts at ``<dir>/mnt``, where ``<dir>`` is
  ``source`` when given with ``size``, else the pool's default directory under the sysmgr
  root. ``mount()`` re-mounts it after a host restart; ``delete()`` unmounts it, detaches the
  loop device and removes the file. Without ``size`` the file gets LXD's automatic size: 20%
  of the free space, at least 5 GiB and at most 30 GiB (it is sparse: nothing is used yet).

Layout inside the pool root (the ``source`` directory or the loop mount)::

    .sysmgr-pool              marker: this is a sysmgr pool
    images/<fingerprint>      read-only subvolume: an image's root filesystem
    containers/<name>         writable subvolume: the container's root filesystem itself
    snapshots/<name>/<snap>   read-only subvolume: a snapshot of containers/<name>
    .staging-<tag>-<pid>-<r>  a subvolume (or receive directory) being made

Subvolume operations go through the ``btrfsutil`` binding (imported lazily: importing this
module needs nothing); quotas through the ``BTRFS_IOC_QGROUP_LIMIT`` ioctl and sysfs;
``btrfs`` and ``mkfs.btrfs`` through :mod:`sysmgr._util.proc`.

Layer: drivers (storage). Errors: :class:`ValidationError` (bad config or names, non-btrfs
source), :class:`NotFound`, :class:`AlreadyExists`, :class:`Conflict`, :class:`DriverError`,
:class:`DriverUnavailable` (btrfs-progs or the btrfsutil binding missing).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import struct
import time
import uuid
from types import ModuleType
from typing import BinaryIO, ClassVar, Iterator, Mapping

from sysmgr._util import proc
from sysmgr._util.safefs import rename_noreplace
from sysmgr._util.sizes import format_size, parse_size
from sysmgr.drivers.storage.base import (
    PoolUsage,
    Readable,
    StorageInfo,
    StoragePool,
    command_stream,
    feed_command,
)
from sysmgr.drivers.storage.dir import (
    MARKER,
    check_config,
    check_name,
    check_unused,
    remove_stale,
    remove_tree,
    rename_exchange,
    statvfs_usage,
    temp_name,
    tree_usage,
    unescape_mountinfo,
)
from sysmgr.errors import (
    AlreadyExists,
    CommandFailed,
    Conflict,
    DriverError,
    DriverUnavailable,
    NotFound,
    ValidationError,
)

BTRFS_SUPER_MAGIC = 0x9123683E
_IOC_FS_INFO = 0x8400941F              # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args[1024])
_IOC_QGROUP_LIMIT = 0x8030942B         # _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)
_IOC_QUOTA_RESCAN_STATUS = 0x8040942D  # _IOR(0x94, 45, struct btrfs_ioctl_quota_rescan_args)
_QGROUP_LIMIT_MAX_RFER = 1
_QGROUP_CLEAR = 2**64 - 1              # "no limit" for a field of BTRFS_IOC_QGROUP_LIMIT
MIN_LOOP_SIZE = 128 * 1024**2          # mkfs.btrfs refuses devices under ~109 MiB
_AUTO_MIN, _AUTO_MAX = 5 * 1024**3, 30 * 1024**3
_STAGING = ".staging-"

_BTRFSUTIL_HINT = ("apt-get install libbtrfsutil-dev && pip install 'btrfsutil<6.14' "
                   "(newer releases need a newer libbtrfsutil than Debian 12 has)")
_PROGS_HINT = "apt-get install btrfs-progs"


# -- host checks -----------------------------------------------------------------------------

def _btrfsutil() -> ModuleType:
    """The btrfsutil binding, imported on first use (a missing one is a host problem)."""
    try:
        import btrfsutil  # type: ignore[import-not-found]
    except ImportError as e:  # not installed, or built against a newer libbtrfsutil
        raise DriverUnavailable(f"the btrfs storage driver needs the btrfsutil Python binding: {e}",
                                hint=_BTRFSUTIL_HINT) from e
    return btrfsutil


def _need(prog: str) -> None:
    if proc.which(prog) is None:
        raise DriverUnavailable(f"the btrfs storage driver needs {prog} (btrfs-progs)", hint=_PROGS_HINT)


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


def _mount_at(path: str) -> tuple[str, str] | None:
    """``(fstype, source)`` of the mount whose mount point is exactly ``path``, or None."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mp = unescape_mountinfo(left.split()[4])
            if mp == path:
                fstype, source = right.split()[:2]
                found = (fstype, source)  # the last one listed is the one on top
    return found


def _loops_backing(image: str) -> list[str]:
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


def _is_subvolume(bu: ModuleType, path: str) -> bool:
    try:
        return bool(bu.is_subvolume(path))
    except OSError:
        return False  # missing, or not on btrfs


def _purge(path: str) -> None:
    """Remove a leftover: a subvolume (with any nested ones), or a directory holding
    subvolumes (an interrupted receive), or a plain tree."""
    bu = _btrfsutil()
    if not os.path.lexists(path):
        return
    try:
        if _is_subvolume(bu, path):
            bu.delete_subvolume(path, recursive=True)
            return
        if os.path.isdir(path) and not os.path.islink(path):
            for n in os.listdir(path):
                child = os.path.join(path, n)
                if _is_subvolume(bu, child):
                    bu.delete_subvolume(child, recursive=True)
    except OSError as e:
        raise DriverError(f"cannot remove {path}: {e.strerror or e}") from e
    remove_tree(path)


# -- the driver ------------------------------------------------------------------------------

class BtrfsPool(StoragePool):
    """A pool on btrfs: an existing btrfs directory, or a loop file sysmgr manages."""

    name: ClassVar[str] = "btrfs"
    info: ClassVar[StorageInfo] = StorageInfo(
        cow_snapshots=True, quotas=True, send_receive=True, incremental_send=True,
        snapshots=True, stream_format="btrfs")
    config_keys: ClassVar[Mapping[str, str]] = {
        "source": "an existing directory on btrfs; with size: where to put the loop file "
                  "(default: under the sysmgr root)",
        "size": "size of the loop file sysmgr creates (e.g. 10GiB; default: 20% of the free "
                "space, 5GiB to 30GiB)",
    }

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        super().__init__(pool, config, default_path)
        check_config(self.name, pool, self.config, self.config_keys)
        source = self.config.get("source")
        if source is not None and not os.path.isabs(source):
            raise ValidationError(f"storage pool {pool}: source {source!r} must be an absolute path")
        self.size: int | None = None
        if "size" in self.config:
            try:
                self.size = parse_size(self.config["size"])
            except ValueError as e:
                raise ValidationError(f"storage pool {pool}: size: {e}") from None
            if self.size < MIN_LOOP_SIZE:
                raise ValidationError(f"storage pool {pool}: size {self.config['size']} is too small "
                                      f"(at least {format_size(MIN_LOOP_SIZE)})")
        # a loop file unless the user points at an existing btrfs directory (and no size)
        self.loop = source is None or self.size is not None
        if self.loop:
            self.base = os.path.normpath(source or default_path)
            self.path = os.path.join(self.base, "mnt")
            self.image_file = os.path.join(self.base, "pool.img")
        else:
            assert source is not None
            self.base = self.path = os.path.normpath(source)
            self.image_file = ""
        self._fsid: str | None = None

    @classmethod
    def check_host(cls) -> None:
        _btrfsutil()
        _need("btrfs")
        _need("mkfs.btrfs")

    # -- paths ---------------------------------------------------------------------------
    def _dir(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def image_path(self, fingerprint: str) -> str:
        return self._dir("images", check_name("image fingerprint", fingerprint))

    def container_path(self, name: str) -> str:
        # the subvolume is the root filesystem: a snapshot of the image, nothing around it
        return self._dir("containers", check_name("container name", name))

    def _snapshots_of(self, name: str) -> str:
        return self._dir("snapshots", check_name("container name", name))

    def snapshot_path(self, name: str, snap: str) -> str:
        return os.path.join(self._snapshots_of(name), check_name("snapshot name", snap))

    @property
    def _outer_marker(self) -> str:
        return os.path.join(self.base, MARKER)

    # -- small helpers ---------------------------------------------------------------------
    def _err(self, what: str, e: OSError) -> DriverError:
        return DriverError(f"storage pool {self.pool}: cannot {what}: {e.strerror or e}")

    def _snapshot(self, src: str, dst: str, *, read_only: bool, what: str) -> None:
        """Snapshot subvolume ``src`` at ``dst`` (atomic: it appears complete or not at all)."""
        bu = _btrfsutil()
        try:
            bu.create_snapshot(src, dst, read_only=read_only)
        except OSError as e:
            if e.errno == errno.EEXIST:
                raise AlreadyExists(f"storage pool {self.pool}: cannot {what}: "
                                    f"{os.path.basename(dst)} already exists") from e
            raise self._err(what, e) from e

    def _delete_subvolume(self, path: str, what: str) -> None:
        """Delete a subvolume and any nested ones (already gone is success)."""
        bu = _btrfsutil()
        try:
            bu.delete_subvolume(path, recursive=True)
        except OSError as e:
            if e.errno == errno.ENOENT or not os.path.lexists(path):
                return
            raise self._err(what, e) from e

    def _read_json(self, path: str) -> dict[str, object] | None:
        try:
            with open(path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _write_json(self, path: str, data: dict[str, object]) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def _check_btrfs(self, path: str) -> None:
        try:
            magic = fs_type(path)
        except FileNotFoundError:
            raise ValidationError(f"storage pool {self.pool}: source {path} does not exist",
                                  hint="create it on a btrfs filesystem, or set size: to use a loop file"
                                  ) from None
        except OSError as e:
            raise ValidationError(f"storage pool {self.pool}: cannot check source {path}: {e.strerror}") from e
        if magic != BTRFS_SUPER_MAGIC:
            raise ValidationError(f"storage pool {self.pool}: source {path} is not on a btrfs filesystem",
                                  hint="point source at a btrfs directory, or set size: to have "
                                       "sysmgr create a btrfs loop file")
        if not os.path.isdir(path):
            raise ValidationError(f"storage pool {self.pool}: source {path} is not a directory")

    def _require(self) -> None:
        if not os.path.isdir(self._dir("containers")) or not os.path.isdir(self._dir("images")):
            raise NotFound(f"storage pool {self.pool} does not exist at {self.path}",
                           hint="is it mounted? ('sysmgr init' mounts the pools)")

    # -- pool ----------------------------------------------------------------------------
    def create(self) -> None:
        self.check_host()
        if self.loop:
            self._create_loop()
        else:
            self._check_btrfs(self.path)
            if self._read_json(self._outer_marker) is None:
                others = sorted(set(os.listdir(self.path)) - {"lost+found"})
                if others:
                    raise Conflict(f"storage pool {self.pool}: source {self.path} is not empty "
                                   f"(has {others[0]!r})", hint="point source at a new or empty directory")
            self._init_layout()

    def _init_layout(self) -> None:
        """Marker and top directories inside the pool root (idempotent), stale leftovers out."""
        try:
            if self._read_json(self._dir(MARKER)) is None:
                self._write_json(self._dir(MARKER), {"driver": self.name, "pool": self.pool})
            for d in ("images", "containers", "snapshots"):
                os.makedirs(self._dir(d), mode=0o711, exist_ok=True)
        except OSError as e:
            raise self._err("set up the pool", e) from e
        remove_stale(self.path, _purge)

    def _auto_size(self) -> int:
        st = os.statvfs(self.base)
        return max(_AUTO_MIN, min(_AUTO_MAX, st.f_bavail * st.f_frsize // 5))

    def _create_loop(self) -> None:
        if os.path.lexists(self.base) and not os.path.isdir(self.base):
            raise ValidationError(f"storage pool {self.pool}: {self.base} is not a directory")
        existed = os.path.isdir(self.base)
        marker = self._read_json(self._outer_marker)
        if existed and marker is None:
            others = sorted(set(os.listdir(self.base)) - {"lost+found"})
            if others:
                raise Conflict(f"storage pool {self.pool}: {self.base} is not empty (has {others[0]!r})",
                               hint="point source at a new or empty directory")
        remove_stale(self.base)  # a pool.img.tmp of a process that died while formatting
        with contextlib.ExitStack() as undo:  # undoes this call's steps if a later one fails
            try:
                os.makedirs(self.base, mode=0o711, exist_ok=True)
                if not existed:
                    undo.callback(remove_tree, self.base)
                if marker is None:
                    # written first: delete() then knows the loop file is ours even after a crash
                    self._write_json(self._outer_marker, {"driver": self.name, "pool": self.pool,
                                                          "loop": True, "created_dir": not existed})
                    undo.callback(os.unlink, self._outer_marker)
                if not os.path.exists(self.image_file):
                    self._make_image()
                    undo.callback(os.unlink, self.image_file)
                os.makedirs(self.path, mode=0o711, exist_ok=True)
            except OSError as e:
                raise self._err(f"create {self.base}", e) from e
            if self._mount_loop():
                undo.callback(self._umount)
            self._init_layout()
            undo.pop_all()

    def _make_image(self) -> None:
        """A formatted ``pool.img``: built under a temporary name, so an existing pool.img is
        always a complete filesystem."""
        size = self.size or self._auto_size()
        tmp = temp_name(self.base, _STAGING, "pool.img")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)  # sparse: costs nothing until written
            finally:
                os.close(fd)
            proc.run(["mkfs.btrfs", "-q", tmp])
            rename_noreplace(tmp, self.image_file)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, CommandFailed):
                raise DriverError(f"storage pool {self.pool}: mkfs.btrfs failed: "
                                  f"{e.stderr.strip().splitlines()[-1] if e.stderr.strip() else e}") from e
            if isinstance(e, OSError):
                raise self._err(f"create {self.image_file}", e) from e
            raise

    def _mount_loop(self) -> bool:
        """Loop-mount pool.img at mnt unless it is already; return True if this call did."""
        current = _mount_at(self.path)
        if current is not None:
            fstype, source = current
            if fstype != "btrfs" or (source.startswith("/dev/loop")
                                     and source not in _loops_backing(self.image_file)):
                raise DriverError(f"storage pool {self.pool}: something else is mounted at {self.path} "
                                  f"({fstype} from {source})")
            return False
        try:
            # util-linux attaches a free loop device with autoclear: unmounting detaches it.
            # user_subvol_rm_allowed as LXD: a container's root may delete its own subvolumes
            proc.run(["mount", "-t", "btrfs", "-o", "loop,user_subvol_rm_allowed",
                      self.image_file, self.path])
        except CommandFailed as e:
            raise DriverError(f"storage pool {self.pool}: cannot mount {self.image_file}: "
                              f"{e.stderr.strip() or e}") from e
        return True

    def _umount(self) -> None:
        """Unmount mnt (lazily if busy) and make sure our loop device goes away."""
        if _mount_at(self.path) is not None:
            try:
                proc.run(["umount", self.path])
            except CommandFailed:
                # busy (a process has a file open): detach now, the kernel finishes later
                proc.run(["umount", "-l", self.path])
        deadline = time.monotonic() + 5
        while True:
            loops = _loops_backing(self.image_file)
            if not loops:
                return
            for dev in loops:
                # with autoclear set this is a no-op for a device still in use; the last
                # user (e.g. a copy of the mount in another mount namespace) releases it
                proc.run(["losetup", "-d", dev], check=False)
            if time.monotonic() > deadline:
                return  # held elsewhere: it is released when that holder lets go
            time.sleep(0.05)

    def mount(self) -> None:
        self.check_host()
        if self.loop:
            if self._read_json(self._outer_marker) is None or not os.path.isfile(self.image_file):
                raise DriverError(f"storage pool {self.pool}: {self.image_file} is missing or not a "
                                  "sysmgr pool", hint="was the filesystem holding it unmounted?")
            try:
                os.makedirs(self.path, mode=0o711, exist_ok=True)
            except OSError as e:
                raise self._err(f"create {self.path}", e) from e
            self._mount_loop()
        else:
            self._check_btrfs(self.path)
            if self._read_json(self._dir(MARKER)) is None:
                raise DriverError(f"storage pool {self.pool}: {self.path} is not a sysmgr pool",
                                  hint="was the filesystem holding it unmounted?")
        self._init_layout()

    def delete(self) -> None:
        if self.loop:
            self._delete_loop()
            return
        if self._read_json(self._dir(MARKER)) is None:
            return  # nothing of ours here
        self._delete_contents()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir(MARKER))

    def _delete_contents(self) -> None:
        """Refuse while containers remain; remove images, orphan snapshots and leftovers."""
        left = self.list_containers()
        if left:
            raise Conflict(f"storage pool {self.pool} still holds containers: {', '.join(left)}")
        for top in ("images", "snapshots"):
            d = self._dir(top)
            with contextlib.suppress(FileNotFoundError):
                for n in os.listdir(d):
                    _purge(os.path.join(d, n))
        for n in os.listdir(self.path):
            if n.startswith((_STAGING, ".deleting-")):
                _purge(os.path.join(self.path, n))
        try:
            for top in ("images", "containers", "snapshots"):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(self._dir(top))
        except OSError as e:
            raise self._err("remove the pool's directories", e) from e

    def _delete_loop(self) -> None:
        marker = self._read_json(self._outer_marker)
        if marker is None:
            return  # nothing of ours here (already deleted, or never created)
        if os.path.isfile(self.image_file):
            if _mount_at(self.path) is None:
                self._mount_loop()  # to see whether containers remain
            left = self.list_containers()
            if left:
                raise Conflict(f"storage pool {self.pool} still holds containers: {', '.join(left)}")
            # the whole filesystem goes with the file: no need to delete subvolumes one by one
            self._umount()
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.image_file)
            for n in os.listdir(self.base):
                if n.startswith(_STAGING):  # a pool.img being formatted when a process died
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.base, n))
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._outer_marker)
        except OSError as e:
            raise self._err(f"remove {self.base}", e) from e
        if marker.get("created_dir"):
            with contextlib.suppress(OSError):  # ENOTEMPTY: someone put files there; keep them
                os.rmdir(self.base)

    def usage(self) -> PoolUsage:
        return statvfs_usage(self.pool, self.path)

    # -- images --------------------------------------------------------------------------
    def _names(self, *parts: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._dir(*parts)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def list_images(self) -> list[str]:
        return self._names("images")

    @contextlib.contextmanager
    def create_image(self, fingerprint: str) -> Iterator[str]:
        final = self.image_path(fingerprint)
        self._require()
        if os.path.lexists(final):
            raise AlreadyExists(f"image {fingerprint} already exists in storage pool {self.pool}")
        bu = _btrfsutil()
        staging = temp_name(self.path, _STAGING, fingerprint)
        try:
            bu.create_subvolume(staging)
            os.chmod(staging, 0o755)  # becomes the rootfs' "/"
        except OSError as e:
            _purge(staging)
            raise self._err(f"create a subvolume for image {fingerprint}", e) from e
        try:
            yield staging
        except BaseException:
            _purge(staging)
            raise
        # a read-only subvolume cannot move to another directory (EROFS), so the image is a
        # read-only snapshot of the staging one: it appears complete and read-only at once
        try:
            self._snapshot(staging, final, read_only=True, what=f"store image {fingerprint}")
        except AlreadyExists:
            pass  # made concurrently; same fingerprint, same content
        finally:
            _purge(staging)

    def delete_image(self, fingerprint: str) -> None:
        # containers made from it are snapshots: they keep their (shared) blocks
        self._delete_subvolume(self.image_path(fingerprint), f"delete image {fingerprint}")

    # -- containers ----------------------------------------------------------------------
    def list_containers(self) -> list[str]:
        return self._names("containers")

    def create_container(self, name: str, fingerprint: str) -> str:
        path = self.container_path(name)
        image = self.image_path(fingerprint)
        self._require()
        if not os.path.isdir(image):
            raise NotFound(f"image {fingerprint} not found in storage pool {self.pool}")
        if os.path.lexists(path):
            raise self._volume_exists(name)
        self._snapshot(image, path, read_only=False, what=f"create the volume of container {name}")
        return path

    def _check_unused(self, name: str) -> None:
        check_unused(name, self.container_path(name))

    def delete_container(self, name: str) -> None:
        path = self.container_path(name)
        if os.path.lexists(path):
            self._check_unused(name)
        # snapshots first: a failure then leaves the volume, and a retry finishes the job
        snaps = self._snapshots_of(name)
        with contextlib.suppress(FileNotFoundError):
            for n in os.listdir(snaps):
                self._delete_subvolume(os.path.join(snaps, n), f"delete snapshot {name}/{n}")
            os.rmdir(snaps)
        self._delete_subvolume(path, f"delete the volume of container {name}")

    def rename_container(self, old: str, new: str) -> str:
        src, dst = self.container_path(old), self.container_path(new)
        if not os.path.isdir(src):
            raise self._no_volume(old)
        self._check_unused(old)
        try:
            rename_noreplace(src, dst)
        except FileExistsError as e:
            raise self._volume_exists(new) from e
        except OSError as e:
            raise self._err(f"rename volume {old} to {new}", e) from e
        ssrc, sdst = self._snapshots_of(old), self._snapshots_of(new)
        if os.path.lexists(ssrc):
            try:
                rename_noreplace(ssrc, sdst)
            except OSError as e:
                os.rename(dst, src)  # undo: volume and snapshots keep one name
                raise self._err(f"rename the snapshots of {old} to {new}", e) from e
        return dst

    def container_usage(self, name: str) -> int | None:
        path = self._require_volume(name)
        counted = self._qgroup_value(path, "referenced")
        if counted is not None:
            return counted
        try:
            return tree_usage(path)
        except FileNotFoundError as e:
            raise self._no_volume(name) from e

    # -- snapshots, restore, copy ----------------------------------------------------------
    def create_snapshot(self, name: str, snap: str) -> str:
        src = self._require_volume(name)
        dst = self.snapshot_path(name, snap)
        try:
            os.makedirs(self._snapshots_of(name), mode=0o711, exist_ok=True)
        except OSError as e:
            raise self._err(f"snapshot {name}", e) from e
        self._snapshot(src, dst, read_only=True, what=f"snapshot {name} as {snap}")
        return dst

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._delete_subvolume(self.snapshot_path(name, snap), f"delete snapshot {name}/{snap}")

    def list_snapshots(self, name: str) -> list[str]:
        self._require_volume(name)
        return self._names("snapshots", name)

    def restore_snapshot(self, name: str, snap: str) -> str:
        src = self._require_snapshot(name, snap)
        path = self.container_path(name)
        self._check_unused(name)
        existed = os.path.lexists(path)
        # the snapshot carries the limit the volume had when it was taken: keep today's
        limit = self._qgroup_value(path, "max_referenced") if existed else None
        staging = temp_name(self.path, _STAGING, name)
        self._snapshot(src, staging, read_only=False, what=f"restore {name} from {snap}")
        try:
            if limit is not None:
                self._set_limit(staging, limit or None)
            if existed:
                rename_exchange(staging, path)  # atomic: never a moment without a volume
            else:
                rename_noreplace(staging, path)
        except BaseException as e:
            _purge(staging)
            if isinstance(e, OSError):
                raise self._err(f"restore {name} from {snap}", e) from e
            raise
        if existed:
            _purge(staging)  # the old volume, only now that the new one is in place
        return path

    def copy_container(self, src: str, dst: str, *, snapshot: str | None = None) -> str:
        source = self._copy_source(src, snapshot)
        path = self.container_path(dst)
        if os.path.lexists(path):
            raise self._volume_exists(dst)
        self._snapshot(source, path, read_only=False, what=f"copy {src} to {dst}")
        return path

    # -- quotas ----------------------------------------------------------------------------
    def _qgroups_dir(self) -> str | None:
        """``/sys/fs/btrfs/<fsid>/qgroups`` when quotas are enabled on the pool's filesystem."""
        if self._fsid is None:
            buf = bytearray(1024)
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, _IOC_FS_INFO, buf)
                finally:
                    os.close(fd)
            except OSError as e:
                raise self._err("read the filesystem id", e) from e
            self._fsid = str(uuid.UUID(bytes=bytes(buf[16:32])))
        q = f"/sys/fs/btrfs/{self._fsid}/qgroups"
        try:
            with open(os.path.join(q, "enabled")) as f:
                return q if f.read().strip() == "1" else None
        except OSError:
            return None

    def _rescan_running(self) -> bool:
        buf = bytearray(64)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _IOC_QUOTA_RESCAN_STATUS, buf)
            finally:
                os.close(fd)
        except OSError:
            return False
        return struct.unpack_from("=Q", buf)[0] != 0

    def _qgroup_value(self, path: str, field: str) -> int | None:
        """A counter of the subvolume's level-0 qgroup, or None when quotas are off or the
        numbers are not trustworthy yet (a rescan after enabling is still running)."""
        q = self._qgroups_dir()
        if q is None:
            return None
        bu = _btrfsutil()
        try:
            subvol = bu.subvolume_id(path)
            if field in ("referenced", "exclusive"):
                with open(os.path.join(q, "inconsistent")) as f:
                    if f.read().strip() != "0" or self._rescan_running():
                        return None
                bu.sync(self.path)  # counters are updated at transaction commit
            with open(os.path.join(q, f"0_{subvol}", field)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _set_limit(self, path: str, size_bytes: int | None) -> None:
        """BTRFS_IOC_QGROUP_LIMIT on the subvolume (qgroupid 0 = the subvolume's own qgroup)."""
        value = _QGROUP_CLEAR if size_bytes is None else size_bytes
        args = struct.pack("=Q5Q", 0, _QGROUP_LIMIT_MAX_RFER, value, 0, 0, 0)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, _IOC_QGROUP_LIMIT, args)
        finally:
            os.close(fd)

    def set_quota(self, name: str, size_bytes: int | None) -> None:
        path = self._require_volume(name)
        if size_bytes is not None and (not isinstance(size_bytes, int) or size_bytes <= 0):
            raise ValidationError(f"invalid quota {size_bytes!r} for container {name}: "
                                  "a positive number of bytes")
        if self._qgroups_dir() is None:
            if size_bytes is None:
                return  # no quotas, no limit: never enable quotas just to clear one
            try:
                # first quota on this pool: enabling starts the kernel's one-off accounting
                # scan; sysmgr never runs "btrfs quota rescan" itself (canonical/lxd#7029)
                proc.run(["btrfs", "quota", "enable", self.path])
            except CommandFailed as e:
                raise DriverError(f"storage pool {self.pool}: cannot enable quotas: "
                                  f"{e.stderr.strip() or e}") from e
        try:
            self._set_limit(path, size_bytes)
        except OSError as e:
            raise self._err(f"set the quota of {name}", e) from e

    # -- streaming -------------------------------------------------------------------------
    @contextlib.contextmanager
    def send(self, name: str, snap: str, *, since: str | None = None) -> Iterator[BinaryIO]:
        _need("btrfs")
        path = self._require_snapshot(name, snap)
        argv = ["btrfs", "send", "-q"]
        if since is not None:
            argv += ["-p", self._require_snapshot(name, since)]
        argv.append(path)
        with command_stream(argv, what=f"btrfs send of {name}/{snap}") as stream:
            yield stream

    def receive(self, name: str, stream: Readable, *, snap: str) -> str:
        _need("btrfs")
        final = self.snapshot_path(name, snap)
        self._require()
        if os.path.lexists(final):
            raise self._snapshot_exists(name, snap)
        # btrfs receive names the new subvolume after the sender's snapshot, and a read-only
        # subvolume can be renamed only within its directory (moving it elsewhere is EROFS):
        # receive straight into the container's snapshot directory, then rename what arrived
        sdir = self._snapshots_of(name)
        try:
            os.makedirs(sdir, mode=0o711, exist_ok=True)
            before = set(os.listdir(sdir))
        except OSError as e:
            raise self._err(f"receive {name}/{snap}", e) from e
        try:
            feed_command(["btrfs", "receive", sdir], stream, what=f"btrfs receive of {name}/{snap}")
            got = sorted(set(os.listdir(sdir)) - before)
            if len(got) != 1:
                raise DriverError(f"btrfs receive of {name}/{snap}: the stream held {len(got)} "
                                  "subvolumes instead of one snapshot")
            # read-only with received_uuid set: the base for the next incremental receive
            if got[0] != snap:
                rename_noreplace(os.path.join(sdir, got[0]), final)
        except BaseException as e:
            with contextlib.suppress(OSError):  # a failed receive leaves a partial subvolume
                for n in set(os.listdir(sdir)) - before:
                    _purge(os.path.join(sdir, n))
                if not before:
                    os.rmdir(sdir)
            if isinstance(e, FileExistsError):
                raise self._snapshot_exists(name, snap) from e
            if isinstance(e, OSError):
                raise self._err(f"receive {name}/{snap}", e) from e
            raise
        path = self.container_path(name)
        if not os.path.lexists(path):
            try:
                # run a writable snapshot, never the received one: flipping that to rw would
                # let a later incremental apply onto a modified base
                self._snapshot(final, path, read_only=False, what=f"create the volume of {name}")
            except BaseException:
                self._delete_subvolume(final, f"delete snapshot {name}/{snap}")
                with contextlib.suppress(OSError):
                    os.rmdir(self._snapshots_of(name))
                raise
        return path
