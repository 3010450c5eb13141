"""The root's event log (sysmgr.engine.events): whole lines from concurrent writers, rotation,
``follow`` across a rotation (inotify and the polling fallback), an unwritable log that never
fails an operation, and the events the engine emits (fake runtime, a dir pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sysmgr
from sysmgr._util import inotify
from sysmgr.api import events as api_events
from sysmgr.engine import events
from sysmgr.engine.migration import markers, settling
from sysmgr.errors import ApplyError
from tests.conftest import REPO


def lines_of(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


class Collector:
    """A follow running in a thread of its own, until ``stop`` is set."""

    def __init__(self, it) -> None:
        self.got: list = []
        self.thread = threading.Thread(target=lambda: self.got.extend(it), daemon=True)
        self.thread.start()

    def wait_for(self, n: int, limit: float = 20.0) -> list:
        """What it has once it has ``n`` (or once ``limit`` ran out: the test then fails on
        what is missing, it never waits for ever)."""
        deadline = time.monotonic() + limit
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.got)

    def end(self, stop: threading.Event) -> list:
        stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "follow did not end when told to stop"
        return list(self.got)


# -- the log ----------------------------------------------------------------------------------

def test_emit_appends_one_json_line_per_event_and_read_filters(tmp_path):
    root = str(tmp_path)
    events.container(root, "web1", "started")
    with events.context(commit="abc123"):
        events.emit(root, "operation", "container/web1", "create", result="error: boom",
                    detail="create Container web1", source="git")
    events.snapshot(root, "web1", "snap0", "created")
    path = os.path.join(root, "events.log")
    assert os.stat(path).st_mode & 0o777 == 0o600
    raw = lines_of(path)
    assert [r["action"] for r in raw] == ["started", "create", "created"]
    assert raw[0] == {"time": raw[0]["time"], "type": "lifecycle", "object": "container/web1",
                      "action": "started", "result": "ok", "pid": os.getpid()}
    assert raw[1]["commit"] == "abc123" and raw[1]["source"] == "git"
    assert "commit" not in raw[2]  # the context ended with its block
    got = events.read(root)
    assert [e.object for e in got] == ["container/web1", "container/web1", "snapshot/web1/snap0"]
    assert got[1].to_dict() == raw[1] and not got[1].ok and got[0].ok
    assert got[1].extra == {"source": "git"}
    assert [e.action for e in events.read(root, types=["operation"])] == ["create"]
    assert events.read(root, since=raw[2]["time"]) == [got[2]]


def test_a_line_cut_short_is_skipped(tmp_path):
    root = str(tmp_path)
    events.container(root, "a", "started")
    with open(os.path.join(root, "events.log"), "ab") as f:
        f.write(b'{"time": 1, "type": "lifecycle", "obj\n')  # a writer killed mid-line
    events.container(root, "a", "stopped")
    assert [e.action for e in events.read(root)] == ["started", "stopped"]


def test_the_log_rotates_past_its_size_and_read_spans_both_generations(tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setattr(events, "MAX_BYTES", 4096)
    for i in range(100):
        events.container(root, f"c{i}", "created", detail="x" * 40)
    path = os.path.join(root, "events.log")
    assert os.path.getsize(path) <= 4096 and os.path.getsize(path + ".1") <= 4096
    assert os.stat(path + ".1").st_mode & 0o777 == 0o600
    names = [e.object for e in events.read(root)]
    # the newest events, oldest first, none twice; older generations are gone
    assert names == [f"container/c{i}" for i in range(100 - len(names), 100)]
    assert len(names) > len(lines_of(path))  # some came from events.log.1


WRITER = """
import sys, time
from sysmgr.engine import events
events.MAX_BYTES = int(sys.argv[3])
for i in range(int(sys.argv[2])):
    events.emit(sys.argv[1], "lifecycle", "container/c", "started",
                detail="%d %s" % (i, "y" * int(sys.argv[4])))
    time.sleep(float(sys.argv[5]))
