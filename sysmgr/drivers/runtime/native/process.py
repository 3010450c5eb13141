"""Process control on the caller's side (P) of the native runtime (layer: runtime driver).

Forking the children of :mod:`.child` and handing over to them (start, exec), pidfds,
waiting for init to exit (reaping what it leaves behind), liveness checks against pid reuse,
and :class:`NativeExecProcess`, the handle of a command running in a container.

Fds are owned by an :class:`_Fds` per operation so each is closed exactly once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import time
from typing import Any, Callable

from sysmgr._util import linux, seccomp
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import ExecProcess, InitRecord, ProcessSpec, exit_code
from sysmgr.drivers.runtime.cgroups import Cgroup
from sysmgr.drivers.runtime.native import cgjoin, child, enter
from sysmgr.drivers.runtime.native.helper import read_to_eof
from sysmgr.drivers.runtime.native.plan import ExecPlan, InitPlan, exec_cap_sets
from sysmgr.errors import Conflict, DriverError, SysmgrError

#: Called with init's host pid after the namespaces exist and before init runs.
BeforeGo = Callable[[int], object]

START_TIMEOUT = 30.0     # from fork to init exec'ed (a stuck mount would hit this)
KILL_TIMEOUT = 10.0      # after SIGKILL, for the kernel to tear a container down

#: setns order for exec: the mount namespace last (it changes our root).
_EXEC_NS = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


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


# -- start -------------------------------------------------------------------------------------

def launch(plan: InitPlan, bundle_dir: str, what: str, hook: BeforeGo | None) -> InitRecord:
    """Fork A (which forks init), hand over, wait for init's exec. Kills init on failure.

    ``plan.procs_files`` must name the container's (existing) cgroups; ``what`` starts
    every error message.
    """
    return Launching(plan, bundle_dir, what).finish(hook)


class Launching:
    """A start under way: A forked and setting the container up on its own, while the
    caller does something else (prepares the next container of a batch); :meth:`finish`
    hands over to init, :meth:`abort` gives up (nothing is left running). The fds are
    this object's until then."""

    def __init__(self, plan: InitPlan, bundle_dir: str, what: str) -> None:
        self.what = what
        self.plan = plan
        self._fds = fds = _Fds()
        try:
            console_fd, self.console = _open_console(plan, bundle_dir, what, fds)
            self._info_r, info_w = fds.pipe()
            self._err_r, err_w = fds.pipe()
            go_r, self._go_w = fds.pipe()
            self._starter, joins = cgjoin.fork(plan.procs_files)
            if self._starter == 0:
                child.starter_main(plan._replace(procs_files=joins), info_w, err_w, go_r,
                                   console_fd)  # never returns
            fds.close(info_w, err_w, go_r, console_fd)
        except BaseException:
            fds.__exit__()
            raise

    def finish(self, hook: BeforeGo | None) -> InitRecord:
        """Wait for A's report, run ``hook`` with init's pid, say "go", wait for init's
        exec. Kills init on failure."""
        return self._complete(hook, go=True)

    def abort(self) -> None:
        """Give up: init (once A forked it) is killed before it ran anything."""
        with contextlib.suppress(SysmgrError):
            self._complete(None, go=False)

    def _complete(self, hook: BeforeGo | None, go: bool) -> InitRecord:
        what, fds = self.what, self._fds
        with fds:
            raw = _read_exact(self._info_r, 8)
            _, st = os.waitpid(self._starter, 0)
            if len(raw) != 8:
                try:
                    msg = read_to_eof(self._err_r, 5.0).decode(errors="replace")
                except TimeoutError:
                    msg = ""
                raise DriverError(f"{what}: {msg or f'starter exited with status {exit_code(st)}'}")
            pid = struct.unpack("=q", raw)[0]
            try:
                pidfd = fds.add(linux.pidfd_open(pid))
            except OSError as e:  # only if init died before the go (killed from outside)
                raise DriverError(f"{what}: init (pid {pid}) vanished: {e.strerror}") from e
            try:
                if not go:
                    raise DriverError(f"{what}: given up")
                starttime = _let_init_go(pid, hook, self._go_w, self._err_r, fds, what,
                                         self.console)
            except BaseException:
                _kill_init(pid, pidfd)
                raise
        return InitRecord(pid=pid, starttime=starttime, cgroup=self.plan.cgroup)


