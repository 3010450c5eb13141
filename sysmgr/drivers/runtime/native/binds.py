"""Disks of the native runtime: host files and directories (and custom volumes) bound into a
container, at start and into a running one (layer: runtime driver).

A disk is always a *detached tree* first: ``open_tree(OPEN_TREE_CLONE)`` of its source, in
the host's mount namespace (a copy of a shared mount is its peer, so ``slave`` propagation
follows the host), given its attributes while nothing can see it (:func:`set_attrs`:
read-only, propagation, an idmap through the container's user namespace), then attached on
a mount point made inside the container's root without following a symlink out of it
(:func:`attach`, by fd).

For an unprivileged container the tree goes through a mount namespace the *host* owns on its
way in (:func:`park`, then a copy by the container's side): the kernel locks every mount it
copies into a namespace owned by a less privileged user namespace, so the container's root
can neither remount a read-only disk writable nor unmount it to see what is beneath.

At start, A opens and stages the trees and B attaches them (:mod:`.child`); into a running
container, a forked helper does both (:mod:`.hotplug`). This module is run by those
children: only :mod:`sysmgr._util.linux` and :mod:`sysmgr._util.safefs` calls.
"""

from __future__ import annotations

import os
import stat
from typing import Sequence

from sysmgr._util import linux, safefs
from sysmgr.drivers.runtime.native.plan import Mount

#: bind flags -> the mount_setattr(2) attributes that say the same
_ATTRS = ((linux.MS_RDONLY, linux.MOUNT_ATTR_RDONLY), (linux.MS_NOSUID, linux.MOUNT_ATTR_NOSUID),
          (linux.MS_NODEV, linux.MOUNT_ATTR_NODEV), (linux.MS_NOEXEC, linux.MOUNT_ATTR_NOEXEC))
_PROPAGATION = linux.MS_PRIVATE | linux.MS_SLAVE | linux.MS_SHARED | linux.MS_UNBINDABLE


def open_tree(source: str, flags: int) -> int:
    """A detached copy of the mount at ``source`` (recursive when ``flags`` has MS_REC)."""
    rec = linux.AT_RECURSIVE if flags & linux.MS_REC else 0
    return linux.open_tree(source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | rec)


def open_binds(mounts: Sequence[Mount]) -> list[int]:
    """A detached tree of each bind's source, in order."""
    return [open_tree(m.source, m.flags) for m in mounts if m.bind]


def set_attrs(tree: int, flags: int, propagation: int, userns_fd: int | None) -> None:
    """Give the detached bind ``tree`` its flags (``MS_RDONLY``...), its propagation
    (private when none is given) and, with ``userns_fd``, an idmap through that user
    namespace: all before it is attached anywhere."""
    attrs = sum(attr for ms, attr in _ATTRS if flags & ms)
    linux.mount_setattr(tree, attr_set=attrs, propagation=propagation & _PROPAGATION
                        or linux.MS_PRIVATE, userns_fd=userns_fd,
                        recursive=bool(flags & linux.MS_REC))


def park(tree: int, parent: str, index: int) -> str:
    """Move the detached mount ``tree`` to ``parent/index`` (a directory or an empty file,
    as the tree's root is); returns that path."""
    os.makedirs(parent, 0o755, exist_ok=True)
    target = f"{parent}/{index}"
    if stat.S_ISDIR(os.fstat(tree).st_mode):
        os.mkdir(target, 0o755)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    linux.move_mount(tree, target)
    return target


def bind_trees(mounts: Sequence[Mount], binds: Sequence[int | str]) -> list[int]:
    """A detached tree per bind to attach: the one opened before (an int), or a copy of
    a parked one (a path). Take them before the namespace is made private: a copy of a
    slave keeps its master."""
    return [b if isinstance(b, int) else open_tree(b, m.flags)
            for m, b in zip((m for m in mounts if m.bind), binds)]


def attach(root: safefs.Root, path: str, tree: int) -> None:
    """Attach ``tree`` (attributes set) on ``path`` inside ``root``: made if missing, a
    directory or a file to match, reached without following a symlink out of the root
    (:func:`safefs.mountpoint`, then ``move_mount`` to that fd). Closes ``tree``.

    Raises:
        SysmgrError: the mount point cannot be made (a file where a directory is mounted...).
        OSError: the kernel refused the mount.
    """
    try:
        target = safefs.mountpoint(root, path, directory=stat.S_ISDIR(os.fstat(tree).st_mode))
        try:
            linux.move_mount_fd(tree, target)
        finally:
            os.close(target)
    finally:
        os.close(tree)
