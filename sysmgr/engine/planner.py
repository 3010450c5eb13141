"""The pure planner: desired manifests + an observation -> a :class:`Plan`.

No I/O here: given the same inputs it returns the same plan, so ``diff`` prints exactly what
``apply`` will run, and a second apply of the same input plans nothing. Values are compared
normalised (``64MiB`` == ``67108864``, ``yes`` == ``true``) so nobody sees a perpetual diff;
sysmgr-managed keys (``volatile.*``) are never compared.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Mapping, Sequence

from sysmgr.engine.actions import (
    Action, BuildImage, Change, CreateContainer, CreatePool, CreateVolume, ImportImage, Plan,
    PutProfile, Restart, Start, Stop, UpdateContainer, UpdateProfile, UpdateVolume)
from sysmgr.engine import changes as echanges
from sysmgr.engine import drift as edrift
from sysmgr.engine import netplan
from sysmgr.engine import prune as eprune
from sysmgr.engine.observed import Observed
from sysmgr.errors import Issue, ValidationError
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.model import restart as mrestart
from sysmgr.model import volume_keys as mvol
from sysmgr.model.objects import (
    ContainerSpec, ImageSpec, Manifest, ProfileSpec, StoragePoolSpec, StorageVolumeSpec,
    issue_at)
from sysmgr.model.suggest import did_you_mean

Devices = Mapping[str, Mapping[str, str]]


def _profiles(manifest: Manifest, obs: Observed) -> dict[str, tuple[Mapping[str, str], Devices]]:
    """Profiles as they will be after apply: desired ones override observed ones."""
    out: dict[str, tuple[Mapping[str, str], Devices]] = {
        n: (p.config, p.devices) for n, p in obs.profiles.items()}
    for p in manifest.of("Profile"):
        assert isinstance(p, ProfileSpec)
        out[p.name] = (p.config, p.devices)
    return out


def check_references(manifest: Manifest, obs: Observed) -> None:
    """Cross-document checks: referenced profiles, images and pools exist (in the manifest
    or on the host), every container expands to a valid definition. Raises ValidationError."""
    issues = reference_issues(manifest, obs)
    if issues:
        raise ValidationError(issues)


def reference_issues(manifest: Manifest, obs: Observed) -> list[Issue]:
    """:func:`check_references`' issues, each at the line of the key at fault and with the
    nearest known name. A reference to a document that did not load (``manifest.broken``;
    its own issues say why) is not reported again as missing."""
    broken = frozenset(manifest.broken)
    profiles = _profiles(manifest, obs)
    pools = set(obs.pools) | {p.name for p in manifest.of("StoragePool")}
    vols = set(obs.volumes) | {v.name for v in manifest.of("StorageVolume")}
    issues = _pool_issues(manifest, obs) + _volume_issues(manifest, pools)
    for spec in manifest.of("Profile"):
        assert isinstance(spec, ProfileSpec)
        issues += _disk_pool_issues(spec, spec.devices, pools, vols, broken)
    images = set(obs.aliases) | {i.name for i in manifest.of("Image")}
    for spec in manifest.of("Container"):
        assert isinstance(spec, ContainerSpec)
        issues += _container_issues(spec, obs, profiles, pools, vols, images, broken)
    issues += netplan.reference_issues(manifest, obs, profiles,
                                       frozenset(n for k, n in broken if k == "Network"))
    return issues


def _pool_issues(manifest: Manifest, obs: Observed) -> list[Issue]:
    """A pool's driver and config cannot change."""
    issues = []
    for spec in manifest.of("StoragePool"):
        assert isinstance(spec, StoragePoolSpec)
        cur = obs.pools.get(spec.name)
        if cur is not None and cur.driver != spec.driver:
            issues.append(issue_at(spec, "driver", f"storage pool {spec.name!r} exists with driver "
                                 f"{cur.driver!r}; the driver of a pool cannot be changed"))
        elif cur is not None and mkeys.normalize_pool_config(cur.driver, cur.config) != \
                mkeys.normalize_pool_config(spec.driver, spec.config):
            issues.append(issue_at(spec, "config", f"storage pool {spec.name!r} exists with a different "
                                 "config; changing a pool's config is not supported"))
    return issues


