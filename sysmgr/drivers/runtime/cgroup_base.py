"""The interface of a container's cgroup (:class:`Cgroup`) and what its v1 and v2
implementations share: creating and removing the directories level by level, joining,
listing and killing processes, and the file helpers that turn the kernel's refusals into
:class:`DriverError` naming the file and the value. The implementations are
:class:`~sysmgr.drivers.runtime.cgroups.V1Cgroup` and
:class:`~sysmgr.drivers.runtime.cgroup_v2.V2Cgroup`; :func:`~sysmgr.drivers.runtime.cgroups.open_cgroup`
picks the host's.
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
from sysmgr.errors import DriverError

CGROUP_ROOT = "/sys/fs/cgroup"

#: Devices rules used when the caller gives none: deny all, then the standard nodes + ptys.
DEFAULT_DEVICE_RULES: tuple[tuple[bool, str], ...] = (
    (False, "a"),
    (True, "c 1:3 rwm"), (True, "c 1:5 rwm"), (True, "c 1:7 rwm"), (True, "c 1:8 rwm"),
    (True, "c 1:9 rwm"), (True, "c 5:0 rwm"), (True, "c 5:1 rwm"), (True, "c 5:2 rwm"),
    (True, "c 136:* rwm"),
)

POLL = 0.005  # seconds between looks at a cgroup that is changing state


# -- file helpers ------------------------------------------------------------------------------

def write_file(path: str, value: str) -> None:
    """Write one cgroup file; a refusal becomes DriverError naming the file and the value."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise DriverError(f"cannot write {value!r} to {path}: {e.strerror or e}") from e


def read_file(path: str) -> str | None:
    """A cgroup file's stripped text; None when it (or its cgroup) is gone."""
    try:
        with open(path) as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:  # the cgroup was removed while we read (systemd's scope)
            return None
        raise DriverError(f"cannot read {path}: {e.strerror or e}") from e


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """The cgroup path of ``pid`` per hierarchy, keyed ``""`` (cgroup2), ``name=systemd``,
    or its controllers sorted and comma-joined (``cpu,cpuacct``)."""
    out = {}
    for line in (read_file(f"/proc/{pid}/cgroup") or "").splitlines():
        _, ctrls, path = line.split(":", 2)
        out[hierarchy_key(ctrls)] = path
    return out


def hierarchy_key(controllers: str) -> str:
    """The :func:`own_cgroups` key of a hierarchy named by its controllers (or mount dir)."""
    if controllers in ("", "unified"):
        return ""
    if controllers in ("systemd", "name=systemd"):
        return "name=systemd"
    return ",".join(sorted(controllers.split(",")))


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each pid; one that already exited is fine."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def keyed_value(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.events``: ``oom_kill 2``)."""
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key and v.strip().isdigit():
            return int(v)
    return None


# LXD's memory metric names -> the memory.stat keys they come from (v1, v2); v1's
# ``total_`` variants count the sub-cgroups too (systemd's inside the container)
MEMORY_STAT_NAMES: dict[str, tuple[str, str]] = {
    "RSS": ("rss", "anon"),
    "Cached": ("cache", "file"),
    "Shmem": ("shmem", "shmem"),
    "Mapped": ("mapped_file", "file_mapped"),
    "Dirty": ("dirty", "file_dirty"),
    "Writeback": ("writeback", "file_writeback"),
    "Active_anon": ("active_anon", "active_anon"),
    "Inactive_anon": ("inactive_anon", "inactive_anon"),
    "Active_file": ("active_file", "active_file"),
    "Inactive_file": ("inactive_file", "inactive_file"),
    "Unevictable": ("unevictable", "unevictable"),
}


def memory_stat(text: str | None, version: int) -> dict[str, int]:
    """``memory.stat`` under LXD's names (plus the sums ``Active`` and ``Inactive``)."""
    raw: dict[str, int] = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().isdigit():
            raw[k] = int(v)
    out: dict[str, int] = {}
    for name, keys in MEMORY_STAT_NAMES.items():
        key = keys[0 if version == 1 else 1]
        value = raw.get(f"total_{key}", raw.get(key)) if version == 1 else raw.get(key)
        if value is not None:
            out[name] = value
    for name in ("Active", "Inactive"):
        parts = [out[f"{name}_{kind}"] for kind in ("anon", "file") if f"{name}_{kind}" in out]
        if parts:
            out[name] = sum(parts)
    return out


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
    def usage(self, *, detail: bool = False) -> Usage:
        """See :meth:`sysmgr.drivers.runtime.base.Runtime.usage`."""

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

    def hierarchies_by_key(self) -> list[tuple[str, str]]:
        """(:func:`hierarchy_key`, mount dir) of every hierarchy the container lives in."""
        return [("", self.root)]

    def evict(self, pid: int) -> None:
        """Move ``pid`` (sysmgr's exec helper, which joined to fork the command inside) back
        to the caller's own cgroups: only the command belongs to the container. A process
        outside its pid namespace shows in its ``cgroup.procs`` as pid 0, which systemd's
        tools take for an error ("Failed to dump process list")."""
        own = own_cgroups()
        for key, base in self.hierarchies_by_key():
            path = own.get(key)
            if path is None:
                continue
            try:
                write_file(os.path.join(base, path.lstrip("/"), "cgroup.procs"), str(pid))
            except DriverError:
                pass  # best effort: the helper may be gone already; the command is unharmed

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
                if sub != d and self._read(os.path.join(sub, "cgroup.type")) == "threaded":
                    continue  # (v2) its processes are listed by its threaded domain above
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
            time.sleep(POLL)

    def _kill_frozen(self) -> None:
        """SIGKILL every task while the cgroup is frozen, then thaw it."""
        self.freeze(timeout=0.5)
        kill_pids(self.procs())
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
        write_file(path, value)

    def _read(self, path: str) -> str | None:
        return read_file(path)

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
                time.sleep(POLL)

