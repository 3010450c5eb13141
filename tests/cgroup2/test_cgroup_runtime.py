"""cgroup-facing behaviour of the native runtime on the real kernel, on whichever layout the
host has: the v1 (hybrid) CI host in the normal suite, and the pure cgroup-v2 guests of
``scripts/test-cgroup2`` (busybox initramfs as PID 1; systemd as PID 1, where the
containers must live in sysmgr's delegated scope). Marked ``cgroup2``.

Each limit is checked at start and changed live, in the files of the host's layout.
"""

from __future__ import annotations

import os
import signal

import pytest

from sysmgr._util import bpf
from sysmgr._util.proc import run
from sysmgr.drivers.runtime.base import FROZEN, RUNNING, STOPPED, Limits
from sysmgr.drivers.runtime.cgroup_layout import DELEGATE_SLICE, detect_layout
from sysmgr.drivers.runtime.cgroups import CGROUP_ROOT, V2Cgroup, open_cgroup
from sysmgr.errors import Conflict
from sysmgr.drivers.runtime.oci import OciRuntime
from tests.integration.test_runtime import ENGINES, Env, run_in, wait_for

pytestmark = [pytest.mark.cgroup2, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

MiB = 1 << 20
LAYOUT = detect_layout()
V2 = LAYOUT.kind == "unified"


@pytest.fixture(params=ENGINES)
def env(tmp_path, busybox_rootfs, request):
    """The contract under each runtime engine (crun and runc skipped when not installed)."""
    e = Env(str(tmp_path), busybox_rootfs, request.node.originalname, request.param)
    yield e
    e.close()


def read(cgroup: str, v1: tuple[str, str], v2: str) -> str:
    """A cgroup file of the container: ``v1`` = (controller, file), ``v2`` = file."""
    cg = open_cgroup(cgroup)
    path = os.path.join(cg.dirs()[0], v2) if V2 else os.path.join(CGROUP_ROOT, v1[0], cgroup, v1[1])
    with open(path) as f:
        return f.read().strip()


def test_memory_and_swap_limits_at_start_and_live(env: Env) -> None:
    rec = env.start(limits=Limits(memory_bytes=64 * MiB, memory_swap=False))
    assert int(read(rec.cgroup, ("memory", "memory.limit_in_bytes"), "memory.max")) == 64 * MiB
    if V2:
        assert read(rec.cgroup, ("", ""), "memory.swap.max") == "0"
    else:
        assert int(read(rec.cgroup, ("memory", "memory.memsw.limit_in_bytes"), "")) == 64 * MiB
    env.rt.set_limits(rec.cgroup, Limits(memory_bytes=128 * MiB, memory_swap=True))
    assert int(read(rec.cgroup, ("memory", "memory.limit_in_bytes"), "memory.max")) == 128 * MiB
    if V2:
        assert read(rec.cgroup, ("", ""), "memory.swap.max") == "max"
    env.rt.set_limits(rec.cgroup, Limits())
    assert read(rec.cgroup, ("memory", "memory.limit_in_bytes"), "memory.max") in ("max", str((1 << 63) - 4096))


def test_oom_kill_is_counted_in_usage(env: Env) -> None:
    rec = env.start(limits=Limits(memory_bytes=32 * MiB, memory_swap=False))
    assert env.rt.usage(rec.cgroup).oom_kills == 0
    code, _, _ = run_in(env.rt, rec, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    assert code == 128 + signal.SIGKILL
    assert (env.rt.usage(rec.cgroup).oom_kills or 0) >= 1
    assert env.rt.status(rec).state == RUNNING  # only the hog died


def test_cpuset_at_start_and_live(env: Env) -> None:
    rec = env.start(limits=Limits(cpuset="0"))
    assert read(rec.cgroup, ("cpuset", "cpuset.cpus"), "cpuset.cpus") == "0"
    assert "Cpus_allowed_list:\t0" in env.sh(rec, "cat /proc/self/status")[1]
    if os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        env.rt.set_limits(rec.cgroup, Limits(cpuset="1"))
        assert read(rec.cgroup, ("cpuset", "cpuset.cpus"), "cpuset.cpus") == "1"
        assert "Cpus_allowed_list:\t1" in env.sh(rec, "cat /proc/self/status")[1]


def test_cpu_allowance_both_forms_at_start_and_live(env: Env) -> None:
    rec = env.start(limits=Limits(cpu_quota_us=25_000, cpu_period_us=100_000))  # "25ms/100ms"
    if V2:
        assert read(rec.cgroup, ("", ""), "cpu.max") == "25000 100000"
    else:
        assert read(rec.cgroup, ("cpu", "cpu.cfs_quota_us"), "") == "25000"
    env.rt.set_limits(rec.cgroup, Limits(cpu_shares=512))  # "50%": a relative weight
    if V2:
        assert read(rec.cgroup, ("", ""), "cpu.max") == "max 100000"
        assert read(rec.cgroup, ("", ""), "cpu.weight") == "50"
    else:
        assert read(rec.cgroup, ("cpu", "cpu.cfs_quota_us"), "") == "-1"
        assert read(rec.cgroup, ("cpu", "cpu.shares"), "") == "512"


def test_processes_limit_at_start_and_live(env: Env) -> None:
    rec = env.start(limits=Limits(pids_max=20))
    assert read(rec.cgroup, ("pids", "pids.max"), "pids.max") == "20"
    # the sleepers must not hold the exec's pipes open (run_in reads them to EOF)
    bomb = "i=0; while [ $i -lt 40 ]; do sleep 600 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo all"
    code, out, err = env.sh(rec, bomb)
    assert "all" not in out and "fork" in err.lower()
    usage = env.rt.usage(rec.cgroup)
    assert usage.pids is not None and usage.pids <= 20
    env.rt.set_limits(rec.cgroup, Limits(pids_max=77))
    assert read(rec.cgroup, ("pids", "pids.max"), "pids.max") == "77"


def test_freeze_and_unfreeze(env: Env) -> None:
    rec = env.start()
    env.rt.freeze(rec)
    assert env.rt.status(rec).state == FROZEN
    if V2:
        assert read(rec.cgroup, ("", ""), "cgroup.freeze") == "1"
        assert "frozen 1" in read(rec.cgroup, ("", ""), "cgroup.events")
    else:
        assert read(rec.cgroup, ("freezer", "freezer.state"), "") == "FROZEN"
    with pytest.raises(Conflict, match="frozen"):
        run_in(env.rt, rec, "true")
    env.rt.unfreeze(rec)
    assert env.rt.status(rec).state == RUNNING
    assert run_in(env.rt, rec, "echo", "thawed")[1].strip() == "thawed"


def test_forced_stop_of_a_frozen_container_leaves_no_cgroup(env: Env) -> None:
    rec = env.start()
    env.rt.freeze(rec)
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=0, force=True)
    assert env.rt.status(rec).state == STOPPED
    assert not open_cgroup(rec.cgroup).exists()


def test_stop_leaves_no_cgroup_and_no_prefix(env: Env) -> None:
    a = env.start(env.spec("a"))
    b = env.start(env.spec("b"))
    cg = open_cgroup(a.cgroup)
    prefix_dir = os.path.dirname(cg.dirs()[0])
    env.rt.stop(a, halt_signal=signal.SIGUSR2, timeout=5, force=False)
    assert not cg.exists() and os.path.isdir(prefix_dir)  # b still lives there
    env.rt.stop(b, halt_signal=signal.SIGUSR2, timeout=5, force=False)
    assert not open_cgroup(b.cgroup).exists()
    wait_for(lambda: not os.path.isdir(prefix_dir), what=f"{prefix_dir} to go")


@pytest.mark.skipif(not V2, reason="cgroup v2 only: the no-internal-processes rule")
def test_exec_joins_a_leaf_once_init_enabled_controllers(env: Env) -> None:
    if env.engine == "runc":
        pytest.skip("runc runs init in a cgroup of its own below sysmgr's and places exec'd "
                    "processes there itself")
    rec = env.start()
    ct = open_cgroup(rec.cgroup).dirs()[0]
    # what systemd as the container's init does: move itself to a leaf, delegate controllers
    os.mkdir(os.path.join(ct, "init.scope"))

    def move_all() -> bool:  # init may fork while we move: until the cgroup itself is empty
        with open(os.path.join(ct, "cgroup.procs")) as f:
            pids = f.read().split()
        for pid in pids:
            try:
                with open(os.path.join(ct, "init.scope", "cgroup.procs"), "w") as f:
                    f.write(pid)
            except ProcessLookupError:
                pass  # exited meanwhile
        return not pids

    wait_for(move_all, what=f"{ct} to hold no process")
    with open(os.path.join(ct, "cgroup.subtree_control"), "w") as f:
        f.write("+pids")
    code, out, err = env.sh(rec, "cat /proc/self/cgroup")
    assert code == 0, err
    assert out.strip() == f"0::/{V2Cgroup.EXEC_LEAF}"
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=5, force=False)
    assert not open_cgroup(rec.cgroup).exists()


