"""Container lifecycle: start, stop, restart, freeze and unfreeze.

Each operation reads the container's record and expansion once, under the root's lock. A
start plugs the nics in between "namespaces exist" and "init runs" and records how to find
init again (pid + start time, and the boot and time it started in); a stop marks the record
STOPPED, sends the image's halt signal, kills after the timeout, forgets init and unplugs
the nics (:func:`settle`). The kernel is the truth for what runs: a container whose init
died by itself is stopped, and its leftovers are cleaned up by the next start or stop (or by
the supervisor, :mod:`sysmgr.engine.supervise`, which records the crash).

**Many at once** (``sysmgr start c1 ... c100``): :func:`start_many` shares what the starts
have in common (one lock, the nics' networks prepared once, one host netlink socket, the
resource views checked once) and begins each start before finishing the previous one, so a
container sets itself up in its own processes while the next is prepared; :func:`stop_many`
sends every signal before waiting for any. Each container starts (or stops) whole or not at
all, and a failure is its own: it is reported, the others go on, and those started stay
running (as ``lxc start c1 c2`` does: a batch is many commands made cheaper, not one
transaction).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping, NamedTuple, Sequence

from sysmgr.drivers.runtime.base import (
    FROZEN, RUNNING, STOPPED, InitRecord, PendingStart, RuntimeSpec, Status)
from sysmgr.engine import events, records
from sysmgr.engine.host import DEFAULT_STOP_TIMEOUT, Host
from sysmgr.errors import Conflict, SysmgrError
from sysmgr.model import restart as mrestart
from sysmgr.state.db import ContainerRecord

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.engine.nics import StartNics

# What only a start needs (its bundle, id maps, disks, lxcfs, AppArmor) is imported where a
# start needs it, and networking only for containers with nics: a stop or a freeze through
# the CLI must not pay for them.


def start(host: Host, name: str, *, migration: str | None = None,
          warn: Callable[[str], None] | None = None) -> Status:
    """Start a stopped container; Conflict when it runs already, or when a move marks it
    (other than ``migration``: the move starting it on its new member). ``warn`` gets what
    the start had to leave out (a disk whose source is missing, ``required=false``), which
    the started event also records."""
    with host.locked():
        ex = _startable(host, name, migration)
        shared = _Shared.prepare(host, [ex])
        return _finish_one(host, _begin_one(host, ex, shared), warn)


def start_many(host: Host, names: Sequence[str],
               warn: Callable[[str, str], None] | None = None) -> dict[str, SysmgrError | None]:
    """Start several stopped containers in one pass: one lock, their nic records and
    networks prepared once (one dnsmasq reload at most per network), one host netlink
    socket for every nic, the resource views checked once. ``warn(name, message)`` as
    :func:`start`'s.

    Each container starts whole or not at all (a failed start undoes its own steps), and a
    failure is that container's alone: it is reported and the others go on; those started
    stay running. Returns each name's error, None for a started one."""
    out: dict[str, SysmgrError | None] = {}
    with host.locked():
        ready = []
        for name in dict.fromkeys(names):
            try:
                ready.append(_startable(host, name, None))
            except SysmgrError as e:
                out[name] = e
        shared = _Shared.prepare(host, ready)
        with shared.batch():
            out.update(_pipelined(host, ready, shared, warn))
    return {name: out[name] for name in dict.fromkeys(names)}


#: starts begun ahead of the one being finished: a container sets itself up (in its own
#: processes) while the next one is prepared
_AHEAD = 1


