"""Container lifecycle: start, stop, restart, freeze and unfreeze.

Each operation reads the container's record and expansion once, under the root's lock. A
start plugs the nics in between "namespaces exist" and "init runs" and records how to find
init again (pid + start time, and the boot and time it started in); a stop marks the record
STOPPED, sends the image's halt signal, kills after the timeout, forgets init and unplugs
the nics (:func:`settle`). The kernel is the truth for what runs: a container whose init
died by itself is stopped, and its leftovers are cleaned up by the next start or stop (or by
the supervisor, :mod:`sysmgr.engine.supervise`, which records the crash).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

from sysmgr.drivers.runtime.base import FROZEN, RUNNING, STOPPED, InitRecord, Status
from sysmgr.engine import events, records
from sysmgr.engine.host import DEFAULT_STOP_TIMEOUT, Host
from sysmgr.errors import Conflict, SysmgrError
from sysmgr.model import restart as mrestart
from sysmgr.state.db import ContainerRecord

# What only a start needs (its bundle, id maps, disks, lxcfs, AppArmor) is imported by
# start(), and networking only for containers with nics: a stop, a freeze or a restart
# policy check through the CLI must not pay for them.


def start(host: Host, name: str, *, migration: str | None = None,
          warn: Callable[[str], None] | None = None) -> Status:
    """Start a stopped container; Conflict when it runs already, or when a move marks it
    (other than ``migration``: the move starting it on its new member). ``warn`` gets what
    the start had to leave out (a disk whose source is missing, ``required=false``), which
    the started event also records."""
    from sysmgr._util import hostinfo
    from sysmgr.engine import confinement, disks, idmap, idshift, lxcfs, runspec
    from sysmgr.engine.migration import markers

    said: list[str] = []
    with host.locked():
        ex = records.read(host, name)
        rec = ex.record
        markers.refuse(rec, "start", allow=migration)
        if records.status(host, rec).state != STOPPED:
            raise Conflict(f"container {name!r} is already running")
        cgroup = records.cgroup_path(host, name)
        host.runtime.cleanup(cgroup)  # a previous init may have died by itself
        ids = idmap.idmap_for(host, rec, ex.config)
        idmapped = idshift.prepare(host, name, ex.devices, rec.pool, ids)  # may shift the files
        binds = disks.mounts(host, name, ex.devices, ids is not None, said.append)
        views = None
        if host.runtime.info.resource_views:  # lxcfs: its own memory, CPUs and uptime
            try:
                lxcfs.ensure()
            except SysmgrError as e:  # the container starts all the same, with the host's views
                said.append(f"resource views are the host's: {e.message}")
            views, view_binds = lxcfs.attach()
            binds += view_binds
        spec = runspec.runtime_spec(host, ex, records.image_meta(host, rec), ids,
                                    idmapped_rootfs=idmapped, disks=binds)
        os.makedirs(spec.runtime_dir, exist_ok=True)
        spec = confinement.confine(host, spec, ex.config)  # its AppArmor profile, where there is one
        before_go = None
        if records.has_nics(ex.devices):  # nic-less containers never load networking
            from sysmgr.engine.nics import NicEngine

            nics = NicEngine(host)
            before_go = nics.attacher(nics.prepare_start(name, spec.rootfs))
        rec = host.store.container(name)  # the id map, a shift and nics may have recorded state
        init = host.runtime.start(spec, before_go=before_go)
        vol = {k: v for k, v in rec.volatile.items()
               if k not in mrestart.PENDING_KEYS and k != mrestart.RESTART_NEEDED}
        # the boot id and the time tell a supervisor whether and how long this init ran
        vol.update({"init.pid": init.pid, "init.starttime": init.starttime,
                    "init.cgroup": init.cgroup, "init.boot_id": hostinfo.boot_id(),
                    "init.started": time.time(), "last_state": RUNNING,
                    "last_used": time.time(),  # kept after a stop: LXD's last_used_at
                    lxcfs.VOLATILE: views})
        try:
            with host.store.transaction():
                host.store.set_volatile(name, vol)
        except BaseException:
            host.runtime.stop(init, halt_signal=spec.halt_signal, timeout=0, force=True)
            raise
        events.container(host, name, "started", detail="; ".join(said) or None)
        for msg in said if warn is not None else ():
            warn(msg)
        return Status(RUNNING, init.pid)


def stop(host: Host, name: str, *, timeout: float | None = None, force: bool = False) -> bool:
    """Stop a container; True when its init shut down by itself on the halt signal, False
    when it had to be killed (``force``, or the timeout ran out)."""
    graceful = True
    with host.locked():
        ex = records.read(host, name)
        rec = ex.record
        init = records.init_record(rec)
        if host.runtime.status(init).state == STOPPED:
            if init is None and not force:
                raise Conflict(f"container {name!r} is not running")
        else:
            assert init is not None
            if timeout is None:
                timeout = float(ex.config.get("boot.host_shutdown_timeout") or DEFAULT_STOP_TIMEOUT)
            graceful = _stop_init(host, rec, init, timeout, force)
        settle(host, ex)
        events.container(host, name, "stopped", detail=None if graceful else "killed")
    return graceful


def _stop_init(host: Host, rec: ContainerRecord, init: InitRecord, timeout: float,
               force: bool) -> bool:
    """Halt (or kill) a running init. The record says STOPPED *before* the signal, so a
    supervisor that sees init exit never takes the stop for a crash; if the stop fails
    while init still runs, it says RUNNING again."""
    _set_last_state(host, rec.name, STOPPED)
    try:
        return host.runtime.stop(
            init, halt_signal=records.halt_signal(records.image_meta(host, rec)),
            timeout=timeout, force=force)
    except BaseException:
        if host.runtime.status(init).state != STOPPED:
            _set_last_state(host, rec.name, RUNNING)
        raise


def _set_last_state(host: Host, name: str, state: str) -> None:
    with host.store.transaction():
        vol = dict(host.store.container(name).volatile)  # fresh: never lose a key
        vol["last_state"] = state
        host.store.set_volatile(name, vol)


def settle(host: Host, ex: records.Expanded, volatile: Mapping[str, Any] | None = None) -> None:
    """Clean up after a container whose init is gone, as a stop does: its cgroup, the
    record of its init (now STOPPED, with ``volatile`` keys added) and its nics."""
    host.runtime.cleanup(records.cgroup_path(host, ex.record.name))
    forget_init(host, host.store.container(ex.record.name), volatile)
    if records.has_nics(ex.devices):
        from sysmgr.engine.nics import NicEngine  # networking: only containers with nics

        NicEngine(host).detach(ex.record.name)


def forget_init(host: Host, rec: ContainerRecord, volatile: Mapping[str, Any] | None = None
                ) -> None:
    """Drop the record of a stopped container's init (and any restart it had pending);
    record ``volatile`` keys with it."""
    vol = {k: v for k, v in rec.volatile.items()
           if not k.startswith("init.") and k not in mrestart.PENDING_KEYS}
    vol["last_state"] = STOPPED
    vol.update(volatile or {})
    with host.store.transaction():
        host.store.set_volatile(rec.name, vol)


def restart(host: Host, name: str, *, timeout: float | None = None, force: bool = False,
            must_run: bool = False) -> None:
    """Stop (when it runs) and start a container; ``must_run`` (``sysmgr restart``, as
    ``lxc restart``): a stopped container is a Conflict instead of being started."""
    with host.locked():
        if records.status(host, host.store.container(name)).state != STOPPED:
            stop(host, name, timeout=timeout, force=force)
        elif must_run:
            raise Conflict(f"container {name!r} is not running",
                           hint=f"start it: sysmgr start {name}")
        start(host, name)
        events.container(host, name, "restarted")


def set_frozen(host: Host, name: str, frozen: bool) -> None:
    """Freeze a running container or thaw a frozen one; as in LXD, freezing a frozen
    container or thawing one that is not frozen is a Conflict."""
    with host.locked():
        init = records.init_record(host.store.container(name))
        state = host.runtime.status(init).state
        if state == STOPPED or init is None:
            raise Conflict(f"container {name!r} is not running")
        if frozen and state == FROZEN:
            raise Conflict(f"container {name!r} is already frozen")
        if not frozen and state != FROZEN:
            raise Conflict(f"container {name!r} is not frozen")
        if frozen:
            host.runtime.freeze(init)
        else:
            host.runtime.unfreeze(init)
        events.container(host, name, "frozen" if frozen else "unfrozen")
