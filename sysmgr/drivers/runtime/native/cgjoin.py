"""How a process forked to enter a container joins the container's cgroups without waiting.

Moving a process with ``cgroup.procs`` takes the kernel's global ``cgroup_threadgroup_rwsem``
for writing, and a writer waits for an RCU grace period first: 7-18 ms per exec or start on
this machine, more than all the rest of the kernel's work for an exec. Two ways around it,
the ones LXC and systemd take:

- cgroup2 (the unified hierarchy, alone or beside v1): the child is *born* in the cgroup
  (clone3 with CLONE_INTO_CGROUP), so nothing migrates;
- a v1 hierarchy: the new child, single-threaded, moves its one thread (``tasks`` ← "0"),
  which the kernel does without that lock.

:func:`fork` forks; in the child, :func:`join` writes what is left. The fallback (an old
kernel, a process with other threads, a cgroup2 dir that refuses births) is the plain fork
and ``cgroup.procs``, as before.
"""

from __future__ import annotations

import os
from typing import Sequence

from sysmgr._util import linux


def split(procs_files: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
    """(the cgroup2 dir to be born in, or None; the files the child writes to join the rest):
    a v1 hierarchy's ``tasks`` (it has one; cgroup2 has none), any other ``cgroup.procs``."""
    birth: str | None = None
    joins: list[str] = []
    for f in procs_files:
        d = os.path.dirname(f)
        tasks = os.path.join(d, "tasks")
        if os.path.exists(tasks):
            joins.append(tasks)
        elif birth is None:
            birth = d
        else:
            joins.append(f)
    return birth, tuple(joins)


def fork(procs_files: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    """Fork a child that joins the cgroups of ``procs_files`` (one ``cgroup.procs`` per
    hierarchy): (its pid, 0 in the child; what the child still passes to :func:`join`)."""
    birth, joins = split(procs_files)
    if birth is not None and linux.single_threaded():
        try:
            fd = os.open(birth, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = -1  # the child's join reports the missing cgroup as before
        if fd >= 0:
            try:
                return linux.fork_into_cgroup(fd), joins
            except OSError:
                pass  # clone3 cannot (old kernel, EBUSY): fork and migrate
            finally:
                os.close(fd)  # in the parent and in the child
    if birth is not None:
        joins = (os.path.join(birth, "cgroup.procs"),) + joins
    return os.fork(), joins


def join(files: Sequence[str]) -> None:
    """In the child of :func:`fork`: move it into the cgroups it was not born in (``tasks``:
    this thread, "0"; ``cgroup.procs``: this process, by pid)."""
    mypid = str(os.getpid()).encode()
    for f in files:
        fd = os.open(f, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0" if f.endswith("/tasks") else mypid)
        finally:
            os.close(fd)
