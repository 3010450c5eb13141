"""The native runtime: sysmgr's own launcher (fork + ctypes), nothing beyond the kernel.

Start (no sysmgr process stays resident per container)::

    P (caller)  render config.json once, write it (the record; other OCI runtimes can run it),
                digest the rendering in memory into a plan, create the cgroup and write the
                spec's limits, create the console log on the volume (O_APPEND), fork A
    A           join every cgroup, unshare(pid|mnt|uts|ipc|net), fork B, send B's pid, exit
    P           reap A, [before_go(B's host pid): e.g. move veths into its netns], send "go"
    B = PID 1   unshare(cgroup), mounts from the plan, devices, pivot_root, hostname,
                masked/read-only paths, drop capabilities, setsid, exec init
    P           error pipe (CLOEXEC) reaches EOF: init was exec'ed -> InitRecord

:meth:`NativeRuntime.begin_start` returns after forking A (the container sets itself up while
the caller prepares the next one of a batch); its ``finish`` is the second P line onwards.
Stopping many (:meth:`NativeRuntime.stop_many`) sends every halt signal or kill first.

Everything B does comes from the plan (:mod:`.plan`), built from the rendered configuration
(:mod:`..bundle`) without reading ``config.json`` back; :meth:`NativeRuntime.start_bundle`
starts an existing bundle dir instead. A failure in A or B before ``execve`` is written to the
error pipe and raised as a :class:`DriverError`; P then kills what was started and removes
the cgroup.

Exec: P forks C; C joins the cgroups and setns()es into init's namespaces (mnt last), forks D
(only children enter the pid ns), waits for it and exits with D's shell-style exit code.
With a pty, C allocates it from the container's devpts after entering the mount ns and
passes the master to P over a socketpair.

After A exits, init is reparented to the nearest child subreaper (see
:meth:`NativeRuntime.become_subreaper`) or to the host's PID 1. ``status`` therefore treats a
zombie, or a pid whose start time changed, as STOPPED, and reaps the zombie when it can.

Modules: :mod:`.plan` (what a start or exec will do, as data), :mod:`.child` (the only code
the forked children run), :mod:`.process` (P's side: fork, hand over, wait, stop, exec
handles), :mod:`.userns` (id maps, for the coming user-namespace support). This module holds
the driver class that ties them to cgroups and the bundle dir.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from sysmgr._util import linux
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import (
    FROZEN,
    DiskMount,
    RUNNING,
    STOPPED,
    ExecProcess,
    InitRecord,
    PendingStart,
    ProcessSpec,
    RuntimeInfo,
    RuntimeSpec,
    Status,
)
from sysmgr.drivers.runtime.cgroups import CGROUP_ROOT, Cgroup
from sysmgr.drivers.runtime.native import process
from sysmgr.drivers.runtime.native.hosted import CgroupHostedRuntime
from sysmgr.drivers.runtime.native import plan as plan_mod
from sysmgr.drivers.runtime.native.plan import InitPlan, plan_from_config, plan_from_spec
from sysmgr.drivers.runtime.native.process import (
    KILL_TIMEOUT,
    START_TIMEOUT,
    BeforeGo,
    NativeExecProcess,
)
from sysmgr.errors import Conflict, DriverError, SysmgrError

T = TypeVar("T")

__all__ = ["BeforeGo", "KILL_TIMEOUT", "NativeExecProcess", "NativeRuntime", "START_TIMEOUT",
           "delegate_cgroup"]


class NativeRuntime(CgroupHostedRuntime):
    """Runs the bundle with namespaces, cgroups and pivot_root done by sysmgr itself.

    Args:
        cgroup_root: where the cgroup hierarchies are mounted.
        before_go: default hook called with init's host pid between "namespaces exist" and
            "init runs" (the engine moves veths into the netns there); :meth:`start` takes a
            per-call override.
    """

    name: ClassVar[str] = "native"
    info: ClassVar[RuntimeInfo] = RuntimeInfo(freeze=True, user_namespaces=True, live_limits=True,
                                              apparmor=True, live_mounts=True, resource_views=True)

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

    # -- start -----------------------------------------------------------------------------

    def begin_start(self, spec: RuntimeSpec, *,
                    before_go: BeforeGo | None = None) -> PendingStart:
        config = bundle.render(spec)
        try:
            os.makedirs(spec.runtime_dir, mode=0o700, exist_ok=True)
            _write_json(os.path.join(spec.runtime_dir, "config.json"), config)
        except OSError as e:
            raise DriverError(f"cannot write the bundle in {spec.runtime_dir}: {e.strerror}") from e
        # the rendering we hold, not the file: config.json is the record, not our input
        plan = plan_from_spec(spec, config)
        return self._begin_plan(plan, spec.runtime_dir, before_go or self.before_go)

    def start_bundle(self, bundle_dir: str, *, before_go: BeforeGo | None = None) -> InitRecord:
        """Start the container described by an existing ``<bundle_dir>/config.json``
        (not used by :meth:`start`: for a bundle rendered earlier or elsewhere)."""
        plan = plan_from_config(_read_json(os.path.join(bundle_dir, "config.json")), bundle_dir)
        return self._begin_plan(plan, bundle_dir, before_go or self.before_go).finish()

    def _begin_plan(self, plan: InitPlan, bundle_dir: str, hook: BeforeGo | None
                    ) -> PendingStart:
        """Check the plan, create the cgroup with its limits, fork the starter; on failure
        (here or in ``finish``) remove the cgroup again (and with it anything started)."""
        what = f"cannot start container {plan.name}" if plan.name else "cannot start container"
        if plan.userns and not plan.uid_map:
            raise DriverError(f"{what}: the bundle has a user namespace but no uidMappings")
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
        pending = _NativeStart(self, cg, hook)
        try:
            if plan.userns:
                delegate_cgroup(cg, plan.uid_map, plan.gid_map)
            pending.launching = process.Launching(
                plan._replace(procs_files=tuple(cg.procs_files())), bundle_dir, what)
        except BaseException as e:
            pending.failed(e)
            cg.release()
            raise
        return pending

    def _remove_cgroup(self, cg: Cgroup) -> None:
        cg.kill_all(KILL_TIMEOUT)
        cg.destroy()

    # -- state -----------------------------------------------------------------------------

    def status(self, rec: InitRecord | None) -> Status:
        if rec is None or not process.alive(rec):
            return Status(STOPPED)
        try:
            frozen = self._cgroup(rec.cgroup).is_frozen()
        except DriverError:
            frozen = False
        return Status(FROZEN if frozen else RUNNING, pid=rec.pid)

    def stop(self, rec: InitRecord, *, halt_signal: int, timeout: float, force: bool) -> bool:
        cg = self._cgroup(rec.cgroup)
        exited = process.stop_init(rec, cg, halt_signal=halt_signal, timeout=timeout, force=force)
        self._remove_cgroup(cg)
        return exited

    def stop_many(self, stops: Sequence[tuple[InitRecord, int, float]], *, force: bool
                  ) -> list[bool | SysmgrError]:
        return self.stop_overlapped(
            stops, force=force, wait=process.wait_exit,
            send=lambda rec, sig: process.signal_init(rec, self._cgroup(rec.cgroup), sig))

    def cleanup(self, cgroup: str) -> None:
        cg = self._cgroup(cgroup)
        if cg.exists():
            self._remove_cgroup(cg)

    # -- exec ------------------------------------------------------------------------------

    def exec(self, rec: InitRecord, proc: ProcessSpec, *, stdin: int, stdout: int, stderr: int) -> ExecProcess:
        return process.spawn(rec, proc, self._cgroup(rec.cgroup), (stdin, stdout, stderr), pty=False)[0]

    def exec_pty(self, rec: InitRecord, proc: ProcessSpec) -> tuple[ExecProcess, int]:
        p, master = process.spawn(rec, proc, self._cgroup(rec.cgroup), (0, 1, 2), pty=True)
        assert master is not None
        return p, master

    def can_idmap(self, path: str) -> bool:
        from sysmgr.drivers.runtime.native import idprobe  # a start's, not a read's

        return idprobe.can_idmap(path)

    def mount_disk(self, rec: InitRecord, disk: DiskMount) -> None:
        if not process.alive(rec):
            raise Conflict("the container is not running")
        from sysmgr.drivers.runtime.native import hotplug, userns  # live disks only

        entry = plan_mod.mount_entry(bundle.disk_mount(disk, userns.own_userns(rec.pid)))
        hotplug.mount(rec.pid, entry, f"cannot mount {disk.source} on {disk.path}")

    def unmount_disk(self, rec: InitRecord, path: str) -> None:
        if not process.alive(rec):
            return  # stopped: nothing is mounted any more
        from sysmgr.drivers.runtime.native import hotplug

        hotplug.unmount(rec.pid, path, f"cannot unmount {path}")

    def as_container_root(self, rec: InitRecord, fn: Callable[[], T]) -> T:
        from sysmgr.drivers.runtime.native import userns  # file access as the container's root

        if not process.alive(rec) or not userns.own_userns(rec.pid):
            return fn()
        return userns.call_as_root_of(rec.pid, fn)


class _NativeStart(PendingStart):
    """A native start under way: its cgroup made, its starter forked."""

    def __init__(self, runtime: NativeRuntime, cg: Cgroup, hook: BeforeGo | None) -> None:
        self.runtime, self.cg, self.hook = runtime, cg, hook
        self.launching: process.Launching | None = None

    def finish(self) -> InitRecord:
        assert self.launching is not None
        try:
            return self.launching.finish(self.hook)
        except BaseException as e:
            self.failed(e)
            raise
        finally:
            self.cg.release()  # init keeps a delegated scope alive from now on

    def abort(self) -> None:
        if self.launching is not None:
            self.launching.abort()
        self.failed(None)
        self.cg.release()

    def failed(self, error: BaseException | None) -> None:
        """Remove the cgroup (and whatever runs in it); note a failure to on ``error``."""
        try:
            self.runtime._remove_cgroup(self.cg)
        except DriverError as cleanup_error:
            if error is not None:
                error.add_note(f"cleanup failed too: {cleanup_error}")


# -- the bundle file ---------------------------------------------------------------------------

def delegate_cgroup(cg: Cgroup, uid_map: Sequence[tuple[int, int, int]],
                    gid_map: Sequence[tuple[int, int, int]]) -> None:
    """The cgroup directories an unprivileged init manages itself go to its root: the one
    systemd uses (the cgroup2 directory: the ``unified`` hierarchy on a hybrid host, or the
    container's on a v2 host) and the ``name=systemd`` one. Controllers' own directories (the
    device rules, the limits) stay the host's."""
    root_uid = next((h for ns, h, _n in uid_map if ns == 0), None)
    root_gid = next((h for ns, h, _n in gid_map if ns == 0), None)
    if root_uid is None or root_gid is None:
        return
    from sysmgr.drivers.runtime.native import userns

    dirs = [d for d in cg.dirs() if cg.version == 2 or d.startswith(
        (os.path.join(cg.root, "unified") + "/", os.path.join(cg.root, "systemd") + "/"))]
    try:
        userns.delegate(dirs, root_uid, root_gid)
    except OSError as e:
        raise DriverError(f"cannot hand the cgroup {cg.path} to the container: {e.strerror}") from e


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DriverError(f"cannot read the bundle {path}: {e}") from e
