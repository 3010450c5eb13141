"""``runtime.engine`` end to end through the real CLI: the same containers under native, crun
and runc (issue 16, part 3). Networking (a nic on a managed bridge, containers of different
engines pinging each other), limits (memory, processes, CPU; live changes), storage (the dir
and btrfs pools; unprivileged, so the rootfs is shifted on disk for the OCI engines), the
engine a running container remembers, and bad input (exit 2, nothing changed).
"""

from __future__ import annotations

import json
import os

import pytest

from sysmgr.drivers.runtime.oci import CrunRuntime, RuncRuntime
from tests.conftest import Netns, bind_netns, remove_networks, requires_root, run_cli
from tests.integration.test_storage_e2e import INIT, _btrfs_ok, state, teardown_root

pytestmark = requires_root

OCI = [pytest.param(e, marks=pytest.mark.skipif(not cls.available(), reason=f"{e} not installed"))
       for e, cls in (("crun", CrunRuntime), ("runc", RuncRuntime))]
ENGINES = [pytest.param("native")] + OCI
CG = "/sys/fs/cgroup"


def ok(*args: str, root: str) -> str:
    return run_cli(*args, root=root, check=True).stdout


def info(root: str, name: str) -> dict:
    return json.loads(ok("info", name, "--format", "json", root=root))


def root_id(root: str) -> str:
    with open(os.path.join(root, "root.id")) as f:
        return f.read().strip()


def v1(root: str, controller: str, name: str, key: str) -> str:
    with open(os.path.join(CG, controller, f"sysmgr-{root_id(root)}", name, key)) as f:
        return f.read().strip()


def teardown(root: str, pools: tuple[str, ...] = ()) -> None:
    teardown_root(root, pools)


@pytest.fixture
def root(sysmgr_root: str):
    """A root without a network (dir pool) and the busybox image."""
    ok(*INIT, root=sysmgr_root)
    ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    try:
        yield sysmgr_root
    finally:
        teardown(sysmgr_root)


@pytest.mark.parametrize("engine", OCI)
def test_init_runtime_sets_the_default_profile_and_a_running_container_keeps_its_engine(
        sysmgr_root: str, engine: str) -> None:
    out = ok(*INIT, "--runtime", engine, root=sysmgr_root)
    assert f"runtime.engine={engine}" in out
    root = sysmgr_root
    try:
        ok("image", "build", "busybox", "--alias", "busybox", root=root)
        assert f"runtime.engine: {engine}" in ok("profile", "show", "default", root=root)
        ok("launch", "busybox", "c1", root=root)
        i = info(root, "c1")
        assert i["engine"] == engine and i["status"].lower() == "running"
        assert i["security"].startswith("unprivileged")  # unprivileged under every engine
        cid = f"sysmgr-{root_id(root)}_c1"
        assert os.path.isdir(os.path.join(root, "runtimes", engine, "state", cid))
        # uid 0 inside is the map's host id outside; the image's files were shifted for it
        assert ok("exec", "c1", "--", "cat", "/proc/self/uid_map", root=root).split()[:2] != ["0", "0"]
        assert ok("exec", "c1", "--", "sh", "-c", "touch /root/x && stat -c %u /root/x", root=root).strip() == "0"
        other = "runc" if engine == "crun" else "crun"
        res = run_cli("config", "set", "c1", f"runtime.engine={other}", root=root)
        assert res.returncode == 0 and "runtime.engine" in res.stdout + res.stderr  # needs a restart
        assert info(root, "c1")["engine"] == engine  # still the one that started it
        assert ok("exec", "c1", "--", "hostname", root=root).strip() == "c1"
        ok("freeze", "c1", root=root)
        assert info(root, "c1")["status"].lower() == "frozen"
        ok("unfreeze", "c1", root=root)
        ok("restart", "c1", root=root)
        assert info(root, "c1")["engine"] == other
        assert not os.path.exists(os.path.join(root, "runtimes", engine, "state", cid))
        ok("stop", "c1", root=root)
        assert not os.path.exists(os.path.join(CG, "memory", f"sysmgr-{root_id(root)}", "c1"))
    finally:
        teardown(root)


