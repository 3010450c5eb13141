"""The storage pool contract: one suite, run against every registered real pool driver.

Each driver gets a pool on the real kernel (``dir`` on a temporary directory, ``btrfs`` on a
512 MiB loop file the pool creates); the tests check the interface's semantics and branch on
``info`` capability flags, never on the driver's name. Only pool *setup* is per driver (how
to make a normal and a small pool), in ``SETUPS``; a registered driver without an entry there
fails ``test_every_real_driver_has_a_setup``. A driver the host cannot run (btrfs-progs or
the btrfsutil binding missing: ``check_host``) is skipped. The autouse leak check in
``tests/conftest.py`` fails any test that leaves a mount or loop device behind.

A short btrfs section at the end covers what only that driver has: the ``source`` check and
pools on an existing btrfs directory.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import subprocess
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

import pytest

from sysmgr.drivers import registry
from sysmgr.drivers.images.unpack import fingerprint_tree
from sysmgr.drivers.storage.base import PoolUsage, StoragePool
from sysmgr.drivers.storage.dir import mounts_under
from sysmgr.errors import (
    AlreadyExists,
    Conflict,
    DriverError,
    DriverUnavailable,
    NotFound,
    ValidationError,
)
from tests.conftest import requires_root

pytestmark = requires_root

FP = "f" * 64
MiB = 1 << 20


# -- per-driver setup (the only per-driver code) --------------------------------------------

@contextlib.contextmanager
def _small_tmpfs(tmp: str) -> Iterator[dict[str, str]]:
    """A dir pool on a 48 MiB tmpfs (the only way to fill a dir pool without filling /)."""
    mnt = os.path.join(tmp, "small-fs")
    os.makedirs(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], check=True)
    try:
        yield {"source": os.path.join(mnt, "pool")}
    finally:
        subprocess.run(["umount", "-l", mnt], check=True)


@contextlib.contextmanager
def _small_loop(tmp: str) -> Iterator[dict[str, str]]:
    yield {"size": "128MiB"}


@dataclass(frozen=True)
class Setup:
    config: Callable[[], dict[str, str]]                         # a normal pool
    small: Callable[[str], ContextManager[dict[str, str]]]       # a pool that fills up fast


SETUPS: dict[str, Setup] = {
    "dir": Setup(config=dict, small=_small_tmpfs),
    "btrfs": Setup(config=lambda: {"size": "512MiB"}, small=_small_loop),
}
REAL_DRIVERS = sorted(SETUPS)


def make_pool(driver: str, root: str, name: str = "p1", config: dict[str, str] | None = None
              ) -> StoragePool:
    cls = registry.load("storage", driver)
    try:
        cls.check_host()
    except DriverUnavailable as e:
        pytest.skip(f"{driver}: {e.message} ({e.hint})")
    cfg = SETUPS[driver].config() if config is None else config
    return cls(name, cfg, os.path.join(root, "storage-pools", name))


def teardown(pool: StoragePool) -> None:
    """Delete everything, so a failing test still releases mounts and loop devices."""
    with contextlib.suppress(NotFound):
        for c in pool.list_containers():
            pool.delete_container(c)
    pool.delete()


@contextlib.contextmanager
def created(driver: str, root: str, name: str = "p1", config: dict[str, str] | None = None
            ) -> Iterator[StoragePool]:
    p = make_pool(driver, root, name, config)
    p.create()
    try:
        yield p
    finally:
        teardown(p)


@pytest.fixture(params=REAL_DRIVERS)
def driver(request) -> str:
    return request.param


@pytest.fixture
def pool(driver, sysmgr_root) -> Iterator[StoragePool]:
    with created(driver, sysmgr_root) as p:
        yield p


# -- content helpers -------------------------------------------------------------------------

def write(path: str, data: bytes | str) -> None:
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def fill_image(root: str) -> None:
    """A small root filesystem with every kind of entry a real one has."""
    for d in ("etc", "sbin", "home/user", "dev", "var/empty"):
        os.makedirs(os.path.join(root, d))
    write(os.path.join(root, "etc", "hostname"), "img\n")
    write(os.path.join(root, "sbin", "init"), "#!/bin/sh\n")
    os.chmod(os.path.join(root, "sbin", "init"), 0o4755)  # setuid survives copies/streams
    os.setxattr(os.path.join(root, "sbin", "init"), "user.note", b"kept")
    os.link(os.path.join(root, "etc", "hostname"), os.path.join(root, "etc", "hostname.hard"))
    os.symlink("/etc/hostname", os.path.join(root, "abs-link"))
    os.symlink("../../etc", os.path.join(root, "home", "user", "rel-link"))
    os.chown(os.path.join(root, "home", "user"), 1000, 1000)
    os.mknod(os.path.join(root, "dev", "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(os.path.join(root, "dev", "fifo"))
    write(os.path.join(root, "blob"), os.urandom(256 << 10))


def add_image(pool: StoragePool, fp: str = FP) -> str:
    with pool.create_image(fp) as staging:
        fill_image(staging)
    return pool.image_path(fp)


def write_until(path: str, size: int) -> int | None:
    """Write ``size`` bytes to ``path`` in 1 MiB chunks (synced); return the errno that
    stopped it, or None."""
    chunk = os.urandom(MiB)
    try:
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.errno
    return None


def tree(path: str) -> str:
    return fingerprint_tree(path)


# -- the contract ------------------------------------------------------------------------------

def test_every_real_driver_has_a_setup():
    assert sorted(n for n in registry.names("storage") if n != "fake") == REAL_DRIVERS


def test_info_flags_are_consistent(driver):
    info = registry.load("storage", driver).info
    assert not info.incremental_send or info.send_receive
    assert not info.send_receive or (info.snapshots and info.stream_format)
    assert not info.cow_snapshots or info.snapshots


def test_pool_create_mount_delete(driver, sysmgr_root):
    p = make_pool(driver, sysmgr_root)
    home = os.path.join(sysmgr_root, "storage-pools", "p1")
    p.create()
    try:
        p.create()  # idempotent
        p.mount()
        p.mount()
        u = p.usage()
        assert isinstance(u, PoolUsage) and u.total_bytes and u.used_bytes is not None
        add_image(p)
        path = p.create_container("c1", FP)
        write(os.path.join(path, "mine"), "data")
        if p.info.snapshots:
            p.create_snapshot("c1", "s1")

        # a host restart: whatever the pool had mounted is gone; mount() brings it back
        for m in sorted(mounts_under(home), key=len, reverse=True):
            subprocess.run(["umount", m], check=True)
        p.mount()
        p.mount()
        assert p.has_image(FP) and p.list_containers() == ["c1"]
        assert read(os.path.join(p.container_path("c1"), "mine")) == "data"
        if p.info.snapshots:
            assert p.list_snapshots("c1") == ["s1"]

        with pytest.raises(Conflict):
            p.delete()
        assert p.has_container("c1")
        p.delete_container("c1")
    except BaseException:
        teardown(p)
        raise
    p.delete()
    assert not os.path.exists(home)  # everything sysmgr made there is gone
    p.delete()  # already gone: success
    with pytest.raises((NotFound, DriverError)):
        p.create_container("c1", FP)


def test_create_image_failure_leaves_nothing(pool):
    seen = {}
    with pytest.raises(RuntimeError):
        with pool.create_image(FP) as staging:
            fill_image(staging)
            seen["staging"] = staging
            raise RuntimeError("builder failed")
    assert not os.path.exists(seen["staging"])
    assert not pool.has_image(FP) and pool.list_images() == []
    add_image(pool)  # the fingerprint is free again
    assert pool.list_images() == [FP]
    with pytest.raises(AlreadyExists):
        with pool.create_image(FP):
            pass


def test_container_from_image(pool):
    image = add_image(pool)
    assert oct(os.stat(image).st_mode & 0o777) == oct(0o755)
    path = pool.create_container("c1", FP)
    assert path == pool.container_path("c1")
    assert tree(path) == tree(image)
    assert os.stat(os.path.join(path, "etc", "hostname")).st_ino == \
        os.stat(os.path.join(path, "etc", "hostname.hard")).st_ino
    assert pool.has_container("c1") and pool.list_containers() == ["c1"]
    # the volume is writable and independent of the image
    write(os.path.join(path, "etc", "hostname"), "c1\n")
    os.unlink(os.path.join(path, "blob"))
    assert read(os.path.join(image, "etc", "hostname")) == "img\n"
    assert os.path.exists(os.path.join(image, "blob"))
    with pytest.raises(AlreadyExists):
        pool.create_container("c1", FP)
    with pytest.raises(NotFound):
        pool.create_container("c2", "0" * 64)
    assert not pool.has_container("c2")
    # an image can go while containers made from it stay intact
    pool.delete_image(FP)
    pool.delete_image(FP)
    assert read(os.path.join(path, "etc", "hostname")) == "c1\n"


def test_delete_and_rename(pool):
    add_image(pool)
    pool.create_container("c1", FP)
    write(os.path.join(pool.container_path("c1"), "mine"), "one")
    if pool.info.snapshots:
        pool.create_snapshot("c1", "s1")
    new = pool.rename_container("c1", "c2")
    assert new == pool.container_path("c2") and read(os.path.join(new, "mine")) == "one"
    assert not pool.has_container("c1") and pool.list_containers() == ["c2"]
    if pool.info.snapshots:
        assert pool.list_snapshots("c2") == ["s1"]  # snapshots move with their container
    pool.create_container("c1", FP)
    with pytest.raises(AlreadyExists):
        pool.rename_container("c1", "c2")
    with pytest.raises(NotFound):
        pool.rename_container("nope", "c3")

    pool.delete_container("c2")
    assert not pool.has_container("c2")
    pool.delete_container("c2")  # already gone: success
    with pytest.raises(NotFound):
        pool.container_usage("c2")
    if pool.info.snapshots:
        with pytest.raises(NotFound):
            pool.list_snapshots("c2")
        # a new container of the same name starts without the old one's snapshots
        pool.create_container("c2", FP)
        assert pool.list_snapshots("c2") == []
    assert pool.has_container("c1")


def test_volume_in_use_is_refused(pool, tmp_path):
    add_image(pool)
    path = pool.create_container("c1", FP)
    if pool.info.snapshots:
        pool.create_snapshot("c1", "s1")
    mnt = os.path.join(path, "mnt")
    os.mkdir(mnt)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    subprocess.run(["mount", "--bind", str(outside), mnt], check=True)
    try:
        with pytest.raises(Conflict):
            pool.delete_container("c1")
        with pytest.raises(Conflict):
            pool.rename_container("c1", "c2")
        if pool.info.snapshots:
            with pytest.raises(Conflict):
                pool.restore_snapshot("c1", "s1")
            assert pool.list_snapshots("c1") == ["s1"]
    finally:
        subprocess.run(["umount", mnt], check=True)
    assert pool.has_container("c1") and (outside / "keep").read_text() == "precious"


def test_snapshots(pool):
    if not pool.info.snapshots:
        with pytest.raises(NotImplementedError):
            pool.create_snapshot("c1", "s1")
        return
    add_image(pool)
    path = pool.create_container("c1", FP)
    write(os.path.join(path, "state"), "v1")
    before = tree(path)
    snap = pool.create_snapshot("c1", "s1")
    assert snap == pool.snapshot_path("c1", "s1") and tree(snap) == before
    write(os.path.join(path, "state"), "v2")
    assert read(os.path.join(snap, "state")) == "v1"  # a snapshot does not follow the volume
    pool.create_snapshot("c1", "s0")
    assert pool.list_snapshots("c1") == ["s0", "s1"]
    with pytest.raises(AlreadyExists):
        pool.create_snapshot("c1", "s1")
    with pytest.raises(NotFound):
        pool.create_snapshot("nope", "s1")
    with pytest.raises(ValidationError):
        pool.create_snapshot("c1", "../x")
    pool.delete_snapshot("c1", "s0")
    pool.delete_snapshot("c1", "s0")  # already gone: success
    assert pool.list_snapshots("c1") == ["s1"]
    assert read(os.path.join(path, "state")) == "v2"


def test_restore(pool):
    if not pool.info.snapshots:
        return
    add_image(pool)
    path = pool.create_container("c1", FP)
    write(os.path.join(path, "state"), "v1")
    pool.create_snapshot("c1", "s1")
    t1 = tree(path)
    write(os.path.join(path, "state"), "v2")
    os.unlink(os.path.join(path, "blob"))
    os.mkdir(os.path.join(path, "new-dir"))
    pool.create_snapshot("c1", "s2")
    t2 = tree(path)
    write(os.path.join(path, "state"), "v3")

    assert pool.restore_snapshot("c1", "s1") == pool.container_path("c1")
    path = pool.container_path("c1")
    assert tree(path) == t1 and read(os.path.join(path, "state")) == "v1"
    assert pool.list_snapshots("c1") == ["s1", "s2"]  # the others are kept
    write(os.path.join(path, "state"), "after restore")  # writable
    assert read(os.path.join(pool.snapshot_path("c1", "s1"), "state")) == "v1"
    pool.restore_snapshot("c1", "s2")
    assert tree(pool.container_path("c1")) == t2
    with pytest.raises(NotFound):
        pool.restore_snapshot("c1", "nope")
    assert tree(pool.container_path("c1")) == t2


def test_copy(pool):
    if not pool.info.snapshots:
        with pytest.raises(NotImplementedError):
            pool.copy_container("c1", "c2")
        return
    add_image(pool)
    src = pool.create_container("c1", FP)
    write(os.path.join(src, "state"), "v1")
    pool.create_snapshot("c1", "s1")
    write(os.path.join(src, "state"), "v2")

    dst = pool.copy_container("c1", "c2")
    assert dst == pool.container_path("c2") and tree(dst) == tree(src)
    assert pool.list_snapshots("c2") == []
    write(os.path.join(dst, "state"), "changed in copy")
    write(os.path.join(src, "only-in-src"), "x")
    assert read(os.path.join(src, "state")) == "v2"
    assert not os.path.exists(os.path.join(dst, "only-in-src"))

    old = pool.copy_container("c1", "c3", snapshot="s1")
    assert read(os.path.join(old, "state")) == "v1"
    with pytest.raises(AlreadyExists):
        pool.copy_container("c1", "c2")
    with pytest.raises(NotFound):
        pool.copy_container("nope", "c4")
    with pytest.raises(NotFound):
        pool.copy_container("c1", "c4", snapshot="nope")
    assert not pool.has_container("c4")
    # deleting the source leaves the copies intact
    pool.delete_container("c1")
    assert read(os.path.join(dst, "state")) == "changed in copy"
    assert read(os.path.join(old, "state")) == "v1"


def test_usage(pool):
    add_image(pool)
    path = pool.create_container("c1", FP)
    base = pool.container_usage("c1")
    assert base is not None and base >= 0
    assert write_until(os.path.join(path, "data"), 8 * MiB) is None
    grown = pool.container_usage("c1")
    assert grown is not None and grown >= base + 7 * MiB
    assert grown < base + 16 * MiB
    if pool.info.snapshots:
        # the container's content did not change, so neither does its usage (cf. lxd#8468,
        # where exclusive-byte accounting made usage drop to almost nothing after a snapshot)
        pool.create_snapshot("c1", "s1")
        after = pool.container_usage("c1")
        assert after is not None and after >= grown - MiB


def test_usage_of_several_containers_at_once(pool):
    """A listing's measure (one du over every volume where the pool walks trees) says what
    each volume's own does; a volume gone meanwhile is None."""
    add_image(pool)
    path = pool.create_container("c1", FP)
    pool.create_container("c2", FP)
    assert write_until(os.path.join(path, "data"), 4 * MiB) is None
    pool.create_container("c3", FP)
    pool.delete_container("c3")
    got = pool.containers_usage(["c1", "c2", "c3"])
    assert got == {"c1": pool.container_usage("c1"), "c2": pool.container_usage("c2"), "c3": None}
    assert got["c1"] >= got["c2"] + 3 * MiB


