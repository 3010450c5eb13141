"""Disk devices with a host ``source`` on the real kernel: bind mounts of host files and
directories into busybox containers (unprivileged by default, and privileged), at start and
live, read-only, in LXD's order, with ``required``, ``shift`` and ``propagation``; and the
same through the real CLI.

Each test makes its host files under its own ``tmp_path``; a mount made on the host for a
propagation test is removed by the test.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from sysmgr.errors import NotFound
from tests.conftest import requires_root, run_cli, sh

pytestmark = requires_root


@pytest.fixture
def client(busybox_client):
    return busybox_client


def mountinfo(c) -> list[str]:
    """The container's mount points (field 5 of its mountinfo), in mount order."""
    return [line.split()[4] for line in sh(c, "cat /proc/self/mountinfo")[1].splitlines()]


@pytest.fixture
def shared(tmp_path):
    """A host directory with a file, and a host file."""
    d = tmp_path / "shared"
    d.mkdir()
    (d / "f").write_text("hello from the host\n")
    f = tmp_path / "hosts"
    f.write_text("10.1.2.3 db\n")
    return d, f


def test_a_host_dir_and_file_show_inside_owned_by_nobody_unless_shifted(client, shared):
    d, f = shared
    c = client.containers.create("c1", "busybox", start=True, devices={
        "data": {"type": "disk", "source": str(d), "path": "/mnt/data"},
        "hosts": {"type": "disk", "source": str(f), "path": "/mnt2/hosts"},
        "shifted": {"type": "disk", "source": str(d), "path": "/srv/shifted", "shift": "true"}})
    code, out = sh(c, "cat /mnt/data/f /mnt2/hosts; stat -c '%u:%g' /mnt/data/f /srv/shifted/f")
    assert code == 0, out
    assert out.split("\n")[:4] == ["hello from the host", "10.1.2.3 db", "65534:65534", "0:0"]
    # written inside through the shifted mount: root's inside, the host's root on disk
    assert sh(c, "echo inside > /srv/shifted/new")[0] == 0
    st = os.stat(d / "new")
    assert (st.st_uid, st.st_gid) == (0, 0) and (d / "new").read_text() == "inside\n"
    # unshifted, container root is an unprivileged host uid: a root-owned 0644 file is closed
    assert sh(c, "echo x >> /mnt/data/f")[0] != 0
    assert (d / "f").read_text() == "hello from the host\n"


def test_readonly_is_enforced_and_cannot_be_remounted_writable(client, shared):
    d, f = shared
    c = client.containers.create("c1", "busybox", start=True, devices={
        "ro": {"type": "disk", "source": str(d), "path": "/ro", "readonly": "true",
               "shift": "true"}})
    code, out = sh(c, "echo x > /ro/f; mount -o remount,bind,rw /ro && echo REMOUNTED;"
                      " echo y > /ro/g && echo WROTE; true")
    assert "Read-only file system" in out and "REMOUNTED" not in out and "WROTE" not in out, out
    c.devices["live"] = {"type": "disk", "source": str(d), "path": "/live", "readonly": "true",
                         "shift": "true"}
    assert c.save() == []
    code, out = sh(c, "echo x > /live/f; mount -o remount,bind,rw /live && echo REMOUNTED;"
                      " echo y > /live/g && echo WROTE; true")
    assert "Read-only file system" in out and "REMOUNTED" not in out and "WROTE" not in out, out
    assert sorted(os.listdir(d)) == ["f"] and (d / "f").read_text() == "hello from the host\n"


def test_live_add_change_and_remove(client, shared):
    d, f = shared
    c = client.containers.create("c1", "busybox", start=True)
    pid = c.pid
    c.devices["hosts"] = {"type": "disk", "source": str(f), "path": "/mnt2/hosts"}
    assert c.save() == []
    assert sh(c, "cat /mnt2/hosts") == (0, "10.1.2.3 db\n")
    f.write_text("10.9.9.9 db\n")  # the same file: the host's change shows at once
    assert sh(c, "cat /mnt2/hosts") == (0, "10.9.9.9 db\n")
    c.devices["hosts"]["source"] = str(d / "f")  # a change is an unmount and a mount
    assert c.save() == []
    assert sh(c, "cat /mnt2/hosts") == (0, "hello from the host\n")
    del c.devices["hosts"]
    assert c.save() == []
    assert "/mnt2/hosts" not in mountinfo(c)
    assert sh(c, "cat /mnt2/hosts")[1] == ""  # the mount point made for it stays, empty
    assert c.refresh().pid == pid  # never restarted


