"""Running processes inside a container.

``execute`` runs a command to completion with its output captured (stdin fed and stdout/stderr
drained by threads, so no pipe fills up); ``interactive`` streams the caller's stdio through,
on a pty inside the container when asked. Both read the container's record once. Its files
are reached through :mod:`.files`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Mapping, Sequence

from sysmgr.drivers.runtime.base import FROZEN, STOPPED, ExecProcess, InitRecord, ProcessSpec
from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.errors import Conflict, ValidationError
from sysmgr.model.expand import env_from_config
from sysmgr.state.db import ContainerRecord

DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}


def running_init(host: Host, name: str) -> InitRecord:
    """The init of a running (not frozen) container; Conflict otherwise."""
    return _running_init(host, host.store.container(name))


def _running_init(host: Host, rec: ContainerRecord) -> InitRecord:
    init = records.init_record(rec)
    state = host.runtime_for(init).status(init).state
    if state == STOPPED or init is None:
        raise Conflict(f"container {rec.name!r} is not running", hint=f"sysmgr start {rec.name}")
    if state == FROZEN:
        raise Conflict(f"container {rec.name!r} is frozen", hint=f"sysmgr unfreeze {rec.name}")
    return init


def process_spec(ex: records.Expanded, argv: Sequence[str], *,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 tty: bool = False, user: int | None = None,
                 group: int | None = None) -> ProcessSpec:
    """The process to run in the container ``ex``: ``argv`` with its ``environment.*`` over
    a login-like default environment, then ``env``; as ``user``/``group`` (the container's
    ids, default root: LXD's ``exec --user/--group``; a non-root user keeps no capability)."""
    for what, value in (("user", user), ("group", group)):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise ValidationError(f"invalid {what} id {value}: 0 to 4294967294")
    if not argv:
        raise ValidationError("no command given")
    e = dict(DEFAULT_ENV)
    if tty:
        e["TERM"] = os.environ.get("TERM", "xterm")
    e.update(records.image_environment(ex.record))
    e.update(env_from_config(ex.config))
    e.update(env or {})
    return ProcessSpec(tuple(argv), e, cwd or e.get("HOME", "/"), uid=user or 0, gid=group or 0)


def execute(host: Host, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, stdin: bytes | None = None, user: int | None = None,
            group: int | None = None) -> tuple[int, bytes, bytes]:
    """Run a command to completion; ``(exit code, stdout, stderr)``."""
    ex = records.read(host, name)
    init = _running_init(host, ex.record)
    spec = process_spec(ex, argv, env=env, cwd=cwd, user=user, group=group)
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
        proc = host.runtime_for(init).exec(init, spec, stdin=in_r, stdout=out_w, stderr=err_w)
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
    ex = records.read(host, name)
    init = _running_init(host, ex.record)
    spec = process_spec(ex, argv, env=env, cwd=cwd, tty=tty, user=user, group=group)
    if tty:
        from sysmgr._util import ptyproxy  # termios and select: only interactive sessions

        tty_fd = stdin if os.isatty(stdin) else stdout
        spec = dataclasses.replace(spec, window=ptyproxy.window(tty_fd))
        proc, master = host.runtime_for(init).exec_pty(init, spec)
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
    from sysmgr._util import safefs
    from sysmgr.engine import files  # the container's files: only a shell looks for su

    root = files.file_root(host, name)
    if any(safefs.exists(root, p) for p in ("/bin/su", "/usr/bin/su")):
        return ["su", "-l"]
    return ["/bin/sh", "-l"]


def console_log(host: Host, name: str) -> str:
    """The last start's console log, from the container's volume (also once it stopped), and
    for a container whose init keeps a journal (systemd) its last boot's journal."""
    from sysmgr.engine import console  # journal reading: only `console --show-log`

    rec = host.store.container(name)
    rootfs = host.pool_driver(rec.pool).container_path(name)
    return host.runtime.console_log(rootfs) + console.boot_journal(rootfs)