def test_quota(pool):
    add_image(pool)
    path = pool.create_container("c1", FP)
    pool.set_quota("c1", None)  # removing a limit works everywhere
    if not pool.info.quotas:
        with pytest.raises(NotImplementedError):
            pool.set_quota("c1", 32 * MiB)
        return
    with pytest.raises(NotFound):
        pool.set_quota("nope", 32 * MiB)
    pool.set_quota("c1", 32 * MiB)
    pool.set_quota("c1", 32 * MiB)  # idempotent
    assert write_until(os.path.join(path, "big"), 64 * MiB) == errno.EDQUOT
    used = pool.container_usage("c1")
    assert used is not None and 16 * MiB <= used <= 34 * MiB

    pool.create_snapshot("c1", "s1")  # taken with a 32 MiB limit
    after = pool.container_usage("c1")
    assert after is not None and abs(after - used) <= MiB

    # removing the limit lets the container grow past it
    os.unlink(os.path.join(path, "big"))
    pool.set_quota("c1", None)
    assert write_until(os.path.join(path, "big"), 48 * MiB) is None
    os.unlink(os.path.join(path, "big"))

    # a restore keeps the volume's current limit, not the one the snapshot was taken with
    pool.set_quota("c1", 16 * MiB)
    pool.restore_snapshot("c1", "s1")
    os.unlink(os.path.join(pool.container_path("c1"), "big"))  # s1 had it, partly written
    assert write_until(os.path.join(pool.container_path("c1"), "big"), 24 * MiB) == errno.EDQUOT

    # a copy can get a limit of its own
    pool.copy_container("c1", "c2")
    pool.set_quota("c2", None)
    assert write_until(os.path.join(pool.container_path("c2"), "big2"), 24 * MiB) is None


