"""Everyday polish on the real kernel, through the CLI: a btrfs loop pool that is not mounted
(after a reboot, or in a fresh mount namespace) is mounted by the first command that needs
it; ``image build`` without ``--alias`` takes the builder's name; ``uninit`` tears a whole
root down (containers with snapshots, a custom volume, a profile's nic, the network, images,
the loop pool) and leaves nothing of it: no mount, loop device, bridge, cgroup or directory
(the leak fixture checks the kernel side too)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import bind_netns, remove_networks, requires_root, run_cli

pytestmark = requires_root


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == path or p.startswith(path.rstrip("/") + "/")]


def loops_of(root: str) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if root in line]


def unmount_pools(root: str) -> None:
    """What a reboot does to a loop pool (the loop device goes with the mount: autoclear)."""
    for m in sorted(mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", m], check=True)
    assert mounts_under(root) == [] and loops_of(root) == []


@pytest.fixture
def root(sysmgr_root: str, netns):
    """A root with the default btrfs loop pool and network, in the test's namespace;
    whatever a failed test left is deleted afterwards."""
    bind_netns(sysmgr_root, netns)
    res = run_cli("init", "--auto", "--storage-driver", "btrfs", root=sysmgr_root)
    if res.returncode != 0:
        pytest.skip(f"no btrfs loop pool here: {res.stderr.strip()}")
    yield sysmgr_root
    if os.path.exists(os.path.join(sysmgr_root, "sysmgr.db")):  # the test failed midway
        run_cli("uninit", "--yes", root=sysmgr_root)
        remove_networks(sysmgr_root)


def test_unmounted_pool_is_mounted_on_demand_and_uninit_removes_everything(root, netns):
    unmount_pools(root)
    built = run_cli("image", "build", "busybox", root=root, check=True)
    assert "Alias: busybox" in built.stderr                 # the builder's name
    assert mounts_under(root) != [] and len(loops_of(root)) == 1
    unmount_pools(root)
    run_cli("launch", "busybox", "c1", root=root, check=True)   # by the alias build gave it
    run_cli("snapshot", "create", "c1", "s1", root=root, check=True)
    run_cli("storage", "volume", "create", "default", "v1", root=root, check=True)
    run_cli("storage", "volume", "attach", "default", "v1", "c1", "/data", root=root, check=True)
    run_cli("profile", "create", "extra", root=root, check=True)
    run_cli("profile", "device", "add", "extra", "eth1", "nic", "network=sysmgrbr0",
            root=root, check=True)
    run_cli("create", "busybox", "c2", root=root, check=True)
    listing = json.loads(run_cli("list", "-f", "json", root=root, check=True).stdout)
    assert {c["name"] for c in listing} == {"c1", "c2"}
    bridges = [ln for ln in netns.links() if ln.startswith("smb")]
    assert bridges

    # not on a terminal: refused without --yes, nothing deleted
    refused = run_cli("uninit", root=root)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(json.loads(run_cli("list", "-f", "json", root=root, check=True).stdout)) == 2

    res = run_cli("uninit", "--yes", root=root, check=True)
    said = res.stdout + res.stderr
    for line in ("Container c1 deleted", "Container c2 deleted", "Storage volume default/v1 deleted",
                 "Network sysmgrbr0 deleted", "Storage pool default deleted", f"Root {root} removed"):
        assert line in said, said
    assert said.index("Container c1") < said.index("Storage volume") < said.index("Network") \
        < said.index("Storage pool")
    assert not os.path.exists(root)
    assert mounts_under(root) == [] and loops_of(root) == []
    assert [ln for ln in netns.links() if ln.startswith(("smb", "smv"))] == []
    assert netns.strays() == []                              # dnsmasq stopped with its network
    again = run_cli("uninit", "--yes", root=root, check=True)   # nothing left: nothing to do
    assert "not initialised" in again.stdout + again.stderr
    assert not os.path.exists(root)


HOLD_LOCK = """\
import sys, sysmgr
client = sysmgr.Client(root=sys.argv[1])
with client.host.locked():  # the root's change lock, as a launch holds it
    print("held", flush=True)
    sys.stdin.read()
"""


def test_uninit_waits_for_the_roots_lock_and_says_who_holds_it(sysmgr_root):
    """A command at work on the root (holding its change lock) is never torn down under:
    uninit names the holder, waits, and goes on once the lock is free."""
    import sys

    from tests.conftest import REPO

    root = sysmgr_root
    run_cli("init", "--auto", "--storage-driver", "dir", "--network", "none", root=root, check=True)
    run_cli("image", "build", "busybox", root=root, check=True)
    run_cli("create", "busybox", "c1", root=root, check=True)
    env = dict(os.environ, PYTHONPATH=REPO, NO_COLOR="1", SYSMGR_ROOT=root)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, root], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    uninit = None
    try:
        assert holder.stdout.readline() == "held\n"
        uninit = subprocess.Popen([sys.executable, "-m", "sysmgr", "uninit", "--yes"], env=env,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = uninit.stdout.readline()
        assert f"Waiting for the lock of root {root}, held by pid {holder.pid} (" in first, first
        assert "-c" in first                              # the holder's command line
        assert uninit.poll() is None                      # it waits...
        assert os.path.exists(os.path.join(root, "sysmgr.db"))   # ...having deleted nothing
        names = run_cli("list", "-c", "n", "-f", "csv", root=root, check=True).stdout.split()
        assert names == ["c1"]
        holder.stdin.close()                              # the command finishes
        assert holder.wait(timeout=60) == 0
        out, err = uninit.communicate(timeout=120)
        assert uninit.returncode == 0, err
        assert "Container c1 deleted" in out and f"Root {root} removed" in out, out
        assert not os.path.exists(root)
    finally:
        for p in (holder, uninit):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if os.path.exists(os.path.join(root, "sysmgr.db")):  # the test failed midway
            run_cli("uninit", "--yes", root=root)
