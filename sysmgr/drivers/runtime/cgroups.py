"""Per-container cgroups: v1 (hybrid hosts, like the CI machine) and v2, one interface.

A container's cgroup is ``<prefix>/<name>`` below the root of every hierarchy (v1) or of the
single tree (v2), e.g. ``sysmgr-1a2b3c/web1``; :func:`open_cgroup` detects the layout. Limits
are written before init runs and change live; an unset limit is written as "max"/-1. Writes
the kernel refuses become :class:`DriverError` naming the file and the value.

The reference machine is hybrid (every controller but hugetlb bound to v1); the v2 code is
unit-tested against a fake cgroupfs (the ``_mkdir``/``_rmdir``/``_attach_devices`` hooks)
and runs for real in the guests of ``scripts/test-cgroup2``. On a unified host whose root systemd owns, containers
live in a delegated scope (:mod:`.cgroup_layout` says how and why).

This module is the entry point (:func:`open_cgroup`) and the v1 implementation; the
interface and the shared code are :mod:`.cgroup_base`, v2 (with its BPF device policy) is
:mod:`.cgroup_v2`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

from sysmgr.drivers.runtime.base import Limits, Usage
from sysmgr.drivers.runtime.cgroup_base import (
    CGROUP_ROOT, DEFAULT_DEVICE_RULES, POLL, Cgroup, hierarchy_key, keyed_value, kill_pids,
    memory_stat,
)
from sysmgr.drivers.runtime.cgroup_layout import detect_layout, v1_hierarchies
from sysmgr.drivers.runtime.cgroup_v2 import V2Cgroup, shares_to_weight
from sysmgr.errors import DriverError, DriverUnavailable

__all__ = [
    "CGROUP_ROOT", "DEFAULT_DEVICE_RULES", "Cgroup", "V1Cgroup", "V2Cgroup", "detect_version",
    "open_cgroup", "shares_to_weight",
]


UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes at or above this means "no limit"


def detect_version(root: str = CGROUP_ROOT) -> int:
    """2 on a pure cgroup-v2 host, 1 on a v1 or hybrid host."""
    return 2 if detect_layout(root).kind == "unified" else 1


def open_cgroup(path: str, root: str = CGROUP_ROOT) -> "Cgroup":
    """The cgroup ``path`` (e.g. ``sysmgr-1a2b3c/web1``) with the host's implementation."""
    return V2Cgroup(path, root) if detect_version(root) == 2 else V1Cgroup(path, root)


