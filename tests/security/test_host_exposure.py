"""Row 10 of issue 9: a setuid-root file made inside a container or shipped in an image, and
a 0666 block device node shipped in an image, must be of no use to an unprivileged host user.

Each attack runs for real: a container on a real dir pool and on a real btrfs loop pool, the
attempt made as uid 65534 on the host against the real paths (with the paths above the root
opened to host users, and that checked, so what stops the attempt is sysmgr). Two layers are
asserted separately: the 0700 directories (no host user reaches a volume by path, any pool),
and on the btrfs loop pool also ``nosuid,nodev`` on the host mount (even a handle to the
file, passed out by someone inside, gives neither setuid nor the device). Inside the
container setuid must still work: the runtime's own bind of the root clears those flags.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess

import pytest

from tests.conftest import requires_root, run_cli
from tests.security.helpers import (
    as_nobody, assert_reaches_root, block_device, btrfs_ok, init_args, ok, probe, traversable,
    via_fd)

pytestmark = requires_root
__all__ = ["probe"]  # the fixture, imported so that pytest finds it here

INIT = init_args()
POOLS = ["dir", pytest.param("btrfs", marks=pytest.mark.skipif(
    not btrfs_ok(), reason="btrfs-progs or the btrfsutil binding missing"))]


class Root:
    """An initialised root (busybox image) whose containers go on pool ``pool``."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.pool = "bt" if kind == "btrfs" else "default"

    @property
    def pool_root(self) -> str:
        base = os.path.join(self.path, "storage-pools", self.pool)
        return os.path.join(base, "mnt") if self.kind == "btrfs" else base

    def container(self, name: str) -> str:
        if self.kind == "btrfs":
            return os.path.join(self.pool_root, "containers", name)
        return os.path.join(self.pool_root, "containers", name, "rootfs")

    def image(self, fp: str) -> str:
        return os.path.join(self.pool_root, "images", fp)


@pytest.fixture(params=POOLS)
def root(request, sysmgr_root: str):
    kind = request.param
    ok(*INIT, root=sysmgr_root)
    ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    if kind == "btrfs":
        ok("storage", "create", "bt", "btrfs", "size=1GiB", root=sysmgr_root)
    r = Root(sysmgr_root, kind)
    try:
        with traversable(sysmgr_root):
            assert_reaches_root(sysmgr_root)
            yield r
    finally:
        delete_all(sysmgr_root)
        if kind == "btrfs":
            run_cli("storage", "delete", "bt", root=sysmgr_root)


def names(r: str) -> list[str]:
    return [c["name"] for c in json.loads(ok("list", "--format", "json", root=r))]


def delete_all(r: str) -> None:
    for n in names(r):
        run_cli("delete", "--force", n, root=r)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _no_root_euid(res: subprocess.CompletedProcess) -> None:
    assert "euid=0" not in res.stdout, f"a host user got euid 0: {res.stdout} {res.stderr}"


def _image_tarball(tmp_path, busybox_rootfs: str, probe: str, name: str = "evil") -> str:
    """A plain rootfs tarball: busybox, a setuid-root probe, a 0666 node of a host disk."""
    tree = tmp_path / f"{name}-tree"
    subprocess.run(["cp", "-a", busybox_rootfs, str(tree)], check=True)
    subprocess.run(["cp", probe, str(tree / "bin" / "probe")], check=True)
    os.chown(tree / "bin" / "probe", 0, 0)
    os.chmod(tree / "bin" / "probe", 0o4755)
    major, minor = block_device()
    os.makedirs(tree / "dev", exist_ok=True)
    os.mknod(tree / "dev" / "hostdisk", stat.S_IFBLK | 0o666, os.makedev(major, minor))
    os.chmod(tree / "dev" / "hostdisk", 0o666)
    out = str(tmp_path / f"{name}.tar")
    subprocess.run(["tar", "--numeric-owner", "-cf", out, "-C", str(tree), "."], check=True)
    return out


# -- a setuid file made inside a container ---------------------------------------------------