"""


def _writers(root: str, n: int, count: int, max_bytes: int, pad: int = 5000,
             pause: float = 0) -> None:
    """``n`` processes appending ``count`` events each (``detail``: "SEQ yyy..."), with a
    ``pause`` after each."""
    env = dict(os.environ, PYTHONPATH=REPO)
    argv = [sys.executable, "-c", WRITER, root, str(count), str(max_bytes), str(pad), str(pause)]
    procs = [subprocess.Popen(argv, env=env) for _ in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n


def test_concurrent_writers_never_interleave_a_line(tmp_path):
    root = str(tmp_path)
    _writers(root, 4, 200, 64 << 20)  # lines of 5 KiB: more than a pipe's atomic write
    raw = lines_of(os.path.join(root, "events.log"))  # every line parses
    by_pid: dict[int, list[int]] = {}
    for r in raw:
        n, pad = r["detail"].split()
        assert pad == "y" * 5000
        by_pid.setdefault(r["pid"], []).append(int(n))
    assert len(by_pid) == 4 and all(v == list(range(200)) for v in by_pid.values())


def test_concurrent_writers_rotating_lose_no_line_into_a_renamed_file(tmp_path):
    root = str(tmp_path)
    _writers(root, 4, 200, 200_000)  # a rotation every ~40 lines, by whichever writer
    path = os.path.join(root, "events.log")
    newer, older = lines_of(path), lines_of(path + ".1")  # whole lines in both
    # writers that checked the size at the same moment may each add their line: 4 at most
    assert max(os.path.getsize(path), os.path.getsize(path + ".1")) <= 200_000 + 3 * 5100
    for pid in {r["pid"] for r in older + newer}:
        seq = [int(r["detail"].split()[0]) for r in older + newer if r["pid"] == pid]
        # one writer's events are in order, and the two files hold a gapless run of them
        assert seq == list(range(seq[0], seq[0] + len(seq)))
    assert any(int(r["detail"].split()[0]) == 199 for r in newer)


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_follow_sees_new_lines_across_a_rotation(tmp_path, monkeypatch, watch):
    if watch == "poll":  # the fallback when no inotify instance is left
        def refused(*a, **k):
            raise OSError(24, "Too many open files")
        monkeypatch.setattr(inotify, "Inotify", refused)
    root = str(tmp_path)
    events.container(root, "old", "started")  # before the follow: not shown
    monkeypatch.setattr(events, "MAX_BYTES", 2048)
    stop = threading.Event()
    follower = Collector(events.follow(root, stop=stop))
    try:
        time.sleep(0.5)  # let it open the log at its end (were it later, c0.. would be missed)
        for i in range(60):  # ~25 rotations of a 2 KiB log
            events.container(root, f"c{i}", "created")
            time.sleep(0.01 if i % 10 else 0.3)  # now and then, let it catch up
        follower.wait_for(60)
    finally:
        got = follower.end(stop)
    assert [e.object for e in got] == [f"container/c{i}" for i in range(60)]
    assert os.path.exists(os.path.join(root, "events.log.1"))


def test_follow_keeps_every_line_of_writers_rotating_the_log(tmp_path):
    """Other processes appending and rotating the log while it is followed: every line of
    each reaches the follower, in order (a line written into the old file after the
    follower moved on to the new one would be lost). A follower more than a whole
    generation behind loses the generations in between, as ``tail -F`` does: the writers
    here pause a little (a log of 8 MiB is not filled in a blink)."""
    root = str(tmp_path)
    stop = threading.Event()
    follower = Collector(events.follow(root, stop=stop))
    try:
        time.sleep(0.3)
        _writers(root, 2, 1500, 128 << 10, pad=300, pause=0.001)  # ten rotations
        follower.wait_for(3000)
    finally:
        got = follower.end(stop)
    assert os.path.exists(os.path.join(root, "events.log.1"))
    by_pid: dict[int, list[int]] = {}
    for e in got:
        by_pid.setdefault(e.pid, []).append(int(e.detail.split()[0]))
    assert sorted(map(len, by_pid.values())) == [1500, 1500]
    assert all(v == list(range(1500)) for v in by_pid.values())


def test_follow_from_the_start_and_a_log_that_does_not_exist_yet(tmp_path):
    root = str(tmp_path)
    stop = threading.Event()
    follower = Collector(events.follow(root, from_end=False, types=["lifecycle"], stop=stop))
    try:
        assert follower.wait_for(1, limit=0.3) == []  # nothing yet: it waits for the log
        events.emit(root, "drift", "container/a", "changed")
        events.container(root, "a", "started")
        events.container(root, "a", "stopped")
        follower.wait_for(2)
    finally:
        got = follower.end(stop)
    assert [(e.type, e.action) for e in got] == [("lifecycle", "started"),
                                                 ("lifecycle", "stopped")]
    # from_end=False shows what is there already
    stop = threading.Event()
    again = Collector(events.follow(root, from_end=False, stop=stop))
    again.wait_for(3)
    assert [e.action for e in again.end(stop)] == ["changed", "started", "stopped"]


def test_emit_never_raises_when_the_log_cannot_be_written(tmp_path):
    before = events.dropped()
    events.container(str(tmp_path / "missing"), "a", "started")  # no root: nothing created
    assert not os.path.exists(tmp_path / "missing")
    os.mkdir(tmp_path / "events.log")  # a directory where the log should be
    events.container(str(tmp_path), "a", "started")
    events.emit(str(tmp_path), "lifecycle", "container/a", "x", detail=object())  # str()'d
    assert events.dropped() == before + 3


# -- what the engine emits --------------------------------------------------------------------

@pytest.fixture
def client(fake_client):
    return fake_client  # tests/unit/conftest.py


def seen(client, since: float = 0) -> list[tuple[str, str]]:
    return [(e.object, e.action) for e in client.events.all(since=since) if e.type == "lifecycle"]


def test_lifecycle_changes_are_events(client):
    c = client.containers.create("a", "img", start=True)
    c.freeze()
    c.unfreeze()
    c.restart(force=True)
    c.stop(force=True)
    c.snapshots.create("s0")
    c.snapshots.get("s0").restore()
    c.copy("b", snapshot="s0")
    client.containers.get("b").rename("b2")
    c.snapshots.get("s0").delete()
    client.containers.get("b2").delete()
    c.delete()
    a = "container/a"
    assert seen(client) == [
        (a, "created"), (a, "started"), (a, "frozen"), (a, "unfrozen"),
        (a, "stopped"), (a, "started"), (a, "restarted"), (a, "stopped"),
        ("snapshot/a/s0", "created"), ("snapshot/a/s0", "restored"),
        ("container/b", "copied"), ("container/b2", "renamed"), ("snapshot/a/s0", "deleted"),
        ("container/b2", "deleted"), (a, "deleted")]
    details = {(e.object, e.action): e.detail for e in client.events.all()}
    assert details[("container/b2", "renamed")] == "from b"
    assert details[("container/b", "copied")] == "from a/s0"
    assert details[(a, "created")] == "from image img"


def test_a_container_that_cannot_start_leaves_no_started_event(client):
    client.containers.create("a", "img", start=True)
    with pytest.raises(sysmgr.SysmgrError):
        client.containers.get("a").start()  # already running: refused
    assert seen(client).count(("container/a", "started")) == 1
    client.containers.get("a").delete(force=True)


def test_an_apply_emits_one_operation_event_per_action(client, tmp_path):
    client.storage_pools.create("bad", "fake", {"fail": "create_container"})
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent("""
        kind: Container
        name: a
        image: img
        state: running
        ---
        kind: Container
        name: b
        image: img
        devices:
          root: {type: disk, path: /, pool: bad}
        """))
    plan = client.manifests.plan([str(path)])
    with events.context(commit="1234abc"), pytest.raises(ApplyError):
        client.manifests.apply(plan)
    ops = client.events.all(types=["operation"])
    assert [(e.object, e.action, e.detail) for e in ops] == [
        ("container/a", "create", "create Container a"), ("container/a", "start", "start Container a"),
        ("container/b", "create", "create Container b")]
    assert [e.result for e in ops[:2]] == ["ok", "ok"]
    assert ops[2].result.startswith("error: ") and "injected failure" in ops[2].result
    assert {e.commit for e in client.events.all()} == {"1234abc"}  # lifecycle ones too
    # the reverted actions show as what they did: a's container stopped and deleted again
    assert seen(client)[-2:] == [("container/a", "stopped"), ("container/a", "deleted")]


def test_settling_a_move_says_which_way_it_went(client):
    host = client.host
    for name, role in (("out", markers.OUT), ("in", markers.IN)):
        client.containers.create(name, "img")
        with host.locked():
            markers.set_marker(host, name, {"id": "m1", "role": role, "peer": "node2",
                                            "peer_name": name, "phase": "stopped",
                                            "running": False})
    t = time.time()
    settling.settle(host, "out", "m1", moved=True)   # the source goes
    settling.settle(host, "in", "m1", moved=True)    # the target stays
    got = [(e.object, e.action, e.member) for e in client.events.all(since=t)]
    assert got == [("container/out", "deleted", None), ("container/out", "moved-out", "node2"),
                   ("container/in", "moved-in", "node2")]
    client.containers.get("in").delete()


def test_a_log_that_cannot_be_written_fails_no_operation(client):
    os.mkdir(os.path.join(client.root, "events.log"))
    before = events.dropped()
    c = client.containers.create("a", "img", start=True)
    c.stop(force=True)
    c.delete()
    assert events.dropped() == before + 4 and client.containers.all() == []


def test_poll_follows_through_event_list_alone(client):
    """What a member over SSH gets: ``event_list`` asked what is new, repeats skipped."""
    client.containers.create("a", "img")  # already there: from_end skips it
    stop = threading.Event()
    follower = Collector(api_events.poll(client.backend, types=["lifecycle"], from_end=True,
                                         since=None, stop=stop, interval=0.05))
    try:
        assert follower.wait_for(1, limit=0.3) == []
        client.containers.get("a").start()
        client.containers.get("a").stop(force=True)
        follower.wait_for(2)
        time.sleep(0.2)  # a few more polls: nothing comes twice
    finally:
        got = follower.end(stop)
    assert [(e.object, e.action) for e in got] == [("container/a", "started"),
                                                   ("container/a", "stopped")]
    client.containers.get("a").delete()