class V1Cgroup(Cgroup):
    """cgroup v1: one directory per hierarchy (plus ``name=systemd`` and the hybrid
    ``unified`` cgroup2 mount, which systemd inside the container uses)."""

    version = 1

    def __init__(self, path: str, root: str = CGROUP_ROOT) -> None:
        super().__init__(path, root)
        self.hierarchies = v1_hierarchies(root)

    def _bases(self) -> list[str]:
        return [os.path.join(self.root, h) for h in self.hierarchies]

    def dirs(self) -> list[str]:
        return [os.path.join(b, self.path) for b in self._bases()]

    def hierarchies_by_key(self) -> list[tuple[str, str]]:
        return [(hierarchy_key(h), os.path.join(self.root, h)) for h in self.hierarchies]

    def _dir(self, controller: str) -> str | None:
        """The container's dir in the hierarchy of ``controller`` (co-mounts like cpu,cpuacct ok)."""
        for h in self.hierarchies:
            if controller in h.split(","):
                return os.path.join(self.root, h, self.path)
        return None

    def create(self, limits: Limits, devices: Sequence[tuple[bool, str]] | None = None) -> None:
        with self._destroyed_on_error():
            for h in self.hierarchies:
                levels = self._mkdirs(os.path.join(self.root, h))
                if "cpuset" in h.split(","):
                    # a new v1 cpuset starts empty and refuses tasks: inherit cpus/mems level by level
                    parent = os.path.join(self.root, h)
                    for lvl in levels:
                        for f in ("cpuset.cpus", "cpuset.mems"):
                            if not self._read(os.path.join(lvl, f)):
                                self._write(os.path.join(lvl, f), self._read(os.path.join(parent, f)) or "")
                        parent = lvl
            dev = self._dir("devices")
            if dev:
                for allow, rule in DEFAULT_DEVICE_RULES if devices is None else devices:
                    rule = "a" if rule.startswith("a") else rule
                    self._write(os.path.join(dev, "devices.allow" if allow else "devices.deny"), rule)
                self._mkdir(os.path.join(dev, self.DEVICES_LEAF))  # inherits the rules
            self.set_limits(limits)

    #: Processes sit one level below the device rules, the root of the container's cgroup
    #: namespace: a privileged container can only narrow them (LXC's lxc.payload split).
    DEVICES_LEAF = ".payload"

    def procs_files(self) -> list[str]:
        dev = self._dir("devices")
        leaf = os.path.join(dev or "", self.DEVICES_LEAF)
        return [os.path.join(leaf if d == dev and os.path.isdir(leaf) else d, "cgroup.procs") for d in self.dirs()]

    def set_limits(self, limits: Limits) -> None:
        mem = self._dir("memory")
        if mem:
            self._set_memory(mem, limits)
        elif limits.memory_bytes is not None:
            raise DriverUnavailable("the memory cgroup controller is not mounted")
        cpu = self._dir("cpu")
        if cpu:
            self._write(os.path.join(cpu, "cpu.cfs_period_us"), str(limits.cpu_period_us))
            quota = limits.cpu_quota_us if limits.cpu_quota_us is not None else -1
            self._write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
            self._write(os.path.join(cpu, "cpu.shares"), str(limits.cpu_shares or 1024))
        elif limits.cpu_quota_us is not None or limits.cpu_shares is not None:
            raise DriverUnavailable("the cpu cgroup controller is not mounted")
        cs = self._dir("cpuset")
        if cs:
            cpus = limits.cpuset
            if cpus is None:  # unset: everything the parent (the prefix dir) has
                cpus = self._read(os.path.join(os.path.dirname(cs), "cpuset.cpus")) or ""
            self._write(os.path.join(cs, "cpuset.cpus"), cpus)
        elif limits.cpuset is not None:
            raise DriverUnavailable("the cpuset cgroup controller is not mounted")
        pids = self._dir("pids")
        if pids:
            self._write(os.path.join(pids, "pids.max"), str(limits.pids_max) if limits.pids_max is not None else "max")
        elif limits.pids_max is not None:
            raise DriverUnavailable("the pids cgroup controller is not mounted")

    def _set_memory(self, mem: str, limits: Limits) -> None:
        limit = str(limits.memory_bytes) if limits.memory_bytes is not None else "-1"
        memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)  # absent when the kernel runs without swap accounting
        if not has_memsw:
            self._write(os.path.join(mem, "memory.limit_in_bytes"), limit)
            return
        # memsw must stay >= limit at every step: open it up, set the limit, then close it
        old_memsw = self._read(memsw)
        self._write(memsw, "-1")
        try:
            self._write(os.path.join(mem, "memory.limit_in_bytes"), limit)
        except DriverError:
            if old_memsw:
                try:
                    self._write(memsw, old_memsw)
                except DriverError:
                    pass
            raise
        if limits.memory_bytes is not None and not limits.memory_swap:
            self._write(memsw, limit)

    def usage(self, *, detail: bool = False) -> Usage:
        mem = self._dir("memory")
        pids = self._dir("pids")
        acct = self._dir("cpuacct")
        use = Usage(
            memory_bytes=self._read_int(os.path.join(mem, "memory.usage_in_bytes")) if mem else None,
            memory_peak_bytes=self._read_int(os.path.join(mem, "memory.max_usage_in_bytes")) if mem else None,
            pids=self._read_int(os.path.join(pids, "pids.current")) if pids else None,
            cpu_ns=self._read_int(os.path.join(acct, "cpuacct.usage")) if acct else None,
            oom_kills=self._oom_kills(mem) if mem else None,
        )
        return self._detail(use, mem, acct) if detail else use

    def _oom_kills(self, mem: str) -> int | None:
        """OOM kills in the container's memory cgroup and below: v1 counts a kill only in its
        victim's own cgroup (a runtime's sub-cgroup under sysmgr's: runc's ``.payload``)."""
        counts = [keyed_value(self._read(os.path.join(d, "memory.oom_control")), "oom_kill")
                  for d, _, _ in os.walk(mem)]
        found = [n for n in counts if n is not None]
        return sum(found) if found else None

    def _detail(self, use: Usage, mem: str | None, acct: str | None) -> Usage:
        """``use`` with the memory limit, swap, memory.stat and CPU by CPU and mode."""
        used = use.memory_bytes
        memsw = self._read_int(os.path.join(mem, "memory.memsw.usage_in_bytes")) if mem else None
        limit = self._read_int(os.path.join(mem, "memory.limit_in_bytes")) if mem else None
        return dataclasses.replace(
            use,
            # v1 writes "no limit" as the largest page-aligned long
            memory_limit_bytes=limit if limit is not None and limit < UNLIMITED_V1 else None,
            swap_bytes=max(0, memsw - used) if memsw is not None and used is not None else None,
            memory_stat=memory_stat(self._read(os.path.join(mem, "memory.stat")), 1) if mem else {},
            cpu_modes=self._cpu_modes(acct) if acct else {},
        )

    def _cpu_modes(self, acct: str) -> dict[str, dict[str, int]]:
        """``cpuacct.usage_all``: a header line, then ``CPU USER_NS SYSTEM_NS`` per CPU."""
        out: dict[str, dict[str, int]] = {}
        for line in (self._read(os.path.join(acct, "cpuacct.usage_all")) or "").splitlines()[1:]:
            cpu, user, system = (line.split() + ["", "", ""])[:3]
            if user.isdigit() and system.isdigit():
                out[cpu] = {"user": int(user), "system": int(system)}
        return out

    def _freezer(self) -> str:
        d = self._dir("freezer")
        if not d:
            raise DriverUnavailable("the freezer cgroup controller is not mounted")
        return os.path.join(d, "freezer.state")

    def freeze(self, timeout: float = 5.0) -> None:
        state = self._freezer()
        self._write(state, "FROZEN")
        deadline = time.monotonic() + timeout
        # FREEZING lasts while a task sits in an uninterruptible sleep; give it a moment
        while self._read(state) == "FREEZING" and time.monotonic() < deadline:
            time.sleep(POLL)

    def thaw(self) -> None:
        self._write(self._freezer(), "THAWED")

    def is_frozen(self) -> bool:
        d = self._dir("freezer")
        if d is None:
            return False
        return self._read(os.path.join(d, "freezer.state")) in ("FROZEN", "FREEZING")

    def kill_all(self, timeout: float = 10.0) -> None:
        has_freezer = bool(self._dir("freezer")) and self.exists()

        def kill(pids: set[int]) -> None:
            if has_freezer:
                # Frozen, nothing can fork or exit, so the pids read are stable (no reuse)
                # and a fork bomb cannot outrun us; killed tasks die once thawed (gotcha).
                self._kill_frozen()
            else:
                kill_pids(pids)

        self._kill_until_empty(timeout, kill)

