"""Table-driven tests of the pure planner: manifests + an observation -> actions. No mocks."""

from __future__ import annotations

import pytest

from sysmgr.engine import planner
from sysmgr.engine.actions import (
    BuildImage, CreateContainer, CreatePool, PutProfile, Restart, Start, Stop, UpdateContainer,
    UpdateProfile)
from sysmgr.engine.observe import Observed, ObservedContainer
from sysmgr.errors import ValidationError
from sysmgr.model.loader import load_text
from sysmgr.state.db import ContainerRecord, ImageRecord, PoolRecord, ProfileRecord

FP = "a" * 64

BASE = """
kind: Profile
name: default
devices:
  root: {type: disk, path: /, pool: default}
---
kind: Profile
name: small
config:
  limits.memory: 256MiB
"""


def observed(containers: dict[str, tuple[str, dict]] | None = None, small: dict | None = None) -> Observed:
    """A host with pool `default`, profiles default+small, image `busybox`, and containers."""
    profiles = {
        "default": ProfileRecord("default", "", {}, {"root": {"type": "disk", "path": "/", "pool": "default"}}),
        "small": ProfileRecord("small", "", small if small is not None else {"limits.memory": "256MiB"}, {}),
    }
    cs = {}
    for name, (state, cfg) in (containers or {}).items():
        rec = ContainerRecord(name, FP, "default", ["default", "small"], cfg, {}, "")
        cs[name] = ObservedContainer(rec, state)
    return Observed(
        pools={"default": PoolRecord("default", "dir")},
        profiles=profiles,
        images={FP: ImageRecord(FP, aliases=["busybox"])},
        aliases={"busybox": FP},
        containers=cs,
    )


def container_doc(config: str = "", state: str = "running", profiles: str = "[default, small]") -> str:
    return f"""
---
kind: Container
name: c1
image: busybox
profiles: {profiles}
state: {state}
config:
  user.x: "1"
{config}
"""