def _open_console(plan: InitPlan, bundle_dir: str, what: str, fds: _Fds) -> tuple[int, str]:
    """init's stdout and stderr: the console log on the container's volume, new at each
    start (a bundle that binds no log of its own on /dev/console: one in the bundle dir)."""
    if plan.console:
        from sysmgr._util import safefs  # not at the top: only a start needs it
        try:
            return fds.add(safefs.create_log(plan.rootfs, plan.console)), \
                os.path.join(plan.rootfs, plan.console)
        except SysmgrError as e:
            raise DriverError(f"{what}: cannot create the console log: {e}") from e
    console = os.path.join(bundle_dir, "console.log")
    try:
        return fds.add(os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                               | os.O_CLOEXEC, 0o600)), console
    except OSError as e:
        raise DriverError(f"{what}: cannot open {console}: {e.strerror}") from e


def _let_init_go(pid: int, hook: BeforeGo | None, go_w: int, err_r: int, fds: _Fds, what: str,
                 console: str) -> int:
    """Run the hook, say "go", wait for init's exec; return init's start time."""
    # user namespaces (later): A reports here that it unshared one, and P writes
    # the maps with userns.write_id_maps(pid, ...) before saying "go".
    if hook is not None:
        hook(pid)
    os.write(go_w, b"g")
    fds.close(go_w)
    try:
        msg = read_to_eof(err_r, START_TIMEOUT).decode(errors="replace")
    except TimeoutError:
        raise DriverError(f"{what}: init was not running after {START_TIMEOUT:.0f}s") from None
    if msg:
        raise DriverError(f"{what}: {msg}")
    starttime = linux.proc_starttime(pid)
    if starttime is None or linux.proc_state(pid) in ("Z", "X"):
        raise DriverError(f"{what}: init exited immediately (see {console})")
    return starttime


