"""The backend for this host: every call goes to the engine, under one :class:`Host`.

Cold start matters (a daemonless CLI pays its imports on every command): ``exec`` and
``shell`` import only the execution path; every other group of calls imports its engine
modules when first used (networking, planning, YAML and tar handling cost tens of
milliseconds that ``sysmgr exec`` must not pay; ``tests/unit/test_hot_imports.py`` holds
each hot verb to its list).
"""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

from sysmgr.api.backend import Backend, Config, Devices, Progress, Warn
from sysmgr.engine.host import Host
from sysmgr.errors import SysmgrError
from sysmgr.layout import Layout


class LocalBackend(Backend):
    """This host's root, through the engine."""

    def __init__(self, layout: Layout, *, runtime: str | None = None) -> None:
        self.layout = layout
        self.root = layout.root
        #: the engine's handle on this root (white-box tests and benches reach it)
        self.host = Host(layout, runtime=runtime)

    # -- host ------------------------------------------------------------------------------
    def init(self, *, storage_driver: str | None = None, runtime: str | None = None,
             network: str | None = None, network_driver: str | None = None) -> list[str]:
        return _bootstrap().init(self.host, storage_driver=storage_driver, runtime=runtime,
                                 network=network, network_driver=network_driver)

    def initialised(self) -> bool:
        return self.layout.exists()

    def close(self) -> None:
        self.host.close()

    def root_remove(self) -> str:
        return _bootstrap().remove_root(self.host)

    def member_store_set(self, config: Mapping[str, Any] | None, *,
                         only_cluster: str | None = None) -> str:
        from sysmgr.engine.cluster_store import record_member  # cold start: only here
        return record_member(self.layout, config and dict(config), only_cluster=only_cluster)

    # -- containers ------------------------------------------------------------------------
    def container_views(self, *, usage: bool = False, counters: bool = False) -> list[Any]:
        return _views().views(self.host, usage=usage, counters=counters)

    def container_view(self, name: str, *, usage: bool = False, counters: bool = False
                       ) -> Any:
        return _views().view(self.host, name, usage=usage, counters=counters)

    def container_exists(self, name: str) -> bool:
        return self.host.store.has_container(name)

    def container_names(self) -> list[str]:
        return [r.name for r in self.host.store.containers()]

    def container_check(self, name: str, image: str, *, profiles: Sequence[str] | None,
                        config: Config | None, devices: Devices | None, pool: str | None) -> None:
        _containers().check_create(self.host, name, image, profiles=profiles, config=config,
                                   devices=devices, pool=pool)

    def container_create(self, name: str, image: str, *, profiles: Sequence[str] | None,
                         config: Config | None, devices: Devices | None, pool: str | None,
                         description: str, start: bool) -> None:
        host = self.host
        containers, lifecycle = _containers(), _lifecycle()
        with host.locked():
            containers.create_container(host, name, image, profiles=profiles, config=config,
                                        devices=devices, pool=pool, description=description)
            if start:
                try:
                    lifecycle.start(host, name)
                except BaseException:
                    containers.delete_container(host, name, force=True)
                    raise

    def container_start(self, name: str) -> list[str]:
        said: list[str] = []
        _lifecycle().start(self.host, name, warn=said.append)
        return said

    def container_stop(self, name: str, *, timeout: float | None, force: bool) -> bool:
        return _lifecycle().stop(self.host, name, timeout=timeout, force=force)

    def containers_start(self, names: Sequence[str]) -> list[Any]:
        said: dict[str, list[str]] = {}
        results = _lifecycle().start_many(self.host, names,
                                          warn=lambda n, m: said.setdefault(n, []).append(m))
        return [_outcome(n, e, warnings=tuple(said.get(n, ()))) for n, e in results.items()]

    def containers_stop(self, names: Sequence[str], *, timeout: float | None,
                        force: bool) -> list[Any]:
        results = _lifecycle().stop_many(self.host, names, timeout=timeout, force=force)
        return [_outcome(n, r) if isinstance(r, SysmgrError) else _outcome(n, None, graceful=r)
                for n, r in results.items()]

    def containers_delete(self, names: Sequence[str], *, force: bool) -> list[Any]:
        return [_outcome(n, e)
                for n, e in _containers().delete_many(self.host, names, force=force).items()]

    def container_restart(self, name: str, *, timeout: float | None, force: bool) -> None:
        _lifecycle().restart(self.host, name, timeout=timeout, force=force, must_run=True)

    def container_set_frozen(self, name: str, frozen: bool) -> None:
        _lifecycle().set_frozen(self.host, name, frozen)

    def container_delete(self, name: str, *, force: bool) -> None:
        _containers().delete_container(self.host, name, force=force)

    def container_update(self, name: str, *, config: Config | None = None,
                         devices: Devices | None = None, profiles: Sequence[str] | None = None,
                         description: str | None = None) -> list[str]:
        return _containers().update_container(self.host, name, config=config, devices=devices,
                                              profiles=profiles, description=description)

    def container_set_config(self, name: str, values: Config, unset: Sequence[str]) -> list[str]:
        return _containers().set_config(self.host, name, values, unset)

    def container_limits(self, name: str) -> Any:
        from sysmgr.engine import records, runspec  # cold start: the key tables

        return runspec.limits(records.read(self.host, name).config)

    def container_console_log(self, name: str) -> str:
        return _execution().console_log(self.host, name)

    def host_security(self) -> Any:
        from sysmgr.engine import confinement  # cold start: AppArmor and the bundle

        return confinement.host_security(self.host)

    def host_cgroups(self) -> Any:
        from sysmgr.engine import records

        return records.host_cgroups(self.host)

    def container_copy(self, name: str, new: str, *, snapshot: str | None, pool: str | None,
                       changes: Mapping[str, Any] | None = None) -> None:
        _copy().copy(self.host, name, new, snapshot=snapshot, pool=pool, changes=changes)

    def container_rename(self, name: str, new: str) -> None:
        _copy().rename(self.host, name, new)

    def container_move_pool(self, name: str, pool: str) -> None:
        from sysmgr.engine import pool_move  # cold start: storage streams

        pool_move.move_to_pool(self.host, name, pool)

    def container_export(self, name: str, path: str | BinaryIO, *, optimized: bool,
                         progress: Progress | None, volumes: bool = False,
                         instance_only: bool = False) -> Any:
        return _backup().export(self.host, name, path, optimized=optimized, progress=progress,
                                volumes=volumes, instance_only=instance_only)

    def container_import(self, path: str | BinaryIO, *, name: str | None, pool: str | None,
                         progress: Progress | None, allow_devices: bool = False,
                         warn: Warn | None = None) -> str:
        return _backup().import_(self.host, path, name=name, pool=pool, progress=progress,
                              allow_devices=allow_devices, warn=warn).name

    # -- the controller's supervisor -----------------------------------------------------------
    def supervisor(self) -> Any:
        """Crash detection and restarts for this root's controller
        (:class:`sysmgr.engine.supervisor.Supervisor`, on this backend's Host: one database
        connection for the whole controller, so its reads never hold a lock another of its
        own connections waits for; close it: it holds pidfds)."""
        from sysmgr.engine.supervisor import Supervisor

        return Supervisor(self.host)

    # -- copies and moves between members ----------------------------------------------------
    def migration_open(self, role: str, request: Mapping[str, Any]) -> Any:
        from sysmgr.remote import endpoints

        return endpoints.local(lambda: Host(self.layout), request.get("member") or "local",
                               role, request)

    def migration_serve(self, role: str, request: Mapping[str, Any],
                        read: Callable[[int], bytes], write: Callable[[bytes], Any]) -> int:
        """The member side of :meth:`migration_open` over SSH (``sysmgr _stream migrate``)."""
        from sysmgr.remote import endpoints

        return endpoints.serve(self.host, role, request, read, write)

    def migration_marker(self, name: str) -> dict[str, Any] | None:
        from sysmgr.engine.migration import markers

        st = self.host.store
        return markers.marker(st.container(name)) if st.has_container(name) else None

    def migration_settle(self, name: str, migration: str, *, moved: bool) -> str:
        from sysmgr.engine import journal
        from sysmgr.engine.migration import settling

        with self.host.locked():
            journal.recover(self.host)  # a dead endpoint's partial copy goes first
            return settling.settle(self.host, name, migration, moved=moved)

    # -- processes and files ---------------------------------------------------------------
    def exec_capture(self, name: str, argv: Sequence[str], *, env: Config | None,
                     cwd: str | None, stdin: bytes | None, user: int | None = None,
                     group: int | None = None) -> tuple[int, bytes, bytes]:
        return _execution().execute(self.host, name, argv, env=env, cwd=cwd, stdin=stdin,
                                 user=user, group=group)

    def exec_interactive(self, name: str, argv: Sequence[str], *, env: Config | None,
                         cwd: str | None, tty: bool | None, stdin: int, stdout: int,
                         stderr: int, user: int | None = None, group: int | None = None) -> int:
        return _execution().interactive(self.host, name, argv, env=env, cwd=cwd, tty=tty,
                                     stdin=stdin, stdout=stdout, stderr=stderr, user=user,
                                     group=group)

    def shell_argv(self, name: str) -> list[str]:
        return _execution().shell_argv(self.host, name)

    def file_put(self, name: str, path: str, src: BinaryIO, *, mode: int, uid: int, gid: int,
                 mkdir: bool) -> None:
        _files().put_file(self.host, name, path, src, mode=mode, uid=uid, gid=gid, mkdir=mkdir)

    def file_get(self, name: str, path: str) -> bytes:
        return _files().read_file(self.host, name, path)

    def file_pull(self, name: str, path: str, dst: BinaryIO) -> None:
        _files().pull_file(self.host, name, path, dst)

    def file_stat(self, name: str, path: str) -> Any:
        return _files().stat_file(self.host, name, path)

    def file_mkdir(self, name: str, path: str, *, mode: int, uid: int, gid: int,
                   parents: bool) -> None:
        _files().make_dir(self.host, name, path, mode=mode, uid=uid, gid=gid, parents=parents)

    def file_symlink(self, name: str, path: str, target: str, *, uid: int, gid: int) -> None:
        _files().make_symlink(self.host, name, path, target, uid=uid, gid=gid)

    def file_delete(self, name: str, path: str, *, recursive: bool) -> None:
        _files().delete_file(self.host, name, path, recursive=recursive)

    def file_list(self, name: str, path: str) -> list[Any]:
        return _files().list_dir(self.host, name, path)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_list(self, name: str) -> list[Any]:
        return _snapshots().all_(self.host, name)

    def snapshot_get(self, name: str, snap: str) -> Any:
        return _snapshots().get(self.host, name, snap)

    def snapshot_create(self, name: str, snap: str | None, *, expiry: str | None) -> Any:
        return _snapshots().create(self.host, name, snap, expiry=expiry)

    def snapshot_restore(self, name: str, snap: str, *, force: bool) -> list[str]:
        return _snapshots().restore(self.host, name, snap, force=force)

    def snapshot_delete(self, name: str, snap: str) -> None:
        _snapshots().delete(self.host, name, snap)

    def snapshot_rename(self, name: str, snap: str, new: str) -> Any:
        return _snapshots().rename(self.host, name, snap, new)

    def snapshot_update(self, name: str, snap: str, *, expires: float | None,
                        description: str) -> Any:
        return _snapshots().update(self.host, name, snap, expires=expires,
                                   description=description)

    def snapshot_prune(self, name: str | None) -> list[str]:
        return _snapshots().prune(self.host, name)

    def snapshot_next(self) -> tuple[float, str] | None:
        return _snapshots().next_due(self.host)

    def snapshot_auto(self) -> list[str]:
        return _snapshots().auto(self.host)

    # -- profiles --------------------------------------------------------------------------
    def profile_list(self) -> list[Any]:
        return self.host.store.profiles()

    def profile_get(self, name: str) -> Any:
        return self.host.store.profile(name)

    def profile_exists(self, name: str) -> bool:
        return self.host.store.has_profile(name)

    def profile_put(self, name: str, *, description: str, config: Config, devices: Devices,
                    create: bool | None) -> None:
        _profiles().put(self.host, name, description=description, config=config,
                        devices=devices, create=create)

    def profile_delete(self, name: str) -> None:
        _profiles().delete_profile(self.host, name)

    def profile_rename(self, name: str, new: str) -> None:
        _profiles().rename_profile(self.host, name, new)

    def profile_used_by(self, name: str) -> list[str]:
        return self.host.store.containers_using_profile(name)

    # -- images ----------------------------------------------------------------------------
    def image_list(self) -> list[Any]:
        return self.host.store.images()

    def image_get(self, ref: str) -> Any:
        return self.host.store.image(ref)

    def image_exists(self, ref: str) -> bool:
        return self.host.store.has_image(ref)

    def image_build(self, builder: str, *, alias: str | None, options: Config | None,
                    pool: str | None, progress: Progress | None) -> Any:
        return _images().build(self.host, builder, alias=alias, options=options, pool=pool,
                            progress=progress)

    def image_import(self, path: str, *, alias: str | None, pool: str | None,
                     progress: Progress | None, allow_devices: bool = False,
                     warn: Warn | None = None, platform: str | None = None) -> Any:
        return _images().import_image(self.host, path, alias=alias, pool=pool, progress=progress,
                                      allow_devices=allow_devices, warn=warn, platform=platform)

    def image_publish(self, ref: str, *, fmt: str, output: str | None, alias: str | None,
                      progress: Progress | None) -> tuple[str, Any]:
        return _images().publish(self.host, ref, fmt=fmt, output=output, alias=alias,
                                 progress=progress)

    def image_alias(self, alias: str, ref: str) -> None:
        _images().set_alias(self.host, alias, ref)

    def image_delete_alias(self, alias: str) -> None:
        _images().delete_alias(self.host, alias)

    def image_rename_alias(self, alias: str, new: str) -> None:
        _images().rename_alias(self.host, alias, new)

    def image_set_properties(self, ref: str, properties: Config) -> Any:
        return _images().set_properties(self.host, ref, properties)

    def image_delete(self, ref: str) -> None:
        _images().delete(self.host, ref)

    def image_used_by(self, fingerprint: str) -> list[str]:
        return _images().in_use(self.host, fingerprint)

    def image_export(self, ref: str, path: str, *, progress: Progress | None) -> str:
        return _images().export(self.host, ref, path, progress=progress)

    def image_receive(self, path: str, *, fingerprint: str, digest: str,
                      aliases: Sequence[str], origin: str, progress: Progress | None) -> Any:
        return _images().receive(self.host, path, fingerprint=fingerprint, digest=digest,
                                 aliases=tuple(aliases), origin=origin, progress=progress)

    # -- storage pools ---------------------------------------------------------------------
    def pool_list(self) -> list[Any]:
        return self.host.store.pools()

    def pool_get(self, name: str) -> Any:
        return self.host.store.pool(name)

    def pool_exists(self, name: str) -> bool:
        return self.host.store.has_pool(name)

    def pool_create(self, name: str, driver: str, config: Config, description: str) -> Any:
        return _pools().create_pool(self.host, name, driver, dict(config), description)

    def pool_delete(self, name: str) -> None:
        _pools().delete_pool(self.host, name)

    def pool_update(self, name: str, *, config: Config | None,
                    description: str | None) -> Any:
        return _pools().update_pool(self.host, name, config=config, description=description)

    def pool_usage(self, name: str) -> Any:
        return self.host.pool_driver(name).usage()

    def pool_used_by(self, name: str) -> list[str]:
        return [c.name for c in self.host.store.containers() if c.pool == name]

    def default_storage_driver(self) -> str:
        return _volumes().default_driver()[0]

    # -- custom storage volumes --------------------------------------------------------------
    def volume_list(self, pool: str | None) -> list[Any]:
        return _custom().views(self.host, pool)

    def volume_get(self, pool: str, name: str) -> Any:
        return _custom().view(self.host, pool, name)

    def volume_exists(self, pool: str, name: str) -> bool:
        return _custom().exists(self.host, pool, name)

    def volume_create(self, pool: str, name: str, config: Config, description: str) -> Any:
        _custom().create(self.host, pool, name, dict(config), description)
        return self.volume_get(pool, name)

    def volume_update(self, pool: str, name: str, *, config: Config | None,
                      description: str | None) -> None:
        _custom().update(self.host, pool, name, config=config, description=description)

    def volume_delete(self, pool: str, name: str) -> None:
        _custom().delete(self.host, pool, name)

    def volume_snapshot(self, pool: str, name: str, snap: str | None) -> Any:
        return _volume_copies().snapshot(self.host, pool, name, snap)

    def volume_snapshot_delete(self, pool: str, name: str, snap: str) -> None:
        _volume_copies().delete_snapshot(self.host, pool, name, snap)

    def volume_restore(self, pool: str, name: str, snap: str) -> None:
        _volume_copies().restore(self.host, pool, name, snap)

    def volume_copy(self, pool: str, name: str, dst_pool: str, dst: str, *,
                    volume_only: bool) -> Any:
        _volume_copies().copy(self.host, pool, name, dst_pool, dst, volume_only=volume_only)
        return self.volume_get(dst_pool, dst)

    def volume_move(self, pool: str, name: str, dst_pool: str, dst: str) -> Any:
        _volume_copies().move(self.host, pool, name, dst_pool, dst)
        return self.volume_get(dst_pool, dst)

    def volume_attach(self, pool: str, name: str, container: str, path: str, *,
                      device: str | None, readonly: bool) -> list[str]:
        return _custom().attach(self.host, pool, name, container, path, device,
                                readonly=readonly)

    def volume_detach(self, pool: str, name: str, container: str, *,
                      device: str | None) -> list[str]:
        return _custom().detach(self.host, pool, name, container, device)

    # -- networks --------------------------------------------------------------------------
    def _networks(self) -> Any:
        return _networks().NetworkEngine(self.host)

    def network_list(self) -> list[Any]:
        return self._networks().records()

    def network_get(self, name: str) -> Any:
        return self._networks().record(name)

    def network_exists(self, name: str) -> bool:
        return bool(self._networks().exists(name))

    def network_create(self, name: str, config: Config, *, type: str, description: str) -> Any:
        return self._networks().create(name, dict(config), type=type, description=description)

    def network_update(self, name: str, *, config: Config | None,
                       description: str | None) -> list[str]:
        return self._networks().update(name, config=config, description=description)

    def network_delete(self, name: str) -> None:
        self._networks().delete(name)

    def network_rename(self, name: str, new: str) -> None:
        self._networks().rename(name, new)

    def network_used_by(self, name: str) -> tuple[list[str], list[str]]:
        return self._networks().used_by(name)

    def network_state(self, name: str) -> Any:
        return _networks().network_state(self.host, name)

    # -- events ----------------------------------------------------------------------------
    def event_list(self, *, since: float | None, types: Sequence[str] | None,
                   last: int | None = None) -> list[Any]:
        self._initialised()
        got = _events().read(self.layout, since=since, types=types)
        return got[-last:] if last else got

    def event_follow(self, *, types: Sequence[str] | None, from_end: bool,
                     since: float | None, stop: Any) -> Iterator[Any]:
        self._initialised()
        return _events().follow(self.layout, types=types, from_end=from_end, since=since,
                                stop=stop)

    def _initialised(self) -> None:
        """An uninitialised root is refused with the error every other call gives."""
        _ = self.host.store

    # -- manifests -------------------------------------------------------------------------
    def manifest_validate(self, paths: Sequence[str]) -> Any:
        return _manifests().validate(self.host, paths)

    def manifest_plan(self, paths: Sequence[str], *, prune: bool = False, backup: bool = True,
                      keep_backups: float | None = None,
                      revision: str = "") -> Any:
        return _manifests().plan(self.host, paths, prune=prune, backup=backup,
                                 keep_backups=keep_backups,
                                 revision=revision)

    def manifest_apply(self, plan: Any, *, progress: Progress | None) -> Any:
        return _manifests().apply(self.host, plan, progress=progress)

    def manifest_report(self, plan: Any) -> int:
        return _manifests().report(self.host, plan)


