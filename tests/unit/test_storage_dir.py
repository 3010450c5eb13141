"""Storage pool contract, run against the ``dir`` and ``fake`` drivers, plus dir-only cases
(real copies, disk full on a small tmpfs, mounts under a volume, user-owned source dirs)."""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from sysmgr.drivers import registry
from sysmgr.drivers.images.unpack import fingerprint_tree
from sysmgr.drivers.storage.base import PoolUsage, StoragePool
from sysmgr.drivers.storage.dir import DirPool, MARKER, temp_name
from sysmgr.errors import AlreadyExists, Conflict, DriverError, NotFound, ValidationError

FP = "a" * 64
DRIVERS = ["dir", "fake"]


def make_pool(driver: str, root: str, config: dict | None = None, name: str = "p1") -> StoragePool:
    cls = registry.load("storage", driver)
    return cls(name, config or {}, os.path.join(root, "storage-pools", name))


@pytest.fixture(params=DRIVERS)
def pool(request, sysmgr_root) -> StoragePool:
    p = make_pool(request.param, sysmgr_root)
    p.create()
    return p


def fill_image(path: str) -> None:
    os.makedirs(os.path.join(path, "etc"))
    os.makedirs(os.path.join(path, "sbin"))
    with open(os.path.join(path, "etc", "hostname"), "w") as f:
        f.write("img\n")
    with open(os.path.join(path, "sbin", "init"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(path, "sbin", "init"), 0o755)


def add_image(pool: StoragePool, fp: str = FP) -> str:
    with pool.create_image(fp) as staging:
        fill_image(staging)
    return pool.image_path(fp)


def leftovers(pool: StoragePool) -> list[str]:
    return sorted(n for n in os.listdir(pool.path) if n.startswith("."))  # type: ignore[attr-defined]


# -- contract --------------------------------------------------------------------------------

def test_create_is_idempotent_and_mount_works(pool):
    pool.create()
    pool.mount()
    u = pool.usage()
    assert isinstance(u, PoolUsage) and u.total_bytes and u.used_bytes is not None


def test_create_image(pool):
    assert not pool.has_image(FP)
    path = add_image(pool)
    assert pool.has_image(FP)
    assert os.path.isfile(os.path.join(path, "etc", "hostname"))
    assert pool.list_images() == [FP]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o755)  # becomes the rootfs' /
    with pytest.raises(AlreadyExists):
        with pool.create_image(FP):
            pass


def test_failure_inside_create_image_leaves_nothing(pool):
    seen = {}
    with pytest.raises(RuntimeError):
        with pool.create_image(FP) as staging:
            fill_image(staging)
            seen["staging"] = staging
            raise RuntimeError("builder failed")
    assert not pool.has_image(FP)
    assert not os.path.exists(seen["staging"])
    assert pool.list_images() == []
    assert [n for n in leftovers(pool) if n != MARKER] == []


def test_container_lifecycle(pool):
    add_image(pool)
    path = pool.create_container("c1", FP)
    assert path == pool.container_path("c1")
    assert path.endswith(os.path.join("containers", "c1", "rootfs"))
    assert os.path.isfile(os.path.join(path, "sbin", "init"))
    assert pool.has_container("c1") and pool.list_containers() == ["c1"]
    assert pool.container_usage("c1") >= 0
    with pytest.raises(AlreadyExists):
        pool.create_container("c1", FP)
    with pytest.raises(NotFound):
        pool.create_container("c2", "b" * 64)
    assert not pool.has_container("c2")

    new = pool.rename_container("c1", "c3")
    assert new == pool.container_path("c3") and os.path.isdir(new)
    assert not pool.has_container("c1") and pool.has_container("c3")
    pool.create_container("c1", FP)
    with pytest.raises(AlreadyExists):
        pool.rename_container("c1", "c3")
    with pytest.raises(NotFound):
        pool.rename_container("nope", "c4")

    pool.delete_container("c3")
    assert not pool.has_container("c3")
    pool.delete_container("c3")  # already gone: success
    with pytest.raises(NotFound):
        pool.container_usage("c3")
    assert pool.list_containers() == ["c1"]


