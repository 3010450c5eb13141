"""End to end through the real CLI on the real kernel: busybox containers on a dir pool."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap

import pytest

from tests.conftest import REPO, bind_netns, remove_networks, requires_root, run_cli
from tests.monitor import Monitor

pytestmark = requires_root


@pytest.fixture
def root(sysmgr_root: str, netns):
    """An initialised root with the busybox image, run inside a network namespace of its own
    (``init --auto`` makes the default network); containers and networks deleted afterwards."""
    bind_netns(sysmgr_root, netns)
    run_cli("init", "--auto", root=sysmgr_root, check=True)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    yield sysmgr_root
    out = run_cli("list", "--format", "json", root=sysmgr_root, check=True).stdout
    for c in json.loads(out):
        run_cli("delete", "--force", c["name"], root=sysmgr_root)
    remove_networks(sysmgr_root)


def host_snapshot(root: str) -> tuple:
    """Everything that could change on the host for this root: records and files."""
    con = sqlite3.connect(os.path.join(root, "sysmgr.db"))
    rows = []
    for table in ("storage_pools", "profiles", "images", "image_aliases", "containers"):
        rows.append(sorted(tuple(r) for r in con.execute(f"SELECT * FROM {table}")))
    con.close()
    files = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, dirs, fs in os.walk(root) for f in fs + dirs
                   if not f.startswith(("sysmgr.db", "events.log")) and f != "lock")  # a log
    return tuple(map(tuple, rows)), tuple(files)


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def edit(path: str, old: str, new: str) -> None:
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def test_launch_exec_list_stop_delete(root):
    run_cli("launch", "busybox", "c1", "-c", "limits.memory=64MiB", root=root, check=True)
    # PID 1 is the image's init, hostname is the name, only the container's processes are visible
    res = run_cli("exec", "c1", "--", "sh", "-c", "readlink /proc/1/exe; hostname; ls /proc | grep -c '^[0-9]'",
                  root=root, check=True)
    exe, hostname, nprocs = res.stdout.split()
    assert exe == "/bin/busybox" and hostname == "c1" and int(nprocs) < 10
    # exit codes pass through
    assert run_cli("exec", "c1", "--", "sh", "-c", "exit 7", root=root).returncode == 7
    assert run_cli("exec", "c1", "--", "nonexistent-cmd", root=root).returncode == 127
    # stdin is streamed in
    assert run_cli("exec", "c1", "--", "cat", root=root, input="hello").stdout == "hello"
    listing = json.loads(run_cli("list", "--format", "json", root=root, check=True).stdout)
    assert [(c["name"], c["status"]) for c in listing] == [("c1", "Running")]
    assert listing[0]["disk"] and listing[0]["disk"] > 1024 * 1024  # the busybox tree, ~2-3 MiB
    table = run_cli("list", root=root, check=True).stdout
    assert "RUNNING" in table and "c1" in table
    info = run_cli("info", "c1", root=root, check=True).stdout
    assert "limits.memory: 64MiB" in info and "Init PID" in info.replace("init pid", "Init PID")
    run_cli("stop", "c1", "--timeout", "10", root=root, check=True)
    assert json.loads(run_cli("list", "--format", "json", root=root).stdout)[0]["status"] == "Stopped"
    assert run_cli("delete", "c1", root=root, check=True).returncode == 0
    assert json.loads(run_cli("list", "--format", "json", root=root).stdout) == []


def test_freeze_unfreeze_and_delete_protection(root):
    run_cli("launch", "busybox", "c2", "-c", "security.protection.delete=true", root=root, check=True)
    run_cli("freeze", "c2", root=root, check=True)
    assert "FROZEN" in run_cli("list", root=root).stdout
    run_cli("unfreeze", "c2", root=root, check=True)
    assert "RUNNING" in run_cli("list", root=root).stdout
    res = run_cli("delete", "--force", "c2", root=root)
    assert res.returncode != 0 and "protect" in res.stderr
    run_cli("config", "unset", "c2", "security.protection.delete", root=root, check=True)
    run_cli("delete", "--force", "c2", root=root, check=True)


def test_live_limit_change(root):
    run_cli("launch", "busybox", "c3", "-c", "limits.memory=64MiB", root=root, check=True)
    run_cli("config", "set", "c3", "limits.memory=96MiB", root=root, check=True)
    pid = json.loads(run_cli("list", "--format", "json", root=root).stdout)[0]["pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        mem = [line.split(":")[2].strip() for line in f if ":memory:" in line][0]
    with open(f"/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 96 * 1024 * 1024


def test_file_push_pull_cannot_escape(root, tmp_path):
    run_cli("create", "busybox", "c4", root=root, check=True)
    local = tmp_path / "motd"
    local.write_text("hi from host\n")
    run_cli("file", "push", str(local), "c4/etc/motd", root=root, check=True)
    out = tmp_path / "back"
    run_cli("file", "pull", "c4/etc/motd", str(out), root=root, check=True)
    assert out.read_text() == "hi from host\n"
    # a symlink inside the container pointing at a host path resolves inside the container
    run_cli("start", "c4", root=root, check=True)
    run_cli("exec", "c4", "--", "ln", "-s", "/etc/shadow-of-host", "/tmp/evil", root=root, check=True)
    run_cli("exec", "c4", "--", "ln", "-s", "../../../../../../etc/passwd", "/tmp/evil2", root=root, check=True)
    host_passwd = open("/etc/passwd").read()
    pulled = run_cli("file", "pull", "c4/tmp/evil2", "-", root=root)
    assert pulled.stdout != host_passwd
    assert pulled.stdout == run_cli("exec", "c4", "--", "cat", "/etc/passwd", root=root).stdout
    before = open("/etc/passwd").read()
    run_cli("file", "push", str(local), "c4/tmp/evil2", root=root)
    assert open("/etc/passwd").read() == before


BAD_INPUTS = {
    "malformed": ("kind: Container\nname: [unclosed\n", "bad.yaml:"),
    "unknown kind": ("kind: Spaceship\nname: x\n", "Spaceship"),
    "unknown key": ("kind: Container\nname: c9\nimage: busybox\nconfig:\n  limits.memroy: 1GB\n",
                    "limits.memroy"),
    "invalid size": ("kind: Container\nname: c9\nimage: busybox\nconfig:\n  limits.memory: lots\n",
                     "bad.yaml:5"),
    "bad name": ("kind: Container\nname: ../x\nimage: busybox\n", "name"),
    "slash name": ("kind: Container\nname: a/b\nimage: busybox\n", "name"),
    "long name": (f"kind: Container\nname: {'a' * 64}\nimage: busybox\n", "name"),
    "missing profile": ("kind: Container\nname: c9\nimage: busybox\nprofiles: [default, ghost]\n", "ghost"),
    "missing image": ("kind: Container\nname: c9\nimage: ghost\n", "ghost"),
    "duplicate": ("kind: Container\nname: c9\nimage: busybox\n---\nkind: Container\nname: c9\nimage: busybox\n",
                  "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_and_changes_nothing(root, tmp_path, case):
    text, needle = BAD_INPUTS[case]
    path = write(tmp_path, "bad.yaml", text)
    before = host_snapshot(root)
    for verb in ("validate", "diff", "apply"):
        res = run_cli(verb, "-f", path, "--yes", root=root) if verb == "apply" else run_cli(verb, "-f", path, root=root)
        assert res.returncode == 2, (verb, res.stdout, res.stderr)
        assert needle in res.stderr, (verb, res.stderr)
        assert "Traceback" not in res.stderr
    assert host_snapshot(root) == before


def test_bad_cli_input_exits_2(root):
    assert run_cli("launch", "busybox", "../x", root=root).returncode == 2
    assert run_cli("launch", "busybox", "c5", "-c", "limits.memory=lots", root=root).returncode == 2
    assert run_cli("launch", "ghost", "c5", root=root).returncode == 2
    assert run_cli("launch", "busybox", "c5", "-p", "ghost", root=root).returncode == 2
    assert run_cli("start", "ghost", root=root).returncode == 2
    assert json.loads(run_cli("list", "--format", "json", root=root).stdout) == []


def test_missing_init_leaves_nothing_half_created(root, tmp_path):
    # an image whose /sbin/init is missing: launch fails and the container is gone again
    img = tmp_path / "noinit"
    (img / "etc").mkdir(parents=True)
    (img / "etc" / "hostname").write_text("x\n")
    run_cli("image", "import", str(img), "--alias", "noinit", root=root, check=True)
    res = run_cli("launch", "noinit", "c6", root=root)
    assert res.returncode == 2 and "has no init" in res.stderr and "boot.init" in res.stderr
    assert json.loads(run_cli("list", "--format", "json", root=root).stdout) == []


def test_apply_is_idempotent_and_live(root, tmp_path):
    path = write(tmp_path, "m.yaml", """
        kind: Profile
        name: tiny
        config:
          limits.processes: "64"
        ---
        kind: Container
        name: a1
        image: busybox
        profiles: [default, tiny]
        config:
          limits.memory: 64MiB
        state: running
        """)
    first = run_cli("apply", "-f", path, "--yes", root=root, check=True)
    assert "a1" in first.stdout
    assert run_cli("diff", "-f", path, root=root).returncode == 0
    second = run_cli("apply", "-f", path, "--yes", root=root, check=True)
    assert "no changes" in second.stdout
    # a live change: applied without restarting init
    pid = json.loads(run_cli("list", "--format", "json", root=root).stdout)[0]["pid"]
    edit(path, "64MiB", "80MiB")
    diff = run_cli("diff", "-f", path, root=root)
    assert diff.returncode == 1 and "limits.memory" in diff.stdout
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    now = json.loads(run_cli("list", "--format", "json", root=root).stdout)[0]
    assert now["pid"] == pid and now["status"] == "Running"
    assert run_cli("diff", "-f", path, root=root).returncode == 0
    # state: stopped stops it
    edit(path, "state: running", "state: stopped")
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    assert json.loads(run_cli("list", "--format", "json", root=root).stdout)[0]["status"] == "Stopped"


@pytest.mark.parametrize("example", sorted(d for d in os.listdir(os.path.join(REPO, "examples"))
                                           if os.path.isdir(os.path.join(REPO, "examples", d))))
def test_examples_apply_and_converge(sysmgr_root, netns, example):
    """Every examples/ scenario applies on a fresh root (in a network namespace of its own),
    runs, and converges; the quickstart's containers reach each other by name."""
    root = sysmgr_root
    bind_netns(root, netns)
    run_cli("init", "--auto", root=root, check=True)
    paths = ["-f", os.path.join(REPO, "networks"), "-f", os.path.join(REPO, "profiles"),
             "-f", os.path.join(REPO, "examples", example)]
    try:
        run_cli("apply", *paths, "--yes", root=root, check=True, timeout=600)
        listing = json.loads(run_cli("list", "--format", "json", root=root, check=True).stdout)
        assert listing and all(c["status"] == "Running" for c in listing)
        for c in listing:
            assert run_cli("exec", c["name"], "--", "hostname", root=root).stdout.strip() == c["name"]
        if example == "quickstart":
            assert all(c["addresses"] for c in listing), listing
            res = run_cli("exec", "db1", "--", "ping", "-c1", "-W2", "web1.sysmgr", root=root)
            assert res.returncode == 0, res.stdout + res.stderr
        assert "no changes" in run_cli("apply", *paths, "--yes", root=root, check=True).stdout
    finally:
        for c in json.loads(run_cli("list", "--format", "json", root=root).stdout or "[]"):
            run_cli("delete", "--force", c["name"], root=root)
        remove_networks(root)


def test_monitor_follows_launch_stop_delete_until_ctrl_c(root):
    """``sysmgr monitor --format json`` in a process of its own sees the events other sysmgr
    commands write, in order, as they happen; Ctrl-C ends it with exit code 0."""
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    mon = Monitor([sys.executable, "-m", "sysmgr", "monitor", "--format", "json", "--since", "1h"],
                  env)
    try:
        run_cli("launch", "busybox", "c1", root=root, check=True)
        # these two reach the monitor by following the log (or, were it slow to start, from
        # --since); the next ones only by following it, since it has printed these
        assert mon.next_events(2) == [("lifecycle", "container/c1", "created"),
                                      ("lifecycle", "container/c1", "started")]
        run_cli("stop", "c1", "--timeout", "10", root=root, check=True)
        run_cli("delete", "c1", root=root, check=True)
        assert mon.next_events(2) == [("lifecycle", "container/c1", "stopped"),
                                      ("lifecycle", "container/c1", "deleted")]
    finally:
        code, err = mon.interrupt()
    assert code == 0, err
    assert mon.lines.empty()  # nothing else happened to this root