def kinds(plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


def test_fresh_host_plans_everything_in_dependency_order():
    text = """
kind: Container
name: c1
image: busybox
state: running
---
kind: Image
name: busybox
build: busybox
---
kind: Profile
name: default
devices:
  root: {type: disk, path: /, pool: default}
---
kind: StoragePool
name: default
driver: dir
"""
    plan = planner.plan(load_text(text), Observed())
    assert kinds(plan) == ["CreatePool", "PutProfile", "BuildImage", "CreateContainer", "Start"]
    assert plan.actions[2] == BuildImage("busybox", builder="busybox", options={})


@pytest.mark.parametrize(
    "obs_state, obs_cfg, doc, expected",
    [
        # identical -> nothing, whatever the spelling of the values
        ("RUNNING", {"user.x": "1"}, container_doc(), []),
        ("RUNNING", {"user.x": "1", "limits.memory": "67108864"},
         container_doc("  limits.memory: 64MiB"), []),
        ("RUNNING", {"user.x": "1", "security.protection.delete": "true"},
         container_doc("  security.protection.delete: yes"), []),
        # live key on a running container -> live update only
        ("RUNNING", {"user.x": "1"}, container_doc("  limits.memory: 64MiB"), ["UpdateContainer"]),
        # non-live key on a running container -> update + restart
        ("RUNNING", {"user.x": "1"}, container_doc("  environment.A: b"), ["UpdateContainer", "Restart"]),
        # same change on a stopped container that should run -> update + start, no restart
        ("STOPPED", {"user.x": "1"}, container_doc("  environment.A: b"), ["UpdateContainer", "Start"]),
        # state only
        ("STOPPED", {"user.x": "1"}, container_doc(), ["Start"]),
        ("RUNNING", {"user.x": "1"}, container_doc(state="stopped"), ["Stop"]),
        ("RUNNING", {"user.x": "1"}, container_doc("  environment.A: b", state="stopped"),
         ["UpdateContainer", "Stop"]),
    ],
)
def test_container_changes(obs_state, obs_cfg, doc, expected):
    plan = planner.plan(load_text(BASE + doc), observed({"c1": (obs_state, obs_cfg)}))
    assert kinds(plan) == expected


def test_live_flag_and_restart_reason():
    plan = planner.plan(load_text(BASE + container_doc("  limits.memory: 64MiB")),
                        observed({"c1": ("RUNNING", {"user.x": "1"})}))
    (upd,) = plan.actions
    assert isinstance(upd, UpdateContainer) and upd.live
    # the local key overrides the profile's: the plan shows the value in effect before
    assert [c.describe() for c in upd.changes] == [
        "~ config.limits.memory: 256MiB (profile small) -> 64MiB"]

    plan = planner.plan(load_text(BASE + container_doc("  environment.A: b")),
                        observed({"c1": ("RUNNING", {"user.x": "1"})}))
    upd, rst = plan.actions
    assert not upd.live and isinstance(rst, Restart) and "environment.A" in rst.reason


def test_profile_change_updates_profile_and_restarts_running_users_only_when_needed():
    # live change through a profile: profile update, no container action
    doc = BASE.replace("256MiB", "512MiB") + container_doc()
    plan = planner.plan(load_text(doc), observed({"c1": ("RUNNING", {"user.x": "1"})}))
    assert kinds(plan) == ["UpdateProfile"]
    assert plan.actions[0].changes[0].describe() == "~ config.limits.memory: 256MiB -> 512MiB"
    # non-live change through a profile: the running container must restart
    doc = BASE.replace("limits.memory: 256MiB", "limits.memory: 256MiB\n  environment.X: y") + container_doc()
    plan = planner.plan(load_text(doc), observed({"c1": ("RUNNING", {"user.x": "1"})}))
    assert kinds(plan) == ["UpdateProfile", "Restart"]


def test_profile_change_warns_about_containers_outside_the_manifest():
    doc = BASE.replace("limits.memory: 256MiB", "limits.memory: 256MiB\n  environment.X: y")
    plan = planner.plan(load_text(doc), observed({"other": ("RUNNING", {})}))
    assert kinds(plan) == ["UpdateProfile"]
    assert any("other" in w and "environment.X" in w for w in plan.warnings)


def test_existing_objects_plan_nothing():
    text = BASE + """
---
kind: StoragePool
name: default
driver: dir
---
kind: Image
name: busybox
build: busybox
"""
    assert planner.plan(load_text(text), observed()).empty


@pytest.mark.parametrize(
    "doc, message",
    [
        (container_doc(profiles="[default, nope]"), "profile 'nope' not found"),
        (container_doc().replace("image: busybox", "image: ghost"), "image 'ghost' not found"),
        (container_doc(profiles="[small]"), "root disk"),
    ],
)
def test_reference_errors_name_file_and_key(doc, message):
    with pytest.raises(ValidationError) as ei:
        planner.plan(load_text(BASE + doc, filename="m.yaml"), observed())
    text = str(ei.value)
    assert message in text and "m.yaml:" in text


def test_pool_driver_change_is_refused():
    text = "kind: StoragePool\nname: default\ndriver: btrfs\n"
    with pytest.raises(ValidationError, match="driver of a pool cannot be changed"):
        planner.plan(load_text(text), observed())


def test_plan_lines_are_what_apply_will_run():
    plan = planner.plan(load_text(BASE + container_doc("  limits.memory: 64MiB")),
                        observed({"c1": ("STOPPED", {"user.x": "1"})}))
    assert plan.lines() == ["update Container c1", "    ~ config.limits.memory: 256MiB (profile small) -> 64MiB", "start Container c1"]
    assert plan.summary() == "plan: 1 to update, 1 to start"


def test_new_profile_and_new_container():
    doc = BASE + "---\nkind: Profile\nname: big\nconfig: {limits.memory: 1GiB}\n" + \
        container_doc(profiles="[default, big]")
    plan = planner.plan(load_text(doc), observed())
    assert kinds(plan) == ["PutProfile", "CreateContainer", "Start"]
    assert isinstance(plan.actions[0], PutProfile) and not isinstance(plan.actions[0], UpdateProfile)
    assert isinstance(plan.actions[1], CreateContainer) and plan.actions[1].profiles == ("default", "big")
    assert isinstance(plan.actions[2], Start)
    assert not any(isinstance(a, (CreatePool, Stop)) for a in plan.actions)


def test_ignored_keys_are_neither_compared_nor_put_back() -> None:
    text = BASE + container_doc("  user.notes: from-git\n  limits.cpu: \"1\"") + \
        "ignore:\n  config: [user.notes, limits.cpu*]\n"
    obs = observed({"c1": ("RUNNING", {"user.x": "1", "user.notes": "by hand",
                                       "limits.cpu": "2"})})
    assert planner.plan(load_text(text), obs).empty          # hand-made values stay
    obs = observed({"c1": ("RUNNING", {"user.x": "2", "user.notes": "by hand"})})
    (upd,) = [a for a in planner.plan(load_text(text), obs).actions
              if isinstance(a, UpdateContainer)]
    assert [c.path for c in upd.changes] == ["config.user.x"]
    assert upd.config["user.notes"] == "by hand" and "limits.cpu" not in upd.config


def test_prune_plans_only_inventory_objects_of_the_same_origin() -> None:
    from dataclasses import replace

    from sysmgr.engine.actions import Prune, SetPrune
    from sysmgr.state.inventory import InventoryRecord

    obs = observed({"c1": ("RUNNING", {"user.x": "1"}), "old": ("STOPPED", {}),
                    "other": ("STOPPED", {}), "hand": ("STOPPED", {})})
    inv = {("Container", "old"): InventoryRecord("Container", "old", "/src"),
           ("Container", "other"): InventoryRecord("Container", "other", "/elsewhere"),
           ("Container", "c1"): InventoryRecord("Container", "c1", "/src"),
           ("Container", "gone"): InventoryRecord("Container", "gone", "/src")}
    obs = replace(obs, inventory=inv)
    manifest = replace(load_text(BASE + container_doc() + "prune: false\n"), origin="/src")
    plan = planner.plan(manifest, obs, prune=True)
    assert [a.describe() for a in plan.actions if isinstance(a, Prune)] == \
        ["delete Container old"]                              # not other, hand, or gone
    assert any(isinstance(a, SetPrune) and a.name == "c1" and not a.prune for a in plan.actions)
    assert "forget Container gone (deleted outside the manifests)" in plan.lines()
    assert not [a for a in planner.plan(manifest, obs).actions if isinstance(a, Prune)]
    with pytest.raises(ValidationError, match="hold no objects"):
        planner.plan(replace(manifest, specs=()), obs, prune=True)


def test_a_members_share_prunes_only_what_left_the_whole_manifest() -> None:
    from dataclasses import replace

    from sysmgr.engine.actions import Prune
    from sysmgr.state.inventory import InventoryRecord

    obs = observed({"c1": ("RUNNING", {"user.x": "1"}), "c2": ("STOPPED", {}),
                    "gone": ("STOPPED", {})})
    obs = replace(obs, inventory={(k, n): InventoryRecord(k, n, "/src") for k, n in
                                  [("Container", "c2"), ("Container", "gone")]})
    # this member's share lacks c2 (placed on another member) and is even empty
    share = replace(load_text(BASE), origin="/src", specs=(),
                    declared=(("Container", "c1"), ("Container", "c2")))
    plan = planner.plan(share, obs, prune=True)
    assert [a.name for a in plan.actions if isinstance(a, Prune)] == ["gone"]


def test_an_existing_container_needs_no_image() -> None:
    from dataclasses import replace

    # its image was deleted since: the plan is empty (an image is needed only to create)
    obs = replace(observed({"c1": ("RUNNING", {"user.x": "1"})}), images={}, aliases={})
    assert planner.plan(load_text(BASE + container_doc()), obs).empty
    with pytest.raises(ValidationError, match="image 'busybox' not found"):
        planner.plan(load_text(BASE + container_doc().replace("name: c1", "name: c2")), obs)


def test_a_device_change_shows_the_changed_key_and_a_profiles_device() -> None:
    from dataclasses import replace

    disk = "  data: {type: disk, source: /srv/b, path: /data}\n"
    doc = BASE + container_doc() + "devices:\n" + disk
    obs = observed({"c1": ("STOPPED", {"user.x": "1"})})
    c1 = obs.containers["c1"]
    rec = replace(c1.record, devices={"data": {"type": "disk", "source": "/srv/a",
                                               "path": "/data"}})
    obs2 = replace(obs, containers={"c1": replace(c1, record=rec)})
    upd = planner.plan(load_text(doc), obs2).actions[0]
    assert [c.describe() for c in upd.changes] == ["~ devices.data.source: /srv/a -> /srv/b"]
    # a local device over a profile's device of the same name: the profile's keys are "old"
    prof = {**obs.profiles, "small": replace(obs.profiles["small"], devices={
        "data": {"type": "disk", "source": "/srv/a", "path": "/data"}})}
    doc = BASE.replace("  limits.memory: 256MiB", "  limits.memory: 256MiB\ndevices:\n"
                       "  data: {type: disk, source: /srv/a, path: /data}") + \
        container_doc() + "devices:\n" + disk
    upd = planner.plan(load_text(doc), replace(obs, profiles=prof)).actions[0]
    assert [c.describe() for c in upd.changes] == [
        "~ devices.data.source: /srv/a (profile small) -> /srv/b"]