def test_delete_image_is_idempotent(pool):
    add_image(pool)
    pool.delete_image(FP)
    pool.delete_image(FP)
    assert not pool.has_image(FP)


def test_delete_pool(pool):
    add_image(pool)
    pool.create_container("c1", FP)
    with pytest.raises(Conflict):
        pool.delete()
    pool.delete_container("c1")
    pool.delete()
    assert not os.path.exists(pool.path)  # type: ignore[attr-defined]
    pool.delete()  # already gone: success


@pytest.mark.parametrize("bad", ["../x", "a/b", ".staging-x", "", "-x", "x" * 200])
def test_bad_names_rejected(pool, bad):
    with pytest.raises(ValidationError):
        pool.create_container(bad, FP)
    with pytest.raises(ValidationError):
        pool.has_image(bad)


@pytest.mark.parametrize("driver", DRIVERS)
def test_config_validation(driver, sysmgr_root):
    with pytest.raises(ValidationError, match="unknown config key"):
        make_pool(driver, sysmgr_root, {"size": "1GiB"})
    with pytest.raises(ValidationError, match="absolute"):
        make_pool(driver, sysmgr_root, {"source": "relative/dir"})
    make_pool(driver, sysmgr_root, {"user.note": "free-form"})


@pytest.mark.parametrize("driver", DRIVERS)
def test_operations_on_missing_pool(driver, sysmgr_root):
    p = make_pool(driver, sysmgr_root)
    with pytest.raises(NotFound):
        p.create_container("c1", FP)
    assert not p.has_container("c1") and p.list_containers() == []


def test_fake_injected_failure(sysmgr_root):
    p = make_pool("fake", sysmgr_root, {"fail": "create_container"})
    p.create()
    add_image(p)
    with pytest.raises(DriverError, match="injected"):
        p.create_container("c1", FP)
    assert not p.has_container("c1")


# -- dir only --------------------------------------------------------------------------------

@pytest.fixture
def dpool(sysmgr_root) -> DirPool:
    p = make_pool("dir", sysmgr_root)
    p.create()
    return p  # type: ignore[return-value]


def test_dir_copy_preserves_everything(dpool):
    with dpool.create_image(FP) as staging:
        fill_image(staging)
        os.symlink("/etc/hostname", os.path.join(staging, "abs-link"))
        os.link(os.path.join(staging, "etc", "hostname"), os.path.join(staging, "hard"))
        os.mkdir(os.path.join(staging, "home"))
        os.chown(os.path.join(staging, "home"), 1000, 1000)
        os.chmod(os.path.join(staging, "sbin", "init"), 0o4755)
        os.setxattr(os.path.join(staging, "sbin", "init"), "user.cap", b"x")
    path = dpool.create_container("c1", FP)
    assert fingerprint_tree(path) == fingerprint_tree(dpool.image_path(FP))
    assert os.stat(os.path.join(path, "hard")).st_ino == os.stat(os.path.join(path, "etc", "hostname")).st_ino
    # the copy is independent of the image
    with open(os.path.join(path, "etc", "hostname"), "w") as f:
        f.write("changed\n")
    with open(os.path.join(dpool.image_path(FP), "etc", "hostname")) as f:
        assert f.read() == "img\n"


def test_dir_container_usage_counts_hardlinks_once(dpool):
    with dpool.create_image(FP) as staging:
        fill_image(staging)
        with open(os.path.join(staging, "big"), "wb") as f:
            f.write(os.urandom(1 << 20))
        os.link(os.path.join(staging, "big"), os.path.join(staging, "big2"))
    dpool.create_container("c1", FP)
    used = dpool.container_usage("c1")
    assert (1 << 20) <= used < (1 << 20) + (256 << 10)


@contextlib.contextmanager
def small_tmpfs(path: str, size: str):
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)


