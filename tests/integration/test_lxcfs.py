"""Resource views inside containers (lxcfs), on the real kernel: /proc shows the container's
memory limit, CPUs and uptime; the daemon is started when it is not running and, when it
died, started again with the running containers' views bound anew; ``info`` says whose
views a container has.

Each test module runs its own lxcfs (``SYSMGR_LXCFS_DIR`` outside the test's root), stopped
at the end: the host-wide one on /var/lib/lxcfs is never touched.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from sysmgr._util import linux, proc
from tests.conftest import cli_ok, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.skipif(proc.which("lxcfs") is None,
                                                reason="lxcfs is not installed")]


@pytest.fixture(scope="module")
def lxcfs_dir():
    d = f"/run/sysmgr-test-lxcfs-{os.getpid()}"
    old = os.environ.get("SYSMGR_LXCFS_DIR")
    os.environ["SYSMGR_LXCFS_DIR"] = d   # run_cli passes it on
    yield d
    os.environ.pop("SYSMGR_LXCFS_DIR") if old is None else os.environ.update(SYSMGR_LXCFS_DIR=old)
    stop(d)
    os.rmdir(d)


def mounted(d: str) -> bool:
    """Whether something is mounted on ``d`` (a dead FUSE mount too, which ismount misses)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == d for line in f)


def pidfile(d: str) -> str:
    return os.path.join("/run", f"lxcfs-{d.strip('/').replace('/', '-')}.pid")


def stop(d: str) -> None:
    try:
        pid = int(open(pidfile(d)).read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pid = 0
    deadline = time.monotonic() + 5
    while (mounted(d) or (pid and os.path.exists(f"/proc/{pid}"))) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    if mounted(d):  # a daemon killed before: its dead mount stays
        linux.umount2(d, linux.MNT_DETACH)


@pytest.fixture
def root(busybox_cli_root: str, lxcfs_dir: str):
    return busybox_cli_root


ok = cli_ok


def inside(root: str, name: str, *argv: str) -> str:
    return ok("exec", name, "--", *argv, root=root).stdout


def test_proc_shows_the_containers_own_memory_cpus_and_uptime(root, lxcfs_dir) -> None:
    ok("launch", "busybox", "v1", "-c", "limits.memory=128MiB", "-c", "limits.cpu=1", root=root)
    assert mounted(lxcfs_dir)                              # started by init (or the start)
    assert inside(root, "v1", "head", "-1", "/proc/meminfo").split()[1] == "131072"
    assert inside(root, "v1", "nproc").strip() == "1"
    assert inside(root, "v1", "cat", "/sys/devices/system/cpu/online").strip() in ("0", "1")
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    up = float(inside(root, "v1", "cat", "/proc/uptime").split()[0])
    assert up < 60 < host_up                                # its own, not the host's
    assert "Resource views: its own (lxcfs)" in ok("info", "v1", root=root).stdout


def test_a_dead_daemon_is_started_again_and_the_views_bound_anew(root, lxcfs_dir) -> None:
    ok("launch", "busybox", "v2", "-c", "limits.memory=64MiB", root=root)
    os.kill(int(open(pidfile(lxcfs_dir)).read()), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while run_cli("exec", "v2", "--", "head", "-1", "/proc/meminfo", root=root).returncode == 0:
        assert time.monotonic() < deadline, "the views outlived their daemon"
        time.sleep(0.05)
    out = ok("init", "--auto", "--storage-driver", "dir", "--network", "none", root=root).stdout
    assert "detached the dead lxcfs mount" in out and "v2: resource views bound again" in out
    assert inside(root, "v2", "head", "-1", "/proc/meminfo").split()[1] == "65536"


def test_without_lxcfs_running_a_container_starts_with_the_hosts_views(root, lxcfs_dir) -> None:
    stop(lxcfs_dir)
    os.makedirs(lxcfs_dir, exist_ok=True)
    assert not mounted(lxcfs_dir)
    ok("launch", "busybox", "v3", root=root)               # the start runs it again
    assert mounted(lxcfs_dir)
    assert "its own (lxcfs)" in ok("info", "v3", root=root).stdout