def test_setuid_made_inside_a_container(root: Root, probe: str):
    r = root.path
    ok("launch", "busybox", "c1", "-s", root.pool, root=r)
    ok("file", "push", probe, "c1/usr/bin/probe", "--mode", "0755", root=r)
    ok("exec", "c1", "--", "chmod", "4755", "/usr/bin/probe", root=r)
    # inside, setuid still works: an unprivileged process inside runs it and gets euid 0
    inside = ok("exec", "c1", "--", "/usr/bin/probe", "drop", "/usr/bin/probe", root=r)
    assert inside.strip() == "euid=0"
    host_path = os.path.join(root.container("c1"), "usr/bin/probe")
    assert _mode(host_path) == 0o4755 and os.lstat(host_path).st_uid == 0
    # on the host, uid 65534 cannot even reach it
    res = as_nobody(host_path)
    _no_root_euid(res)
    assert res.returncode != 0 and "Permission denied" in res.stderr
    if root.kind == "btrfs":
        # with a handle to it, setuid is still inert: the pool is mounted nosuid on the host
        res = via_fd(host_path, "{fd}")
        assert res.stdout.strip() == "euid=65534", res.stderr


def test_setuid_made_inside_a_custom_volume(root: Root, probe: str):
    """A custom volume keeps container ids on disk (uid 0 for root inside), like a root
    filesystem: a setuid-root program made in it is a host setuid-root file, which no host
    user may reach (0700 ``custom/``) nor, on a loop pool, run through a handle (nosuid)."""
    r = root.path
    ok("storage", "volume", "create", root.pool, "vol", root=r)
    ok("launch", "busybox", "c1", root=r)
    ok("storage", "volume", "attach", root.pool, "vol", "c1", "/data", root=r)
    ok("file", "push", probe, "c1/data/probe", "--mode", "0755", root=r)
    ok("exec", "c1", "--", "chmod", "4755", "/data/probe", root=r)
    base = os.path.join(root.pool_root, "custom", "vol")
    host_path = os.path.join(base, "probe") if root.kind == "btrfs" else \
        os.path.join(base, "rootfs", "probe")
    assert _mode(host_path) == 0o4755 and os.lstat(host_path).st_uid == 0
    assert _mode(os.path.join(root.pool_root, "custom")) == 0o700
    res = as_nobody(host_path)
    _no_root_euid(res)
    assert res.returncode != 0 and "Permission denied" in res.stderr
    if root.kind == "btrfs":
        assert via_fd(host_path, "{fd}").stdout.strip() == "euid=65534"
    delete_all(r)
    ok("storage", "volume", "delete", root.pool, "vol", root=r)


# -- a setuid file and a device node shipped in an image ---------------------------------------

def test_setuid_and_device_shipped_in_an_image(root: Root, probe: str, busybox_rootfs: str,
                                               tmp_path):
    r = root.path
    tarball = _image_tarball(tmp_path, busybox_rootfs, probe)
    # kept on purpose (the default drops the node: see test_image_import_drops_devices)
    res = run_cli("image", "import", tarball, "--alias", "evil", "-s", root.pool,
                  "--allow-devices", root=r, check=True)
    fp = re.search(r"fingerprint: (\w+)", res.stdout).group(1)
    ok("create", "evil", "c2", "-s", root.pool, root=r)
    for tree in (root.image(fp), root.container("c2")):
        suid, node = os.path.join(tree, "bin/probe"), os.path.join(tree, "dev/hostdisk")
        assert _mode(suid) == 0o4755 and stat.S_ISBLK(os.lstat(node).st_mode)
        if root.kind == "dir":  # the control: root opens the node (it is a live device)
            with open(node, "rb"):
                pass
        else:  # on the host's nodev mount not even root can
            with pytest.raises(PermissionError):
                open(node, "rb")
        res = as_nobody(suid)
        _no_root_euid(res)
        assert res.returncode != 0 and "Permission denied" in res.stderr
        res = as_nobody(probe, "open", node)
        assert res.stdout.strip() == "open=EACCES", res.stdout + res.stderr
        if root.kind == "btrfs":  # handles are no better: nosuid,nodev on the host mount
            assert via_fd(suid, "{fd}").stdout.strip() == "euid=65534"
            assert via_fd(node, probe, "open", "{fd}").stdout.strip() == "open=EACCES"


