"""``init``: make a host root usable, and bring it back after a reboot.

Creates the root, its default pool and profile (and, when asked, the default network with an
``eth0`` nic in the default profile); on an existing root it mounts the pools, resolves what a
killed sysmgr left half-done, repairs recorded networks and starts the containers marked
``boot.autostart``. Idempotent: every run says what it did.
"""

from __future__ import annotations

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import idmap, journal, lifecycle, pools, profiles, records, volumes
from sysmgr.engine.host import DEFAULT_POOL, DEFAULT_PROFILE, Host
from sysmgr.engine.networks import NetworkEngine
from sysmgr.errors import ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
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
        done += networks.repair_all()
        if not host.store.has_profile(DEFAULT_PROFILE):
            done += _default_profile(host, networks, network)
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


def autostart(host: Host) -> list[str]:
    """Start every stopped container marked ``boot.autostart``."""
    done = []
    for rec in host.store.containers():
        cfg, _ = records.expanded(host, rec)
        if mkeys.parse_bool(cfg.get("boot.autostart", "false")) and \
                records.status(host, rec).state == STOPPED:
            lifecycle.start(host, rec.name)
            done.append(f"started {rec.name} (boot.autostart)")
    return done
