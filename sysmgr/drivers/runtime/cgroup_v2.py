"""cgroup v2: one directory per container in the single tree, controllers enabled along the
path, and the device policy as a ``BPF_CGROUP_DEVICE`` program attached to it.

On a unified host whose root systemd owns, the container's cgroup sits in sysmgr's
delegated scope (:mod:`.cgroup_layout`). The device rules arrive in their v1 form
(``(allow, "c 1:3 rwm")``); :mod:`sysmgr._util.device_bpf` assembles them into a program
with the v1 kernel's semantics, :mod:`sysmgr._util.bpf` loads it and attaches it to the
container's cgroup, by host root, after ``mkdir`` and before any process joins. The
container cannot remove it: attaching and detaching go through bpf(2), which its seccomp
filter refuses (also to a privileged container, whose CAP_SYS_ADMIN would otherwise be
enough), and there is no cgroup file to write instead. Sub-cgroups (systemd's inside, the
``.sysmgr-exec`` leaf) run it too (``BPF_F_ALLOW_MULTI``: see :mod:`sysmgr._util.bpf`);
it goes with the cgroup.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

from sysmgr.drivers.runtime.base import Limits, Usage
from sysmgr.drivers.runtime.cgroup_base import (
    CGROUP_ROOT, DEFAULT_DEVICE_RULES, POLL, Cgroup, keyed_value, memory_stat,
)
from sysmgr.drivers.runtime.cgroup_layout import ScopeHold, scope_alive, scope_dir, systemd_owns_root
from sysmgr.errors import DriverError, DriverUnavailable


def shares_to_weight(shares: int) -> int:
    """cgroup-v1 cpu.shares -> v2 cpu.weight: 1024 (the default) -> 100, clamped to 1..10000."""
    return max(1, min(10_000, round(shares * 100 / 1024)))


class V2Cgroup(Cgroup):
    """cgroup v2: one directory; controllers enabled along the path. When systemd owns the
    root, ``<prefix>/<name>`` is ``sysmgr.slice/<prefix>.scope/<name>`` instead, and only
    the delegated scope and below are touched."""

    version = 2
    CONTROLLERS = ("cpu", "cpuset", "memory", "pids")
    EXEC_LEAF = ".sysmgr-exec"  # where exec'ed processes go once init made its cgroup a parent

    def __init__(self, path: str, root: str = CGROUP_ROOT, delegated: bool | None = None) -> None:
        super().__init__(path, root)
        parts = self.path.split("/")
        if delegated is None:
            delegated = len(parts) > 1 and systemd_owns_root(root)
        self.base = scope_dir(root, parts[0]) if delegated else root
        self._hold: ScopeHold | None = None

    @property
    def dir(self) -> str:
        return os.path.join(self.base, *self._rel())

    def _rel(self) -> list[str]:
        parts = self.path.split("/")
        return parts[1:] if self.base != self.root else parts

    def _bases(self) -> list[str]:
        return [self.base]

    def dirs(self) -> list[str]:
        return [self.dir]

    def create(self, limits: Limits, devices: Sequence[tuple[bool, str]] | None = None) -> None:
        program = self.device_program(devices)  # a bad rule fails before anything exists
        with self._destroyed_on_error():
            attached = False
            if self.base != self.root and not scope_alive(self.base):
                attached = self._hold_scope(program)
            self._mkdirs(self.base, before_each=self._enable_controllers)
            if not attached:
                self._attach_devices(program)
            self.set_limits(limits)

    @staticmethod
    def device_program(devices: Sequence[tuple[bool, str]] | None) -> bytes:
        """The BPF_CGROUP_DEVICE program for v1-form ``devices`` (the defaults for None)."""
        from sysmgr._util import device_bpf  # the assembler: a v2 start only, not a read

        try:
            return device_bpf.assemble(DEFAULT_DEVICE_RULES if devices is None else devices)
        except ValueError as e:
            raise DriverError(str(e)) from e

    def _attach_devices(self, program: bytes) -> None:
        """Attach the device policy to the container's cgroup (a fake cgroupfs overrides this)."""
        from sysmgr._util import bpf

        bpf.attach_device_program(self.dir, program)

    def _hold_scope(self, program: bytes) -> bool:
        """Have systemd create the delegated scope; its holder waits in our cgroup, which
        has the device policy before the holder joins. True when the policy is attached."""
        try:
            self._hold = ScopeHold(self.root, self.path.split("/")[0])
        except DriverError:
            if scope_alive(self.base):
                return False  # another sysmgr made it at the same moment: it is there, use it
            raise
        self._mkdirs(self.base)
        self._attach_devices(program)
        self._hold.move_to(self.dir)  # the scope's own cgroup must hold no process
        return True

    def release(self) -> None:
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def destroy(self, timeout: float = 5.0) -> None:
        self.release()
        super().destroy(timeout)

    def join_files(self) -> list[str]:
        """The container's cgroup while it is a leaf; once its init enabled controllers for
        sub-cgroups (systemd does), processes may no longer join it ("no internal processes"):
        then a leaf of sysmgr's own below it, like LXC's ``.lxc``."""
        if not (self._read(os.path.join(self.dir, "cgroup.subtree_control")) or "").strip():
            return self.procs_files()
        leaf = os.path.join(self.dir, self.EXEC_LEAF)
        try:
            self._mkdir(leaf)
        except FileExistsError:
            pass
        except OSError as e:
            raise DriverError(f"cannot create cgroup {leaf}: {e.strerror or e}") from e
        return [os.path.join(leaf, "cgroup.procs")]

    def _enable_controllers(self, d: str) -> None:
        available = set((self._read(os.path.join(d, "cgroup.controllers")) or "").split())
        enabled = set((self._read(os.path.join(d, "cgroup.subtree_control")) or "").split())
        for c in self.CONTROLLERS:
            if c in available and c not in enabled:
                self._write(os.path.join(d, "cgroup.subtree_control"), "+" + c)

    def _set(self, name: str, value: str, wanted: bool) -> None:
        """Write ``name``; a missing file is only an error when the limit is actually set."""
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            if wanted:
                raise DriverUnavailable(f"cgroup controller for {name} is not enabled in {self.dir}")
            return
        self._write(path, value)

    def set_limits(self, limits: Limits) -> None:
        mem = limits.memory_bytes
        self._set("memory.max", str(mem) if mem is not None else "max", mem is not None)
        self._set("memory.swap.max", "max" if limits.memory_swap else "0", not limits.memory_swap)
        quota = str(limits.cpu_quota_us) if limits.cpu_quota_us is not None else "max"
        self._set("cpu.max", f"{quota} {limits.cpu_period_us}", limits.cpu_quota_us is not None)
        shares = limits.cpu_shares
        self._set("cpu.weight", str(shares_to_weight(shares) if shares is not None else 100), shares is not None)
        # an empty cpuset.cpus means "use the parent's effective set"
        self._set("cpuset.cpus", limits.cpuset or "", limits.cpuset is not None)
        pids = limits.pids_max
        self._set("pids.max", str(pids) if pids is not None else "max", pids is not None)

    def usage(self, *, detail: bool = False) -> Usage:
        stat = self._read(os.path.join(self.dir, "cpu.stat"))
        usec = {k: keyed_value(stat, k) for k in ("usage_usec", "user_usec", "system_usec")}
        use = Usage(
            memory_bytes=self._read_int(os.path.join(self.dir, "memory.current")),
            memory_peak_bytes=self._read_int(os.path.join(self.dir, "memory.peak")),
            pids=self._read_int(os.path.join(self.dir, "pids.current")),
            cpu_ns=usec["usage_usec"] * 1000 if usec["usage_usec"] is not None else None,
            oom_kills=keyed_value(self._read(os.path.join(self.dir, "memory.events")), "oom_kill"),
        )
        if not detail:
            return use
        modes = {m: usec[f"{m}_usec"] * 1000 for m in ("user", "system")
                 if usec[f"{m}_usec"] is not None}
        return dataclasses.replace(
            use,
            memory_limit_bytes=self._read_int(os.path.join(self.dir, "memory.max")),  # "max": None
            swap_bytes=self._read_int(os.path.join(self.dir, "memory.swap.current")),
            memory_stat=memory_stat(self._read(os.path.join(self.dir, "memory.stat")), 2),
            cpu_modes={"0": modes} if modes else {},  # v2 has no per-CPU split (LXD: cpu "0")
        )

    def _events_frozen(self) -> bool:
        for line in (self._read(os.path.join(self.dir, "cgroup.events")) or "").splitlines():
            if line.split() == ["frozen", "1"]:
                return True
        return False

    def freeze(self, timeout: float = 5.0) -> None:
        self._write(os.path.join(self.dir, "cgroup.freeze"), "1")
        deadline = time.monotonic() + timeout
        while not self._events_frozen() and time.monotonic() < deadline:
            time.sleep(POLL)

    def thaw(self) -> None:
        self._write(os.path.join(self.dir, "cgroup.freeze"), "0")

    def is_frozen(self) -> bool:
        return os.path.isdir(self.dir) and (
            self._events_frozen() or self._read(os.path.join(self.dir, "cgroup.freeze")) == "1"
        )

    def kill_all(self, timeout: float = 10.0) -> None:
        if not os.path.isdir(self.dir):
            return
        kill_file = os.path.join(self.dir, "cgroup.kill")

        def kill(pids: set[int]) -> None:
            if os.path.exists(kill_file):  # kernel >= 5.14: atomic, also kills frozen tasks
                self._write(kill_file, "1")
            else:
                self._kill_frozen()

        self._kill_until_empty(timeout, kill)
