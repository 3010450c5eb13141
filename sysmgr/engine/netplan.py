"""Network planning: the planner's side of managed networks and nics.

The manifest's network checks with file:line (:func:`reference_issues`), the network actions
of a plan (:func:`plan_actions`), the restarts they imply and the static addresses a plan
reserves. The per-nic rules it builds on (also the imperative commands') are
:mod:`sysmgr.engine.nicrules`. No I/O: the side effects are :mod:`sysmgr.engine.networks`
(networks on the host) and :mod:`sysmgr.engine.nics` (container nics).
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import replace
from typing import Mapping, Sequence

from sysmgr.drivers.network import ipam
from sysmgr.engine import drift
from sysmgr.engine.actions import (
    Action, Change, CreateContainer, CreateNetwork, Plan, PutProfile, RepairNetwork,
    UpdateContainer, UpdateNetwork)
from sysmgr.engine.nicrules import (
    NICS, RESTART_KEYS, Claim, Devices, NetFacts, claims, conflicts, facts, nic_devices,
    nic_problems, normalize_address)
from sysmgr.engine.observed import Observed
from sysmgr.errors import Issue
from sysmgr.model import expand as mexpand
from sysmgr.model import network_keys as nkeys
from sysmgr.model.objects import Manifest, NetworkSpec, issue_at
from sysmgr.state.networks import NetworkRecord


# -- planner side ----------------------------------------------------------------------------

def planned_facts(manifest: Manifest, obs: Observed) -> dict[str, NetFacts]:
    """Networks as they will be after apply: desired ones override recorded ones (a desired
    ``auto`` keeps the recorded subnet)."""
    out = {n: facts(o.record.type, o.record.config) for n, o in obs.networks.items()}
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        f = facts(spec.type, spec.config)
        if f.cidr is None and spec.name in out:
            f = replace(f, cidr=out[spec.name].cidr)
        out[spec.name] = f
    return out


def reference_issues(manifest: Manifest, obs: Observed,
                     profiles: Mapping[str, tuple[Mapping[str, str], Devices]],
                     broken: frozenset[str] = frozenset()) -> list[Issue]:
    """The planner's network checks, each with the file:line of the document at fault:
    network type changes and subnet overlaps, nics referring to missing networks or using
    addresses outside their subnet, the gateway's address, or another container's address."""
    nets = planned_facts(manifest, obs)
    issues = _network_issues(manifest, obs, nets)
    for spec in manifest.of("Profile"):
        for path, reason in nic_problems(getattr(spec, "devices", {}), nets, broken=broken):
            issues.append(issue_at(spec, path, reason))
    return issues + _container_issues(manifest, obs, profiles, nets, broken)


def _network_issues(manifest: Manifest, obs: Observed, nets: Mapping[str, NetFacts]
                    ) -> list[Issue]:
    """Network documents: a type that cannot change, a subnet that overlaps another."""
    issues: list[Issue] = []
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        cur = obs.networks.get(spec.name)
        if cur is not None and cur.record.type != spec.type:
            issues.append(issue_at(spec, "type", f"network {spec.name!r} exists with type "
                                 f"{cur.record.type!r}; the type of a network cannot be changed"))
        f = nets[spec.name]
        explicit = str(spec.config.get("ipv4.address", "")).strip().lower() not in ("", nkeys.AUTO)
        if not explicit or f.cidr is None:
            continue
        own = ({str(ipaddress.IPv4Interface(cur_cidr).network)}
               if cur is not None and (cur_cidr := facts(cur.record.type, cur.record.config).cidr)
               else set())
        others = [g.cidr for n, g in nets.items() if n != spec.name and g.cidr]
        hits = [n for n in ipam.overlapping(f.cidr, [*obs.host_networks, *others]) if n not in own]
        if hits:
            issues.append(issue_at(spec, "config.ipv4.address",
                                 f"{f.cidr} overlaps {', '.join(hits)}, already used on this host"))
    return issues


def _container_issues(manifest: Manifest, obs: Observed,
                      profiles: Mapping[str, tuple[Mapping[str, str], Devices]],
                      nets: Mapping[str, NetFacts],
                      broken: frozenset[str] = frozenset()) -> list[Issue]:
    """Container nics: per-nic problems, and static addresses somebody else holds."""
    issues: list[Issue] = []
    in_manifest = {s.name: s for s in manifest.of("Container")}
    old_profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    held: list[Claim] = []
    for name, cur_c in obs.containers.items():  # what the host has now wins a tie
        rec = cur_c.record
        _, devs = mexpand.expand([old_profiles[p] for p in rec.profiles if p in old_profiles],
                                 rec.config, rec.devices)
        held += claims(name, devs, rec.volatile.get(NICS) or {})
    every: list[Claim] = []
    for spec in in_manifest.values():
        prof = [profiles[p] for p in getattr(spec, "profiles", ()) if p in profiles]
        _, devs = mexpand.expand(prof, getattr(spec, "config", {}), getattr(spec, "devices", {}))
        for path, reason in nic_problems(devs, nets, broken=broken):
            issues.append(issue_at(spec, path, reason))
        now = obs.containers.get(spec.name)
        records = (now.record.volatile.get(NICS) or {}) if now is not None else {}
        every += claims(spec.name, devs, records)
    for name, cur_c in obs.containers.items():
        if name in in_manifest:
            continue
        rec = cur_c.record
        prof = [profiles[p] for p in rec.profiles if p in profiles]
        _, devs = mexpand.expand(prof, rec.config, rec.devices)
        every += claims(name, devs, rec.volatile.get(NICS) or {})
    for claim, reason in conflicts(every, held):
        owner = in_manifest.get(claim.container)
        issues.append(issue_at(owner, f"devices.{claim.device}.ipv4.address",
                             reason if owner is not None else f"container {claim.container}: {reason}"))
    return issues


def config_changes(rec: NetworkRecord, spec: NetworkSpec) -> list[Change]:
    old = nkeys.normalize_network_config(rec.type, rec.config)
    new = nkeys.normalize_network_config(spec.type, spec.config)
    if new.get("ipv4.address") == nkeys.AUTO:
        new["ipv4.address"] = old.get("ipv4.address", nkeys.AUTO)  # auto: keep the subnet
    return [Change(f"config.{k}", rec.config.get(k, old.get(k)), spec.config.get(k, new.get(k)))
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def running_users(obs: Observed) -> dict[str, list[str]]:
    """network -> running containers with a nic on it (as they are expanded now)."""
    profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    out: dict[str, list[str]] = {}
    for name, cur in sorted(obs.containers.items()):
        if cur.state == "STOPPED":
            continue
        rec = cur.record
        _, devs = mexpand.expand([profiles[p] for p in rec.profiles if p in profiles],
                                 rec.config, rec.devices)
        for net in sorted({d["network"] for d in nic_devices(devs).values() if d.get("network")}):
            out.setdefault(net, []).append(name)
    return out


def plan_actions(manifest: Manifest, obs: Observed) -> tuple[list[Action], list[str]]:
    """Network actions (repairs, creations, updates) and warnings, in plan order (pure)."""
    users = running_users(obs)
    actions: list[Action] = []
    warnings: list[str] = []
    updated = set()
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        cur = obs.networks.get(spec.name)
        if cur is None:
            actions.append(CreateNetwork(spec.name, type=spec.type, config=dict(spec.config),
                                         description=spec.description))
            continue
        changes = config_changes(cur.record, spec)
        if cur.record.description != spec.description:
            changes.append(Change("description", cur.record.description, spec.description))
        if changes:
            baked = any(c.path[len("config."):] in RESTART_KEYS for c in changes)
            restart = tuple(users.get(spec.name, ())) if baked else ()
            actions.append(UpdateNetwork(spec.name, type=spec.type, config=dict(spec.config),
                                         description=spec.description, restart=restart,
                                         changes=drift.marked(
                                             changes, obs.applied.get(("Network", spec.name)),
                                             drift.definition(spec))))
            updated.add(spec.name)
            if restart:
                warnings.append(f"network {spec.name}: running containers keep their old "
                                f"address or MTU until restarted: {', '.join(restart)}")
    repairs: list[Action] = [RepairNetwork(n, problems=o.problems)
                             for n, o in sorted(obs.networks.items())
                             if o.problems and n not in updated]
    return repairs + actions, warnings


def restarts_needed(actions: Sequence[Action]) -> dict[str, list[str]]:
    """container -> why it needs a restart (``network lab: bridge.mtu``) after these network
    actions: its nic keeps the old address or MTU until then."""
    out: dict[str, list[str]] = {}
    for a in actions:
        if isinstance(a, UpdateNetwork) and a.restart:
            keys = sorted(c.path[len("config."):] for c in a.changes
                          if c.path[len("config."):] in RESTART_KEYS)
            for c in a.restart:
                out.setdefault(c, []).append(f"network {a.name}: {', '.join(keys)}")
    return out


def reserved_addresses(plan: Plan) -> set[str]:
    """The static addresses a plan declares: kept out of allocations while it runs (a
    container created first must not take the address a later one declares)."""
    wanted: set[str] = set()
    for a in plan.actions:
        if isinstance(a, (CreateContainer, UpdateContainer, PutProfile)):
            for dev in nic_devices(a.devices).values():
                if dev.get("network") and dev.get("ipv4.address"):
                    with contextlib.suppress(ValueError):
                        wanted.add(normalize_address(dev["ipv4.address"]))
    return wanted


NETWORK_ACTIONS = (CreateNetwork, UpdateNetwork, RepairNetwork)
