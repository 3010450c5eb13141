"""inotify(7) through ctypes: Python 3.11 has no binding, and sysmgr adds no dependency for it.

    >>> with Inotify() as ino:
    ...     ino.add_watch("/var/lib/sysmgr", IN_CREATE | IN_MODIFY | IN_MOVED_TO)
    ...     for ev in ino.read(timeout=1.0):   # [] when nothing happened within the timeout
    ...         print(ev.name, hex(ev.mask))

One non-blocking, close-on-exec inotify descriptor per :class:`Inotify`, waited on with
``poll``; a failing call raises ``OSError`` with the real errno (``EMFILE`` / ``ENOSPC`` when
the user's inotify limits are reached), so callers can fall back to polling the files
themselves. Standard library only: the event log's ``follow`` imports it on first use.

:class:`TreeWatch` watches a directory tree (the controller's manifest sources): every
directory below it, new ones as they appear, hidden ones (``.git``) left out.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from typing import NamedTuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000  # the kernel's queue overflowed: events were lost, rescan
IN_IGNORED = 0x00008000     # the watch went (its file was deleted, or rm_watch)
IN_ONLYDIR = 0x01000000

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (name follows)

# dlopen(NULL): the symbols the interpreter already has, glibc's inotify_* among them
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str  # the entry's name in a watched directory; "" for the watched path itself


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


class Inotify:
    """One inotify instance: add watches, then :meth:`read` what happened."""

    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for the events of ``mask``; the watch descriptor."""
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask),
                      "inotify_add_watch", path)

    def rm_watch(self, wd: int) -> None:
        _check(_libc.inotify_rm_watch(self.fd, wd), "inotify_rm_watch")

    def read(self, timeout: float | None = None) -> list[Event]:
        """The events queued, waiting up to ``timeout`` seconds (None: for ever) for the
        first; ``[]`` when the timeout ran out."""
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self._poll.poll(ms):
            return []
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        return list(parse(data))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Inotify":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse(data: bytes) -> list[Event]:
    """The ``struct inotify_event`` records of one ``read``."""
    out = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        wd, mask, cookie, size = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        name = data[pos:pos + size].split(b"\0", 1)[0]
        pos += size
        out.append(Event(wd, mask, cookie, os.fsdecode(name)))
    return out


TREE_MASK = (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
             | IN_DELETE_SELF | IN_MOVE_SELF)
IN_ISDIR = 0x40000000


class TreeWatch(Inotify):
    """Directory trees watched for files written, created, deleted or moved; select on it
    (``fileno``), then :meth:`changed`."""

    def __init__(self) -> None:
        super().__init__()
        self._dirs: dict[int, str] = {}

    def watch(self, path: str) -> None:
        try:
            self._dirs[self.add_watch(path, TREE_MASK)] = path
        except FileNotFoundError:
            pass  # gone meanwhile
        except NotADirectoryError:
            pass

    def watch_tree(self, root: str) -> None:
        """Watch ``root`` and every directory below it (hidden ones left out)."""
        self.watch(root)
        for top, dirs, _files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for d in dirs:
                self.watch(os.path.join(top, d))

    def changed(self) -> bool:
        """Read every pending event; whether any says something changed (new directories
        are watched from now on)."""
        any_change = False
        while True:
            events = self.read(timeout=0)
            if not events:
                return any_change
            any_change = True
            for ev in events:
                if ev.mask & IN_ISDIR and ev.mask & (IN_CREATE | IN_MOVED_TO) \
                        and ev.wd in self._dirs and not ev.name.startswith("."):
                    self.watch_tree(os.path.join(self._dirs[ev.wd], ev.name))