def _stream_size(pool: StoragePool, name: str, snap: str, since: str | None = None) -> int:
    total = 0
    with pool.send(name, snap, since=since) as s:
        while chunk := s.read(MiB):
            total += len(chunk)
    return total


def test_send_receive(driver, pool, sysmgr_root, tmp_path):
    if not pool.info.send_receive:
        return
    add_image(pool)
    src = pool.create_container("c1", FP)
    write(os.path.join(src, "state"), "v1")
    write(os.path.join(src, "big"), os.urandom(4 * MiB))
    pool.create_snapshot("c1", "s1")

    with created(driver, sysmgr_root, name="p2") as target:
        # full stream saved to a file (a backup) and received from a buffered reader
        backup = str(tmp_path / "c1-s1.stream")
        with pool.send("c1", "s1") as s, open(backup, "wb") as f:
            while chunk := s.read(MiB):
                f.write(chunk)
        with open(backup, "rb") as f:
            got = target.receive("c1", f, snap="s1")
        assert got == target.container_path("c1")
        assert tree(got) == tree(pool.snapshot_path("c1", "s1"))
        assert target.list_snapshots("c1") == ["s1"]
        assert tree(target.snapshot_path("c1", "s1")) == tree(pool.snapshot_path("c1", "s1"))
        write(os.path.join(got, "state"), "written on the target")  # the volume is writable

        with open(backup, "rb") as f, pytest.raises(AlreadyExists):
            target.receive("c1", f, snap="s1")

        # the next step: full again, or incremental from the common snapshot
        write(os.path.join(src, "state"), "v2")
        write(os.path.join(src, "more"), os.urandom(MiB))
        os.unlink(os.path.join(src, "blob"))
        pool.create_snapshot("c1", "s2")
        since = "s1" if pool.info.incremental_send else None
        if since:
            assert _stream_size(pool, "c1", "s2", since=since) < _stream_size(pool, "c1", "s2") // 2
        else:
            with pytest.raises(NotImplementedError):
                with pool.send("c1", "s2", since="s1"):
                    pass
        with pool.send("c1", "s2", since=since) as s:  # piped straight through
            target.receive("c1", s, snap="s2")
        assert target.list_snapshots("c1") == ["s1", "s2"]
        assert read(os.path.join(target.container_path("c1"), "state")) == "written on the target"
        target.restore_snapshot("c1", "s2")  # receive leaves the volume; restore moves it on
        assert tree(target.container_path("c1")) == tree(pool.snapshot_path("c1", "s2"))

        # a broken stream fails cleanly and leaves nothing
        with pytest.raises(DriverError):
            target.receive("c9", io.BytesIO(b"not a stream" * 1000), snap="s1")
        with open(backup, "rb") as f:
            truncated = f.read(2 * MiB)
        with pytest.raises(DriverError):
            target.receive("c8", io.BytesIO(truncated), snap="s1")
        assert target.list_containers() == ["c1"]
        assert not target.has_container("c9") and not target.has_container("c8")

        # a producer left unread is an error on exit, never a silent short stream
        with pytest.raises(DriverError, match="not read to the end"):
            with pool.send("c1", "s1") as s:
                s.read(1)


