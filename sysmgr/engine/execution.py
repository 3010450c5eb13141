"""Running processes inside a container and reaching its files.

``execute`` runs a command to completion with its output captured (stdin fed and stdout/stderr
drained by threads, so no pipe fills up); ``interactive`` streams the caller's stdio through,
on a pty inside the container when asked. Files are resolved inside the container's root (its
live root while it runs, so its mounts are seen), never following a link out of it.
"""

from __future__ import annotations

import os
import threading
import dataclasses
from dataclasses import dataclass
from typing import BinaryIO, Callable, Mapping, Sequence, TypeVar

from sysmgr._util import safefs
from sysmgr.drivers.runtime.base import FROZEN, STOPPED, ExecProcess, InitRecord, ProcessSpec
from sysmgr.engine import idshift, records
from sysmgr.engine.host import Host
from sysmgr.errors import Conflict, ValidationError
from sysmgr.model import keys as mkeys

T = TypeVar("T")

DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}


def running_init(host: Host, name: str) -> InitRecord:
    """The init of a running (not frozen) container; Conflict otherwise."""
    init = records.init_record(host.store.container(name))
    state = host.runtime.status(init).state
    if state == STOPPED or init is None:
        raise Conflict(f"container {name!r} is not running", hint=f"sysmgr start {name}")
    if state == FROZEN:
        raise Conflict(f"container {name!r} is frozen", hint=f"sysmgr unfreeze {name}")
    return init


def process_spec(host: Host, name: str, argv: Sequence[str], *,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 tty: bool = False, user: int | None = None,
                 group: int | None = None) -> ProcessSpec:
    """The process to run: ``argv`` with the container's ``environment.*`` over a login-like
    default environment, then ``env``; as ``user``/``group`` (the container's ids, default
    root: LXD's ``exec --user/--group``; a non-root user keeps no capability)."""
    for what, value in (("user", user), ("group", group)):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise ValidationError(f"invalid {what} id {value}: 0 to 4294967294")
    if not argv:
        raise ValidationError("no command given")
    cfg, _ = records.expanded(host, host.store.container(name))
    e = dict(DEFAULT_ENV)
    if tty:
        e["TERM"] = os.environ.get("TERM", "xterm")
    e.update(mkeys.env_from_config(cfg))
    e.update(env or {})
    return ProcessSpec(tuple(argv), e, cwd or e.get("HOME", "/"), uid=user or 0, gid=group or 0)


def execute(host: Host, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, stdin: bytes | None = None, user: int | None = None,
            group: int | None = None) -> tuple[int, bytes, bytes]:
    """Run a command to completion; ``(exit code, stdout, stderr)``."""
    init = running_init(host, name)
    spec = process_spec(host, name, argv, env=env, cwd=cwd, user=user, group=group)
    proc, in_w, out_r, err_r = _on_pipes(host, init, spec)
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_feed, args=(in_w, stdin)),
               threading.Thread(target=_drain, args=(out_r, out)),
               threading.Thread(target=_drain, args=(err_r, err))]
    for t in threads:
        t.start()
    code = proc.wait()
    for t in threads:
        t.join()
    return code, b"".join(out), b"".join(err)


