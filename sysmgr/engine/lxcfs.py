"""Resource views inside containers with lxcfs: ``free``, ``uptime``, ``top`` and ``nproc``
see the container's limits and its own uptime, not the host's (LXD's way).

lxcfs is one host-wide FUSE daemon, mounted on ``/var/lib/lxcfs`` (the Debian package's
``lxcfs.service`` runs it there on hosts that boot with systemd). Each container's start
binds its files over ``/proc/meminfo``, ``/proc/cpuinfo``, ``/proc/stat``... (the runtime's
disk binds; lxcfs answers each read from the cgroup of the process that reads).

When lxcfs is installed but not running (no systemd, or it died), ``sysmgr init`` and every
start run it (supervised as dnsmasq is: checked and started again when needed); a daemon that
died leaves a dead mount behind, which is detached first, and the running containers'
views are bound again from the new daemon. sysmgr never stops it: other roots, and other
software, share it. When lxcfs is not installed, containers start as before and ``info`` says
the views are the host's.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from sysmgr._util import linux, proc
from sysmgr.drivers.runtime.base import STOPPED, DiskMount
from sysmgr.errors import SysmgrError

#: where the host-wide daemon is mounted (``SYSMGR_LXCFS_DIR`` moves it: tests, odd hosts)
DEFAULT_DIR = "/var/lib/lxcfs"
#: the files bound into each container, as LXD binds them
FILES = ("/proc/cpuinfo", "/proc/diskstats", "/proc/loadavg", "/proc/meminfo", "/proc/stat",
         "/proc/swaps", "/proc/uptime", "/sys/devices/system/cpu/online")
START_TIMEOUT = 5.0
#: volatile key: the lxcfs mount (its device number) a running container's views come from
VOLATILE = "lxcfs.dev"


def mount_dir() -> str:
    return os.environ.get("SYSMGR_LXCFS_DIR") or DEFAULT_DIR


@dataclass(frozen=True)
class LxcfsState:
    installed: bool
    running: bool          # mounted and answering
    dir: str

    @property
    def summary(self) -> str:
        if not self.installed:
            return "the host's (lxcfs is not installed)"
        if not self.running:
            return f"the host's (lxcfs is installed but not running on {self.dir})"
        return f"the container's own (lxcfs on {self.dir})"


def _answers(d: str) -> bool | None:
    """True: an lxcfs mount that answers; None: a dead one (its daemon died); False: none."""
    try:  # a read, not a stat: the kernel may answer a stat from its cache
        with open(os.path.join(d, "proc", "uptime"), "rb") as f:
            f.read(1)
    except OSError as e:
        return None if e.errno == errno.ENOTCONN else False
    return True


def state() -> LxcfsState:
    d = mount_dir()
    return LxcfsState(proc.which("lxcfs") is not None, bool(_answers(d)), d)


def ensure() -> list[str]:
    """Run lxcfs if it is installed and not running; what was done (for ``init``)."""
    d = mount_dir()
    alive = _answers(d)
    if alive or proc.which("lxcfs") is None:
        return []
    done = []
    if alive is None:  # the daemon died: its mount answers nothing but ENOTCONN
        linux.umount2(d, linux.MNT_DETACH)
        done.append(f"detached the dead lxcfs mount on {d}")
    os.makedirs(d, 0o755, exist_ok=True)
    pidfile = _pidfile(d)
    _end_stale(pidfile)
    import subprocess  # only to start the daemon: a start that finds it running needs none

    # setsid --fork: lxcfs is nobody's child (a CLI that exits, a controller that stops)
    proc.run(["setsid", "--fork", "lxcfs", "--enable-loadavg", "-p", pidfile, d],
             capture=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(d):
        if time.monotonic() > deadline:
            raise SysmgrError(f"lxcfs did not come up on {d}",
                              hint="run 'lxcfs -f " + d + "' by hand to see why")
        time.sleep(0.02)
    return done + [f"started lxcfs on {d} (containers see their own memory, CPUs, uptime)"]


def _pidfile(d: str) -> str:
    return os.path.join("/run", f"lxcfs-{d.strip('/').replace('/', '-')}.pid")


def _end_stale(pidfile: str) -> None:
    """An lxcfs of this mount that no longer serves it (shutting down, or wedged) holds the
    pidfile's lock, and a new one would refuse to start: give it a moment, then end it."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != "lxcfs":
                return
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 1.0
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def attach() -> tuple[int | None, tuple[DiskMount, ...]]:
    """What a start takes from the running daemon, with one look at it (each look is a
    round trip through FUSE): its mount's device number (:data:`VOLATILE`; None: no daemon)
    and the binds of the files it serves over the container's own."""
    d = mount_dir()
    if not _answers(d):
        return None, ()
    try:
        gen = os.stat(d).st_dev
        served = {f"/proc/{n}" for n in os.listdir(os.path.join(d, "proc"))}
    except OSError:
        return None, ()
    served.update(f for f in FILES if not f.startswith("/proc/")
                  and os.path.exists(os.path.join(d, f.lstrip("/"))))
    return gen, tuple(DiskMount(source=os.path.join(d, f.lstrip("/")), path=f, readonly=True)
                      for f in FILES if f in served)


def binds() -> tuple[DiskMount, ...]:
    """The lxcfs files a start binds over the container's own (none unless it runs)."""
    return attach()[1]


def generation() -> int | None:
    """The running daemon's mount (its device number), which a start records (:data:`VOLATILE`)."""
    return attach()[0]


def repair(host: Any) -> list[str]:
    """:func:`ensure`, then bind the views again into this root's running containers whose
    views come from an older daemon (one that died: they read nothing but errors)."""
    done = ensure()
    gen = generation()
    if gen is None:
        return done
    from sysmgr.engine import records  # (records reads the store: only a repair needs it)

    views = binds()
    for rec in host.store.containers():
        old = rec.volatile.get(VOLATILE)
        if old is None or old == gen or records.status(host, rec).state == STOPPED:
            continue
        init = records.init_record(rec)
        if not host.runtime_for(init).info.live_mounts:
            continue
        try:
            for b in views:
                host.runtime_for(init).unmount_disk(init, b.path)
                host.runtime_for(init).mount_disk(init, b)
        except (SysmgrError, OSError) as e:
            done.append(f"{rec.name}: resource views not bound again: {e}")
            continue
        with host.store.transaction():
            host.store.set_volatile(rec.name, {**rec.volatile, VOLATILE: gen})
        done.append(f"{rec.name}: resource views bound again from the new lxcfs")
    return done
