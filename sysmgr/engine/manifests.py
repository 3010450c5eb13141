"""Manifests against a host: load and validate them, plan the changes, apply a plan.

``validate`` checks references against the host when its root exists (profiles, images,
pools, networks, addresses); ``plan`` observes the host afresh and runs the pure planner;
``apply`` runs a plan, refusing one the host has moved away from.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

from sysmgr.engine import events, planner
from sysmgr.engine.actions import Plan
from sysmgr.engine.apply import ApplyResult, apply as apply_plan
from sysmgr.engine.host import Host
from sysmgr.engine.observe import Observed, observe
from sysmgr.model.loader import ManifestError, load_paths
from sysmgr.model.objects import Manifest

__all__ = ["ManifestError", "Source", "apply", "load", "plan", "report", "validate"]


#: manifest files and directories, or a manifest already loaded (a member's share of a
#: cluster plan arrives loaded: its files are on the admin host)
Source = Union[Sequence[str], Manifest]


def load(paths: Source) -> Manifest:
    return paths if isinstance(paths, Manifest) else load_paths(paths)


def validate(host: Host, paths: Source) -> Manifest:
    """Load and check the manifests, including references to existing objects when the host
    root exists. Raises ValidationError listing every problem."""
    manifest = load(paths)
    if host.layout.exists():
        planner.check_references(manifest, _observe(host, manifest))
    return manifest


def plan(host: Host, paths: Source, *, prune: bool = False, backup: bool = True,
         keep_backups: float | None = None,
         revision: str = "") -> Plan:
    manifest = load(paths)
    return planner.plan(manifest, _observe(host, manifest), prune=prune, backup=backup,
                        keep_backups=keep_backups,
                        revision=revision)


def _observe(host: Host, manifest: Manifest) -> Observed:
    # the host's own IPv4 networks matter only to networks being planned (their subnets)
    return observe(host, host_networks=bool(manifest.of("Network")))


def apply(host: Host, plan: Plan, *, progress: Callable[[str], None] | None = None) -> ApplyResult:
    return apply_plan(host, plan, progress=progress)


def report(host: Host, plan: Plan) -> int:
    """Log the drift of ``plan`` as found, not corrected; how many actions drifted."""
    drifted = [a for a in plan.actions if a.drift()]
    for a in drifted:
        events.drift(host, a, corrected=False)
    return len(drifted)
