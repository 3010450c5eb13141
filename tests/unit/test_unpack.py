"""Image import: unified and plain tarballs in every compression, directories, bad input,
fingerprints and halt-signal detection. Uses real GNU tar (and zstd/xz) as root."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile

import pytest

from sysmgr._util import proc
from sysmgr.drivers.images import unpack as up
from sysmgr.drivers.images.base import ImageMetadata
from sysmgr.errors import DriverUnavailable, ValidationError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, mknod)")

COMPRESSIONS = ["gz", "xz", "zstd", "none"]
TAR_FLAG = {"gz": ["--gzip"], "xz": ["--xz"], "zstd": ["--zstd"], "none": []}


def make_rootfs(path, init="systemd") -> str:
    """A tiny but nasty root filesystem: owners, modes, links, xattrs, a device node."""
    r = str(path)
    for d in ("etc", "usr/bin", "usr/lib/systemd", "usr/sbin", "var/empty", "root", "dev"):
        os.makedirs(os.path.join(r, d), exist_ok=True)
    os.symlink("usr/bin", os.path.join(r, "bin"))
    os.symlink("usr/sbin", os.path.join(r, "sbin"))
    os.symlink("usr/lib", os.path.join(r, "lib"))
    with open(os.path.join(r, "etc", "os-release"), "w") as f:
        f.write('ID=tiny\nPRETTY_NAME="Tiny"\n')
    with open(os.path.join(r, "etc", "hostname"), "w") as f:
        f.write("tiny\n")
    os.symlink("/usr/share/zoneinfo/UTC", os.path.join(r, "etc", "localtime"))  # absolute
    os.link(os.path.join(r, "etc", "hostname"), os.path.join(r, "etc", "hostname.hard"))
    with open(os.path.join(r, "usr", "bin", "su"), "wb") as f:
        f.write(b"\x7fELF fake su")
    os.chmod(os.path.join(r, "usr", "bin", "su"), 0o4755)
    with open(os.path.join(r, "usr", "bin", "ping"), "wb") as f:
        f.write(b"\x7fELF fake ping")
    os.setxattr(os.path.join(r, "usr", "bin", "ping"), "user.sysmgr-test", b"cap")
    os.chmod(os.path.join(r, "root"), 0o700)
    os.chown(os.path.join(r, "var", "empty"), 1234, 5678)
    os.chmod(os.path.join(r, "var", "empty"), 0o555)
    os.mknod(os.path.join(r, "dev", "null"), 0o666 | 0o020000, os.makedev(1, 3))
    with open(os.path.join(r, "usr", "lib", "systemd", "systemd"), "wb") as f:
        f.write(b"\x7fELF fake systemd")
    os.chmod(os.path.join(r, "usr", "lib", "systemd", "systemd"), 0o755)
    with open(os.path.join(r, "usr", "bin", "busybox"), "wb") as f:
        f.write(b"\x7fELF ... BusyBox v1.35.0 multi-call binary")
    if init == "systemd":
        os.symlink("/lib/systemd/systemd", os.path.join(r, "usr", "sbin", "init"))
    elif init == "busybox":
        os.symlink("../bin/busybox", os.path.join(r, "usr", "sbin", "init"))
    return r


def tar_dir(src: str, out: str, comp: str, members: list[str] | None = None) -> str:
    proc.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-c", *TAR_FLAG[comp],
              "-f", out, "-C", src, *(members or ["."])])
    return out


@pytest.fixture
def rootfs(tmp_path):
    return make_rootfs(tmp_path / "src-rootfs")


META = ImageMetadata(properties={"os": "tiny", "release": "1", "description": "Tiny 1",
                                 "architecture": "amd64"},
                     init="/sbin/init", halt_signal="SIGRTMIN+3", no_new_privs=True)


def empty_dir(tmp_path, name="dest") -> str:
    d = tmp_path / name
    d.mkdir()
    return str(d)


# -- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_unified_tarball_round_trip(tmp_path, rootfs, comp):
    out = str(tmp_path / f"image.tar.{comp}")
    up.write_unified_tarball(rootfs, META, out, compression=comp)
    assert up.inspect(out) is up.Kind.UNIFIED_TARBALL
    dest = empty_dir(tmp_path)
    meta = up.unpack(out, dest)
    assert up.fingerprint_tree(dest) == up.fingerprint_tree(rootfs)
    assert meta == META
    assert os.getxattr(os.path.join(dest, "usr/bin/ping"), "user.sysmgr-test") == b"cap"
    st = os.stat(os.path.join(dest, "var/empty"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.stat(os.path.join(dest, "etc/hostname")).st_ino == \
        os.stat(os.path.join(dest, "etc/hostname.hard")).st_ino
    assert os.readlink(os.path.join(dest, "etc/localtime")) == "/usr/share/zoneinfo/UTC"


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_plain_rootfs_tarball(tmp_path, rootfs, comp):
    out = tar_dir(rootfs, str(tmp_path / f"rootfs.tar.{comp}"), comp)
    assert up.inspect(out) is up.Kind.ROOTFS_TARBALL
    dest = empty_dir(tmp_path)
    meta = up.unpack(out, dest)
    assert up.fingerprint_tree(dest) == up.fingerprint_tree(rootfs)
    assert meta.init == "/sbin/init" and meta.halt_signal == "SIGRTMIN+3"


def test_plain_rootfs_tarball_without_dot_prefix(tmp_path, rootfs):
    out = tar_dir(rootfs, str(tmp_path / "rootfs.tar.gz"), "gz", sorted(os.listdir(rootfs)))
    dest = empty_dir(tmp_path)
    up.unpack(out, dest)
    assert up.fingerprint_tree(dest) == up.fingerprint_tree(rootfs)


def test_unified_tarball_with_dot_prefix_and_templates(tmp_path, rootfs):
    img = tmp_path / "img"
    img.mkdir()
    subprocess.run(["cp", "-a", rootfs, str(img / "rootfs")], check=True)
    (img / "templates").mkdir()
    (img / "templates" / "hostname.tpl").write_text("{{ container.name }}\n")
    (img / "metadata.yaml").write_text(
        "architecture: x86_64\ncreation_date: 1\nproperties:\n  os: tiny\n  release: '2'\n"
        "templates:\n  /etc/hostname:\n    when: [create]\n    template: hostname.tpl\n")
    out = tar_dir(str(img), str(tmp_path / "lxd.tar.xz"), "xz")
    dest = empty_dir(tmp_path)
    meta = up.unpack(out, dest)
    assert sorted(os.listdir(dest)) == sorted(os.listdir(rootfs))  # no templates/, no metadata
    assert meta.properties == {"os": "tiny", "release": "2", "architecture": "x86_64"}
    assert meta.halt_signal == "SIGRTMIN+3"  # detected: /sbin/init -> systemd


def test_directories(tmp_path, rootfs):
    assert up.inspect(rootfs) is up.Kind.ROOTFS_DIR
    dest = empty_dir(tmp_path)
    assert up.unpack(rootfs, dest).halt_signal == "SIGRTMIN+3"
    assert up.fingerprint_tree(dest) == up.fingerprint_tree(rootfs)

    img = tmp_path / "unified"
    img.mkdir()
    subprocess.run(["cp", "-a", rootfs, str(img / "rootfs")], check=True)
    (img / "metadata.yaml").write_text(up.render_metadata(META))
    assert up.inspect(str(img)) is up.Kind.UNIFIED_DIR
    dest2 = empty_dir(tmp_path, "dest2")
    assert up.unpack(str(img), dest2) == META
    assert up.fingerprint_tree(dest2) == up.fingerprint_tree(rootfs)


# -- bad input -------------------------------------------------------------------------------

def _assert_rejected(path: str, dest: str, match: str = "is not a valid image tarball") -> None:
    with pytest.raises(ValidationError, match=match):
        up.unpack(path, dest)
    assert os.listdir(dest) == []


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_truncated_archive_rejected(tmp_path, rootfs, comp):
    # some incompressible content so the archive is big enough to cut in the middle
    with open(os.path.join(rootfs, "usr", "bin", "blob"), "wb") as f:
        f.write(os.urandom(300_000))
    out = str(tmp_path / f"image.tar.{comp}")
    up.write_unified_tarball(rootfs, META, out, compression=comp)
    with open(out, "r+b") as f:
        f.truncate(os.path.getsize(out) // 2 + 7)
    dest = empty_dir(tmp_path)
    _assert_rejected(out, dest)
    with pytest.raises(ValidationError):
        up.inspect(out)


def test_garbage_and_empty_files_rejected(tmp_path):
    dest = empty_dir(tmp_path)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(5000))
    _assert_rejected(str(garbage), dest, "unrecognised format")
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    _assert_rejected(str(empty), dest)
    gz = tmp_path / "notatar.tar.gz"
    gz.write_bytes(gzip.compress(b"hello, this is not a tar archive\n" * 100))
    _assert_rejected(str(gz), dest)
    with pytest.raises(ValidationError, match="does not exist"):
        up.unpack(str(tmp_path / "missing.tar"), dest)


def test_tarball_without_rootfs_rejected(tmp_path):
    src = tmp_path / "junk"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "readme").write_text("hi")
    out = tar_dir(str(src), str(tmp_path / "junk.tar"), "none")
    _assert_rejected(out, empty_dir(tmp_path), "neither metadata.yaml")


def _evil_tar(path: str, names: list[str]) -> str:
    with tarfile.open(path, "w:gz") as t:
        for n in names:
            data = b"evil\n"
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../evil", "etc/../../evil", "/evil", "rootfs/../../evil"])
def test_escaping_member_rejected(tmp_path, name):
    out = _evil_tar(str(tmp_path / "evil.tar.gz"), ["etc/hostname", name])
    dest = os.path.join(empty_dir(tmp_path, "a"), "dest")
    os.mkdir(dest)
    _assert_rejected(out, dest, "points outside the image")
    assert not os.path.exists(os.path.join(tmp_path, "evil"))
    assert not os.path.exists(os.path.join(tmp_path, "a", "evil"))


def test_symlink_then_file_through_it_never_writes_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = str(tmp_path / "sneaky.tar")
    with tarfile.open(out, "w") as t:
        ti = tarfile.TarInfo("etc")
        ti.type = tarfile.SYMTYPE
        ti.linkname = str(outside)
        t.addfile(ti)
        for n in ("etc/passwd",):
            ti = tarfile.TarInfo(n)
            ti.size = 5
            t.addfile(ti, io.BytesIO(b"evil\n"))
        ti = tarfile.TarInfo("hard")
        ti.type = tarfile.LNKTYPE
        ti.linkname = str(outside / "x")
        t.addfile(ti)
    dest = empty_dir(tmp_path)
    with pytest.raises(ValidationError):
        up.unpack(out, dest)
    assert os.listdir(dest) == []
    assert os.listdir(outside) == []


def test_nonempty_dest_refused(tmp_path, rootfs):
    dest = empty_dir(tmp_path)
    open(os.path.join(dest, "x"), "w").close()
    with pytest.raises(Exception, match="not empty"):
        up.unpack(rootfs, dest)
    assert os.listdir(dest) == ["x"]  # not ours to clear


def test_missing_zstd_is_driver_unavailable(tmp_path, rootfs, monkeypatch):
    out = str(tmp_path / "image.tar.zst")
    up.write_unified_tarball(rootfs, META, out, compression="zstd")
    real = proc.which
    monkeypatch.setattr(proc, "which", lambda p: None if p == "zstd" else real(p))
    with pytest.raises(DriverUnavailable) as ei:
        up.unpack(out, empty_dir(tmp_path))
    assert ei.value.hint == "apt-get install zstd"


# -- metadata --------------------------------------------------------------------------------

@pytest.mark.parametrize("init,signal", [("systemd", "SIGRTMIN+3"), ("busybox", "SIGUSR2"),
                                         ("none", "SIGPWR")])
def test_halt_signal_detection(tmp_path, init, signal):
    r = make_rootfs(tmp_path / "r", init=init)
    assert up.detect_halt_signal(r) == signal


def test_halt_signal_detection_resolves_inside_rootfs(tmp_path):
    r = make_rootfs(tmp_path / "r", init="none")
    # climbing symlink: must land on the image's busybox, not outside
    os.symlink("../../../../../../../usr/bin/busybox", os.path.join(r, "usr/sbin/init"))
    assert up.detect_halt_signal(r) == "SIGUSR2"
    # the host has /lib/systemd/systemd; the image does not: not systemd
    r2 = make_rootfs(tmp_path / "r2", init="none")
    os.remove(os.path.join(r2, "usr/lib/systemd/systemd"))
    os.symlink("/lib/systemd/systemd", os.path.join(r2, "usr/sbin/init"))
    assert up.detect_halt_signal(r2) == "SIGPWR"
    # busybox copied under another name is recognised by its content
    r3 = make_rootfs(tmp_path / "r3", init="none")
    shutil.copy(os.path.join(r3, "usr/bin/busybox"), os.path.join(r3, "usr/sbin/init"))
    assert up.detect_halt_signal(r3) == "SIGUSR2"


def test_metadata_keys(tmp_path):
    r = make_rootfs(tmp_path / "r", init="busybox")
    m = up.parse_metadata("properties:\n  os: x\n  sysmgr.halt_signal: SIGUSR1\n", "img", r)
    assert m.halt_signal == "SIGUSR1" and m.properties == {"os": "x"}
    m = up.parse_metadata("sysmgr.init: /bin/init2\nsysmgr.halt_signal: rtmin+4\n"
                          "sysmgr.no_new_privs: 'true'\n", "img", r)
    assert (m.init, m.halt_signal, m.no_new_privs) == ("/bin/init2", "SIGRTMIN+4", True)
    assert up.parse_metadata("properties: {}\n", "img", r).halt_signal == "SIGUSR2"
    for bad in ("sysmgr.halt_signal: SIGNOPE\n", "sysmgr.init: relative\n", "- a list\n",
                "properties: [1]\n", "key: [unclosed\n", "sysmgr.no_new_privs: maybe\n"):
        with pytest.raises(ValidationError):
            up.parse_metadata(bad, "img", r)


def test_render_parse_round_trip(rootfs):
    text = up.render_metadata(META, creation_date=123)
    assert "architecture: x86_64" in text and "creation_date: 123" in text
    assert up.parse_metadata(text, "x", rootfs) == META


# -- fingerprints ----------------------------------------------------------------------------

def test_fingerprint_file(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(3 << 20)
    p.write_bytes(data)
    assert up.fingerprint_file(str(p)) == hashlib.sha256(data).hexdigest()


def test_fingerprint_tree_is_canonical(tmp_path, rootfs):
    base = up.fingerprint_tree(rootfs)
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-a", rootfs, copy], check=True)
    assert up.fingerprint_tree(copy) == base
    os.utime(os.path.join(copy, "etc", "hostname"), (1, 1))  # times do not count
    assert up.fingerprint_tree(copy) == base

    def changed(fn) -> bool:
        c = str(tmp_path / f"c{changed.n}")
        changed.n += 1
        subprocess.run(["cp", "-a", rootfs, c], check=True)
        fn(c)
        return up.fingerprint_tree(c) != base
    changed.n = 0

    def append(c: str) -> None:
        with open(os.path.join(c, "etc", "hostname"), "a") as f:
            f.write("x")

    def relink(c: str) -> None:
        os.remove(os.path.join(c, "bin"))
        os.symlink("usr/sbin", os.path.join(c, "bin"))

    j = os.path.join
    assert changed(append)
    assert changed(relink)
    assert changed(lambda c: os.chmod(j(c, "usr", "bin", "su"), 0o755))
    assert changed(lambda c: os.chown(j(c, "etc", "os-release"), 1, 1))
    assert changed(lambda c: os.setxattr(j(c, "etc", "hostname"), "user.x", b"1"))
    assert changed(lambda c: os.rename(j(c, "etc", "os-release"), j(c, "etc", "os-releasf")))
    assert changed(lambda c: os.mkdir(j(c, "newdir")))