def _kill_init(pid: int, pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _wait_pidfd(pidfd, KILL_TIMEOUT)
    _reap(pid)


# -- state and stop ----------------------------------------------------------------------------

def signal_init(rec: InitRecord, cg: Cgroup, sig: int) -> bool:
    """Send init ``sig`` (a frozen container is thawed first, so that it can act on it);
    False when init was gone already. A stop of many sends every signal first."""
    pidfd = _open_init(rec)
    if pidfd is None:
        return False
    try:
        if sig != signal.SIGKILL and cg.is_frozen():
            cg.thaw()  # a frozen init cannot act on the halt signal
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(pidfd)


def wait_exit(rec: InitRecord, timeout: float) -> bool:
    """Whether init exits within ``timeout`` seconds (at once True when it is gone)."""
    pidfd = _open_init(rec)
    if pidfd is None:
        return True
    try:
        return _wait_init_exit(pidfd, timeout)
    finally:
        os.close(pidfd)


def alive(rec: InitRecord) -> bool:
    """init is running (not gone, not a zombie, not a recycled pid); reaps its zombie."""
    if linux.proc_starttime(rec.pid) != rec.starttime:
        return False
    if linux.proc_state(rec.pid) in ("Z", "X", None):
        _reap(rec.pid)  # same start time: it is our init's zombie, if we are its reaper
        return False
    return True


def watch_fd(rec: InitRecord) -> int | None:
    """A pidfd of init, readable once it exited; unlike :func:`alive` a zombie is not reaped
    (its exit status is left to :func:`collect_exit`). None when init is gone (reaped, or
    its pid now belongs to another process)."""
    try:
        pidfd = linux.pidfd_open(rec.pid)
    except ProcessLookupError:
        return None
    except OSError as e:
        raise DriverError(f"cannot watch init (pid {rec.pid}): {e.strerror}") from e
    # checked after opening: a zombie keeps its start time, a recycled pid has another
    if linux.proc_starttime(rec.pid) != rec.starttime:
        os.close(pidfd)
        return None
    return pidfd


def collect_exit(rec: InitRecord) -> int | None:
    """Reap init if it exited and we are its reaper; its shell-style exit code, else None.

    Only the parent (here: the subreaper init was reparented to) can read an exit status;
    the start time check keeps a recycled pid from being mistaken for init."""
    if linux.proc_starttime(rec.pid) != rec.starttime:
        return None
    try:
        res = os.waitid(os.P_PID, rec.pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if res is None:
        return None  # still running
    return res.si_status if res.si_code == os.CLD_EXITED else 128 + res.si_status


def _open_init(rec: InitRecord) -> int | None:
    """A pidfd of the live init, or None when it is gone (checked *after* opening, so
    the fd cannot refer to a recycled pid); a zombie is reaped."""
    pidfd = watch_fd(rec)
    if pidfd is not None and not alive(rec):
        os.close(pidfd)
        return None
    return pidfd


def stop_init(rec: InitRecord, cg: Cgroup, *, halt_signal: int, timeout: float, force: bool) -> bool:
    """Make init exit (halt signal, then SIGKILL after ``timeout``) and reap it; the caller
    removes the cgroup, killing whatever else it still holds (:meth:`Cgroup.kill_all`). True
    when init exited by itself (or was already gone)."""
    pidfd = _open_init(rec)
    if pidfd is None:
        return True
    exited = False
    try:
        if cg.is_frozen():
            cg.thaw()  # a frozen init acts on neither the halt signal nor SIGKILL
        if not force:
            try:
                signal.pidfd_send_signal(pidfd, halt_signal)
            except ProcessLookupError:
                pass
            exited = _wait_init_exit(pidfd, timeout)
        if not exited:
            # init is PID 1 of its pid namespace: once it dies the kernel kills every other
            # process in there and forks no new one (no fork bomb outruns it, no freezing
            # and polling of the cgroup needed); its pidfd is readable once they are gone
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not _wait_init_exit(pidfd, KILL_TIMEOUT):
                raise DriverError(f"init (pid {rec.pid}) did not die after SIGKILL")
    finally:
        os.close(pidfd)
    _reap(rec.pid)
    return exited


# -- exec --------------------------------------------------------------------------------------

def spawn(rec: InitRecord, proc: ProcessSpec, cg: Cgroup, stdio: tuple[int, int, int],
          pty: bool) -> tuple[NativeExecProcess, int | None]:
    """Fork C to run ``proc`` in the container of ``rec`` (cgroup ``cg``); with ``pty``, also
    return the master of the pty C allocated from the container's devpts."""
    if not proc.argv:
        raise DriverError("nothing to execute: empty command")
    import socket  # not at the top: keeps importing the driver cheap (CLI reads); before the fork
    with _Fds() as fds:
        ns_fds = _open_namespaces(rec, fds)
        # checked after opening: from here on the fds cannot belong to a recycled pid
        if not alive(rec):
            raise Conflict("the container is not running")
        if cg.is_frozen():
            raise Conflict("the container is frozen")
        plan = _exec_plan(rec, proc, cg, ns_fds, pty, stdio)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sock_parent, sock_child = fds.add(a.detach()), fds.add(b.detach())
        err_r, err_w = fds.pipe()
        memfd = fds.add(enter.sealed_memfd()) if enter.available() else -1
        helper, joins = cgjoin.fork(plan.procs_files)
        if helper == 0:
            child.exec_main(plan._replace(procs_files=joins), err_w, sock_child,
                            memfd)  # never returns
        fds.close(err_w, sock_child, memfd, *ns_fds)
        got: list[int] = []
        try:
            with socket.socket(fileno=sock_parent) as s:
                fds.close_later(sock_parent)  # owned by the socket object now
                s.settimeout(START_TIMEOUT)
                _, got, _, _ = socket.recv_fds(s, 1, 1)  # the pty master, if any
                command = _recv_pid(s)
            if command is not None:
                cg.evict(helper)  # the command stays in the container's cgroup, not our helper
            msg = read_to_eof(err_r, START_TIMEOUT).decode(errors="replace")
        except BaseException as e:
            for fd in got:
                os.close(fd)
            _kill_helper(helper)
            if isinstance(e, TimeoutError):
                raise DriverError(f"exec {proc.argv[0]}: the process did not start") from None
            raise
    return _exec_result(proc, helper, command, got[0] if got else None, msg, pty)


def _recv_pid(sock: Any) -> int | None:
    """The command's pid as C (or the helper it became) reports it; None when it reported
    none (setup failed, or the command was not found)."""
    buf = b""
    while len(buf) < 4:
        chunk = sock.recv(4 - len(buf))
        if not chunk:
            return None
        buf += chunk
    return struct.unpack("=i", buf)[0]


def _command_pidfd(helper: int, pid: int | None) -> int | None:
    """A pidfd of the command, checked *after* opening to be the helper's child: a command
    that already exited (and was reaped) may have left its pid to another process."""
    if pid is None:
        return None
    try:
        pidfd = linux.pidfd_open(pid)
    except OSError:
        return None
    if linux.proc_status_field(pid, "PPid") != str(helper):
        os.close(pidfd)
        return None
    return pidfd


def _open_namespaces(rec: InitRecord, fds: _Fds) -> list[int]:
    """Fds of init's namespaces in setns order (its user ns first, if it has its own)."""
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
    return ns_fds


def _exec_plan(rec: InitRecord, proc: ProcessSpec, cg: Cgroup, ns_fds: list[int], pty: bool,
               stdio: tuple[int, int, int]) -> ExecPlan:
    """The command gets init's capability bounding set and no_new_privs, not more."""
    mask = int(linux.proc_status_field(rec.pid, "CapBnd") or "0", 16)
    env = dict(proc.env)
    env.setdefault("PATH", bundle.DEFAULT_PATH)
    return ExecPlan(
        argv=tuple(proc.argv), env=env, cwd=proc.cwd or "/", uid=proc.uid, gid=proc.gid,
        procs_files=tuple(cg.join_files()), ns_fds=tuple(ns_fds), joins_userns=len(ns_fds) > len(_EXEC_NS),
        drop_caps=tuple(c for c in range(linux.cap_last_cap() + 1) if not mask >> c & 1),
        no_new_privs=linux.proc_status_field(rec.pid, "NoNewPrivs") == "1",
        pty=pty, stdio=stdio, window=proc.window,
        caps=exec_cap_sets({k: linux.proc_status_field(rec.pid, k) or ""
                            for k in ("CapPrm", "CapInh", "CapAmb")}),
        # init under a filter (mode 2): the command gets sysmgr's filter too (assembled once)
        seccomp=seccomp.assemble(seccomp.rules_for(privileged=len(ns_fds) == len(_EXEC_NS)))
        if linux.proc_status_field(rec.pid, "Seccomp") == "2" else b"",
        apparmor=linux.apparmor_label(rec.pid),  # init's profile (by name), as for its capabilities
    )


def _exec_result(proc: ProcessSpec, helper: int, command: int | None, master: int | None,
                 msg: str, pty: bool) -> tuple[NativeExecProcess, int | None]:
    """The handle of the started command, or the helper's error (after collecting it)."""
    started = NativeExecProcess(helper, _command_pidfd(helper, command))
    if msg or (pty and master is None):
        if master is not None:
            os.close(master)
        started.wait()
        raise DriverError(f"cannot exec {proc.argv[0]} in the container: {msg or 'the helper failed'}")
    return started, master


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


# -- pipes, pidfds, reaping --------------------------------------------------------------------

def _read_exact(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


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

