"""Execute a :class:`Plan` against the host, in order, with progress and undo.

Apply re-observes first and refuses a plan made against a state that has changed since
(``PlanStale``). Every action registers its undo once it succeeded; if a later action fails,
completed actions are reverted in reverse order (created objects removed, started containers
stopped, updated records restored) and an :class:`ApplyError` says what completed, what failed
and what was reverted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sysmgr.engine import (
    bootstrap, containers, custom_volumes, events, journal, lifecycle, netplan, networks, pools,
    profiles, prune, volumes)
from sysmgr.engine import images as eimages
from sysmgr.engine.actions import (
    Action, BuildImage, CreateContainer, CreateNetwork, CreatePool, CreateVolume,
    ForgetInventory, ImportImage, Plan, Prune, PutProfile, RepairNetwork, Restart, SetPrune,
    Start, Stop, UpdateContainer, UpdateVolume)
from sysmgr.engine.host import Host
from sysmgr.engine.nics import NicEngine
from sysmgr.engine.observe import observe
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import ApplyError, PlanStale, SysmgrError
from sysmgr.state import applied, inventory
from sysmgr.state import volumes as svol
from sysmgr.state.db import ProfileRecord

Progress = Callable[[str], None]


@dataclass
class ApplyResult:
    done: list[str] = field(default_factory=list)


def apply(host: Host, plan: Plan, *, progress: Progress | None = None) -> ApplyResult:
    result = ApplyResult()
    if plan.empty:
        return result
    if not host.layout.exists():
        bootstrap.init(host)
    with host.locked():
        if observe(host, host_networks=False).digest != plan.observed_digest:  # (not digested)
            raise PlanStale("the host changed since this plan was made", hint="run diff/apply again")
        volumes.mount_all(host)  # after a host restart the loop-backed pools are not mounted
        journal.recover(host)
        # every event of the apply carries the commit it applies (a controller's git source)
        with Reverter() as rev, networks.reserving(plan), \
                events.context(**({"commit": plan.revision} if plan.revision else {})):
            for action in plan.actions:
                try:
                    _execute(host, action, rev, progress)
                except SysmgrError as e:
                    raise _failed(host, result, action, e, rev) from e
                except Exception as e:  # a bug or foreign error: still revert, still report
                    raise _failed(host, result, action, e, rev) from e
                _record(host, plan, action, rev)
                events.operation(host, action)
                if action.drift():
                    events.drift(host, action, corrected=True)
                result.done.append(action.describe())
                if progress:
                    progress(action.describe())
            with host.store.transaction():  # the next plan tells drift from manifest changes
                applied.put_all(host.store, plan.applied)
            rev.success()
    return result


def _failed(host: Host, result: ApplyResult, action: Action, err: Exception,
            rev: Reverter) -> ApplyError:
    events.operation(host, action, err)
    # the reverter runs when the exception leaves its block; describe what it will undo
    msg = f"{action.describe()} failed: {getattr(err, 'message', None) or err}"
    if result.done:
        msg += f"; completed before: {len(result.done)} action(s), which are being reverted"
    e = ApplyError(msg, hint=getattr(err, "hint", None))
    e.completed = list(result.done)  # type: ignore[attr-defined]
    return e


def _execute(host: Host, a: Action, rev: Reverter, progress: Progress | None) -> None:
    if isinstance(a, RepairNetwork):  # the bridge and what was plugged into it
        NicEngine(host).repair(a.name)
    elif isinstance(a, netplan.NETWORK_ACTIONS):
        networks.execute(host, a, rev)
    elif isinstance(a, CreatePool):
        pools.create_pool(host, a.name, a.driver, a.config, a.description)
        rev.add(lambda: pools.delete_pool(host, a.name), f"delete pool {a.name}")
    elif isinstance(a, UpdateVolume):
        old = svol.get(host.store, a.pool, a.volume)
        custom_volumes.update(host, a.pool, a.volume, config=a.config, description=a.description)
        rev.add(lambda: custom_volumes.update(host, a.pool, a.volume, config=old.config,
                                              description=old.description),
                f"restore storage volume {a.name}")
    elif isinstance(a, CreateVolume):
        custom_volumes.create(host, a.pool, a.volume, a.config, a.description)
        rev.add(lambda: custom_volumes.delete(host, a.pool, a.volume),
                f"delete storage volume {a.name}")
    elif isinstance(a, PutProfile):
        _put_profile(host, a, rev)
    elif isinstance(a, BuildImage):
        img = eimages.build(host, a.builder, alias=a.name, options=a.options, progress=progress)
        rev.add(lambda: eimages.delete_alias(host, a.name), f"remove alias {a.name} ({img.fingerprint[:12]})")
    elif isinstance(a, ImportImage):
        # device nodes are dropped; the warning naming them goes out with the progress
        img = eimages.import_image(host, a.path, alias=a.name, progress=progress,
                                   warn=(lambda m: progress(f"warning: {m}")) if progress else None)
        rev.add(lambda: eimages.delete_alias(host, a.name), f"remove alias {a.name} ({img.fingerprint[:12]})")
    elif isinstance(a, CreateContainer):
        containers.create_container(host, a.name, a.image, profiles=a.profiles, config=a.config,
                                    devices=a.devices, description=a.description)
        rev.add(lambda: containers.delete_container(host, a.name, force=True),
                f"delete container {a.name}")
    elif isinstance(a, UpdateContainer):
        _update_container(host, a, rev)
    elif isinstance(a, Start):
        lifecycle.start(host, a.name)
        rev.add(lambda: lifecycle.stop(host, a.name, force=True), f"stop {a.name}")
    elif isinstance(a, Stop):
        lifecycle.stop(host, a.name)
        rev.add(lambda: lifecycle.start(host, a.name), f"start {a.name}")
    elif isinstance(a, Restart):
        lifecycle.restart(host, a.name)
    elif isinstance(a, Prune):  # cannot be undone: planned last, a container backed up first
        prune.delete(host, a)
        with host.store.transaction():
            inventory.delete(host.store, a.target_kind, a.name)
            applied.delete(host.store, a.target_kind, a.name)
    elif isinstance(a, (SetPrune, ForgetInventory)):
        with host.store.transaction():
            if isinstance(a, SetPrune):
                inventory.set_prune(host.store, a.target_kind, a.name, a.prune)
            else:
                inventory.delete(host.store, a.target_kind, a.name)
    else:  # pragma: no cover - the planner only makes the actions above
        raise SysmgrError(f"unknown action {a!r}")


_CREATES = {CreatePool: "StoragePool", CreateNetwork: "Network", PutProfile: "Profile",
            BuildImage: "Image", ImportImage: "Image", CreateContainer: "Container"}


def _record(host: Host, plan: Plan, a: Action, rev: Reverter) -> None:
    """An object the plan created goes into the inventory, with the manifests' origin (what
    ``apply --prune`` may delete once it leaves them)."""
    kind = _CREATES.get(type(a))
    if kind is None or not plan.origin:
        return
    keep = {tuple(k) for k in plan.keep}
    with host.store.transaction():
        inventory.put(host.store, inventory.InventoryRecord(
            kind, a.name, plan.origin, plan.revision, (kind, a.name) not in keep))
    rev.add(lambda: _forget(host, kind, a.name), f"forget {kind} {a.name}")


def _forget(host: Host, kind: str, name: str) -> None:
    with host.store.transaction():
        inventory.delete(host.store, kind, name)


def _put_profile(host: Host, a: PutProfile, rev: Reverter) -> None:
    old = host.store.profile(a.name) if host.store.has_profile(a.name) else None
    profiles.put_profile(host, ProfileRecord(a.name, a.description, dict(a.config),
                                             {k: dict(v) for k, v in a.devices.items()}))
    if old is None:
        rev.add(lambda: profiles.delete_profile(host, a.name), f"delete profile {a.name}")
    else:
        rev.add(lambda: profiles.put_profile(host, old), f"restore profile {a.name}")


def _update_container(host: Host, a: UpdateContainer, rev: Reverter) -> None:
    old = host.store.container(a.name)
    containers.update_container(host, a.name, config=a.config, devices=a.devices,
                                profiles=a.profiles, description=a.description)
    rev.add(lambda: containers.update_container(
        host, old.name, config=old.config, devices=old.devices, profiles=old.profiles,
        description=old.description), f"restore container {a.name}")
