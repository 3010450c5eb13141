"""The ``btrfs`` pool driver class: layout, lifecycle and the volume operations of a pool.

:class:`BtrfsPool` decides which path each volume has and in which order things happen; the
work itself is done by the package's role modules: subvolume operations in
:mod:`~sysmgr.drivers.storage.btrfs.volumes`, the loop file in
:mod:`~sysmgr.drivers.storage.btrfs.loop`, quotas in :mod:`~sysmgr.drivers.storage.btrfs.qgroups`
and host checks in :mod:`~sysmgr.drivers.storage.btrfs.host`. See the package docstring for
the two kinds of pool and the layout.

Layer: drivers (storage).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import BinaryIO, Callable, ClassVar, Iterator, Mapping, Sequence

from sysmgr._util.exposure import private_dir
from sysmgr._util.safefs import rename_noreplace
from sysmgr._util.sizes import format_size, parse_size
from sysmgr.drivers.storage.base import (
    CONTAINER_TOPS,
    CUSTOM_TOPS,
    DELETING,
    MARKER,
    STAGING,
    PoolUsage,
    Readable,
    StorageInfo,
    StoragePool,
    check_name,
    check_unused,
    remove_stale,
    remove_tree,
    rename_exchange,
    statvfs_usage,
    temp_name,
)
from sysmgr.drivers.storage.usage import named_trees_usage_begin, tree_usage
from sysmgr.drivers.storage.btrfs.host import btrfsutil, check_btrfs_dir, need, pool_error
from sysmgr.drivers.storage.btrfs.loop import (
    MIN_LOOP_SIZE,
    auto_size,
    grow_image,
    make_image,
    mount_at,
    mount_loop,
    umount,
)
from sysmgr.drivers.storage.btrfs.qgroups import Qgroups, set_limit
from sysmgr.drivers.storage.btrfs.volumes import (
    create_subvolume,
    delete_subvolume,
    purge,
    receive_snapshot,
    send_stream,
    snapshot_subvolume,
)
from sysmgr.errors import AlreadyExists, Conflict, DriverError, NotFound, ValidationError


def _read_json(path: str) -> dict[str, object] | None:
    """A marker file's content: None when missing, {} when damaged (still ours)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _write_json(path: str, data: dict[str, object]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class BtrfsPool(StoragePool):
    """A pool on btrfs: an existing btrfs directory, or a loop file sysmgr manages."""

    name: ClassVar[str] = "btrfs"
    info: ClassVar[StorageInfo] = StorageInfo(
        cow_snapshots=True, quotas=True, send_receive=True, incremental_send=True,
        snapshots=True, stream_format="btrfs")
    config_keys: ClassVar[frozenset[str]] = frozenset({"source", "size"})

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        super().__init__(pool, config, default_path)
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
        self._qgroups = Qgroups(pool, self.path)

    @classmethod
    def check_host(cls) -> None:
        btrfsutil()
        need("btrfs")
        need("mkfs.btrfs")

    # -- paths ---------------------------------------------------------------------------
    def _dir(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def image_path(self, fingerprint: str) -> str:
        return self._dir("images", check_name("image fingerprint", fingerprint))

    def container_path(self, name: str) -> str:
        # the subvolume is the root filesystem: a snapshot of the image, nothing around it
        return self._dir(self.tops[0], check_name("container name", name))

    def _snapshots_of(self, name: str) -> str:
        return self._dir(self.tops[1], check_name("container name", name))

    def snapshot_path(self, name: str, snap: str) -> str:
        return os.path.join(self._snapshots_of(name), check_name("snapshot name", snap))

    @property
    def _outer_marker(self) -> str:
        return os.path.join(self.base, MARKER)

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
            check_btrfs_dir(self.pool, self.path)
            if _read_json(self._outer_marker) is None:
                others = sorted(set(os.listdir(self.path)) - {"lost+found"})
                if others:
                    raise Conflict(f"storage pool {self.pool}: source {self.path} is not empty "
                                   f"(has {others[0]!r})", hint="point source at a new or empty directory")
            self._init_layout()

    def _init_layout(self) -> None:
        """Marker and top directories inside the pool root (idempotent), stale leftovers out."""
        try:
            if _read_json(self._dir(MARKER)) is None:
                _write_json(self._dir(MARKER), {"driver": self.name, "pool": self.pool})
            # 0700: no host user reaches a volume (see sysmgr._util.exposure); tightened
            # on every mount, so pools made by older versions are fixed by ``init``
            for d in ("images", *CONTAINER_TOPS, *CUSTOM_TOPS):
                private_dir(self._dir(d))
        except OSError as e:
            raise pool_error(self.pool, "set up the pool", e) from e
        remove_stale(self.path, purge)

    def _create_loop(self) -> None:
        if os.path.lexists(self.base) and not os.path.isdir(self.base):
            raise ValidationError(f"storage pool {self.pool}: {self.base} is not a directory")
        existed = os.path.isdir(self.base)
        marker = _read_json(self._outer_marker)
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
                    _write_json(self._outer_marker, {"driver": self.name, "pool": self.pool,
                                                     "loop": True, "created_dir": not existed})
                    undo.callback(os.unlink, self._outer_marker)
                if not os.path.exists(self.image_file):
                    make_image(self.pool, self.image_file, self.size or auto_size(self.base))
                    undo.callback(os.unlink, self.image_file)
                os.makedirs(self.path, mode=0o711, exist_ok=True)
            except OSError as e:
                raise pool_error(self.pool, f"create {self.base}", e) from e
            if self._mount_loop():
                undo.callback(self._umount)
            self._init_layout()
            undo.pop_all()

    def _mount_loop(self) -> bool:
        return mount_loop(self.pool, self.image_file, self.path)

    def resize(self, size_bytes: int) -> None:
        if not self.loop:
            super().resize(size_bytes)  # an existing btrfs directory: its size is not ours
        grow_image(self.pool, self.image_file, self.path, size_bytes)

    def _umount(self) -> None:
        umount(self.image_file, self.path)

    def needs_mount(self) -> bool:
        # a loop pool's mount point holds the layout only while the image is mounted there
        return self.loop and not os.path.isdir(self._dir("images"))

    def mount(self) -> None:
        self.check_host()
        if self.loop:
            if _read_json(self._outer_marker) is None or not os.path.isfile(self.image_file):
                raise DriverError(f"storage pool {self.pool}: {self.image_file} is missing or not a "
                                  "sysmgr pool", hint="was the filesystem holding it unmounted?")
            try:
                os.makedirs(self.path, mode=0o711, exist_ok=True)
            except OSError as e:
                raise pool_error(self.pool, f"create {self.path}", e) from e
            self._mount_loop()
        else:
            check_btrfs_dir(self.pool, self.path)
            if _read_json(self._dir(MARKER)) is None:
                raise DriverError(f"storage pool {self.pool}: {self.path} is not a sysmgr pool",
                                  hint="was the filesystem holding it unmounted?")
        self._init_layout()

    def delete(self) -> None:
        if self.loop:
            self._delete_loop()
            return
        if _read_json(self._dir(MARKER)) is None:
            return  # nothing of ours here
        self._delete_contents()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir(MARKER))

    def _delete_contents(self) -> None:
        """Refuse while containers remain; remove images, orphan snapshots and leftovers."""
        self._refuse_if_in_use()
        for top in ("images", CONTAINER_TOPS[1], CUSTOM_TOPS[1]):
            d = self._dir(top)
            with contextlib.suppress(FileNotFoundError):
                for n in os.listdir(d):
                    purge(os.path.join(d, n))
        for n in os.listdir(self.path):
            if n.startswith((STAGING, DELETING)):
                purge(os.path.join(self.path, n))
        try:
            for top in ("images", *CONTAINER_TOPS, *CUSTOM_TOPS):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(self._dir(top))
        except OSError as e:
            raise pool_error(self.pool, "remove the pool's directories", e) from e

    def _delete_loop(self) -> None:
        marker = _read_json(self._outer_marker)
        if marker is None:
            return  # nothing of ours here (already deleted, or never created)
        if os.path.isfile(self.image_file):
            if mount_at(self.path) is None:
                self._mount_loop()  # to see whether containers remain
            self._refuse_if_in_use()
            # the whole filesystem goes with the file: no need to delete subvolumes one by one
            self._umount()
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.image_file)
            for n in os.listdir(self.base):
                if n.startswith(STAGING):  # a pool.img being formatted when a process died
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.base, n))
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._outer_marker)
        except OSError as e:
            raise pool_error(self.pool, f"remove {self.base}", e) from e
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
        staging = temp_name(self.path, STAGING, fingerprint)
        create_subvolume(self.pool, staging, 0o755,  # becomes the rootfs' "/"
                         what=f"create a subvolume for image {fingerprint}")
        try:
            yield staging
        except BaseException:
            purge(staging)
            raise
        # a read-only subvolume cannot move to another directory (EROFS), so the image is a
        # read-only snapshot of the staging one: it appears complete and read-only at once
        try:
            snapshot_subvolume(self.pool, staging, final, read_only=True,
                               what=f"store image {fingerprint}")
        except AlreadyExists:
            pass  # made concurrently; same fingerprint, same content
        finally:
            purge(staging)

    def delete_image(self, fingerprint: str) -> None:
        # containers made from it are snapshots: they keep their (shared) blocks
        delete_subvolume(self.pool, self.image_path(fingerprint), f"delete image {fingerprint}")

    # -- containers ----------------------------------------------------------------------
    def list_containers(self) -> list[str]:
        return self._names(self.tops[0])

    def create_container(self, name: str, fingerprint: str) -> str:
        path = self.container_path(name)
        image = self.image_path(fingerprint)
        self._require()
        if not os.path.isdir(image):
            raise NotFound(f"image {fingerprint} not found in storage pool {self.pool}")
        if os.path.lexists(path):
            raise self._volume_exists(name)
        snapshot_subvolume(self.pool, image, path, read_only=False,
                           what=f"create the volume of container {name}")
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
                delete_subvolume(self.pool, os.path.join(snaps, n), f"delete snapshot {name}/{n}")
            os.rmdir(snaps)
        delete_subvolume(self.pool, path, f"delete the volume of container {name}")

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
            raise pool_error(self.pool, f"rename volume {old} to {new}", e) from e
        ssrc, sdst = self._snapshots_of(old), self._snapshots_of(new)
        if os.path.lexists(ssrc):
            try:
                rename_noreplace(ssrc, sdst)
            except OSError as e:
                os.rename(dst, src)  # undo: volume and snapshots keep one name
                raise pool_error(self.pool, f"rename the snapshots of {old} to {new}", e) from e
        return dst

    def container_usage(self, name: str) -> int | None:
        path = self._require_volume(name)
        counted = self._qgroups.value(path, "referenced")
        if counted is not None:
            return counted
        try:
            return tree_usage(path)
        except FileNotFoundError as e:
            raise self._no_volume(name) from e

    def containers_usage_begin(self, names: Sequence[str]
                               ) -> Callable[[], dict[str, int | None]]:
        if self._qgroups.sysfs_dir() is not None:  # counted by the kernel: no walk
            return super().containers_usage_begin(names)
        return named_trees_usage_begin({name: self.container_path(name) for name in names})

    # -- snapshots, restore, copy ----------------------------------------------------------
    def create_snapshot(self, name: str, snap: str) -> str:
        src = self._require_volume(name)
        dst = self.snapshot_path(name, snap)
        try:
            private_dir(self._snapshots_of(name))
        except OSError as e:
            raise pool_error(self.pool, f"snapshot {name}", e) from e
        snapshot_subvolume(self.pool, src, dst, read_only=True, what=f"snapshot {name} as {snap}")
        return dst

    def delete_snapshot(self, name: str, snap: str) -> None:
        delete_subvolume(self.pool, self.snapshot_path(name, snap), f"delete snapshot {name}/{snap}")

    def list_snapshots(self, name: str) -> list[str]:
        self._require_volume(name)
        return self._names(self.tops[1], name)

    def restore_snapshot(self, name: str, snap: str) -> str:
        src = self._require_snapshot(name, snap)
        path = self.container_path(name)
        self._check_unused(name)
        existed = os.path.lexists(path)
        # the snapshot carries the limit the volume had when it was taken: keep today's
        limit = self._qgroups.value(path, "max_referenced") if existed else None
        staging = temp_name(self.path, STAGING, name)
        snapshot_subvolume(self.pool, src, staging, read_only=False,
                           what=f"restore {name} from {snap}")
        try:
            if limit is not None:
                set_limit(staging, limit or None)
            if existed:
                rename_exchange(staging, path)  # atomic: never a moment without a volume
            else:
                rename_noreplace(staging, path)
        except BaseException as e:
            purge(staging)
            if isinstance(e, OSError):
                raise pool_error(self.pool, f"restore {name} from {snap}", e) from e
            raise
        if existed:
            purge(staging)  # the old volume, only now that the new one is in place
        return path

    def copy_container(self, src: str, dst: str, *, snapshot: str | None = None) -> str:
        source = self._copy_source(src, snapshot)
        path = self.container_path(dst)
        if os.path.lexists(path):
            raise self._volume_exists(dst)
        snapshot_subvolume(self.pool, source, path, read_only=False, what=f"copy {src} to {dst}")
        return path

    # -- quotas ----------------------------------------------------------------------------
    def set_quota(self, name: str, size_bytes: int | None) -> None:
        path = self._require_volume(name)
        if size_bytes is not None and (not isinstance(size_bytes, int) or size_bytes <= 0):
            raise ValidationError(f"invalid quota {size_bytes!r} for container {name}: "
                                  "a positive number of bytes")
        if self._qgroups.sysfs_dir() is None:
            if size_bytes is None:
                return  # no quotas, no limit: never enable quotas just to clear one
            self._qgroups.enable()  # the first quota on this pool
        try:
            set_limit(path, size_bytes)
        except OSError as e:
            raise pool_error(self.pool, f"set the quota of {name}", e) from e

    # -- streaming -------------------------------------------------------------------------
    @contextlib.contextmanager
    def send(self, name: str, snap: str, *, since: str | None = None) -> Iterator[BinaryIO]:
        need("btrfs")
        path = self._require_snapshot(name, snap)
        parent = self._require_snapshot(name, since) if since is not None else None
        with send_stream(path, parent, what=f"btrfs send of {name}/{snap}") as stream:
            yield stream

    def snapshot_ids(self, name: str) -> dict[str, tuple[str, str]]:
        self._require_volume(name)
        bu = btrfsutil()
        out: dict[str, tuple[str, str]] = {}
        for snap in self._names(self.tops[1], name):
            try:
                info = bu.subvolume_info(self.snapshot_path(name, snap))
            except OSError as e:
                raise pool_error(self.pool, f"read snapshot {name}/{snap}", e) from e
            received = info.received_uuid if any(info.received_uuid) else b""
            out[snap] = (info.uuid.hex(), received.hex())
        return out

    def receive(self, name: str, stream: Readable, *, snap: str) -> str:
        need("btrfs")
        final = self.snapshot_path(name, snap)
        self._require()
        if os.path.lexists(final):
            raise self._snapshot_exists(name, snap)
        # received straight into the container's snapshot directory (see receive_snapshot)
        sdir = self._snapshots_of(name)
        try:
            private_dir(sdir)
            before = set(os.listdir(sdir))
        except OSError as e:
            raise pool_error(self.pool, f"receive {name}/{snap}", e) from e
        try:
            receive_snapshot(sdir, before, stream, final, what=f"btrfs receive of {name}/{snap}")
        except FileExistsError as e:
            raise self._snapshot_exists(name, snap) from e
        except OSError as e:
            raise pool_error(self.pool, f"receive {name}/{snap}", e) from e
        path = self.container_path(name)
        if not os.path.lexists(path):
            try:
                # run a writable snapshot, never the received one: flipping that to rw would
                # let a later incremental apply onto a modified base
                snapshot_subvolume(self.pool, final, path, read_only=False,
                                   what=f"create the volume of {name}")
            except BaseException:
                delete_subvolume(self.pool, final, f"delete snapshot {name}/{snap}")
                with contextlib.suppress(OSError):
                    os.rmdir(self._snapshots_of(name))
                raise
        return path
