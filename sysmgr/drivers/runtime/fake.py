"""An in-memory runtime for engine/API/CLI unit tests: no kernel, no processes.

State lives in a module-level table keyed by cgroup path, so several ``FakeRuntime``
instances in one process (engine, API client, CLI runner) agree on what is running.
Fake pids are negative (callers treat ``pid > 0`` as "a real process whose /proc
exists") and their magnitude is above the kernel's ``pid_max`` limit (2**22), so even an
accidental ``os.kill`` (a process group, for a negative pid) hits nothing.

Tests can call :meth:`FakeRuntime.crash` to simulate an init that died by itself and
:meth:`FakeRuntime.reset` between tests; :attr:`FakeRuntime.execs` records every command run.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import struct
import termios
import threading
from dataclasses import dataclass, field
from typing import ClassVar

from sysmgr.drivers.runtime.base import (
    FROZEN,
    DiskMount,
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
)
from sysmgr.errors import Conflict, DriverError

FAKE_STARTTIME = 4242
_PID_BASE = 10_000_000


@dataclass
class _Container:
    spec: RuntimeSpec
    pid: int
    limits: Limits
    alive: bool = True
    frozen: bool = False
    stops: list[tuple[int, float, bool]] = field(default_factory=list)
    disks: dict[str, DiskMount] = field(default_factory=dict)  # path -> what is mounted there


_lock = threading.Lock()
_containers: dict[str, _Container] = {}
_pids = itertools.count(_PID_BASE)  # negated when used


class FakeExecProcess(ExecProcess):
    """Already finished: ``echo`` prints its arguments, everything else prints nothing."""

    def __init__(self, pid: int, code: int = 0) -> None:
        self.pid = pid
        self.code = code

    def wait(self) -> int:
        return self.code

    def poll(self) -> int | None:
        return self.code

    def kill(self) -> None:
        pass

    def send_signal(self, sig: int) -> None:
        pass


class FakeRuntime(Runtime):
    name: ClassVar[str] = "fake"
    info: ClassVar[RuntimeInfo] = RuntimeInfo(freeze=True, user_namespaces=False, live_limits=True,
                                            network_namespaces=False, live_mounts=True)
    #: every command run through exec/exec_pty: (cgroup, argv)
    execs: ClassVar[list[tuple[str, tuple[str, ...]]]] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass  # accepts the native runtime's arguments

    # -- test helpers -----------------------------------------------------------------------

    @classmethod
    def reset(cls) -> None:
        with _lock:
            _containers.clear()
            cls.execs.clear()

    @classmethod
    def crash(cls, cgroup: str) -> None:
        """Simulate init dying by itself: STOPPED, but the cgroup stays until cleanup."""
        with _lock:
            _containers[cgroup].alive = False

    @classmethod
    def running(cls) -> dict[str, RuntimeSpec]:
        """cgroup -> spec of every container whose init is alive."""
        with _lock:
            return {cg: c.spec for cg, c in _containers.items() if c.alive}

    @classmethod
    def stops(cls, cgroup: str) -> list[tuple[int, float, bool]]:
        """(halt_signal, timeout, force) of every stop of ``cgroup`` so far."""
        with _lock:
            c = _containers.get(cgroup)
            return list(c.stops) if c else []

    @classmethod
    def mounts(cls, cgroup: str) -> dict[str, DiskMount]:
        """Container path -> the disk mounted there now (at start or live)."""
        with _lock:
            c = _containers.get(cgroup)
            return dict(c.disks) if c else {}

    # -- the interface -----------------------------------------------------------------------

    def _get(self, rec: InitRecord | None) -> _Container | None:
        if rec is None:
            return None
        c = _containers.get(rec.cgroup)
        if c is None or c.pid != rec.pid or not c.alive or rec.starttime != FAKE_STARTTIME:
            return None
        return c

    def start(self, spec: RuntimeSpec, *, before_go: object = None) -> InitRecord:
        with _lock:
            old = _containers.get(spec.cgroup)
            if old is not None and old.alive:
                raise Conflict(f"cannot start container {spec.name}: its cgroup {spec.cgroup} still has processes")
            pid = -next(_pids)
            _containers[spec.cgroup] = _Container(spec=spec, pid=pid, limits=spec.limits,
                                                  disks={d.path: d for d in spec.disks})
        if callable(before_go):
            before_go(pid)
        return InitRecord(pid=pid, starttime=FAKE_STARTTIME, cgroup=spec.cgroup)

    def status(self, rec: InitRecord | None) -> Status:
        with _lock:
            c = self._get(rec)
            if c is None:
                return Status(STOPPED)
            return Status(FROZEN if c.frozen else RUNNING, pid=c.pid)

    def stop(self, rec: InitRecord, *, halt_signal: int, timeout: float, force: bool) -> bool:
        with _lock:
            c = _containers.get(rec.cgroup)
            if c is not None:
                c.stops.append((halt_signal, timeout, force))
                del _containers[rec.cgroup]
        return not force

    def _running(self, rec: InitRecord) -> _Container:
        c = self._get(rec)
        if c is None:
            raise Conflict("the container is not running")
        return c

    def freeze(self, rec: InitRecord) -> None:
        with _lock:
            self._running(rec).frozen = True

    def unfreeze(self, rec: InitRecord) -> None:
        with _lock:
            self._running(rec).frozen = False

    def set_limits(self, cgroup: str, limits: Limits) -> None:
        with _lock:
            c = _containers.get(cgroup)
            if c is None or not c.alive:
                raise Conflict(f"cgroup {cgroup} does not exist: the container is not running")
            c.limits = limits

    def mount_disk(self, rec: InitRecord, disk: DiskMount) -> None:
        with _lock:
            self._running(rec).disks[disk.path] = disk

    def unmount_disk(self, rec: InitRecord, path: str) -> None:
        with _lock:
            c = self._get(rec)
            if c is not None:
                c.disks.pop(path, None)

    def limits(self, cgroup: str) -> Limits | None:
        """Limits last applied to ``cgroup`` (test helper)."""
        with _lock:
            c = _containers.get(cgroup)
            return c.limits if c else None

    def usage(self, cgroup: str, *, detail: bool = False) -> Usage:
        with _lock:
            c = _containers.get(cgroup)
            if c is None or not c.alive:
                return Usage()
            mem = 8 << 20
            if c.limits.memory_bytes is not None:
                mem = min(mem, c.limits.memory_bytes)
            return Usage(memory_bytes=mem, memory_peak_bytes=mem, pids=2, cpu_ns=1_000_000,
                         memory_limit_bytes=c.limits.memory_bytes, swap_bytes=0,
                         memory_stat={"RSS": mem // 2, "Cached": mem // 2},
                         cpu_modes={"0": {"user": 600_000, "system": 400_000}})

    def exec(self, rec: InitRecord, proc: ProcessSpec, *, stdin: int, stdout: int, stderr: int) -> ExecProcess:
        with _lock:
            c = self._running(rec)
            if c.frozen:
                raise Conflict("the container is frozen")
            self.execs.append((rec.cgroup, tuple(proc.argv)))
        if not proc.argv:
            raise DriverError("nothing to execute: empty command")
        if os.path.basename(proc.argv[0]) == "echo":
            os.write(stdout, (" ".join(proc.argv[1:]) + "\n").encode())
        return FakeExecProcess(-next(_pids))

    def exec_pty(self, rec: InitRecord, proc: ProcessSpec) -> tuple[ExecProcess, int]:
        """A real pty pair on the host: the command "ran" and closed its side already."""
        master, slave = os.openpty()
        if proc.window:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *proc.window, 0, 0))
        try:
            p = self.exec(rec, proc, stdin=slave, stdout=slave, stderr=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return p, master

    def cleanup(self, cgroup: str) -> None:
        with _lock:
            c = _containers.get(cgroup)
            if c is not None and not c.alive:
                del _containers[cgroup]