def test_dir_disk_full_leaves_nothing(sysmgr_root):
    with small_tmpfs(os.path.join(sysmgr_root, "small"), "2m") as mnt:
        p = DirPool("small", {"source": os.path.join(mnt, "pool")}, "/unused")
        p.create()
        with p.create_image(FP) as staging:
            fill_image(staging)
            with open(os.path.join(staging, "blob"), "wb") as f:
                f.write(os.urandom(1200 << 10))
        with pytest.raises(DriverError, match="No space left on device"):
            p.create_container("c1", FP)
        assert not p.has_container("c1")
        assert os.listdir(p.containers_dir) == []
        assert leftovers(p) == [MARKER]
        p.delete_image(FP)
        p.delete()


def test_dir_delete_refuses_mounts_and_never_follows_symlinks(dpool, sysmgr_root):
    add_image(dpool)
    path = dpool.create_container("c1", FP)
    outside = os.path.join(sysmgr_root, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "keep"), "w") as f:
        f.write("precious")
    os.symlink(outside, os.path.join(path, "link-out"))
    os.symlink("../../../../../../../../" + outside.lstrip("/"), os.path.join(path, "rel-out"))
    mnt = os.path.join(path, "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", "--bind", outside, mnt], check=True)
    try:
        with pytest.raises(Conflict, match="mounted"):
            dpool.delete_container("c1")
        with pytest.raises(Conflict):
            dpool.rename_container("c1", "c2")
    finally:
        subprocess.run(["umount", mnt], check=True)
    # unwritable and unreadable directories are no obstacle
    os.makedirs(os.path.join(path, "ro", "inner"))
    open(os.path.join(path, "ro", "inner", "f"), "w").close()
    os.chmod(os.path.join(path, "ro", "inner"), 0o000)
    os.chmod(os.path.join(path, "ro"), 0o555)
    dpool.delete_container("c1")
    assert not dpool.has_container("c1")
    assert os.listdir(outside) == ["keep"]
    assert leftovers(dpool) == [MARKER]


def test_dir_stale_staging_removed_on_mount(dpool):
    # a dead process's staging dir (pid beyond pid_max never runs) and a live one (ours)
    dead = os.path.join(dpool.path, f".staging-{FP}-99999999-deadbeef")
    os.makedirs(os.path.join(dead, "etc"))
    grave = os.path.join(dpool.path, ".deleting-c9-99999999-0badf00d")
    os.makedirs(grave)
    live = temp_name(dpool.path, ".staging-", "busy")
    os.mkdir(live)
    dpool.mount()
    assert not os.path.exists(dead) and not os.path.exists(grave)
    assert os.path.isdir(live)
    os.rmdir(live)


def test_dir_user_source_dir(sysmgr_root):
    src = os.path.join(sysmgr_root, "user-dir")
    os.makedirs(os.path.join(src, "lost+found"))
    p = DirPool("u", {"source": src}, "/unused")
    p.create()
    p.create()
    add_image(p)
    with open(os.path.join(src, "user-notes.txt"), "w") as f:
        f.write("mine")
    p.delete()
    # sysmgr's parts are gone; the user's directory and files stay
    assert sorted(os.listdir(src)) == ["lost+found", "user-notes.txt"]

    busy = os.path.join(sysmgr_root, "busy-dir")
    os.makedirs(busy)
    open(os.path.join(busy, "data"), "w").close()
    with pytest.raises(Conflict, match="not empty"):
        DirPool("b", {"source": busy}, "/unused").create()
    assert os.listdir(busy) == ["data"]

    afile = os.path.join(sysmgr_root, "a-file")
    open(afile, "w").close()
    with pytest.raises(ValidationError, match="not a directory"):
        DirPool("f", {"source": afile}, "/unused").create()


def test_dir_mount_of_missing_pool_fails(sysmgr_root):
    p = make_pool("dir", sysmgr_root)
    with pytest.raises(DriverError, match="missing"):
        p.mount()
