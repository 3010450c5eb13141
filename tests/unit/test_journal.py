"""Intents (sysmgr.engine.journal): what a killed sysmgr left half-done is resolved by the
next run. Simulated here by writing the volume and the intent a dead process would have left
(the real kill -9 runs are in tests/integration/test_storage_e2e.py). Fake runtime, dir pool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from sysmgr.engine import journal
from sysmgr.state.snapshots import SnapshotStore


@pytest.fixture
def client(fake_client):
    return fake_client  # tests/unit/conftest.py


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def leave_intent(client, **data) -> str:
    d = os.path.join(client.layout.tmp, "intents")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{data['op']}-x-{data['pid']}-0000.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def test_an_unfinished_create_is_removed_by_init(client):
    host = client.host
    drv = host.pool_driver("default")
    fp = client.images.get("img").fingerprint
    drv.create_container("ghost", fp)                    # the volume, but never the record
    path = leave_intent(client, op="create", container="ghost", pool="default", pid=dead_pid())
    done = client.init()
    assert any("unfinished create of container ghost" in line for line in done)
    assert not drv.has_container("ghost") and not os.path.exists(path)
    client.containers.create("ghost", "img")             # the name is free again


def test_an_arrival_killed_in_its_first_snapshot_is_removed(client):
    # the target of a copy or move, killed while its first snapshot streamed in: that
    # snapshot (partly received) exists, the container's volume not yet
    host = client.host
    drv = host.pool_driver("default")
    drv.create_container("ghost", client.images.get("img").fingerprint)
    drv.create_snapshot("ghost", "mig-0123-0")
    shutil.rmtree(os.path.dirname(drv.container_path("ghost")))  # the snapshot stays
    assert not drv.has_container("ghost") and os.path.isdir(drv.snapshot_path("ghost", "mig-0123-0"))
    leave_intent(client, op="import", container="ghost", pool="default", pid=dead_pid(),
                 snapshots=["mig-0123-0"])
    done = client.init()
    assert any("unfinished import of container ghost" in line for line in done), done
    assert not os.path.exists(drv.snapshot_path("ghost", "mig-0123-0"))
    assert not os.path.exists(os.path.dirname(drv.snapshot_path("ghost", "mig-0123-0")))


def test_a_committed_create_is_kept(client):
    client.containers.create("c1", "img")
    path = leave_intent(client, op="create", container="c1", pool="default", pid=dead_pid())
    client.init()
    assert client.host.pool_driver("default").has_container("c1") and not os.path.exists(path)


def test_a_live_process_intent_is_left_alone(client):
    drv = client.host.pool_driver("default")
    drv.create_container("busy", client.images.get("img").fingerprint)
    holder = subprocess.Popen(["sleep", "30"])
    try:
        path = leave_intent(client, op="create", container="busy", pool="default", pid=holder.pid)
        client.init()
        assert drv.has_container("busy") and os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()
    client.init()  # now it is dead: resolved
    assert not drv.has_container("busy")


def test_the_intent_of_a_killed_process_not_yet_reaped_is_resolved(client):
    # a zombie (killed, its parent has not waited for it yet: an sshd session busy
    # elsewhere) holds no lock and does nothing more: its intent is resolved like any other
    drv = client.host.pool_driver("default")
    drv.create_container("zombie", client.images.get("img").fingerprint)
    def stat() -> list[str]:
        with open(f"/proc/{holder.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    holder = subprocess.Popen(["sleep", "30"])
    try:
        start = int(stat()[19])
        holder.kill()
        while stat()[0] != "Z":  # dead, not reaped: this test is its parent, waits below
            time.sleep(0.01)
        path = leave_intent(client, op="create", container="zombie", pool="default",
                            pid=holder.pid, starttime=start)
        client.init()
        assert not drv.has_container("zombie") and not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()


def test_an_unfinished_snapshot_and_rename_are_resolved(client):
    c = client.containers.create("c1", "img")
    drv = client.host.pool_driver("default")
    drv.create_snapshot("c1", "half")                    # volume without record
    leave_intent(client, op="snapshot", container="c1", pool="default", snapshot="half", pid=dead_pid())
    client.init()
    assert drv.list_snapshots("c1") == [] and SnapshotStore(client.host.store).all("c1") == []
    drv.rename_container("c1", "c2")                     # renamed on the pool, not in the record
    leave_intent(client, op="rename", container="c1", new="c2", pool="default", pid=dead_pid())
    client.init()
    assert drv.has_container("c1") and not drv.has_container("c2")
    # a snapshot that did get its record is kept
    c.snapshots.create("kept")
    leave_intent(client, op="snapshot", container="c1", pool="default", snapshot="kept", pid=dead_pid())
    journal.recover(client.host)
    assert drv.list_snapshots("c1") == ["kept"]


def test_an_interrupted_export_leaves_no_snapshot_or_partial_file(client, tmp_path):
    client.containers.create("c1", "img")
    drv = client.host.pool_driver("default")
    drv.create_snapshot("c1", "backup-0123")
    partial = tmp_path / "c1.tar.zst.partial-1"
    partial.write_bytes(b"half")
    leave_intent(client, op="export", container="c1", pool="default", snapshot="backup-0123",
                 partial=str(partial), pid=dead_pid())
    client.init()
    assert drv.list_snapshots("c1") == [] and not partial.exists()
