"""Per-container cgroups: v1 (hybrid hosts, like the CI machine) and v2, one interface.

A container's cgroup is ``<prefix>/<name>`` below the root of every hierarchy (v1) or of the
single tree (v2), e.g. ``sysmgr-1a2b3c/web1``; :func:`open_cgroup` detects the layout. Limits
are written before init runs and change live; an unset limit is written as "max"/-1. Writes
the kernel refuses become :class:`DriverError` naming the file and the value.

The reference machine is hybrid (every controller but hugetlb bound to v1); the v2 code is
unit-tested against a fake cgroupfs (the ``_mkdir``/``_rmdir`` hooks) and runs for real in
the guests of ``scripts/test-cgroup2``. On a unified host whose root systemd owns, containers
live in a delegated scope (:mod:`.cgroup_layout` says how and why).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import signal
import time
from typing import Callable, Iterable, Iterator, Sequence

from sysmgr.drivers.runtime.base import Limits, Usage
from sysmgr.drivers.runtime.cgroup_layout import (
    ScopeHold, detect_layout, scope_alive, scope_dir, systemd_owns_root, v1_hierarchies,
)
from sysmgr.errors import DriverError, DriverUnavailable

CGROUP_ROOT = "/sys/fs/cgroup"

#: Devices rules used when the caller gives none: deny all, then the standard nodes + ptys.
DEFAULT_DEVICE_RULES: tuple[tuple[bool, str], ...] = (
    (False, "a"),
    (True, "c 1:3 rwm"), (True, "c 1:5 rwm"), (True, "c 1:7 rwm"), (True, "c 1:8 rwm"),
    (True, "c 1:9 rwm"), (True, "c 5:0 rwm"), (True, "c 5:1 rwm"), (True, "c 5:2 rwm"),
    (True, "c 136:* rwm"),
)

_POLL = 0.005


def detect_version(root: str = CGROUP_ROOT) -> int:
    """2 on a pure cgroup-v2 host, 1 on a v1 or hybrid host."""
    return 2 if detect_layout(root).kind == "unified" else 1


def open_cgroup(path: str, root: str = CGROUP_ROOT) -> "Cgroup":
    """The cgroup ``path`` (e.g. ``sysmgr-1a2b3c/web1``) with the host's implementation."""
    return V2Cgroup(path, root) if detect_version(root) == 2 else V1Cgroup(path, root)


# -- file helpers ------------------------------------------------------------------------------

