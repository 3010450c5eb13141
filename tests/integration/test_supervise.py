"""Supervision on the real kernel: crashes seen and recorded, the Watcher's pidfds, restart
policy and backoff, and the boot order of ``sysmgr init`` (busybox containers, dir pool).

This pytest process is a child subreaper (conftest), as the controller is: the inits that
the tests start are reparented to it, so their exit codes can be collected here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from sysmgr._util import linux
from sysmgr.drivers.runtime.base import RUNNING, STOPPED
from sysmgr.engine import containers, execution, lifecycle, profiles, records, supervise
from sysmgr.engine.host import Host
from sysmgr.engine.watcher import Watcher
from sysmgr.errors import ValidationError
from sysmgr.layout import Layout
from sysmgr.model import restart as mrestart
from sysmgr.state.db import ProfileRecord
from tests.conftest import REPO, requires_root, run_cli

pytestmark = requires_root

GENEROUS = 60.0  # a timeout that only a broken watcher reaches


@pytest.fixture
def host(sysmgr_root: str) -> Iterator[Host]:
    """An initialised root (dir pool, no network) with the busybox image; every container
    deleted at the end."""
    run_cli("init", "--auto", "--network", "none", root=sysmgr_root, check=True)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    h = Host(Layout(sysmgr_root))
    yield h
    for rec in h.store.containers():
        containers.delete_container(h, rec.name, force=True)
    h.close()


def wait_for(pred: Any, what: str, timeout: float = GENEROUS) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def create(host: Host, name: str, **config: str) -> None:
    containers.create_container(host, name, "busybox", config=config)


def launch(host: Host, name: str, **config: str) -> int:
    """Create and start ``name``; its init's pid once its boot script ran."""
    create(host, name, **config)
    return start(host, name)


def start(host: Host, name: str) -> int:
    pid = lifecycle.start(host, name).pid
    assert pid is not None
    wait_for(lambda: os.path.exists(f"/proc/{pid}/root/run/booted"), f"{name} to boot")
    return pid


def volatile(host: Host, name: str) -> dict[str, Any]:
    return host.store.container(name).volatile


def state(host: Host, name: str) -> str:
    return records.status(host, host.store.container(name)).state


