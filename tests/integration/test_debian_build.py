"""Build the Debian (systemd) image once with mmdebstrap and check it is fit for a container.

The build tests are slow (about 20-30 s, about 210 MB; marked ``slow``); two fast tests check
how the build is set up without running it. Booting the image needs the runtime; this
module only checks the tree, its metadata, and that it survives export/import and a pool copy
unchanged (including the file capabilities of ``ping``).
"""

from __future__ import annotations

import os
import time

import pytest

from sysmgr._util import proc, safefs
from sysmgr.drivers.images import unpack as up
from sysmgr.drivers.images.debian import (
    HOSTS,
    MASKED_UNITS,
    DebianBuilder,
    host_apt_sources,
    mirrors_for,
)
from sysmgr.drivers.storage.dir import DirPool
from sysmgr.errors import DriverUnavailable, ValidationError

slow = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(proc.which("mmdebstrap") is None, reason="mmdebstrap is not installed"),
]


def build_test(fn):
    for mark in slow:
        fn = mark(fn)
    return fn


# -- fast: how the build is set up (no network) ----------------------------------------------

def test_host_sources_parsing_and_mirror_choice(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n"
        "deb-src http://m.example/debian bookworm main\n")
    (etc / "sources.list.d" / "sec.sources").write_text(
        "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://off.example/x\nSuites: stable\nComponents: main\nEnabled: no\n")
    (etc / "sources.list.d" / "old.list.disabled").write_text("deb http://no.example/ x main\n")
    sources = host_apt_sources(str(etc))
    assert [(s.uri, s.suite) for s in sources] == [
        ("http://m.example/debian", "bookworm"), ("http://m.example/debian-security", "bookworm-security")]
    assert mirrors_for("bookworm", sources) == [
        "deb [signed-by=/k.gpg] http://m.example/debian bookworm main contrib",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://m.example/debian-security bookworm-security main"]
    # another release: the host's main archive, that suite only
    assert mirrors_for("trixie", sources) == ["deb [signed-by=/k.gpg] http://m.example/debian trixie main"]
    assert mirrors_for("trixie", []) == []


def test_builder_options(tmp_path, monkeypatch):
    b = DebianBuilder()
    argv, release, variant = b._argv("/x", {"include": "less, vim-tiny,less", "mirror": "http://m/debian"})
    assert (release, variant) == ("bookworm", "minbase")
    assert argv[0] == "mmdebstrap" and argv[-3:] == ["bookworm", "/x", "http://m/debian"]
    assert "--include=systemd-sysv,dbus,iproute2,procps,iputils-ping,ca-certificates,less,vim-tiny" in argv
    for bad in ({"colour": "x"}, {"release": "../x"}, {"variant": "huge"}, {"include": "a;rm"},
                {"mirror": "somewhere"}):
        with pytest.raises(ValidationError):
            b._argv("/x", bad)
    real = proc.which
    monkeypatch.setattr(proc, "which", lambda p: None if p == "mmdebstrap" else real(p))
    with pytest.raises(DriverUnavailable) as ei:
        b.build(str(tmp_path), {})
    assert ei.value.hint == "apt-get install mmdebstrap"


# -- slow: a real build ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("debian-image") / "rootfs")
    os.mkdir(dest)
    lines: list[str] = []
    t0 = time.monotonic()
    meta = DebianBuilder().build(dest, {}, progress=lines.append)
    print(f"debian build: {time.monotonic() - t0:.1f}s")
    return dest, meta, lines


@build_test
def test_metadata(debian):
    _dest, meta, lines = debian
    assert meta.init == "/sbin/init" and meta.halt_signal == "SIGRTMIN+3"
    assert not meta.no_new_privs
    p = meta.properties
    assert (p["os"], p["release"]) == ("debian", "bookworm")
    assert p["description"] == "Debian bookworm (systemd)"
    assert p["architecture"]
    assert any("success" in line for line in lines)  # mmdebstrap's progress was streamed


@build_test
def test_init_is_systemd_inside_the_image(debian):
    dest, _meta, _ = debian
    real = safefs.resolve(dest, "/sbin/init")
    assert real in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
    assert safefs.stat(dest, real).st_size > 0
    assert up.detect_halt_signal(dest) == "SIGRTMIN+3"
    for tool in ("/usr/bin/ps", "/usr/bin/ping", "/bin/ip"):  # the lean extras are there
        assert safefs.exists(dest, tool), tool


@build_test
def test_container_preparation(debian):
    dest, _meta, _ = debian
    for unit in MASKED_UNITS:
        assert os.readlink(os.path.join(dest, "etc/systemd/system", unit)) == "/dev/null", unit
    assert safefs.read_file(dest, "/etc/hostname") == b"localhost\n"
    assert safefs.read_file(dest, "/etc/machine-id") == b""
    assert safefs.read_file(dest, "/etc/hosts") == HOSTS.encode()  # not the build host's
    assert safefs.read_file(dest, "/etc/resolv.conf") == b""
    assert not safefs.exists(dest, "/etc/apt/apt.conf.d/99mmdebstrap")


@build_test
def test_uses_the_hosts_debian_archive(debian):
    dest, _meta, _ = debian
    sources = safefs.read_file(dest, "/etc/apt/sources.list").decode()
    expected = mirrors_for("bookworm", host_apt_sources())
    for line in expected:
        assert line in sources


@build_test
def test_file_capabilities_survive_export_import_and_pool_copy(debian, tmp_path, sysmgr_root):
    dest, meta, _ = debian
    ping = os.path.join(dest, "usr/bin/ping")
    cap = os.getxattr(ping, "security.capability", follow_symlinks=False)
    fp = up.fingerprint_tree(dest)

    tarball = str(tmp_path / "debian.tar.zst")
    up.write_unified_tarball(dest, meta, tarball, compression="zstd")
    assert up.inspect(tarball) is up.Kind.UNIFIED_TARBALL

    pool = DirPool("deb", {}, os.path.join(sysmgr_root, "storage-pools", "deb"))
    pool.create()
    image_fp = up.fingerprint_file(tarball)
    with pool.create_image(image_fp) as staging:
        meta2 = up.unpack(tarball, staging)
    assert meta2 == meta
    assert up.fingerprint_tree(pool.image_path(image_fp)) == fp

    rootfs = pool.create_container("deb1", image_fp)
    assert os.getxattr(os.path.join(rootfs, "usr/bin/ping"), "security.capability",
                       follow_symlinks=False) == cap
    assert up.fingerprint_tree(rootfs) == fp
    print(f"container volume: {pool.container_usage('deb1') / 1e6:.0f} MB")
    pool.delete_container("deb1")
    pool.delete()
