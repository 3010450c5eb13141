"""What the controller keeps in its host root (``<root>/controller/``): the lock that lets
one controller run at a time (``lock``: a second one is told which pid holds it), its
status (``status.json``, rewritten after every pass, read by ``controller status``) and the
suspend flag (``suspended``: the controller keeps running and reporting, but changes
nothing until ``controller resume``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import Any, Iterator

from sysmgr.errors import Conflict


def controller_dir(root: str) -> str:
    return os.path.join(root, "controller")


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """Hold the controller lock for the block; Conflict naming the holder's pid if taken."""
    d = controller_dir(root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Conflict(f"a controller already runs for {root} (pid {holder})",
                           hint=f"stop it first (kill {holder}), or use its status: "
                                "sysmgr controller status") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor


def holder(root: str) -> int | None:
    """The pid of the running controller, or None."""
    path = os.path.join(controller_dir(root), "lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_status(root: str, status: dict[str, Any]) -> None:
    d = controller_dir(root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, "status.json")
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def read_status(root: str) -> dict[str, Any]:
    """The last status written (empty when no controller ever ran), with ``running``: the
    pid of the controller now, or None."""
    try:
        with open(os.path.join(controller_dir(root), "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        status = {}
    status["running"] = holder(root)
    status["suspended"] = suspended(root)
    return status


def suspended(root: str) -> bool:
    return os.path.exists(os.path.join(controller_dir(root), "suspended"))


def set_suspended(root: str, on: bool) -> None:
    path = os.path.join(controller_dir(root), "suspended")
    if on:
        os.makedirs(controller_dir(root), mode=0o700, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{time.time()}\n")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