def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise DriverError(f"cannot write {value!r} to {path}: {e.strerror or e}") from e


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:  # the cgroup was removed while we read (systemd's scope)
            return None
        raise DriverError(f"cannot read {path}: {e.strerror or e}") from e


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _keyed(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.events``: ``oom_kill 2``)."""
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key and v.strip().isdigit():
            return int(v)
    return None


def shares_to_weight(shares: int) -> int:
    """cgroup-v1 cpu.shares -> v2 cpu.weight: 1024 (the default) -> 100, clamped to 1..10000."""
    return max(1, min(10_000, round(shares * 100 / 1024)))


class Cgroup(abc.ABC):
    """One container's cgroup, in every hierarchy the host has."""

    version: int

    def __init__(self, path: str, root: str = CGROUP_ROOT) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise DriverError(f"invalid cgroup path {path!r}")
        self.path = "/".join(parts)
        self.root = root

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- the interface ---------------------------------------------------------------------

    @abc.abstractmethod
    def dirs(self) -> list[str]:
        """The container's directory in every hierarchy (may not exist)."""

    @abc.abstractmethod
    def create(self, limits: Limits, devices: Sequence[tuple[bool, str]] | None = None) -> None:
        """Create the directories and write ``limits`` and the device rules."""

    @abc.abstractmethod
    def set_limits(self, limits: Limits) -> None: ...

    @abc.abstractmethod
    def usage(self) -> Usage: ...

    @abc.abstractmethod
    def freeze(self, timeout: float = 5.0) -> None: ...

    @abc.abstractmethod
    def thaw(self) -> None: ...

    @abc.abstractmethod
    def is_frozen(self) -> bool: ...

    @abc.abstractmethod
    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the cgroup (and its sub-cgroups); wait until none is left."""

    # -- shared ------------------------------------------------------------------------------

    def procs_files(self) -> list[str]:
        """``cgroup.procs`` of every hierarchy: write a pid to each to join the container."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs()]

    def join_files(self) -> list[str]:
        """What an exec'ed process joins: :meth:`procs_files`, or a leaf below (v2)."""
        return self.procs_files()

    def release(self) -> None:
        """Called once init runs: drop what :meth:`create` held on to (v2's scope holder)."""

    def _rel(self) -> list[str]:
        """The levels created below each base (v2 in a delegated scope: just the name)."""
        return self.path.split("/")

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.dirs())

    def attach(self, pid: int) -> None:
        for f in self.procs_files():
            self._write(f, str(pid))

    def procs(self) -> set[int]:
        """Pids in the cgroup and every sub-cgroup (systemd makes some), all hierarchies."""
        found: set[int] = set()
        for d in self.dirs():
            for sub, _, _ in os.walk(d):
                text = self._read(os.path.join(sub, "cgroup.procs"))
                if text:
                    found.update(int(x) for x in text.split())
        return found

    def destroy(self, timeout: float = 5.0) -> None:
        """rmdir the container's dirs bottom-up, then its now-empty ``<prefix>`` parents.

        Idempotent. Processes must be gone (see :meth:`kill_all`); a dir still busy after
        ``timeout`` (tasks being torn down) raises DriverError.
        """
        for top in self.dirs():
            if not os.path.isdir(top):
                continue
            for sub, _, _ in os.walk(top, topdown=False):
                self._rmdir_retry(sub, timeout)
        # Remove the shared <prefix> if this was its last container; another container
        # still there (ENOTEMPTY/EBUSY) or a concurrent removal (ENOENT) is fine.
        parents = self._rel()[:-1]
        for base in self._bases():
            for i in range(len(parents), 0, -1):
                try:
                    self._rmdir(os.path.join(base, *parents[:i]))
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOENT, errno.EEXIST):
                        break
                    raise DriverError(f"cannot remove cgroup {os.path.join(base, *parents[:i])}: {e.strerror}") from e

    # -- helpers -----------------------------------------------------------------------------

    def _kill_until_empty(self, timeout: float, kill: Callable[[set[int]], None]) -> None:
        """Call ``kill(pids)`` every poll until no process is left; DriverError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs()
            if not pids:
                return
            if time.monotonic() > deadline:
                raise DriverError(f"processes {sorted(pids)} of cgroup {self.path} did not die")
            kill(pids)
            time.sleep(_POLL)

    def _kill_frozen(self) -> None:
        """SIGKILL every task while the cgroup is frozen, then thaw it."""
        self.freeze(timeout=0.5)
        _kill(self.procs())
        self.thaw()

    @contextlib.contextmanager
    def _destroyed_on_error(self) -> Iterator[None]:
        """Undo a half-done :meth:`create`: destroy what exists, re-raise the first error."""
        try:
            yield
        except BaseException:
            try:
                self.destroy()
            except DriverError:
                pass
            raise

    @abc.abstractmethod
    def _bases(self) -> list[str]:
        """Hierarchy roots the container's dirs live under."""

    def _write(self, path: str, value: str) -> None:
        """Write one cgroup file (a fake cgroupfs overrides the file hooks)."""
        _write(path, value)

    def _read(self, path: str) -> str | None:
        return _read(path)

    def _read_int(self, path: str) -> int | None:
        val = self._read(path)
        try:
            return int(val) if val not in (None, "", "max") else None
        except ValueError:
            return None

    def _mkdir(self, path: str) -> None:
        """mkdir a cgroup directory (a fake cgroupfs overrides this to add the files)."""
        os.mkdir(path)

    def _rmdir(self, path: str) -> None:
        os.rmdir(path)

    def _mkdirs(self, base: str, before_each: Callable[[str], None] | None = None) -> list[str]:
        """Create every level of ``self.path`` under ``base``; return the levels, top first.

        ``before_each(parent)`` runs before each mkdir (v2 enables controllers there).
        """
        for attempt in range(3):
            levels = []
            cur = base
            try:
                for part in self._rel():
                    if before_each is not None:
                        before_each(cur)
                    cur = os.path.join(cur, part)
                    levels.append(cur)
                    try:
                        self._mkdir(cur)
                    except FileExistsError:
                        pass
                return levels
            except FileNotFoundError:
                # the last other container of <prefix> removed it under us: start over
                if attempt == 2:
                    raise DriverError(f"cannot create cgroup {cur}: its parent keeps disappearing") from None
            except OSError as e:
                raise DriverError(f"cannot create cgroup {cur}: {e.strerror or e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _rmdir_retry(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                # EBUSY right after the last task exited: the kernel is still tearing down
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise DriverError(f"cannot remove cgroup {path}: {e.strerror or e}") from e
                time.sleep(_POLL)


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

    def usage(self) -> Usage:
        mem = self._dir("memory")
        pids = self._dir("pids")
        acct = self._dir("cpuacct")
        return Usage(
            memory_bytes=self._read_int(os.path.join(mem, "memory.usage_in_bytes")) if mem else None,
            memory_peak_bytes=self._read_int(os.path.join(mem, "memory.max_usage_in_bytes")) if mem else None,
            pids=self._read_int(os.path.join(pids, "pids.current")) if pids else None,
            cpu_ns=self._read_int(os.path.join(acct, "cpuacct.usage")) if acct else None,
            oom_kills=_keyed(self._read(os.path.join(mem, "memory.oom_control")), "oom_kill") if mem else None,
        )

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
            time.sleep(_POLL)

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
                _kill(pids)

        self._kill_until_empty(timeout, kill)


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
        # Device rules need an eBPF BPF_CGROUP_DEVICE program on v2: not implemented yet.
        with self._destroyed_on_error():
            if self.base != self.root and not scope_alive(self.base):
                self._hold_scope()
            self._mkdirs(self.base, before_each=self._enable_controllers)
            self.set_limits(limits)

    def _hold_scope(self) -> None:
        """Have systemd create the delegated scope; its holder waits in our cgroup."""
        try:
            self._hold = ScopeHold(self.root, self.path.split("/")[0])
        except DriverError:
            if scope_alive(self.base):
                return  # another sysmgr made it at the same moment: it is there, use it
            raise
        self._mkdirs(self.base)
        self._hold.move_to(self.dir)  # the scope's own cgroup must hold no process

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

    def usage(self) -> Usage:
        cpu_ns = None
        stat = self._read(os.path.join(self.dir, "cpu.stat"))
        for line in (stat or "").splitlines():
            key, _, val = line.partition(" ")
            if key == "usage_usec":
                cpu_ns = int(val) * 1000
        return Usage(
            memory_bytes=self._read_int(os.path.join(self.dir, "memory.current")),
            memory_peak_bytes=self._read_int(os.path.join(self.dir, "memory.peak")),
            pids=self._read_int(os.path.join(self.dir, "pids.current")),
            cpu_ns=cpu_ns,
            oom_kills=_keyed(self._read(os.path.join(self.dir, "memory.events")), "oom_kill"),
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
            time.sleep(_POLL)

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
