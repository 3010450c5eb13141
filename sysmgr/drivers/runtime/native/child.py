"""Code that runs in the forked children, between ``fork`` and ``execve`` (layer: runtime driver).

Start: A (:func:`starter_main`) joins the cgroups, unshares the namespaces and forks B, which
becomes PID 1 (:func:`_init_main`): mounts, /dev, pivot_root, hostname, masks, capabilities,
then it execs init. Exec: C (:func:`exec_main`) joins the cgroups and setns()es into init's
namespaces, forks D (:func:`_command_main`), which execs the command.

The children run only code from this module (and :mod:`sysmgr._util.linux`): every body is
wrapped in ``try/finally: os._exit()`` so it never returns into the caller's Python code, and
everything it needs (:mod:`.plan`) is prepared by P before the fork. A failure is written to
the CLOEXEC error pipe, which P reads to EOF.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import signal
import struct
import termios
from typing import NoReturn, Sequence

from sysmgr._util import linux, safefs
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import exit_code
from sysmgr.drivers.runtime.native import binds as binds_mod
from sysmgr.drivers.runtime.native import cgjoin, enter, userns
from sysmgr.drivers.runtime.native.plan import CapSets, ExecPlan, InitPlan, Mount
from sysmgr.errors import SysmgrError


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


def _touch(path: str, mode: int = 0o600) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode))


def _confine(caps: CapSets | None, program: bytes, step: _Step, apparmor: str = "",
             apparmor_fd: int = -1) -> None:
    """The seccomp filter, then the explicit capability sets (the bounding set is already
    reduced). The filter goes first because loading it needs CAP_SYS_ADMIN (or no_new_privs,
    which would break setuid programs inside) and the new sets may lack it; nothing the
    child does after this is on the deny list, and execve and everything after is filtered.
    ``apparmor``: the profile the coming execve switches to (the kernel applies it there),
    written to ``apparmor_fd`` when the caller opened it before /proc stopped being its own."""
    if apparmor:
        step(f"apply the AppArmor profile {apparmor}")
        linux.apparmor_exec(apparmor, apparmor_fd)
    if program:
        step("install the seccomp filter")
        linux.seccomp_filter(program)
    if caps is not None:
        step("set the capability sets")
        held = linux.capget()[1]  # a launcher that lacks a capability cannot hand it out
        linux.capset(caps.effective & held, caps.permitted & held, caps.inheritable & held)
        linux.set_ambient_caps(caps.ambient & held)


# -- child A: the starter ------------------------------------------------------------------------

def starter_main(plan: InitPlan, info_w: int, err_w: int, go_r: int, console_fd: int) -> NoReturn:
    code = 1
    step = _Step()
    try:
        gc.disable()  # no finalizer may close an fd number we are about to reuse
        _close_fds_except((info_w, err_w, go_r, console_fd))
        step("join the container's cgroups")
        cgjoin.join(plan.procs_files)
        step("open the disks' sources")
        trees = binds_mod.open_binds(plan.mounts)
        sources: dict[str, str] = {}
        binds: list[int | str] = list(trees)
        if plan.userns:
            plan, sources, binds = _enter_userns(plan, step, trees)
        else:
            for m, t in zip((m for m in plan.mounts if m.bind), trees):
                binds_mod.set_attrs(t, m.flags, m.propagation, None)
        step("create namespaces")
        linux.unshare(plan.unshare_starter)
        step("fork init")
        pid = os.fork()
        if pid == 0:
            os.close(info_w)
            _init_main(plan, go_r, err_w, console_fd, sources, binds)  # never returns
        os.write(info_w, struct.pack("=q", pid))
        code = 0
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


def _enter_userns(plan: InitPlan, step: _Step, trees: list[int]
                  ) -> tuple[InitPlan, dict[str, str], list[int | str]]:
    """The steps of :mod:`.userns` A takes as host root; returns the plan with the staged
    rootfs, where B finds what it binds in from the host, and where the disks (``trees``,
    their attributes set here) are staged."""
    step("create a private mount namespace")
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    step("create the user namespace")
    ns_fd = userns.make_userns(plan.uid_map, plan.gid_map)
    for m, t in zip((m for m in plan.mounts if m.bind), trees):
        step(f"prepare the mount of {m.source} on {m.target}")
        binds_mod.set_attrs(t, m.flags, m.propagation, ns_fd if m.idmap else None)
    step("attach the root filesystem through an idmapped mount" if plan.idmapped_rootfs
         else "attach the root filesystem (shifted on disk)")
    try:
        staged, sources, binds = userns.stage(plan.rootfs, ns_fd, [d[0] for d in plan.devices],
                                              idmap=plan.idmapped_rootfs, trees=trees)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise _ChildError(
            f"the filesystem of {plan.rootfs} cannot be idmapped (ext4, btrfs and xfs can; tmpfs "
            "only from Linux 6.3) and the bundle does not say its files were shifted "
            "(annotation org.sysmgr.rootfs-shifted)") from None
    step("become root in the user namespace")
    userns.become_root(ns_fd)
    os.close(ns_fd)
    return plan._replace(rootfs=staged), sources, list(binds)


# -- child B: PID 1 until it execs init ------------------------------------------------------------

def _init_main(plan: InitPlan, go_r: int, err_w: int, console_fd: int,
               sources: dict[str, str], binds: list[int | str]) -> NoReturn:
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
        _setup_root(plan, step, sources, binds)
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


def _setup_root(plan: InitPlan, step: _Step, sources: dict[str, str],
                binds: list[int | str]) -> None:
    """Mounts, device nodes, pivot_root, hostname, masks, capabilities (PLATFORM item 2).

    ``sources``: in a user namespace, where the host files bound in are staged (by their
    host path, see :func:`_enter_userns`); device nodes come from there. ``binds``: each
    bind mount's detached tree (privileged) or staged path (user namespace), in order."""
    root = plan.rootfs
    step("take the disks")
    trees = binds_mod.bind_trees(plan.mounts, binds)
    step("make the mount namespace private")
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # never propagate to the host
    step("bind the root filesystem")
    linux.mount(root, root, None, linux.MS_BIND | linux.MS_REC)     # pivot_root needs a mount point
    _allow_suid_dev(root)
    console = -1
    if plan.console:  # taken before /dev's tmpfs covers it
        step("open the console log")
        console = linux.open_tree(safefs.in_root(root, plan.console),
                                  linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_SYMLINK_NOFOLLOW)
    for m in plan.mounts:
        step(f"mount {m.fstype or m.source} on {m.target}")
        if m.bind:
            try:
                binds_mod.attach(root, m.target, trees.pop(0))
            except SysmgrError as e:
                raise _ChildError(f"mount {m.source} on {m.target}: {e.message}") from None
        else:
            _mount(root, m)
    if console >= 0:
        _bind_console(root, console, step)
    _populate_dev(plan, step, sources)
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
    _protect_kernel_paths(plan, step)
    if plan.hostname is not None:
        _write_etc_hostname(plan.hostname)
    step("drop capabilities")
    for cap in plan.drop_caps:
        linux.capbset_drop(cap)
    _confine(plan.caps, plan.seccomp, step, plan.apparmor)
    if plan.no_new_privs:
        step("set no_new_privs")
        linux.set_no_new_privs()
    step(f"change directory to {plan.cwd}")
    os.chdir(plan.cwd)


