"""Unprivileged containers on a filesystem that cannot be idmapped: their files are shifted
(chowned) once to the container's host ids, the map is recorded, and it travels.

A ``dir`` pool on ramfs (no idmapped mounts on any kernel). Real containers, real chowns: root
inside owns its files while on disk they belong to the mapped host range; setuid bits survive;
a second start walks nothing; a new map (``security.idmap.isolated``) is a reshift;
snapshots, copies and backups keep ownership right inside; a symlink planted inside pointing
at a host file is never followed; an interrupted shift is finished by the next start;
``security.privileged`` runs on it (and shifts the files back); host paths on such a
filesystem are refused as disk devices of an unprivileged container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import sysmgr
from sysmgr._util import idshift as walker
from sysmgr.engine import idshift
from sysmgr.types import IdMap
from tests.conftest import requires_root
from tests.security.test_userns import BASE, host_uid, sh

pytestmark = requires_root

ISO = BASE + 65536          # the first isolated block (nothing else isolated in these roots)
DATA = "stat -c '%u %g %a' /bin/busybox /bin/suid /data/f"
INSIDE = "0 0 755\n0 0 4755\n1234 4321 2750"


@pytest.fixture
def client(busybox_client):
    return busybox_client


@pytest.fixture
def ramfs(tmp_path):
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0755", "ramfs", str(mnt)], check=True)
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def ram(client, ramfs):
    client.storage_pools.create("ram", "dir", {"source": os.path.join(ramfs, "pool")})
    yield "ram"
    for ct in client.containers.all():
        ct.delete(force=True)
    client.storage_pools.get("ram").delete()


def volume(client, name: str) -> str:
    rec = client.host.store.container(name)
    return client.host.pool_driver(rec.pool).container_path(name)


def volatile(client, name: str) -> dict:
    return client.host.store.container(name).volatile


def owner(path: str) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def shifted_container(client, pool: str, name: str = "c1", **config):
    """A container whose image brought a setuid-root program and a setgid data file (container
    ids on disk, as every image has them), started once."""
    c = client.containers.create(name, "busybox", pool=pool, config=config or None)
    root = volume(client, name)
    shutil.copy(os.path.join(root, "bin/busybox"), os.path.join(root, "bin/suid"))
    os.chmod(os.path.join(root, "bin/suid"), 0o4755)
    os.mkdir(os.path.join(root, "data"))
    with open(os.path.join(root, "data/f"), "w") as f:
        f.write("x")
    os.chown(os.path.join(root, "data/f"), 1234, 4321)
    os.chmod(os.path.join(root, "data/f"), 0o2750)
    c.start()
    return c


def test_a_container_on_ramfs_starts_unprivileged_and_a_second_start_walks_nothing(client, ram):
    c = shifted_container(client, ram)
    root = volume(client, "c1")
    assert c.status == "Running" and host_uid(c.pid) == BASE
    info = subprocess.run([sys.executable, "-m", "sysmgr", "--root", client.root, "info", "c1"],
                          capture_output=True, text=True, check=True).stdout
    assert f"Security: unprivileged (host ids {BASE}+65536, shifted)\n" in info, info
    code, out = sh(c, f"id -u; {DATA}; touch /made && stat -c '%u %g' /made")
    assert code == 0 and out.strip() == f"0\n{INSIDE}\n0 0", out
    assert owner(os.path.join(root, "bin/busybox")) == (BASE, BASE, 0o755)
    assert owner(os.path.join(root, "bin/suid")) == (BASE, BASE, 0o4755)       # setuid kept
    assert owner(os.path.join(root, "data/f")) == (BASE + 1234, BASE + 4321, 0o2750)
    assert owner(os.path.join(root, "made"))[:2] == (BASE, BASE)
    vol = volatile(client, "c1")
    assert vol[idshift.KEY] == f"{BASE}:65536" and idshift.SHIFTING not in vol
    c.stop(force=True)
    ctime = os.lstat(os.path.join(root, "data/f")).st_ctime_ns
    c.start()                                  # the record matches: no walk, no chown
    assert os.lstat(os.path.join(root, "data/f")).st_ctime_ns == ctime
    assert sh(c, DATA)[1].strip() == INSIDE


def test_a_new_map_reshifts_and_snapshots_keep_theirs(client, ram):
    c = shifted_container(client, ram)
    root = volume(client, "c1")
    c.stop(force=True)
    c.set_config({"security.idmap.isolated": "true"})
    c.start()
    assert host_uid(c.pid) == ISO and volatile(client, "c1")[idshift.KEY] == f"{ISO}:65536"
    assert owner(os.path.join(root, "data/f"))[:2] == (ISO + 1234, ISO + 4321)
    assert sh(c, DATA)[1].strip() == INSIDE
    c.stop(force=True)
    c.snapshots.create("iso")
    snap = client.host.store.conn.execute(
        "SELECT volatile FROM snapshots WHERE name='iso'").fetchone()[0]
    assert f"{ISO}:65536" in snap                         # the snapshot's record keeps its map
    c.set_config({}, unset=["security.idmap.isolated"])
    c.start()
    assert owner(os.path.join(root, "data/f"))[:2] == (BASE + 1234, BASE + 4321)
    c.stop(force=True)
    c.snapshots.get("iso").restore()                      # files and record of the ISO days
    assert volatile(client, "c1")[idshift.KEY] == f"{ISO}:65536"
    assert owner(os.path.join(root, "data/f"))[:2] == (ISO + 1234, ISO + 4321)
    c.start()
    assert sh(c.refresh(), DATA)[1].strip() == INSIDE


def test_copy_export_and_import_keep_ownership_right_inside(client, ram, tmp_path):
    c = shifted_container(client, ram)
    c.stop(force=True)
    c2 = c.copy("c2")                                     # same pool: its files stay shifted
    assert volatile(client, "c2")[idshift.KEY] == f"{BASE}:65536"
    backup = str(tmp_path / "c1.tar.zst")
    c.export(backup)
    c3 = client.containers.import_(backup, name="c3", pool=ram)
    c4 = client.containers.import_(backup, name="c4", pool="default")   # a pool that idmaps
    assert volatile(client, "c4")[idshift.KEY] == f"{BASE}:65536"
    for ct in (c2, c3, c4):
        ct.start()
        assert sh(ct, DATA)[1].strip() == INSIDE, ct.name
        ct.stop(force=True)
    # on the idmapping pool the first start shifted the files back to container ids
    assert owner(os.path.join(volume(client, "c4"), "data/f"))[:2] == (1234, 4321)
    assert idshift.KEY not in volatile(client, "c4")
    assert client.containers.get("c4").security.endswith("idmapped)")


def test_a_planted_symlink_to_a_host_file_is_not_followed(client, ram, tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("host")
    os.chown(host_file, 4242, 4242)
    (tmp_path / "host-dir").mkdir()
    os.chown(tmp_path / "host-dir", 4242, 4242)
    c = shifted_container(client, ram)
    assert sh(c, f"ln -s {host_file} /evil && ln -s {tmp_path}/host-dir /data/evildir && "
                 f"ln -s ../../../../../../../../{host_file} /data/evil2")[0] == 0
    c.stop(force=True)
    c.set_config({"security.idmap.isolated": "true"})
    c.start()                                             # a walk over the planted links
    for p in (host_file, tmp_path / "host-dir"):
        assert owner(str(p))[:2] == (4242, 4242)
    assert owner(os.path.join(volume(client, "c1"), "evil"))[:2] == (ISO, ISO)  # the link itself


def test_an_interrupted_shift_is_finished_by_the_next_start(client, ram):
    c = shifted_container(client, ram)
    c.stop(force=True)
    c.set_config({"security.idmap.isolated": "true"})
    root = volume(client, "c1")
    # what a sysmgr killed half-way through BASE -> ISO leaves: the record first, /data done
    vol = dict(volatile(client, "c1"))
    vol.update({idshift.KEY: f"{ISO}:65536", idshift.SHIFTING: f"{BASE}:65536"})
    with client.host.store.transaction():
        client.host.store.set_volatile("c1", vol)
    half = walker.translator(IdMap(BASE).mappings("uid"), IdMap(ISO).mappings("uid"))
    walker.shift_tree(os.path.join(root, "data"), half, half)
    c.start()
    assert idshift.SHIFTING not in volatile(client, "c1")
    assert owner(os.path.join(root, "data/f"))[:2] == (ISO + 1234, ISO + 4321)   # not twice
    assert owner(os.path.join(root, "bin/suid")) == (ISO, ISO, 0o4755)           # finished
    assert sh(c.refresh(), DATA)[1].strip() == INSIDE


def test_file_push_and_stat_use_container_ids_on_a_shifted_volume(client, ram):
    c = shifted_container(client, ram)
    root = volume(client, "c1")
    c.files.put("/root/running", b"r", uid=9, gid=10)
    c.stop(force=True)
    c.files.put("/root/stopped", b"s", uid=7, gid=8, mode=0o4750)
    assert owner(os.path.join(root, "root/stopped")) == (BASE + 7, BASE + 8, 0o4750)
    assert owner(os.path.join(root, "root/running"))[:2] == (BASE + 9, BASE + 10)
    st = c.files.stat("/root/stopped")
    assert (st.uid, st.gid, st.mode & 0o7777) == (7, 8, 0o4750)
    with pytest.raises(sysmgr.SysmgrError, match="outside the container's id map"):
        c.files.put("/root/far", b"x", uid=70000, gid=0)
    c.start()
    assert sh(c, "stat -c '%u %g' /root/stopped /root/running")[1].split() == ["7", "8", "9", "10"]
    st = c.files.stat("/data/f")
    assert (st.uid, st.gid) == (1234, 4321)


def test_privileged_runs_on_ramfs_and_switching_to_it_shifts_back(client, ram):
    p = client.containers.create("p", "busybox", pool=ram, config={"security.privileged": "true"},
                                 start=True)
    assert p.status == "Running" and host_uid(p.pid) == 0 and p.security == "privileged"
    c = shifted_container(client, ram)
    c.stop(force=True)
    c.set_config({"security.privileged": "true"})
    c.start()
    assert host_uid(c.pid) == 0
    assert owner(os.path.join(volume(client, "c1"), "data/f")) == (1234, 4321, 0o2750)
    assert idshift.KEY not in volatile(client, "c1")
    assert sh(c, DATA)[1].strip() == INSIDE


def test_a_host_path_on_ramfs_is_never_shifted_shift_is_refused_unless_privileged(client, ramfs,
                                                                                  tmp_path):
    """sysmgr never rewrites a host path's owners: bound as it is (nobody inside, as in
    LXD), or with shift=true idmapped, which ramfs cannot be: refused when the device is
    written (the source exists), and at start (it appeared since)."""
    ok = tmp_path / "on-ext4"
    ok.mkdir()
    with open(os.path.join(ramfs, "f"), "w") as f:
        f.write("x")
    devices = {"shared": {"type": "disk", "source": ramfs, "path": "/mnt/shared"},
               "fine": {"type": "disk", "source": str(ok), "path": "/mnt/fine", "shift": "true"}}
    c = client.containers.create("c1", "busybox", devices=devices, start=True)
    assert sh(c, "stat -c %u /mnt/shared/f /mnt/fine")[1].split() == ["65534", "0"]
    assert owner(os.path.join(ramfs, "f"))[:2] == (0, 0)  # not shifted
    c.devices["shared"]["shift"] = "true"
    with pytest.raises(sysmgr.SysmgrError, match=r"devices.shared.shift.*cannot be idmapped"):
        c.save()
    later = os.path.join(str(tmp_path), "later")
    c.stop(force=True)
    c.devices["shared"] = {"type": "disk", "source": later, "path": "/mnt/shared", "shift": "true"}
    c.save()
    os.symlink(ramfs, later)  # now there, on ramfs
    with pytest.raises(sysmgr.SysmgrError, match=r"disk device 'shared'.*cannot be idmapped"):
        c.start()
    assert c.refresh().status == "Stopped"
    p = client.containers.create("p", "busybox", devices=c.devices,
                                 config={"security.privileged": "true"}, start=True)
    assert p.status == "Running"


def test_raw_idmap_entries_that_remap_ids_are_shifted_through_the_parking_range(client, ram):
    """Host 5000 is container id 100 here, and container id 5000 is host BASE+5000: a walk
    killed half-way could not tell them apart, so the shift takes two legs."""
    c = client.containers.create("c1", "busybox", pool=ram, config={"raw.idmap": "both 5000 100"})
    root = volume(client, "c1")
    for name, ident in (("hundred", 100), ("five-thousand", 5000)):
        with open(os.path.join(root, name), "w") as f:
            f.write(name)
        os.chown(os.path.join(root, name), ident, ident)
    c.start()
    assert owner(os.path.join(root, "hundred"))[:2] == (5000, 5000)
    assert owner(os.path.join(root, "five-thousand"))[:2] == (BASE + 5000, BASE + 5000)
    assert volatile(client, "c1")[idshift.KEY] == f"{BASE}:65536;both 5000 100"
    assert sh(c, "stat -c '%u %g' /hundred /five-thousand")[1].split() == ["100", "100", "5000", "5000"]


def test_the_probe_asks_the_kernel_per_mounted_filesystem(tmp_path):
    """ext4 and tmpfs idmap on this kernel, ramfs does not; an answer is kept per mount, so a
    tmpfs mounted where a ramfs was (its device number may be reused) is asked anew."""
    from sysmgr.drivers.runtime.native import idprobe

    assert idprobe.can_idmap(str(tmp_path)) is True
    mnt = tmp_path / "m"
    mnt.mkdir()
    for fstype, want in (("ramfs", False), ("tmpfs", True), ("ramfs", False)):
        subprocess.run(["mount", "-t", fstype, fstype, str(mnt)], check=True)
        try:
            assert idprobe.can_idmap(str(mnt)) is want, fstype
            assert idprobe.can_idmap(str(mnt)) is want, fstype    # the kept answer
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    assert not [line for line in open("/proc/self/mountinfo") if str(tmp_path) in line]
