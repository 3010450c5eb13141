"""The forked children that run an OCI runtime's verbs from where they must stand.

``create``: a child joins the container's cgroups (born in them where it can:
:mod:`..native.cgjoin`), so the runtime and the init it forks are in them from the first
instruction (crun runs with its cgroup manager disabled: the cgroup is sysmgr's, limits and
device rules written before); it unshares a mount namespace of its own, mounts a tmpfs on
:data:`.config.STAGE`, binds the root filesystem, the console log and the bind mounts'
sources there (:func:`.config.adapt`), hides a hybrid host's controller-holding cgroup2
hierarchy from a runtime that refuses hybrid mode, wires stdio (init's console: the log) and
execs the runtime. The container's mount namespace is made from that one: none of it shows on
the host.

``exec``: a child joins the cgroups when the runtime does not (cgroup manager disabled), wires
the given stdio and execs the runtime, the command's ``process`` on an inherited pipe.
"""

from __future__ import annotations

import os
from typing import NoReturn, Sequence

from sysmgr._util import linux, proc
from sysmgr.drivers.runtime.native import cgjoin
from sysmgr.drivers.runtime.oci.config import STAGE

UNIFIED = "/sys/fs/cgroup/unified"


def start_child(argv: Sequence[str], joins: Sequence[str], binds: Sequence[tuple[str, str, int]],
                console_fd: int, err_w: int, *, hide_hybrid: bool) -> NoReturn:
    """In the child of :func:`cgjoin.fork`: set up and exec the runtime's ``create``; a
    failure before the exec goes to ``err_w`` (close-on-exec: EOF there means it ran)."""
    try:
        cgjoin.join(joins)
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing goes back out
        if hide_hybrid and _controllers(UNIFIED):
            linux.umount2(UNIFIED, linux.MNT_DETACH)
        linux.mount("tmpfs", STAGE, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0711,size=64k")
        for src, dst, flags in binds:
            src = src or _same_file(console_fd)
            if os.path.isdir(src):
                os.mkdir(dst, 0o711)
            else:
                os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            linux.mount(src, dst, None, linux.MS_BIND | linux.MS_REC)
            if flags:  # made here, in the host's user namespace: locked in the container's
                linux.mount(None, dst, None, linux.MS_BIND | linux.MS_REMOUNT | flags)
        null = os.open("/dev/null", os.O_RDONLY)
        _stdio((null, console_fd, console_fd))
        proc.exec_replace(argv)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, whatever it was
        _report(err_w, e)
    os._exit(126)


def exec_child(argv: Sequence[str], joins: Sequence[str], stdio: tuple[int, int, int],
               process_fd: int, err_w: int, *, new_session: bool) -> NoReturn:
    """In the child of :func:`cgjoin.fork`: exec the runtime's ``exec`` with ``stdio``,
    ``process_fd`` (the ``--process`` pipe) inherited; ``new_session``: the pty given as
    stdio becomes the runtime's controlling terminal (it relays and resizes through it)."""
    try:
        cgjoin.join(joins)
        if new_session:
            os.setsid()
        _stdio(stdio)
        os.set_inheritable(process_fd, True)
        if new_session:
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        proc.exec_replace(argv)
    except BaseException as e:  # noqa: BLE001
        _report(err_w, e)
    os._exit(126)


def _same_file(fd: int) -> str:
    """A path to the file of ``fd`` in this (new) mount namespace: a bind from the fd itself
    would name a mount of the namespace it was opened in (EINVAL). Its canonical path is
    opened without following a link and checked to be the same inode."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    new = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    a, b = os.fstat(fd), os.fstat(new)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        raise OSError(f"{path} changed under the start")
    return f"/proc/self/fd/{new}"


def _stdio(fds: tuple[int, int, int]) -> None:
    # duplicated above 2 first: a later dup2 must not overwrite an fd an earlier one needs
    high = [os.dup(fd) if fd >= 0 else -1 for fd in fds]
    for target, fd in enumerate(high):
        if fd >= 0:
            os.dup2(fd, target)
            os.close(fd)


def _controllers(path: str) -> str:
    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _report(err_w: int, e: BaseException) -> None:
    try:
        os.write(err_w, (str(e) or type(e).__name__).encode(errors="replace")[:4000])
    except OSError:
        pass


def read_report(err_r: int) -> str:
    """What a child wrote to its error pipe before it exec'ed (empty: it exec'ed)."""
    out = b""
    while chunk := os.read(err_r, 4096):
        out += chunk
    return out.decode(errors="replace")
