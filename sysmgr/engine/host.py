"""``Host``: imperative operations on one host root.

The Host owns the state store, the lock and the drivers of one root. Each public method is one
user-visible operation (create, start, stop, set config, ...). It validates first, so bad input
changes nothing; multi-step changes register their undo in a :class:`Reverter`, so a failure
half-way leaves no half-created object. The API layer wraps these methods; the declarative
apply executes plan actions through them too.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from sysmgr.drivers import registry
from sysmgr.drivers.runtime.base import (
    FROZEN, RUNNING, STOPPED, InitRecord, ProcessSpec, Runtime, RuntimeSpec, Status,
    Usage, signal_number)
from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    AlreadyExists, Conflict, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.layout import Layout
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state import locks
from sysmgr.state.db import ContainerRecord, ImageRecord, PoolRecord, ProfileRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.engine.network import NetworkEngine

DEFAULT_POOL = "default"
DEFAULT_PROFILE = "default"
DEFAULT_STOP_TIMEOUT = 30.0


@dataclass
class ContainerView:
    """A container as the API shows it: the record, its expansion and its kernel status."""

    record: ContainerRecord
    expanded_config: dict[str, str]
    expanded_devices: dict[str, dict[str, str]]
    status: Status
    image: ImageRecord | None = None
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    disk_bytes: int | None = None    # root volume usage, with ``usage=True``

    @property
    def name(self) -> str:
        return self.record.name


class Host:
    """One host root: state, lock and drivers."""

    def __init__(self, layout: Layout, *, runtime: str | None = None) -> None:
        self.layout = layout
        self._runtime_name = runtime
        self._store: Store | None = None
        self._runtime: Runtime | None = None
        self._pools: dict[str, StoragePool] = {}
        self._lock_depth = 0
        self._lock_cm: contextlib.AbstractContextManager[None] | None = None
        self._networks: Any = None

    # -- plumbing ------------------------------------------------------------------------
    @property
    def networks(self) -> "NetworkEngine":
        """Managed networks and container nics (:mod:`sysmgr.engine.network`)."""
        if self._networks is None:
            from sysmgr.engine.network import NetworkEngine

            self._networks = NetworkEngine(self)
        return self._networks

    @property
    def store(self) -> Store:
        if self._store is None:
            if not self.layout.exists():
                raise SysmgrError(
                    f"host root {self.layout.root} is not initialised",
                    hint="run 'sysmgr init --auto' (or pass --root / set SYSMGR_ROOT)")
            self._store = Store(self.layout.db)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            name = self._runtime_name or self.store.get_meta("runtime", "native") or "native"
            self._runtime = registry.load("runtime", name)()
        return self._runtime

    def pool_driver(self, name: str) -> StoragePool:
        drv = self._pools.get(name)
        if drv is None:
            rec = self.store.pool(name)
            drv = self._make_pool(rec)
            self._pools[name] = drv
        return drv

    def _make_pool(self, rec: PoolRecord) -> StoragePool:
        cls = registry.load("storage", rec.driver)
        return cls(rec.name, rec.config, os.path.join(self.layout.pools, rec.name))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The root's change lock; re-entrant within this Host."""
        if self._lock_depth == 0:
            self._lock_cm = locks.exclusive(self.layout.lock)
            self._lock_cm.__enter__()
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_cm is not None:
                self._lock_cm.__exit__(None, None, None)
                self._lock_cm = None

    # -- init ----------------------------------------------------------------------------
    def init(self, *, storage_driver: str | None = None, runtime: str | None = None,
             network: str | None = None, network_driver: str | None = None) -> list[str]:
        """Create the root, the default pool and profile; start autostart containers.

        ``network``: also create that managed network with the default profile and give the
        profile an ``eth0`` nic on it. Every init re-ensures recorded networks (after a reboot
        their bridges and dnsmasq are gone)."""
        if network:
            issues = _name_issues("network", network, mnames.object_name_problem)
            if issues:
                raise ValidationError(issues)
        done: list[str] = []
        fresh = not self.layout.exists()
        self.layout.ensure()
        if fresh:
            done.append(f"created host root {self.layout.root} (id {self.layout.root_id})")
        with self.locked():
            st = self.store
            with st.transaction():
                if runtime:
                    st.set_meta("runtime", runtime)
                elif st.get_meta("runtime") is None:
                    st.set_meta("runtime", "native")
                if network_driver:
                    st.set_meta("network.driver", network_driver)
                elif st.get_meta("network.driver") is None:
                    st.set_meta("network.driver", self.networks.driver_name())
            if not st.pools():
                from sysmgr.engine import volumes

                driver, why = (storage_driver, "as asked") if storage_driver else volumes.default_driver()
                self.create_pool(DEFAULT_POOL, driver, {})
                done.append(f"created storage pool {DEFAULT_POOL!r} (driver {driver}: {why})")
            else:
                for rec in st.pools():
                    self.pool_driver(rec.name).mount()
                from sysmgr.engine import journal

                done += journal.recover(self)  # what a killed sysmgr left half-done
            done += self.networks.repair_all()
            if not st.has_profile(DEFAULT_PROFILE):
                pool = DEFAULT_POOL if st.has_pool(DEFAULT_POOL) else st.pools()[0].name
                devices = {"root": {"type": "disk", "path": "/", "pool": pool}}
                if network:
                    done += self.networks.init_default(network)
                    devices["eth0"] = {"type": "nic", "network": network, "name": "eth0"}
                self.put_profile(ProfileRecord(
                    DEFAULT_PROFILE, "Default sysmgr profile", {}, devices))
                done.append(f"created profile {DEFAULT_PROFILE!r}")
            for rec in st.containers():
                cfg, _ = self.expanded(rec)
                if mkeys.parse_bool(cfg.get("boot.autostart", "false")) and \
                        self.status(rec.name).state == STOPPED:
                    self.start(rec.name)
                    done.append(f"started {rec.name} (boot.autostart)")
        return done

    # -- storage pools -------------------------------------------------------------------
    def create_pool(self, name: str, driver: str, config: Mapping[str, str],
                    description: str = "") -> PoolRecord:
        issues = _name_issues("storage pool", name, mnames.object_name_problem)
        issues += [Issue(r, path=f"config.{k}") for k, r in mkeys.validate_pool_config(driver, config)]
        if issues:
            raise ValidationError(issues)
        with self.locked():
            if self.store.has_pool(name):
                raise AlreadyExists(f"storage pool {name!r} already exists")
            rec = PoolRecord(name, driver, dict(config), description, time.time())
            drv = self._make_pool(rec)
            with Reverter() as r:
                drv.create()
                r.add(drv.delete, f"remove pool {name}")
                with self.store.transaction():
                    self.store.add_pool(rec)
                r.success()
            self._pools[name] = drv
            return rec

    def delete_pool(self, name: str) -> None:
        with self.locked():
            self.store.pool(name)
            users = [c.name for c in self.store.containers() if c.pool == name]
            if users:
                raise Conflict(f"storage pool {name!r} is in use by: {', '.join(users)}")
            profiles = [p.name for p in self.store.profiles()
                        if any(d.get("pool") == name for d in p.devices.values())]
            if profiles:
                raise Conflict(f"storage pool {name!r} is used by profiles: {', '.join(profiles)}")
            drv = self.pool_driver(name)
            for fp in [i.fingerprint for i in self.store.images() if name in self.store.image_pools(i.fingerprint)]:
                drv.delete_image(fp)
            with self.store.transaction():
                for fp in [i.fingerprint for i in self.store.images()]:
                    self.store.delete_image_volume(name, fp)
                self.store.delete_pool(name)
            drv.delete()
            self._pools.pop(name, None)

    # -- profiles ------------------------------------------------------------------------
    def put_profile(self, rec: ProfileRecord, *, create: bool | None = None) -> None:
        """Create or replace a profile. ``create=True`` refuses an existing one, ``False`` a
        missing one. Running containers using it get live keys applied now."""
        issues = _name_issues("profile", rec.name, mnames.object_name_problem)
        issues += _config_issues(rec.config, rec.devices)
        issues += self._device_ref_issues(rec.devices)
        if issues:
            raise ValidationError(issues)
        with self.locked():
            exists = self.store.has_profile(rec.name)
            if create is True and exists:
                raise AlreadyExists(f"profile {rec.name!r} already exists")
            if create is False and not exists:
                raise NotFound(f"profile {rec.name!r} not found")
            users = self.store.containers_using_profile(rec.name)
            before = {n: self.expanded(self.store.container(n)) for n in users}
            # check every user still expands to something valid before changing anything
            after = {}
            for n in users:
                c = self.store.container(n)
                cfg, devs = self.expanded(c, override={rec.name: rec})
                problems = mexpand.validate_expanded(cfg, devs)
                if problems:
                    raise ValidationError([Issue(f"container {n}: {reason}", path=p) for p, reason in problems])
                after[n] = devs
            self.networks.check_addresses(after)  # e.g. a static address now used twice
            from sysmgr.engine import volumes

            volumes.resize(self, volumes.size_changes(self, {n: (before[n][1], after[n]) for n in users}))
            with self.store.transaction():
                self.store.put_profile(rec)
            self.networks.sync()
            for n in users:
                self._apply_live(n, before[n][0])

    def delete_profile(self, name: str) -> None:
        with self.locked():
            self.store.profile(name)
            if name == DEFAULT_PROFILE:
                raise Conflict("the default profile cannot be deleted")
            users = self.store.containers_using_profile(name)
            if users:
                raise Conflict(f"profile {name!r} is used by: {', '.join(users)}")
            with self.store.transaction():
                self.store.delete_profile(name)

    # -- images --------------------------------------------------------------------------
    def image(self, ref: str) -> ImageRecord:
        return self.store.image(ref)

    def ensure_image_in_pool(self, img: ImageRecord, pool: str) -> None:
        """Make sure the pool has a volume of the image (copy it from another pool if not)."""
        drv = self.pool_driver(pool)
        if drv.has_image(img.fingerprint):
            return
        sources = [p for p in self.store.image_pools(img.fingerprint) if p != pool
                   and self.pool_driver(p).has_image(img.fingerprint)]
        if not sources:
            raise NotFound(f"image {img.fingerprint[:12]} has no data on any pool",
                           hint="delete it and build or import it again")
        src = self.pool_driver(sources[0]).image_path(img.fingerprint)
        from sysmgr._util import proc

        with drv.create_image(img.fingerprint) as dest:
            proc.run(["cp", "-a", "--reflink=auto", "-T", src, dest])
        with self.store.transaction():
            self.store.add_image_volume(pool, img.fingerprint)

    # -- containers: records and expansion ----------------------------------------------
    def expanded(self, rec: ContainerRecord, *, override: Mapping[str, ProfileRecord] | None = None
                 ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        profs = []
        for p in rec.profiles:
            prof = (override or {}).get(p) or self.store.profile(p)
            profs.append((prof.config, prof.devices))
        return mexpand.expand(profs, rec.config, rec.devices)

    def _device_ref_issues(self, devices: Mapping[str, Mapping[str, str]], where: str = "devices") -> list[Issue]:
        issues = []
        for dname, dev in devices.items():
            pool = dev.get("pool")
            if dev.get("type") == "disk" and pool and not self.store.has_pool(pool):
                issues.append(Issue(f"storage pool {pool!r} not found", path=f"{where}.{dname}.pool"))
        from sysmgr.engine.network import nic_problems

        issues += [Issue(r, path=p) for p, r in nic_problems(devices, self.networks.facts(), where=where)]
        return issues

    def _root_pool(self, devices: Mapping[str, Mapping[str, str]]) -> str:
        for dev in devices.values():
            if dev.get("type") == "disk" and dev.get("path") == "/":
                return dev["pool"]
        raise ValidationError("no root disk device", hint="add devices.root {type: disk, path: /, pool: default}")

    def container(self, name: str) -> ContainerRecord:
        return self.store.container(name)

    def view(self, name: str, *, usage: bool = False) -> ContainerView:
        rec = self.store.container(name)
        return self._view(rec, usage=usage)

    def _view(self, rec: ContainerRecord, *, usage: bool = False,
              cache: dict[str, Any] | None = None) -> ContainerView:
        cfg, devs = self.expanded(rec)
        status = self.runtime.status(_init_record(rec))
        img = None
        try:
            img = self.store.image(rec.image)
        except NotFound:
            pass
        use = None
        disk = None
        if usage:
            if status.state != STOPPED:
                use = self.runtime.usage(self._cgroup(rec.name))
            disk = self._disk_usage(rec)
        # nics and their IPv4 addresses (``list``'s IPV4 column, ``info``'s host interfaces)
        extra: dict[str, Any] = {}
        if _has_nics(devs):  # most commands on nic-less containers never load networking
            extra = self.networks.view(rec, devs, status.pid if status.state != STOPPED else None,
                                       cache)
        return ContainerView(rec, cfg, devs, status, img, use, extra, disk)

    def _disk_usage(self, rec: ContainerRecord) -> int | None:
        """Bytes used by the root volume (qgroup counters on btrfs, a walk elsewhere); None
        when the pool cannot say (usage is informational: it never fails a listing)."""
        try:
            return self.pool_driver(rec.pool).container_usage(rec.name)
        except SysmgrError:
            return None

    def views(self, *, usage: bool = False) -> list[ContainerView]:
        cache: dict[str, Any] = {}  # one read of each network's leases for the whole list
        return [self._view(r, usage=usage, cache=cache) for r in self.store.containers()]

    def status(self, name: str) -> Status:
        return self.runtime.status(_init_record(self.store.container(name)))

    def _cgroup(self, name: str) -> str:
        return f"{self.layout.prefix}/{name}"

    # -- containers: lifecycle -----------------------------------------------------------
    def create_container(self, name: str, image: str, *, profiles: Sequence[str] | None = None,
                         config: Mapping[str, str] | None = None,
                         devices: Mapping[str, Mapping[str, str]] | None = None,
                         pool: str | None = None, description: str = "") -> ContainerRecord:
        """Create a stopped container from an image. Validates everything first."""
        profiles = list(profiles) if profiles is not None else [DEFAULT_PROFILE]
        config = {k: mkeys.value_to_str(v) for k, v in (config or {}).items()}
        devices = {k: {dk: mkeys.value_to_str(dv) for dk, dv in d.items()} for k, d in (devices or {}).items()}
        issues = _name_issues("container", name, mnames.name_problem)
        issues += _config_issues(config, devices)
        with self.locked():
            st = self.store
            if st.has_container(name):
                raise AlreadyExists(f"container {name!r} already exists")
            for i, p in enumerate(profiles):
                if not st.has_profile(p):
                    issues.append(Issue(f"profile {p!r} not found", path=f"profiles[{i}]"))
            img = None
            try:
                img = st.image(image)
            except NotFound as e:
                issues.append(Issue(e.message, path="image"))
            if pool is not None:
                if not st.has_pool(pool):
                    issues.append(Issue(f"storage pool {pool!r} not found", path="pool"))
                else:
                    # -s/--storage as in LXD: override the root disk's pool
                    root = devices.get("root") or {}
                    devices["root"] = {**{"type": "disk", "path": "/"}, **root, "pool": pool}
            issues += self._device_ref_issues(devices)
            if issues:
                raise ValidationError(issues)
            rec = ContainerRecord(name, img.fingerprint, "", profiles, config, devices, description,
                                  {}, time.time())
            cfg, devs = self.expanded(rec)
            problems = mexpand.validate_expanded(cfg, devs)
            if problems:
                raise ValidationError([Issue(r, path=p) for p, r in problems])
            rec.pool = self._root_pool(devs)
            self.networks.check_addresses({name: devs})
            from sysmgr.engine import journal, volumes

            size_problems = volumes.size_issues(self, devs)
            if size_problems:
                raise ValidationError(size_problems)
            journal.recover(self)  # an earlier, killed create of this name left its volume
            assert img is not None
            with volumes.full_is_clear(rec.pool):
                self.ensure_image_in_pool(img, rec.pool)
            drv = self.pool_driver(rec.pool)
            with journal.intent(self, "create", container=name, pool=rec.pool), \
                    volumes.full_is_clear(rec.pool), Reverter() as r:
                rootfs = drv.create_container(name, img.fingerprint)
                r.add(lambda: drv.delete_container(name), f"delete volume of {name}")
                size = mkeys.root_disk_size(devs)
                if size is not None:
                    volumes.check_size(self, name, rec.pool, size)
                    volumes.set_size(self, name, rec.pool, size)
                _write_hostname(rootfs, name)
                rdir = self.layout.container_dir(name)
                os.makedirs(rdir, exist_ok=True)
                r.add(lambda: _rmtree(rdir, ignore_errors=True), f"remove {rdir}")
                rec.volatile = {"image.os": img.metadata.get("properties", {}).get("os", "")}
                with st.transaction():
                    st.add_container(rec)

                def unrecord() -> None:
                    with st.transaction():
                        st.delete_container(name)

                r.add(unrecord, f"remove the record of {name}")
                self.networks.sync()  # MAC, host interface and address of its nics; leases
                r.success()
            return rec

    def runtime_spec(self, rec: ContainerRecord) -> RuntimeSpec:
        cfg, _ = self.expanded(rec)
        img_meta = self._image_meta(rec)
        return RuntimeSpec(
            name=rec.name,
            rootfs=self.pool_driver(rec.pool).container_path(rec.name),
            runtime_dir=self.layout.container_dir(rec.name),
            cgroup=self._cgroup(rec.name),
            init=(img_meta.get("init") or "/sbin/init",),
            env=mkeys.env_from_config(cfg),
            limits=_limits(cfg),
            halt_signal=signal_number(img_meta.get("halt_signal") or "SIGPWR"),
            no_new_privs=bool(img_meta.get("no_new_privs", False)),
        )

    def _image_meta(self, rec: ContainerRecord) -> dict[str, Any]:
        meta = dict(rec.volatile.get("image.meta") or {})
        if not meta:
            try:
                meta = self.store.image(rec.image).metadata
            except NotFound:
                meta = {}
        return meta

    def start(self, name: str) -> Status:
        with self.locked():
            rec = self.store.container(name)
            status = self.runtime.status(_init_record(rec))
            if status.state != STOPPED:
                raise Conflict(f"container {name!r} is already running")
            self.runtime.cleanup(self._cgroup(name))  # a previous init may have died by itself
            spec = self.runtime_spec(rec)
            os.makedirs(spec.runtime_dir, exist_ok=True)
            nics = self.networks.prepare_start(name, spec.rootfs)
            rec = self.store.container(name)  # prepare_start may have recorded nic state
            # the nics are plugged in and configured between "namespaces exist" and "init runs"
            init = self.runtime.start(spec, before_go=self.networks.attacher(nics))
            vol = dict(rec.volatile)
            vol.update({"init.pid": init.pid, "init.starttime": init.starttime, "init.cgroup": init.cgroup,
                        "last_state": RUNNING})
            try:
                with self.store.transaction():
                    self.store.set_volatile(name, vol)
            except BaseException:
                self.runtime.stop(init, halt_signal=spec.halt_signal, timeout=0, force=True)
                raise
            return Status(RUNNING, init.pid)

    def stop(self, name: str, *, timeout: float | None = None, force: bool = False) -> bool:
        """Stop a container; True when its init shut down by itself on the halt signal,
        False when it had to be killed (``force``, or the timeout ran out)."""
        graceful = True
        with self.locked():
            rec = self.store.container(name)
            init = _init_record(rec)
            status = self.runtime.status(init)
            if status.state == STOPPED:
                self.runtime.cleanup(self._cgroup(name))
                if init is None and not force:
                    raise Conflict(f"container {name!r} is not running")
            else:
                assert init is not None
                meta = self._image_meta(rec)
                cfg, _ = self.expanded(rec)
                if timeout is None:
                    timeout = float(cfg.get("boot.host_shutdown_timeout") or DEFAULT_STOP_TIMEOUT)
                graceful = self.runtime.stop(
                    init, halt_signal=signal_number(meta.get("halt_signal") or "SIGPWR"),
                    timeout=timeout, force=force)
            self._forget_init(rec)
            if _has_nics(self.expanded(rec)[1]):
                self.networks.detach(name)
        return graceful

    def _forget_init(self, rec: ContainerRecord) -> None:
        vol = {k: v for k, v in rec.volatile.items() if not k.startswith("init.")}
        vol["last_state"] = STOPPED
        with self.store.transaction():
            self.store.set_volatile(rec.name, vol)

    def restart(self, name: str, *, timeout: float | None = None, force: bool = False) -> None:
        with self.locked():
            if self.status(name).state != STOPPED:
                self.stop(name, timeout=timeout, force=force)
            self.start(name)

    def freeze(self, name: str) -> None:
        self._set_frozen(name, True)

    def unfreeze(self, name: str) -> None:
        self._set_frozen(name, False)

    def _set_frozen(self, name: str, frozen: bool) -> None:
        """Freeze or thaw a running container; already in that state is success."""
        with self.locked():
            rec = self.store.container(name)
            st = self.runtime.status(_init_record(rec))
            if st.state == STOPPED:
                raise Conflict(f"container {name!r} is not running")
            if frozen and st.state == RUNNING:
                self.runtime.freeze(_init_record(rec))  # type: ignore[arg-type]
            elif not frozen and st.state == FROZEN:
                self.runtime.unfreeze(_init_record(rec))  # type: ignore[arg-type]

    def delete_container(self, name: str, *, force: bool = False) -> None:
        with self.locked():
            rec = self.store.container(name)
            cfg, _ = self.expanded(rec)
            if mkeys.parse_bool(cfg.get("security.protection.delete", "false")):
                raise Conflict(f"container {name!r} is protected (security.protection.delete=true)",
                               hint=f"sysmgr config unset {name} security.protection.delete")
            if self.runtime.status(_init_record(rec)).state != STOPPED:
                if not force:
                    raise Conflict(f"container {name!r} is running",
                                   hint="stop it first or use --force")
                self.stop(name, force=True)
            self.runtime.cleanup(self._cgroup(name))
            # the record goes last: if removing the volume fails, the container stays listed;
            # an unmounted pool (after a restart) would make the volume look already gone
            drv = self.pool_driver(rec.pool)
            if not drv.has_container(name):
                drv.mount()
            drv.delete_container(name)
            _rmtree(self.layout.container_dir(name), ignore_errors=True)
            nets = self.networks.networks_of(rec)
            with self.store.transaction():
                self.store.delete_container(name)
            self.networks.sync(touched=nets)  # its DHCP leases and DNS names go

    # -- containers: config --------------------------------------------------------------
    def update_container(self, name: str, *, config: Mapping[str, str] | None = None,
                         devices: Mapping[str, Mapping[str, str]] | None = None,
                         profiles: Sequence[str] | None = None,
                         description: str | None = None) -> list[str]:
        """Replace the given parts of a container's local definition.

        Live keys are applied at once to a running container; returns the keys whose change
        takes effect only after a restart (empty when everything applied live)."""
        with self.locked():
            rec = self.store.container(name)
            new = ContainerRecord(**{**rec.__dict__})
            if config is not None:
                new.config = {k: mkeys.value_to_str(v) for k, v in config.items()}
            if devices is not None:
                new.devices = {k: {dk: mkeys.value_to_str(dv) for dk, dv in d.items()} for k, d in devices.items()}
            if profiles is not None:
                new.profiles = list(profiles)
            if description is not None:
                new.description = description
            issues = _config_issues(new.config, new.devices) + self._device_ref_issues(new.devices)
            for i, p in enumerate(new.profiles):
                if not self.store.has_profile(p):
                    issues.append(Issue(f"profile {p!r} not found", path=f"profiles[{i}]"))
            if issues:
                raise ValidationError(issues)
            old_cfg, old_devs = self.expanded(rec)
            cfg, devs = self.expanded(new)
            problems = mexpand.validate_expanded(cfg, devs)
            if problems:
                raise ValidationError([Issue(r, path=p) for p, r in problems])
            if self._root_pool(devs) != rec.pool:
                raise ValidationError(
                    f"changing the root disk's pool of {name!r} ({rec.pool} -> {self._root_pool(devs)}) "
                    "is not supported", hint="copy or export/import the container to another pool")
            self.networks.check_addresses({name: devs})
            from sysmgr.engine import volumes

            # the root disk's size is a quota: set now (live), refused below the usage
            volumes.resize(self, volumes.size_changes(self, {name: (old_devs, devs)}))
            with self.store.transaction():
                self.store.update_container(new)
            self.networks.sync()  # nic records follow the devices (a running nic: at restart)
            pending = self._apply_live(name, old_cfg, old_devs)
            return pending

    def _apply_live(self, name: str, old_cfg: Mapping[str, str],
                    old_devs: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
        """Push changed live keys into a running container; return keys needing a restart."""
        rec = self.store.container(name)
        cfg, devs = self.expanded(rec)
        if self.runtime.status(_init_record(rec)).state == STOPPED:
            return []
        new_n, old_n = mkeys.normalize_config(cfg), mkeys.normalize_config(old_cfg)
        changed = {k for k in set(new_n) | set(old_n) if new_n.get(k) != old_n.get(k)}
        pending = sorted(k for k in changed if not mkeys.is_live(k))
        if old_devs is not None and devs != old_devs:
            pending += [f"devices.{d}" for d in sorted(set(devs) | set(old_devs))
                        if devs.get(d) != old_devs.get(d)
                        and not mkeys.device_change_is_live(old_devs.get(d), devs.get(d))]
        if any(k.startswith("limits.") for k in changed):
            self.runtime.set_limits(self._cgroup(name), _limits(cfg))
        return pending

    def set_config(self, name: str, values: Mapping[str, str], unset: Sequence[str] = ()) -> list[str]:
        rec = self.store.container(name)
        cfg = dict(rec.config)
        for k in unset:
            if k not in cfg:
                raise NotFound(f"config key {k!r} is not set on {name!r}")
            del cfg[k]
        cfg.update({k: mkeys.value_to_str(v) for k, v in values.items()})
        return self.update_container(name, config=cfg)

    # -- exec and files ------------------------------------------------------------------
    def running_init(self, name: str) -> InitRecord:
        rec = self.store.container(name)
        init = _init_record(rec)
        st = self.runtime.status(init)
        if st.state == STOPPED or init is None:
            raise Conflict(f"container {name!r} is not running", hint=f"sysmgr start {name}")
        if st.state == FROZEN:
            raise Conflict(f"container {name!r} is frozen", hint=f"sysmgr unfreeze {name}")
        return init

    def process_spec(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                     cwd: str | None = None, tty: bool = False) -> ProcessSpec:
        if not argv:
            raise ValidationError("no command given")
        rec = self.store.container(name)
        cfg, _ = self.expanded(rec)
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "USER": "root", "LANG": "C.UTF-8"}
        if tty:
            e["TERM"] = os.environ.get("TERM", "xterm")
        e.update(mkeys.env_from_config(cfg))
        e.update(env or {})
        return ProcessSpec(tuple(argv), e, cwd or e.get("HOME", "/"))

    def file_root(self, name: str) -> str:
        """Where the container's files are seen from: its live root when running (so its
        mounts are visible), else its root filesystem on the pool."""
        rec = self.store.container(name)
        init = _init_record(rec)
        if init is not None and self.runtime.status(init).state != STOPPED and init.pid > 0:
            return f"/proc/{init.pid}/root"
        return self.pool_driver(rec.pool).container_path(name)

    def console_log(self, name: str) -> str:
        self.store.container(name)
        path = self.runtime.console_log(self.layout.container_dir(name))
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


# -- helpers --------------------------------------------------------------------------------

def _has_nics(devices: Mapping[str, Mapping[str, str]]) -> bool:
    return any(d.get("type") == "nic" for d in devices.values())


def _rmtree(path: str, ignore_errors: bool = False) -> None:
    import shutil  # shutil drags in bz2/lzma; most commands never remove a tree

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _init_record(rec: ContainerRecord) -> InitRecord | None:
    v = rec.volatile
    if "init.pid" not in v:
        return None
    return InitRecord(int(v["init.pid"]), int(v["init.starttime"]), str(v["init.cgroup"]))


def _name_issues(what: str, name: str, check: Any) -> list[Issue]:
    reason = check(name)
    return [Issue(f"invalid {what} name {name!r}: {reason}", path="name")] if reason else []


def _config_issues(config: Mapping[str, Any], devices: Mapping[str, Mapping[str, Any]]) -> list[Issue]:
    issues = [Issue(reason, path=path) for path, reason in mkeys.validate_config(config)]
    issues += [Issue(reason, path=path) for path, reason in mkeys.validate_devices(devices)]
    return issues


def _write_hostname(rootfs: str, name: str) -> None:
    """systemd takes the hostname from /etc/hostname; write it without following symlinks
    out of the container."""
    from sysmgr._util import safefs

    try:
        safefs.write_file(rootfs, "/etc/hostname", (name + "\n").encode(), mode=0o644)
    except NotFound:
        pass  # an image without /etc: nothing to template


def _limits(cfg):  # TEMP: host facts for the now-pure model (the engine rewrite replaces this)
    from sysmgr._util.hostinfo import host_facts

    facts = host_facts()
    return mkeys.limits_from_config(cfg, host_cpus=facts.cpus, host_mem=facts.memory_bytes)
