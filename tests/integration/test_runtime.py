"""The runtime contract against the real kernel: namespaces, cgroup v1 limits, stop, exec.

Every test runs under each runtime driver (``native``, and the OCI reference runtimes
``crun`` and ``runc`` when installed) with the same rendered bundle: where they disagree
about it, a test fails here.

Each test copies the session's busybox image into its own directory, uses a runtime dir
laid out like ``Layout.container_dir`` and a cgroup ``sysmgr-<random>/<name>``, and stops
and cleans up everything it started; the autouse leak checker (conftest) verifies that no
mount, cgroup or process is left behind.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import selectors
import signal
import threading
import time
from typing import Any, Iterator

import pytest

from sysmgr._util.proc import run
from sysmgr.drivers.runtime.base import CONSOLE_LOG, FROZEN, RUNNING, STOPPED, InitRecord, Limits, ProcessSpec, RuntimeSpec
from sysmgr.drivers.runtime.cgroups import open_cgroup
from sysmgr.drivers.runtime.base import Runtime
from sysmgr.drivers.runtime.native import NativeExecProcess, NativeRuntime
from sysmgr.drivers.runtime.oci import CrunRuntime, OciExecProcess, OciRuntime, RuncRuntime
from sysmgr.errors import Conflict, DriverError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real kernel)")

MiB = 1 << 20
CG = "/sys/fs/cgroup"


ENGINES = ("native", "crun", "runc")


def make_runtime(engine: str, state_dir: str) -> Runtime:
    """The driver ``engine`` (a test is skipped when its runtime is not installed)."""
    if engine == "native":
        return NativeRuntime()
    cls: type[OciRuntime] = CrunRuntime if engine == "crun" else RuncRuntime
    if not cls.available():
        pytest.skip(f"{engine} is not installed")
    return cls(state_dir)


def run_in(rt: Runtime, rec: InitRecord, *argv: str, input: bytes = b"", timeout: float = 60,
           **kw: Any) -> tuple[int, str, str]:
    """Run ``argv`` in the container with pipes; return (exit code, stdout, stderr)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = rt.exec(rec, ProcessSpec(argv=tuple(argv), **kw), stdin=in_r, stdout=out_w, stderr=err_w)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)

    def feed() -> None:
        try:
            _write_all(in_w, input)
        except BrokenPipeError:
            pass
        finally:
            os.close(in_w)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = {out_r: b"", err_r: b""}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in out:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            assert time.monotonic() < deadline, f"{argv} did not finish"
            for key, _ in sel.select(1):
                data = os.read(key.fd, 65536)
                if data:
                    out[key.fd] += data
                else:
                    sel.unregister(key.fd)
                    os.close(key.fd)
    writer.join()
    return proc.wait(), out[out_r].decode(), out[err_r].decode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def wait_for(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Env:
    """One test's containers: rootfs copies, runtime dirs, cgroups; stops them all at the end."""

    def __init__(self, base: str, image: str, test_name: str, engine: str = "native") -> None:
        self.base = base
        self.image = image
        self.engine = engine
        self.rt = make_runtime(engine, os.path.join(base, "runtime-state"))
        self.prefix = f"sysmgr-{secrets.token_hex(3)}"
        self.stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_"))[:20].strip("-")
        self.started: list[InitRecord] = []

    def rootfs(self, name: str) -> str:
        dest = os.path.join(self.base, name, "rootfs")
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            run(["cp", "-a", self.image, dest])
        return dest

    def spec(self, name: str | None = None, **kw: Any) -> RuntimeSpec:
        name = name or self.stem
        kw.setdefault("halt_signal", int(signal.SIGUSR2))
        return RuntimeSpec(
            name=name, rootfs=self.rootfs(name), runtime_dir=os.path.join(self.base, "containers", name),
            cgroup=f"{self.prefix}/{name}", **kw,  # type: ignore[arg-type]
        )

    def start(self, spec: RuntimeSpec | None = None, boot: bool = True, **kw: Any) -> InitRecord:
        spec = spec or self.spec(**kw)
        rec = self.rt.start(spec)
        self.started.append(rec)
        if boot:
            wait_for(lambda: os.path.exists(f"/proc/{rec.pid}/root/run/booted"), what="rcS to finish")
        return rec

    def sh(self, rec: InitRecord, script: str, **kw: Any) -> tuple[int, str, str]:
        return run_in(self.rt, rec, "sh", "-c", script, **kw)

    def close(self) -> None:
        for rec in self.started:
            self.rt.stop(rec, halt_signal=signal.SIGKILL, timeout=0, force=True)
            self.rt.cleanup(rec.cgroup)


@pytest.fixture(params=ENGINES)
def env(tmp_path, busybox_rootfs, request) -> Iterator[Env]:
    e = Env(str(tmp_path), busybox_rootfs, request.node.originalname, request.param)
    yield e
    e.close()


def v1_tree(controller: str, cgroup: str, name: str) -> list[str]:
    """``name`` of the cgroup and of every cgroup below it (a runtime may make one: runc)."""
    out = []
    for d, _, files in os.walk(os.path.join(CG, controller, cgroup)):
        if name in files:
            with open(os.path.join(d, name)) as f:
                out.append(f.read().strip())
    return out


def v1(controller: str, cgroup: str, name: str) -> str:
    with open(os.path.join(CG, controller, cgroup, name)) as f:
        return f.read().strip()


# -- what the container looks like from inside ---------------------------------------------------

def test_pid1_is_the_images_init_and_the_container_is_isolated(env: Env) -> None:
    rec = env.start()
    assert env.rt.status(rec).state == RUNNING
    assert run_in(env.rt, rec, "cat", "/proc/1/comm")[1].strip() == "init"
    assert run_in(env.rt, rec, "readlink", "/proc/1/exe")[1].strip() == "/bin/busybox"
    assert run_in(env.rt, rec, "hostname")[1].strip() == env.stem
    # only the container's own processes: init, the console-getty sleep, and us
    code, out, _ = env.sh(rec, "ls /proc | grep -E '^[0-9]+$'")
    pids = [int(p) for p in out.split()]
    assert code == 0 and 1 in pids and len(pids) < 10 and max(pids) < 100
    # its own cgroup is the root of its cgroup namespace
    code, out, _ = env.sh(rec, "cat /proc/self/cgroup")
    assert all(line.endswith(":/") for line in out.split()), out
    # /etc/hostname follows the container name (rcS sets the hostname from it)
    with open(os.path.join(env.base, env.stem, "rootfs/etc/hostname")) as f:
        assert f.read().strip() == env.stem


def test_mounts_devices_and_capabilities(env: Env) -> None:
    rec = env.start()
    code, out, _ = env.sh(rec, "cat /proc/mounts")
    mounts = {line.split()[1]: line.split() for line in out.splitlines()}
    assert mounts["/sys"][3].startswith("ro,")
    assert mounts["/sys/fs/cgroup"][2] == "cgroup2"
    assert mounts["/dev/pts"][2] == "devpts"
    assert mounts["/proc/sys"][3].startswith("ro,")  # read-only kernel knobs (runc defaults)
    assert env.sh(rec, "echo 1 > /proc/sysrq-trigger")[0] != 0
    assert env.sh(rec, "head -c 4 /dev/urandom | wc -c")[1].strip() == "4"
    # the devices cgroup refuses anything not on the allow list, even to root
    code, out, err = env.sh(rec, "mknod /vda b 254 0 && head -c 1 /vda")
    # (runc lets any node be made, "m" for every device, as its own default; opening it is
    # refused all the same)
    assert code != 0 and ("not permitted" in (out + err).lower() or "permission denied" in (out + err).lower())
    # LXC's default drop list is gone from init's bounding set
    bnd = int(open(f"/proc/{rec.pid}/status").read().split("CapBnd:")[1].split()[0], 16)
    for cap in (16, 17, 25, 32, 33):  # sys_module sys_rawio sys_time mac_override mac_admin
        assert not bnd >> cap & 1
    assert bnd >> 21 & 1  # sys_admin stays (privileged system container)
    # exec'ed processes get the same bounding set as init
    code, out, _ = env.sh(rec, "grep CapBnd /proc/self/status")
    assert int(out.split()[1], 16) == bnd


def test_console_log_receives_init_output(env: Env) -> None:
    spec = env.spec()
    with open(os.path.join(spec.rootfs, "etc/inittab"), "a") as f:
        f.write("::sysinit:/bin/echo hello-from-sysinit\n")
    rec = env.start(spec)
    log = os.path.join(spec.rootfs, CONSOLE_LOG.lstrip("/"))  # on the volume, under /dev's tmpfs
    wait_for(lambda: "hello-from-sysinit" in env.rt.console_log(spec.rootfs), what="console output")
    # init and its children append through the inherited stdio (above); re-opening
    # /dev/console inside must not truncate or overwrite the log
    code, _, err = env.sh(rec, "echo truncating > /dev/console")
    assert code != 0 and "read-only" in err.lower()
    assert "hello-from-sysinit" in open(log).read()
    # a fresh start truncates the log
    env.rt.stop(rec, halt_signal=signal.SIGKILL, timeout=0, force=True)
    with open(log, "a") as f:
        f.write("stale\n")
    rec = env.start(spec)
    wait_for(lambda: "hello-from-sysinit" in open(log).read(), what="console output")
    assert "stale" not in open(log).read()
    # a link planted in place of the log is replaced, never followed (nor read back)
    env.rt.stop(rec, halt_signal=signal.SIGKILL, timeout=0, force=True)
    outside = os.path.join(os.path.dirname(spec.rootfs), "outside.txt")
    with open(outside, "w") as f:
        f.write("host secret\n")
    os.unlink(log)
    os.symlink(outside, log)
    assert "host secret" not in env.rt.console_log(spec.rootfs)
    rec = env.start(spec)
    wait_for(lambda: "hello-from-sysinit" in env.rt.console_log(spec.rootfs), what="console output")
    assert open(outside).read() == "host secret\n" and not os.path.islink(log)
    # the file bound on /dev/console is the one on the container's volume, not a host file
    code, out, _ = env.sh(rec, "grep ' /dev/console ' /proc/self/mountinfo")
    assert code == 0 and "/.sysmgr-console.log" in out, out


# -- limits ------------------------------------------------------------------------------------

def test_memory_limit_oom_kills_the_hog(env: Env) -> None:
    rec = env.start(limits=Limits(memory_bytes=64 * MiB, memory_swap=False))
    assert int(v1("memory", rec.cgroup, "memory.limit_in_bytes")) == 64 * MiB
    assert int(v1("memory", rec.cgroup, "memory.memsw.limit_in_bytes")) == 64 * MiB
    # dd reads 300 MiB into one buffer: it grows until the OOM killer hits
    code, _, _ = run_in(env.rt, rec, "dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1")
    assert code == 128 + signal.SIGKILL
    # counted in the victim's own cgroup: sysmgr's, or the runtime's below it (runc's)
    assert env.rt.usage(rec.cgroup).oom_kills >= 1
    # (memory.failcnt stays 0 on kernel 6.18 even here: oom_control is the reliable witness)
    assert int(v1("memory", rec.cgroup, "memory.max_usage_in_bytes")) <= 64 * MiB
    assert env.rt.status(rec).state == RUNNING  # init survived, only the hog died
    assert (env.rt.usage(rec.cgroup).memory_peak_bytes or 0) <= 64 * MiB


def test_pids_limit_stops_a_fork_bomb(env: Env) -> None:
    rec = env.start(limits=Limits(pids_max=50))
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 600 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo all-forked"
    code, out, err = env.sh(rec, bomb)
    assert "all-forked" not in out and "fork" in err.lower()
    usage = env.rt.usage(rec.cgroup)
    assert usage.pids is not None and usage.pids <= 50
    assert sum(int(events.split()[1]) for events in v1_tree("pids", rec.cgroup, "pids.events")) > 0
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=3, force=False)
    assert env.rt.status(rec).state == STOPPED
    assert not open_cgroup(rec.cgroup).exists()


