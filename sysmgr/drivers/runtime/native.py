"""The native runtime: sysmgr's own launcher (fork + ctypes), nothing beyond the kernel.

Start (no sysmgr process stays resident per container)::

    P (caller)  render + write config.json, create the cgroup and write limits,
                open console.log (O_APPEND, truncated), fork A
    A           join every cgroup, unshare(pid|mnt|uts|ipc|net), fork B, send B's pid, exit
    P           reap A, [before_go(B's host pid): e.g. move veths into its netns], send "go"
    B = PID 1   unshare(cgroup), mounts from the bundle, devices, pivot_root, hostname,
                masked/read-only paths, drop capabilities, setsid, exec init
    P           error pipe (CLOEXEC) reaches EOF: init was exec'ed -> InitRecord

Everything B does comes from the rendered ``config.json`` (:mod:`.bundle`), not from the
spec. A failure in A or B before ``execve`` is written to the error pipe and raised as a
:class:`DriverError`; P then kills what was started and removes the cgroup.

Exec: P forks C; C joins the cgroups and setns()es into init's namespaces (mnt last), forks D
(only children enter the pid ns), waits for it and exits with D's shell-style exit code.
With a pty, C allocates it from the container's devpts after entering the mount ns and
passes the master to P over a socketpair.

After A exits, init is reparented to the nearest child subreaper (see
:meth:`NativeRuntime.become_subreaper`) or to the host's PID 1. ``status`` therefore treats a
zombie, or a pid whose start time changed, as STOPPED, and reaps the zombie when it can.

Children (A, B, C, D) run only code from this module between fork and exec: every body is
wrapped in ``try/finally: os._exit()`` so they never return into the caller's Python code,
and everything they need is prepared by P before the fork.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import os
import select
import signal
import stat
import struct
import termios
import time
from typing import Any, Callable, ClassVar, NamedTuple, NoReturn, Sequence

from sysmgr._util import linux
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import (
    FROZEN,
    RUNNING,
    STOPPED,
    ExecProcess,
    InitRecord,
    Limits,
    ProcessSpec,
    Runtime,
    RuntimeInfo,
    RuntimeSpec,
    Status,
    Usage,
    exit_code,
)
from sysmgr.drivers.runtime.cgroups import CGROUP_ROOT, Cgroup, open_cgroup
from sysmgr.errors import Conflict, DriverError, DriverUnavailable

#: Called with init's host pid after the namespaces exist and before init runs.
BeforeGo = Callable[[int], None]

START_TIMEOUT = 30.0     # from fork to init exec'ed (a stuck mount would hit this)
KILL_TIMEOUT = 10.0      # after SIGKILL, for the kernel to tear a container down


def _fd_ceiling() -> int:
    """Above any fd a process can hold (fs.nr_open caps every RLIMIT_NOFILE); closerange
    uses close_range(2), so the size of the range costs nothing."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(os.sysconf("SC_OPEN_MAX"), 1 << 20)


_MAXFD = _fd_ceiling()
_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
#: Signals C passes on to the command it runs (D has its own session, no terminal to get them).
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)
_NS_CLONE = {
    "pid": linux.CLONE_NEWPID, "network": linux.CLONE_NEWNET, "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS, "mount": linux.CLONE_NEWNS, "cgroup": linux.CLONE_NEWCGROUP,
    "user": linux.CLONE_NEWUSER,
}
#: setns order for exec: the mount namespace last (it changes our root).
_EXEC_NS = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


# -- what the children need, prepared by P before fork (NamedTuples: cheap to define) ----------

class _Mount(NamedTuple):
    source: str
    target: str          # path inside the container
    fstype: str | None
    flags: int
    propagation: int
    data: str | None
    bind: bool


class _InitPlan(NamedTuple):
    """The bundle, pre-digested into exactly what A and B execute."""

    name: str
    rootfs: str
    readonly_root: bool
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    hostname: str | None
    unshare_starter: int          # A: every namespace but cgroup (and user, later)
    unshare_init: int             # B: the cgroup ns, once it sits in its cgroup
    userns: bool
    mounts: tuple[_Mount, ...]
    devices: tuple[tuple[str, int, int, int, int, int], ...]   # path, mode, rdev, perm, uid, gid
    dev_symlinks: tuple[tuple[str, str], ...]
    masked: tuple[str, ...]
    readonly: tuple[str, ...]
    drop_caps: tuple[int, ...]
    no_new_privs: bool
    cgroup: str
    limits: Limits
    device_rules: tuple[tuple[bool, str], ...]
    procs_files: tuple[str, ...] = ()