def _disk_pool_issues(spec: object, devices: Devices, pools: set[str],
                      vols: set[str], broken: frozenset[tuple[str, str]] = frozenset()
                      ) -> list[Issue]:
    """Disks naming a pool that does not exist, or a custom volume (``POOL/NAME``, on the
    host or in the manifests) that does not."""
    out = []
    for dname, dev in devices.items():
        pool = dev.get("pool")
        if dev.get("type") != "disk" or not pool:
            continue
        if pool not in pools:
            if ("StoragePool", pool) not in broken:
                out.append(issue_at(spec, f"devices.{dname}.pool",
                                    f"storage pool {pool!r} not found" + did_you_mean(pool, pools)))
        elif mkeys.is_bind_disk(dev) and f"{pool}/{dev['source']}" not in vols \
                and ("StorageVolume", f"{pool}/{dev['source']}") not in broken:
            out.append(issue_at(spec, f"devices.{dname}.source",
                                f"storage volume {dev['source']!r} not found in storage pool "
                                f"{pool!r} (nor as a StorageVolume in the manifests)"))
    return out


def _volume_issues(manifest: Manifest, pools: set[str]) -> list[Issue]:
    """A volume's pool exists (on the host or in the manifests)."""
    return [issue_at(v, "pool", f"storage pool {v.pool!r} not found" + did_you_mean(v.pool, pools))
            for v in manifest.of("StorageVolume")
            if isinstance(v, StorageVolumeSpec) and v.pool not in pools]