def _pipelined(host: Host, ready: Sequence[records.Expanded], shared: _Shared,
               warn: Callable[[str, str], None] | None) -> dict[str, SysmgrError | None]:
    """Start ``ready`` in order, each begun before the previous one is finished."""
    out: dict[str, SysmgrError | None] = {}
    queue: collections.deque[_Begun] = collections.deque()

    def finish_next() -> None:
        b = queue.popleft()
        try:
            _finish_one(host, b, (lambda m: warn(b.name, m)) if warn is not None else None)
            out[b.name] = None
        except SysmgrError as e:
            out[b.name] = e

    try:
        for ex in ready:
            try:
                queue.append(_begin_one(host, ex, shared))
            except SysmgrError as e:
                out[ex.record.name] = e
            while len(queue) > _AHEAD:
                finish_next()
        while queue:
            finish_next()
    except BaseException:
        for b in queue:  # begun, never finished: nothing of them may stay
            b.pending.abort()
        raise
    return out


def _startable(host: Host, name: str, migration: str | None) -> records.Expanded:
    """The container's record read once, if it may start (stopped, not marked by a move)."""
    from sysmgr.engine.migration import markers

    ex = records.read(host, name)
    markers.refuse(ex.record, "start", allow=migration)
    if records.status(host, ex.record).state != STOPPED:
        raise Conflict(f"container {name!r} is already running")
    return ex


class _Shared:
    """What the containers of one start call share: their nics' preparation (None when
    none has a nic: nic-less starts never load networking) and the resource views."""

    def __init__(self, host: Host, nics: StartNics | SysmgrError | None) -> None:
        from sysmgr.engine import lxcfs

        self.host = host
        self.nics = nics  # an error: preparing them failed (each container with a nic fails)
        self.views: int | None = None
        self.view_binds: tuple[Any, ...] = ()
        self.view_note: str | None = None
        if host.runtime.info.resource_views:  # lxcfs: their own memory, CPUs and uptime
            try:
                lxcfs.ensure()
            except SysmgrError as e:  # they start all the same, with the host's views
                self.view_note = f"resource views are the host's: {e.message}"
            self.views, self.view_binds = lxcfs.attach()

    @classmethod
    def prepare(cls, host: Host, starting: Sequence[records.Expanded]) -> _Shared:
        with_nics = [ex for ex in starting if records.has_nics(ex.devices)]
        if not with_nics:
            return cls(host, None)
        from sysmgr.engine.nics import NicEngine

        try:
            return cls(host, NicEngine(host).prepare(with_nics))
        except SysmgrError as e:  # the containers without a nic start all the same
            return cls(host, e)

    def batch(self) -> ContextManager[None]:
        """One host netlink socket for every nic plugged in the block."""
        if self.nics is None or isinstance(self.nics, SysmgrError):
            return contextlib.nullcontext()
        return self.nics.engine.driver.batch()

    def before_go(self, ex: records.Expanded, rootfs: str) -> Callable[[int], None] | None:
        if self.nics is None or not records.has_nics(ex.devices):
            return None
        if isinstance(self.nics, SysmgrError):
            raise self.nics
        return self.nics.engine.attacher(self.nics.specs(ex.record.name, rootfs))


class _Begun(NamedTuple):
    """A start the runtime has begun (:func:`_begin_one`)."""

    name: str
    record: ContainerRecord
    spec: RuntimeSpec
    pending: PendingStart
    views: int | None
    said: list[str]
    engine: str  # the engine it starts under ("": the host's default)


def _begin_one(host: Host, ex: records.Expanded, shared: _Shared) -> _Begun:
    """Everything of one container's start up to the runtime's begin (see :func:`start`)."""
    from sysmgr.engine import confinement, disks, idmap, idshift, runspec

    rec = ex.record
    name = rec.name
    said: list[str] = []
    rt = records.runtime(host, rec, ex.config)  # runtime.engine (exit 2 when not installed)
    rt.cleanup(records.cgroup_path(host, name))  # a previous init may have died by itself
    ids = idmap.idmap_for(host, rec, ex.config)
    # may shift the files: always for an engine that attaches no idmapped mounts
    idmapped = idshift.prepare(host, name, ex.devices, rec.pool, ids,
                               idmapped_mounts=rt.info.idmapped_mounts)
    binds = disks.mounts(host, name, ex.devices, ids is not None, said.append)
    if rt.info.resource_views:
        binds += shared.view_binds
    if shared.view_note:
        said.append(shared.view_note)
    spec = runspec.runtime_spec(host, ex, records.image_meta(host, rec), ids,
                                idmapped_rootfs=idmapped, disks=binds)
    os.makedirs(spec.runtime_dir, exist_ok=True)
    spec = confinement.confine(host, spec, ex.config)  # its AppArmor profile, where there is one
    before_go = shared.before_go(ex, spec.rootfs)
    rec = host.store.container(name)  # the id map, a shift and nics may have recorded state
    pending = rt.begin_start(spec, before_go=before_go)
    return _Begun(name, rec, spec, pending, shared.views if rt.info.resource_views else None,
                  said, rt.name if rt is not host.runtime else "")


