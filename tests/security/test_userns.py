"""Unprivileged by default: the attacks that worked when root inside was root on the host
(the containment issue's rows 1, 2, 3, 9 and 11), run from inside a busybox container with
the defaults, now fail; ownership inside and on the host is what LXD users expect.

Real kernel, real user namespaces and idmapped mounts, a dir pool on the host's filesystem
(and btrfs where it matters). The session's own /etc/subuid stand-ins (tests/conftest.py)
give root the range 1000000:1000000000, as ``sysmgr init`` does on a real host.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import requires_root, sh
from tests.security.helpers import ENGINES, use_engine

pytestmark = requires_root

BASE = 1_000_000


@pytest.fixture(params=ENGINES)
def client(busybox_client, request):
    """The busybox root, its containers under each runtime engine in turn."""
    use_engine(busybox_client, request.param)
    return busybox_client


def host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_root_inside_is_an_unprivileged_host_uid(client):
    c = client.containers.create("c1", "busybox", start=True)
    code, out = sh(c, "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    assert code == 0
    lines = out.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(BASE), "65536"] and lines[2].split() == ["0", str(BASE), "65536"]
    assert host_uid(c.pid) == BASE                       # init as the host sees it
    assert c.security.startswith("unprivileged") and str(BASE) in c.security
    listing = json.loads(subprocess.run(
        [os.sys.executable, "-m", "sysmgr", "--root", client.root, "list", "--format", "json"],
        capture_output=True, text=True, check=True).stdout)
    assert listing[0]["privileged"] is False


def test_row1_core_pattern_cannot_be_written_even_after_unmounting_proc_sys(client):
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    c = client.containers.create("c1", "busybox", start=True)
    code, out = sh(c, "umount /proc/sys 2>/dev/null; mkdir -p /mnt/p; mount -t proc proc /mnt/p;"
                      " echo '|/bin/evil' > /proc/sys/kernel/core_pattern && echo WROTE1;"
                      " echo '|/bin/evil' > /mnt/p/sys/kernel/core_pattern && echo WROTE2; true")
    assert "WROTE" not in out
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == before


def test_row2_and_row9_remounts_do_not_reach_the_host(client):
    c = client.containers.create("c1", "busybox", start=True)
    rootfs = client.host.pool_driver("default").container_path("c1")
    code, out = sh(c, "mount -o remount,ro / && echo REMOUNTED_RO; "
                      "mount -o remount,rw /sys && echo > /sys/kernel/mm/transparent_hugepage/enabled"
                      " && echo WROTE_SYSFS; true")
    assert "REMOUNTED_RO" not in out and "WROTE_SYSFS" not in out
    # the filesystem under the pool is still writable from the host, and from inside
    probe = os.path.join(rootfs, "probe")
    with open(probe, "w") as f:
        f.write("x")
    os.unlink(probe)
    assert sh(c, "touch /probe2 && echo OK")[1].strip() == "OK"


def test_row3_device_rules_and_nodes_are_out_of_reach(client):
    c = client.containers.create("c1", "busybox", start=True)
    code, out = sh(c, "mkdir -p /mnt/d; mount -t cgroup -o devices none /mnt/d 2>/dev/null;"
                      " echo 'b 7:* rwm' > /mnt/d/devices.allow && echo ALLOWED;"
                      " mknod /tmp/loop0 b 7 0 && echo MKNOD; mknod /tmp/kmsg c 1 11 && echo MKNOD2;"
                      " cat /dev/kmsg >/dev/null 2>&1 && echo KMSG; true")
    assert "ALLOWED" not in out and "MKNOD" not in out and "KMSG" not in out


def test_row11_security_privileged_false_is_honoured_and_true_opts_out(client):
    u = client.containers.create("u", "busybox", config={"security.privileged": "false"}, start=True)
    p = client.containers.create("p", "busybox", config={"security.privileged": "true"}, start=True)
    assert host_uid(u.pid) == BASE and host_uid(p.pid) == 0
    assert sh(p, "cat /proc/self/uid_map")[1].split() == ["0", "0", "4294967295"]
    assert p.security == "privileged"


def test_files_belong_to_root_inside_and_keep_container_ids_on_disk(client, tmp_path):
    c = client.containers.create("c1", "busybox", start=True)
    assert sh(c, "echo hi > /root/made; chown 1000:1000 /root/made; ls -ln /root/made")[0] == 0
    on_disk = os.path.join(client.host.pool_driver("default").container_path("c1"), "root", "made")
    st = os.stat(on_disk)
    if c.security.endswith("shifted)"):  # an engine without idmapped mounts: shifted on disk
        assert (st.st_uid, st.st_gid) == (BASE + 1000, BASE + 1000)
    else:
        assert (st.st_uid, st.st_gid) == (1000, 1000)        # not shifted: idmapped mount
    # push into the running container: the owner given is the container's id
    c.files.put("/root/pushed", b"data", uid=7, gid=8)
    assert sh(c, "stat -c '%u %g' /root/pushed")[1].strip() == "7 8"
    assert c.files.get("/root/pushed") == b"data"
    c.stop(force=True)
    c.files.put("/root/pushed2", b"data", uid=9, gid=9)     # stopped: straight onto the volume
    c.start()
    assert sh(c, "stat -c '%u %g' /root/pushed2")[1].strip() == "9 9"


def test_isolated_containers_get_disjoint_ranges(client):
    a = client.containers.create("a", "busybox", config={"security.idmap.isolated": "true"}, start=True)
    b = client.containers.create("b", "busybox", config={"security.idmap.isolated": "true"}, start=True)
    s = client.containers.create("s", "busybox", start=True)
    ua, ub, us = host_uid(a.pid), host_uid(b.pid), host_uid(s.pid)
    assert us == BASE
    ranges = sorted([(ua, ua + 65536), (ub, ub + 65536), (us, us + 65536)])
    assert all(x[1] <= y[0] for x, y in zip(ranges, ranges[1:]))   # no overlap
    a.restart(force=True)
    assert host_uid(a.refresh().pid) == ua                           # kept across restarts


def test_raw_idmap_maps_a_host_id_in(client, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    c = client.containers.create("c1", "busybox", config={"raw.idmap": "both 4242 4242"}, start=True)
    code, out = sh(c, "cat /proc/self/uid_map")
    assert "4242" in out
    # not in /tmp: the image's rcS may mount a tmpfs there over the file meanwhile
    assert sh(c, "touch /x && chown 4242:4242 /x && stat -c %u /x")[1].strip() == "4242"


def test_snapshot_copy_export_import_keep_ownership(client, tmp_path):
    c = client.containers.create("c1", "busybox", start=True)
    assert sh(c, "mkdir /data && echo x > /data/f && chown -R 1234:4321 /data")[0] == 0
    c.stop(force=True)
    c.snapshots.create("s0")
    c2 = c.copy("c2")
    backup = str(tmp_path / "c1.tar.zst")
    c.export(backup)
    c3 = client.containers.import_(backup, name="c3")
    for ct in (c, c2, c3):
        ct.start()
        assert sh(ct, "stat -c '%u %g' /data/f")[1].strip() == "1234 4321", ct.name
        ct.stop(force=True)
    c.snapshots.get("s0").restore()
    c.start()
    assert sh(c, "stat -c '%u %g' /data/f")[1].strip() == "1234 4321"


def test_row3_privileged_a_container_cannot_widen_its_device_rules(client):
    """Privileged, root inside may mount cgroupfs: its processes sit below the level that
    holds the device rules, so writing devices.allow of its namespace root is refused."""
    c = client.containers.create("p", "busybox", config={"security.privileged": "true"}, start=True)
    code, out = sh(c, "mkdir -p /mnt/d; mount -t cgroup -o devices none /mnt/d || echo NOMOUNT;"
                      " echo 'b 7:* rwm' > /mnt/d/devices.allow && echo ALLOWED;"
                      " mknod /tmp/loop0 b 7 0 && cat /tmp/loop0 > /dev/null && echo READ; true")
    assert "ALLOWED" not in out and "READ" not in out, out


def test_info_says_once_whether_apparmor_confines_containers(client):
    out = subprocess.run([os.sys.executable, "-m", "sysmgr", "--root", client.root, "info"],
                         capture_output=True, text=True, check=True).stdout
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            enabled = f.read().strip() == "Y"
    except OSError:
        enabled = False
    want = "enabled" if enabled else "not available on this host"  # no profile loaded here, then
    assert out.count("AppArmor:") == 1 and f"AppArmor: {want}" in out, out


def test_privileged_cannot_unmount_the_masks_nor_remount_the_pool(client):
    """Privileged mode has no user namespace to lock its mounts: seccomp keeps what is
    mounted over /proc and /sys (no umount at all) and keeps superblock remounts (row 9) and
    the 5.2+ mount API (which would bypass the flag checks) away."""
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    c = client.containers.create("p1", "busybox", config={"security.privileged": "true"},
                                 start=True)
    rootfs = client.host.pool_driver("default").container_path("p1")
    code, out = sh(c, "umount /proc/sys && echo UNMOUNTED; umount -l /proc/kcore && echo UNMASKED;"
                      " mount -o remount,ro / && echo REMOUNTED_RO;"
                      " echo '|/bin/evil' > /proc/sys/kernel/core_pattern && echo WROTE; true")
    assert "UNMOUNTED" not in out and "UNMASKED" not in out and "REMOUNTED_RO" not in out, out
    assert "WROTE" not in out, out
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == before
    probe = os.path.join(rootfs, "probe")
    with open(probe, "w") as f:   # the pool is still writable
        f.write("x")
    os.unlink(probe)
    # the container's own mounts still work: tmpfs, bind, bind-remount read-only
    code, out = sh(c, "mkdir -p /mnt/t /mnt/b && mount -t tmpfs t /mnt/t && mount --bind /mnt/t /mnt/b"
                      " && mount -o remount,bind,ro /mnt/b && echo MOUNTS_OK")
    assert "MOUNTS_OK" in out, out
