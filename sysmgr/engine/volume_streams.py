"""One container volume (a snapshot of it, or its current tree) as a byte stream, and back:
what backups, copies between members and moves all send and receive.

A volume travels in one of two *kinds*:

- the pool's own ``send`` stream (``kind`` = the driver's ``info.stream_format``, e.g.
  ``btrfs``): only between pools of that format, incremental against a ``base`` snapshot
  the receiver holds (matched there by the base's UUID, not by its name), and keeping the
  blocks that snapshots share;
- ``tar``: a tar of the tree (numeric owners, ACLs, xattrs, sparse files), which any pool can
  receive.

:func:`open_volume` gives the sender's bytes, :func:`store_volume` stores them on the
receiving pool, :func:`kind_between` picks the kind two pools can share. The framing around
the bytes is the caller's: a backup cuts them into tar members in a zstd file
(:mod:`sysmgr.engine.backup`), a migration into frames on a channel
(:mod:`sysmgr.engine.migration`).

Layer: engine.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, BinaryIO, Callable

from sysmgr.drivers.storage.base import Readable, remove_tree
from sysmgr.engine import streams, volumes

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.drivers.storage.base import StoragePool
    from sysmgr.engine.volumes import Notes

TAR = "tar"


def native_kind(drv: "StoragePool") -> str | None:
    """The pool's own stream format, or None when it cannot stream its volumes."""
    return drv.info.stream_format if drv.info.send_receive else None


def kind_between(src: "StoragePool", dst_format: str | None) -> str:
    """The kind a volume of ``src`` travels in to a pool whose format is ``dst_format``."""
    mine = native_kind(src)
    return mine if mine is not None and mine == dst_format else TAR


def open_volume(drv: "StoragePool", name: str, snap: str | None, *, kind: str,
                base: str | None = None) -> contextlib.AbstractContextManager[BinaryIO]:
    """The bytes of snapshot ``snap`` of container ``name`` (None: its live tree, tar only),
    in ``kind``; a pool stream is a delta against the snapshot ``base`` when given."""
    if kind != TAR:
        assert snap is not None, "a pool stream is always of a snapshot"
        return drv.send(name, snap, since=base)
    path = drv.snapshot_path(name, snap) if snap is not None else drv.container_path(name)
    return streams.tar_stream(path, f"tar of {name}" + (f"/{snap}" if snap else ""))


def clear(path: str) -> None:
    """Empty a volume's root directory (keeping the directory itself)."""
    for n in os.listdir(path):
        remove_tree(os.path.join(path, n))


def store_volume(drv: "StoragePool", name: str, reader: Readable, *, kind: str,
                 snap: str | None, intent: "Notes | None" = None,
                 unpacked: Callable[[str], None] | None = None) -> str:
    """Store one stream as snapshot ``snap`` of container ``name`` (None: as the volume's
    tree, tar only); returns the volume's path.

    A pool stream is received as the snapshot (and makes the volume from it when there is
    none, see :meth:`StoragePool.receive`). A tar replaces the volume's tree (an empty
    volume is made first when there is none) and, with ``snap``, is then snapshotted
    (``unpacked(tree)`` runs before that, while the tree is still writable).
    """
    if kind != TAR:
        assert snap is not None, "a pool stream is always of a snapshot"
        with streams.piped(reader) as pipe:
            return drv.receive(name, pipe, snap=snap)
    if drv.has_container(name):
        vol = drv.container_path(name)
        clear(vol)
    else:
        vol = volumes.empty_volume(drv, name, intent)
    with streams.piped(reader) as pipe:
        streams.extract_tar(pipe, vol, f"unpacking {name}" + (f"/{snap}" if snap else ""))
    if unpacked is not None:
        unpacked(vol)
    if snap is not None:
        drv.create_snapshot(name, snap)
    return vol
