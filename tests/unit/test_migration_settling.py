"""Settling a move on one member (sysmgr.engine.migration.settling) when a temporary
snapshot of the move cannot be deleted yet: the source endpoint of a move cut short may
still be sending it (btrfs refuses with EPERM), found by tests/cluster/test_migration_ssh.py
(the target's sysmgr killed mid-stream). The rollback must not stop there. Fake runtime,
dir pool, the refusal injected into the driver."""

from __future__ import annotations

import pytest

from sysmgr.drivers.storage.dir import DirPool
from sysmgr.engine.migration import markers, settling
from sysmgr.errors import DriverError


@pytest.fixture
def client(fake_client):
    return fake_client  # tests/unit/conftest.py


def test_a_busy_temporary_snapshot_does_not_stop_the_rollback(client, monkeypatch):
    host = client.host
    client.containers.create("c1", "img")
    drv = host.pool_driver("default")
    temp = markers.temp_name("abc", 0)
    drv.create_snapshot("c1", temp)
    with host.locked():
        markers.set_marker(host, "c1", {"id": "abc", "role": markers.OUT, "peer": "m2",
                                        "peer_name": "c1", "phase": "copying",
                                        "running": False})

    def busy(self, name, snap):
        raise DriverError(f"cannot delete snapshot {name}/{snap}: Operation not permitted")

    monkeypatch.setattr(DirPool, "delete_snapshot", busy)
    assert settling.settle(host, "c1", "abc", moved=False) == "kept c1 here"
    assert markers.marker(host.store.container("c1")) is None  # c1 is free again
    monkeypatch.undo()
    assert markers.temp_snapshots(host, host.store.container("c1")) == [temp]  # its sender's