def _volume_actions(manifest: Manifest, obs: Observed) -> list[Action]:
    """Create the volumes that do not exist; change the config and description of those
    that do (a size is a quota: applied at once). Never deletes one (its data)."""
    actions: list[Action] = []
    for spec in manifest.of("StorageVolume"):
        assert isinstance(spec, StorageVolumeSpec)
        cur = obs.volumes.get(spec.name)
        fields = dict(name=spec.name, pool=spec.pool, volume=spec.volume,
                      config=dict(spec.config), description=spec.description)
        if cur is None:
            actions.append(CreateVolume(**fields))
            continue
        o, n = mvol.normalize_volume_config(cur.config), mvol.normalize_volume_config(spec.config)
        changes = [Change(f"config.{k}", cur.config.get(k), spec.config.get(k))
                   for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
        if cur.description != spec.description:
            changes.append(Change("description", cur.description, spec.description))
        if changes:
            actions.append(UpdateVolume(**fields, changes=tuple(changes)))
    return actions


def _container_issues(spec: ContainerSpec, obs: Observed,
                      profiles: Mapping[str, tuple[Mapping[str, str], Devices]],
                      pools: set[str], vols: set[str], images: set[str],
                      broken: frozenset[tuple[str, str]] = frozenset()) -> list[Issue]:
    """Missing profiles, image or pools; an invalid expansion; a root disk moved to another
    pool."""
    issues = [issue_at(spec, f"profiles[{i}]", f"profile {p!r} not found"
                       + did_you_mean(p, profiles))
              for i, p in enumerate(spec.profiles)
              if p not in profiles and ("Profile", p) not in broken]
    missing = any(p not in profiles for p in spec.profiles)
    cur = obs.containers.get(spec.name)
    # the image matters only to create the container: once made, deleting it breaks nothing
    if cur is None and spec.image not in images and obs.image_ref(spec.image) is None \
            and ("Image", spec.image) not in broken:
        issues.append(issue_at(spec, "image", f"image {spec.image!r} not found"
                               + did_you_mean(spec.image, images)
                               + ": not an alias on this host nor an Image in the manifests"))
    issues += _disk_pool_issues(spec, spec.devices, pools, vols, broken)
    if missing:
        return issues
    cfg, devs = mexpand.expand([profiles[p] for p in spec.profiles], spec.config, spec.devices)
    for path, reason in mexpand.validate_expanded(cfg, devs):
        issues.append(issue_at(spec, path, reason))
    if cur is not None:
        new_pool = mkeys.root_disk_pool(devs)
        if new_pool and new_pool != cur.record.pool:
            issues.append(issue_at(spec, "devices.root.pool",
                                 f"container {spec.name!r} lives on pool {cur.record.pool!r}; "
                                 f"moving it to {new_pool!r} by apply is not supported"))
    return issues


def plan(manifest: Manifest, obs: Observed, *, prune: bool = False, backup: bool = True,
         keep_backups: float | None = None,
         revision: str = "") -> Plan:
    """Return the actions that make the host match ``manifest`` (pure); with ``prune``, also
    delete what was created from these manifests and left them (:mod:`.prune`)."""
    check_references(manifest, obs)
    actions: list[Action] = []
    warnings: list[str] = []
    for spec in manifest.of("StoragePool"):
        assert isinstance(spec, StoragePoolSpec)
        if spec.name not in obs.pools:
            actions.append(CreatePool(spec.name, driver=spec.driver, config=dict(spec.config),
                                      description=spec.description))
    actions += _volume_actions(manifest, obs)  # after their pools, before what attaches them
    net_actions, net_warnings = netplan.plan_actions(manifest, obs)  # after pools, before profiles
    actions += net_actions + _profile_actions(manifest, obs) + _image_actions(manifest, obs)
    warnings += net_warnings + _outside_warnings(manifest, obs)
    new_profiles = _profiles(manifest, obs)
    baked = netplan.restarts_needed(net_actions)
    for spec in manifest.of("Container"):
        assert isinstance(spec, ContainerSpec)
        acts, warns = _container_actions(spec, obs, new_profiles, baked.get(spec.name, []))
        actions += acts
        warnings += warns
    actions += eprune.flag_actions(manifest, obs)
    if prune:  # deletions last: nothing created or updated depends on them
        acts, warns = eprune.plan_prune(manifest, obs, backup=backup,
                                           keep_backups=keep_backups)
        actions += acts
        warnings += warns
    return Plan(tuple(actions), obs.digest, tuple(warnings), manifest.origin, revision,
                tuple(manifest.keep), edrift.definitions(manifest))


def _profile_actions(manifest: Manifest, obs: Observed) -> list[Action]:
    actions: list[Action] = []
    for spec in manifest.of("Profile"):
        assert isinstance(spec, ProfileSpec)
        cur = obs.profiles.get(spec.name)
        if cur is None:
            actions.append(PutProfile(spec.name, spec.description, dict(spec.config), dict(spec.devices)))
            continue
        changes = echanges.shown_config(cur.config, spec.config) + \
            echanges.shown_devices(cur.devices, spec.devices)
        if cur.description != spec.description:
            changes.append(Change("description", cur.description, spec.description))
        if changes:
            actions.append(UpdateProfile(spec.name, spec.description, dict(spec.config),
                                         dict(spec.devices), edrift.marked(
                                             changes, obs.applied.get(("Profile", spec.name)),
                                             edrift.definition(spec))))
    return actions


def _image_actions(manifest: Manifest, obs: Observed) -> list[Action]:
    actions: list[Action] = []
    for spec in manifest.of("Image"):
        assert isinstance(spec, ImageSpec)
        if spec.name in obs.aliases or spec.copied_from:
            continue  # present, or copied here from another cluster member before this plan runs
        if spec.build is not None:
            opts = {k: v for k, v in spec.build.items() if k != "builder"}
            actions.append(BuildImage(spec.name, builder=spec.build["builder"], options=opts))
        else:
            actions.append(ImportImage(spec.name, path=spec.path or ""))
    return actions


def _restart_keys(old_cfg: Mapping[str, str], old_devs: Devices, new_cfg: Mapping[str, str],
                  new_devs: Devices) -> list[str]:
    """What a running container takes only at its next start: ``config.KEY`` paths of
    changed non-live keys, then ``devices.NAME`` of changed devices."""
    keys = [c.path for c in echanges.config_changes("config", old_cfg, new_cfg)
            if not mkeys.is_live(c.path[len("config."):])]
    return keys + [c.path for c in echanges.device_changes(old_devs, new_devs)
                   if not echanges.live_device(c, old_devs, new_devs)]


def _outside_warnings(manifest: Manifest, obs: Observed) -> list[str]:
    """Running containers outside the manifests still see changed profiles: say what needs
    a restart."""
    new_profiles = _profiles(manifest, obs)
    old_profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    in_manifest = {s.name for s in manifest.of("Container")}
    warnings = []
    for name, cur in sorted(obs.containers.items()):
        if name in in_manifest or cur.state == "STOPPED":
            continue
        rec = cur.record
        keys = list(rec.volatile.get(mrestart.RESTART_NEEDED) or [])  # since an earlier change
        if any(new_profiles.get(p) != old_profiles.get(p) for p in rec.profiles):
            old_cfg, old_devs = mexpand.expand(
                [old_profiles[p] for p in rec.profiles if p in old_profiles], rec.config, rec.devices)
            new_cfg, new_devs = mexpand.expand(
                [new_profiles[p] for p in rec.profiles if p in new_profiles], rec.config, rec.devices)
            keys += [k for k in _restart_keys(old_cfg, old_devs, new_cfg, new_devs) if k not in keys]
        if keys:
            warnings.append(f"container {name} (not in these manifests) needs a restart for: "
                            + ", ".join(keys))
    return warnings


def _profiles_differ(old: tuple[str, ...] | list[str], new: tuple[str, ...] | list[str],
                     config: Mapping[str, str], devices: Devices,
                     profiles: Mapping[str, tuple[Mapping[str, str], Devices]]) -> bool:
    """Whether the profile list changed in a way that matters: the same profiles in another
    order are no change when no key or device of one overrides another's (the expansion is
    the same either way)."""
    if list(old) == list(new):
        return False
    if sorted(old) != sorted(new) or any(p not in profiles for p in new):
        return True
    return mexpand.expand([profiles[p] for p in old], config, devices) != \
        mexpand.expand([profiles[p] for p in new], config, devices)


def _with_ignored(spec: ContainerSpec, config: Mapping[str, str], devices: Devices
                  ) -> ContainerSpec:
    """``spec`` with its ``ignore:`` keys and devices as the host has them (so they are
    neither compared nor put back)."""
    if not spec.ignore_config and not spec.ignore_devices:
        return spec

    def ignored(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pat) for pat in spec.ignore_config)

    cfg = {k: v for k, v in spec.config.items() if not ignored(k)}
    cfg.update({k: v for k, v in config.items() if ignored(k)})
    devs = {k: v for k, v in spec.devices.items() if k not in spec.ignore_devices}
    devs.update({k: v for k, v in devices.items() if k in spec.ignore_devices})
    return dataclasses.replace(spec, config=cfg, devices=devs)