@pytest.mark.skipif(not (V2 and LAYOUT.systemd), reason="needs systemd as PID 1 on cgroup v2")
def test_containers_live_in_a_delegated_scope_under_systemd(env: Env) -> None:
    rec = env.start(limits=Limits(memory_bytes=64 * MiB, pids_max=50))
    with open(f"/proc/{rec.pid}/cgroup") as f:
        # (runc's init sits in its own cgroup, one level below sysmgr's)
        leaf = "/" + env.rt.cgroup_leaf if isinstance(env.rt, OciRuntime) and env.rt.cgroup_leaf else ""
        assert f.read().strip() == f"0::/{DELEGATE_SLICE}/{env.prefix}.scope/{env.stem}{leaf}"
    scope = f"{env.prefix}.scope"
    out = run(["systemctl", "show", "-p", "Delegate,ActiveState", scope]).stdout.decode()
    assert "Delegate=yes" in out and "ActiveState=active" in out
    assert read(rec.cgroup, ("", ""), "pids.max") == "50"
    # the scope's holder (a host process) is gone: only the container's own are left
    pidns = os.readlink(f"/proc/{rec.pid}/ns/pid")
    for pid in open_cgroup(rec.cgroup).procs():
        assert pid == rec.pid or os.readlink(f"/proc/{pid}/ns/pid") == pidns
    # nothing of sysmgr's at the root: systemd's (which enabled the delegated controllers
    # down to the scope itself; tests/unit checks that sysmgr never writes the root's files)
    assert not [d for d in os.listdir(CGROUP_ROOT) if d.startswith("sysmgr-")]
    with open(os.path.join(CGROUP_ROOT, DELEGATE_SLICE, scope, "cgroup.subtree_control")) as f:
        assert {"memory", "pids"} <= set(f.read().split())  # enabled by sysmgr in its scope
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=5, force=False)
    again = env.start(env.spec())  # a restart: the emptied scope is being removed right now
    assert env.rt.status(again).state == RUNNING
    env.rt.stop(again, halt_signal=signal.SIGUSR2, timeout=5, force=False)
    wait_for(lambda: not os.path.isdir(os.path.join(CGROUP_ROOT, DELEGATE_SLICE, scope)),
             what="systemd to remove the empty scope")


def test_device_policy_refuses_devices_off_the_list(env: Env) -> None:
    # v1: devices.* files of the cgroup; v2: a BPF_CGROUP_DEVICE program attached to it
    rec = env.start()
    if V2:
        assert len(bpf.device_programs(open_cgroup(rec.cgroup).dirs()[0])) == 1
    code, _, _ = env.sh(rec, "head -c1 /dev/zero >/dev/null")
    assert code == 0
    # the control: mknod itself is allowed (CAP_MKNOD is kept), for a node on the list
    code, _, err = env.sh(rec, "mknod /dev/null2 c 1 3 && echo x >/dev/null2")  # /tmp is nodev
    assert code == 0, err
    code, _, err = env.sh(rec, "mknod /dev/loopctl c 10 237 && cat /dev/loopctl")
    assert code != 0 and ("not permitted" in err or "denied" in err), err