class _ExecPlan(NamedTuple):
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    procs_files: tuple[str, ...]
    ns_fds: tuple[int, ...]       # in setns order
    joins_userns: bool
    drop_caps: tuple[int, ...]
    no_new_privs: bool
    pty: bool
    stdio: tuple[int, int, int] = (0, 1, 2)


def _plan_from_config(config: dict[str, Any], bundle_dir: str) -> _InitPlan:
    """Validate the bundle and digest it; errors name the bad field."""
    try:
        proc = config["process"]
        linux_cfg = config.get("linux") or {}
        root = config["root"]["path"]
        if not os.path.isabs(root):
            root = os.path.join(bundle_dir, root)
        args = tuple(proc["args"])
        if not args:
            raise ValueError("process.args is empty")
        env: dict[str, str] = {}
        for item in proc.get("env") or ():
            k, _, v = item.partition("=")
            env[k] = v
        ns_types = [n["type"] for n in linux_cfg.get("namespaces") or ()]
        unknown = [t for t in ns_types if t not in _NS_CLONE]
        if unknown:
            raise ValueError(f"unsupported namespace {unknown[0]!r}")
        starter = 0
        for t in ns_types:
            if t not in ("cgroup", "user"):
                starter |= _NS_CLONE[t]
        mounts = []
        for m in config.get("mounts") or ():
            flags, prop, data = bundle.mount_flags(m.get("options") or ())
            fstype = m.get("type")
            is_bind = bool(flags & linux.MS_BIND) or fstype == "bind"
            mounts.append(_Mount(
                source=m.get("source") or fstype or "none", target=m["destination"],
                fstype=None if is_bind else fstype, flags=flags, propagation=prop,
                data=data or None, bind=is_bind,
            ))
        devices = []
        for d in linux_cfg.get("devices") or ():
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
            perm = int(d.get("fileMode", 0o666)) & 0o7777
            devices.append((d["path"], kind | perm, os.makedev(d.get("major", 0), d.get("minor", 0)), perm,
                            int(d.get("uid", 0)), int(d.get("gid", 0))))
        keep = set()
        for name in (proc.get("capabilities") or {}).get("bounding") or ():
            num = linux.CAPABILITIES.get(name.lower().removeprefix("cap_"))
            if num is None:
                raise ValueError(f"unknown capability {name!r}")
            keep.add(num)
        drop = tuple(c for c in range(linux.cap_last_cap() + 1) if c not in keep)
        symlinks = list(_DEV_SYMLINKS)
        if any(m.target == "/dev/pts" and "newinstance" in (m.data or "") for m in mounts):
            symlinks.append(("pts/ptmx", "/dev/ptmx"))
        resources = linux_cfg.get("resources") or {}
        return _InitPlan(
            name=str((config.get("annotations") or {}).get(bundle.ANNOTATION_NAME) or config.get("hostname") or ""),
            rootfs=os.path.realpath(root),
            readonly_root=bool(config["root"].get("readonly")),
            args=args,
            env=env,
            cwd=proc.get("cwd") or "/",
            hostname=config.get("hostname"),
            unshare_starter=starter,
            unshare_init=linux.CLONE_NEWCGROUP if "cgroup" in ns_types else 0,
            userns="user" in ns_types,
            mounts=tuple(mounts),
            devices=tuple(devices),
            dev_symlinks=tuple(symlinks) if any(m.target == "/dev" for m in mounts) else (),
            masked=tuple(linux_cfg.get("maskedPaths") or ()),
            readonly=tuple(linux_cfg.get("readonlyPaths") or ()),
            drop_caps=drop,
            no_new_privs=bool(proc.get("noNewPrivileges")),
            cgroup=str(linux_cfg.get("cgroupsPath") or "").strip("/"),
            limits=bundle.limits_from_resources(resources),
            device_rules=tuple(bundle.device_rules(resources)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DriverError(f"invalid bundle {os.path.join(bundle_dir, 'config.json')}: {e}") from e


# -- helpers shared by the children --------------------------------------------------------------

class _ChildError(Exception):
    """A failure a child reports verbatim (no "step: reason" formatting)."""


class _Step:
    """What a child is doing, for the error message if it fails."""

    what = "start"

    def __call__(self, what: str) -> None:
        self.what = what


def _report(fd: int, step: _Step, exc: BaseException) -> None:
    if isinstance(exc, _ChildError):
        msg = str(exc)
    elif isinstance(exc, OSError):
        msg = f"{step.what}: {os.strerror(exc.errno) if exc.errno else exc}"
        if exc.filename and exc.filename not in step.what:
            msg += f" ({exc.filename})"
    else:
        msg = f"{step.what}: {type(exc).__name__}: {exc}"
    try:
        os.write(fd, msg.encode(errors="replace")[:4000])  # < PIPE_BUF: one atomic write
    except OSError:
        pass


def _close_fds_except(keep: Sequence[int]) -> None:
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > lo:
            os.closerange(lo, fd)
        lo = max(lo, fd + 1)
    os.closerange(lo, _MAXFD)


def _setup_stdio(fds: Sequence[int]) -> None:
    """dup2 ``fds`` onto 0, 1, 2 even when they overlap (move them out of the way first)."""
    tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    for i, fd in enumerate(tmp):
        os.dup2(fd, i)
    for fd in tmp:
        os.close(fd)


def _reset_signals() -> None:
    """Python ignores SIGPIPE/SIGXFSZ and installs handlers; ignored signals survive execve."""
    for sig in _CATCHABLE:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _which(cmd: str, path: str) -> str | None:
    if "/" in cmd:
        return cmd
    for d in path.split(":"):
        cand = os.path.join(d or ".", cmd)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _in_root(root: str, path: str) -> str:
    """Host path of the container path ``path``, following symlinks as if ``root`` were ``/``
    (an image's ``/dev -> /host/dir`` must not make a privileged launcher write outside)."""
    todo = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        cand = os.path.join(root, *done, part)
        try:
            target = os.readlink(cand)
        except OSError:  # not a symlink, or missing: taken literally
            done.append(part)
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p and p != "."] + todo
    return os.path.join(root, *done)


def _touch(path: str, mode: int = 0o600) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode))