# -- the directories and mount flags themselves -------------------------------------------------

def test_modes_and_mount_flags_and_existing_roots_tightened(root: Root):
    r = root.path
    ok("create", "busybox", "c3", "-s", root.pool, root=r)
    ok("snapshot", "create", "c3", "s0", root=r)
    private = [os.path.join(r, d) for d in ("images", "containers", "storage-pools", "tmp")]
    private += [os.path.join(root.pool_root, d) for d in ("images", "containers", "snapshots")]
    for d in private + [os.path.join(root.pool_root, "snapshots", "c3")]:
        assert _mode(d) == 0o700, d
    db = os.path.join(r, "sysmgr.db")  # every container's config, environment.* included
    assert _mode(db) == 0o600
    os.chmod(db, 0o644)   # as older versions left it
    ok("list", root=r)
    assert _mode(db) == 0o600
    if root.kind == "btrfs":
        assert {"nosuid", "nodev"} <= _mount_flags(root.pool_root)
    # a root made by an older version (0711 everywhere, pool mounted without the flags)
    for d in private:
        os.chmod(d, 0o711)
    if root.kind == "btrfs":
        subprocess.run(["mount", "-o", "remount,suid,dev", root.pool_root], check=True)
        assert not {"nosuid", "nodev"} & _mount_flags(root.pool_root)
    ok(*INIT, root=r)  # what runs at boot
    for d in private:
        assert _mode(d) == 0o700, d
    if root.kind == "btrfs":
        assert {"nosuid", "nodev"} <= _mount_flags(root.pool_root)


def _mount_flags(path: str) -> set[str]:
    found: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                found = set(fields[5].split(","))
    return found


# -- device nodes dropped on import -------------------------------------------------------------

def _image_files(r: str, fp: str) -> str:
    return os.path.join(r, "storage-pools", "default", "images", fp)


@pytest.mark.parametrize("form", ["tarball", "directory"])
def test_image_import_drops_devices(sysmgr_root: str, busybox_rootfs: str, probe: str,
                                    tmp_path, form: str):
    r = sysmgr_root
    ok(*INIT, root=r)
    src = _image_tarball(tmp_path, busybox_rootfs, probe)
    if form == "directory":
        src = str(tmp_path / "evil-tree")
    res = run_cli("image", "import", src, "--alias", "evil", root=r, check=True)
    assert re.search(r"warning: image .*: dropped 1 device node\(s\): /dev/hostdisk", res.stderr), \
        res.stderr
    fp = re.search(r"fingerprint: (\w+)", res.stdout).group(1)
    assert not os.path.lexists(os.path.join(_image_files(r, fp), "dev/hostdisk"))
    assert _mode(os.path.join(_image_files(r, fp), "bin/probe")) == 0o4755  # the rest is intact
    ok("image", "delete", "evil", root=r)
    # --allow-devices keeps it, and still says so
    res = run_cli("image", "import", src, "--alias", "evil", "--allow-devices", root=r, check=True)
    assert "kept (--allow-devices) 1 device node(s): /dev/hostdisk" in res.stderr
    assert stat.S_ISBLK(os.lstat(os.path.join(_image_files(r, fp), "dev/hostdisk")).st_mode)
    ok("image", "delete", "evil", root=r)
    # the Python API: the flag, the warn callback and Image.warnings
    import sysmgr

    said: list[str] = []
    with sysmgr.Client(root=r) as client:
        img = client.images.import_(src, alias="evil", warn=said.append)
        assert said == list(img.warnings) and "/dev/hostdisk" in said[0] and "dropped" in said[0]
        assert not os.path.lexists(os.path.join(_image_files(r, fp), "dev/hostdisk"))
        img.delete()
        img = client.images.import_(src, alias="evil", allow_devices=True)
        assert "kept" in img.warnings[0]
        assert os.path.lexists(os.path.join(_image_files(r, fp), "dev/hostdisk"))
        # an image without nodes says nothing
        assert client.images.get("evil").warnings == ()


