"""Settling a move on one member: finish it (the target committed its copy) or roll it
back (it did not); see :mod:`.markers` for the rule and :mod:`sysmgr.api.migration` for
who decides.

Layer: engine.
"""

from __future__ import annotations

from typing import Any

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import containers, events, lifecycle, records
from sysmgr.engine.host import Host
from sysmgr.engine.migration import markers


def settle(host: Host, name: str, mid: str, *, moved: bool) -> str:
    """Finish (``moved``) or roll back move ``mid`` on this member; what was done."""
    with host.locked():
        if not host.store.has_container(name):
            return ""
        rec = host.store.container(name)
        m = markers.marker(rec)
        if m is None or m.get("id") != mid:
            return ""
        markers.drop_temp_snapshots(host, name, mid)
        done = _settle(host, name, mid, m, moved)
        way = "moved-out" if m.get("role") == markers.OUT else "moved-in"
        events.container(host, name, way if moved else "move-reverted",
                         member=m.get("peer") or None, detail=done)
        return done


def _settle(host: Host, name: str, mid: str, m: dict[str, Any], moved: bool) -> str:
    """Delete the copy that goes, or keep (and restart) the one that stays; what was done."""
    keep = (m.get("role") == markers.OUT) != moved   # the source stays, or the target is kept
    if not keep:
        containers.delete_container(host, name, force=True, migration=mid)
        return f"removed the {'source' if moved else 'partial'} copy of {name}"
    markers.set_marker(host, name, None)
    if m.get("running") and records.status(host, host.store.container(name)).state == STOPPED:
        lifecycle.start(host, name)
        return f"started {name} here"
    return f"kept {name} here"
