"""The host root's change lock: one writer at a time (flock on ``<root>/lock``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Callable, Iterator

from sysmgr.errors import NotFound


@contextlib.contextmanager
def exclusive(path: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the duration of the block (re-entrant per process
    is not needed: callers take it once at the API boundary). ``on_wait``: told who holds
    the lock (:func:`holder`) before waiting for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if on_wait else 0))
        except BlockingIOError:
            on_wait(holder(fd))  # type: ignore[misc] - only non-blocking with on_wait
            fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            # the holder removed the root (uninit) while this one waited: working on would
            # make a half root of whatever this command writes
            root = os.path.dirname(path)
            raise NotFound(f"the root {root} was removed while this command waited for its lock",
                           hint=f"sysmgr --root {root} init, to begin again")
        yield
    finally:
        os.close(fd)  # closing releases the flock


def holder(fd: int) -> str:
    """Who holds the flock on the file open at ``fd``: ``pid N (its command line)``, from
    ``/proc/locks``; "another process" when it cannot be told."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF" ("1: -> FLOCK ..." is a waiter)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev:
            return f"pid {fields[4]}{_command(fields[4])}"
    return "another process"


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    return f" ({' '.join(a.decode(errors='replace') for a in argv)[:200]})" if argv[0] else ""