def test_cpu_limits_are_written(env: Env) -> None:
    rec = env.start(limits=Limits(cpuset="0", cpu_quota_us=25_000, cpu_period_us=100_000, cpu_shares=512))
    assert v1("cpuset", rec.cgroup, "cpuset.cpus") == "0"
    assert v1("cpu", rec.cgroup, "cpu.cfs_quota_us") == "25000"
    assert v1("cpu", rec.cgroup, "cpu.cfs_period_us") == "100000"
    assert v1("cpu", rec.cgroup, "cpu.shares") == "512"
    assert env.sh(rec, "nproc")[1].strip() == "1"


def test_set_limits_live(env: Env) -> None:
    rec = env.start(limits=Limits(memory_bytes=64 * MiB))
    env.rt.set_limits(rec.cgroup, Limits(memory_bytes=128 * MiB, memory_swap=False, pids_max=77, cpu_quota_us=50_000))
    assert int(v1("memory", rec.cgroup, "memory.limit_in_bytes")) == 128 * MiB
    assert int(v1("memory", rec.cgroup, "memory.memsw.limit_in_bytes")) == 128 * MiB
    assert v1("pids", rec.cgroup, "pids.max") == "77"
    assert v1("cpu", rec.cgroup, "cpu.cfs_quota_us") == "50000"
    # removing the keys lifts the limits
    env.rt.set_limits(rec.cgroup, Limits())
    assert int(v1("memory", rec.cgroup, "memory.limit_in_bytes")) > 1 << 60
    assert int(v1("memory", rec.cgroup, "memory.memsw.limit_in_bytes")) > 1 << 60
    assert v1("pids", rec.cgroup, "pids.max") == "max"
    assert v1("cpu", rec.cgroup, "cpu.cfs_quota_us") == "-1"
    assert v1("cpuset", rec.cgroup, "cpuset.cpus") == v1("cpuset", "", "cpuset.cpus")
    # a limit below what the container uses (shm cannot be reclaimed without swap) is refused
    assert env.sh(rec, "dd if=/dev/zero of=/dev/shm/blob bs=1M count=40 2>/dev/null") == (0, "", "")
    with pytest.raises(DriverError, match=r"memory\.limit_in_bytes"):
        env.rt.set_limits(rec.cgroup, Limits(memory_bytes=8 * MiB))
    assert env.rt.status(rec).state == RUNNING