def _join_cgroups(procs_files: Sequence[str]) -> None:
    """Move this process into the container's cgroups (one ``cgroup.procs`` per hierarchy)."""
    mypid = str(os.getpid()).encode()
    for f in procs_files:
        fd = os.open(f, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, mypid)
        finally:
            os.close(fd)


# -- child A: the starter ------------------------------------------------------------------------

def _starter_main(plan: _InitPlan, info_w: int, err_w: int, go_r: int, console_fd: int) -> NoReturn:
    code = 1
    step = _Step()
    try:
        gc.disable()  # no finalizer may close an fd number we are about to reuse
        _close_fds_except((info_w, err_w, go_r, console_fd))
        step("join the container's cgroups")
        _join_cgroups(plan.procs_files)
        # user namespaces (later): unshare(CLONE_NEWUSER) here, tell P, let P write
        # uid_map/gid_map, setresuid(0) -- *then* unshare the pid ns so it is owned by it.
        step("create namespaces")
        linux.unshare(plan.unshare_starter)
        step("fork init")
        pid = os.fork()
        if pid == 0:
            os.close(info_w)
            _init_main(plan, go_r, err_w, console_fd)  # never returns
        os.write(info_w, struct.pack("=q", pid))
        code = 0
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


# -- child B: PID 1 until it execs init ------------------------------------------------------------

def _init_main(plan: _InitPlan, go_r: int, err_w: int, console_fd: int) -> NoReturn:
    code = 1
    step = _Step()
    try:
        os.umask(0o022)
        if plan.unshare_init:
            step("create the cgroup namespace")
            linux.unshare(plan.unshare_init)  # after joining the cgroup: it becomes the ns root
        step("wait for the runtime")
        if os.read(go_r, 1) != b"g":
            os._exit(1)  # P gave up (its end closed): exit quietly
        os.close(go_r)
        _setup_root(plan, step)
        step("start init")
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        # stdin is /dev/null, not the log: a shell reading its console must see EOF,
        # never the log's own contents as commands
        _setup_stdio((null, console_fd, console_fd))
        _close_fds_except((err_w,))
        prog = _which(plan.args[0], plan.env.get("PATH", bundle.DEFAULT_PATH)) or plan.args[0]
        _reset_signals()
        try:
            os.execve(prog, list(plan.args), plan.env)
        except OSError as e:
            if e.errno == errno.ENOENT:
                if os.path.lexists(prog):
                    raise _ChildError(f"init {plan.args[0]} cannot be run: its interpreter is missing") from None
                raise _ChildError(f"init {plan.args[0]} not found in the image") from None
            if e.errno in (errno.EACCES, errno.ENOEXEC):
                raise _ChildError(f"init {plan.args[0]} is not an executable ({e.strerror})") from None
            raise _ChildError(f"cannot exec init {plan.args[0]}: {e.strerror}") from None
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


