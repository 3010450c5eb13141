"""``init``: make a host root usable, and bring it back after a reboot.

Creates the root, its default pool and profile (and, when asked, the default network with an
``eth0`` nic in the default profile); on an existing root it mounts the pools, resolves what a
killed sysmgr left half-done, repairs recorded networks and starts the containers that are to
run after a boot (``boot.autostart``, in boot order: :func:`autostart`). Idempotent: every
run says what it did.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

from sysmgr._util import hostinfo
from sysmgr.drivers.runtime.base import RUNNING, STOPPED
from sysmgr.engine import idmap, journal, lifecycle, pools, profiles, records, volumes
from sysmgr.engine.host import DEFAULT_POOL, DEFAULT_PROFILE, Host
from sysmgr.engine.migration import markers
from sysmgr.engine.networks import NetworkEngine
from sysmgr.engine.nics import NicEngine
from sysmgr.errors import SysmgrError, ValidationError
from sysmgr.model import bootorder
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.model import restart as mrestart
from sysmgr.state.db import ProfileRecord


def init(host: Host, *, storage_driver: str | None = None, runtime: str | None = None,
         network: str | None = None, network_driver: str | None = None) -> list[str]:
    """Create the root, the default pool and profile; start autostart containers.

    ``network``: also create that managed network with the default profile and give the
    profile an ``eth0`` nic on it. Every init re-ensures recorded networks (after a reboot
    their bridges and dnsmasq are gone)."""
    if network:
        issues = records.name_issues("network", network, mnames.object_name_problem)
        if issues:
            raise ValidationError(issues)
    engine = None
    if runtime in mkeys.RUNTIME_ENGINES:  # a container engine: the default profile's key
        engine, runtime = runtime, None
        why = host.engine(engine).unavailable_reason()
        if why is not None:
            raise ValidationError(f"--runtime {engine}: {why}", hint=f"install {engine}")
    done: list[str] = []
    fresh = not host.layout.exists()
    host.layout.ensure()
    if fresh:
        done.append(f"created host root {host.layout.root} (id {host.layout.root_id})")
    with host.locked():
        _record_drivers(host, runtime, network_driver)
        done += idmap.ensure_subids()
        done += _pools(host, storage_driver)
        networks = NetworkEngine(host)
        done += NicEngine(host).repair_all()
        if host.runtime.info.resource_views:
            done += _lxcfs(host)
        if not host.store.has_profile(DEFAULT_PROFILE):
            done += _default_profile(host, networks, network)
        if engine is not None:
            done += _default_engine(host, engine)
        done += autostart(host)
    return done


def _record_drivers(host: Host, runtime: str | None, network_driver: str | None) -> None:
    st = host.store
    with st.transaction():
        if runtime:
            st.set_meta("runtime", runtime)
        elif st.get_meta("runtime") is None:
            st.set_meta("runtime", "native")
        if network_driver:
            st.set_meta("network.driver", network_driver)
        elif st.get_meta("network.driver") is None:
            st.set_meta("network.driver", host.network_driver_name())


def _pools(host: Host, storage_driver: str | None) -> list[str]:
    """The default pool on a fresh root; else every pool mounted and intents resolved."""
    st = host.store
    if not st.pools():
        driver, why = (storage_driver, "as asked") if storage_driver else volumes.default_driver()
        pools.create_pool(host, DEFAULT_POOL, driver, {})
        return [f"created storage pool {DEFAULT_POOL!r} (driver {driver}: {why})"]
    for rec in st.pools():
        host.pool_driver(rec.name).mount()
    return journal.recover(host)  # what a killed sysmgr left half-done


#: limits every container gets from the default profile ``init`` creates, so one container
#: cannot take the host down: a fork bomb stops at ``limits.processes`` (pids.max, threads
#: count) and a runaway allocation at ``limits.memory``. 2000 processes is far above what a
#: full systemd container runs (a Debian boot needs under 50) and fills in well under a
#: second when something forks without end; with several containers it still leaves most of
#: a default ``pid_max`` (32768) to the host. Memory is a share of the host, not a size, so
#: the default fits a 1 GiB VM and a 256 GiB server alike; half keeps room for the host and
#: its other containers. Both are ordinary profile keys: override them in a profile or on a
#: container, or edit the default profile. Existing default profiles are never rewritten.
DEFAULT_LIMITS = {"limits.processes": "2000", "limits.memory": "50%"}


def _default_profile(host: Host, networks: NetworkEngine, network: str | None) -> list[str]:
    st = host.store
    done: list[str] = []
    pool = DEFAULT_POOL if st.has_pool(DEFAULT_POOL) else st.pools()[0].name
    devices = {"root": {"type": "disk", "path": "/", "pool": pool}}
    if network:
        done += networks.init_default(network)
        devices["eth0"] = {"type": "nic", "network": network, "name": "eth0"}
    profiles.put_profile(host, ProfileRecord(
        DEFAULT_PROFILE, "Default sysmgr profile", dict(DEFAULT_LIMITS), devices))
    done.append(f"created profile {DEFAULT_PROFILE!r}")
    return done


def _default_engine(host: Host, engine: str) -> list[str]:
    """``runtime.engine`` in the default profile (``init --runtime``): containers start under
    ``engine`` unless their own config or a later profile says otherwise."""
    prof = host.store.profile(DEFAULT_PROFILE)
    if prof.config.get(records.ENGINE_KEY) == engine:
        return []
    profiles.put_profile(host, dataclasses.replace(
        prof, config={**prof.config, records.ENGINE_KEY: engine}))
    return [f"set {records.ENGINE_KEY}={engine} in profile {DEFAULT_PROFILE!r}"]


def autostart(host: Host, *, sleep: Callable[[float], object] = time.sleep) -> list[str]:
    """Start the containers LXD's rules want running after a boot, in boot order.

    ``boot.autostart`` true, or unset and the container ran when the host went down; highest
    ``boot.autostart.priority`` first, ``boot.autostart.delay`` seconds after each start, and
    after the containers its ``boot.depends`` names (:mod:`sysmgr.model.bootorder`). One that
    waits for a dependency that does not run is left pending (``volatile.start.pending``:
    :func:`sysmgr.engine.supervise.restart_due` starts it once they run); one whose start
    fails is reported and the others go on. A container that went down with the host and is
    not to start (``boot.autostart: false``) is marked STOPPED and cleaned up.

    ``sleep``: how the delays are waited (tests pass a recorder)."""
    done: list[str] = []
    boot = hostinfo.boot_id()
    running: set[str] = set()
    wanted: list[bootorder.BootEntry] = []
    with host.locked():
        for rec in host.store.containers():
            cfg, devs = records.expanded(host, rec)
            if records.status(host, rec).state != STOPPED:
                running.add(rec.name)
            elif markers.marker(rec) is not None:
                continue  # a move cut short: settling it decides whether it starts
            elif bootorder.wants_boot_start(cfg.get("boot.autostart"),
                                            rec.volatile.get("last_state")):
                wanted.append(bootorder.BootEntry.from_config(rec.name, cfg))
            elif _down_with_host(rec.volatile, boot):
                lifecycle.settle(host, records.Expanded(rec, cfg, devs))
        plan = bootorder.boot_order(wanted)
        done += [f"dependency cycle {bootorder.describe_cycle(c)} (boot.depends): "
                 "those containers start by priority" for c in plan.cycles]
        for step in plan.steps:
            done += _boot_start(host, step, running, sleep)
    return done


def _down_with_host(volatile: Mapping[str, Any], boot: str) -> bool:
    """Whether the record is of an init that ran when the host went down (a crash during
    this boot is the supervisor's to record: :func:`sysmgr.engine.supervise.crashed`)."""
    return volatile.get("last_state") == RUNNING and volatile.get("init.boot_id") != boot


def _boot_start(host: Host, step: bootorder.Step, running: set[str],
                sleep: Callable[[float], object]) -> list[str]:
    """One step of the boot order: start the container unless a dependency does not run."""
    waiting = [d for d in step.requires if d not in running]
    if waiting:
        _set_pending(host, step.name)
        return [f"{step.name}: waiting for {', '.join(waiting)} (not running; boot.depends)"]
    try:
        lifecycle.start(host, step.name)
    except SysmgrError as e:
        return [f"could not start {step.name} (boot.autostart): {e.message}"]
    running.add(step.name)
    if step.delay:
        sleep(step.delay)
    return [f"started {step.name} (boot.autostart)"]


def _set_pending(host: Host, name: str) -> None:
    with host.store.transaction():
        vol = dict(host.store.container(name).volatile)
        vol[mrestart.PENDING_BOOT] = "boot"
        host.store.set_volatile(name, vol)


def _lxcfs(host: Host) -> list[str]:
    """lxcfs running (when installed), and the views of running containers bound again if it
    had died; a failure is said, never fatal (the views are then the host's)."""
    from sysmgr.engine import lxcfs  # (cold start: only init supervises it)

    try:
        return lxcfs.repair(host)
    except SysmgrError as e:
        return [f"warning: lxcfs: {e.message}"]


def remove_root(host: Host) -> str:
    """``uninit``'s last step: remove the host root's directory once it holds nothing but
    files (its containers, networks and pools already deleted: the caller's order). Refused
    while a container is recorded or anything is mounted below the root (removing the tree
    would reach into the mount). Returns what was done."""
    import shutil

    from sysmgr.drivers.storage.base import mounts_under
    from sysmgr.errors import Conflict

    root = host.layout.root
    if not host.layout.exists():
        return f"Root {root}: nothing to remove"
    left = [rec.name for rec in host.store.containers()]
    if left:
        raise Conflict(f"cannot remove root {root}: containers remain ({', '.join(left)})",
                       hint="delete them first (sysmgr uninit does, in order)")
    mounted = mounts_under(root)
    if mounted:
        raise Conflict(f"cannot remove root {root}: {mounted[0]} is still mounted",
                       hint=f"unmount it (umount {mounted[0]}), then run uninit again")
    host.close()  # the state database goes with the tree
    shutil.rmtree(root)
    return f"Root {root} removed"