def test_usage(env: Env) -> None:
    rec = env.start()
    # init forks its children (the inittab's shells) after the start returned: wait for them
    wait_for(lambda: (env.rt.usage(rec.cgroup).pids or 0) >= 2, what="init's children")
    u = env.rt.usage(rec.cgroup)
    assert u.memory_bytes and u.memory_bytes > 0
    assert u.pids and u.pids >= 2
    assert u.cpu_ns and u.cpu_ns > 0


# -- freeze, stop, crash -----------------------------------------------------------------------

def test_freeze_and_unfreeze(env: Env) -> None:
    rec = env.start()
    env.rt.freeze(rec)
    assert env.rt.status(rec).state == FROZEN
    assert v1("freezer", rec.cgroup, "freezer.state") == "FROZEN"
    for pid in open_cgroup(rec.cgroup).procs():
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "D"  # frozen tasks show as D on v1
    with pytest.raises(Conflict, match="frozen"):
        run_in(env.rt, rec, "true")
    env.rt.unfreeze(rec)
    assert env.rt.status(rec).state == RUNNING
    assert run_in(env.rt, rec, "echo", "thawed")[1].strip() == "thawed"


def test_graceful_stop_runs_the_shutdown_actions(env: Env) -> None:
    spec = env.spec()
    with open(os.path.join(spec.rootfs, "etc/inittab"), "a") as f:
        f.write("::shutdown:/bin/sh -c 'echo halted > /var/log/halt-marker'\n")
    rec = env.start(spec)
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=20, force=False)
    with open(os.path.join(spec.rootfs, "var/log/halt-marker")) as f:
        assert f.read() == "halted\n"
    assert env.rt.status(rec).state == STOPPED
    assert not open_cgroup(rec.cgroup).exists()
    assert not any(os.path.exists(os.path.join(CG, h, env.prefix)) for h in os.listdir(CG))
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=1, force=False)  # idempotent
    assert "Requesting system poweroff" in env.rt.console_log(spec.rootfs)


