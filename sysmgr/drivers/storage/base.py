"""The storage pool driver interface.

A pool holds image volumes (read-only templates, one per image fingerprint), container
volumes (the writable root filesystem of one container) and snapshots of container volumes
(read-only, named per container). Drivers declare what they can do with :class:`StorageInfo`
capability flags; callers branch on the flags, never on the name. Operations a driver's flags
say it lacks raise :class:`NotImplementedError` (a caller bug: it should have checked the flag).

Streaming (:meth:`StoragePool.send` / :meth:`StoragePool.receive`) moves one snapshot between
two pools whose ``info.stream_format`` is equal: full, or incremental from a snapshot both
sides have. The stream is a plain readable binary object, so the engine can write it to a
backup file, pipe it into another local pool, or copy it over an SSH channel. The two helpers
at the bottom (:func:`command_stream`, :func:`feed_command`) implement both ends on top of a
subprocess for drivers whose formats come from a tool (``btrfs send``, ``tar``).

What the drivers share lives here once, so no driver imports another: name and config checks
(:func:`check_name`, :func:`check_config`, :func:`pool_dir`), the pool layout's fixed names
(:data:`MARKER`, the :data:`STAGING` / :data:`DELETING` prefixes, :func:`temp_name`,
:func:`remove_stale`) and host-filesystem helpers (mounts, tree removal and usage, the atomic
:func:`rename_exchange`).

Layer: drivers (storage).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import ctypes
import os
import re
import shutil
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, ClassVar, Collection, Iterator, Mapping, Sequence

from sysmgr._util import safefs
# the streams of tool-backed formats, re-exported: the drivers take them from here
from sysmgr.drivers.storage.tool_streams import (  # noqa: F401
    Readable, command_stream, feed_command)
from sysmgr.errors import (
    AlreadyExists,
    Conflict,
    DriverError,
    NotFound,
    SysmgrError,
    ValidationError,
)

MARKER = ".sysmgr-pool"      # in a pool's root: this directory is a sysmgr pool
STAGING = ".staging-"        # prefix of a volume being made (renamed into place when complete)
DELETING = ".deleting-"      # prefix of a volume being removed (renamed out of place first)
# one path component, no leading dot (dot-names are the pool's own staging entries)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class StorageInfo:
    cow_snapshots: bool = False     # container-from-image, snapshots and copies in constant time
    quotas: bool = False            # root disk ``size`` can be enforced (set_quota)
    send_receive: bool = False      # snapshots can be streamed (migration, backups)
    incremental_send: bool = False  # send(..., since=) gives a delta against a common snapshot
    snapshots: bool = False         # snapshot/restore/copy work (full copies unless cow_snapshots)
    stream_format: str | None = None  # send/receive wire format: only equal formats interoperate


@dataclass(frozen=True)
class PoolUsage:
    used_bytes: int | None = None
    total_bytes: int | None = None


#: the top directories of a pool's two kinds of writable volume (and of their snapshots):
#: containers' root filesystems, and custom volumes (LXD's ``storage volume``)
CONTAINER_TOPS = ("containers", "snapshots")
CUSTOM_TOPS = ("custom", "custom-snapshots")


class StoragePool(abc.ABC):
    """One pool. Constructed cheaply (no I/O); ``create``/``mount`` touch the host.

    The container-volume operations work on ``tops`` (:data:`CONTAINER_TOPS`); the view
    :meth:`custom_volumes` runs the same operations on the pool's custom volumes."""

    name: ClassVar[str]            # driver name, e.g. "dir"
    info: ClassVar[StorageInfo]
    tops: tuple[str, str] = CONTAINER_TOPS
    # the config key names the driver reads; any other (but user.*) is refused. Validators
    # and docs are the model's pool key table, which the engine checks before making a
    # driver: this guard only catches a typo when a driver is constructed directly
    config_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        """``default_path`` is where the pool lives when the config gives no ``source``.

        Raises:
            ValidationError: a config key the driver does not read (``user.*`` is free-form).
        """
        self.pool = pool
        self.config = dict(config)
        self.default_path = default_path
        check_config(self.name, pool, self.config, self.config_keys)

    def custom_volumes(self) -> "StoragePool":
        """This pool seen through its custom volumes: every container-volume call (make one
        from an image, path, snapshot, copy, quota, send/receive, delete...) acts on the
        custom volume of that name instead. A view of the same pool: no I/O."""
        view = copy.copy(self)
        view.tops = CUSTOM_TOPS
        return view

    @property
    def is_custom(self) -> bool:
        return self.tops == CUSTOM_TOPS

    # -- pool ----------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self) -> None:
        """Create the pool on the host (idempotent)."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Remove the pool from the host; only what sysmgr created."""

    def mount(self) -> None:
        """Make the pool usable after a host restart (idempotent)."""

    def needs_mount(self) -> bool:
        """Whether :meth:`mount` must run before the pool can be used (a cheap look: the
        engine asks on every first use of a pool in a process). Default: never."""
        return False

    @abc.abstractmethod
    def usage(self) -> PoolUsage: ...

    def resize(self, size_bytes: int) -> None:
        """Grow the pool to ``size_bytes`` while it is in use (``lxc storage set POOL
        size=``), where the pool's size is sysmgr's to change (a loop file it manages);
        Conflict elsewhere, and for a smaller size."""
        raise Conflict(f"storage pool {self.pool} (driver {self.name}) has no size sysmgr "
                       "can change")

    # -- images --------------------------------------------------------------------------
    def has_image(self, fingerprint: str) -> bool:
        return os.path.isdir(self.image_path(fingerprint))

    @abc.abstractmethod
    @contextlib.contextmanager
    def create_image(self, fingerprint: str) -> Iterator[str]:
        """Yield an empty staging directory to fill with the image's rootfs. On normal exit
        the volume becomes the image (read-only template); on an exception it is removed."""

    @abc.abstractmethod
    def image_path(self, fingerprint: str) -> str: ...

    @abc.abstractmethod
    def delete_image(self, fingerprint: str) -> None: ...

    def list_images(self) -> list[str]:
        """Fingerprints of the image volumes in the pool (for observing actual state)."""
        raise NotImplementedError

    # -- containers ----------------------------------------------------------------------
    @abc.abstractmethod
    def create_container(self, name: str, fingerprint: str) -> str:
        """Create a writable volume for ``name`` from an image; return its rootfs path.
        On failure nothing is left behind."""

    @abc.abstractmethod
    def container_path(self, name: str) -> str: ...

    def has_container(self, name: str) -> bool:
        return os.path.isdir(self.container_path(name))

    def list_containers(self) -> list[str]:
        """Names of the container volumes in the pool (for observing actual state)."""
        raise NotImplementedError

    @abc.abstractmethod
    def delete_container(self, name: str) -> None:
        """Remove the volume (idempotent: already gone is success)."""

    @abc.abstractmethod
    def rename_container(self, old: str, new: str) -> str: ...

    @abc.abstractmethod
    def container_usage(self, name: str) -> int | None:
        """Bytes used by the container's volume, or None when unknown."""

    def containers_usage(self, names: Sequence[str]) -> dict[str, int | None]:
        """:meth:`container_usage` of several containers at once (a listing's). None:
        unknown, or gone."""
        return self.containers_usage_begin(names)()

    def containers_usage_begin(self, names: Sequence[str]
                               ) -> Callable[[], dict[str, int | None]]:
        """:meth:`containers_usage`, begun now and read by the call returned: drivers that
        measure many volumes in one pass by a program (``du``) start it here, so a listing
        reads its other figures meanwhile."""
        return lambda: self._each_usage(names)

    def _each_usage(self, names: Sequence[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name in names:
            try:
                out[name] = self.container_usage(name)
            except SysmgrError:
                out[name] = None
        return out

    # -- errors and checks shared by the drivers -------------------------------------------
    def _refuse_if_in_use(self) -> None:
        """Conflict while the pool holds containers or custom volumes (before a delete)."""
        for view in (self, self.custom_volumes()):
            left = view.list_containers()
            if left:
                kind = "storage volumes" if view.is_custom else "containers"
                raise Conflict(f"storage pool {self.pool} still holds {kind}: {', '.join(left)}")

    def _no_volume(self, name: str) -> NotFound:
        if self.is_custom:
            return NotFound(f"storage volume {name} not found in storage pool {self.pool}")
        return NotFound(f"container {name} has no volume in storage pool {self.pool}")

    def _volume_exists(self, name: str) -> AlreadyExists:
        if self.is_custom:
            return AlreadyExists(f"storage volume {name} already exists in storage pool {self.pool}")
        return AlreadyExists(f"container {name} already has a volume in storage pool {self.pool}")

    def _snapshot_exists(self, name: str, snap: str) -> AlreadyExists:
        return AlreadyExists(f"snapshot {name}/{snap} already exists in storage pool {self.pool}")

    def _require_volume(self, name: str) -> str:
        """The container's volume path; NotFound when it has none."""
        path = self.container_path(name)
        if not os.path.isdir(path):
            raise self._no_volume(name)
        return path

    def _require_snapshot(self, name: str, snap: str) -> str:
        """The snapshot's path; NotFound when there is no such snapshot."""
        path = self.snapshot_path(name, snap)
        if not os.path.isdir(path):
            raise NotFound(f"snapshot {name}/{snap} not found in storage pool {self.pool}")
        return path

    def _copy_source(self, src: str, snapshot: str | None) -> str:
        """What :meth:`copy_container` copies: ``src``'s volume, or its snapshot ``snapshot``."""
        return (self._require_snapshot(src, snapshot) if snapshot is not None
                else self._require_volume(src))

    # -- snapshots, restore, copy (info.snapshots) -----------------------------------------
    def _unsupported(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"storage driver {self.name} does not support {what}")

    def snapshot_path(self, name: str, snap: str) -> str:
        """Host path of snapshot ``snap`` of container ``name`` (read-only by convention)."""
        raise self._unsupported("snapshots")

    def create_snapshot(self, name: str, snap: str) -> str:
        """Take a read-only snapshot ``snap`` of the container's volume; return its path.

        Constant time where ``info.cow_snapshots``, a full copy otherwise. Raises NotFound
        (no volume), AlreadyExists (the name is taken); on failure nothing is left behind.
        """
        raise self._unsupported("snapshots")

    def delete_snapshot(self, name: str, snap: str) -> None:
        """Remove a snapshot (idempotent: already gone is success)."""
        raise self._unsupported("snapshots")

    def list_snapshots(self, name: str) -> list[str]:
        """Names of the container's snapshots, sorted by name. NotFound if it has no volume."""
        raise self._unsupported("snapshots")

    def rename_snapshot(self, name: str, snap: str, new: str) -> str:
        """Rename snapshot ``snap`` of ``name`` to ``new`` in one atomic step (its contents,
        and where snapshots have identities its UUID, stay: incremental sends still find
        it); return its new path. NotFound (no such snapshot), AlreadyExists (``new`` is
        taken)."""
        src = self._require_snapshot(name, snap)
        dst = self.snapshot_path(name, new)
        try:
            safefs.rename_noreplace(src, dst)
        except FileExistsError:
            raise self._snapshot_exists(name, new) from None
        except OSError as e:
            raise DriverError(f"cannot rename snapshot {name}/{snap} to {new}: "
                              f"{e.strerror or e}") from e
        return dst

    def restore_snapshot(self, name: str, snap: str) -> str:
        """Make the container's volume a writable copy of snapshot ``snap``; return its path.

        The other snapshots are kept. The new volume is built beside the old one and swapped
        in atomically; the old one is removed only after that, so a failure at any point
        leaves either the old or the new volume in place, never neither. Recreates a missing
        volume. Raises NotFound (no such snapshot), Conflict (the volume is in use).
        """
        raise self._unsupported("snapshots")

    def copy_container(self, src: str, dst: str, *, snapshot: str | None = None) -> str:
        """Create volume ``dst`` as a writable copy of ``src`` (or of its snapshot
        ``snapshot``); return its path. Snapshots are not copied. Constant time where
        ``info.cow_snapshots``. The copy is independent of the source. Its quota is whatever
        the driver carries over: call :meth:`set_quota` to give it its own. On failure
        nothing is left behind."""
        raise self._unsupported("copies")

    # -- quotas (info.quotas) ------------------------------------------------------------
    def set_quota(self, name: str, size_bytes: int | None) -> None:
        """Limit the container's volume to ``size_bytes`` (what the container sees as its
        disk size: shared blocks count), or remove the limit with None. Writes past the limit
        fail inside with EDQUOT. Removing a limit is a no-op success on drivers without
        quotas; setting one raises NotImplementedError there."""
        if size_bytes is None:
            return
        raise self._unsupported("quotas")

    # -- streaming (info.send_receive) -----------------------------------------------------
    def send(self, name: str, snap: str, *, since: str | None = None
             ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Stream snapshot ``snap`` of container ``name``.

        Use as ``with pool.send(name, snap) as stream:``, read ``stream`` to its end (b""),
        and trust what was read only once the block has exited cleanly: the producer's
        failure (or a stream left unread) is raised as DriverError on exit. Leaving the block
        with an exception stops the producer. ``since`` names an older snapshot of the same
        container that the receiving pool already holds; the stream then carries only the
        difference (``info.incremental_send`` only). The format is ``info.stream_format``.
        """
        raise self._unsupported("send/receive")

    def receive(self, name: str, stream: Readable, *, snap: str) -> str:
        """Read a :meth:`send` stream to its end and store it as snapshot ``snap`` of
        container ``name``; create the container's volume from it when there is none.
        Return the container's path.

        An existing volume is left untouched: :meth:`restore_snapshot` brings it to the
        received state (migration: receive full, receive incremental, restore). An
        incremental stream needs its base snapshot in this pool (received earlier). Raises
        AlreadyExists (the snapshot exists), DriverError (bad or truncated stream, pool
        full); on failure nothing of the received snapshot is left.
        """
        raise self._unsupported("send/receive")

    def snapshot_ids(self, name: str) -> dict[str, tuple[str, str]]:
        """Snapshot name -> (its own UUID, the UUID it was received from, or ""), for the
        snapshots of ``name`` that have identities (``info.incremental_send``; else empty).

        Copies and moves match a common base by these, never by name: a snapshot received
        from ``S`` has ``S``'s UUID as its received UUID, whatever either is called."""
        return {}

    # -- host ------------------------------------------------------------------------------
    @classmethod
    def check_host(cls) -> None:
        """Raise DriverUnavailable (with an install hint) if this host lacks what the driver
        needs; no side effects. Lets ``init`` pick a fallback driver before touching anything."""


# -- names, config and host-filesystem helpers shared by the drivers -------------------------

def check_name(what: str, value: str) -> str:
    """Reject names that are not a single safe path component."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValidationError(
            f"invalid {what} {value!r}: use letters, digits, '-', '_' and '.', "
            "not starting with '.' or '-' (at most 128 characters)")
    return value


def check_config(driver: str, pool: str, config: Mapping[str, str], known: Collection[str]) -> None:
    """Reject config keys not in ``known`` (``user.*`` is always allowed)."""
    for key in config:
        if key not in known and not key.startswith("user."):
            names = ", ".join(sorted(known)) or "none"
            raise ValidationError(f"storage pool {pool}: unknown config key {key!r} for driver "
                                  f"{driver} (known: {names})", hint="user.* keys are free-form")


def pool_dir(pool: str, config: Mapping[str, str], default_path: str) -> str:
    """The pool's directory: ``source`` when set, else ``default_path``; must be absolute."""
    path = config.get("source") or default_path
    if not os.path.isabs(path):
        raise ValidationError(f"storage pool {pool}: source {path!r} must be an absolute path")
    return os.path.normpath(path)


def unescape_mountinfo(field: str) -> str:
    """Undo the octal escapes (``\\040`` for a space...) of a /proc/*/mountinfo field."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: str) -> list[str]:
    """Mount points (in this mount namespace) at or below ``path``."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = unescape_mountinfo(line.split()[4])
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                found.append(mp)
    return found


def check_unused(name: str, path: str) -> None:
    """Conflict when anything is mounted at or below the container's volume ``path``."""
    mounts = mounts_under(path)
    if mounts:
        raise Conflict(f"container {name}'s volume is in use: {mounts[0]} is mounted",
                       hint="stop the container first")


def statvfs_usage(pool: str, path: str) -> PoolUsage:
    """Used and total bytes of the filesystem holding ``path`` (a pool that owns it whole)."""
    try:
        st = os.statvfs(path)
    except FileNotFoundError as e:
        raise NotFound(f"storage pool {pool}: {path} does not exist") from e
    return PoolUsage(used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
                     total_bytes=st.f_blocks * st.f_frsize)


def remove_tree(path: str) -> None:
    """Remove the tree at ``path`` (already gone is fine).

    Symlinks are never followed (``shutil.rmtree`` works with fds and ``O_NOFOLLOW``), and a
    tree with anything mounted under it is refused: a leaked bind mount of a host directory
    must not be emptied. Directories without write/search permission are opened up and the
    removal retried (matters when not root).
    """
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    mounts = mounts_under(path)
    if mounts:
        raise Conflict(f"refusing to remove {path}: {mounts[0]} is mounted under it")
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    for dirpath, _dirs, _files in os.walk(path, followlinks=False):
        with contextlib.suppress(OSError):
            st = os.lstat(dirpath)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(dirpath, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise DriverError(f"cannot remove {path}: {e.strerror} ({e.filename})") from e


@contextlib.contextmanager
def removed_on_error(path: str) -> Iterator[None]:
    """Remove the staging tree ``path`` when the block fails, then let the error through."""
    try:
        yield
    except BaseException:
        remove_tree(path)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(parent: str, kind: str, tag: str) -> str:
    """A unique name for a staging/deleting entry of this process inside ``parent``."""
    import secrets  # (hashlib and hmac cost every reader of a pool ~2 ms at start-up)

    return os.path.join(parent, f"{kind}{tag}-{os.getpid()}-{secrets.token_hex(4)}")


_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def rename_exchange(a: str, b: str) -> None:
    """Swap ``a`` and ``b`` atomically (``renameat2(RENAME_EXCHANGE)``; both must exist).

    Replacing a volume this way means there is no moment without one in place.
    """
    r = _libc.renameat2(ctypes.c_int(-100), os.fsencode(a), ctypes.c_int(-100),
                        os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE))
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), a, None, b)


def remove_stale(parent: str, remove: Callable[[str], None] = remove_tree) -> list[str]:
    """Remove staging/deleting leftovers whose creating process is gone; return their names.

    ``remove`` deletes one leftover (drivers whose volumes are not plain trees pass theirs).
    """
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return removed
    for n in names:
        if not (n.startswith(STAGING) or n.startswith(DELETING)):
            continue
        parts = n.rsplit("-", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
        if pid and _pid_alive(pid):
            continue  # may be in progress in a live process (pid reuse only delays removal)
        remove(os.path.join(parent, n))
        removed.append(n)
    return removed
