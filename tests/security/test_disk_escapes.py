"""Disk devices against a hostile tenant: a bind of a host file or directory must give the
container exactly that, read-only when asked, and nothing else of the host.

The tenant is root inside an unprivileged container (the default) and owns every path of its
root filesystem: it plants symlinks where the admin will mount (before a start, or while
the container runs, before a live add), tries to make a read-only disk writable (remount,
a bind of it remounted, unmount to reach beneath), and looks for the staging sysmgr uses on
the way in. Each test checks the host side too: the host files a symlink pointed at are
untouched, and nothing of the staging is left mounted on the host.
"""

from __future__ import annotations

import os

import pytest

from sysmgr.errors import SysmgrError
from tests.conftest import requires_root, sh
from tests.security.helpers import ENGINES, use_engine

pytestmark = requires_root


@pytest.fixture
def client(busybox_client):
    return busybox_client


@pytest.fixture
def host(tmp_path):
    """``source``: a host directory to bind in; ``victim``: a host directory the tenant's
    symlinks point at (must stay empty); ``secret``: a host file it must never read."""
    src = tmp_path / "source"
    src.mkdir()
    (src / "f").write_text("shared\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    return src, victim, secret


def host_mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_symlinks_planted_before_a_start_resolve_inside_the_container(client, host):
    src, victim, _ = host
    c = client.containers.create("c1", "busybox")
    rootfs = client.host.pool_driver("default").container_path("c1")
    # an absolute link to the host directory, and a relative one climbing out of the rootfs
    os.symlink(str(victim), os.path.join(rootfs, "abs"))
    os.symlink("../" * 30 + str(victim).lstrip("/"), os.path.join(rootfs, "rel"))
    c.devices["a"] = {"type": "disk", "source": str(src), "path": "/abs/a"}
    c.save()
    # the links lead nowhere inside yet: refused, never followed to the host's directory
    with pytest.raises(SysmgrError, match="/abs is a symlink to a missing directory"):
        c.start()
    assert os.listdir(victim) == []
    os.makedirs(os.path.join(rootfs, str(victim).lstrip("/")))  # the same path, inside
    c.devices["r"] = {"type": "disk", "source": str(src), "path": "/rel/r"}
    c.save()
    c.start()
    assert os.listdir(victim) == []                       # nothing was made nor mounted there
    assert str(victim) + "/" not in host_mounts()
    # the same path, in the container (where its init may since have mounted a tmpfs on /tmp)
    points = {line.split()[4]: line.split()[3] for line in
              sh(c, "cat /proc/self/mountinfo")[1].splitlines()}
    assert points[f"{victim}/a"] == points[f"{victim}/r"] == str(src)
    assert os.path.isdir(os.path.join(rootfs, str(victim).lstrip("/"), "a"))


def test_symlinks_planted_before_a_live_add_resolve_inside_the_container(client, host):
    src, victim, _ = host
    c = client.containers.create("c1", "busybox", start=True)
    # once rcS has mounted its /tmp, which would otherwise hide what is made there
    code, out = sh(c, "until [ -e /run/booted ]; do sleep 0.05; done;"
                      f" ln -s {victim} /abs && ln -s {'../' * 30}{str(victim).lstrip('/')} /rel"
                      f" && ln -s /proc/1/root/tmp /magic && mkdir -p {victim}")
    assert code == 0, out
    c.devices.update({"a": {"type": "disk", "source": str(src), "path": "/abs/a"},
                      "r": {"type": "disk", "source": str(src), "path": "/rel/r"}})
    assert c.save() == []
    assert os.listdir(victim) == [] and str(victim) + "/" not in host_mounts()
    assert sh(c, f"cat {victim}/a/f {victim}/r/f") == (0, "shared\nshared\n")
    # a /proc magic link is not followed at all: the add fails and changes nothing
    c.devices["m"] = {"type": "disk", "source": str(src), "path": "/magic/m"}
    with pytest.raises(SysmgrError, match="magic link"):
        c.save()
    assert "m" not in c.refresh().devices
    assert sh(c, "ls /tmp/m 2>&1; grep -c ' /tmp/m ' /proc/self/mountinfo")[1].endswith("0\n")


def test_symlinks_inside_the_source_resolve_inside_the_container(client, host):
    src, _, secret = host
    os.symlink(str(secret), src / "link")
    c = client.containers.create("c1", "busybox", start=True, devices={
        "d": {"type": "disk", "source": str(src), "path": "/data", "shift": "true"}})
    code, out = sh(c, "cat /data/link 2>&1; true")
    assert "host secret" not in out


def test_a_readonly_disk_stays_readonly_whatever_root_inside_does(client, host):
    src, _, _ = host
    c = client.containers.create("c1", "busybox", start=True, devices={
        "ro": {"type": "disk", "source": str(src), "path": "/ro", "readonly": "true",
               "shift": "true"}})
    c.devices["live"] = {"type": "disk", "source": str(src), "path": "/live", "readonly": "true",
                         "shift": "true"}
    assert c.save() == []
    for path in ("/ro", "/live"):
        code, out = sh(c, f"mount -o remount,rw {path} && echo REMOUNT1;"
                          f" mount -o remount,bind,rw {path} && echo REMOUNT2;"
                          f" mkdir -p /copy{path} && mount --bind {path} /copy{path} &&"
                          f" mount -o remount,bind,rw /copy{path} && echo REMOUNT3;"
                          f" touch {path}/w /copy{path}/w && echo WROTE; true")
        assert not any(w in out for w in ("REMOUNT", "WROTE")), (path, out)
    assert sorted(os.listdir(src)) == ["f"]


def test_the_staging_never_shows_inside_nor_stays_on_the_host(client, host):
    src, _, _ = host
    before = host_mounts()
    c = client.containers.create("c1", "busybox", start=True, devices={
        "d": {"type": "disk", "source": str(src), "path": "/d", "readonly": "true"}})
    c.devices["e"] = {"type": "disk", "source": str(src), "path": "/e"}
    assert c.save() == []
    code, out = sh(c, "ls /tmp; grep -c -E 'sysmgr-(binds|sources|rootfs)' /proc/self/mountinfo;"
                      " true")
    assert "sysmgr-" not in out and out.strip().endswith("0"), out
    assert "sysmgr-binds" not in host_mounts() and "sysmgr-sources" not in host_mounts()
    assert host_mounts().count(str(src)) == before.count(str(src))


def test_a_container_cannot_bind_host_paths_itself(client, host):
    """Root inside has CAP_SYS_ADMIN over its own mounts only: a host path by its name is
    not there, /proc shows only its own processes (no other process's root to go through),
    and the detached trees sysmgr opened are gone with the helpers that held them."""
    src, _, secret = host
    c = client.containers.create("c1", "busybox", start=True, devices={
        "d": {"type": "disk", "source": str(src), "path": "/d"}})
    code, out = sh(c, f"mkdir -p /mnt/x; mount --bind {secret.parent} /mnt/x && echo BOUND;"
                      " for p in /proc/[0-9]*; do readlink $p/root; done | sort -u;"
                      f" cat /proc/1/root{secret} 2>&1; true")
    assert "BOUND" not in out and "host secret" not in out, out
    assert out.split("\n")[0] == "/" or "/\n" in out  # every process's root is the container's


# -- under the OCI engines ---------------------------------------------------------------------

@pytest.mark.parametrize("engine", [p for p in ENGINES if p.values[0] != "native"])
def test_oci_engines_refuse_a_planted_symlink_and_keep_a_readonly_disk_readonly(client, host,
                                                                                 engine):
    """crun and runc resolve some mount destinations on the host before pivot_root: a start
    with a link planted where a disk goes is refused (nothing made behind it); a read-only
    disk (staged by sysmgr in the runtime's own mount namespace) stays read-only."""
    src, victim, _ = host
    use_engine(client, engine)
    c = client.containers.create("c1", "busybox", devices={
        "a": {"type": "disk", "source": str(src), "path": "/abs/a"}})
    rootfs = client.host.pool_driver("default").container_path("c1")
    os.makedirs(os.path.join(rootfs, str(victim).lstrip("/")))
    os.symlink(str(victim), os.path.join(rootfs, "abs"))
    with pytest.raises(SysmgrError, match="/abs is a symlink"):
        c.start()
    assert os.listdir(victim) == [] and str(victim) + "/" not in host_mounts()
    c.delete(force=True)
    ro = {"ro": {"type": "disk", "source": str(src), "path": "/ro", "readonly": "true"}}
    if engine == "crun":  # it would bind it afresh, unlocked: refused instead
        with pytest.raises(SysmgrError, match="read-only disk"):
            client.containers.create("c2", "busybox", start=True, devices=ro)
        return
    c = client.containers.create("c2", "busybox", start=True, devices=ro)
    assert sh(c, "cat /ro/f")[1] == "shared\n"
    code, out = sh(c, "mount -o remount,rw /ro && echo REMOUNT1;"
                      " mount -o remount,bind,rw /ro && echo REMOUNT2;"
                      " touch /ro/w && echo WROTE; true")
    assert not any(w in out for w in ("REMOUNT", "WROTE")), out
    assert sorted(os.listdir(src)) == ["f"]
    assert "/run/sysmgr-oci" not in host_mounts()  # the staging stayed in its namespace