def test_pool_full_leaves_nothing_half_made(driver, sysmgr_root):
    tmp = os.path.join(sysmgr_root, "full")
    os.makedirs(tmp)
    with SETUPS[driver].small(tmp) as cfg, created(driver, sysmgr_root, "small", cfg) as p:
        add_image(p)
        filler = p.create_container("filler", FP)
        # the container fills the pool
        err = write_until(os.path.join(filler, "fill"), 1024 * MiB)
        assert err == errno.ENOSPC
        # an image import into a full pool fails in the builder, and leaves nothing
        with pytest.raises(OSError), p.create_image("e" * 64) as staging:
            write(os.path.join(staging, "blob"), os.urandom(8 * MiB))
        assert p.list_images() == [FP]

        try:
            p.create_container("c1", FP)
        except DriverError:
            assert not p.has_container("c1")
        else:
            # only where a container costs no data blocks (cow): it must then be complete
            assert p.info.cow_snapshots
            assert tree(p.container_path("c1")) == tree(p.image_path(FP))
            p.delete_container("c1")
        assert "c1" not in p.list_containers()

        if p.info.snapshots and not p.info.cow_snapshots:
            with pytest.raises(DriverError):
                p.create_snapshot("filler", "s1")
            assert p.list_snapshots("filler") == []
            with pytest.raises(DriverError):
                p.copy_container("filler", "c2")
            assert not p.has_container("c2")

        if p.info.send_receive:
            with created(driver, sysmgr_root, "big") as src:
                add_image(src)
                path = src.create_container("c3", FP)
                write(os.path.join(path, "data"), os.urandom(32 * MiB))
                src.create_snapshot("c3", "s1")
                with pytest.raises(DriverError), src.send("c3", "s1") as s:
                    p.receive("c3", s, snap="s1")
            assert not p.has_container("c3")
            assert sorted(p.list_containers()) == ["filler"]
        p.delete_container("filler")


