"""Kept member connections (the per-member mux, OpenSSH's ControlPersist): a second command
reuses the first one's SSH connection and the member's ``sysmgr _rpc`` (no new RPC server
on the member), exec/list/file/launch through it give the same results as a direct
connection, the mux ends when idle, when the member's sshd stops (and the next command says
the member is unreachable), when the member's spec changes and on ``cluster remove``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from sysmgr.api import remote
from tests.conftest import REPO, requires_root

pytestmark = [requires_root, pytest.mark.slow]


def ok(cluster, *args: str, input: str | None = None):
    res = cluster.cli(*args, input=input)
    assert res.returncode == 0, f"sysmgr {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res


def rpc_servers(m) -> set[int]:
    """The member's running ``sysmgr _rpc`` processes (one per kept or open RPC channel)."""
    out = set()
    for entry in m.ns.strays():
        pid, _, cmd = entry.partition(" ")
        if " _rpc" in f" {cmd} " and "sh -c" not in cmd:
            out.add(int(pid))
    return out


def wait_for(cond, limit: float = 20.0) -> bool:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def added(test_cluster):
    """One member with the busybox image, added to the admin root through the CLI."""
    cluster = test_cluster(1)
    m = cluster.members[0]
    res = subprocess.run(m.ssh_argv(m.sysmgr, "--root", m.root, "image", "build", "busybox",
                                    "--alias", "busybox"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
       "--sysmgr", m.sysmgr, "--accept-host-key", m.host_key)
    return cluster, m


def test_a_second_command_reuses_the_connection_and_rpc_server(added):
    cluster, m = added
    ok(cluster, "list")
    muxes = cluster.mux_pids()
    servers = rpc_servers(m)
    assert len(muxes) == 1 and len(servers) == 1, (muxes, servers)
    directory = os.path.join(cluster.admin_root, "cluster", "mux")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    sock = os.path.join(directory, next(iter(muxes)))
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock).st_mode)
    for _ in range(3):
        ok(cluster, "list")
    assert cluster.mux_pids() == muxes and rpc_servers(m) == servers
    # a command that finds a live mux never imports paramiko
    res = subprocess.run(cluster.argv(sys.executable, "-X", "importtime", "-m", "sysmgr", "list"),
                         capture_output=True, text=True,
                         env=dict(os.environ, SYSMGR_ROOT=cluster.admin_root, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stderr
    assert "sysmgr.remote.muxclient" in res.stderr and "paramiko" not in res.stderr
    assert cluster.mux_pids() == muxes and rpc_servers(m) == servers


def test_exec_file_launch_and_list_through_the_mux(added, tmp_path):
    cluster, m = added
    ok(cluster, "launch", "busybox", "c1")
    mux = cluster.mux_pids()
    res = cluster.cli("exec", "c1", "--", "sh", "-c", "cat; echo err >&2; exit 3",
                      input="through the mux\n")
    assert res.returncode == 3 and res.stdout == "through the mux\n" and "err" in res.stderr
    data = os.urandom(3 << 20)  # bigger than one frame and one SSH window
    src, back = tmp_path / "src", tmp_path / "back"
    src.write_bytes(data)
    ok(cluster, "file", "push", str(src), "c1/root/blob")
    ok(cluster, "file", "pull", "c1/root/blob", str(back))
    assert back.read_bytes() == data
    rows = json.loads(ok(cluster, "list", "--format", "json").stdout)
    assert [(r["name"], r["location"], r["status"]) for r in rows] == [("c1", "m1", "Running")]
    res = cluster.cli("exec", "nosuch", "--", "true")
    assert res.returncode == 2 and "nosuch" in res.stderr  # errors keep their class
    assert cluster.mux_pids() == mux  # every command went through the same mux
    ok(cluster, "delete", "--force", "c1")


def test_the_mux_ends_when_idle(added, monkeypatch):
    cluster, m = added
    cluster.kill_muxes()
    monkeypatch.setenv("SYSMGR_SSH_PERSIST", "1")
    ok(cluster, "list")
    assert cluster.mux_pids()
    assert wait_for(lambda: not cluster.mux_pids()), "the mux outlived its idle time"
    assert wait_for(lambda: not rpc_servers(m)), "the member's RPC server outlived the mux"


def test_persist_0_connects_directly(added, monkeypatch):
    cluster, m = added
    cluster.kill_muxes()
    monkeypatch.setenv("SYSMGR_SSH_PERSIST", "0")
    ok(cluster, "list")
    assert cluster.mux_pids() == {} and wait_for(lambda: not rpc_servers(m))


def test_sshd_stopped_ends_the_mux_and_the_member_is_unreachable(added):
    cluster, m = added
    ok(cluster, "list")
    assert cluster.mux_pids()
    m.stop_sshd()
    res = cluster.cli("list")
    assert res.returncode == 1 and "m1" in res.stderr, res.stderr
    assert wait_for(lambda: not cluster.mux_pids()), "the mux outlived the member's sshd"
    res = cluster.cli("exec", "--target", "m1", "x", "--", "true")
    assert res.returncode == 1 and "m1" in res.stderr and "cannot reach" in res.stderr
    assert wait_for(lambda: not cluster.mux_pids()), "a mux that could not connect lives on"


def test_the_first_command_after_sshd_came_back_finds_the_member(added):
    # sshd killed with its sessions (the mux's connection drops) and started again at once:
    # the mux may not have noticed yet; the next command must not fail on its dead connection
    cluster, m = added
    ok(cluster, "list")
    old = set(cluster.mux_pids().values())
    assert old
    m.kill_sshd()
    m.start_sshd()
    ok(cluster, "list")
    assert set(cluster.mux_pids().values()).isdisjoint(old), "the dropped connection's mux served"


def test_a_changed_spec_gets_a_new_mux_and_remove_ends_it(added):
    cluster, m = added
    ok(cluster, "list")
    (old,) = cluster.mux_pids()
    other = os.path.join(m.dir, "sysmgr-copy")
    shutil.copy(m.sysmgr, other)
    with cluster.admin():  # the same member reached with another sysmgr command
        backend = remote.connect(m.spec(sysmgr=other), admin_root=cluster.admin_root)
    try:
        assert backend.hello.root == m.root
        # the mux of the older spec was told to end
        assert wait_for(lambda: old not in cluster.mux_pids()) and len(cluster.mux_pids()) == 1
    finally:
        backend.close()
    ok(cluster, "list")  # back to the recorded spec: a mux of its own again
    assert wait_for(lambda: list(cluster.mux_pids()) == [old])
    ok(cluster, "cluster", "remove", "m1")
    assert wait_for(lambda: not cluster.mux_pids()), "cluster remove left the mux running"
