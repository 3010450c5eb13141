"""safefs: every lookup stays inside the container root, whatever the rootfs contains."""

from __future__ import annotations

import io
import os
import stat

import pytest

from sysmgr._util import safefs
from sysmgr.errors import NotFound, ValidationError


@pytest.fixture
def host(tmp_path):
    """A fake 'host' directory with a precious file, beside the container root."""
    h = tmp_path / "host"
    (h / "etc").mkdir(parents=True)
    (h / "etc" / "passwd").write_text("HOST\n")
    return h


@pytest.fixture
def root(tmp_path, host):
    """A container root with its own /etc/passwd and hostile symlinks."""
    r = tmp_path / "deep" / "er" / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("CONTAINER\n")
    (r / "tmp").mkdir()
    host_passwd = str(host / "etc" / "passwd")
    os.symlink("/etc/passwd", r / "abs")                     # absolute: means the container's
    os.symlink("../../../../../../etc/passwd", r / "tmp" / "rel")   # climbs past the root
    os.symlink(host_passwd, r / "tmp" / "hostpath")          # the host's path: missing inside
    os.symlink("/", r / "rootlink")
    os.symlink("../../../../../../..", r / "up")
    return str(r)


def test_absolute_symlink_reads_the_containers_file(root):
    assert safefs.read_file(root, "/abs") == b"CONTAINER\n"
    assert safefs.resolve(root, "/abs") == "/etc/passwd"


def test_relative_symlink_cannot_climb_out(root):
    assert safefs.read_file(root, "/tmp/rel") == b"CONTAINER\n"


def test_host_path_symlink_is_looked_up_inside(root):
    with pytest.raises(NotFound, match="not found in container"):
        safefs.read_file(root, "/tmp/hostpath")


def test_dotdot_in_request_cannot_escape(root, host):
    rel_to_host = os.path.relpath(str(host / "etc" / "passwd"), root)
    assert rel_to_host.startswith("..")
    with pytest.raises(NotFound):
        safefs.read_file(root, rel_to_host)
    assert safefs.read_file(root, "/../../../../etc/passwd") == b"CONTAINER\n"
    assert safefs.read_file(root, "up/etc/passwd") == b"CONTAINER\n"
    assert safefs.read_file(root, "rootlink/../etc/passwd") == b"CONTAINER\n"


def test_magic_links_refused():
    # /proc/self/root is a magic link: following it would leave any root
    with pytest.raises(ValidationError, match="magic link"):
        safefs.read_file("/", "/proc/self/root/etc/passwd")


def test_push_through_symlink_never_touches_host(root, host):
    host_passwd = host / "etc" / "passwd"
    for link in ("/abs", "/tmp/rel", "/tmp/hostpath"):
        safefs.write_file(root, link, b"NEW\n")
        # the final symlink is replaced by a regular file, its target untouched
        st = os.lstat(os.path.join(root, link.lstrip("/")))
        assert stat.S_ISREG(st.st_mode)
    assert host_passwd.read_text() == "HOST\n"
    assert safefs.read_file(root, "/etc/passwd") == b"CONTAINER\n"


def test_push_via_symlinked_parent_stays_inside(root, host):
    os.symlink(str(host / "etc"), os.path.join(root, "hostetc"))
    with pytest.raises(NotFound):
        safefs.write_file(root, "/hostetc/passwd", b"PWNED\n")
    # a parent that is an absolute link to /etc means the container's /etc
    os.symlink("/etc", os.path.join(root, "etclink"))
    safefs.write_file(root, "/etclink/passwd", b"VIA LINK\n")
    assert safefs.read_file(root, "/etc/passwd") == b"VIA LINK\n"
    assert (host / "etc" / "passwd").read_text() == "HOST\n"


def test_push_dotdot_stays_inside(root, host):
    safefs.write_file(root, "/../../../../../../etc/passwd", b"X\n")
    assert (host / "etc" / "passwd").read_text() == "HOST\n"
    assert safefs.read_file(root, "/etc/passwd") == b"X\n"


def test_push_mode_owner_and_parents(root):
    data = b"hello\n" * 1000
    n = safefs.push(root, "/srv/a/b/file", io.BytesIO(data), mode=0o4750, uid=1000, gid=1001,
                    mkdir_parents=True)
    assert n == len(data)
    st = safefs.stat(root, "/srv/a/b/file")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4750, 1000, 1001)
    d = os.stat(os.path.join(root, "srv", "a"))
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1000, 1001, 0o755)
    buf = io.BytesIO()
    assert safefs.pull(root, "srv/a/b/file", buf) == len(data)
    assert buf.getvalue() == data


