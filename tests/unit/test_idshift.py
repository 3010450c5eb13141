"""The chown-shift walker and its id arithmetic, on a tmp dir of the host's filesystem (no
container): owners and groups mapped through two maps, out-of-map ids to nobody, setuid and
setgid bits kept, file capabilities and POSIX ACLs rewritten for the new owner, symlinks never
followed (a planted link to a host file leaves the host file alone), hard links shifted once,
a deep tree with one directory fd at a time, an interrupted walk finished without shifting
twice; and the policy's pure parts (map strings, the two-leg walk through the parking range).
"""

from __future__ import annotations

import os
import stat
import struct

import pytest

import sysmgr

from sysmgr._util import idshift as w
from sysmgr.engine import idshift as policy
from sysmgr.model.idmaps import format_idmap, parse_idmap, parse_raw_idmap
from sysmgr.types import IdMap
from tests.conftest import requires_root

BASE, ISO = 1_000_000, 1_065_536
M = IdMap(BASE, 65536)
M_LINES = M.mappings("uid")
UNSHIFTED = w.identity(M_LINES)          # container ids on disk, over M's container ids


def shifter(src, dst, **kw):
    return w.translator(src, dst, **kw)


# -- ids -----------------------------------------------------------------------------------------

def test_translator_maps_through_both_maps_and_out_of_map_ids_to_nobody():
    up = shifter(UNSHIFTED, M_LINES)
    assert up(0) == BASE and up(1234) == BASE + 1234 and up(65535) == BASE + 65535
    assert up(70000) == BASE + 65534 and up(BASE) == BASE + 65534  # outside: nobody, never aliased
    down = shifter(M_LINES, UNSHIFTED)
    assert down(BASE + 7) == 7 and down(5) == 65534
    across = shifter(M_LINES, IdMap(ISO, 65536).mappings("uid"))
    assert across(BASE) == ISO and across(BASE + 65535) == ISO + 65535


def test_resume_leaves_ids_already_in_the_target_map():
    fresh = shifter(M_LINES, IdMap(ISO, 65536).mappings("uid"))
    resumed = shifter(M_LINES, IdMap(ISO, 65536).mappings("uid"), resume=True)
    assert fresh(ISO + 3) == ISO + 65534      # a fresh walk reads it as out of the source map
    assert resumed(ISO + 3) == ISO + 3        # a resumed one as already written
    assert resumed(BASE + 3) == ISO + 3


def test_consistency_and_the_parking_leg():
    extra = IdMap(BASE, 65536, parse_raw_idmap("uid 5000 100"))
    assert policy.legs(None, M) == [(None, M)]
    assert policy.legs(M, IdMap(ISO, 65536)) == [(M, IdMap(ISO, 65536))]
    assert policy.legs(None, IdMap(BASE, 65536, parse_raw_idmap("both 1000 1000"))) \
        == [(None, IdMap(BASE, 65536, parse_raw_idmap("both 1000 1000")))]  # same id both sides
    # host 5000 is container id 100 in the target, but container id 5000 unshifted: ambiguous
    (a, park), (park2, b) = policy.legs(None, extra)
    assert (a, b) == (None, extra) and park == park2 and park.host_start == policy.PARK
    assert w.consistent(w.identity(park.mappings("uid")), park.mappings("uid"))
    assert w.consistent(park.mappings("uid"), extra.mappings("uid"))
    assert not w.consistent(w.identity(extra.mappings("uid")), extra.mappings("uid"))
    with pytest.raises(sysmgr.SysmgrError, match="parking range"):   # maps that use it
        policy.legs(None, IdMap(BASE, 65536, parse_raw_idmap(f"uid 5000 100\nuid {policy.PARK} 200")))


def test_map_strings_round_trip_and_reject_garbage():
    m = IdMap(BASE, 65536, parse_raw_idmap("both 1000 1000\nuid 5000-5009 100-109"))
    assert format_idmap(m) == "1000000:65536;both 1000 1000;uid 5000-5009 100-109"
    assert parse_idmap(format_idmap(m)) == m and parse_idmap("") is None and format_idmap(None) == ""
    for bad in ("1000000", "x:1", "1:0", "1:2;bogus 1 1", "4294967295:2"):
        with pytest.raises(ValueError):
            parse_idmap(bad)
    with pytest.raises(ValueError):
        policy.checked_state({"last_state.idmap": "nonsense"})
    assert policy.checked_state({"last_state.idmap": "1000000:65536", "other": "x"}) \
        == {"last_state.idmap": "1000000:65536"}


# -- xattr values --------------------------------------------------------------------------------

def caps_v2(effective: bool = True) -> bytes:
    return struct.pack("<IIIII", 0x02000000 | int(effective), 1 << 13, 0, 0, 0)  # cap_net_raw


def test_caps_get_the_new_root_id_and_go_back_to_v2_at_zero():
    up = shifter(UNSHIFTED, M_LINES)
    v3 = w.shift_caps(caps_v2(), up)
    magic, perm, _inh, _p2, _i2, root = struct.unpack("<IIIIII", v3)
    assert magic == 0x03000001 and perm == 1 << 13 and root == BASE
    assert w.shift_caps(v3, shifter(M_LINES, UNSHIFTED)) == caps_v2()
    assert w.shift_caps(b"\x01\x02", up) == b"\x01\x02"          # unknown: left as it is


