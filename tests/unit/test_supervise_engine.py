"""Supervision through the engine on the FAKE runtime and storage drivers: the Watcher's
fallback for a runtime without pidfds, crashes whose exit is unknown, policy changes, and
``boot.depends`` cycles refused through the CLI. The real-kernel counterparts (pidfds, exit
codes, boot order) are in tests/integration/test_supervise.py."""

from __future__ import annotations

import os
import shutil

import pytest
from tests.unit.cli_runner import CliAt

from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.engine import records, supervise
from sysmgr.engine.host import Host
from sysmgr.engine.watcher import Watcher
from sysmgr.layout import Layout
from sysmgr.model import restart as mrestart

pytestmark = pytest.mark.skipif(not (shutil.which("busybox") or os.path.exists("/bin/busybox")),
                                reason="needs /bin/busybox (busybox-static) for the image")


@pytest.fixture
def cli(sysmgr_root: str):
    FakeRuntime.reset()
    s = CliAt(sysmgr_root)
    s("init", "--auto", "--network", "none", "--runtime", "fake", "--storage-driver", "fake",
      ok=True)
    s("image", "build", "busybox", "--alias", "busybox", ok=True)
    yield s
    FakeRuntime.reset()


@pytest.fixture
def host(cli: CliAt):
    h = Host(Layout(cli.root))
    yield h
    h.close()


def crash(host: Host, name: str) -> None:
    FakeRuntime.crash(records.cgroup_path(host, name))


def test_watcher_asks_a_runtime_without_pidfds_for_the_state(cli: CliAt, host: Host) -> None:
    cli("launch", "busybox", "c1", "-c", "boot.restart=on-failure", ok=True)
    cli("launch", "busybox", "c2", ok=True)
    with Watcher(host) as w:
        assert w.wait(0) == [] and set(w.watched()) == {"c1", "c2"}
        crash(host, "c1")
        assert w.wait(30) == ["c1"]
        assert list(w.exits.values()) == [None]  # nothing to collect it from
        c, = supervise.crashed(host, w.exits)
        # an exit nobody saw counts as a failure: on-failure restarts it
        assert (c.name, c.exit, c.next_attempt) == ("c1", "unknown", c.at + 1)
        assert host.store.container("c1").volatile[mrestart.LAST_EXIT] == "unknown"
        assert w.wait(0) == [] and set(w.watched()) == {"c2"}
        assert supervise.restart(host, "c1")
        assert w.wait(0) == [] and set(w.watched()) == {"c1", "c2"}  # the new init


def test_a_policy_turned_off_cancels_the_pending_restart(cli: CliAt, host: Host) -> None:
    cli("launch", "busybox", "c1", "-c", "boot.restart=always", ok=True)
    crash(host, "c1")
    c, = supervise.crashed(host)
    assert supervise.restart_due(host, c.at + 1) == ["c1"]
    s, = supervise.supervision_status(host, now=c.at)
    assert s.backoff_until == c.at + 1 and s.restarts == 1
    cli("config", "set", "c1", "boot.restart", "no", ok=True)
    assert supervise.restart_due(host, c.at + 1) == []
    s, = supervise.supervision_status(host, now=c.at)
    assert s.backoff_until is None and s.policy == "no"


def test_a_start_or_stop_by_hand_cancels_the_pending_restart(cli: CliAt, host: Host) -> None:
    cli("launch", "busybox", "c1", "-c", "boot.restart=always", ok=True)
    crash(host, "c1")
    c, = supervise.crashed(host)
    cli("start", "c1", ok=True)
    cli("stop", "c1", ok=True)
    v = host.store.container("c1").volatile
    assert mrestart.NEXT not in v and v[mrestart.COUNT] == 1  # the history stays
    assert supervise.restart_due(host, c.at + 3600) == []
    assert supervise.crashed(host) == []


def test_crash_looping_after_five_crashes_in_ten_minutes(cli: CliAt, host: Host) -> None:
    cli("launch", "busybox", "c1", "-c", "boot.restart=always", ok=True)
    now = 1_000_000.0
    for n in range(1, 6):
        crash(host, "c1")
        c, = supervise.crashed(host, now=now)
        s, = supervise.supervision_status(host, now=now)
        assert s.crash_looping == (n == 5) and s.restarts == n
        assert supervise.restart(host, "c1")
        now += 30
    assert "crash-looping (5 crashes in a row)" in s.summary


def test_depends_cycles_are_refused_by_config_set(cli: CliAt) -> None:
    cli("create", "busybox", "db1", "-c", "boot.depends=web1", ok=True)
    cli("create", "busybox", "web1", ok=True)
    res = cli("config", "set", "web1", "boot.depends", "db1")
    assert res.exit_code == 2
    assert "dependency cycle web1 -> db1 -> web1" in res.output
    res = cli("config", "set", "web1", "boot.depends", "db_1")
    assert res.exit_code == 2 and "invalid container name 'db_1'" in res.output
    cli("config", "set", "web1", "boot.depends", "cache1, other", ok=True)  # need not exist
