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

from sysmgr.engine import images as eimages
from sysmgr.engine import network as enetwork
from sysmgr.engine.actions import (
    Action, BuildImage, CreateContainer, CreatePool, ImportImage, Plan, PutProfile, Restart,
    Start, Stop, UpdateContainer)
from sysmgr.engine.host import Host
from sysmgr.engine.observe import observe
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import ApplyError, PlanStale, SysmgrError
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
        host.init()
    with host.locked():
        if observe(host).digest != plan.observed_digest:
            raise PlanStale("the host changed since this plan was made", hint="run diff/apply again")
        from sysmgr.engine import journal, volumes

        volumes.mount_all(host)  # after a host restart the loop-backed pools are not mounted
        journal.recover(host)
        with Reverter() as rev, enetwork.reserving(host, plan):
            for action in plan.actions:
                try:
                    _execute(host, action, rev, progress)
                except SysmgrError as e:
                    raise _failed(result, action, e, rev) from e
                except Exception as e:  # a bug or foreign error: still revert, still report
                    raise _failed(result, action, e, rev) from e
                result.done.append(action.describe())
                if progress:
                    progress(action.describe())
            rev.success()
    return result


def _failed(result: ApplyResult, action: Action, err: Exception, rev: Reverter) -> ApplyError:
    # the reverter runs when the exception leaves its block; describe what it will undo
    msg = f"{action.describe()} failed: {getattr(err, 'message', None) or err}"
    if result.done:
        msg += f"; completed before: {len(result.done)} action(s), which are being reverted"
    e = ApplyError(msg, hint=getattr(err, "hint", None))
    e.completed = list(result.done)  # type: ignore[attr-defined]
    return e


def _execute(host: Host, a: Action, rev: Reverter, progress: Progress | None) -> None:
    if isinstance(a, enetwork.NETWORK_ACTIONS):
        enetwork.execute(host, a, rev)
    elif isinstance(a, CreatePool):
        host.create_pool(a.name, a.driver, a.config, a.description)
        rev.add(lambda: host.delete_pool(a.name), f"delete pool {a.name}")
    elif isinstance(a, PutProfile):
        old = host.store.profile(a.name) if host.store.has_profile(a.name) else None
        host.put_profile(ProfileRecord(a.name, a.description, dict(a.config),
                                       {k: dict(v) for k, v in a.devices.items()}))
        if old is None:
            rev.add(lambda: host.delete_profile(a.name), f"delete profile {a.name}")
        else:
            rev.add(lambda: host.put_profile(old), f"restore profile {a.name}")
    elif isinstance(a, BuildImage):
        img = eimages.build(host, a.builder, alias=a.name, options=a.options, progress=progress)
        rev.add(lambda: eimages.delete_alias(host, a.name), f"remove alias {a.name} ({img.fingerprint[:12]})")
    elif isinstance(a, ImportImage):
        img = eimages.import_image(host, a.path, alias=a.name, progress=progress)
        rev.add(lambda: eimages.delete_alias(host, a.name), f"remove alias {a.name} ({img.fingerprint[:12]})")
    elif isinstance(a, CreateContainer):
        host.create_container(a.name, a.image, profiles=a.profiles, config=a.config,
                              devices=a.devices, description=a.description)
        rev.add(lambda: host.delete_container(a.name, force=True), f"delete container {a.name}")
    elif isinstance(a, UpdateContainer):
        old = host.store.container(a.name)
        host.update_container(a.name, config=a.config, devices=a.devices, profiles=a.profiles,
                              description=a.description)
        rev.add(lambda: host.update_container(old.name, config=old.config, devices=old.devices,
                                              profiles=old.profiles, description=old.description),
                f"restore container {a.name}")
    elif isinstance(a, Start):
        host.start(a.name)
        rev.add(lambda: host.stop(a.name, force=True), f"stop {a.name}")
    elif isinstance(a, Stop):
        host.stop(a.name)
        rev.add(lambda: host.start(a.name), f"start {a.name}")
    elif isinstance(a, Restart):
        host.restart(a.name)
    else:  # pragma: no cover - the planner only makes the actions above
        raise SysmgrError(f"unknown action {a!r}")
