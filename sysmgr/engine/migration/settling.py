"""Settling a move on one member: finish it (the target committed its copy) or roll it
back (it did not); see :mod:`.markers` for the rule and :mod:`sysmgr.api.migration` for
who decides.

Layer: engine.
"""

from __future__ import annotations

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import containers, lifecycle, records
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
        keep = (m.get("role") == markers.OUT) != moved   # the source stays, or the target is kept
        if not keep:
            containers.delete_container(host, name, force=True, migration=mid)
            return f"removed the {'source' if moved else 'partial'} copy of {name}"
        markers.set_marker(host, name, None)
        if m.get("running") and records.status(host, host.store.container(name)).state == STOPPED:
            lifecycle.start(host, name)
            return f"started {name} here"
        return f"kept {name} here"
