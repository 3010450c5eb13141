"""Supervision: crashed containers, their restart policy, and deferred starts.

A library for the controller (and anything long-running): :func:`crashed` finds containers
whose record says RUNNING but whose init is gone, cleans up after them as a stop would and
records the crash and the restart :mod:`sysmgr.model.restart` decides; :func:`restart_due`
says which stopped containers are to be started now (a restart whose delay ran out, or a
boot start that waited for its dependencies) and :func:`restart` starts one, recording a
failure as another crash. :func:`supervision_status` is what ``controller status`` shows.
:class:`~sysmgr.engine.watcher.Watcher` tells when to call :func:`crashed` without asking
the kernel about every container again and again.

A container stopped by sysmgr is never taken for a crash: a stop marks the record STOPPED
before it signals init (:func:`sysmgr.engine.lifecycle.stop`). An init that died with the
host (its record is of another boot) is not a crash either: the boot start
(:func:`sysmgr.engine.bootstrap.autostart`) decides about it by ``boot.autostart``.

Every function takes the root's lock for as long as it reads and writes records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

from sysmgr._util import hostinfo
from sysmgr.drivers.runtime.base import RUNNING, STOPPED, InitRecord
from sysmgr.engine import events, lifecycle, records
from sysmgr.engine.host import Host
from sysmgr.engine.migration import markers
from sysmgr.errors import Issue, SysmgrError
from sysmgr.model import bootorder
from sysmgr.model import restart as mrestart
from sysmgr.state.db import ContainerRecord

#: exit codes a watcher collected, by the init they are of
Exits = Mapping[InitRecord, int | None]


@dataclass(frozen=True)
class Crash:
    """A container found dead and what was recorded about it."""

    name: str
    exit_code: int | None      # None: unknown (sysmgr was not init's reaper)
    exit: str                  # the exit in words: "killed by SIGKILL (137)"
    at: float                  # when it was found dead (epoch seconds)
    restarts: int              # crashes in its current streak, this one included
    next_attempt: float | None  # when it is to be restarted; None: never
    reason: str                # why (not) and when


def crashed(host: Host, exits: Exits | None = None, *, now: float | None = None) -> list[Crash]:
    """Containers whose record says RUNNING but whose init is gone (of this boot): each is
    marked STOPPED and cleaned up (cgroup, nics) and its crash recorded in
    ``volatile.restart.*`` with the restart its policy decides.

    ``exits``: exit codes a :class:`~sysmgr.engine.watcher.Watcher` collected. Otherwise an
    init's exit code is known only when this process is its reaper and it was not reaped
    yet; else it is recorded as ``unknown``."""
    now = time.time() if now is None else now
    boot = hostinfo.boot_id()
    found = []
    with host.locked():
        for rec in host.store.containers():
            v = rec.volatile
            if v.get("last_state") != RUNNING or markers.marker(rec) is not None:
                continue
            if v.get("init.boot_id") not in (None, boot):
                continue  # went down with the host: the boot start's to decide
            init = records.init_record(rec)
            code = _exit_code(host, init, exits)
            if host.runtime_for(init).status(init).state != STOPPED:
                continue
            found.append(_record_crash(host, rec, code, now))
    return found


def _exit_code(host: Host, init: InitRecord | None, exits: Exits | None) -> int | None:
    """What a watcher collected for ``init``, else what reaping it now gives (before any
    status check would reap it without looking)."""
    if init is None:
        return None
    if exits is not None and init in exits:
        return exits[init]
    return host.runtime_for(init).reap(init)


def _record_crash(host: Host, rec: ContainerRecord, code: int | None, now: float) -> Crash:
    ex = records.read(host, rec.name)
    policy = mrestart.Policy.from_config(ex.config)
    started = rec.volatile.get("init.started")
    ran_for = now - float(started) if started else None
    decision = mrestart.decide(policy, mrestart.state_of(rec.volatile, code, ran_for), now)
    lifecycle.settle(host, ex, mrestart.crash_record(rec.volatile, decision, code, now))
    events.container(host, rec.name, "crashed",
                     detail=f"{mrestart.describe_exit(code)}; {decision.reason}")
    return Crash(rec.name, code, mrestart.describe_exit(code), now, decision.count,
                 decision.at, decision.reason)


def depends_issues(host: Host, name: str, config: Mapping[str, str]) -> list[Issue]:
    """The ``boot.depends`` cycle container ``name`` would close with the expanded
    ``config`` (checked when a definition is written; a cycle a profile change makes is
    reported at boot). Names of containers that do not exist (yet) are no error."""
    deps = bootorder.depends_of(config)
    if not deps:
        return []
    graph: dict[str, tuple[str, ...]] = {name: deps}
    for rec in host.store.containers():
        if rec.name != name:
            graph[rec.name] = bootorder.depends_of(records.expanded(host, rec)[0])
    cycle = bootorder.cycle_through(graph, name)
    if cycle is None:
        return []
    return [Issue(f"dependency cycle {bootorder.describe_cycle(cycle)}: a container cannot "
                  "start after itself", path="config.boot.depends")]


# -- starting again -----------------------------------------------------------------------------

def _survey(host: Host) -> tuple[list[tuple[ContainerRecord, dict[str, str]]], dict[str, str]]:
    """Every container with its expanded config, and each one's state as the kernel has it."""
    recs = host.store.containers()
    return ([(r, records.expanded(host, r)[0]) for r in recs],
            {r.name: records.status(host, r).state for r in recs})


def _pending(rec: ContainerRecord, config: Mapping[str, str], now: float) -> bool:
    """Whether a stopped container is to be started (once its dependencies run)."""
    v = rec.volatile
    if v.get(mrestart.PENDING_BOOT):
        return True
    nxt = v.get(mrestart.NEXT)
    return nxt is not None and float(nxt) <= now and \
        mrestart.Policy.from_config(config).mode != "no"  # the policy may have changed since