def test_backup_import_drops_devices(sysmgr_root: str, tmp_path):
    r = sysmgr_root
    ok(*INIT, root=r)
    ok("image", "build", "busybox", "--alias", "busybox", root=r)
    try:
        ok("create", "busybox", "b1", root=r)
        rootfs = os.path.join(r, "storage-pools", "default", "containers", "{}", "rootfs")
        major, minor = block_device()
        node = os.path.join(rootfs.format("b1"), "srv", "hostdisk")
        os.makedirs(os.path.dirname(node), exist_ok=True)
        os.mknod(node, stat.S_IFBLK | 0o666, os.makedev(major, minor))
        ok("snapshot", "create", "b1", "s0", root=r)
        backup = str(tmp_path / "b1.tar.zst")
        ok("export", "b1", backup, root=r)
        res = run_cli("import", backup, "b2", "-q", root=r, check=True)
        assert "warning: backup" in res.stderr and "dropped 1 device node(s): /srv/hostdisk" \
            in res.stderr, res.stderr
        assert not os.path.lexists(os.path.join(rootfs.format("b2"), "srv/hostdisk"))
        snap = os.path.join(r, "storage-pools", "default", "snapshots", "b2", "s0")
        assert os.path.isdir(os.path.join(snap, "srv")) and \
            not os.path.lexists(os.path.join(snap, "srv/hostdisk"))
        res = run_cli("import", backup, "b3", "-q", "--allow-devices", root=r, check=True)
        assert "kept (--allow-devices) 1 device node(s): /srv/hostdisk" in res.stderr
        assert stat.S_ISBLK(os.lstat(os.path.join(rootfs.format("b3"), "srv/hostdisk")).st_mode)
        import sysmgr

        with sysmgr.Client(root=r) as client:
            c = client.containers.import_(backup, name="b4")
            assert len(c.warnings) == 1 and "/srv/hostdisk" in c.warnings[0]
            assert not os.path.lexists(os.path.join(rootfs.format("b4"), "srv/hostdisk"))
            c = client.containers.import_(backup, name="b5", allow_devices=True)
            assert os.path.lexists(os.path.join(rootfs.format("b5"), "srv/hostdisk"))
    finally:
        delete_all(r)


@pytest.mark.skipif(not btrfs_ok(), reason="btrfs-progs or the btrfsutil binding missing")
def test_optimized_backup_devices(sysmgr_root: str, tmp_path):
    """btrfs streams: nodes in the container's state are dropped after the receive; a node
    in a (read-only, incremental base) snapshot makes the import refuse, unless allowed."""
    r = sysmgr_root
    ok(*INIT, root=r)
    ok("image", "build", "busybox", "--alias", "busybox", root=r)
    ok("storage", "create", "bt", "btrfs", "size=1GiB", root=r)
    try:
        ok("create", "busybox", "o1", "-s", "bt", root=r)
        vol = os.path.join(r, "storage-pools", "bt", "mnt", "containers", "{}")
        major, minor = block_device()
        os.mknod(os.path.join(vol.format("o1"), "srv-hostdisk"), stat.S_IFBLK | 0o666,
                 os.makedev(major, minor))
        plain = str(tmp_path / "o1.tar.zst")
        ok("export", "o1", plain, "--optimized", root=r)
        res = run_cli("import", plain, "o2", "-q", "-s", "bt", root=r, check=True)
        assert "dropped 1 device node(s): /srv-hostdisk" in res.stderr, res.stderr
        assert not os.path.lexists(os.path.join(vol.format("o2"), "srv-hostdisk"))
        ok("snapshot", "create", "o1", "s0", root=r)
        snapped = str(tmp_path / "o1-snap.tar.zst")
        ok("export", "o1", snapped, "--optimized", root=r)
        res = run_cli("import", snapped, "o3", "-q", "-s", "bt", root=r)
        assert res.returncode == 2 and "/srv-hostdisk" in res.stderr and "--allow-devices" \
            in res.stderr, res.stderr
        assert "o3" not in names(r)
        res = run_cli("import", snapped, "o3", "-q", "-s", "bt", "--allow-devices", root=r,
                      check=True)
        assert "kept" in res.stderr
        assert os.path.lexists(os.path.join(vol.format("o3"), "srv-hostdisk"))
    finally:
        delete_all(r)
        run_cli("storage", "delete", "bt", root=r)
