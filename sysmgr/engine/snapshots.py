"""Container snapshots: create, list, restore, delete, expiry and schedules (LXD's rules).

A snapshot is a read-only copy of the container's root filesystem in its pool (constant
time where the pool has ``info.cow_snapshots``) plus a record of the container's local
definition at that moment (profiles, config, devices, description) and of the ids its files
carry on disk (:mod:`sysmgr.engine.idshift`). A restore brings them back together; the other snapshots are kept. Default names follow LXD's ``snap%d``: one more
than the highest number in use. ``snapshots.expiry`` gives new snapshots an expiry time;
``prune`` deletes expired ones; ``auto`` takes the snapshots ``snapshots.schedule`` says are
due (meant for a timer, and for whatever reconciles later) and then prunes.

Every change writes its intent first (:mod:`sysmgr.engine.journal`): the pool is changed
first, the record last, and a killed sysmgr leaves nothing the next run does not clean up.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import re
import time
from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import events, idshift, journal, lifecycle, records, restoring, volumes
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Issue, NotFound, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import schedule as msched
from sysmgr.state.snapshots import SnapshotRecord, SnapshotStore

_SNAP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_AUTO_KEY = "snapshots.last_auto"   # volatile: when the schedule last fired


def check_name(snap: str) -> None:
    if not isinstance(snap, str) or not _SNAP_RE.match(snap):
        raise ValidationError([Issue(
            f"invalid snapshot name {snap!r}: 1 to 63 letters, digits, '-', '_' and '.', "
            "starting with a letter or digit", path="snapshot")])


def next_name(existing: list[str]) -> str:
    """``snapN`` with N one more than the highest in use (LXD's ``snap%d``)."""
    nums = [int(m.group(1)) for n in existing if (m := re.fullmatch(r"snap(\d+)", n))]
    return f"snap{max(nums) + 1 if nums else 0}"


def all_(host: Host, name: str) -> list[SnapshotRecord]:
    host.store.container(name)
    return SnapshotStore(host.store).all(name)


def get(host: Host, name: str, snap: str) -> SnapshotRecord:
    host.store.container(name)
    return SnapshotStore(host.store).get(name, snap)


def create(host: Host, name: str, snap: str | None = None, *, expiry: str | None = None,
           now: float | None = None) -> SnapshotRecord:
    """Snapshot container ``name`` (running or not). ``expiry`` overrides
    ``snapshots.expiry`` (``""``: never expires)."""
    with host.locked():
        journal.recover(host)
        rec, drv = restoring.snapshot_pool(host, name)
        snaps = SnapshotStore(host.store)
        if snap is None:
            snap = next_name([s.name for s in snaps.all(name)])
        check_name(snap)
        if snaps.has(name, snap):
            raise AlreadyExists(f"snapshot {name}/{snap} already exists")
        cfg, _ = records.expanded(host, rec)
        exp_value = cfg.get("snapshots.expiry", "") if expiry is None else expiry
        try:
            created = time.time() if now is None else now
            expires = msched.expiry_time(exp_value, created)
        except ValueError as e:
            raise ValidationError([Issue(str(e), path="expiry")]) from None
        out = SnapshotRecord(name, snap, created, expires, list(rec.profiles), dict(rec.config),
                             {k: dict(v) for k, v in rec.devices.items()}, rec.description,
                             idshift.disk_state(rec.volatile))  # the ids its files carry
        with journal.intent(host, "snapshot", container=name, pool=rec.pool, snapshot=snap), \
                volumes.full_is_clear(rec.pool):
            if snap in _volume_snapshots(drv, name):
                drv.delete_snapshot(name, snap)  # no record: an orphan of an earlier failure
            drv.create_snapshot(name, snap)
            with host.store.transaction():
                snaps.add(out)
        events.snapshot(host, name, snap, "created")
        return out


def _volume_snapshots(drv, name: str) -> list[str]:
    try:
        return drv.list_snapshots(name)
    except NotFound:
        return []


def delete(host: Host, name: str, snap: str) -> None:
    with host.locked():
        journal.recover(host)
        rec = host.store.container(name)
        SnapshotStore(host.store).get(name, snap)
        drv = host.pool_driver(rec.pool)
        with journal.intent(host, "delete-snapshot", container=name, pool=rec.pool, snapshot=snap):
            drv.delete_snapshot(name, snap)
            with host.store.transaction():
                SnapshotStore(host.store).delete(name, snap)
        events.snapshot(host, name, snap, "deleted")


def rename(host: Host, name: str, snap: str, new: str) -> SnapshotRecord:
    """Rename snapshot ``snap`` of container ``name`` to ``new`` (running or not)."""
    with host.locked():
        journal.recover(host)
        rec = host.store.container(name)
        snaps = SnapshotStore(host.store)
        snaps.get(name, snap)
        check_name(new)
        if snaps.has(name, new):
            raise AlreadyExists(f"snapshot {name}/{new} already exists")
        drv = host.pool_driver(rec.pool)
        with journal.intent(host, "rename-snapshot", container=name, pool=rec.pool,
                            snapshot=snap, new=new):
            drv.rename_snapshot(name, snap, new)
            with host.store.transaction():
                snaps.rename(name, snap, new)
        events.snapshot(host, name, new, "renamed", detail=f"from {snap}")
        return snaps.get(name, new)


def update(host: Host, name: str, snap: str, *, expires: float | None,
           description: str) -> SnapshotRecord:
    """Change a snapshot's expiry (None: never) and description (``lxc config edit
    NAME/SNAP``); its filesystem and recorded definition stay."""
    with host.locked():
        host.store.container(name)
        snaps = SnapshotStore(host.store)
        with host.store.transaction():
            snaps.set_about(name, snap, expires=expires, description=description)
        return snaps.get(name, snap)


def restore(host: Host, name: str, snap: str, *, force: bool = False) -> list[str]:
    """Bring back the filesystem and the definition of snapshot ``snap``.

    A running container is restored in place, as LXD does: stopped (killed: its state is
    being thrown away), restored and started again (``force`` is accepted for callers
    that still pass it). Returns the steps taken."""
    done: list[str] = []
    with host.locked():
        journal.recover(host)
        plan, drv = restoring.check(host, name, snap)
        running = records.status(host, plan.current).state != STOPPED
        with Reverter() as r:
            if running:
                lifecycle.stop(host, name, force=True)
                done.append(f"stopped {name}")
                r.add(lambda: lifecycle.start(host, name), f"start {name} again")
            with journal.intent(host, "restore", container=name, pool=plan.current.pool,
                                snapshot=snap, resolve_on_error=False):
                restoring.swap(host, plan, drv)
            done.append(f"restored {name} from {snap}")
            events.snapshot(host, name, snap, "restored")
            if running:
                lifecycle.start(host, name)
                done.append(f"started {name}")
            r.success()
    return done


def prune(host: Host, name: str | None = None, *, now: float | None = None) -> list[str]:
    """Delete the expired snapshots (of one container, or all); return ``container/snap``s."""
    now = time.time() if now is None else now
    gone = []
    with host.locked():
        if name is not None:
            host.store.container(name)
        for s in SnapshotStore(host.store).expired(now, name):
            delete(host, s.container, s.name)
            gone.append(f"{s.container}/{s.name}")
    return gone


def next_due(host: Host, *, now: float | None = None) -> tuple[float, str] | None:
    """The next scheduled snapshot or expiry: (when, ``snapshot NAME`` / ``expire
    NAME/SNAP``), the earliest; None when nothing is scheduled. Read-only."""
    now = time.time() if now is None else now
    due: list[tuple[float, str]] = []
    for rec in host.store.containers():
        cfg, _ = records.expanded(host, rec)
        sched = cfg.get("snapshots.schedule", "")
        if not sched:
            continue
        with contextlib.suppress(ValueError):  # rejected at validation; never here
            at = msched.next_run(sched, float(rec.volatile.get(_AUTO_KEY) or rec.created))
            if at is not None:
                due.append((max(at, now), f"snapshot {rec.name}"))
    due += [(s.expires, f"expire {s.container}/{s.name}") for s in SnapshotStore(host.store).all()
            if s.expires is not None]
    return min(due) if due else None


def auto(host: Host, *, now: float | None = None) -> list[str]:
    """Take the snapshots that ``snapshots.schedule`` says are due, then prune expired ones.
    Run it from a timer (every minute); returns one line per snapshot taken or deleted."""
    now = time.time() if now is None else now
    done: list[str] = []
    with host.locked():
        for rec in host.store.containers():
            cfg, _ = records.expanded(host, rec)
            sched = cfg.get("snapshots.schedule", "")
            if not sched:
                continue
            last = float(rec.volatile.get(_AUTO_KEY) or rec.created)
            try:
                due = msched.next_run(sched, last)
            except ValueError:
                continue  # rejected at validation; never here
            if due is None or due > now:
                continue
            stopped = records.status(host, rec).state == STOPPED
            if not stopped or mkeys.parse_bool(cfg.get("snapshots.schedule.stopped", "false")):
                s = create(host, rec.name, now=now)
                done.append(f"snapshot {rec.name}/{s.name}")
            vol = dict(host.store.container(rec.name).volatile)
            vol[_AUTO_KEY] = now
            with host.store.transaction():
                host.store.set_volatile(rec.name, vol)
        done += [f"expired {x}" for x in prune(host, now=now)]
    return done