def _on_pipes(host: Host, init: InitRecord, spec: ProcessSpec) -> tuple[ExecProcess, int, int, int]:
    """Start ``spec`` with pipes of our own as its stdio; returns the process and our ends
    (stdin to write, stdout and stderr to read), which the caller closes."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = host.runtime.exec(init, spec, stdin=in_r, stdout=out_w, stderr=err_w)
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    return proc, in_w, out_r, err_r


def _feed(fd: int, data: bytes | None) -> None:
    with os.fdopen(fd, "wb") as f:
        try:
            if data:
                f.write(data)  # a buffered file writes all of it, in as many writes as needed
        except BrokenPipeError:
            pass


def _drain(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as f:
        sink.append(f.read())


def interactive(host: Host, name: str, argv: Sequence[str], *,
                env: Mapping[str, str] | None = None, cwd: str | None = None,
                tty: bool | None = None, stdin: int = 0, stdout: int = 1, stderr: int = 2,
                user: int | None = None, group: int | None = None) -> int:
    """Run a command with the caller's stdio streamed through; with ``tty`` (default: when
    stdin and stdout are terminals) on a pty inside the container. Returns its exit code.

    The caller's own fds are never handed to the container: a terminal of the admin's would
    let the container type into the admin's shell (TIOCSTI). Without a pty the bytes are
    relayed through pipes of sysmgr's own."""
    if tty is None:
        tty = os.isatty(stdin) and os.isatty(stdout)
    init = running_init(host, name)
    spec = process_spec(host, name, argv, env=env, cwd=cwd, tty=tty, user=user, group=group)
    if tty:
        from sysmgr._util import ptyproxy  # termios and select: only interactive sessions

        tty_fd = stdin if os.isatty(stdin) else stdout
        spec = dataclasses.replace(spec, window=ptyproxy.window(tty_fd))
        proc, master = host.runtime.exec_pty(init, spec)
        try:
            return ptyproxy.proxy(master, proc, stdin, stdout)
        finally:
            os.close(master)
    return _relayed(host, init, spec, (stdin, stdout, stderr))


def _relayed(host: Host, init: InitRecord, spec: ProcessSpec, stdio: tuple[int, int, int]) -> int:
    """Run ``spec`` on pipes, copying the caller's stdin in and its output out as it comes."""
    proc, in_w, out_r, err_r = _on_pipes(host, init, spec)
    feeder = threading.Thread(target=_pump, args=(stdio[0], in_w, True), daemon=True)
    outs = [threading.Thread(target=_pump, args=(out_r, stdio[1], False)),
            threading.Thread(target=_pump, args=(err_r, stdio[2], False))]
    for t in (feeder, *outs):
        t.start()
    code = proc.wait()
    for t in outs:
        t.join()
    return code


def _pump(src: int, dst: int, close_dst: bool) -> None:
    """Copy ``src`` to ``dst`` until EOF (or the reader goes away); ``close_dst``: our end of
    a pipe, closed at the end so the command sees EOF. A source that is ours is closed."""
    try:
        while data := os.read(src, 65536):
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
    except OSError:
        pass  # the command exited (EPIPE) or the caller's end went away
    finally:
        os.close(dst if close_dst else src)


def shell_argv(host: Host, name: str) -> list[str]:
    """A login shell, like ``lxc shell``: ``su -l`` when the image has su."""
    root = file_root(host, name)
    if any(safefs.exists(root, p) for p in ("/bin/su", "/usr/bin/su")):
        return ["su", "-l"]
    return ["/bin/sh", "-l"]


# -- files ----------------------------------------------------------------------------------

def file_root(host: Host, name: str) -> str:
    """Where the container's files are seen from: its live root when running (so its
    mounts are visible), else its root filesystem on the pool."""
    return _root_and_init(host, name)[0]


def _root_and_init(host: Host, name: str) -> tuple[str, InitRecord | None]:
    """:func:`file_root` and the init it goes through (None: the container is stopped)."""
    rec = host.store.container(name)
    init = records.init_record(rec)
    if init is not None and host.runtime.status(init).state != STOPPED and init.pid > 0:
        return f"/proc/{init.pid}/root", init
    return host.pool_driver(rec.pool).container_path(name), None


def _as_root(host: Host, name: str, fn: Callable[[str, Callable[[int, int], tuple[int, int]]], T]
             ) -> T:
    """Run ``fn(root, ids)`` where a change inside the container is made: through its live
    root as its root (an unprivileged container's root filesystem is idmapped: the host's
    root cannot create files in it), or on a stopped one's volume, where ``ids`` turns the
    container's ids into those its shifted files carry on disk."""
    root, init = _root_and_init(host, name)
    if init is not None:
        return host.runtime.as_container_root(init, lambda: fn(root, lambda u, g: (u, g)))
    volatile = host.store.container(name).volatile
    return fn(root, lambda u, g: idshift.disk_ids(volatile, u, g))