def test_push_mkdir_parents_through_symlink_stays_inside(root, host):
    os.symlink(str(host), os.path.join(root, "hostdir"))  # dangling inside the root
    with pytest.raises(ValidationError, match="symlink to a missing directory"):
        safefs.write_file(root, "/hostdir/new/f", b"x", mkdir_parents=True)
    assert not (host / "new").exists()
    # a link to an absolute path that exists inside: created inside
    os.makedirs(os.path.join(root, str(host).lstrip("/")))
    safefs.write_file(root, "/hostdir/new/f", b"x", mkdir_parents=True)
    assert not (host / "new").exists()
    assert safefs.read_file(root, str(host / "new" / "f")) == b"x"


def test_push_truncates_existing_file_in_place(root):
    p = os.path.join(root, "etc", "passwd")
    ino = os.stat(p).st_ino
    safefs.write_file(root, "/etc/passwd", b"short")
    assert os.stat(p).st_ino == ino
    assert safefs.read_file(root, "/etc/passwd") == b"short"


def test_push_without_parent_is_not_found(root):
    with pytest.raises(NotFound, match="/nope/dir"):
        safefs.write_file(root, "/nope/dir/f", b"x")


def test_errors_are_translated(root):
    with pytest.raises(NotFound, match="/etc/missing not found in container"):
        safefs.read_file(root, "/etc/missing")
    with pytest.raises(ValidationError, match="is a directory"):
        safefs.read_file(root, "/etc")
    with pytest.raises(ValidationError, match="is a directory"):
        safefs.write_file(root, "/etc", b"x")
    with pytest.raises(ValidationError):
        safefs.read_file(root, "/etc/passwd/x")
    with pytest.raises(ValidationError):
        safefs.write_file(root, "/", b"x")


def test_fifo_is_refused_without_blocking(root):
    os.mkfifo(os.path.join(root, "tmp", "fifo"))
    with pytest.raises(ValidationError, match="not a regular file"):
        safefs.read_file(root, "/tmp/fifo")
    with pytest.raises(ValidationError, match="not a regular file"):
        safefs.write_file(root, "/tmp/fifo", b"x")


def test_stat_exists_and_lstat(root):
    assert safefs.exists(root, "/abs")
    assert not safefs.exists(root, "/tmp/hostpath")
    assert not safefs.exists(root, "/etc/passwd/sub")
    assert stat.S_ISLNK(safefs.stat(root, "/abs", follow_symlinks=False).st_mode)
    assert stat.S_ISREG(safefs.stat(root, "/abs").st_mode)


def test_open_root_fd_reuse_and_missing_root(root, tmp_path):
    fd = safefs.open_root(root)
    try:
        assert safefs.read_file(fd, "/abs") == b"CONTAINER\n"
        assert safefs.resolve(fd, "/") == "/"
    finally:
        os.close(fd)
    with pytest.raises(NotFound):
        safefs.open_root(str(tmp_path / "missing"))


def test_symlink_and_unlink(root, host):
    safefs.symlink(root, "/etc/systemd-mask", "/dev/null")
    assert os.readlink(os.path.join(root, "etc", "systemd-mask")) == "/dev/null"
    safefs.symlink(root, "/abs", "/dev/null")  # replaces, does not follow
    assert os.readlink(os.path.join(root, "abs")) == "/dev/null"
    assert safefs.read_file(root, "/etc/passwd") == b"CONTAINER\n"
    safefs.unlink(root, "/tmp/hostpath")
    assert not os.path.lexists(os.path.join(root, "tmp", "hostpath"))
    assert (host / "etc" / "passwd").exists()
    safefs.unlink(root, "/tmp/hostpath")  # missing is fine
    with pytest.raises(NotFound):
        safefs.unlink(root, "/tmp/hostpath", missing_ok=False)


def test_fds_are_not_leaked(root):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        safefs.read_file(root, "/abs")
        safefs.write_file(root, "/tmp/x", b"y", mkdir_parents=True)
        with pytest.raises(NotFound):
            safefs.read_file(root, "/nope")
        with pytest.raises(ValidationError):
            safefs.read_file(root, "/etc")
    assert len(os.listdir("/proc/self/fd")) == before


def test_rename_noreplace(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()  # plain rename(2) would replace this empty directory
    with pytest.raises(FileExistsError):
        safefs.rename_noreplace(str(a), str(b))
    safefs.rename_noreplace(str(a), str(tmp_path / "c"))
    assert (tmp_path / "c").is_dir() and not a.exists()