def test_stop_falls_back_to_kill_when_the_halt_signal_is_ignored(env: Env) -> None:
    spec = env.spec()
    with open(os.path.join(spec.rootfs, "etc/inittab"), "a") as f:
        f.write("::shutdown:/bin/sh -c 'echo halted > /var/log/halt-marker'\n")
    rec = env.start(spec)
    env.rt.stop(rec, halt_signal=signal.SIGCONT, timeout=0.3, force=False)  # init ignores SIGCONT
    assert env.rt.status(rec).state == STOPPED
    assert not os.path.exists(os.path.join(spec.rootfs, "var/log/halt-marker"))
    assert not open_cgroup(rec.cgroup).exists()


def test_forced_stop_of_a_frozen_container(env: Env) -> None:
    rec = env.start()
    env.rt.freeze(rec)
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=10, force=True)
    assert env.rt.status(rec).state == STOPPED
    assert not open_cgroup(rec.cgroup).exists()


def test_init_killed_from_the_host_is_stopped_and_cleaned_up(env: Env) -> None:
    rec = env.start()
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: env.rt.status(rec).state == STOPPED, what="init to die")
    assert open_cgroup(rec.cgroup).exists()  # nobody removed it yet
    with pytest.raises(Conflict):
        run_in(env.rt, rec, "true")
    env.rt.cleanup(rec.cgroup)
    assert not open_cgroup(rec.cgroup).exists()
    env.rt.cleanup(rec.cgroup)  # idempotent
    assert env.rt.status(None).state == STOPPED
    # a recycled pid (different start time) is not our init
    assert env.rt.status(InitRecord(pid=os.getpid(), starttime=1, cgroup=rec.cgroup)).state == STOPPED