def kill_init(pid: int) -> None:
    """kill -9 of init, and wait until it is a zombie: dead, not reaped (we are its reaper
    and nothing here reaps it)."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: linux.proc_state(pid) == "Z", f"init {pid} to die")


# -- crashes --------------------------------------------------------------------------------

def test_kill9_of_init_is_a_crash_recorded_stopped_and_cleaned_up(host: Host) -> None:
    pid = launch(host, "c1")
    init = records.init_record(host.store.container("c1"))
    assert init is not None
    cgroup_procs = [f for f in (f"/sys/fs/cgroup/{c}/{init.cgroup}/cgroup.procs"
                                for c in ("memory", "pids", "unified")) if os.path.exists(f)]
    assert cgroup_procs  # the container's cgroup exists while it runs
    kill_init(pid)
    before = time.time()
    crashes = supervise.crashed(host)
    assert [(c.name, c.exit_code, c.exit) for c in crashes] == [("c1", 137, "killed by SIGKILL (137)")]
    assert crashes[0].next_attempt is None and crashes[0].restarts == 1  # boot.restart: no
    v = volatile(host, "c1")
    assert v["last_state"] == STOPPED and not any(k.startswith("init.") for k in v)
    assert v[mrestart.LAST_EXIT] == 137 and v[mrestart.COUNT] == 1
    assert v[mrestart.LAST_CRASH] >= before and mrestart.NEXT not in v
    assert linux.proc_starttime(pid) is None  # reaped: no zombie left
    assert not any(os.path.exists(f) for f in cgroup_procs)  # cleaned up as a stop would
    assert state(host, "c1") == STOPPED
    assert supervise.crashed(host) == []  # recorded once
    assert supervise.restart_due(host, time.time() + 3600) == []


def test_a_stop_marks_the_record_stopped_before_init_exits(host: Host) -> None:
    pid = launch(host, "c1", **{"boot.restart": "always"})
    starttime = linux.proc_starttime(pid)
    with Watcher(host) as w:
        assert w.wait(0) == [] and w.watched() == {"c1": pid}
        # a graceful stop by another sysmgr process (busybox halts in about 2 s)
        env = dict(os.environ, SYSMGR_ROOT=host.layout.root, PYTHONPATH=REPO)
        stopper = subprocess.Popen([sys.executable, "-m", "sysmgr", "stop", "c1"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: volatile(host, "c1")["last_state"] == STOPPED, "the stop to begin")
            # the record said STOPPED while init still ran: its exit is not a crash
            assert linux.proc_starttime(pid) == starttime
            assert linux.proc_state(pid) not in ("Z", None)
        finally:
            out = stopper.communicate(timeout=GENEROUS)[0]
        assert stopper.returncode == 0, out
        assert linux.proc_state(pid) in ("Z", None)  # dead (a zombie until we reap it)
        # the watcher follows the record: a container being stopped is no longer watched
        assert w.wait(0) == [] and w.watched() == {}
        assert supervise.crashed(host, w.exits) == []
    assert mrestart.LAST_CRASH not in volatile(host, "c1")
    assert supervise.restart_due(host, time.time() + 3600) == []


def test_watcher_notices_kills_and_restarts_back_off(host: Host) -> None:
    pid = launch(host, "c1", **{"boot.restart": "always"})
    launch(host, "other")  # watched too, never reported
    with Watcher(host) as w:
        assert w.wait(0) == []
        assert set(w.watched()) == {"c1", "other"}
        backoffs = []
        for n in (1, 2, 3):
            os.kill(pid, signal.SIGKILL)
            assert w.wait(GENEROUS) == ["c1"]  # a pidfd, not a poll of every container
            init = next(i for i in w.exits if i.pid == pid)
            assert w.exits[init] == 137  # collected by us, its reaper
            crashes = supervise.crashed(host, w.exits)
            assert [(c.name, c.exit_code, c.restarts) for c in crashes] == [("c1", 137, n)]
            crash = crashes[0]
            assert crash.next_attempt is not None
            backoffs.append(crash.next_attempt - crash.at)
            status = {s.name: s for s in supervise.supervision_status(host, now=crash.at)}
            assert status["c1"].restarts == n and status["c1"].policy == "always"
            assert status["c1"].backoff_until == crash.next_attempt
            assert status["c1"].last_exit == "killed by SIGKILL (137)"
            assert status["other"].restarts == 0 and status["other"].state == RUNNING
            # not before its delay, then due
            assert supervise.restart_due(host, crash.at) == []
            assert supervise.restart_due(host, crash.next_attempt) == ["c1"]
            assert supervise.restart(host, "c1")
            assert state(host, "c1") == RUNNING
            new_pid = records.init_record(host.store.container("c1")).pid  # type: ignore[union-attr]
            assert new_pid != pid
            pid = new_pid
            assert mrestart.NEXT not in volatile(host, "c1")  # the start cleared it
        assert backoffs == [1.0, 2.0, 4.0]
        assert w.wait(0) == [] and w.watched() == {"c1": pid, "other": w.watched()["other"]}
    status = {s.name: s for s in supervise.supervision_status(host)}
    assert status["c1"].backoff_until is None and not status["c1"].crash_looping


def test_a_zombie_init_counts_as_exited(host: Host) -> None:
    pid = launch(host, "c1", **{"boot.restart": "on-failure"})
    kill_init(pid)  # dead before the watcher starts: a zombie nobody reaped
    with Watcher(host) as w:
        assert w.watched() == {}
        assert w.wait(GENEROUS) == ["c1"]
        assert list(w.exits.values()) == [137]
        crash, = supervise.crashed(host, w.exits)
    assert (crash.exit_code, crash.next_attempt) == (137, crash.at + 1)


def test_on_failure_does_not_restart_a_poweroff_inside_but_always_does(host: Host) -> None:
    launch(host, "onfail", **{"boot.restart": "on-failure"})
    launch(host, "always", **{"boot.restart": "always"})
    with Watcher(host) as w:
        assert w.wait(0) == []
        for name in ("onfail", "always"):
            # busybox's poweroff signals init, which halts; the kernel reports SIGINT
            code, _out, err = execution.execute(host, name, ["poweroff"])
            assert code == 0, err
        exited: list[str] = []
        deadline = time.monotonic() + GENEROUS
        while len(exited) < 2 and time.monotonic() < deadline:
            exited += w.wait(GENEROUS)
        assert sorted(exited) == ["always", "onfail"]
        crashes = {c.name: c for c in supervise.crashed(host, w.exits)}
    assert crashes["onfail"].exit_code == 130 and crashes["onfail"].next_attempt is None
    assert "clean end" in crashes["onfail"].reason
    assert crashes["always"].exit_code == 130 and crashes["always"].next_attempt is not None
    assert supervise.restart_due(host, time.time() + 3600) == ["always"]


def test_a_failed_restart_is_recorded_and_backs_off_further(host: Host) -> None:
    pid = launch(host, "c1", **{"boot.restart": "always", "boot.restart.backoff.max": "3"})
    kill_init(pid)
    crash, = supervise.crashed(host)
    # the next start cannot work: the image's init is gone from the container's files
    rootfs = host.pool_driver(host.store.container("c1").pool).container_path("c1")
    os.rename(os.path.join(rootfs, "sbin/init"), os.path.join(rootfs, "sbin/init.moved"))
    assert not supervise.restart(host, "c1", now=crash.at + 1)
    v = volatile(host, "c1")
    assert v[mrestart.COUNT] == 2 and v[mrestart.NEXT] == crash.at + 1 + 2 and v[mrestart.ERROR]
    assert not supervise.restart(host, "c1", now=crash.at + 4)
    assert volatile(host, "c1")[mrestart.NEXT] == crash.at + 4 + 3  # capped at 3 s
    status, = supervise.supervision_status(host, now=crash.at + 4)
    assert status.error and status.restarts == 3 and "last restart failed" in status.summary
    os.rename(os.path.join(rootfs, "sbin/init.moved"), os.path.join(rootfs, "sbin/init"))
    assert supervise.restart(host, "c1")
    v = volatile(host, "c1")
    assert state(host, "c1") == RUNNING and mrestart.ERROR not in v and mrestart.NEXT not in v


# -- boot order ---------------------------------------------------------------------------------

def test_sysmgr_init_starts_by_priority_delay_and_depends(host: Host) -> None:
    auto = {"boot.autostart": "true"}
    create(host, "web", **auto, **{"boot.autostart.priority": "20", "boot.depends": "db"})
    create(host, "b", **auto, **{"boot.autostart.priority": "10", "boot.autostart.delay": "1"})
    create(host, "a", **auto, **{"boot.autostart.priority": "1"})
    create(host, "db", **auto)
    create(host, "restored", **{"boot.autostart.priority": "5"})  # unset: the last state
    create(host, "stays")  # unset and stopped: stays stopped
    create(host, "off", **{"boot.autostart": "false"})
    create(host, "lonely", **auto, **{"boot.depends": "db2"})
    create(host, "db2", **{"boot.autostart": "false"})
    # the host "went down" with restored and off running
    kill_init(start(host, "restored"))
    kill_init(start(host, "off"))
    with host.store.transaction():  # off's init ran in an earlier boot
        host.store.set_volatile("off", {**volatile(host, "off"), "init.boot_id": "an-earlier-boot"})
    booted = time.time()
    out = run_cli("init", "--auto", "--network", "none", root=host.layout.root, check=True).stdout
    lines = [line for line in out.splitlines() if "started" in line or "waiting" in line]
    assert lines == ["started b (boot.autostart)", "started restored (boot.autostart)",
                     "started a (boot.autostart)", "started db (boot.autostart)",
                     "started web (boot.autostart)",
                     "lonely: waiting for db2 (not running; boot.depends)"], out
    started = {n: volatile(host, n)["init.started"] for n in ("b", "restored", "a", "db", "web")}
    assert sorted(started, key=started.__getitem__) == ["b", "restored", "a", "db", "web"]
    assert started["restored"] - started["b"] >= 1  # b's boot.autostart.delay
    with open(os.path.join(host.layout.root, "events.log")) as f:  # the event log agrees
        events = [json.loads(line) for line in f]
    boot = [(e["time"], e["object"]) for e in events if e["action"] == "started"
            and e["time"] >= booted]
    assert [o for _, o in sorted(boot)] == [f"container/{n}" for n in
                                            ("b", "restored", "a", "db", "web")]
    assert boot[1][0] - boot[0][0] >= 1                  # the delay is in the log's times too
    for name in ("stays", "off", "db2", "lonely"):
        assert state(host, name) == STOPPED
    off = volatile(host, "off")
    assert off["last_state"] == STOPPED and "init.pid" not in off  # settled, not started
    assert mrestart.LAST_CRASH not in off
    # lonely waits for db2 (status), then starts once db2 runs
    status = {s.name: s for s in supervise.supervision_status(host)}
    assert status["lonely"].waiting_for == ("db2",) and "waiting for db2" in status["lonely"].summary
    assert supervise.restart_due(host) == []
    start(host, "db2")
    assert supervise.restart_due(host) == ["lonely"]
    assert supervise.restart(host, "lonely") and state(host, "lonely") == RUNNING
    assert supervise.restart_due(host) == []


def test_dependency_cycles_are_refused_when_written_and_reported_at_boot(host: Host) -> None:
    create(host, "x", **{"boot.depends": "y"})  # y need not exist yet
    with pytest.raises(ValidationError, match=r"dependency cycle y -> x -> y"):
        create(host, "y", **{"boot.depends": "x"})
    with pytest.raises(ValidationError, match=r"dependency cycle x -> x"):
        containers.set_config(host, "x", {"boot.depends": "x,y"})
    create(host, "y", **{"boot.autostart": "true", "boot.autostart.priority": "5"})
    containers.set_config(host, "x", {"boot.autostart": "true"})
    # a profile change is not checked against every container: the cycle shows at boot
    profiles.put_profile(host, ProfileRecord("dep", "", {}, {}))
    containers.update_container(host, "y", profiles=["default", "dep"])
    profiles.put_profile(host, ProfileRecord("dep", "", {"boot.depends": "x"}, {}))
    out = run_cli("init", "--auto", "--network", "none", root=host.layout.root, check=True).stdout
    assert "dependency cycle x -> y -> x (boot.depends): those containers start by priority" in out
    assert out.index("started y") < out.index("started x")
    assert state(host, "x") == RUNNING and state(host, "y") == RUNNING
