"""How a forked child joins a container's cgroups (sysmgr.drivers.runtime.native.cgjoin), on
the real kernel of whichever layout the host has (v1/hybrid here, pure v2 in the guests of
``scripts/test-cgroup2``): born in the cgroup2 one (clone3 CLONE_INTO_CGROUP), its thread moved
in each v1 one, and the plain fork + ``cgroup.procs`` where a birth is refused."""

from __future__ import annotations

import os
import threading

import pytest

import errno

from sysmgr._util import linux
from sysmgr.drivers.runtime.base import Limits
from sysmgr.drivers.runtime.cgroups import open_cgroup
from sysmgr.drivers.runtime.native import cgjoin

pytestmark = [pytest.mark.cgroup2, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture
def cgroup(request):
    cg = open_cgroup(f"sysmgr-test-{os.getpid()}/join")
    cg.create(Limits())
    yield cg
    cg.destroy()


def _child_cgroups(cg, files) -> tuple[dict[str, str], tuple[str, ...]]:
    """Fork through cgjoin; the child joins and reports /proc/self/cgroup. Returns the
    child's cgroup per hierarchy line and what the parent was told the child must write."""
    r, w = os.pipe()
    pid, joins = cgjoin.fork(files)
    if pid == 0:
        code = 1
        try:
            os.close(r)
            cgjoin.join(joins)
            with open("/proc/self/cgroup", "rb") as f:
                os.write(w, f.read())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in out.splitlines()}, joins


def _in(cgroup, path: str) -> bool:
    """Whether ``path`` (a line of /proc/PID/cgroup) is one of the container's directories
    (or the v1 devices hierarchy's leaf below it, where processes live)."""
    return any(d.endswith(path) for base in cgroup.dirs() for d in (base, base + "/.payload"))


def test_the_child_is_in_the_cgroup_of_every_hierarchy(cgroup) -> None:
    seen, joins = _child_cgroups(cgroup, cgroup.procs_files())
    want = "/" + cgroup.path
    # every hierarchy the container has (v1 controllers, name=systemd, cgroup2 as ""; the v1
    # devices one has a leaf of its own below, where processes live; under systemd the v2 one
    # is in sysmgr's delegated scope)
    assert seen and all(_in(cgroup, path) for path in seen.values()), seen
    v2 = [f for f in cgroup.procs_files() if not os.path.exists(os.path.join(os.path.dirname(f), "tasks"))]
    if v2:  # born there: nothing left to write for it (clone3 into a leaf does not fail)
        assert all(not j.startswith(os.path.dirname(v2[0]) + "/") for j in joins), joins
    assert all(j.endswith("/tasks") for j in joins), joins
    # and the parent did not move
    assert want not in open("/proc/self/cgroup").read()


def test_a_process_with_threads_forks_plainly_and_migrates(cgroup) -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not linux.single_threaded()
        seen, joins = _child_cgroups(cgroup, cgroup.procs_files())
    finally:
        stop.set()
        t.join()
    assert all(_in(cgroup, path) for path in seen.values()), seen
    v2 = cgjoin.split(cgroup.procs_files())[0]
    if v2 is not None:  # the cgroup2 one joined the old way, by pid
        assert os.path.join(v2, "cgroup.procs") in joins


def test_a_refused_birth_is_an_error_and_forks_nothing() -> None:
    """clone3's refusal comes back as OSError with its errno (cgjoin.fork then forks the old
    way), and no child was made."""
    before, children = set(os.listdir("/proc/self/task")), _children()
    with pytest.raises(OSError) as e:
        linux.fork_into_cgroup(10_000)  # not an open fd
    assert e.value.errno == errno.EBADF
    # other tests of the same run may have children of their own still running, so compare
    # this process's children rather than asking waitpid(-1) whether there are none
    assert _children() == children
    assert set(os.listdir("/proc/self/task")) == before


def _children() -> set[str]:
    """The pids of this process's children, from every thread's /proc children list."""
    found: set[str] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            found.update(f.read().split())
    return found
