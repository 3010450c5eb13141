"""Pruning: deleting the objects created from a set of manifests that have since left them
(``apply --prune``, the controller's ``--prune``), safely.

:func:`plan_prune` is pure (the planner's part). It deletes only objects recorded in the
inventory (:mod:`sysmgr.state.inventory`) with the manifests' own ``origin``, gone from
them, with their ``prune`` flag set (``prune: false`` in a manifest clears it): nothing made
by hand or from other manifests. It refuses outright when the manifests hold no object at
all (an emptied or wrongly mounted source would otherwise delete everything; a source that
fails to load never gets this far). A profile, network, pool or image still used by an
object that stays is kept, with a warning. Containers go first, pools last.

:func:`delete` carries one :class:`~sysmgr.engine.actions.Prune` out: a container is
stopped and exported to ``<root>/backups/pruned/NAME-TIME.tar.zst`` before it is deleted
(unless ``backup`` is off); pruned backups older than :data:`KEEP_BACKUPS` are removed.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from sysmgr.engine.actions import Action, ForgetInventory, Prune, SetPrune
from sysmgr.engine.observed import Observed
from sysmgr.errors import NotFound, ValidationError
from sysmgr.model.objects import Manifest

ORDER = ("Container", "Profile", "Image", "Network", "StoragePool")
KEEP_BACKUPS = 30 * 24 * 3600.0   # seconds a pruned container's backup is kept


def flag_actions(manifest: Manifest, obs: Observed) -> list[Action]:
    """Record ``prune: false`` (or its removal) for objects of these manifests."""
    keep = {tuple(k) for k in manifest.keep}
    out: list[Action] = []
    for spec in manifest.specs:
        rec = obs.inventory.get((spec.kind, spec.name))
        if rec is not None and rec.origin == manifest.origin and \
                rec.prune == ((spec.kind, spec.name) in keep):
            out.append(SetPrune(spec.name, target_kind=spec.kind, prune=not rec.prune))
    return out


def plan_prune(manifest: Manifest, obs: Observed, *, backup: bool = True,
               keep_backups: float | None = None) -> tuple[list[Action], list[str]]:
    """The Prune (and ForgetInventory) actions for what left ``manifest``, and warnings;
    ``keep_backups``: seconds the pruned backups are kept (None: :data:`KEEP_BACKUPS`)."""
    declared = set(manifest.declared) or {(s.kind, s.name) for s in manifest.specs}
    if not declared:
        raise ValidationError(
            f"the manifests ({manifest.origin or 'none given'}) hold no objects: refusing to "
            "prune (that would delete everything created from them)",
            hint="check the source; to really delete those objects, delete them by hand")
    gone = sorted((r for r in obs.inventory.values()
                   if r.origin == manifest.origin and (r.kind, r.name) not in declared),
                  key=lambda r: (ORDER.index(r.kind) if r.kind in ORDER else len(ORDER), r.name))
    doomed = {(r.kind, r.name) for r in gone if r.prune and _exists(obs, r.kind, r.name)}
    actions: list[Action] = []
    warnings: list[str] = []
    for r in gone:
        if not _exists(obs, r.kind, r.name):
            actions.append(ForgetInventory(r.name, target_kind=r.kind))
        elif not r.prune:
            warnings.append(f"{r.kind} {r.name} left the manifests and is kept (prune: false)")
        else:
            users = _users(obs, r.kind, r.name, doomed)
            if users:
                doomed.discard((r.kind, r.name))
                warnings.append(f"{r.kind} {r.name} left the manifests but is not pruned: "
                                f"used by {', '.join(users)}")
            else:
                actions.append(Prune(r.name, target_kind=r.kind, backup=backup,
                                     keep_backups=KEEP_BACKUPS if keep_backups is None
                                     else keep_backups))
    return actions, warnings


def _exists(obs: Observed, kind: str, name: str) -> bool:
    return {"Container": name in obs.containers, "Profile": name in obs.profiles,
            "Network": name in obs.networks, "StoragePool": name in obs.pools,
            "Image": name in obs.aliases}.get(kind, False)


def _users(obs: Observed, kind: str, name: str, doomed: set[tuple[str, str]]) -> list[str]:
    """What keeps using the object (containers and profiles that are not pruned)."""
    containers = [c.record for n, c in sorted(obs.containers.items())
                  if ("Container", n) not in doomed]
    profiles = [p for n, p in sorted(obs.profiles.items()) if ("Profile", n) not in doomed]
    if kind == "Profile":
        return [f"container {c.name}" for c in containers if name in c.profiles]
    if kind == "Image":
        fp = obs.aliases.get(name)
        return [f"container {c.name}" for c in containers if c.image == fp]
    key = "network" if kind == "Network" else "pool"
    out = [f"container {c.name}" for c in containers
           if any(d.get(key) == name for d in c.devices.values())
           or (kind == "StoragePool" and c.pool == name)]
    out += [f"profile {p.name}" for p in profiles
            if any(d.get(key) == name for d in p.devices.values())]
    return out


# -- carrying a prune out ------------------------------------------------------------------

def delete(host: Any, action: Prune) -> None:
    """Delete the object (a container: stopped and backed up first)."""
    from sysmgr.drivers.runtime.base import STOPPED
    from sysmgr.engine import (
        backup, containers, images, lifecycle, networks, pools, profiles, records)

    kind, name = action.target_kind, action.name
    if kind == "Container":
        if action.backup:
            if records.status(host, host.store.container(name)).state != STOPPED:
                lifecycle.stop(host, name)  # a clean shutdown: the backup is consistent
            backup.export(host, name, _backup_path(host, name))
            _sweep(host, action.keep_backups)
        containers.delete_container(host, name, force=True)
    elif kind == "Profile":
        profiles.delete_profile(host, name)
    elif kind == "Image":
        images.delete(host, name)
    elif kind == "Network":
        networks.NetworkEngine(host).delete(name)
    elif kind == "StoragePool":
        pools.delete_pool(host, name)


def _backup_dir(host: Any) -> str:
    d = os.path.join(host.layout.root, "backups", "pruned")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _backup_path(host: Any, name: str) -> str:
    return os.path.join(_backup_dir(host), f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.tar.zst")


def _sweep(host: Any, keep: float, now: float | None = None) -> None:
    """Remove pruned backups older than ``keep`` seconds."""
    d = _backup_dir(host)
    cutoff = (now or time.time()) - keep
    for n in os.listdir(d):
        path = os.path.join(d, n)
        with contextlib.suppress(OSError, NotFound):
            if os.stat(path).st_mtime < cutoff:
                os.unlink(path)
