"""LXD's verbs through the real CLI on the real kernel (issue 13), where they touch it:
file trees into and out of a running unprivileged container, exec as another user, a
running container's snapshot restored in place, a move to another pool, list with its
addresses, and a btrfs loop pool grown while in use.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from tests.conftest import bind_netns, remove_networks, requires_root, run_cli
from tests.integration.test_storage_e2e import INIT, _btrfs_ok

pytestmark = requires_root


def ok(*args: str, root: str, **kw) -> str:
    return run_cli(*args, root=root, check=True, **kw).stdout


def inside(root: str, name: str, script: str, **kw) -> str:
    return ok("exec", name, *kw.pop("opts", ()), "--", "sh", "-c", script, root=root, **kw)


def listing(root: str, *filters: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(ok("list", *filters, "-f", "json", root=root))}


@pytest.fixture
def root(sysmgr_root: str):
    """A root without a network (dir default pool) and the busybox image."""
    ok(*INIT, root=sysmgr_root)
    ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    yield sysmgr_root
    for name in listing(sysmgr_root):
        run_cli("delete", "--force", name, root=sysmgr_root)


def test_file_trees_into_and_out_of_a_running_container(root, tmp_path):
    ok("launch", "busybox", "c1", root=root)  # unprivileged: an idmapped root filesystem
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>hi</h1>\n")
    (site / "css" / "main.css").write_text("body {}\n")
    (site / "latest").symlink_to("index.html")
    os.chmod(site / "index.html", 0o640)
    out = ok("file", "push", "-r", "-p", str(site), "c1/srv/www/", "--uid", "33", "--gid", "44",
             root=root)
    assert out == f"Directory c1/srv/www/site pushed from {site}\n"
    # the container sees its own ids and the modes pushed; the link stays a link
    got = inside(root, "c1", "cd /srv/www/site && stat -c '%n %u:%g %a' index.html css "
                             "css/main.css && readlink latest")
    assert got.splitlines() == ["index.html 33:44 640", "css 33:44 755", "css/main.css 33:44 644",
                                "index.html"]
    inside(root, "c1", "mkdir -p /srv/www/site/made && echo inside > /srv/www/site/made/f")
    back = tmp_path / "back"
    ok("file", "pull", "-r", "c1/srv/www/site", str(back), root=root)
    assert (back / "made" / "f").read_text() == "inside\n"
    assert os.readlink(back / "latest") == "index.html"
    assert stat.S_IMODE((back / "index.html").stat().st_mode) == 0o640
    # edit keeps mode and owner; delete takes a file, an empty directory, a tree with -f
    ok("file", "edit", "c1/srv/www/site/index.html", input="<h1>new</h1>\n", root=root)
    assert inside(root, "c1", "cat /srv/www/site/index.html; stat -c '%u:%g %a' "
                              "/srv/www/site/index.html") == "<h1>new</h1>\n33:44 640\n"
    res = run_cli("file", "delete", "c1/srv/www/site", root=root)
    assert res.returncode == 2 and "not empty" in res.stderr
    ok("file", "delete", "-f", "c1/srv/www/site", root=root)
    assert inside(root, "c1", "ls -A /srv/www") == ""


def test_exec_as_another_user_in_a_directory_with_an_environment(root):
    ok("launch", "busybox", "c1", root=root)
    out = inside(root, "c1", "id -u; id -g; pwd; echo $GREETING; grep CapEff /proc/self/status",
                 opts=("--user", "1000", "--group", "1001", "--cwd", "/tmp",
                       "--env", "GREETING=hello"))
    uid, gid, cwd, greeting, caps = out.splitlines()
    assert (uid, gid, cwd, greeting) == ("1000", "1001", "/tmp", "hello")
    assert caps.split()[1] == "0000000000000000"  # a non-root user keeps no capability
    res = run_cli("exec", "c1", "--user", "1000", "--", "touch", "/etc/forbidden", root=root)
    assert res.returncode != 0
    assert inside(root, "c1", "id -u") == "0\n"  # root stays the default


def test_restore_of_a_running_container_in_place(root):
    ok("launch", "busybox", "c1", root=root)
    inside(root, "c1", "echo v1 > /root/file")
    ok("snapshot", "create", "c1", "s0", root=root)
    inside(root, "c1", "echo v2 > /root/file")
    pid = listing(root)["c1"]["pid"]
    out = ok("snapshot", "restore", "c1", "s0", root=root)
    assert out == "Container c1 restored from snapshot s0 (stopped and started again)\n"
    c = listing(root)["c1"]
    assert c["status"] == "Running" and c["pid"] != pid
    assert inside(root, "c1", "cat /root/file") == "v1\n"
    info = ok("info", "c1", root=root)
    assert re.search(r"\| s0 +\| \d{4}/\d\d/\d\d \d\d:\d\d UTC \|", info), info


def test_move_to_another_pool_keeps_snapshots_and_identity(root, tmp_path):
    ok("storage", "create", "other", "dir", f"source={tmp_path / 'other'}", root=root)
    ok("launch", "busybox", "c1", root=root)
    inside(root, "c1", "echo v1 > /root/file")
    ok("snapshot", "create", "c1", "s0", root=root)
    inside(root, "c1", "echo v2 > /root/file")
    res = run_cli("move", "c1", "-s", "other", root=root)
    assert res.returncode == 1 and "stop it first" in res.stderr  # never under a running one
    ok("stop", "c1", root=root)
    before = listing(root)["c1"]
    assert ok("move", "c1", "-s", "other", root=root) == "Container c1 moved to storage pool other\n"
    after = listing(root)["c1"]
    assert after["pool"] == "other" and after["created_at"] == before["created_at"]
    ok("start", "c1", root=root)
    assert inside(root, "c1", "cat /root/file") == "v2\n"  # an unprivileged container's ids kept
    ok("snapshot", "restore", "c1", "s0", root=root)
    assert inside(root, "c1", "cat /root/file; hostname") == "v1\nc1\n"
    assert not os.path.exists(os.path.join(root, "storage-pools", "default", "containers", "c1"))


def test_list_shows_addresses_as_data(sysmgr_root, netns):
    bind_netns(sysmgr_root, netns)
    ok("init", "--auto", root=sysmgr_root)
    try:
        ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
        ok("launch", "busybox", "web1", root=sysmgr_root)
        c = listing(sysmgr_root, "status=running")["web1"]
        addrs = c["addresses"]
        assert len(addrs) == 1 and addrs[0]["family"] == "inet" and addrs[0]["device"] == "eth0"
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", addrs[0]["address"])
        assert c["last_used_at"] and c["created_at"]
        table = ok("list", "-c", "n4", root=sysmgr_root)
        assert f"{addrs[0]['address']} (eth0)" in table
        ipv4 = ok("list", f"ipv4={addrs[0]['address']}", "-c", "n", "-f", "csv", root=sysmgr_root)
        assert ipv4 == "web1\n"
        allocations = json.loads(ok("network", "list-allocations", "-f", "json", root=sysmgr_root))
        assert {"container/web1"} == {a["used_by"] for a in allocations if a["type"] == "container"}
    finally:
        for name in listing(sysmgr_root):
            run_cli("delete", "--force", name, root=sysmgr_root)
        remove_networks(sysmgr_root)


@pytest.mark.skipif(not _btrfs_ok(), reason="btrfs-progs or the btrfsutil binding missing")
def test_a_btrfs_loop_pool_grows_while_in_use(root):
    ok("storage", "create", "bt", "btrfs", "size=256MiB", root=root)
    try:
        ok("launch", "busybox", "c1", "-s", "bt", root=root)
        total = json.loads(ok("storage", "info", "bt", "-f", "json", root=root))["total_bytes"]
        res = run_cli("storage", "set", "bt", "size=128MiB", root=root)
        assert res.returncode == 1 and "only grown" in res.stderr
        assert ok("storage", "set", "bt", "size=512MiB", root=root) == \
            "Storage pool bt updated: size set\n"
        grown = json.loads(ok("storage", "info", "bt", "-f", "json", root=root))["total_bytes"]
        assert grown > total + 200 * 1024 * 1024, (total, grown)
        assert ok("storage", "get", "bt", "size", root=root) == "512MiB\n"
        img = os.path.join(root, "storage-pools", "bt", "pool.img")
        assert os.path.getsize(img) == 512 * 1024 * 1024
        # the container kept running on it and writes into the new space
        inside(root, "c1", "dd if=/dev/zero of=/root/big bs=1M count=300 2>/dev/null; sync; "
                           "ls -l /root/big")
    finally:
        run_cli("delete", "--force", "c1", root=root)
        run_cli("storage", "delete", "bt", root=root)


@pytest.mark.skipif(not _btrfs_ok(), reason="btrfs-progs or the btrfsutil binding missing")
def test_copy_with_snapshots_onto_a_dir_pool_without_the_size(root):
    """README, issue 13 item 6: a copy keeps a root size a dir pool cannot enforce, unless
    ``-d root,size=`` drops it; the snapshots go with the copy (tar between the pools)."""
    ok("storage", "create", "bt", "btrfs", "size=512MiB", root=root)
    try:
        ok("launch", "busybox", "c1", "-s", "bt", "-d", "root,size=200MiB", root=root)
        inside(root, "c1", "echo v1 > /root/file")
        ok("snapshot", "create", "c1", "s0", root=root)
        inside(root, "c1", "echo v2 > /root/file")
        res = run_cli("copy", "c1", "c2", "-s", "default", root=root)
        assert res.returncode == 2 and "size" in res.stderr
        ok("copy", "c1", "c2", "-s", "default", "-d", "root,size=", root=root)
        c2 = listing(root)["c2"]
        assert c2["pool"] == "default" and "size" not in c2["expanded_devices"]["root"]
        snaps = json.loads(ok("snapshot", "list", "c2", "-f", "json", root=root))
        assert [s["name"] for s in snaps] == ["s0"]
        ok("start", "c2", root=root)
        assert inside(root, "c2", "cat /root/file; hostname") == "v2\nc2\n"
        ok("snapshot", "restore", "c2", "s0", root=root)
        assert inside(root, "c2", "cat /root/file") == "v1\n"
        ok("copy", "c1", "c3", "--instance-only", root=root)  # same btrfs pool, no snapshots
        assert json.loads(ok("snapshot", "list", "c3", "-f", "json", root=root)) == []
    finally:
        for name in ("c1", "c2", "c3"):
            run_cli("delete", "--force", name, root=root)
        run_cli("storage", "delete", "bt", root=root)
