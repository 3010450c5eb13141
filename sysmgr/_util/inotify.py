"""Directory trees watched with inotify (through ctypes): the controller wakes up when a
manifest is written, created, deleted or moved, instead of polling.

    with Inotify() as ino:
        ino.watch_tree("/srv/config")
        select.select([ino], [], [], timeout)
        if ino.changed(): ...

A directory created inside a watched tree is watched too (from the moment its creation is
read). Hidden directories (``.git``) are not watched: a git source is synced explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_ISDIR, IN_Q_OVERFLOW = 0x40000000, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
        | IN_MOVE_SELF)
_EVENT = struct.Struct("iIII")


class Inotify:
    """One inotify instance; select on it (``fileno``), then :meth:`changed`."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd = fd
        self._dirs: dict[int, str] = {}

    def fileno(self) -> int:
        return self.fd

    def watch(self, path: str) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), MASK)
        if wd < 0:
            e = ctypes.get_errno()
            if e in (errno.ENOENT, errno.ENOTDIR):
                return  # gone meanwhile
            raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}")
        self._dirs[wd] = path

    def watch_tree(self, root: str) -> None:
        """Watch ``root`` and every directory below it (hidden ones left out)."""
        self.watch(root)
        for top, dirs, _files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for d in dirs:
                self.watch(os.path.join(top, d))

    def changed(self) -> bool:
        """Read every pending event; whether any says a file or directory changed (new
        directories are watched from now on)."""
        any_change = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return any_change
            off = 0
            while off + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
                name = data[off + _EVENT.size:off + _EVENT.size + length].rstrip(b"\0")
                off += _EVENT.size + length
                any_change = True
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and wd in self._dirs:
                    path = os.path.join(self._dirs[wd], os.fsdecode(name))
                    if not os.path.basename(path).startswith("."):
                        self.watch_tree(path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Inotify":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
