"""The planner and the root disk's size: a size change is live (a quota), not a restart."""

from __future__ import annotations

from sysmgr.engine import planner
from sysmgr.engine.actions import UpdateContainer
from sysmgr.model.loader import load_text
from tests.unit.test_planner import BASE, container_doc, observed


def _doc(size: str) -> str:
    return container_doc() + f"devices:\n  root: {{type: disk, path: /, pool: default, size: {size}}}\n"


def test_root_size_change_is_live():
    obs = observed({"c1": ("RUNNING", {"user.x": "1"})})
    rec = obs.containers["c1"].record
    rec.devices = {"root": {"type": "disk", "path": "/", "pool": "default", "size": "1GiB"}}
    plan = planner.plan(load_text(BASE + _doc("2GiB")), obs)
    (upd,) = plan.actions
    assert isinstance(upd, UpdateContainer) and upd.live
    assert [c.path for c in upd.changes] == ["devices.root.size"]   # the key that changed
    # the same size spelled differently is no change at all
    assert planner.plan(load_text(BASE + _doc("1073741824")), obs).empty


def test_a_disk_with_a_source_comes_and_goes_live_a_nic_needs_a_restart():
    """LXD's hotplug: a host path (or custom volume) disk is mounted into the running
    container, unmounted, or remounted when it changes; a new nic waits for a restart."""
    obs = observed({"c1": ("RUNNING", {"user.x": "1"})})
    text = BASE + container_doc() + "devices:\n  data: {type: disk, path: /srv, source: /tmp}\n"
    (upd,) = planner.plan(load_text(text), obs).actions
    assert isinstance(upd, UpdateContainer) and upd.live and upd.describe().startswith("update (live)")
    rec = obs.containers["c1"].record
    rec.devices = {"data": {"type": "disk", "path": "/srv", "source": "/tmp"}}
    changed = text.replace("source: /tmp}", "source: /tmp, readonly: true}")
    (upd,) = planner.plan(load_text(changed), obs).actions
    assert upd.live and [c.path for c in upd.changes] == ["devices.data.readonly"]
    (gone,) = planner.plan(load_text(BASE + container_doc()), obs).actions
    assert gone.live and gone.changes[0].new is None
    nic = BASE + container_doc() + "devices:\n  eth1: {type: nic, nictype: bridged, parent: br0}\n"
    kinds = [type(a).__name__ for a in planner.plan(load_text(nic), obs).actions]
    assert kinds == ["UpdateContainer", "Restart"]
