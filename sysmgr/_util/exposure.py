"""What keeps a container's files away from the host's other users (issue 9, host exposure).

Two rules, shared by the layout, the storage drivers, image import and backup import:

* **Private directories.** Every directory that holds container root filesystems, snapshots
  or images is :data:`PRIVATE_MODE` (0700, owned by root), as LXD keeps its ``images``
  directory 0700 and each instance volume's mount path 0100. A host user needs search
  permission on every component of a path, so a setuid-root binary or a 0666 device node
  inside a container or image is out of reach whatever its own mode. The container's root
  never needs to cross these directories on the host: the runtime sets the root filesystem
  up as host root before it drops into the container. :func:`tighten` brings directories of
  an existing root down to that mode (idempotent), so ``init`` and pool mounts repair roots
  made by older versions.
* **No device nodes from outside.** An image or a backup comes from someone else; a block
  device node in it (``/dev/sda`` 0666) would give whoever reaches it the host's disk. The
  runtime makes a container's ``/dev`` itself (a tmpfs with the standard nodes), so imported
  trees need none: :func:`find_devices` lists them and :func:`drop_devices` removes them
  (the caller warns, naming them, unless the user allowed devices).

Layer: _util (imports nothing of sysmgr).
"""

from __future__ import annotations

import os
import stat
from typing import Callable

PRIVATE_MODE = 0o700

#: receives one warning (a sentence) for the user
Warn = Callable[[str], None]

#: how many device node names a warning lists before "and N more"
WARN_NAMES = 8


def tighten(path: str, mode: int = PRIVATE_MODE) -> None:
    """Take from the directory ``path`` every permission bit that ``mode`` lacks
    (idempotent; a missing path or a symlink is left alone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


def private_dir(path: str) -> None:
    """``os.makedirs(path)`` with :data:`PRIVATE_MODE`, and an existing ``path`` tightened
    to it (the umask does not matter)."""
    os.makedirs(path, mode=PRIVATE_MODE, exist_ok=True)
    tighten(path)


def is_device(mode: int) -> bool:
    """Whether ``mode`` (an ``st_mode``) is a character or block device node."""
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def find_devices(root: str) -> list[str]:
    """Paths (relative to ``root``, sorted) of the character and block device nodes under
    ``root``; symlinks are never followed and other filesystems are not entered."""
    found: list[str] = []
    dev = os.lstat(root).st_dev
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if is_device(st.st_mode):
                    found.append(os.path.relpath(e.path, root))
                elif stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                    stack.append(e.path)
    return sorted(found)


def drop_devices(root: str) -> list[str]:
    """Remove the device nodes under ``root`` (see :func:`find_devices`); return their
    paths relative to ``root``. A node that vanished meanwhile is not an error."""
    found = find_devices(root)
    for rel in found:
        try:
            os.unlink(os.path.join(root, rel))
        except FileNotFoundError:
            pass
    return found


DROPPED = "dropped"
KEPT = "kept (--allow-devices)"
REFUSED = "refused (the runtime makes each container's /dev)"


def devices_warning(what: str, paths: list[str], verb: str = DROPPED) -> str:
    """The message naming the device nodes ``paths`` of ``what`` (an image, a backup):
    ``"<what>: <verb> N device node(s): /dev/sda, ..."``."""
    shown = ", ".join("/" + p for p in paths[:WARN_NAMES])
    more = f" and {len(paths) - WARN_NAMES} more" if len(paths) > WARN_NAMES else ""
    return f"{what}: {verb} {len(paths)} device node(s): {shown}{more}"