def put_file(host: Host, name: str, path: str, src: BinaryIO, *, mode: int, uid: int, gid: int,
             mkdir: bool) -> None:
    """Write a file inside; ``uid``/``gid`` are the container's ids (see :func:`_as_root`)."""
    def push(root: str, ids: Callable[[int, int], tuple[int, int]]) -> None:
        u, g = ids(uid, gid)
        safefs.push(root, path, src, mode=mode, uid=u, gid=g, mkdir_parents=mkdir)

    _as_root(host, name, push)


def make_dir(host: Host, name: str, path: str, *, mode: int, uid: int, gid: int,
             parents: bool) -> None:
    """Create a directory inside (or give an existing one ``mode`` and owner)."""
    def mk(root: str, ids: Callable[[int, int], tuple[int, int]]) -> None:
        u, g = ids(uid, gid)
        safefs.mkdir(root, path, mode=mode, uid=u, gid=g, parents=parents)

    _as_root(host, name, mk)


def make_symlink(host: Host, name: str, path: str, target: str, *, uid: int, gid: int) -> None:
    """Create (or replace) the symlink ``path -> target`` inside."""
    _as_root(host, name, lambda root, ids: safefs.symlink(root, path, target,
                                                         owner=ids(uid, gid)))


def delete_file(host: Host, name: str, path: str, *, recursive: bool) -> None:
    """Remove a file, a link or an empty directory inside (``recursive``: any directory)."""
    if path.strip("/") == "":
        raise ValidationError("refusing to delete the container's root directory")
    _as_root(host, name, lambda root, _ids: safefs.remove(root, path, recursive=recursive))


@dataclass(frozen=True)
class DirEntry:
    """One entry of a directory inside a container: owner in the container's ids."""

    name: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str | None = None   # a symlink's


def list_dir(host: Host, name: str, path: str) -> list[DirEntry]:
    """The entries of a directory inside, sorted by name (for ``file pull -r``)."""
    root, init = _root_and_init(host, name)
    if init is not None:
        found = host.runtime.as_container_root(init, lambda: safefs.listdir(root, path))
        ids: Callable[[int, int], tuple[int, int]] = lambda u, g: (u, g)  # noqa: E731
    else:
        found = safefs.listdir(root, path)
        volatile = host.store.container(name).volatile
        ids = lambda u, g: idshift.container_ids(volatile, u, g)  # noqa: E731
    return [DirEntry(n, st.st_mode, *ids(st.st_uid, st.st_gid), st.st_size, target)
            for n, st, target in found]


@dataclass(frozen=True)
class FileInfo:
    """A file inside a container as its processes see it: owner in the container's ids."""

    mode: int
    uid: int
    gid: int
    size: int


def stat_file(host: Host, name: str, path: str) -> FileInfo:
    """The file at ``path`` inside (links followed inside the root). A running container's
    file is asked as its root would ask (the kernel answers in the container's ids, whether
    its root filesystem is idmapped or shifted); a stopped one's is read on the pool and its
    on-disk ids translated back."""
    root, init = _root_and_init(host, name)
    if init is not None:
        st = host.runtime.as_container_root(init, lambda: safefs.stat(root, path))
        uid, gid = st.st_uid, st.st_gid
    else:
        st = safefs.stat(root, path)
        uid, gid = idshift.container_ids(host.store.container(name).volatile, st.st_uid, st.st_gid)
    return FileInfo(st.st_mode, uid, gid, st.st_size)


def read_file(host: Host, name: str, path: str) -> bytes:
    return safefs.read_file(file_root(host, name), path)


def pull_file(host: Host, name: str, path: str, dst: BinaryIO) -> None:
    safefs.pull(file_root(host, name), path, dst)


def console_log(host: Host, name: str) -> str:
    """The last start's console log, from the container's volume (also once it stopped), and
    for a container whose init keeps a journal (systemd) its last boot's journal."""
    from sysmgr.engine import console  # journal reading: only `console --show-log`

    rec = host.store.container(name)
    rootfs = host.pool_driver(rec.pool).container_path(name)
    return host.runtime.console_log(rootfs) + console.boot_journal(rootfs)
