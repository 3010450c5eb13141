"""Storage pools: create and delete them, and put image volumes on them.

A pool is created on the host first and recorded last (undone if recording fails); a pool is
deleted only when no container and no profile uses it, with its image volumes.
"""

from __future__ import annotations

import time
from typing import Mapping

from sysmgr._util import proc
from sysmgr._util.sizes import parse_size
from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import AlreadyExists, Conflict, Issue, NotFound, ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state import volumes as svol
from sysmgr.state.db import ImageRecord, PoolRecord


def create_pool(host: Host, name: str, driver: str, config: Mapping[str, str],
                description: str = "") -> PoolRecord:
    """Create a pool on the host and record it; nothing is left behind on failure."""
    issues = records.name_issues("storage pool", name, mnames.object_name_problem)
    issues += [Issue(r, path=f"config.{k}") for k, r in mkeys.validate_pool_config(driver, config)]
    if issues:
        raise ValidationError(issues)
    with host.locked():
        if host.store.has_pool(name):
            raise AlreadyExists(f"storage pool {name!r} already exists")
        rec = PoolRecord(name, driver, dict(config), description, time.time())
        drv = host.make_pool_driver(rec)
        with Reverter() as r:
            drv.create()
            r.add(drv.delete, f"remove pool {name}")
            with host.store.transaction():
                host.store.add_pool(rec)
            r.success()
        host.remember_pool_driver(name, drv)
        return rec


def update_pool(host: Host, name: str, *, config: Mapping[str, str] | None = None,
                description: str | None = None) -> PoolRecord:
    """Change a pool's description and config (``lxc storage set/edit``): ``user.*`` keys,
    and the ``size`` of a loop pool sysmgr manages, grown while in use; the other keys say
    where the pool is and cannot change."""
    with host.locked():
        st = host.store
        old = st.pool(name)
        cfg = dict(old.config) if config is None else {str(k): str(v) for k, v in config.items()}
        before = mkeys.normalize_pool_config(old.driver, old.config)
        after = mkeys.normalize_pool_config(old.driver, cfg)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        issues = [Issue(f"{k} of an existing storage pool cannot change", path=f"config.{k}")
                  for k in changed if not k.startswith("user.") and k != "size"]
        if "size" in changed and not cfg.get("size"):
            issues.append(Issue("a pool's size cannot be unset", path="config.size"))
        issues += [Issue(r, path=k) for k, r in mkeys.validate_pool_config(old.driver, cfg)]
        if issues:
            raise ValidationError(issues)
        if "size" in changed:
            host.pool_driver(name).resize(parse_size(cfg["size"]))
        new = PoolRecord(name, old.driver, cfg,
                         old.description if description is None else description, old.created)
        with st.transaction():
            st.update_pool(new)
        host.remember_pool_driver(name, None)  # the next driver reads the new config
        return new


def delete_pool(host: Host, name: str) -> None:
    """Delete an unused pool and its image volumes."""
    with host.locked():
        st = host.store
        st.pool(name)
        users = [c.name for c in st.containers() if c.pool == name]
        if users:
            raise Conflict(f"storage pool {name!r} is in use by: {', '.join(users)}")
        profiles = [p.name for p in st.profiles()
                    if any(d.get("pool") == name for d in p.devices.values())]
        if profiles:
            raise Conflict(f"storage pool {name!r} is used by profiles: {', '.join(profiles)}")
        vols = [v.name for v in svol.all_volumes(st, name)]
        if vols:
            raise Conflict(f"storage pool {name!r} holds storage volumes: {', '.join(vols)}",
                           hint=f"delete them first: sysmgr storage volume delete {name} VOLUME")
        drv = host.pool_driver(name)
        for fp in [i.fingerprint for i in st.images() if name in st.image_pools(i.fingerprint)]:
            drv.delete_image(fp)
        with st.transaction():
            for fp in [i.fingerprint for i in st.images()]:
                st.delete_image_volume(name, fp)
            st.delete_pool(name)
        drv.delete()
        host.remember_pool_driver(name, None)


def ensure_image_in_pool(host: Host, img: ImageRecord, pool: str) -> None:
    """Make sure the pool has a volume of the image (copy it from another pool if not)."""
    drv = host.pool_driver(pool)
    if drv.has_image(img.fingerprint):
        return
    sources = [p for p in host.store.image_pools(img.fingerprint) if p != pool
               and host.pool_driver(p).has_image(img.fingerprint)]
    if not sources:
        raise NotFound(f"image {img.fingerprint[:12]} has no data on any pool",
                       hint="delete it and build or import it again")
    src = host.pool_driver(sources[0]).image_path(img.fingerprint)
    with drv.create_image(img.fingerprint) as dest:
        proc.run(["cp", "-a", "--reflink=auto", "-T", src, dest])
    with host.store.transaction():
        host.store.add_image_volume(pool, img.fingerprint)
