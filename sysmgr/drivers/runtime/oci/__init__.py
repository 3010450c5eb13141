"""crun and runc as runtime drivers: the OCI reference runtimes run sysmgr's rendered bundle.

The bundle is :func:`sysmgr.drivers.runtime.bundle.render`'s, the native runtime's; it is
written to ``<runtime_dir>/config.json`` as the record, as the native runtime does, and as
the runtime gets it (:func:`.config.adapt`: staged paths, held capabilities) to
``<state>/bundles/<id>/config.json``. The runtime's own state (``--root``) is
``<state>/state``, ``<state>`` being ``<sysmgr root>/runtimes/<engine>``: roots never see
each other's containers. A container's id is its cgroup path with ``/`` as ``_``
(``sysmgr-1a2b3c_web1``): it carries the root's id, as every kernel object does.

Start: the cgroup is sysmgr's (:class:`~sysmgr.drivers.runtime.cgroups.Cgroup`: limits and
device rules written first, the cgroup2 directory delegated to an unprivileged container's
root), ``create`` runs from a child born in it (:mod:`.launch`), so init is created paused in
its namespaces with its console on the log; ``state`` gives its pid, the engine's
``before_go`` plugs nics into its netns, ``start`` runs it. Stop: ``kill`` with the halt
signal, then SIGKILL of init (the pid namespace dies with it), ``delete``. Exec: ``exec
--process`` (the command's process on a pipe), a pty through the runtime's own relay from a
pty sysmgr allocates (runc honours ``--console-socket`` only with ``--detach``, which gives no
exit code). Status, usage, watch and reap read the kernel as for the native runtime.

The two differ in what they do with the cgroup (:attr:`OciRuntime.cgroup_verbs`): crun 1.8
refuses this hybrid host's cgroups outright, so it runs with ``--cgroup-manager=disabled``;
runc manages a cgroup of its own one level below sysmgr's (:attr:`OciRuntime.cgroup_leaf`,
device rules only), joins exec'd processes to it itself, and ``pause``/``resume`` go through
it (sysmgr's level is frozen too). Limits, usage and OOM kills are sysmgr's level's under
both, where the kernel enforces and counts them (runc's ``update`` is not used: its level
holds no limits). Where the runtimes fall short of the native runtime, a start is refused
rather than weaker: mount destinations through a symlink (runc resolved ``/dev`` on the
host), a ``shift`` disk (no idmapped mounts), a read-only disk under crun (binds unlocked).

Unprivileged containers: neither crun 1.8 nor runc 1.1 attaches an idmapped root filesystem,
so :attr:`RuntimeInfo.idmapped_mounts` is False and the engine shifts the container's files
on disk (:mod:`sysmgr.engine.idshift`) before the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import stat
import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

from sysmgr._util import linux, proc, safefs
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import (
    FROZEN,
    RUNNING,
    STOPPED,
    ExecProcess,
    InitRecord,
    Limits,
    PendingStart,
    ProcessSpec,
    Runtime,
    RuntimeInfo,
    RuntimeSpec,
    Status,
    exit_code,
)
from sysmgr.drivers.runtime.cgroups import CGROUP_ROOT, Cgroup
from sysmgr.drivers.runtime.native import KILL_TIMEOUT, delegate_cgroup, process
from sysmgr.drivers.runtime.native.hosted import CgroupHostedRuntime
from sysmgr.drivers.runtime.oci import config as oconfig
from sysmgr.drivers.runtime.oci import launch
from sysmgr.drivers.runtime.oci.pending import OciStart
from sysmgr.errors import CommandFailed, Conflict, DriverError, DriverUnavailable, SysmgrError

BeforeGo = Callable[[int], object]


class OciExecProcess(ExecProcess):
    """A command run through the runtime's ``exec``: ``pid`` is the runtime process (our
    child), whose exit code is the command's (128+N when a signal N killed it). Signals go
    to the command itself (its pid from the runtime's ``--pid-file``), as the native
    runtime's do: SIGKILL cannot be passed on by a runtime."""

    def __init__(self, pid: int, pid_file: str = "") -> None:
        self.pid = pid
        self.pid_file = pid_file
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                status = 255 << 8
            self.returncode = exit_code(status)
            if self.pid_file:
                with contextlib.suppress(OSError):
                    os.unlink(self.pid_file)
        return self.returncode

    def _command(self) -> int | None:
        """The command's host pid, once the runtime wrote it (None before, or without)."""
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        target = None
        for _ in range(200):  # the runtime writes the pid file as the command starts
            target = self._command() if self.pid_file else self.pid
            if target is not None or os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target or self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class OciRuntime(CgroupHostedRuntime):
    """Base of the crun and runc drivers: the binary and what it does with cgroups differ."""

    binary: ClassVar[str]
    #: the runtime manages a cgroup itself (pause/resume through it, exec joins it)
    cgroup_verbs: ClassVar[bool]
    #: the runtime refuses a hybrid host whose cgroup2 hierarchy holds controllers
    hide_hybrid: ClassVar[bool] = False
    #: the sub-cgroup of sysmgr's the runtime runs init in (its cgroupsPath; see .config)
    cgroup_leaf: ClassVar[str] = ""
    #: binds keep the flags sysmgr staged them with, locked in the container's user namespace
    #: (crun 1.8 clones them afresh, unlocked: a read-only disk is refused there)
    locks_binds: ClassVar[bool] = True
    #: device rules the runtime adds to every container's whatever the bundle says: sysmgr's
    #: level above allows them too (else the runtime's own writes are refused), and no more
    device_defaults: ClassVar[tuple[tuple[bool, str], ...]] = ()

    def __init__(self, state_dir: str = "/run/sysmgr-oci-state", cgroup_root: str = CGROUP_ROOT) -> None:
        self.state_dir = state_dir
        self.cgroup_root = cgroup_root

    @classmethod
    def for_root(cls, state_dir: str) -> Runtime:
        return cls(state_dir)

    @classmethod
    def available(cls) -> bool:
        return proc.which(cls.binary) is not None

    def unavailable_reason(self) -> str | None:
        return None if self.available() else f"{self.binary} is not installed"

    # -- the CLI -----------------------------------------------------------------------------

    def argv(self, *verb: str) -> list[str]:
        """``<binary> [global options] verb...``, errors to a log file we read back."""
        out = [self.binary]
        if not self.cgroup_verbs:
            out.append("--cgroup-manager=disabled")
        return out + ["--root", os.path.join(self.state_dir, "state"), *verb]

    def run(self, *verb: str, check: bool = True) -> str:
        if not self.available():
            raise DriverUnavailable(f"{self.binary} is not installed",
                                    hint=f"apt-get install {self.binary}")
        try:
            res = proc.run(self.argv(*verb), check=check, timeout=60)
        except CommandFailed as e:
            raise DriverError(f"{self.binary} {verb[0]} failed: {e.stderr.strip() or e}") from e
        return res.stdout.decode(errors="replace")

    def state(self, cid: str) -> dict[str, Any] | None:
        """The runtime's ``state`` of ``cid`` (None: it does not know the container)."""
        try:
            return json.loads(self.run("state", cid))
        except DriverError:
            return None
        except ValueError as e:
            raise DriverError(f"{self.binary} state {cid}: not JSON: {e}") from e

    @staticmethod
    def container_id(cgroup: str) -> str:
        return cgroup.strip("/").replace("/", "_")

    def bundle_dir(self, cid: str) -> str:
        return os.path.join(self.state_dir, "bundles", cid)

    def _frozen(self, cgroup: str) -> bool:
        """Whether the container is frozen: at the runtime's level (runc's pause freezes its
        cgroup, below sysmgr's) or at sysmgr's (crun's, and a freeze from elsewhere)."""
        cgs = [self._cgroup(cgroup)] + ([self._cgroup(f"{cgroup}/{self.cgroup_leaf}")]
                                        if self.cgroup_leaf else [])
        try:
            return any(cg.exists() and cg.is_frozen() for cg in cgs)
        except DriverError:
            return False

    # -- start -----------------------------------------------------------------------------

    def begin_start(self, spec: RuntimeSpec, *, before_go: BeforeGo | None = None) -> PendingStart:
        what = f"cannot start container {spec.name} with {self.binary}"
        if not self.available():
            raise DriverUnavailable(f"{what}: {self.binary} is not installed",
                                    hint=f"apt-get install {self.binary}, or set runtime.engine")
        if not os.path.isdir(spec.rootfs):
            raise DriverError(f"{what}: root filesystem {spec.rootfs} does not exist")
        rendered = bundle.render(spec)
        cg = self._cgroup(spec.cgroup)
        # the cgroup as the kernel names it: under systemd on v2 sysmgr's is in a delegated
        # scope (/sysmgr.slice/<prefix>.scope/NAME), which a runtime managing one must use
        cgroups_path = "/" + (
            spec.cgroup.strip("/") if cg.version == 1 else os.path.relpath(cg.dirs()[0], cg.root))
        self._refuse_what_it_cannot_keep(spec, rendered, what)
        given, binds = oconfig.adapt(rendered, linux.capget()[1], self.cgroup_leaf, cgroups_path)
        cid = self.container_id(spec.cgroup)
        try:
            _prepare_dirs(self.state_dir)
            _write_json(os.path.join(spec.runtime_dir, "config.json"), rendered, mode=0o700)
            _write_json(os.path.join(self.bundle_dir(cid), "config.json"), given, mode=0o700)
        except OSError as e:
            raise DriverError(f"{what}: cannot write the bundle: {e.strerror}") from e
        if cg.exists():
            if cg.procs():
                raise Conflict(f"{what}: its cgroup {cg.path} still has processes (already running?)")
            cg.destroy()
        self.run("delete", "--force", cid, check=False)  # a stale record of a dead one
        _etc_hostname(spec)
        cg.create(spec.limits, bundle.device_rules(rendered["linux"]["resources"])
                  + list(self.device_defaults))
        pending = OciStart(self, spec, cid, cg, what, before_go)
        try:
            if spec.idmap is not None:
                delegate_cgroup(cg, spec.idmap.mappings("uid"), spec.idmap.mappings("gid"))
            pending.fork(self.argv("create", "--bundle", self.bundle_dir(cid), cid), binds)
        except BaseException as e:
            pending.failed(e)
            cg.release()
            raise
        return pending

    def _refuse_what_it_cannot_keep(self, spec: RuntimeSpec, rendered: Mapping[str, Any],
                                    what: str) -> None:
        """Where this runtime would start a weaker container than the native one: refused."""
        _no_symlinked_destinations(spec.rootfs, rendered, what)
        shifted = [d.path for d in spec.disks if d.shift]
        if spec.idmap is not None and shifted:
            raise DriverError(f"{what}: disk {shifted[0]} has shift, which needs an idmapped "
                              f"mount: {self.binary} attaches none", hint="use runtime.engine native")
        if spec.idmap is not None and not self.locks_binds and any(d.readonly for d in spec.disks):
            raise DriverError(f"{what}: {self.binary} cannot keep a read-only disk locked "
                              "read-only in a user namespace (its root could remount it "
                              "writable): refused", hint="use runtime.engine runc or native")

    # -- state -----------------------------------------------------------------------------

    def status(self, rec: InitRecord | None) -> Status:
        if rec is None or not process.alive(rec):
            return Status(STOPPED)
        return Status(FROZEN if self._frozen(rec.cgroup) else RUNNING, pid=rec.pid)

    def stop(self, rec: InitRecord, *, halt_signal: int, timeout: float, force: bool) -> bool:
        cid = self.container_id(rec.cgroup)
        cg = self._cgroup(rec.cgroup)
        exited = True
        if process.alive(rec):
            if self._frozen(rec.cgroup):
                self.unfreeze(rec)  # a frozen init acts on neither the halt signal nor SIGKILL
            if not force:
                self.run("kill", cid, bundle.signal_name(halt_signal), check=False)
                exited = process.wait_exit(rec, timeout)
            if force or not exited:
                exited = False
                process.stop_init(rec, cg, halt_signal=halt_signal, timeout=0, force=True)
        self.cleanup(rec.cgroup)
        return exited

    def stop_many(self, stops: Sequence[tuple[InitRecord, int, float]], *, force: bool
                  ) -> list[bool | SysmgrError]:
        """Every halt signal (the runtime's ``kill``) before any wait: the shutdowns overlap."""
        return self.stop_overlapped(stops, force=force, send=self._send, wait=process.wait_exit)

    def _send(self, rec: InitRecord, sig: int) -> bool:
        if not process.alive(rec):
            return False
        if sig != signal.SIGKILL and self._frozen(rec.cgroup):
            self.unfreeze(rec)  # a frozen init cannot act on the halt signal
        self.run("kill", self.container_id(rec.cgroup), bundle.signal_name(sig))
        return True

    def freeze(self, rec: InitRecord) -> None:
        self.check_running(rec)
        if self.cgroup_verbs:  # the runtime's record says paused...
            self.run("pause", self.container_id(rec.cgroup))
        super().freeze(rec)  # ...and sysmgr's level is frozen, as under native

    def unfreeze(self, rec: InitRecord) -> None:
        super().unfreeze(rec)
        if self.cgroup_verbs:
            self.run("resume", self.container_id(rec.cgroup))

    def write_limits(self, cg: Cgroup, limits: Limits) -> None:
        # sysmgr's level holds the limits under every engine (see .config: runc's level below
        # has none), so the kernel counts OOM kills and refused forks where sysmgr reads them
        leaf = self._cgroup(f"{cg.path}/{self.cgroup_leaf}") if self.cgroup_leaf else None
        if leaf is None or cg.version != 1 or not leaf.exists():
            cg.set_limits(limits)
            return
        # v1 cpusets nest strictly (a child's CPUs are its parent's): sysmgr's level first gets
        # every CPU its parent has, then the leaf the new set, then sysmgr's level the same;
        # the leaf's other limits stay "none"
        cg.set_limits(dataclasses.replace(limits, cpuset=None))
        leaf.set_limits(Limits(cpuset=limits.cpuset))
        cg.set_limits(limits)

    def cleanup(self, cgroup: str) -> None:
        cid = self.container_id(cgroup)
        if os.path.isdir(os.path.join(self.state_dir, "state", cid)):
            self.run("delete", "--force", cid, check=False)
        cg = self._cgroup(cgroup)
        if cg.exists():
            cg.kill_all(KILL_TIMEOUT)
        cg.destroy()  # also what the runtime's delete left: its dirs, the shared prefix
        _remove_tree(self.bundle_dir(cid))

    # -- exec ------------------------------------------------------------------------------

    def exec(self, rec: InitRecord, proc: ProcessSpec, *, stdin: int, stdout: int, stderr: int) -> ExecProcess:
        return self._spawn(rec, proc, (stdin, stdout, stderr), tty=False)

    def exec_pty(self, rec: InitRecord, proc: ProcessSpec) -> tuple[ExecProcess, int]:
        import fcntl
        import struct
        import termios

        master, slave = os.openpty()
        try:
            if proc.window:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", proc.window[0], proc.window[1], 0, 0))
            p = self._spawn(rec, proc, (slave, slave, slave), tty=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return p, master

    def _spawn(self, rec: InitRecord, proc: ProcessSpec, stdio: tuple[int, int, int], *,
               tty: bool) -> OciExecProcess:
        if not process.alive(rec):
            raise Conflict("the container is not running")
        if self._frozen(rec.cgroup):  # the command would hang frozen, and we with it
            raise Conflict("the container is frozen")
        cid = self.container_id(rec.cgroup)
        try:
            with open(os.path.join(self.bundle_dir(cid), "config.json")) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise DriverError(f"cannot exec in {cid}: its bundle is unreadable: {e}") from e
        root = f"/proc/{rec.pid}/root"
        if not _is_dir_in(root, proc.cwd or "/"):
            raise DriverError(f"cannot exec: working directory {proc.cwd} does not exist")
        if not _found_in(root, proc.argv[0], proc.env.get("PATH", bundle.DEFAULT_PATH)):
            return _not_found(proc.argv[0], stdio[2])  # as a shell says it, as native does
        body = json.dumps(oconfig.exec_process(cfg, proc, terminal=tty)).encode()
        # (a leaf below once init enabled controllers for sub-cgroups: v2's no-internal-processes)
        files = [] if self.cgroup_verbs else self._cgroup(rec.cgroup).join_files()
        pid_file = os.path.join(self.bundle_dir(cid), f"exec-{os.getpid()}-{time.monotonic_ns()}.pid")
        with _pipe_with(body) as pfd:
            err_r, err_w = os.pipe()
            try:
                argv = self.argv("exec", "--pid-file", pid_file, "--process", f"/proc/self/fd/{pfd}", cid)
                pid, joins = launch.cgjoin.fork(files)
                if pid == 0:
                    launch.exec_child(argv, joins, stdio, pfd, err_w, new_session=tty)
                os.close(err_w)
                err_w = -1
                msg = launch.read_report(err_r)
            finally:
                os.close(err_r)
                if err_w >= 0:
                    os.close(err_w)
        p = OciExecProcess(pid, pid_file)
        if msg:
            p.wait()
            raise DriverError(f"cannot exec with {self.binary}: {msg}")
        return p

    def can_idmap(self, path: str) -> bool:
        return False  # neither attaches an idmapped mount in these versions: shift on disk

    def as_container_root(self, rec: InitRecord, fn: Callable[[], Any]) -> Any:
        from sysmgr.drivers.runtime.native import userns  # the kernel's, not the runtime's

        if not process.alive(rec) or not userns.own_userns(rec.pid):
            return fn()
        return userns.call_as_root_of(rec.pid, fn)


_INFO = RuntimeInfo(freeze=True, user_namespaces=True, live_limits=True, apparmor=False,
                    live_mounts=False, resource_views=False, idmapped_mounts=False)


class CrunRuntime(OciRuntime):
    """crun (1.8): cgroups left to sysmgr, an exec's crun stays in the cgroup with the command."""

    name: ClassVar[str] = "crun"
    binary: ClassVar[str] = "crun"
    cgroup_verbs: ClassVar[bool] = False
    hide_hybrid: ClassVar[bool] = True
    locks_binds: ClassVar[bool] = False
    info: ClassVar[RuntimeInfo] = RuntimeInfo(**{**_INFO.__dict__, "exec_helper_outside": False})


class RuncRuntime(OciRuntime):
    """runc (1.1): manages the cgroup at sysmgr's path itself."""

    name: ClassVar[str] = "runc"
    binary: ClassVar[str] = "runc"
    cgroup_verbs: ClassVar[bool] = True
    cgroup_leaf: ClassVar[str] = ".payload"
    # runc 1.1's specconv.AllowedDevices beyond the bundle's list: mknod of any node (not
    # its use), and /dev/net/tun
    device_defaults: ClassVar[tuple[tuple[bool, str], ...]] = (
        (True, "c *:* m"), (True, "b *:* m"), (True, "c 10:200 rwm"))
    info: ClassVar[RuntimeInfo] = _INFO


# -- files -------------------------------------------------------------------------------------

class _pipe_with:
    """A pipe holding ``data`` (small: it fits the pipe's buffer), its read end as the value;
    handed to a runtime as ``/proc/self/fd/N`` instead of a file to remove afterwards."""

    def __init__(self, data: bytes) -> None:
        self.r, w = os.pipe()
        try:
            os.write(w, data)
        finally:
            os.close(w)

    def __enter__(self) -> int:
        return self.r

    def __exit__(self, *exc: object) -> None:
        os.close(self.r)


def _no_symlinked_destinations(rootfs: str, config: Mapping[str, Any], what: str) -> None:
    """Refuse an image whose mount destinations go through a symlink: crun and runc resolve
    some of them on the host before pivot_root (runc 1.1 made /dev/stdin & co. in the host
    directory an image's absolute /dev link named); the native runtime resolves them inside."""
    for m in config.get("mounts") or ():
        parts = [p for p in str(m["destination"]).split("/") if p]
        for i in range(1, len(parts) + 1):
            rel = "/" + "/".join(parts[:i])
            try:
                st = os.lstat(os.path.join(rootfs, rel.lstrip("/")))
            except OSError:
                break  # missing: the runtime makes it
            if stat.S_ISLNK(st.st_mode):
                raise DriverError(f"{what}: {rel} is a symlink in the image, which the OCI "
                                  "runtimes may follow on the host: refused",
                                  hint="use runtime.engine native for this image")


def _etc_hostname(spec: RuntimeSpec) -> None:
    """Keep /etc/hostname in step with the container's name, as the native runtime does
    (systemd and the busybox rcS read it; the runtimes only set the kernel's): written from
    the host, without following links, owned by the container's root."""
    want = (spec.name + "\n").encode()
    try:
        if safefs.read_file(spec.rootfs, "/etc/hostname") == want:
            return
    except SysmgrError:
        pass  # none yet
    uid = gid = 0
    if spec.idmap is not None and not spec.idmapped_rootfs:  # the files carry host ids
        uid = spec.idmap.host_id("uid", 0) or 0
        gid = spec.idmap.host_id("gid", 0) or 0
    try:
        safefs.write_file(spec.rootfs, "/etc/hostname", want, uid=uid, gid=gid)
    except SysmgrError:
        pass  # no /etc, a read-only image: the kernel's hostname is set anyway


def _is_dir_in(root: str, path: str) -> bool:
    """Whether ``path`` is a directory inside ``root`` (every link resolved inside it)."""
    try:
        return stat.S_ISDIR(safefs.stat(root, path).st_mode)
    except SysmgrError:
        return False


def _found_in(root: str, prog: str, path: str) -> bool:
    """Whether ``prog`` names an executable file inside ``root`` (searched on ``path``)."""
    cands = [prog] if "/" in prog else [os.path.join(d or ".", prog) for d in path.split(":")]
    for c in cands:
        try:
            st = safefs.stat(root, c if c.startswith("/") else "/" + c)
        except SysmgrError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return True
    return False


def _not_found(prog: str, stderr: int) -> OciExecProcess:
    """A finished 'command not found' (127): a child of ours, so it is waited as any exec."""
    pid = os.fork()
    if pid == 0:
        try:
            os.write(stderr, f"sysmgr: {prog}: command not found\n".encode(errors="replace"))
        finally:
            os._exit(127)
    return OciExecProcess(pid)


def _prepare_dirs(state_dir: str) -> None:
    # (makedirs' mode is the leaf's only: every level made private on its own)
    os.makedirs(os.path.dirname(state_dir), mode=0o700, exist_ok=True)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(state_dir, "state"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(state_dir, "bundles"), mode=0o700, exist_ok=True)
    if not os.path.isdir(oconfig.STAGED_ROOTFS):  # the mount point, and runc exec's chdir
        os.makedirs(oconfig.STAGE, mode=0o711, exist_ok=True)
        os.makedirs(oconfig.STAGED_ROOTFS, mode=0o711, exist_ok=True)


def _write_json(path: str, data: Any, *, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=mode, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


__all__ = ["CrunRuntime", "OciExecProcess", "OciRuntime", "RuncRuntime"]