def _bind_console(root: str, tree: int, step: _Step) -> None:
    """The log file (a detached bind of it, ``tree``) on /dev/console, read-only: init's
    stdout/stderr (P's O_APPEND fd) still append to it, but a re-open inside (a shell's
    ``> /dev/console`` would truncate it) gets EROFS."""
    step("bind the console log on /dev/console")
    target = safefs.in_root(root, "/dev/console")
    if not os.path.lexists(target):
        _touch(target)
    linux.move_mount(tree, target)
    os.close(tree)
    linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY
                | linux.MS_NOSUID | linux.MS_NOEXEC | linux.MS_NODEV)


def _allow_suid_dev(root: str) -> None:
    """Clear ``nosuid``/``nodev`` on the container's own bind of its root filesystem.

    A bind mount inherits the flags of the mount it copies, and sysmgr mounts its loop
    pools ``nosuid,nodev`` on the host (exposure: nothing in a volume works for a host
    user). Inside, the root is the container's whole OS: ``su``, ``ping`` and friends need
    setuid. ``ro``, ``noexec`` and the atime mode are kept as they were.
    """
    flags = os.statvfs(root).f_flag
    if not flags & (os.ST_NOSUID | os.ST_NODEV):
        return
    keep = {os.ST_RDONLY: linux.MS_RDONLY, os.ST_NOEXEC: linux.MS_NOEXEC,
            os.ST_NOATIME: linux.MS_NOATIME, os.ST_NODIRATIME: linux.MS_NODIRATIME,
            os.ST_RELATIME: linux.MS_RELATIME}
    extra = sum(ms for st, ms in keep.items() if flags & st)
    linux.mount(None, root, None, linux.MS_REMOUNT | linux.MS_BIND | extra)