def test_an_unknown_engine_is_bad_input_and_changes_nothing(root: str) -> None:
    before = state(root)
    res = run_cli("launch", "busybox", "c1", "-c", "runtime.engine=lxc", root=root)
    assert res.returncode == 2 and "runtime.engine" in res.stderr
    assert state(root) == before
    res = run_cli("profile", "set", "default", "runtime.engine=kata", root=root)
    assert res.returncode == 2 and "runtime.engine" in res.stderr
    res = run_cli("init", "--auto", "--runtime", "youki", root=root)
    assert res.returncode == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_limits_work_the_same_under_each_engine(root: str, engine: str) -> None:
    ok("launch", "busybox", "c1", "-c", f"runtime.engine={engine}", "-c", "limits.memory=64MiB",
       "-c", "limits.processes=40", "-c", "limits.cpu.allowance=50ms/100ms", root=root)
    assert int(v1(root, "memory", "c1", "memory.limit_in_bytes")) == 64 << 20
    assert v1(root, "pids", "c1", "pids.max") == "40"
    assert v1(root, "cpu", "c1", "cpu.cfs_quota_us") == "50000"
    # the processes limit holds inside: a fork bomb of sleeps stops short of it
    out = run_cli("exec", "c1", "--", "sh", "-c", "for i in $(seq 60); do sleep 2 & done", root=root)
    assert "fork" in out.stderr  # busybox sh: "can't fork: Resource temporarily unavailable"
    ok("config", "set", "c1", "limits.memory=128MiB", "limits.processes=", root=root)
    assert int(v1(root, "memory", "c1", "memory.limit_in_bytes")) == 128 << 20
    assert v1(root, "pids", "c1", "pids.max") == "max"
    assert info(root, "c1")["resources"]["memory_bytes"] > 0  # usage read back


@pytest.mark.parametrize("engine", OCI)
def test_btrfs_pool_under_an_oci_engine(root: str, engine: str) -> None:
    if not _btrfs_ok():
        pytest.skip("btrfs-progs or the btrfsutil binding missing")
    ok("storage", "create", "bt", "btrfs", "size=1GiB", root=root)
    try:
        ok("launch", "busybox", "b1", "-s", "bt", "-c", f"runtime.engine={engine}", root=root)
        ok("exec", "b1", "--", "sh", "-c", "echo kept > /root/f", root=root)
        ok("snapshot", "create", "b1", "s1", root=root)
        ok("restart", "b1", root=root)
        assert ok("exec", "b1", "--", "cat", "/root/f", root=root) == "kept\n"
        assert info(root, "b1")["engine"] == engine
    finally:
        teardown(root, ("bt",))


@pytest.fixture
def netroot(sysmgr_root: str, netns: Netns):
    """A root in its own network namespace with the default network (sysmgrbr0)."""
    bind_netns(sysmgr_root, netns)
    ok("init", "--auto", root=sysmgr_root)
    ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    yield sysmgr_root
    teardown(sysmgr_root)
    remove_networks(sysmgr_root)


def test_containers_of_different_engines_ping_each_other(netroot: str) -> None:
    engines = ["native"] + [e for e, cls in (("crun", CrunRuntime), ("runc", RuncRuntime))
                            if cls.available()]
    for e in engines:
        ok("launch", "busybox", f"n-{e}", "-c", f"runtime.engine={e}", root=netroot)
    addrs = {}
    for c in json.loads(ok("list", "--format", "json", root=netroot)):
        inet = [a["address"] for a in c["addresses"] if a["family"] == "inet"]
        assert inet, c
        addrs[c["name"]] = inet[0]
    for a in engines:
        for b in engines:
            if a != b:
                out = ok("exec", f"n-{a}", "--", "ping", "-c1", "-W2", addrs[f"n-{b}"], root=netroot)
                assert "0% packet loss" in out
