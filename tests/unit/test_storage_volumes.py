"""Custom storage volumes without the kernel: the ``kind: StorageVolume`` document, the pure
planner (create, update, references, order), the engine on the fake runtime and a dir pool
(create, attach live, refusals that name what uses a volume, journal recovery), the CLI."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.engine import planner, records
from sysmgr.engine.actions import CreateVolume, UpdateVolume
from sysmgr.errors import AlreadyExists, Conflict, NotFound, ValidationError
from sysmgr.model.loader import load_text
from sysmgr.state import volumes as svol
from tests.unit.cli_runner import CliAt
from tests.unit.test_planner import BASE, container_doc, kinds, observed

VOLUME = """
---
kind: StorageVolume
name: data
pool: default
config: {user.team: web}
"""
DISK = "devices:\n  data: {type: disk, pool: default, source: data, path: /srv/data}\n"


# -- model and planner ----------------------------------------------------------------------------

def test_the_document_names_its_volume_by_pool_and_name():
    m = load_text(VOLUME + VOLUME.replace("pool: default", "pool: fast"))
    assert [s.name for s in m.of("StorageVolume")] == ["default/data", "fast/data"]
    with pytest.raises(ValidationError) as e:
        load_text(VOLUME + VOLUME + "---\nkind: StorageVolume\nname: -x\npool: default\n"
                  "config: {size: lots, colour: red}\n")
    text = str(e.value)
    assert "duplicate StorageVolume 'default/data'" in text
    assert "invalid name '-x'" in text and "config.size" in text and "config.colour" in text


def test_volumes_are_planned_after_pools_before_containers_and_converge():
    text = BASE + container_doc() + DISK + VOLUME
    plan = planner.plan(load_text(text), observed())
    assert kinds(plan) == ["CreateVolume", "CreateContainer", "Start"]
    (vol,) = [a for a in plan.actions if isinstance(a, CreateVolume)]
    assert (vol.pool, vol.volume, dict(vol.config)) == ("default", "data", {"user.team": "web"})
    assert vol.describe() == "create StorageVolume default/data"
    obs = observed()
    obs = dataclasses.replace(obs, volumes={"default/data": svol.VolumeRecord(
        "default", "data", {"user.team": "web"})})
    assert kinds(planner.plan(load_text(text), obs)) == ["CreateContainer", "Start"]
    changed = text.replace("user.team: web", "user.team: api")
    upd = planner.plan(load_text(changed), obs).actions[0]
    assert isinstance(upd, UpdateVolume)
    assert [c.describe() for c in upd.changes] == ["~ config.user.team: web -> api"]
    # a volume left out of the manifests is never deleted by apply
    assert kinds(planner.plan(load_text(BASE), obs)) == []


def test_references_to_missing_volumes_and_pools_are_reported_with_their_line():
    text = BASE + container_doc() + DISK.replace("source: data", "source: nope") + \
        VOLUME.replace("pool: default", "pool: nowhere")
    with pytest.raises(ValidationError) as e:
        planner.plan(load_text(text), observed())
    msgs = [(i.path, i.message) for i in e.value.issues]
    assert ("devices.data.source", "storage volume 'nope' not found in storage pool 'default' "
            "(nor as a StorageVolume in the manifests)") in msgs
    assert ("pool", "storage pool 'nowhere' not found") in msgs


# -- the engine on the fake runtime ---------------------------------------------------------------

def test_attach_live_and_what_uses_a_volume_is_named(fake_client):
    vol = fake_client.storage_volumes.create("default", "data", config={"user.x": 1})
    assert vol.config == {"user.x": "1"} and vol.used_by == []
    c = fake_client.containers.create("c1", "img", start=True)
    assert vol.attach("c1", "/srv/data") == []
    cg = records.cgroup_path(fake_client.host, "c1")
    disk = FakeRuntime.mounts(cg)["/srv/data"]
    assert disk.source == vol._backend.host.pool_driver("default").custom_volumes() \
        .container_path("data") and disk.shift  # idmapped: root inside owns it
    assert c.refresh().devices["data"] == {"type": "disk", "pool": "default", "source": "data",
                                           "path": "/srv/data"}
    with pytest.raises(AlreadyExists, match="device 'data' already exists"):
        vol.attach("c1", "/elsewhere")
    fake_client.profiles.create("withdata", devices={
        "d": {"type": "disk", "pool": "default", "source": "data", "path": "/d"}})
    with pytest.raises(Conflict, match="used by container c1, profile withdata"):
        vol.delete()
    vol.detach("c1")
    assert FakeRuntime.mounts(cg) == {}
    fake_client.profiles.get("withdata").delete()
    vol.delete()
    assert not fake_client.storage_volumes.exists("default", "data")
    # a pool keeps its volumes: it cannot be deleted under them
    fake_client.storage_pools.create("p2", "dir")
    fake_client.storage_volumes.create("p2", "left")
    with pytest.raises(Conflict, match="holds storage volumes: left"):
        fake_client.storage_pools.get("p2").delete()


def test_bad_input_changes_nothing(fake_client):
    with pytest.raises(ValidationError, match="cannot enforce a volume size"):
        fake_client.storage_volumes.create("default", "v", config={"size": "1GiB"})
    with pytest.raises(ValidationError, match="invalid storage volume name"):
        fake_client.storage_volumes.create("default", "a/b")
    with pytest.raises(NotFound, match="storage pool 'nope'"):
        fake_client.storage_volumes.create("nope", "v")
    c = fake_client.containers.create("c1", "img")
    c.devices["v"] = {"type": "disk", "pool": "default", "source": "v", "path": "/v"}
    with pytest.raises(ValidationError, match="storage volume 'v' not found"):
        c.save()
    assert fake_client.storage_volumes.all() == []


def test_a_volume_made_by_a_killed_process_is_removed_by_the_next_operation(fake_client):
    host = fake_client.host
    view = host.pool_driver("default").custom_volumes()
    fake_client.storage_volumes.create("default", "keep")
    os.makedirs(view.container_path("orphan"))
    path = os.path.join(host.layout.tmp, "intents", "volume-orphan-1.json")
    with open(path, "w") as f:  # what a create killed before its record leaves behind
        json.dump({"op": "volume", "pid": 2 ** 22 + 1, "volume": "orphan", "pool": "default"}, f)
    fake_client.storage_volumes.create("default", "next")
    assert not os.path.exists(os.path.dirname(view.container_path("orphan")))
    assert sorted(v.name for v in fake_client.storage_volumes.all()) == ["keep", "next"]


def test_the_cli(fake_client):
    cli = CliAt(fake_client.root)
    assert "Storage volume data created" in cli("storage", "volume", "create", "default", "data",
                                                "user.a=1", ok=True).output
    res = cli("storage", "volume", "create", "default", "data")
    assert res.exit_code != 0 and "already exists" in res.output
    out = json.loads(cli("storage", "volume", "list", "--format", "json", ok=True).stdout)
    assert [(v["pool"], v["name"], v["config"]) for v in out] == [("default", "data", {"user.a": "1"})]
    res = cli("storage", "volume", "attach", "default", "data", "nobody-here", "/x")
    assert res.exit_code == 2 and "container 'nobody-here' not found" in res.output
    res = cli("storage", "volume", "copy", "default", "default/x")
    assert res.exit_code == 2 and "expected POOL/VOLUME" in res.output
    cli("storage", "volume", "unset", "default", "data", "user.a", ok=True)
    assert cli("storage", "volume", "get", "default", "data", "user.a", ok=True).stdout == "\n"
    cli("storage", "volume", "rename", "default", "data", "renamed", ok=True)
    cli("storage", "volume", "delete", "default", "renamed", ok=True)