def _finish_one(host: Host, b: _Begun, warn: Callable[[str], None] | None) -> Status:
    """Complete a begun start: init runs, and the record says how to find it."""
    from sysmgr._util import hostinfo
    from sysmgr.engine import lxcfs

    init = b.pending.finish()
    vol = {k: v for k, v in b.record.volatile.items()
           if k not in mrestart.PENDING_KEYS and k != mrestart.RESTART_NEEDED}
    # the boot id and the time tell a supervisor whether and how long this init ran
    vol.update({"init.pid": init.pid, "init.starttime": init.starttime,
                "init.cgroup": init.cgroup, "init.boot_id": hostinfo.boot_id(),
                records.ENGINE: init.engine or b.engine,
                "init.started": time.time(), "last_state": RUNNING,
                "last_used": time.time(),  # kept after a stop: LXD's last_used_at
                lxcfs.VOLATILE: b.views})
    try:
        with host.store.transaction():
            host.store.set_volatile(b.name, vol)
    except BaseException:
        host.runtime_for(init).stop(init, halt_signal=b.spec.halt_signal, timeout=0, force=True)
        raise
    events.container(host, b.name, "started", detail="; ".join(b.said) or None)
    for msg in b.said if warn is not None else ():
        warn(msg)
    return Status(RUNNING, init.pid)


def stop(host: Host, name: str, *, timeout: float | None = None, force: bool = False) -> bool:
    """Stop a container; True when its init shut down by itself on the halt signal, False
    when it had to be killed (``force``, or the timeout ran out)."""
    result = stop_many(host, [name], timeout=timeout, force=force)[name]
    if isinstance(result, SysmgrError):
        raise result
    return result


def stop_many(host: Host, names: Sequence[str], *, timeout: float | None = None,
              force: bool = False) -> dict[str, bool | SysmgrError]:
    """Stop several containers at once: every halt signal (with ``force``, every kill) is
    sent before any is waited for, so their shutdowns overlap, and their nics are unplugged
    over one host netlink socket. ``timeout`` (default: each one's
    ``boot.host_shutdown_timeout``) runs for them all from the start. Returns each name's
    result as :func:`stop`'s, or the error that kept it from stopping (the others go on)."""
    out: dict[str, bool | SysmgrError] = {}
    with host.locked():
        running: list[tuple[records.Expanded, InitRecord]] = []
        gone: list[records.Expanded] = []
        for name in dict.fromkeys(names):
            try:
                ex = records.read(host, name)
                init = records.init_record(ex.record)
                if host.runtime_for(init).status(init).state != STOPPED:
                    assert init is not None
                    running.append((ex, init))
                elif init is None and not force:
                    raise Conflict(f"container {name!r} is not running")
                else:
                    gone.append(ex)  # its init died by itself: only the leftovers go
            except SysmgrError as e:
                out[name] = e
        out.update({ex.record.name: True for ex in gone})
        out.update(_stop_inits(host, running, timeout, force))
        settled = [ex for ex in gone + [ex for ex, _ in running]
                   if not isinstance(out[ex.record.name], SysmgrError)]
        with _nic_batch(host, settled):
            for ex in settled:
                settle(host, ex)
                events.container(host, ex.record.name, "stopped",
                                 detail=None if out[ex.record.name] else "killed")
    return {name: out[name] for name in dict.fromkeys(names)}