def _setup_root(plan: _InitPlan, step: _Step) -> None:
    """Mounts, device nodes, pivot_root, hostname, masks, capabilities (PLATFORM item 2)."""
    root = plan.rootfs
    step("make the mount namespace private")
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # never propagate to the host
    step("bind the root filesystem")
    linux.mount(root, root, None, linux.MS_BIND | linux.MS_REC)     # pivot_root needs a mount point
    for m in plan.mounts:
        step(f"mount {m.fstype or 'bind'} on {m.target}")
        target = _in_root(root, m.target)
        if m.bind:
            if os.path.isdir(m.source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.lexists(target):
                    _touch(target)
            linux.mount(m.source, target, None, linux.MS_BIND | (m.flags & linux.MS_REC))
            extra = m.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
            if extra:  # bind mounts take their flags on a remount
                linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | extra)
        else:
            if not os.path.isdir(target):
                os.makedirs(target)
            linux.mount(m.source, target, m.fstype, m.flags, m.data)
        if m.propagation:
            linux.mount(None, target, None, m.propagation)
    for path, mode, rdev, perm, uid, gid in plan.devices:
        step(f"create device {path}")
        target = _in_root(root, path)
        if os.path.lexists(target):
            continue
        os.mknod(target, mode, rdev)
        os.chmod(target, perm)  # mknod obeys the umask
        if uid or gid:
            os.chown(target, uid, gid)
    for src, path in plan.dev_symlinks:
        target = _in_root(root, path)
        if not os.path.lexists(target):
            step(f"create symlink {path}")
            os.symlink(src, target)
    if plan.readonly_root:
        step("make the root filesystem read-only")
        linux.mount(None, root, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
    if plan.hostname is not None:
        step(f"set the hostname to {plan.hostname}")
        linux.sethostname(plan.hostname)
    step("pivot_root into the root filesystem")
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)  # drops the host's mounts (and their pins) from our ns
    os.chdir("/")
    for path in plan.masked:
        step(f"mask {path}")
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
        elif os.path.exists(path):
            linux.mount("/dev/null", path, None, linux.MS_BIND)
    ro = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    for path in plan.readonly:
        if os.path.exists(path):
            step(f"make {path} read-only")
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, path, None, ro)
    if plan.hostname is not None:
        _write_etc_hostname(plan.hostname)
    step("drop capabilities")
    for cap in plan.drop_caps:
        linux.capbset_drop(cap)
    if plan.no_new_privs:
        step("set no_new_privs")
        linux.set_no_new_privs()
    step(f"change directory to {plan.cwd}")
    os.chdir(plan.cwd)


def _write_etc_hostname(name: str) -> None:
    """Keep /etc/hostname in step with the container name (systemd and the busybox rcS read
    it). Done after pivot_root, so a symlink in the image resolves inside the container."""
    want = name + "\n"
    try:
        if not os.path.isdir("/etc"):
            return
        try:
            with open("/etc/hostname") as f:
                if f.read() == want:
                    return
        except FileNotFoundError:
            pass
        with open("/etc/hostname", "w") as f:
            f.write(want)
    except OSError:
        pass  # read-only image: the kernel hostname is set anyway


# -- children C and D: exec ------------------------------------------------------------------------

def _exec_main(plan: _ExecPlan, err_w: int, sock_fd: int) -> NoReturn:
    code = 126
    step = _Step()
    try:
        gc.disable()
        _close_fds_except((err_w, sock_fd, *plan.ns_fds, *plan.stdio))
        step("join the container's cgroups")
        _join_cgroups(plan.procs_files)
        step("enter the container's namespaces")
        for fd in plan.ns_fds:
            linux.setns(fd, 0)
            os.close(fd)
        if plan.joins_userns:
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        import socket  # imported by P before the fork: a sys.modules lookup here

        stdio = plan.stdio
        master = -1
        if plan.pty:
            step("allocate a pty in the container")
            master, slave = os.openpty()  # from the container's devpts: we are in its mount ns
            stdio = (slave, slave, slave)
        child: list[int] = []

        def forward(sig: int, _frame: object) -> None:
            if child:
                try:
                    os.kill(child[0], sig)
                except ProcessLookupError:
                    pass

        for sig in _FORWARDED:
            signal.signal(sig, forward)
        step("fork")
        pid = os.fork()
        if pid == 0:
            _command_main(plan, err_w, stdio)  # never returns
        child.append(pid)
        # P signals the command through this pidfd, never by killing us: if we died first,
        # the command would be reparented to a reaper *outside* its pid namespace, and the
        # container's init could not finish dying until that reaper collected it.
        pidfd = os.pidfd_open(pid)
        with socket.socket(fileno=sock_fd) as sock:
            socket.send_fds(sock, [b"x"], [pidfd] + ([master] if master >= 0 else []))
        os.close(pidfd)
        if master >= 0:
            os.close(master)
        os.close(err_w)
        for fd in set(stdio):
            os.close(fd)
        _, status = os.waitpid(pid, 0)  # PEP 475: retried after forwarded signals
        code = exit_code(status)
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


