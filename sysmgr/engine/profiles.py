"""Profiles: create, replace and delete them.

Replacing a profile re-expands every container that uses it: each must still expand to
something valid (checked before anything changes), root disk sizes and nic records follow, and
running containers get the changed live keys at once.
"""

from __future__ import annotations

from typing import Any, Mapping

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import containers, disks, idmap, records, volumes
from sysmgr.engine.host import DEFAULT_PROFILE, Host
from sysmgr.engine.networks import NetworkEngine
from sysmgr.errors import AlreadyExists, Conflict, NotFound, ValidationError
from sysmgr.model import names as mnames
from sysmgr.state.db import ProfileRecord
from sysmgr.state.snapshots import SnapshotStore


def put_profile(host: Host, rec: ProfileRecord, *, create: bool | None = None) -> None:
    """Create or replace a profile. ``create=True`` refuses an existing one, ``False`` a
    missing one. Running containers using it get live keys applied now."""
    issues = records.name_issues("profile", rec.name, mnames.object_name_problem)
    issues += records.config_issues(rec.config, rec.devices)
    issues += containers.device_ref_issues(host, rec.devices)
    if issues:
        raise ValidationError(issues)
    with host.locked():
        st = host.store
        exists = st.has_profile(rec.name)
        if create is True and exists:
            raise AlreadyExists(f"profile {rec.name!r} already exists")
        if create is False and not exists:
            raise NotFound(f"profile {rec.name!r} not found")
        users = st.containers_using_profile(rec.name)
        before = {n: records.expanded(host, st.container(n)) for n in users}
        # check every user still expands to something valid before changing anything
        after = {}
        for n in users:
            cfg, devs = records.expanded(host, st.container(n), override={rec.name: rec})
            problems = records.expansion_issues(cfg, devs, who=n)
            problems += disks.issues(host, devs, privileged=idmap.is_privileged(cfg), who=n)
            if problems:
                raise ValidationError(problems)
            if records.status(host, st.container(n)).state != STOPPED:  # mounted at once
                disks.check_live(host, n, before[n][1], devs, not idmap.is_privileged(cfg))
            after[n] = devs
        networks = NetworkEngine(host)
        networks.check_addresses(after)  # e.g. a static address now used twice
        volumes.resize(host, volumes.size_changes(host, {n: (before[n][1], after[n]) for n in users}))
        with st.transaction():
            st.put_profile(rec)
        networks.sync()
        for n in users:
            containers.apply_live(host, n, before[n][0], before[n][1])


def delete_profile(host: Host, name: str) -> None:
    """Delete an unused profile (never the default one)."""
    with host.locked():
        host.store.profile(name)
        if name == DEFAULT_PROFILE:
            raise Conflict("the default profile cannot be deleted")
        users = host.store.containers_using_profile(name)
        if users:
            raise Conflict(f"profile {name!r} is used by: {', '.join(users)}")
        with host.store.transaction():
            host.store.delete_profile(name)


def rename_profile(host: Host, old: str, new: str) -> None:
    """Rename a profile (never the default one); the containers and snapshots that name it
    follow, so nothing's expansion changes."""
    issues = records.name_issues("profile", new, mnames.object_name_problem)
    if issues:
        raise ValidationError(issues)
    with host.locked():
        st = host.store
        rec = st.profile(old)
        if old == DEFAULT_PROFILE:
            raise Conflict("the default profile cannot be renamed")
        if st.has_profile(new):
            raise AlreadyExists(f"profile {new!r} already exists")
        with st.transaction():
            st.put_profile(ProfileRecord(new, rec.description, rec.config, rec.devices))
            for name in st.containers_using_profile(old):
                c = st.container(name)
                c.profiles = [new if p == old else p for p in c.profiles]
                st.update_container(c)
            SnapshotStore(st).rename_profile(old, new)
            st.delete_profile(old)


def put(host: Host, name: str, *, description: str, config: Mapping[str, Any],
        devices: Mapping[str, Mapping[str, Any]], create: bool | None) -> None:
    """:func:`put_profile` from plain values (numbers and booleans stored as LXD's strings)."""
    cfg, devs = records.stringify(config, devices)
    put_profile(host, ProfileRecord(name, description, cfg, devs), create=create)
