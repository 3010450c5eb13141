"""The ``dir`` storage driver: plain directories on any filesystem.

Works anywhere, at the cost of full copies: a container volume, a snapshot, a restore and a
copy are each a copy of their source (``cp -a --reflink=auto``, so it is cheap on filesystems
that can reflink, such as btrfs or xfs). No quotas (nothing here could enforce them). Streams
are tar archives of a snapshot (full only, format ``tar``): enough for backups and for moving
a stopped container between dir pools, with no incremental step.

Layout inside the pool directory::

    .sysmgr-pool                 marker: this directory is a sysmgr pool (and who created it)
    images/<fingerprint>/        read-only (by convention) template root filesystem
    containers/<name>/rootfs/    a container's root filesystem (room for metadata beside it)
    snapshots/<name>/<snap>/     a copy of a container's root filesystem, read-only by convention
    .staging-<tag>-<pid>-<rand>  a volume being made; renamed into place when complete
    .deleting-<tag>-<pid>-<rand> a volume being removed; renamed out of place first

Every volume appears and disappears by one atomic rename, so a crash never leaves a half
volume that looks complete; leftovers of dead processes are removed on ``create``/``mount``.

Layer: drivers (storage). Errors: :class:`ValidationError` for bad config or names,
:class:`NotFound`, :class:`AlreadyExists`, :class:`Conflict`, :class:`DriverError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import BinaryIO, Callable, ClassVar, Iterator, Mapping, Sequence

from sysmgr._util import proc
from sysmgr._util.exposure import PRIVATE_MODE, private_dir
from sysmgr._util.safefs import rename_noreplace
# MARKER, mounts_under, remove_tree and temp_name are also imported from here (tests, backup)
from sysmgr.drivers.storage.base import (
    CONTAINER_TOPS,
    CUSTOM_TOPS,
    DELETING,
    MARKER,
    NAME_RE,
    STAGING,
    PoolUsage,
    Readable,
    StorageInfo,
    StoragePool,
    check_name,
    check_unused,
    command_stream,
    feed_command,
    mounts_under,
    pool_dir,
    remove_stale,
    remove_tree,
    removed_on_error,
    rename_exchange,
    statvfs_usage,
    temp_name,
)
from sysmgr.drivers.storage.usage import named_trees_usage_begin, tree_usage
from sysmgr.errors import (
    AlreadyExists,
    CommandFailed,
    Conflict,
    DriverError,
    NotFound,
    ValidationError,
)


def _last_line(err: CommandFailed) -> str:
    lines = err.stderr.strip().splitlines()
    if not lines:
        return f"exit code {err.returncode}"
    line = lines[-1]
    return line.split(": ", 1)[1] if line.startswith(("cp: ", "tar: ")) else line


# tar flags that keep everything a root filesystem needs: owners by number (the receiving
# host's passwd must not remap them), permissions incl. setuid, ACLs, every xattr namespace
# (file capabilities live in security.*), hard links (tar's default), holes
_TAR_KEEP = ["--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"]


# -- the driver ------------------------------------------------------------------------------

class DirPool(StoragePool):
    """A pool that is a directory; volumes are directories, containers are full copies.

    ``delete`` removes only what sysmgr made: ``images/``, ``containers/`` (refused while any
    container volume remains), leftovers and the marker, and the pool directory itself only
    when sysmgr created it and nothing else was put there.
    """

    name: ClassVar[str] = "dir"
    info: ClassVar[StorageInfo] = StorageInfo(
        cow_snapshots=False, quotas=False, send_receive=True, incremental_send=False,
        snapshots=True, stream_format="tar")
    config_keys: ClassVar[frozenset[str]] = frozenset({"source"})

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        super().__init__(pool, config, default_path)
        self.path = pool_dir(pool, self.config, default_path)

    # -- paths ---------------------------------------------------------------------------
    @property
    def images_dir(self) -> str:
        return os.path.join(self.path, "images")

    @property
    def containers_dir(self) -> str:
        return os.path.join(self.path, self.tops[0])

    @property
    def snapshots_dir(self) -> str:
        return os.path.join(self.path, self.tops[1])

    def _top_dirs(self) -> list[str]:
        """Every top directory: images, and both kinds of volume with their snapshots."""
        return [self.images_dir] + [os.path.join(self.path, d) for d in CONTAINER_TOPS + CUSTOM_TOPS]

    @property
    def marker(self) -> str:
        return os.path.join(self.path, MARKER)

    def image_path(self, fingerprint: str) -> str:
        return os.path.join(self.images_dir, check_name("image fingerprint", fingerprint))

    def _container_dir(self, name: str) -> str:
        return os.path.join(self.containers_dir, check_name("container name", name))

    def container_path(self, name: str) -> str:
        return os.path.join(self._container_dir(name), "rootfs")

    def _snapshots_of(self, name: str) -> str:
        return os.path.join(self.snapshots_dir, check_name("container name", name))

    def snapshot_path(self, name: str, snap: str) -> str:
        return os.path.join(self._snapshots_of(name), check_name("snapshot name", snap))

    # -- pool ----------------------------------------------------------------------------
    def _read_marker(self) -> dict[str, object] | None:
        try:
            with open(self.marker) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # damaged: still ours, but we no longer know if we made the directory

    def create(self) -> None:
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise ValidationError(f"storage pool {self.pool}: source {self.path} is not a directory")
        existed = os.path.isdir(self.path)
        if existed and self._read_marker() is None:
            others = sorted(set(os.listdir(self.path)) - {"lost+found"})
            if others:
                raise Conflict(f"storage pool {self.pool}: source {self.path} is not empty "
                               f"(has {others[0]!r})", hint="point source at a new or empty directory")
        try:
            os.makedirs(self.path, mode=0o711, exist_ok=True)
            if self._read_marker() is None:
                tmp = self.marker + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"driver": self.name, "pool": self.pool, "created_dir": not existed}, f)
                os.replace(tmp, self.marker)
            self._private_tops()
        except OSError as e:
            raise DriverError(f"cannot create storage pool {self.pool} at {self.path}: {e.strerror}") from e
        remove_stale(self.path)

    def mount(self) -> None:
        if not os.path.isdir(self.path) or self._read_marker() is None:
            raise DriverError(f"storage pool {self.pool}: {self.path} is missing or not a sysmgr pool",
                              hint="was the filesystem holding it unmounted?")
        try:
            self._private_tops()
        except OSError as e:
            raise DriverError(f"cannot mount storage pool {self.pool}: {e.strerror}") from e
        remove_stale(self.path)

    def _private_tops(self) -> None:
        """``images/``, ``containers/`` and ``snapshots/``, 0700 (existing ones tightened).

        That mode is what keeps host users from the volumes: a dir pool lives on the host's
        own filesystem, where sysmgr cannot mount ``nosuid,nodev`` without a bind mount of
        the pool onto itself — one more mount to re-create at every boot, to keep out of
        ``delete`` and of every mount-namespace copy, for no gain: a host user who cannot
        reach a file cannot run or open it.
        """
        for d in self._top_dirs():
            private_dir(d)

    def delete(self) -> None:
        marker = self._read_marker()
        if marker is None:
            return  # nothing of ours here (already deleted, or never created)
        self._refuse_if_in_use()
        for fp in self.list_images():
            self.delete_image(fp)
        for top in (CONTAINER_TOPS[1], CUSTOM_TOPS[1]):
            with contextlib.suppress(FileNotFoundError):
                for n in os.listdir(os.path.join(self.path, top)):  # orphans of a delete
                    self._discard(os.path.join(self.path, top, n))
        for n in os.listdir(self.path):
            if n.startswith((STAGING, DELETING)):
                remove_tree(os.path.join(self.path, n))
        try:
            for d in self._top_dirs():
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(d)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.marker)
        except OSError as e:
            raise DriverError(f"cannot delete storage pool {self.pool}: {e.strerror} "
                              f"({e.filename})") from e
        if marker.get("created_dir"):
            with contextlib.suppress(OSError):  # ENOTEMPTY: someone put files there; keep them
                os.rmdir(self.path)

    def usage(self) -> PoolUsage:
        return statvfs_usage(self.pool, self.path)

    def _require(self) -> None:
        if not os.path.isdir(self.containers_dir) or not os.path.isdir(self.images_dir):
            raise NotFound(f"storage pool {self.pool} does not exist at {self.path}")

    def _staging(self, tag: str, mode: int) -> str:
        path = temp_name(self.path, STAGING, tag)
        try:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # not subject to the umask
        except OSError as e:
            raise DriverError(f"storage pool {self.pool}: cannot create {path}: {e.strerror}") from e
        return path

    def _discard(self, path: str) -> None:
        """Move a volume out of place atomically, then remove it."""
        grave = temp_name(self.path, DELETING, os.path.basename(path))
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        except OSError as e:
            raise DriverError(f"cannot remove {path}: {e.strerror}") from e
        remove_tree(grave)

    # -- images --------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.images_dir) if NAME_RE.match(n))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def create_image(self, fingerprint: str) -> Iterator[str]:
        final = self.image_path(fingerprint)
        self._require()
        if os.path.lexists(final):
            raise AlreadyExists(f"image {fingerprint} already exists in storage pool {self.pool}")
        staging = self._staging(fingerprint, 0o755)  # becomes the rootfs' "/": 0755
        with removed_on_error(staging):
            yield staging
        try:
            rename_noreplace(staging, final)
        except OSError as e:
            remove_tree(staging)
            if isinstance(e, FileExistsError):
                return  # made concurrently; same fingerprint, same content
            raise DriverError(f"cannot store image {fingerprint} in pool {self.pool}: {e.strerror}") from e

    def delete_image(self, fingerprint: str) -> None:
        self._discard(self.image_path(fingerprint))

    # -- containers ----------------------------------------------------------------------
    def list_containers(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.containers_dir) if NAME_RE.match(n))
        except FileNotFoundError:
            return []

    def create_container(self, name: str, fingerprint: str) -> str:
        cdir = self._container_dir(name)
        image = self.image_path(fingerprint)
        self._require()
        if not os.path.isdir(image):
            raise NotFound(f"image {fingerprint} not found in storage pool {self.pool}")
        if os.path.lexists(cdir):
            raise self._volume_exists(name)
        self._copy_volume(image, cdir, name, f"create the volume of container {name}")
        return os.path.join(cdir, "rootfs")

    def _copy_volume(self, src: str, final: str, tag: str, what: str, *,
                     container: bool = True) -> None:
        """Copy the tree ``src`` into place at ``final`` through a staging directory.

        A container volume is the staging directory itself (``rootfs/`` inside it); a
        snapshot is the copied tree. Either way it appears by one atomic rename, and a
        failure (disk full...) removes the staging directory.
        """
        staging = self._staging(tag, PRIVATE_MODE)
        inner = os.path.join(staging, "rootfs")
        with removed_on_error(staging):
            try:
                proc.run(["cp", "-a", "--reflink=auto", "--", src, inner])
                rename_noreplace(staging if container else inner, final)
            except CommandFailed as e:
                raise DriverError(f"cannot {what} in storage pool {self.pool}: {_last_line(e)}") from e
            except FileExistsError as e:
                raise AlreadyExists(f"cannot {what} in storage pool {self.pool}: "
                                    f"{os.path.basename(final)} already exists") from e
            except OSError as e:
                raise DriverError(f"cannot {what} in storage pool {self.pool}: {e.strerror}") from e
        if not container:
            remove_tree(staging)  # now empty

    def _check_unused(self, name: str) -> None:
        check_unused(name, self._container_dir(name))

    def delete_container(self, name: str) -> None:
        cdir = self._container_dir(name)
        snaps = self._snapshots_of(name)
        if os.path.lexists(cdir):
            self._check_unused(name)
        # snapshots first: a failure then leaves the volume, and a retry finishes the job
        self._discard(snaps)
        self._discard(cdir)

    def rename_container(self, old: str, new: str) -> str:
        src, dst = self._container_dir(old), self._container_dir(new)
        if not os.path.isdir(src):
            raise self._no_volume(old)
        if mounts_under(src):
            raise Conflict(f"container {old}'s volume is in use", hint="stop the container first")
        try:
            rename_noreplace(src, dst)
        except FileExistsError as e:
            raise self._volume_exists(new) from e
        except OSError as e:
            raise DriverError(f"cannot rename volume {old} to {new}: {e.strerror}") from e
        ssrc, sdst = self._snapshots_of(old), self._snapshots_of(new)
        if os.path.lexists(ssrc):
            try:
                rename_noreplace(ssrc, sdst)
            except OSError as e:
                os.rename(dst, src)  # undo: volume and snapshots keep one name
                raise DriverError(f"cannot rename the snapshots of {old} to {new}: {e.strerror}") from e
        return os.path.join(dst, "rootfs")

    def container_usage(self, name: str) -> int | None:
        cdir = self._container_dir(name)
        try:
            return tree_usage(cdir)
        except FileNotFoundError as e:
            raise self._no_volume(name) from e

    def containers_usage_begin(self, names: Sequence[str]
                               ) -> Callable[[], dict[str, int | None]]:
        return named_trees_usage_begin({name: self._container_dir(name) for name in names})

    # -- snapshots, restore, copy (full copies) ----------------------------------------------
    def create_snapshot(self, name: str, snap: str) -> str:
        src = self._require_volume(name)
        final = self.snapshot_path(name, snap)
        if os.path.lexists(final):
            raise self._snapshot_exists(name, snap)
        try:
            private_dir(self._snapshots_of(name))
        except OSError as e:
            raise DriverError(f"cannot create snapshot {name}/{snap}: {e.strerror}") from e
        self._copy_volume(src, final, name, f"snapshot {name} as {snap}", container=False)
        return final

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._discard(self.snapshot_path(name, snap))

    def list_snapshots(self, name: str) -> list[str]:
        self._require_volume(name)
        try:
            return sorted(n for n in os.listdir(self._snapshots_of(name)) if NAME_RE.match(n))
        except FileNotFoundError:
            return []

    def restore_snapshot(self, name: str, snap: str) -> str:
        src = self._require_snapshot(name, snap)
        cdir = self._container_dir(name)
        self._check_unused(name)
        staging = self._staging(name, PRIVATE_MODE)
        with removed_on_error(staging):
            try:
                proc.run(["cp", "-a", "--reflink=auto", "--", src, os.path.join(staging, "rootfs")])
                if os.path.lexists(cdir):
                    rename_exchange(staging, cdir)  # staging now holds the old volume
                else:
                    rename_noreplace(staging, cdir)
                    return self.container_path(name)
            except CommandFailed as e:
                raise DriverError(f"cannot restore {name} from snapshot {snap} in storage pool "
                                  f"{self.pool}: {_last_line(e)}") from e
            except OSError as e:
                raise DriverError(f"cannot restore {name} from snapshot {snap}: {e.strerror}") from e
        remove_tree(staging)  # the old volume, only now that the new one is in place
        return self.container_path(name)

    def copy_container(self, src: str, dst: str, *, snapshot: str | None = None) -> str:
        source = self._copy_source(src, snapshot)
        cdir = self._container_dir(dst)
        if os.path.lexists(cdir):
            raise self._volume_exists(dst)
        self._copy_volume(source, cdir, dst, f"copy {src} to {dst}")
        return self.container_path(dst)

    # -- streaming (tar, full only) --------------------------------------------------------
    @contextlib.contextmanager
    def send(self, name: str, snap: str, *, since: str | None = None) -> Iterator[BinaryIO]:
        if since is not None:
            raise self._unsupported("incremental send")
        path = self._require_snapshot(name, snap)
        argv = ["tar", "--create", "--file=-", "--directory", path, "--one-file-system",
                "--sparse", *_TAR_KEEP, "."]
        with command_stream(argv, what=f"sending snapshot {name}/{snap}") as stream:
            yield stream

    def receive(self, name: str, stream: Readable, *, snap: str) -> str:
        final = self.snapshot_path(name, snap)
        self._require()
        if os.path.lexists(final):
            raise self._snapshot_exists(name, snap)
        staging = self._staging(f"{name}-{snap}", 0o700)
        tree = os.path.join(staging, "rootfs")
        with removed_on_error(staging):
            try:
                os.mkdir(tree, 0o700)  # tar gives it the sent root's owner and mode
                # streams come from a peer's send(), but GNU tar also refuses '..' members and
                # defers risky symlinks, so a hostile archive stays inside the staging dir
                feed_command(["tar", "--extract", "--file=-", "--directory", tree,
                              "--same-owner", "--preserve-permissions", *_TAR_KEEP],
                             stream, what=f"receiving snapshot {name}/{snap}")
                private_dir(self._snapshots_of(name))
                rename_noreplace(tree, final)
            except FileExistsError as e:
                raise self._snapshot_exists(name, snap) from e
            except OSError as e:
                raise DriverError(f"cannot receive snapshot {name}/{snap}: {e.strerror}") from e
        remove_tree(staging)
        if not os.path.lexists(self._container_dir(name)):
            try:
                self._copy_volume(final, self._container_dir(name), name,
                                  f"create the volume of container {name}")
            except BaseException:
                self._discard(final)  # nothing of a failed receive stays
                with contextlib.suppress(OSError):
                    os.rmdir(self._snapshots_of(name))
                raise
        return self.container_path(name)
