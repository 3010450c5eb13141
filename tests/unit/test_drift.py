"""Drift (a change the host made, not the manifests) and the Terraform-LXD list of perpetual
diffs: each must plan nothing the second time."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sysmgr.engine import planner
from sysmgr.engine.actions import Start, UpdateContainer, UpdateProfile
from sysmgr.model.loader import load_text
from sysmgr.state.db import ContainerRecord, ProfileRecord
from tests.unit.test_planner import BASE, FP, container_doc, observed


def applied_from(text: str) -> dict:
    """What an apply of ``text`` would have recorded."""
    plan = planner.plan(load_text(text), observed())
    return {(k, n): json.loads(d) for k, n, d in plan.applied}


def test_a_key_changed_by_hand_is_drift_and_the_line_says_so() -> None:
    text = BASE + container_doc("  limits.memory: 256MiB")
    obs = replace(observed({"c1": ("RUNNING", {"user.x": "1", "limits.memory": "128MiB"})}),
                  applied=applied_from(text))
    plan = planner.plan(load_text(text), obs)
    (upd,) = [a for a in plan.actions if isinstance(a, UpdateContainer)]
    assert upd.describe() == "update (live) Container c1 (drift: limits.memory 128MiB -> 256MiB)"
    assert [c.drift for c in upd.changes] == [True]


def test_a_manifest_change_is_not_drift() -> None:
    old = BASE + container_doc("  limits.memory: 128MiB")
    new = BASE + container_doc("  limits.memory: 256MiB")
    obs = replace(observed({"c1": ("RUNNING", {"user.x": "1", "limits.memory": "128MiB"})}),
                  applied=applied_from(old))
    (upd,) = [a for a in planner.plan(load_text(new), obs).actions if isinstance(a, UpdateContainer)]
    assert "drift" not in upd.describe() and not upd.drift()
    # nothing recorded (applied before sysmgr kept records): nothing is called drift either
    obs = replace(obs, applied={})
    (upd,) = [a for a in planner.plan(load_text(old.replace("128", "64")), obs).actions
              if isinstance(a, UpdateContainer)]
    assert not upd.drift()


def test_a_container_stopped_by_hand_is_started_as_drift() -> None:
    text = BASE + container_doc()
    obs = replace(observed({"c1": ("STOPPED", {"user.x": "1"})}), applied=applied_from(text))
    (start,) = planner.plan(load_text(text), obs).actions
    assert isinstance(start, Start)
    assert start.describe() == "start Container c1 (drift: state stopped -> running)"
    # a manifest that now asks for running (it said stopped) is a plain start
    obs = replace(obs, applied=applied_from(BASE + container_doc(state="stopped")))
    assert planner.plan(load_text(text), obs).actions[0].describe() == "start Container c1"


def test_a_deleted_profile_device_is_drift() -> None:
    text = BASE.replace("  limits.memory: 256MiB", "  limits.memory: 256MiB\ndevices:\n"
                        "  tmp: {type: disk, source: /srv, path: /srv}")
    obs = observed()
    obs = replace(obs, applied=applied_from(text),
                  profiles={**obs.profiles,
                            "small": ProfileRecord("small", "", {"limits.memory": "256MiB"}, {})})
    (upd,) = planner.plan(load_text(text), obs).actions
    assert isinstance(upd, UpdateProfile)
    assert upd.describe() == "update Profile small (drift: devices.tmp missing)"


# -- Terraform-LXD's perpetual diffs: a second plan must be empty -------------------------------

@pytest.mark.parametrize("key, manifest_value, host_value", [
    ("limits.memory", '"1GB"', "1000MB"),        # another unit, same bytes
    ("limits.memory", '"1GiB"', "1073741824"),
    ("limits.cpu", "2", "2"),                    # a YAML number and the string the host stores
    ("limits.cpu", '"2"', "2"),
    ("boot.autostart", "yes", "true"),           # YAML 1.1 booleans, LXD's strings
    ("boot.autostart", '"1"', "true"),
])
def test_values_written_another_way_plan_nothing(key, manifest_value, host_value) -> None:
    text = BASE + container_doc(f"  {key}: {manifest_value}")
    obs = observed({"c1": ("RUNNING", {"user.x": "1", key: host_value})})
    assert planner.plan(load_text(text), obs).empty


def test_keys_the_host_fills_in_plan_nothing() -> None:
    text = BASE + container_doc()
    host_cfg = {"user.x": "1", "volatile.eth0.hwaddr": "00:16:3e:00:00:01",
                "volatile.last_state": "RUNNING", "image.os": "busybox"}
    assert planner.plan(load_text(text), observed({"c1": ("RUNNING", host_cfg)})).empty


def test_profiles_in_another_order_plan_nothing_unless_the_order_matters() -> None:
    text = BASE + container_doc(profiles="[small, default]")
    assert planner.plan(load_text(text), observed({"c1": ("RUNNING", {"user.x": "1"})})).empty
    # both set limits.memory: the last one wins, so here the order is a real change
    obs = observed({"c1": ("RUNNING", {"user.x": "1"})})
    obs = replace(obs, profiles={**obs.profiles, "default": ProfileRecord(
        "default", "", {"limits.memory": "1GiB"},
        {"root": {"type": "disk", "path": "/", "pool": "default"}})})
    doc = BASE.replace("kind: Profile\nname: default\n",
                       "kind: Profile\nname: default\nconfig:\n  limits.memory: 1GiB\n", 1)
    plan = planner.plan(load_text(doc + container_doc(profiles="[small, default]")), obs)
    assert [c.path for a in plan.actions if isinstance(a, UpdateContainer)
            for c in a.changes] == ["profiles"]


@pytest.mark.parametrize("state", ["RUNNING", "STOPPED"])
def test_a_manifest_without_state_leaves_the_state_alone(state: str) -> None:
    text = BASE + container_doc().replace("state: running\n", "")
    assert planner.plan(load_text(text), observed({"c1": (state, {"user.x": "1"})})).empty


def test_create_only_fields_plan_nothing_once_created() -> None:
    # the image a container was created from: a newer image under the alias is no change
    text = BASE + container_doc()
    obs = observed({"c1": ("RUNNING", {"user.x": "1"})})
    c1 = obs.containers["c1"]
    rec = ContainerRecord("c1", "b" * 64, "default", ["default", "small"], {"user.x": "1"}, {}, "")
    obs = replace(obs, containers={"c1": replace(c1, record=rec)})
    plan = planner.plan(load_text(text), obs)
    assert plan.empty and any("image" in w for w in plan.warnings)
    assert FP != rec.image