def _mount(root: str, m: Mount) -> None:
    """One bundle mount (not a bind), its target resolved inside ``root`` (still the host's
    view)."""
    target = safefs.in_root(root, m.target)
    if not os.path.isdir(target):
        os.makedirs(target)
    linux.mount(m.source, target, m.fstype, m.flags, m.data)
    if m.propagation:
        linux.mount(None, target, None, m.propagation)


def _populate_dev(plan: InitPlan, step: _Step, sources: dict[str, str]) -> None:
    """Device nodes and the standard /dev symlinks (existing entries are kept). In a user
    namespace (no mknod) each node is the host's, bound in."""
    root = plan.rootfs
    for path, mode, rdev, perm, uid, gid in plan.devices:
        step(f"create device {path}")
        target = safefs.in_root(root, path)
        if os.path.lexists(target):
            continue
        if plan.userns:
            if path in sources:
                _touch(target, 0o666)
                linux.mount(sources[path], target, None, linux.MS_BIND)
            continue
        os.mknod(target, mode, rdev)
        os.chmod(target, perm)  # mknod obeys the umask
        if uid or gid:
            os.chown(target, uid, gid)
    for src, path in plan.dev_symlinks:
        target = safefs.in_root(root, path)
        if not os.path.lexists(target):
            step(f"create symlink {path}")
            os.symlink(src, target)


def _protect_kernel_paths(plan: InitPlan, step: _Step) -> None:
    """Masked and read-only paths; after pivot_root, so the paths are the container's."""
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

def exec_main(plan: ExecPlan, err_w: int, sock_fd: int, helper_fd: int) -> NoReturn:
    """C: join the container, hand P the pty master (if any), become the command's process
    (session, terminal, credentials, confinement) and exec the static helper from its
    memfd (:mod:`.enter`), which forks the command and reports its pid on ``sock_fd``.
    Without a helper (``helper_fd`` < 0: another architecture) C forks a Python D instead."""
    code = 126
    step = _Step()
    try:
        # a copy of the host's interpreter about to join the container: nothing in there may
        # ptrace it or open its /proc/PID/mem (runc's CVE-2016-9962 / CVE-2019-5736 lesson)
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        gc.disable()
        _close_fds_except((err_w, sock_fd, helper_fd, *plan.ns_fds, *plan.stdio))
        apparmor_fd = -1
        if plan.apparmor and helper_fd >= 0:  # C itself execs into the profile: open it now
            step("open the AppArmor exec attribute")
            apparmor_fd = linux.apparmor_exec_open()
        _join_container(plan, step)
        import socket  # imported by P before the fork: a sys.modules lookup here

        stdio = plan.stdio
        with socket.socket(fileno=os.dup(sock_fd)) as sock:
            if plan.pty:
                step("allocate a pty in the container")
                master, slave = os.openpty()  # from the container's devpts: we are in its mount ns
                if plan.window:
                    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *plan.window, 0, 0))
                stdio = (slave, slave, slave)
                socket.send_fds(sock, [b"x"], [master])
                os.close(master)
            else:
                sock.sendall(b"x")
        if helper_fd < 0:
            code = _fork_command(plan, err_w, sock_fd, stdio, step)
        else:
            code = _exec_helper(plan, err_w, sock_fd, helper_fd, stdio, step, apparmor_fd)
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)


