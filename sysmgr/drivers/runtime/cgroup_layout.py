"""The host's cgroup layout, and where sysmgr's subtree lives on a unified (v2) host.

Three layouts: ``v1`` (only v1 hierarchies), ``hybrid`` (v1 controllers plus a cgroup2 mount
at ``unified`` that only tracks processes: the reference machine), ``unified`` (one cgroup2
tree at the root: most current distributions).

Delegation on a unified host whose root belongs to systemd (PID 1 is systemd, or the tree
has ``init.scope``): the kernel's "no internal processes" rule and systemd's ownership of
every ``cgroup.subtree_control`` it did not delegate mean sysmgr must not create
``/sys/fs/cgroup/sysmgr-<id>`` at the root nor enable controllers there. systemd's own
answer (its "Control Group APIs and Delegation" document; systemd-nspawn's
``machine-<name>.scope``; runc's systemd driver, a transient scope per container holding its
init; LXD/Incus, whose daemon runs in a ``Delegate=yes`` service) is a unit with
``Delegate=yes``: below it, the cgroups and their ``subtree_control`` are ours, and a manager
should touch nothing outside the subtrees of the units it created.

The design: one transient **scope per host root**, ``sysmgr.slice/sysmgr-<id>.scope`` with
``Delegate=yes``; containers are its children (``.../sysmgr-<id>.scope/<name>``). sysmgr has
no daemon and keeps no resident process: a scope lives as long as its cgroup tree holds a
process, so it only needs one to be created. The first container start of a root creates it
with ``systemd-run --scope`` around a short-lived holder (``sleep``) that is moved into the
container's cgroup at once and killed as soon as the container's init is there
(:class:`ScopeHold`); from then on the containers keep the scope alive, and when the last
one stops, systemd removes the scope and its cgroup itself. A service unit with
``Delegate=yes`` would need a resident process (a oneshot's cgroup is removed once it is
empty), and writing unit files would leave state behind sysmgr's own root. One scope per
root rather than per container (runc's way) keeps ``<prefix>/<name>`` paths, the
engine's records and the cgroup namespace layout the same on every host; a start never
joins a scope that systemd is about to remove (:func:`scope_alive` waits for it).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from sysmgr.errors import DriverError, DriverUnavailable

DELEGATE_SLICE = "sysmgr.slice"
_HOLD_SECONDS = "300"  # the holder exits by itself if its creator dies before releasing it
_POLL = 0.01


@dataclass(frozen=True)
class CgroupLayout:
    """What :func:`detect_layout` found: ``kind`` is v1, hybrid or unified; on unified,
    ``systemd`` says whether systemd owns the root (then sysmgr works in a delegated scope)."""

    kind: str
    systemd: bool = False


def detect_layout(root: str = "/sys/fs/cgroup") -> CgroupLayout:
    if os.path.exists(os.path.join(root, "cgroup.controllers")) and not os.path.isdir(
        os.path.join(root, "memory")
    ):
        return CgroupLayout("unified", systemd_owns_root(root))
    if os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        return CgroupLayout("hybrid")
    return CgroupLayout("v1")


def systemd_owns_root(root: str = "/sys/fs/cgroup") -> bool:
    """True when systemd manages the unified tree at ``root``."""
    if os.path.isdir(os.path.join(root, "init.scope")):
        return True
    if root != "/sys/fs/cgroup":
        return False  # a tree elsewhere (a test's) is not PID 1's
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def scope_dir(root: str, prefix: str) -> str:
    """The delegated scope of host-root prefix ``prefix`` (``sysmgr-<id>``)."""
    return os.path.join(root, DELEGATE_SLICE, f"{prefix}.scope")


def scope_alive(path: str, timeout: float = 5.0) -> bool:
    """True when the scope at ``path`` exists and holds a process. An emptied scope (its last
    container just stopped: a restart) is about to be removed by systemd: wait for that, so
    the caller creates a new one instead of a cgroup inside a dying unit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(os.path.join(path, "cgroup.events")) as f:
                if "populated 1" in f.read():
                    return True
        except OSError:
            return False  # gone (or going: ENODEV)
        if time.monotonic() > deadline:
            raise DriverError(f"systemd did not remove the emptied scope {path}")
        time.sleep(_POLL)


class ScopeHold:
    """Create the delegated scope of ``prefix`` around a short-lived holder process.

    :meth:`move_to` puts the holder into a cgroup inside the scope (the container's, so the
    scope's own cgroup is free to enable controllers for its children); :meth:`release`
    kills it once something else (the container's init) keeps the scope alive.
    """

    def __init__(self, root: str, prefix: str, timeout: float = 10.0) -> None:
        self.dir = scope_dir(root, prefix)
        self._want = "0::/" + os.path.relpath(self.dir, root)
        import subprocess  # a systemd host's first start only: reading a cgroup needs none

        from sysmgr._util import proc

        self.proc: subprocess.Popen[bytes] | None = proc.popen(
            ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={prefix}",
             f"--slice={DELEGATE_SLICE}", "-p", "Delegate=yes", "--", "sleep", _HOLD_SECONDS],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_inside(timeout)

    def _wait_inside(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                self.proc = None
                raise DriverError(f"cannot create the delegated scope {self.dir}: {err.strip()}")
            try:
                with open(f"/proc/{self.proc.pid}/cgroup") as f:
                    if f.read().strip() == self._want:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.release()
                raise DriverError(f"the delegated scope {self.dir} did not appear")
            time.sleep(_POLL)

    def move_to(self, cgroup_dir: str) -> None:
        if self.proc is not None:
            with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                f.write(str(self.proc.pid))

    def release(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


_HIERARCHIES: dict[str, list[str]] = {}


def v1_hierarchies(root: str) -> list[str]:
    """Names of the cgroup mounts below ``root`` (real dirs holding ``cgroup.procs``;
    the ``cpu``/``cpuacct`` symlinks to a ``cpu,cpuacct`` co-mount are skipped)."""
    cached = _HIERARCHIES.get(root)
    if cached is not None:
        return cached
    found = []
    try:
        entries = sorted(os.listdir(root))
    except OSError as e:
        raise DriverUnavailable(f"cgroups are not mounted at {root}: {e.strerror}") from e
    for entry in entries:
        p = os.path.join(root, entry)
        if not os.path.islink(p) and os.path.exists(os.path.join(p, "cgroup.procs")):
            found.append(entry)
    _HIERARCHIES[root] = found
    return found
