"""Subvolume operations of the btrfs driver: create, snapshot, delete, send and receive.

Every volume of a btrfs pool is a subvolume; these helpers wrap the ``btrfsutil`` binding
(creation, snapshots, deletion) and the ``btrfs send`` / ``btrfs receive`` tools, and turn
their failures into the driver's errors. They take paths: which path a volume has is the
pool's business (:mod:`~sysmgr.drivers.storage.btrfs.pool`).

Layer: drivers (storage).
"""

from __future__ import annotations

import contextlib
import errno
import os
from types import ModuleType
from typing import BinaryIO

from sysmgr._util.safefs import rename_noreplace
from sysmgr.drivers.storage.base import Readable, command_stream, feed_command, remove_tree
from sysmgr.drivers.storage.btrfs.host import btrfsutil, pool_error
from sysmgr.errors import AlreadyExists, DriverError


def is_subvolume(bu: ModuleType, path: str) -> bool:
    """Whether ``path`` is a subvolume (``bu`` is the btrfsutil binding)."""
    try:
        return bool(bu.is_subvolume(path))
    except OSError:
        return False  # missing, or not on btrfs


def purge(path: str) -> None:
    """Remove a leftover: a subvolume (with any nested ones), or a directory holding
    subvolumes (an interrupted receive), or a plain tree."""
    bu = btrfsutil()
    if not os.path.lexists(path):
        return
    try:
        if is_subvolume(bu, path):
            bu.delete_subvolume(path, recursive=True)
            return
        if os.path.isdir(path) and not os.path.islink(path):
            for n in os.listdir(path):
                child = os.path.join(path, n)
                if is_subvolume(bu, child):
                    bu.delete_subvolume(child, recursive=True)
    except OSError as e:
        raise DriverError(f"cannot remove {path}: {e.strerror or e}") from e
    remove_tree(path)


def create_subvolume(pool: str, path: str, mode: int, *, what: str) -> None:
    """An empty subvolume at ``path`` with ``mode`` (not subject to the umask); on failure
    nothing is left."""
    bu = btrfsutil()
    try:
        bu.create_subvolume(path)
        os.chmod(path, mode)
    except OSError as e:
        purge(path)
        raise pool_error(pool, what, e) from e


def snapshot_subvolume(pool: str, src: str, dst: str, *, read_only: bool, what: str) -> None:
    """Snapshot subvolume ``src`` at ``dst`` (atomic: it appears complete or not at all)."""
    bu = btrfsutil()
    try:
        bu.create_snapshot(src, dst, read_only=read_only)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise AlreadyExists(f"storage pool {pool}: cannot {what}: "
                                f"{os.path.basename(dst)} already exists") from e
        raise pool_error(pool, what, e) from e


def delete_subvolume(pool: str, path: str, what: str) -> None:
    """Delete a subvolume and any nested ones (already gone is success)."""
    bu = btrfsutil()
    try:
        bu.delete_subvolume(path, recursive=True)
    except OSError as e:
        if e.errno == errno.ENOENT or not os.path.lexists(path):
            return
        raise pool_error(pool, what, e) from e


def send_stream(path: str, parent: str | None, *, what: str
                ) -> contextlib.AbstractContextManager[BinaryIO]:
    """``btrfs send`` of the read-only snapshot ``path`` as a :func:`command_stream`; a delta
    against ``parent`` (an older snapshot the receiver holds) when given."""
    argv = ["btrfs", "send", "-q"]
    if parent is not None:
        argv += ["-p", parent]
    argv.append(path)
    return command_stream(argv, what=what)


def receive_snapshot(sdir: str, before: set[str], stream: Readable, final: str, *,
                     what: str) -> None:
    """``btrfs receive`` one snapshot into the directory ``sdir`` and name it ``final``.

    btrfs receive names the new subvolume after the sender's snapshot, and a read-only
    subvolume can be renamed only within its directory (moving it elsewhere is EROFS), so
    ``final`` must be in ``sdir``. ``before`` lists what ``sdir`` held already: on failure
    everything else is removed (and ``sdir`` itself when it was empty), then the error
    propagates unchanged.
    """
    try:
        feed_command(["btrfs", "receive", sdir], stream, what=what)
        got = sorted(set(os.listdir(sdir)) - before)
        if len(got) != 1:
            raise DriverError(f"{what}: the stream held {len(got)} subvolumes instead of one snapshot")
        # read-only with received_uuid set: the base for the next incremental receive
        if got[0] != os.path.basename(final):
            rename_noreplace(os.path.join(sdir, got[0]), final)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed receive leaves a partial subvolume
            for n in set(os.listdir(sdir)) - before:
                purge(os.path.join(sdir, n))
            if not before:
                os.rmdir(sdir)
        raise