def _exec_helper(plan: ExecPlan, err_w: int, sock_fd: int, helper_fd: int,
                 stdio: tuple[int, int, int], step: _Step, apparmor_fd: int) -> int:
    """C becomes the command's process and execs the helper; returns only on failure."""
    prog = _become_command(plan, stdio, step, apparmor_fd)
    if prog is None:
        return _not_found(plan, err_w)
    step("start the command")
    # out of the way of REPORT_FD first: any of them may be fd 3 in the caller
    err_w, sock_fd, helper_fd = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                                 for fd in (err_w, sock_fd, helper_fd))
    os.dup2(sock_fd, enter.REPORT_FD)  # inheritable: the helper writes the pid there
    _close_fds_except((err_w, enter.REPORT_FD, helper_fd))
    _reset_signals()
    try:
        os.execve(helper_fd, ["sysmgr-enter", prog, *plan.argv], plan.env)
    except OSError as e:
        _report(err_w, step, e)  # the caller's err_w is closed by now
    return 126


def _fork_command(plan: ExecPlan, err_w: int, sock_fd: int, stdio: tuple[int, int, int],
                  step: _Step) -> int:
    """Without a helper: fork D (a Python copy, confined before its exec), forward signals
    to it, report its pid and wait."""
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
    os.write(sock_fd, struct.pack("=i", pid))
    os.close(sock_fd)
    os.close(err_w)
    for fd in set(stdio):
        os.close(fd)
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after forwarded signals
    return exit_code(status)


def _join_container(plan: ExecPlan, step: _Step) -> None:
    """C's way in: the cgroups (as host root), then init's namespaces (its user namespace
    first, when it has one), as root in them."""
    step("join the container's cgroups")
    cgjoin.join(plan.procs_files)
    step("enter the container's namespaces")
    for fd in plan.ns_fds:
        linux.setns(fd, 0)
        os.close(fd)
    if plan.joins_userns:
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def _become_command(plan: ExecPlan, stdio: tuple[int, int, int], step: _Step,
                    apparmor_fd: int = -1) -> str | None:
    """Session, terminal, stdio, directory, bounding set, seccomp, capability sets, ids and
    no_new_privs of the command; returns the program to exec (None: not found)."""
    step("prepare the process")
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
    _confine(plan.caps, plan.seccomp, step, plan.apparmor, apparmor_fd)
    step(f"switch to uid {plan.uid} gid {plan.gid}")
    os.setgroups([plan.gid] if plan.gid else [])
    os.setresgid(plan.gid, plan.gid, plan.gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    if plan.no_new_privs:
        linux.set_no_new_privs()
    os.umask(0o022)
    return _which(plan.argv[0], plan.env.get("PATH", bundle.DEFAULT_PATH))


def _not_found(plan: ExecPlan, err_w: int) -> int:
    """Setup is done: from here on, failures are the command's (like a shell's)."""
    os.close(err_w)
    os.write(2, f"sysmgr: {plan.argv[0]}: command not found\n".encode(errors="replace"))
    return 127


def _command_main(plan: ExecPlan, err_w: int, stdio: tuple[int, int, int]) -> NoReturn:
    code = 126
    step = _Step()
    try:
        linux.set_pdeathsig(signal.SIGKILL)  # C killed by someone -> the command dies too
        prog = _become_command(plan, stdio, step)
        _close_fds_except((err_w,))
        _reset_signals()
        if prog is None:
            code = _not_found(plan, err_w)
        else:
            os.close(err_w)
            try:
                os.execve(prog, list(plan.argv), plan.env)
            except OSError as e:
                code = 127 if e.errno == errno.ENOENT else 126
                os.write(2, f"sysmgr: {plan.argv[0]}: {e.strerror}\n".encode(errors="replace"))
    except BaseException as e:
        _report(err_w, step, e)
    finally:
        os._exit(code)