def _container_actions(spec: ContainerSpec, obs: Observed,
                       new_profiles: Mapping[str, tuple[Mapping[str, str], Devices]],
                       baked: Sequence[str] = ()) -> tuple[list[Action], list[str]]:
    """Create, update, start, stop or restart one container, and warnings about it.
    ``baked``: what this plan changes that the running container takes only at a restart
    besides its own keys (a network's MTU); a restart still needed since an earlier
    change (``volatile.restart.needed``) is planned again until it happened."""
    cur = obs.containers.get(spec.name)
    if cur is None:
        create: list[Action] = [CreateContainer(
            spec.name, image=spec.image, profiles=tuple(spec.profiles), config=dict(spec.config),
            devices=dict(spec.devices), description=spec.description)]
        return create + ([Start(spec.name)] if spec.state == "running" else []), []
    actions: list[Action] = []
    warnings: list[str] = []
    rec = cur.record
    spec = _with_ignored(spec, rec.config, rec.devices)
    running = cur.state != "STOPPED"
    obs_profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    changes: list[Change] = []
    if _profiles_differ(rec.profiles, spec.profiles, rec.config, rec.devices, new_profiles):
        changes.append(Change("profiles", list(rec.profiles), list(spec.profiles)))
    old_layers = [(p, *obs_profiles[p]) for p in rec.profiles if p in obs_profiles]
    new_layers = [(p, *new_profiles[p]) for p in spec.profiles if p in new_profiles]
    changes += echanges.shown_config(rec.config, spec.config, old_layers, new_layers)
    changes += echanges.shown_devices(rec.devices, spec.devices, old_layers, new_layers)
    if rec.description != spec.description:
        changes.append(Change("description", rec.description, spec.description))
    img = obs.image_ref(spec.image)
    if img is not None and img != rec.image:
        warnings.append(f"container {spec.name}: image {spec.image!r} differs from the one it was "
                        "created from; its root filesystem is kept (delete and re-create to change it)")
    # what the running container sees: expanded before vs after (profiles may change too)
    old_cfg, old_devs = mexpand.expand([obs_profiles[p] for p in rec.profiles if p in obs_profiles],
                                       rec.config, rec.devices)
    new_cfg, new_devs = mexpand.expand([new_profiles[p] for p in spec.profiles], spec.config, spec.devices)
    own = [k.removeprefix("config.") for k in _restart_keys(old_cfg, old_devs, new_cfg, new_devs)]
    restart_keys = own + [r for r in [*baked, *(rec.volatile.get(mrestart.RESTART_NEEDED) or [])]
                          if r not in own]
    applied, wanted = obs.applied.get(("Container", spec.name)), edrift.definition(spec)
    if changes:
        actions.append(UpdateContainer(spec.name, profiles=tuple(spec.profiles), config=dict(spec.config),
                                       devices=dict(spec.devices), description=spec.description,
                                       changes=edrift.marked(changes, applied, wanted),
                                       live=running and not own))
    want = spec.state
    if want == "stopped" and running:
        actions.append(Stop(spec.name, edrift.marked(
            [Change("state", cur.state.lower(), want)], applied, wanted)))
    elif running and restart_keys and want != "stopped":
        actions.append(Restart(spec.name, reason=", ".join(restart_keys)))
    elif want == "running" and cur.state == "STOPPED":
        actions.append(Start(spec.name, edrift.marked([Change("state", "stopped", want)],
                                                      applied, wanted)))
    elif want == "running" and cur.state == "FROZEN":
        warnings.append(f"container {spec.name} is frozen; unfreeze it to resume")
    return actions, warnings