# Engine modules that pull in networking, the planner or YAML, imported on first use.
def _bootstrap() -> Any:
    from sysmgr.engine import bootstrap  # cold start: pools, profiles and networks
    return bootstrap


def _execution() -> Any:
    from sysmgr.engine import execution  # exec's own path (start and stop need none of it)
    return execution


def _files() -> Any:
    from sysmgr.engine import files  # cold start: safe file access and id shifting
    return files


def _pools() -> Any:
    from sysmgr.engine import pools  # cold start: storage drivers' base
    return pools


def _volumes() -> Any:
    from sysmgr.engine import volumes  # cold start: storage drivers
    return volumes


def _views() -> Any:
    from sysmgr.engine import views  # cold start: nics and their networks
    return views


def _outcome(name: str, error: SysmgrError | None, *, warnings: tuple[str, ...] = (),
             graceful: bool | None = None) -> Any:
    """One container's :class:`~sysmgr.types.Outcome` of a call on several."""
    from sysmgr.types import Outcome

    if error is None:
        return Outcome(name, warnings=warnings, graceful=graceful)
    return Outcome(name, error=error.message, hint=error.hint, exit_code=error.exit_code,
                   warnings=warnings)


def _containers() -> Any:
    from sysmgr.engine import containers  # cold start: storage, networks and nic records
    return containers


