"""Reaching a container's files: read, write, list and stat them inside its root.

Files are resolved inside the container's root (its live root while it runs, so its mounts
are seen), never following a link out of it. A change is made as the container's root: through
a running container's own user namespace, or on a stopped one's volume with the ids its
shifted files carry on disk. Split from :mod:`.execution` so that ``exec`` does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, TypeVar

from sysmgr._util import safefs
from sysmgr.drivers.runtime.base import STOPPED, InitRecord
from sysmgr.engine import idshift, records
from sysmgr.engine.host import Host
from sysmgr.errors import ValidationError

T = TypeVar("T")


def file_root(host: Host, name: str) -> str:
    """Where the container's files are seen from: its live root when running (so its
    mounts are visible), else its root filesystem on the pool."""
    return _root_and_init(host, name)[0]


def _root_and_init(host: Host, name: str) -> tuple[str, InitRecord | None]:
    """:func:`file_root` and the init it goes through (None: the container is stopped)."""
    rec = host.store.container(name)
    init = records.init_record(rec)
    if init is not None and host.runtime_for(init).status(init).state != STOPPED and init.pid > 0:
        return f"/proc/{init.pid}/root", init
    return host.pool_driver(rec.pool).container_path(name), None


def _as_root(host: Host, name: str, fn: Callable[[str, Callable[[int, int], tuple[int, int]]], T]
             ) -> T:
    """Run ``fn(root, ids)`` where a change inside the container is made: through its live
    root as its root (an unprivileged container's root filesystem is idmapped: the host's
    root cannot create files in it), or on a stopped one's volume, where ``ids`` turns the
    container's ids into those its shifted files carry on disk."""
    root, init = _root_and_init(host, name)
    if init is not None:
        return host.runtime_for(init).as_container_root(init, lambda: fn(root, lambda u, g: (u, g)))
    volatile = host.store.container(name).volatile
    return fn(root, lambda u, g: idshift.disk_ids(volatile, u, g))


def put_file(host: Host, name: str, path: str, src: BinaryIO, *, mode: int, uid: int, gid: int,
             mkdir: bool) -> None:
    """Write a file inside; ``uid``/``gid`` are the container's ids (see :func:`_as_root`)."""
    def push(root: str, ids: Callable[[int, int], tuple[int, int]]) -> None:
        u, g = ids(uid, gid)
        safefs.push(root, path, src, mode=mode, uid=u, gid=g, mkdir_parents=mkdir)

    _as_root(host, name, push)


def make_dir(host: Host, name: str, path: str, *, mode: int, uid: int, gid: int,
             parents: bool) -> None:
    """Create a directory inside (or give an existing one ``mode`` and owner)."""
    def mk(root: str, ids: Callable[[int, int], tuple[int, int]]) -> None:
        u, g = ids(uid, gid)
        safefs.mkdir(root, path, mode=mode, uid=u, gid=g, parents=parents)

    _as_root(host, name, mk)


def make_symlink(host: Host, name: str, path: str, target: str, *, uid: int, gid: int) -> None:
    """Create (or replace) the symlink ``path -> target`` inside."""
    _as_root(host, name, lambda root, ids: safefs.symlink(root, path, target,
                                                         owner=ids(uid, gid)))


def delete_file(host: Host, name: str, path: str, *, recursive: bool) -> None:
    """Remove a file, a link or an empty directory inside (``recursive``: any directory)."""
    if path.strip("/") == "":
        raise ValidationError("refusing to delete the container's root directory")
    _as_root(host, name, lambda root, _ids: safefs.remove(root, path, recursive=recursive))


@dataclass(frozen=True)
class DirEntry:
    """One entry of a directory inside a container: owner in the container's ids."""

    name: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str | None = None   # a symlink's


def list_dir(host: Host, name: str, path: str) -> list[DirEntry]:
    """The entries of a directory inside, sorted by name (for ``file pull -r``)."""
    root, init = _root_and_init(host, name)
    if init is not None:
        found = host.runtime_for(init).as_container_root(init, lambda: safefs.listdir(root, path))
        ids: Callable[[int, int], tuple[int, int]] = lambda u, g: (u, g)  # noqa: E731
    else:
        found = safefs.listdir(root, path)
        volatile = host.store.container(name).volatile
        ids = lambda u, g: idshift.container_ids(volatile, u, g)  # noqa: E731
    return [DirEntry(n, st.st_mode, *ids(st.st_uid, st.st_gid), st.st_size, target)
            for n, st, target in found]


@dataclass(frozen=True)
class FileInfo:
    """A file inside a container as its processes see it: owner in the container's ids."""

    mode: int
    uid: int
    gid: int
    size: int


def stat_file(host: Host, name: str, path: str) -> FileInfo:
    """The file at ``path`` inside (links followed inside the root). A running container's
    file is asked as its root would ask (the kernel answers in the container's ids, whether
    its root filesystem is idmapped or shifted); a stopped one's is read on the pool and its
    on-disk ids translated back."""
    root, init = _root_and_init(host, name)
    if init is not None:
        st = host.runtime_for(init).as_container_root(init, lambda: safefs.stat(root, path))
        uid, gid = st.st_uid, st.st_gid
    else:
        st = safefs.stat(root, path)
        uid, gid = idshift.container_ids(host.store.container(name).volatile, st.st_uid, st.st_gid)
    return FileInfo(st.st_mode, uid, gid, st.st_size)


def read_file(host: Host, name: str, path: str) -> bytes:
    return safefs.read_file(file_root(host, name), path)


def pull_file(host: Host, name: str, path: str, dst: BinaryIO) -> None:
    safefs.pull(file_root(host, name), path, dst)