def test_restart_after_a_crash_reuses_the_stale_cgroup(env: Env) -> None:
    spec = env.spec()
    rec = env.start(spec)
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: env.rt.status(rec).state == STOPPED, what="init to die")
    rec2 = env.start(spec)
    assert rec2.pid != rec.pid and env.rt.status(rec2).state == RUNNING
    with pytest.raises(Conflict, match="already running"):
        env.rt.start(spec)


def test_two_containers_share_the_prefix(env: Env) -> None:
    a = env.start(env.spec("one"))
    b = env.start(env.spec("two"))
    env.rt.stop(a, halt_signal=signal.SIGKILL, timeout=0, force=True)
    assert os.path.isdir(os.path.join(CG, "memory", env.prefix))  # still used by "two"
    assert env.rt.status(b).state == RUNNING
    env.rt.stop(b, halt_signal=signal.SIGKILL, timeout=0, force=True)
    assert not os.path.exists(os.path.join(CG, "memory", env.prefix))


def test_stop_many_halts_each_by_its_signal(env: Env) -> None:
    a = env.start(env.spec("one"))
    b = env.start(env.spec("two"))
    out = env.rt.stop_many([(a, int(signal.SIGUSR2), 20.0), (b, int(signal.SIGUSR2), 20.0)],
                           force=False)
    assert out == [True, True]  # both shut down by themselves on the halt signal
    assert env.rt.status(a).state == env.rt.status(b).state == STOPPED
    assert not os.path.exists(os.path.join(CG, "memory", env.prefix))