def _lifecycle() -> Any:
    from sysmgr.engine import lifecycle  # cold start: nics and their networks
    return lifecycle


def _snapshots() -> Any:
    from sysmgr.engine import snapshots  # cold start: lifecycle, nics and schedules
    return snapshots


def _profiles() -> Any:
    from sysmgr.engine import profiles  # cold start: networks
    return profiles


def _networks() -> Any:
    from sysmgr.engine import networks  # cold start: networking
    return networks


def _backup() -> Any:
    from sysmgr.engine import backup  # cold start: journal, snapshots, tar and zstd handling
    return backup


def _events() -> Any:
    from sysmgr.engine import events  # cold start: json (exec does without)
    return events


def _custom() -> Any:
    from sysmgr.engine import custom_volumes  # cold start: containers and their devices
    return custom_volumes


def _volume_copies() -> Any:
    from sysmgr.engine import volume_copies  # cold start: streams, journal
    return volume_copies


def _copy() -> Any:
    from sysmgr.engine import copy  # cold start: journal and storage streams
    return copy


def _images() -> Any:
    from sysmgr.engine import images  # cold start: builders, unpacking, journal
    return images


def _manifests() -> Any:
    from sysmgr.engine import manifests  # cold start: YAML, cerberus and the planner
    return manifests