def test_nested_disks_mount_shorter_paths_first(client, tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    (outer / "inner").mkdir(parents=True)  # the mount point, in the outer source (host-owned)
    inner.mkdir()
    (outer / "o").write_text("outer\n")
    (inner / "i").write_text("inner\n")
    # named so that the map's order would mount the inner one first (and hide it)
    c = client.containers.create("c1", "busybox", start=True, devices={
        "a-inner": {"type": "disk", "source": str(inner), "path": "/srv/data/inner"},
        "b-outer": {"type": "disk", "source": str(outer), "path": "/srv/data"}})
    assert sh(c, "cat /srv/data/o /srv/data/inner/i") == (0, "outer\ninner\n")
    points = mountinfo(c)
    assert points.index("/srv/data") < points.index("/srv/data/inner")
    assert os.listdir(outer / "inner") == []  # on the host, the mount point stays empty


def test_required(client, tmp_path, shared):
    d, _ = shared
    gone = str(tmp_path / "gone")
    c = client.containers.create("c1", "busybox", devices={
        "opt": {"type": "disk", "source": gone, "path": "/opt/x", "required": "false"},
        "data": {"type": "disk", "source": str(d), "path": "/data"}})
    c.start()
    (w,) = c.warnings
    assert "disk device 'opt'" in w and gone in w
    assert sh(c, "cat /data/f; ls /opt/x 2>&1")[1].startswith("hello from the host\n")
    assert "/opt/x" not in mountinfo(c)
    c.stop(force=True)
    c.devices["opt"]["required"] = "true"
    c.save()
    with pytest.raises(NotFound, match=r"disk device 'opt': its source .* does not exist"):
        c.start()
    assert c.refresh().status == "Stopped"


def test_rslave_sees_what_the_host_mounts_under_the_source_later(client, shared):
    d, _ = shared
    sub = d / "sub"
    sub.mkdir()
    # the source must be on a shared mount for anything to propagate (as in LXD)
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(d)], check=True)
        c = client.containers.create("c1", "busybox", start=True, devices={
            "slave": {"type": "disk", "source": str(d), "path": "/slave", "propagation": "rslave"},
            "private": {"type": "disk", "source": str(d), "path": "/private"}})
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(sub)], check=True)
        try:
            (sub / "late").write_text("mounted after the start\n")
            assert sh(c, "cat /slave/sub/late") == (0, "mounted after the start\n")
            assert sh(c, "ls /private/sub") == (0, "")
        finally:
            subprocess.run(["umount", str(sub)], check=True)
        c.stop(force=True)
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_a_privileged_container_gets_its_disks_too(client, shared):
    d, f = shared
    c = client.containers.create("p1", "busybox", start=True, config={"security.privileged": "true"},
                                 devices={"data": {"type": "disk", "source": str(d), "path": "/data",
                                                   "readonly": "true"}})
    assert sh(c, "stat -c %u /data/f; echo x > /data/f")[1].startswith("0\n")
    assert (d / "f").read_text() == "hello from the host\n"
    c.devices["hosts"] = {"type": "disk", "source": str(f), "path": "/etc/extra-hosts"}
    assert c.save() == []
    assert sh(c, "cat /etc/extra-hosts") == (0, "10.1.2.3 db\n")
    del c.devices["hosts"]
    assert c.save() == []
    assert "/etc/extra-hosts" not in mountinfo(c)


def test_through_the_cli(client, shared, tmp_path):
    """The issue's example: accepted, mounted at once, removed at once; a missing source
    with required=false starts with a warning."""
    d, f = shared

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, root=client.root)

    assert cli("launch", "busybox", "c1").returncode == 0
    res = cli("config", "device", "add", "c1", "hosts", "disk", f"source={f}",
               "path=/mnt2/hosts")
    assert res.returncode == 0 and "Restart" not in res.stderr, res.stderr
    assert cli("exec", "c1", "--", "cat", "/mnt2/hosts").stdout == "10.1.2.3 db\n"
    assert cli("config", "device", "remove", "c1", "hosts").returncode == 0
    assert cli("exec", "c1", "--", "cat", "/mnt2/hosts").stdout == ""
    res = cli("config", "device", "add", "c1", "data", "disk", f"source={d}",
               "path=/data", "readonly=maybe")
    assert res.returncode == 2 and "devices.data.readonly" in res.stderr
    assert cli("stop", "--force", "c1").returncode == 0
    assert cli("config", "device", "add", "c1", "opt", "disk",
                f"source={tmp_path}/gone", "path=/opt", "required=false").returncode == 0
    res = cli("start", "c1")
    assert res.returncode == 0 and "warning: container c1: disk device 'opt'" in res.stderr