def _command_main(plan: _ExecPlan, err_w: int, stdio: tuple[int, int, int]) -> NoReturn:
    code = 126
    step = _Step()
    try:
        step("prepare the process")
        linux.set_pdeathsig(signal.SIGKILL)  # C killed by someone -> the command dies too
        os.setsid()  # never the caller's controlling terminal (no TIOCSTI into the host)
        if plan.pty:
            fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
        _setup_stdio(stdio)
        step(f"change directory to {plan.cwd}")
        try:
            os.chdir(plan.cwd)
        except FileNotFoundError:
            raise _ChildError(f"working directory {plan.cwd} does not exist in the container") from None
        step("drop capabilities")
        for cap in plan.drop_caps:
            linux.capbset_drop(cap)
        step(f"switch to uid {plan.uid} gid {plan.gid}")
        os.setgroups([plan.gid] if plan.gid else [])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        if plan.no_new_privs:
            linux.set_no_new_privs()
        os.umask(0o022)
        prog = _which(plan.argv[0], plan.env.get("PATH", bundle.DEFAULT_PATH))
        _close_fds_except((err_w,))
        _reset_signals()
        os.close(err_w)  # setup done: from here on, failures are the command's (like a shell)
        if prog is None:
            code = 127
            os.write(2, f"sysmgr: {plan.argv[0]}: command not found\n".encode(errors="replace"))
        else:
            try:
                os.execve(prog, list(plan.argv), plan.env)
            except OSError as e:
                code = 127 if e.errno == errno.ENOENT else 126
                os.write(2, f"sysmgr: {plan.argv[0]}: {e.strerror}\n".encode(errors="replace"))
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