def test_image_symlinks_cannot_redirect_the_launcher_outside_the_rootfs(env: Env) -> None:
    spec = env.spec()
    outside = os.path.join(env.base, "outside")
    os.mkdir(outside)
    os.rmdir(os.path.join(spec.rootfs, "dev"))
    os.symlink(outside, os.path.join(spec.rootfs, "dev"))  # absolute: a host path if followed naively
    if env.engine != "native":
        # the OCI runtimes follow some of the image's links on the host (runc 1.1 made
        # /dev/stdin & co. in ``outside``; crun 1.8 fails to populate /dev): refused first
        with pytest.raises(DriverError, match="/dev is a symlink"):
            env.start(spec)
        assert os.listdir(outside) == [] and not open_cgroup(spec.cgroup).exists()
        return
    rec = env.start(spec)
    assert os.listdir(outside) == []  # the /dev tmpfs and its nodes went inside the rootfs
    assert env.rt.status(rec).state == RUNNING
    assert os.path.exists(os.path.join(spec.rootfs, outside.lstrip("/")))


# -- start failures ----------------------------------------------------------------------------

def test_start_failure_leaves_nothing_behind(env: Env) -> None:
    spec = env.spec()
    os.unlink(os.path.join(spec.rootfs, "sbin/init"))
    with pytest.raises(DriverError, match="init /sbin/init not found in the image"):
        env.rt.start(spec)
    assert not open_cgroup(spec.cgroup).exists()
    assert not os.path.exists(os.path.join(CG, "memory", env.prefix))


def test_before_go_hook_runs_in_between_and_its_failure_aborts(env: Env) -> None:
    seen = {}

    def hook(pid: int) -> None:
        seen["net"] = os.readlink(f"/proc/{pid}/ns/net")
        seen["comm"] = open(f"/proc/{pid}/comm").read().strip()

    rec = env.rt.start(env.spec("hooked"), before_go=hook)
    env.started.append(rec)
    assert seen["net"] != os.readlink("/proc/self/ns/net")  # the netns exists already
    assert seen["comm"] != "init"  # ...and init has not been exec'ed yet

    def failing(pid: int) -> None:
        raise DriverError("veth setup failed")

    spec = env.spec("failing")
    with pytest.raises(DriverError, match="veth setup failed"):
        env.rt.start(spec, before_go=failing)
    assert not open_cgroup(spec.cgroup).exists()


# -- exec --------------------------------------------------------------------------------------

def test_exec_exit_codes(env: Env) -> None:
    rec = env.start()
    assert env.sh(rec, "exit 7")[0] == 7
    code, _, err = run_in(env.rt, rec, "no-such-command", "x")
    assert code == 127 and "sysmgr: no-such-command: command not found" in err
    assert env.sh(rec, "kill -9 $$")[0] == 128 + signal.SIGKILL
    assert run_in(env.rt, rec, "/bin/nonexistent")[0] == 127


def test_exec_streams_stdin_and_stdout(env: Env) -> None:
    rec = env.start()
    data = os.urandom(512 * 1024).hex().encode()  # 1 MiB, more than a pipe buffer
    code, out, _ = run_in(env.rt, rec, "cat", input=data)
    assert code == 0 and out.encode() == data
    code, out, err = env.sh(rec, "tr a-z A-Z; echo oops >&2", input=b"hello\n")
    assert (code, out, err) == (0, "HELLO\n", "oops\n")


def test_exec_env_cwd_and_user(env: Env) -> None:
    rec = env.start()
    code, out, _ = env.sh(rec, 'echo "$FOO $(pwd) $(id -u):$(id -g)"', env={"FOO": "bar"}, cwd="/etc",
                          uid=65534, gid=65534)
    assert (code, out) == (0, "bar /etc 65534:65534\n")
    with pytest.raises(DriverError, match="working directory /nope does not exist"):
        run_in(env.rt, rec, "true", cwd="/nope")