def _stop_inits(host: Host, running: Sequence[tuple[records.Expanded, InitRecord]],
                timeout: float | None, force: bool) -> dict[str, bool | SysmgrError]:
    """Halt (or kill) running inits. The records say STOPPED *before* the signals, so a
    supervisor that sees an init exit never takes the stop for a crash; an init that
    still runs after its stop failed is recorded RUNNING again."""
    if not running:
        return {}
    names = [ex.record.name for ex, _ in running]
    _set_last_state(host, names, STOPPED)
    stops = [(init, records.halt_signal(records.image_meta(host, ex.record)),
              timeout if timeout is not None else
              float(ex.config.get("boot.host_shutdown_timeout") or DEFAULT_STOP_TIMEOUT))
             for ex, init in running]
    try:
        results = _stop_by_engine(host, stops, force)
    except BaseException:
        _set_last_state(host, [n for n, (_, init) in zip(names, running)
                               if host.runtime_for(init).status(init).state != STOPPED], RUNNING)
        raise
    failed = [n for n, (_, init), r in zip(names, running, results)
              if isinstance(r, SysmgrError) and host.runtime_for(init).status(init).state != STOPPED]
    _set_last_state(host, failed, RUNNING)
    return dict(zip(names, results))


def _stop_by_engine(host: Host, stops: Sequence[tuple[InitRecord, int, float]], force: bool
                    ) -> list[bool | SysmgrError]:
    """:meth:`Runtime.stop_many` of each engine over its own inits, results in order."""
    groups: dict[str, list[int]] = {}
    for i, (init, _, _) in enumerate(stops):
        groups.setdefault(init.engine, []).append(i)
    results: list[bool | SysmgrError] = [True] * len(stops)
    for idxs in groups.values():
        rt = host.runtime_for(stops[idxs[0]][0])
        for i, r in zip(idxs, rt.stop_many([stops[i] for i in idxs], force=force)):
            results[i] = r
    return results


def _nic_batch(host: Host, exs: Sequence[records.Expanded]) -> ContextManager[None]:
    """One host netlink socket for unplugging the nics of ``exs`` (when any has one)."""
    if not any(records.has_nics(ex.devices) for ex in exs):
        return contextlib.nullcontext()
    return host.network_driver.batch()


def _set_last_state(host: Host, names: Sequence[str], state: str) -> None:
    if not names:
        return
    with host.store.transaction():
        for name in names:
            vol = dict(host.store.container(name).volatile)  # fresh: never lose a key
            vol["last_state"] = state
            host.store.set_volatile(name, vol)


def settle(host: Host, ex: records.Expanded, volatile: Mapping[str, Any] | None = None) -> None:
    """Clean up after a container whose init is gone, as a stop does: its cgroup, the
    record of its init (now STOPPED, with ``volatile`` keys added) and its nics."""
    init = records.init_record(host.store.container(ex.record.name))
    rt = host.runtime_for(init) if init is not None else records.runtime(host, ex.record, ex.config)
    rt.cleanup(records.cgroup_path(host, ex.record.name))
    forget_init(host, host.store.container(ex.record.name), volatile)
    if records.has_nics(ex.devices):
        from sysmgr.engine.nics import NicEngine  # networking only for containers with nics

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
        state = host.runtime_for(init).status(init).state
        if state == STOPPED or init is None:
            raise Conflict(f"container {name!r} is not running")
        if frozen and state == FROZEN:
            raise Conflict(f"container {name!r} is already frozen")
        if not frozen and state != FROZEN:
            raise Conflict(f"container {name!r} is not frozen")
        if frozen:
            host.runtime_for(init).freeze(init)
        else:
            host.runtime_for(init).unfreeze(init)
        events.container(host, name, "frozen" if frozen else "unfrozen")