class NativeExecProcess(ExecProcess):
    """A command running in a container.

    ``pid`` is its host-side helper (C, our child): :meth:`wait` collects the command's
    exit code from it. Signals go straight to the command through a pidfd.
    """

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd

    def _done(self, status: int | None) -> int:
        self.returncode = exit_code(status) if status is not None else 255
        self.close()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else (a blanket waitpid(-1))
                return self._done(None)
            if pid:
                return self._done(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                return self._done(None)
            return self._done(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the command (no effect once it exited)."""
        if self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Release the pidfd (done by :meth:`wait`)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


# -- P-side helpers ------------------------------------------------------------------------------

def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_to_eof(fd: int, timeout: float) -> bytes:
    """Everything written to the pipe ``fd`` until all writers closed it (exec = EOF)."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if not poller.poll(left * 1000):
            continue
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _wait_pidfd(pidfd: int, timeout: float) -> bool:
    """True once the process behind ``pidfd`` exited (within ``timeout`` seconds)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _kill_helper(pid: int) -> None:
    """Kill an exec helper that failed to hand over, and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _reap_container_orphans() -> None:
    """Reap zombies we inherited as subreaper that belong to a deeper pid namespace.

    A process that entered a container (exec) and outlived its host-side parent is
    reparented to a reaper in the *parent's* namespace, i.e. us; the container's init
    cannot finish dying until it is reaped. Our own subprocesses live in our namespace
    (same NSpid depth) and are left alone.
    """
    me = str(os.getpid())
    depth = len((linux.proc_status_field(int(me), "NSpid") or "x").split())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if (fields.get("PPid", "").strip() == me and fields.get("State", "").strip().startswith("Z")
                and len(fields.get("NSpid", "").split()) > depth):
            _reap(int(entry))


def _wait_init_exit(pidfd: int, timeout: float) -> bool:
    """Wait for init to be gone, reaping exec orphans that would keep it from dying."""
    deadline = time.monotonic() + timeout
    while True:
        if _wait_pidfd(pidfd, min(0.2, max(0.0, deadline - time.monotonic()))):
            return True
        if time.monotonic() >= deadline:
            return False
        _reap_container_orphans()


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (we are its parent or subreaper)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class _Fds:
    """The raw fds one operation owns; each is closed exactly once (an fd number closed
    early and then closed again by a cleanup could be someone else's by then)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def __enter__(self) -> "_Fds":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(*self._open)

    def add(self, fd: int) -> int:
        self._open.add(fd)
        return fd

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        return self.add(r), self.add(w)

    def close_later(self, fd: int) -> None:
        """Stop tracking ``fd``: another owner closes it."""
        self._open.discard(fd)

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self._open:
                self._open.discard(fd)
                try:
                    os.close(fd)
                except OSError:
                    pass


def _write_id_maps(pid: int, uid_mappings: Sequence[dict[str, int]], gid_mappings: Sequence[dict[str, int]]) -> None:
    """Write a process's uid/gid maps from the bundle's ``linux.uidMappings``/``gidMappings``
    (PLATFORM item 1: host root writes them, no ``setgroups`` needed). For the coming
    user-namespace support; the rootfs then goes through :func:`linux.idmapped_bind`."""
    for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise DriverError(f"cannot write /proc/{pid}/{name}: {e.strerror}") from e


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class NativeRuntime(Runtime):
    """Runs the bundle with namespaces, cgroups and pivot_root done by sysmgr itself.

    Args:
        cgroup_root: where the cgroup hierarchies are mounted.
        before_go: default hook called with init's host pid between "namespaces exist" and
            "init runs" (the engine moves veths into the netns there); :meth:`start` takes a
            per-call override.
    """

    name: ClassVar[str] = "native"
    info: ClassVar[RuntimeInfo] = RuntimeInfo(freeze=True, user_namespaces=False, live_limits=True)

    def __init__(self, cgroup_root: str = CGROUP_ROOT, before_go: BeforeGo | None = None) -> None:
        self.cgroup_root = cgroup_root
        self.before_go = before_go

    @staticmethod
    def become_subreaper() -> None:
        """Make this process the reaper of container inits it starts (long-lived callers:
        controller, bench). Without it they go to the host's PID 1, which on some hosts
        never reaps them (they stay zombies after stopping)."""
        try:
            linux.set_child_subreaper(True)
        except OSError as e:
            raise DriverError(f"cannot become a child subreaper: {e.strerror}") from e

    def _cgroup(self, path: str) -> Cgroup:
        return open_cgroup(path, self.cgroup_root)

    # -- start -----------------------------------------------------------------------------

    def start(self, spec: RuntimeSpec, *, before_go: BeforeGo | None = None) -> InitRecord:
        if spec.idmap is not None:
            raise DriverUnavailable(
                "user namespaces are not enabled yet",
                hint="run the container privileged (no security.idmap) for now",
            )
        config = bundle.render(spec)
        try:
            os.makedirs(spec.runtime_dir, mode=0o700, exist_ok=True)
            _write_json(os.path.join(spec.runtime_dir, "config.json"), config)
        except OSError as e:
            raise DriverError(f"cannot write the bundle in {spec.runtime_dir}: {e.strerror}") from e
        return self.start_bundle(spec.runtime_dir, before_go=before_go)

    def start_bundle(self, bundle_dir: str, *, before_go: BeforeGo | None = None) -> InitRecord:
        """Start the container described by ``<bundle_dir>/config.json``."""
        hook = before_go or self.before_go
        cfg_path = os.path.join(bundle_dir, "config.json")
        try:
            with open(cfg_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise DriverError(f"cannot read the bundle {cfg_path}: {e}") from e
        plan = _plan_from_config(config, bundle_dir)
        what = f"cannot start container {plan.name}" if plan.name else "cannot start container"
        if plan.userns:
            raise DriverUnavailable("user namespaces are not enabled yet")
        if not os.path.isdir(plan.rootfs):
            raise DriverError(f"{what}: root filesystem {plan.rootfs} does not exist")
        if not plan.cgroup:
            raise DriverError(f"{what}: the bundle has no linux.cgroupsPath")
        cg = self._cgroup(plan.cgroup)
        if cg.exists():
            if cg.procs():
                raise Conflict(f"{what}: its cgroup {cg.path} still has processes (already running?)")
            cg.destroy()  # leftovers of a container that died by itself
        cg.create(plan.limits, plan.device_rules)  # limits are in place before init runs
        try:
            return self._launch(plan._replace(procs_files=tuple(cg.procs_files())), bundle_dir, what, hook)
        except BaseException as e:
            try:
                self._remove_cgroup(cg)
            except DriverError as cleanup_error:
                e.add_note(f"cleanup failed too: {cleanup_error}")
            raise

    def _launch(self, plan: _InitPlan, bundle_dir: str, what: str, hook: BeforeGo | None) -> InitRecord:
        """Fork A (which forks init), hand over, wait for init's exec. Kills init on failure."""
        console = os.path.join(bundle_dir, bundle.CONSOLE_LOG)
        with _Fds() as fds:
            try:
                console_fd = fds.add(os.open(
                    console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600))
            except OSError as e:
                raise DriverError(f"{what}: cannot open {console}: {e.strerror}") from e
            info_r, info_w = fds.pipe()
            err_r, err_w = fds.pipe()
            go_r, go_w = fds.pipe()
            starter = os.fork()
            if starter == 0:
                _starter_main(plan, info_w, err_w, go_r, console_fd)  # never returns
            fds.close(info_w, err_w, go_r, console_fd)
            raw = _read_exact(info_r, 8)
            _, st = os.waitpid(starter, 0)
            if len(raw) != 8:
                try:
                    msg = _read_to_eof(err_r, 5.0).decode(errors="replace")
                except TimeoutError:
                    msg = ""
                raise DriverError(f"{what}: {msg or f'starter exited with status {exit_code(st)}'}")
            pid = struct.unpack("=q", raw)[0]
            try:
                pidfd = fds.add(linux.pidfd_open(pid))
            except OSError as e:  # only if init died before the go (killed from outside)
                raise DriverError(f"{what}: init (pid {pid}) vanished: {e.strerror}") from e
            try:
                # user namespaces (later): A reports here that it unshared one, and P writes
                # the maps with _write_id_maps(pid, ...) before saying "go".
                if hook is not None:
                    hook(pid)
                os.write(go_w, b"g")
                fds.close(go_w)
                try:
                    msg = _read_to_eof(err_r, START_TIMEOUT).decode(errors="replace")
                except TimeoutError:
                    raise DriverError(f"{what}: init was not running after {START_TIMEOUT:.0f}s") from None
                if msg:
                    raise DriverError(f"{what}: {msg}")
                starttime = linux.proc_starttime(pid)
                if starttime is None or linux.proc_state(pid) in ("Z", "X"):
                    raise DriverError(f"{what}: init exited immediately (see {console})")
            except BaseException:
                self._kill_init(pid, pidfd)
                raise
        return InitRecord(pid=pid, starttime=starttime, cgroup=plan.cgroup)

    def _kill_init(self, pid: int, pidfd: int) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_pidfd(pidfd, KILL_TIMEOUT)
        _reap(pid)

    def _remove_cgroup(self, cg: Cgroup) -> None:
        cg.kill_all(KILL_TIMEOUT)
        cg.destroy()

    # -- state -----------------------------------------------------------------------------

    def _alive(self, rec: InitRecord) -> bool:
        """init is running (not gone, not a zombie, not a recycled pid); reaps its zombie."""
        if linux.proc_starttime(rec.pid) != rec.starttime:
            return False
        if linux.proc_state(rec.pid) in ("Z", "X", None):
            _reap(rec.pid)  # same start time: it is our init's zombie, if we are its reaper
            return False
        return True

    def status(self, rec: InitRecord | None) -> Status:
        if rec is None or not self._alive(rec):
            return Status(STOPPED)
        try:
            frozen = self._cgroup(rec.cgroup).is_frozen()
        except DriverError:
            frozen = False
        return Status(FROZEN if frozen else RUNNING, pid=rec.pid)

    def _open_init(self, rec: InitRecord) -> int | None:
        """A pidfd of the live init, or None when it is gone (checked *after* opening, so
        the fd cannot refer to a recycled pid)."""
        try:
            pidfd = linux.pidfd_open(rec.pid)
        except ProcessLookupError:
            return None
        except OSError as e:
            raise DriverError(f"cannot watch init (pid {rec.pid}): {e.strerror}") from e
        if not self._alive(rec):
            os.close(pidfd)
            return None
        return pidfd

    def stop(self, rec: InitRecord, *, halt_signal: int, timeout: float, force: bool) -> bool:
        cg = self._cgroup(rec.cgroup)
        pidfd = self._open_init(rec)
        exited = True
        if pidfd is not None:
            try:
                exited = False
                if not force:
                    if cg.is_frozen():
                        cg.thaw()  # a frozen init cannot act on the halt signal
                    try:
                        signal.pidfd_send_signal(pidfd, halt_signal)
                    except ProcessLookupError:
                        pass
                    exited = _wait_init_exit(pidfd, timeout)
                if not exited:
                    cg.kill_all(KILL_TIMEOUT)  # freezes, kills everything incl. init, thaws
                    try:
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    if not _wait_init_exit(pidfd, KILL_TIMEOUT):
                        raise DriverError(f"init (pid {rec.pid}) did not die after SIGKILL")
            finally:
                os.close(pidfd)
            _reap(rec.pid)
        self._remove_cgroup(cg)
        return exited

    def freeze(self, rec: InitRecord) -> None:
        if not self._alive(rec):
            raise Conflict("the container is not running")
        self._cgroup(rec.cgroup).freeze()

    def unfreeze(self, rec: InitRecord) -> None:
        if not self._alive(rec):
            raise Conflict("the container is not running")
        self._cgroup(rec.cgroup).thaw()

    def set_limits(self, cgroup: str, limits: Limits) -> None:
        cg = self._cgroup(cgroup)
        if not cg.exists():
            raise Conflict(f"cgroup {cgroup} does not exist: the container is not running")
        cg.set_limits(limits)

    def usage(self, cgroup: str) -> Usage:
        cg = self._cgroup(cgroup)
        return cg.usage() if cg.exists() else Usage()

    def cleanup(self, cgroup: str) -> None:
        cg = self._cgroup(cgroup)
        if cg.exists():
            self._remove_cgroup(cg)

    # -- exec ------------------------------------------------------------------------------

    def exec(self, rec: InitRecord, proc: ProcessSpec, *, stdin: int, stdout: int, stderr: int) -> ExecProcess:
        return self._spawn(rec, proc, (stdin, stdout, stderr), pty=False)[0]

    def exec_pty(self, rec: InitRecord, proc: ProcessSpec) -> tuple[ExecProcess, int]:
        p, master = self._spawn(rec, proc, (0, 1, 2), pty=True)
        assert master is not None
        return p, master

    def _spawn(self, rec: InitRecord, proc: ProcessSpec, stdio: tuple[int, int, int],
               pty: bool) -> tuple[NativeExecProcess, int | None]:
        if not proc.argv:
            raise DriverError("nothing to execute: empty command")
        import socket  # here, not at the top: keeps `import native` cheap; before the fork
        with _Fds() as fds:
            ns_fds = []
            try:
                if os.stat(f"/proc/{rec.pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino:
                    ns_fds.append(fds.add(os.open(f"/proc/{rec.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)))
                for t in _EXEC_NS:
                    ns_fds.append(fds.add(os.open(f"/proc/{rec.pid}/ns/{t}", os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                raise Conflict("the container is not running") from None
            except OSError as e:
                raise DriverError(f"cannot open the namespaces of pid {rec.pid}: {e.strerror}") from e
            # checked after opening: from here on the fds cannot belong to a recycled pid
            if not self._alive(rec):
                raise Conflict("the container is not running")
            cg = self._cgroup(rec.cgroup)
            if cg.is_frozen():
                raise Conflict("the container is frozen")
            mask = int(linux.proc_status_field(rec.pid, "CapBnd") or "0", 16)
            env = dict(proc.env)
            env.setdefault("PATH", bundle.DEFAULT_PATH)
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            sock_parent, sock_child = fds.add(a.detach()), fds.add(b.detach())
            plan = _ExecPlan(
                argv=tuple(proc.argv), env=env, cwd=proc.cwd or "/", uid=proc.uid, gid=proc.gid,
                procs_files=tuple(cg.procs_files()), ns_fds=tuple(ns_fds), joins_userns=len(ns_fds) > len(_EXEC_NS),
                drop_caps=tuple(c for c in range(linux.cap_last_cap() + 1) if not mask >> c & 1),
                no_new_privs=linux.proc_status_field(rec.pid, "NoNewPrivs") == "1",
                pty=pty, stdio=stdio,
            )
            err_r, err_w = fds.pipe()
            helper = os.fork()
            if helper == 0:
                _exec_main(plan, err_w, sock_child)  # never returns
            fds.close(err_w, sock_child, *ns_fds)
            got: list[int] = []
            try:
                with socket.socket(fileno=sock_parent) as s:
                    fds.close_later(sock_parent)  # owned by the socket object now
                    s.settimeout(START_TIMEOUT)
                    _, got, _, _ = socket.recv_fds(s, 16, 2)  # (pidfd, [pty master]); none on failure
                msg = _read_to_eof(err_r, START_TIMEOUT).decode(errors="replace")
            except BaseException as e:
                for fd in got:
                    os.close(fd)
                _kill_helper(helper)
                if isinstance(e, TimeoutError):
                    raise DriverError(f"exec {proc.argv[0]}: the process did not start") from None
                raise
            child = NativeExecProcess(helper, got[0] if got else None)
            master = got[1] if len(got) > 1 else None
            if msg or not got or (pty and master is None):
                if master is not None:
                    os.close(master)
                child.wait()
                raise DriverError(f"cannot exec {proc.argv[0]} in the container: {msg or 'the helper failed'}")
            return child, master