def test_exec_pty_gives_a_terminal_from_the_containers_devpts(env: Env) -> None:
    rec = env.start()
    # the size is the pty's before the command runs: nothing races it (stty once saw 0x0)
    proc, master = env.rt.exec_pty(rec, ProcessSpec(argv=("sh", "-c", "tty; stty size"),
                                                    window=(40, 100)))
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError as e:  # EIO: every slave fd is closed
                assert e.errno == errno.EIO
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.wait() == 0
    assert re.search(rb"^/dev/pts/\d+\r?$", out, re.M), out
    assert b"40 100" in out, out


def test_exec_kill_kills_the_command(env: Env) -> None:
    rec = env.start()
    proc = env.rt.exec(rec, ProcessSpec(argv=("sleep", "600")), stdin=0, stdout=1, stderr=2)
    assert isinstance(proc, (NativeExecProcess, OciExecProcess))
    wait_for(lambda: "sleep" in env.sh(rec, "ps")[1], what="sleep to run")
    proc.send_signal(signal.SIGTERM)  # forwarded to the command
    assert proc.wait() == 128 + signal.SIGTERM
    proc = env.rt.exec(rec, ProcessSpec(argv=("sleep", "600")), stdin=0, stdout=1, stderr=2)
    assert isinstance(proc, (NativeExecProcess, OciExecProcess))
    proc.kill()  # the helper dies, the kernel kills the command (parent-death signal)
    assert proc.wait() == 128 + signal.SIGKILL
    wait_for(lambda: "sleep 600" not in env.sh(rec, "ps")[1], what="sleep to die")


def test_only_the_command_joins_the_containers_cgroup(env: Env) -> None:
    # the helper outside the pid namespace would show there as pid 0, which systemd's tools
    # report as an error ("Failed to dump process list ... Input/output error")
    if not env.rt.info.exec_helper_outside:
        pytest.skip(f"{env.engine}'s exec waits for the command inside the cgroup it puts it in")
    rec = env.start()
    proc = env.rt.exec(rec, ProcessSpec(argv=("sleep", "600")), stdin=0, stdout=1, stderr=2)
    try:
        pids = set(open_cgroup(rec.cgroup).procs())

        def comm(pid: int) -> str:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()

        assert proc.pid not in pids                              # the helper is not in it
        assert [p for p in pids if comm(p) == "sleep"]           # the command is
    finally:
        proc.kill()
        proc.wait()


def test_stop_after_the_exec_helper_was_killed_from_outside(env: Env) -> None:
    # The command is reparented to us (subreaper, outside its pid ns) and dies by its
    # parent-death signal; stop must reap that zombie or init could never finish dying.
    rec = env.start()
    proc = env.rt.exec(rec, ProcessSpec(argv=("sleep", "600")), stdin=0, stdout=1, stderr=2)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == 128 + signal.SIGKILL
    env.rt.stop(rec, halt_signal=signal.SIGUSR2, timeout=10, force=True)
    assert env.rt.status(rec).state == STOPPED
    assert not open_cgroup(rec.cgroup).exists()


def test_ptyproxy_drives_a_shell_in_the_container(env: Env) -> None:
    from sysmgr._util.ptyproxy import proxy

    rec = env.start()
    proc, master = env.rt.exec_pty(rec, ProcessSpec(argv=("sh",), env={"PS1": "$ "}))
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, b"echo hi-$((6*7)); tty\nexit 3\n")
    os.close(in_w)
    try:
        code = proxy(master, proc, stdin_fd=in_r, stdout_fd=out_w)
    finally:
        for fd in (master, in_r, out_w):
            os.close(fd)
    with os.fdopen(out_r, "rb") as f:
        out = f.read()
    assert code == 3
    assert b"hi-42" in out and b"/dev/pts/" in out