def waiting_for(config: Mapping[str, str], states: Mapping[str, str]) -> tuple[str, ...]:
    """The dependencies (``boot.depends``) of a container that do not run."""
    return tuple(d for d in bootorder.depends_of(config) if states.get(d) != RUNNING)


def restart_due(host: Host, now: float | None = None) -> list[str]:
    """Stopped containers to start now: their restart's delay ran out (and their policy
    still restarts), or their boot start waited for dependencies, and every container they
    depend on runs. Highest ``boot.autostart.priority`` first, then by name."""
    now = time.time() if now is None else now
    with host.locked():
        found, states = _survey(host)
    due = [bootorder.BootEntry.from_config(rec.name, cfg) for rec, cfg in found
           if states[rec.name] == STOPPED and markers.marker(rec) is None
           and _pending(rec, cfg, now) and not waiting_for(cfg, states)]
    return [e.name for e in sorted(due, key=lambda e: (-e.priority, e.name))]


def restart(host: Host, name: str, *, now: float | None = None) -> bool:
    """Start a container :func:`restart_due` named. True when it runs (it may have been
    started by someone else meanwhile); False when the start failed: the failure is
    recorded (``restart.error``) and the next attempt scheduled as for another crash."""
    with host.locked():
        rec = host.store.container(name)
        if records.status(host, rec).state != STOPPED:
            return True
        try:
            lifecycle.start(host, name)
        except SysmgrError as e:
            _record_failed_start(host, name, e, time.time() if now is None else now)
            return False
        streak = host.store.container(name).volatile.get(mrestart.COUNT) or 0
        events.container(host, name, "restarted", detail=f"after {streak} crash(es) in a row")
        return True


def _record_failed_start(host: Host, name: str, error: SysmgrError, now: float) -> None:
    rec = host.store.container(name)
    cfg, _ = records.expanded(host, rec)
    # a start that failed ran for no time: the streak goes on and the delay doubles
    decision = mrestart.decide(mrestart.Policy.from_config(cfg),
                               mrestart.state_of(rec.volatile, None, 0.0), now)
    vol = {k: v for k, v in rec.volatile.items() if k not in mrestart.PENDING_KEYS}
    vol.update(mrestart.failed_start_record(decision, error.message))
    with host.store.transaction():
        host.store.set_volatile(name, vol)


# -- status ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Supervision:
    """One container as the supervisor sees it (``controller status``)."""

    name: str
    state: str                     # the kernel's: RUNNING, STOPPED, FROZEN
    policy: str                    # boot.restart
    restarts: int                  # crashes in the current streak
    last_exit: str | None          # the last crash's exit in words (None: never crashed)
    last_crash: float | None
    backoff_until: float | None    # a restart is pending until then
    waiting_for: tuple[str, ...]   # a pending start waits for these to run
    crash_looping: bool            # LOOP_CRASHES crashes within LOOP_WINDOW
    error: str | None              # why the last restart failed
    backoff: float = 0.0           # the delay the last crash got (the streak's backoff now)

    @property
    def summary(self) -> str:
        """One line: ``web1: stopped; waiting for db1``, ``db1: running; 2 crashes in a row
        (last: killed by SIGKILL), backoff 2s``."""
        parts = []
        if self.crash_looping:
            parts.append(f"crash-looping ({self.restarts} crashes in a row)")
        elif self.restarts and self.policy != "no":
            parts.append(f"{self.restarts} crash{'es' if self.restarts > 1 else ''} in a row "
                         f"(last: {self.last_exit}), backoff {self.backoff:g}s")
        if self.waiting_for:
            parts.append("waiting for " + ", ".join(self.waiting_for))
        if self.backoff_until is not None:
            at = time.strftime("%H:%M:%S", time.localtime(self.backoff_until))
            parts.append(f"restart at {at}")
        if self.error:
            parts.append(f"last restart failed: {self.error}")
        return f"{self.name}: " + "; ".join([self.state.lower(), *parts])


def supervision_status(host: Host, now: float | None = None) -> list[Supervision]:
    """Every container's restart policy, crash streak, pending restart and what it waits
    for, by name."""
    now = time.time() if now is None else now
    with host.locked():
        found, states = _survey(host)
    return sorted((_supervision(rec, cfg, states, now) for rec, cfg in found),
                  key=lambda s: s.name)


def _supervision(rec: ContainerRecord, cfg: Mapping[str, str], states: Mapping[str, str],
                 now: float) -> Supervision:
    v = rec.volatile
    state = states[rec.name]
    policy = mrestart.Policy.from_config(cfg)
    pending = state == STOPPED and (bool(v.get(mrestart.PENDING_BOOT)) or (
        v.get(mrestart.NEXT) is not None and policy.mode != "no"))
    nxt = v.get(mrestart.NEXT)
    last = v.get(mrestart.LAST_EXIT)
    return Supervision(
        name=rec.name, state=state, policy=policy.mode, restarts=int(v.get(mrestart.COUNT) or 0),
        last_exit=None if last is None else mrestart.describe_exit(
            None if last == "unknown" else int(last)),
        last_crash=v.get(mrestart.LAST_CRASH),
        backoff_until=float(nxt) if pending and nxt is not None and float(nxt) > now else None,
        waiting_for=waiting_for(cfg, states) if pending else (),
        crash_looping=mrestart.crash_looping(list(v.get(mrestart.RECENT) or ()), now),
        error=v.get(mrestart.ERROR),
        backoff=mrestart.backoff_for(int(v.get(mrestart.COUNT) or 0), policy.backoff_max)
        if v.get(mrestart.COUNT) else 0.0)