# -- btrfs only: the source check and pools on an existing btrfs directory -----------------

def _btrfs_cls() -> type[StoragePool]:
    cls = registry.load("storage", "btrfs")
    try:
        cls.check_host()
    except DriverUnavailable as e:
        pytest.skip(f"btrfs: {e.message} ({e.hint})")
    return cls


def test_btrfs_rejects_non_btrfs_source(sysmgr_root):
    cls = _btrfs_cls()
    src = os.path.join(sysmgr_root, "ext4-dir")  # the test root is on / (ext4 or tmpfs)
    os.makedirs(src)
    p = cls("b", {"source": src}, "/unused")
    with pytest.raises(ValidationError, match="not on a btrfs filesystem"):
        p.create()
    assert os.listdir(src) == []  # nothing changed
    with pytest.raises(ValidationError, match="does not exist"):
        cls("b", {"source": os.path.join(sysmgr_root, "missing")}, "/unused").create()
    with pytest.raises(ValidationError, match="too small"):
        cls("b", {"size": "10MiB"}, "/unused")
    with pytest.raises(ValidationError, match="invalid size"):
        cls("b", {"size": "lots"}, "/unused")
    with pytest.raises(ValidationError, match="unknown config key"):
        cls("b", {"sizee": "1GiB"}, "/unused")


def test_btrfs_pool_on_existing_btrfs_dir(sysmgr_root):
    cls = _btrfs_cls()
    # somebody's btrfs filesystem (here: a loop pool's mount, reused as a plain btrfs dir)
    with created("btrfs", sysmgr_root, "host") as host:
        mnt = os.path.join(host.path, "user-area")  # type: ignore[attr-defined]
        os.makedirs(os.path.join(mnt, "lost+found"))
        p = cls("b", {"source": mnt}, "/unused")
        p.create()
        p.create()
        p.mount()
        add_image(p)
        c = p.create_container("c1", FP)
        assert c.startswith(mnt + "/")
        write(os.path.join(mnt, "user-notes.txt"), "mine")
        with pytest.raises(Conflict):
            p.delete()
        p.delete_container("c1")
        p.delete()
        p.delete()
        assert sorted(os.listdir(mnt)) == ["lost+found", "user-notes.txt"]

        busy = os.path.join(host.path, "busy")  # type: ignore[attr-defined]
        os.makedirs(busy)
        write(os.path.join(busy, "data"), "x")
        with pytest.raises(Conflict, match="not empty"):
            cls("b2", {"source": busy}, "/unused").create()
        assert os.listdir(busy) == ["data"]
