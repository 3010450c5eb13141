"""The cgroup-v2 code path against a fake cgroupfs in a tmp dir.

v2 cannot run on the reference host (every controller is bound to v1 there), so this fake
emulates the kernel's behaviour that the code relies on: ``mkdir`` creates the interface
files of the controllers the parent enables, ``cgroup.subtree_control`` takes ``+ctrl``
edits, ``cgroup.kill`` empties the cgroup, ``rmdir`` works on a dir holding only
interface files and refuses one with children.
"""

from __future__ import annotations

import errno
import os

import pytest

from sysmgr._util import device_bpf
from sysmgr.drivers.runtime.base import Limits
from sysmgr.drivers.runtime.cgroups import (
    DEFAULT_DEVICE_RULES, V1Cgroup, V2Cgroup, detect_version, open_cgroup, shares_to_weight,
)
from sysmgr.errors import DriverError, DriverUnavailable

CONTROLLER_FILES = {
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.current": "4096", "memory.peak": "8192"},
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100", "cpu.stat": "usage_usec 1500\nuser_usec 1000\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "3"},
}
CORE_FILES = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.events": "populated 0\nfrozen 0\n",
              "cgroup.freeze": "0", "cgroup.kill": ""}


def _put(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _get(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def make_root(tmp_path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> str:
    root = str(tmp_path / "cgroup")
    os.mkdir(root)
    _put(os.path.join(root, "cgroup.controllers"), controllers)
    for name, text in CORE_FILES.items():
        _put(os.path.join(root, name), text)
    return root


class FakeV2(V2Cgroup):
    """V2Cgroup whose file hooks behave like the kernel's cgroupfs."""

    refuse: dict[str, int] = {}  # file name -> errno the "kernel" answers writes with
    writes: list[tuple[str, str]]
    programs: list[tuple[str, bytes]]  # (cgroup dir, program) attached, in order

    def __init__(self, path: str, root: str) -> None:
        super().__init__(path, root)
        self.writes = []
        self.programs = []

    def _attach_devices(self, program: bytes) -> None:
        # a tmp dir is no cgroup: the kernel side is tested in tests/unit/test_device_bpf.py
        assert os.path.isdir(self.dir) and not _get(os.path.join(self.dir, "cgroup.procs"))
        self.programs.append((self.dir, program))

    def _mkdir(self, path: str) -> None:
        os.mkdir(path)
        enabled = _get(os.path.join(os.path.dirname(path), "cgroup.subtree_control")).split()
        _put(os.path.join(path, "cgroup.controllers"), " ".join(enabled))
        for name, text in CORE_FILES.items():
            _put(os.path.join(path, name), text)
        for ctrl in enabled:
            for name, text in CONTROLLER_FILES.get(ctrl, {}).items():
                _put(os.path.join(path, name), text)

    def _rmdir(self, path: str) -> None:
        if any(os.path.isdir(os.path.join(path, e)) for e in os.listdir(path)):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        for e in os.listdir(path):
            os.unlink(os.path.join(path, e))
        os.rmdir(path)

    def _write(self, path: str, value: str) -> None:
        name = os.path.basename(path)
        self.writes.append((os.path.relpath(path, self.root), value))
        if name in self.refuse:
            e = self.refuse[name]
            raise DriverError(f"cannot write {value!r} to {path}: {os.strerror(e)}")
        if not os.path.exists(path):
            super()._write(path, value)  # the real helper: ENOENT -> DriverError
        if name == "cgroup.subtree_control":
            cur = _get(path).split()
            for item in value.split():
                ctrl = item[1:]
                if ctrl not in _get(os.path.join(os.path.dirname(path), "cgroup.controllers")).split():
                    raise DriverError(f"cannot write {value!r} to {path}: No such file or directory")
                cur = [c for c in cur if c != ctrl] + ([ctrl] if item[0] == "+" else [])
            _put(path, " ".join(cur))
        elif name == "cgroup.kill":
            for sub, _, _ in os.walk(os.path.dirname(path)):
                _put(os.path.join(sub, "cgroup.procs"), "")
        elif name == "cgroup.procs":
            _put(path, (_get(path) + "\n" + value).strip())
        else:
            _put(path, value)


@pytest.fixture
def root(tmp_path) -> str:
    return make_root(tmp_path)


def test_detect_version(tmp_path) -> None:
    root = make_root(tmp_path)
    assert detect_version(root) == 2
    assert isinstance(open_cgroup("sysmgr-1a2b3c/web1", root), V2Cgroup)
    os.mkdir(os.path.join(root, "memory"))  # a v1 memory hierarchy: hybrid host
    assert detect_version(root) == 1
    assert detect_version(str(tmp_path / "nothing")) == 1


def test_v1_hierarchies_follow_the_mounts(tmp_path) -> None:
    root = str(tmp_path / "v1")
    for h in ("cpu,cpuacct", "memory", "systemd"):
        os.makedirs(os.path.join(root, h))
        _put(os.path.join(root, h, "cgroup.procs"), "")
    os.symlink("cpu,cpuacct", os.path.join(root, "cpu"))  # co-mount aliases are skipped
    os.makedirs(os.path.join(root, "not-a-cgroup"))
    cg = V1Cgroup("sysmgr-1a2b3c/web1", root)
    assert cg.hierarchies == ["cpu,cpuacct", "memory", "systemd"]
    assert cg._dir("cpuacct") == os.path.join(root, "cpu,cpuacct", "sysmgr-1a2b3c/web1")


@pytest.mark.parametrize("bad", ["", "/", "../x", "a/../b", "a/./b"])
def test_invalid_paths_are_refused(root: str, bad: str) -> None:
    with pytest.raises(DriverError):
        FakeV2(bad, root)


def test_create_enables_controllers_along_the_path(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    assert set(_get(os.path.join(root, "cgroup.subtree_control")).split()) == {"cpu", "cpuset", "memory", "pids"}
    assert set(_get(os.path.join(root, "sysmgr-1a2b3c", "cgroup.subtree_control")).split()) == {
        "cpu", "cpuset", "memory", "pids"}
    # the leaf enables nothing: processes live there (no-internal-processes rule)
    assert _get(os.path.join(cg.dir, "cgroup.subtree_control")) == ""
    assert cg.exists() and cg.dirs() == [cg.dir]
    assert cg.procs_files() == [os.path.join(cg.dir, "cgroup.procs")]


def test_limits_mapping(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits(cpuset="0-1", cpu_quota_us=50_000, cpu_period_us=100_000, cpu_shares=512,
                     memory_bytes=64 << 20, memory_swap=False, pids_max=100))
    files = {n: _get(os.path.join(cg.dir, n)) for n in
             ("memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "cpuset.cpus", "pids.max")}
    assert files == {"memory.max": str(64 << 20), "memory.swap.max": "0", "cpu.max": "50000 100000",
                     "cpu.weight": "50", "cpuset.cpus": "0-1", "pids.max": "100"}
    # removing every key live writes the "no limit" values
    cg.set_limits(Limits())
    files = {n: _get(os.path.join(cg.dir, n)) for n in files}
    assert files == {"memory.max": "max", "memory.swap.max": "max", "cpu.max": "max 100000",
                     "cpu.weight": "100", "cpuset.cpus": "", "pids.max": "max"}


@pytest.mark.parametrize("shares,weight", [(1024, 100), (512, 50), (2, 1), (1, 1), (262_144, 10_000), (10_240, 1000)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


def test_a_limit_needs_its_controller(tmp_path) -> None:
    root = make_root(tmp_path, controllers="cpu io memory pids")  # no cpuset on this host
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits(memory_bytes=1 << 30))  # fine without cpuset when cpuset is not asked for
    with pytest.raises(DriverUnavailable, match="cpuset.cpus"):
        cg.set_limits(Limits(cpuset="0"))


def test_refused_write_names_file_and_value_and_create_leaves_nothing(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.refuse = {"memory.max": errno.EBUSY}
    with pytest.raises(DriverError, match=r"cannot write '1048576' to .*memory\.max: Device or resource busy"):
        cg.create(Limits(memory_bytes=1 << 20))
    assert not cg.exists()
    assert not os.path.exists(os.path.join(root, "sysmgr-1a2b3c"))


def test_attach_procs_and_sub_cgroups(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    cg.attach(1234)
    # systemd inside makes its own sub-cgroups
    cg._mkdir(os.path.join(cg.dir, "init.scope"))
    _put(os.path.join(cg.dir, "init.scope", "cgroup.procs"), "1235\n1236")
    assert cg.procs() == {1234, 1235, 1236}


def test_freeze_thaw(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    _put(os.path.join(cg.dir, "cgroup.events"), "populated 1\nfrozen 1\n")  # what the kernel reports
    cg.freeze(timeout=0.1)
    assert _get(os.path.join(cg.dir, "cgroup.freeze")) == "1"
    assert cg.is_frozen()
    cg.thaw()
    _put(os.path.join(cg.dir, "cgroup.events"), "populated 1\nfrozen 0\n")
    assert _get(os.path.join(cg.dir, "cgroup.freeze")) == "0"
    assert not cg.is_frozen()


def test_kill_all_uses_cgroup_kill(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    cg.kill_all()  # empty: nothing written
    assert not any(f.endswith("cgroup.kill") for f, _ in cg.writes)
    _put(os.path.join(cg.dir, "cgroup.procs"), "999999999")
    cg.kill_all(timeout=1)
    assert (os.path.join("sysmgr-1a2b3c/web1", "cgroup.kill"), "1") in cg.writes
    assert cg.procs() == set()


def test_usage(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    u = cg.usage()
    assert (u.memory_bytes, u.memory_peak_bytes, u.pids, u.cpu_ns) == (4096, 8192, 3, 1_500_000)


def test_destroy_removes_sub_cgroups_and_the_prefix_with_the_last_container(root: str) -> None:
    a = FakeV2("sysmgr-1a2b3c/one", root)
    b = FakeV2("sysmgr-1a2b3c/two", root)
    a.create(Limits())
    b.create(Limits())
    a._mkdir(os.path.join(a.dir, "init.scope"))
    a._mkdir(os.path.join(a.dir, "system.slice"))
    a._mkdir(os.path.join(a.dir, "system.slice", "foo.service"))
    a.destroy()
    assert not a.exists()
    assert os.path.isdir(os.path.join(root, "sysmgr-1a2b3c"))  # "two" still lives there
    b.destroy()
    assert not os.path.exists(os.path.join(root, "sysmgr-1a2b3c"))
    b.destroy()  # idempotent
    assert b.usage().memory_bytes is None


def test_usage_detail_for_top_and_metrics(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits(memory_bytes=64 << 20))
    _put(os.path.join(cg.dir, "cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    _put(os.path.join(cg.dir, "memory.stat"), "anon 700\nfile 300\nfile_dirty 5\n")
    _put(os.path.join(cg.dir, "memory.swap.current"), "12")
    plain = cg.usage()
    assert plain.memory_limit_bytes is None and plain.memory_stat == {}  # a listing skips them
    u = cg.usage(detail=True)
    assert u.memory_limit_bytes == 64 << 20 and u.swap_bytes == 12
    assert u.memory_stat["RSS"] == 700 and u.memory_stat["Cached"] == 300
    assert u.memory_stat["Dirty"] == 5
    assert u.cpu_modes == {"0": {"user": 1_000_000, "system": 500_000}}
    assert u.cpu_ns == 1_500_000


def test_usage_counts_oom_kills(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    _put(os.path.join(cg.dir, "memory.events"), "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    assert cg.usage().oom_kills == 2


def test_exec_joins_the_container_while_it_is_a_leaf_then_a_leaf_below(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits())
    assert cg.join_files() == [os.path.join(cg.dir, "cgroup.procs")]
    _put(os.path.join(cg.dir, "cgroup.subtree_control"), "pids")  # systemd inside did this
    leaf = os.path.join(cg.dir, V2Cgroup.EXEC_LEAF)
    assert cg.join_files() == [os.path.join(leaf, "cgroup.procs")]
    assert cg.join_files() == [os.path.join(leaf, "cgroup.procs")]  # exists already: fine
    cg.destroy()
    assert not os.path.exists(cg.dir)


def test_delegated_cgroups_live_in_the_scope_and_never_touch_the_root(root: str) -> None:
    # systemd made sysmgr.slice/sysmgr-1a2b3c.scope (Delegate=yes: controllers available)
    scope = os.path.join(root, "sysmgr.slice", "sysmgr-1a2b3c.scope")
    os.makedirs(scope)
    _put(os.path.join(scope, "cgroup.controllers"), "cpu cpuset memory pids")
    for name, text in CORE_FILES.items():
        _put(os.path.join(scope, name), text)
    _put(os.path.join(scope, "cgroup.events"), "populated 1\nfrozen 0\n")  # a container lives there
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.base = scope  # what systemd_owns_root() selects on a systemd host
    cg.create(Limits(pids_max=9))
    assert cg.dir == os.path.join(scope, "web1")
    assert _get(os.path.join(cg.dir, "pids.max")) == "9"
    assert all(not path.startswith("cgroup.subtree_control") for path, _ in cg.writes)
    assert set(_get(os.path.join(scope, "cgroup.subtree_control")).split()) == {"cpu", "cpuset", "memory", "pids"}
    cg.destroy()
    assert not os.path.exists(cg.dir) and os.path.isdir(scope)  # the scope is systemd's to remove


def test_detect_layout(tmp_path) -> None:
    from sysmgr.drivers.runtime.cgroup_layout import detect_layout

    root = make_root(tmp_path)
    assert detect_layout(root).kind == "unified" and not detect_layout(root).systemd
    os.mkdir(os.path.join(root, "init.scope"))
    assert detect_layout(root).systemd
    hybrid = tmp_path / "hybrid"
    (hybrid / "memory").mkdir(parents=True)
    (hybrid / "unified").mkdir()
    _put(str(hybrid / "unified" / "cgroup.controllers"), "hugetlb")
    assert detect_layout(str(hybrid)).kind == "hybrid"
    os.rmdir(hybrid / "memory")
    os.unlink(hybrid / "unified" / "cgroup.controllers")
    assert detect_layout(str(hybrid)).kind == "v1"


def test_create_attaches_the_device_policy_to_the_containers_cgroup(root: str) -> None:
    rules = [(False, "a"), (True, "c 1:3 rwm"), (True, "c 136:* rwm")]
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    cg.create(Limits(), rules)
    assert cg.programs == [(cg.dir, device_bpf.assemble(rules))]
    dflt = FakeV2("sysmgr-1a2b3c/web2", root)
    dflt.create(Limits())  # no rules given: the defaults, never "no policy"
    assert dflt.programs == [(dflt.dir, device_bpf.assemble(DEFAULT_DEVICE_RULES))]


def test_a_bad_device_rule_fails_before_anything_exists(root: str) -> None:
    cg = FakeV2("sysmgr-1a2b3c/web1", root)
    with pytest.raises(DriverError, match=r"invalid device rule 'c 1:3 rwx'"):
        cg.create(Limits(), [(False, "a"), (True, "c 1:3 rwx")])
    assert not cg.exists() and cg.programs == []
    assert not os.path.exists(os.path.join(root, "sysmgr-1a2b3c"))


def test_a_refused_device_program_leaves_no_cgroup(root: str) -> None:
    class Refusing(FakeV2):
        def _attach_devices(self, program: bytes) -> None:
            raise DriverError("the kernel refused the cgroup device program (Permission denied): R0 !read_ok")

    cg = Refusing("sysmgr-1a2b3c/web1", root)
    with pytest.raises(DriverError, match="R0 !read_ok"):
        cg.create(Limits())
    assert not cg.exists()
    assert not os.path.exists(os.path.join(root, "sysmgr-1a2b3c"))
