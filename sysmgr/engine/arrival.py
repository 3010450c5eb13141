"""A container record arriving from elsewhere (a backup, another member): checked against
this host and its root disk moved onto the pool it lands on.

Layer: engine.
"""

from __future__ import annotations

from sysmgr.engine import records, volumes
from sysmgr.engine.host import Host
from sysmgr.errors import Issue, ValidationError
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.state.db import ContainerRecord


def retarget(host: Host, rec: ContainerRecord, pool: str) -> dict[str, dict[str, str]]:
    """``rec``'s local devices, with the root disk moved to ``pool`` when its expansion puts
    it elsewhere (a local override of the expanded root disk, as ``-s POOL`` does)."""
    devices = {k: dict(v) for k, v in rec.devices.items()}
    _, devs = records.expanded(host, rec)
    root = next((n for n, d in devs.items() if mkeys.is_root_disk(d)), "root")
    if devs.get(root, {}).get("pool") != pool:
        devices[root] = {**devs.get(root, {"type": "disk", "path": "/"}), "pool": pool}
    return devices


def check_record(host: Host, rec: ContainerRecord, target: str, *,
                 missing_hint: str = "create the profiles first, then import again"
                 ) -> dict[str, dict[str, str]]:
    """Check ``rec`` against this host (profiles, config, devices) and move its root disk to
    ``target``; returns its expanded devices."""
    missing = [Issue(f"profile {p!r} not found on this host", path=f"profiles[{i}]")
               for i, p in enumerate(rec.profiles) if not host.store.has_profile(p)]
    if missing:
        raise ValidationError(missing, hint=missing_hint)
    issues = [Issue(r, path=p) for p, r in mkeys.validate_config(rec.config)]
    issues += [Issue(r, path=p) for p, r in mkeys.validate_devices(rec.devices)]
    if issues:
        raise ValidationError(issues)
    rec.devices = retarget(host, rec, target)
    cfg, devs = records.expanded(host, rec)
    problems = mexpand.validate_expanded(cfg, devs)
    issues = [Issue(r, path=p) for p, r in problems] + volumes.size_issues(host, devs)
    if issues:
        raise ValidationError(issues)
    return devs
