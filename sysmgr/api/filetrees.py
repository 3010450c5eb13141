"""Whole directory trees into and out of a container (``lxc file push -r`` / ``pull -r``),
walked here entry by entry over the Backend's file calls, so they work the same on this
host and on a cluster member.

Nothing is ever followed: a symlink is copied as a symlink, on either side, and a pull
never writes through a link it finds locally. Devices, sockets and FIFOs are skipped and
named to the caller.
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Any

from sysmgr.errors import SysmgrError, ValidationError


def push_tree(files: Any, local: str, path: str, *, uid: int | None, gid: int | None,
              mode: int | None, parents: bool) -> list[str]:
    """See :meth:`sysmgr.api.containers.ContainerFiles.push_tree`."""
    st = os.lstat(local)
    if not stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{local} is not a directory")
    skipped: list[str] = []

    def owner(s: os.stat_result) -> tuple[int, int]:
        return (s.st_uid if uid is None else uid), (s.st_gid if gid is None else gid)

    files.mkdir(path, mode=stat.S_IMODE(st.st_mode), uid=owner(st)[0], gid=owner(st)[1],
                parents=parents)
    for base, dirs, names in os.walk(local):
        rel = os.path.relpath(base, local)
        inside = path if rel == "." else posixpath.join(path, rel.replace(os.sep, "/"))
        for n in sorted(dirs) + sorted(names):
            src, dst = os.path.join(base, n), posixpath.join(inside, n)
            s = os.lstat(src)
            u, g = owner(s)
            if stat.S_ISLNK(s.st_mode):
                files.symlink(dst, os.readlink(src), uid=u, gid=g)
            elif stat.S_ISDIR(s.st_mode):
                files.mkdir(dst, mode=stat.S_IMODE(s.st_mode), uid=u, gid=g)
            elif stat.S_ISREG(s.st_mode):
                with open(src, "rb") as f:
                    files.put(dst, f, mode=stat.S_IMODE(s.st_mode) if mode is None else mode,
                              uid=u, gid=g)
            else:
                skipped.append(src)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(base, d))]
    return skipped


def pull_tree(files: Any, path: str, local: str) -> list[str]:
    """See :meth:`sysmgr.api.containers.ContainerFiles.pull_tree`."""
    skipped: list[str] = []
    top = files.stat(path)
    if not stat.S_ISDIR(top.mode):
        raise ValidationError(f"{path} is not a directory in the container")
    _local_dir(local, stat.S_IMODE(top.mode))
    todo = [(path, local)]
    while todo:
        inside, here = todo.pop()
        for e in files.listdir(inside):
            src, dst = posixpath.join(inside, e.name), os.path.join(here, e.name)
            if stat.S_ISLNK(e.mode):
                if os.path.lexists(dst):
                    os.unlink(dst)
                os.symlink(e.target or "", dst)
            elif stat.S_ISDIR(e.mode):
                _local_dir(dst, stat.S_IMODE(e.mode))
                todo.append((src, dst))
            elif stat.S_ISREG(e.mode):
                _pull_file(files, src, dst, stat.S_IMODE(e.mode))
            else:
                skipped.append(src)
    return skipped


def _local_dir(path: str, mode: int) -> None:
    """Create ``path`` (or keep it, when a real directory: never a link to elsewhere)."""
    try:
        os.mkdir(path, mode | 0o700)
    except FileExistsError:
        if os.path.islink(path) or not os.path.isdir(path):
            raise ValidationError(f"{path} exists and is not a directory") from None


def _pull_file(files: Any, src: str, dst: str, mode: int) -> None:
    tmp = f"{dst}.sysmgr-{os.getpid()}.tmp"
    try:
        with open(tmp, "xb") as out:
            files.pull(src, out)
        os.chmod(tmp, mode)
        os.replace(tmp, dst)  # a link at dst is replaced, never written through
    except OSError as e:
        raise SysmgrError(f"{dst}: {e.strerror or e}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