def test_acl_named_users_and_groups_are_shifted():
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in [
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF), (0x08, 4, 2000),
        (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])
    out = w.shift_acl(acl, shifter(UNSHIFTED, M_LINES), lambda g: g + 7)
    ids = [struct.unpack_from("<HHI", out, off) for off in range(4, len(out), 8)]
    assert ids[1][2] == BASE + 1000 and ids[3][2] == 2007
    assert [x[2] for x in ids if x[0] not in (0x02, 0x08)] == [0xFFFFFFFF] * 4


# -- the walk (real chown on the host's filesystem) ---------------------------------------------

@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "bin").mkdir(parents=True)
    (t / "home" / "u").mkdir(parents=True)
    su = t / "bin" / "su"
    su.write_bytes(b"x")
    os.chmod(su, 0o4755)
    g = t / "bin" / "wall"
    g.write_bytes(b"x")
    os.chown(g, 0, 5)
    os.chmod(g, 0o2755)
    (t / "home" / "u" / "f").write_text("data")
    os.chown(t / "home" / "u", 1000, 1000)
    os.chown(t / "home" / "u" / "f", 1000, 1000)
    os.link(t / "home" / "u" / "f", t / "home" / "hardlink")
    os.mkfifo(t / "fifo")
    return t


@requires_root
def test_walk_shifts_keeps_setuid_and_never_follows_a_planted_symlink(tree, tmp_path):
    host_file = tmp_path / "host-secret"
    host_file.write_text("host")
    os.chown(host_file, 4242, 4242)
    os.symlink(str(host_file), tree / "home" / "evil")                 # absolute, to the host
    os.symlink("../../../host-secret", tree / "home" / "u" / "evil2")  # relative, climbing out
    up = shifter(UNSHIFTED, M_LINES)
    stats = w.shift_tree(str(tree), up, up)
    st = os.stat(host_file)
    assert (st.st_uid, st.st_gid) == (4242, 4242)                       # untouched
    link = os.lstat(tree / "home" / "evil")
    assert (link.st_uid, link.st_gid) == (BASE, BASE)                   # the link itself shifted
    su, wall = os.stat(tree / "bin" / "su"), os.stat(tree / "bin" / "wall")
    assert (su.st_uid, stat.S_IMODE(su.st_mode)) == (BASE, 0o4755)
    assert (wall.st_gid, stat.S_IMODE(wall.st_mode)) == (BASE + 5, 0o2755)
    f = os.stat(tree / "home" / "u" / "f")
    assert (f.st_uid, f.st_gid) == (BASE + 1000, BASE + 1000)          # once, not twice
    assert os.stat(tree).st_uid == BASE and os.stat(tree / "fifo").st_uid == BASE
    assert stats.entries == 10  # tree, bin, su, wall, home, u, f (and hardlink: once), evil, evil2, fifo
    down = shifter(M_LINES, UNSHIFTED)
    w.shift_tree(str(tree), down, down)
    f = os.stat(tree / "home" / "u" / "f")
    assert (f.st_uid, os.stat(tree / "bin" / "su").st_mode & 0o7777) == (1000, 0o4755)


@requires_root
def test_walk_rewrites_file_capabilities_and_acls(tree):
    f = str(tree / "bin" / "su")
    os.setxattr(f, "security.capability", caps_v2())
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in [
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
        (0x20, 4, 0xFFFFFFFF)])
    d = str(tree / "home")
    os.setxattr(d, "system.posix_acl_access", acl)
    up = shifter(UNSHIFTED, M_LINES)
    w.shift_tree(str(tree), up, up)
    caps = os.getxattr(f, "security.capability")
    assert struct.unpack("<I", caps[:4])[0] & 0xFF000000 == 0x03000000
    assert struct.unpack_from("<I", caps, 20)[0] == BASE                # root of the container
    named = struct.unpack_from("<HHI", os.getxattr(d, "system.posix_acl_access"), 12)
    assert named[0] == 0x02 and named[2] == BASE + 1000
    down = shifter(M_LINES, UNSHIFTED)
    w.shift_tree(str(tree), down, down)
    assert os.getxattr(f, "security.capability") == caps_v2()


@requires_root
def test_walk_of_a_deep_tree_holds_one_directory_fd(tmp_path):
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(600):   # deeper than PATH_MAX allows a path to be written out
            os.mkdir("d" * 40, dir_fd=fd)
            nxt = os.open("d" * 40, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        limit = len(os.listdir("/proc/self/fd")) + 8
        up = shifter(UNSHIFTED, M_LINES)
        counted = []
        real_open = os.open

        def watching_open(*a, **kw):  # the walk's fd count never grows with the depth
            counted.append(len(os.listdir("/proc/self/fd")))
            return real_open(*a, **kw)

        os.open = watching_open
        try:
            stats = w.shift_tree(str(top), up, up)
        finally:
            os.open = real_open
        assert stats.entries == 602 and max(counted) < limit
        assert os.stat("leaf", dir_fd=fd).st_uid == BASE
    finally:
        os.close(fd)
        down = shifter(M_LINES, UNSHIFTED)
        w.shift_tree(str(top), down, down)   # pytest removes it as root either way


@requires_root
def test_an_interrupted_walk_is_finished_without_shifting_twice(tree):
    iso = IdMap(ISO, 65536).mappings("uid")
    up = shifter(UNSHIFTED, M_LINES)
    w.shift_tree(str(tree), up, up)
    half = shifter(M_LINES, iso)
    w.shift_tree(str(tree / "home"), half, half)   # "killed" after /home
    rest = shifter(M_LINES, iso, resume=True)
    w.shift_tree(str(tree), rest, rest)
    owners = {os.lstat(os.path.join(d, n)).st_uid for d, ds, fs in os.walk(tree) for n in ds + fs}
    assert owners == {ISO, ISO + 1000}
