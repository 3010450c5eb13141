"""The one door between the Python API and a host: :class:`Backend`.

Every manager and object of :mod:`sysmgr.api` calls a host only through these methods, with
plain values in and plain records out (dataclasses of names, strings, numbers, maps), so the
same managers work on this host (:class:`~sysmgr.api.local.LocalBackend`, which calls the
engine) and, later, on a cluster member over SSH (a remote backend sending the same calls).
Methods are grouped by the kind of object they act on and named ``<kind>_<verb>``.
"""

from __future__ import annotations

import abc
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

Progress = Callable[[str], None]
#: receives one warning (a sentence) for the user, e.g. the device nodes an import dropped
Warn = Callable[[str], None]
Config = Mapping[str, str]
Devices = Mapping[str, Mapping[str, str]]


class Backend(abc.ABC):
    """What a host offers the API. Records returned are snapshots; nothing is cached."""

    root: str

    # -- host ------------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, *, storage_driver: str | None = None, runtime: str | None = None,
             network: str | None = None, network_driver: str | None = None) -> list[str]:
        """Initialise (or bring back) the host root; what was done, one line each."""

    @abc.abstractmethod
    def initialised(self) -> bool:
        """Whether the host root exists."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the host's handles (the state database)."""

    @abc.abstractmethod
    def root_remove(self) -> str:
        """Remove the emptied host root's directory (``uninit``'s last step; Conflict while
        containers remain or anything is mounted below it); what was done."""

    @abc.abstractmethod
    def member_store_set(self, config: Mapping[str, Any] | None, *,
                         only_cluster: str | None = None) -> str:
        """Record in the root which cluster store it reports to (its liveness and events:
        ``cluster-member.json``), or clear it (None; ``only_cluster``: only when it is that
        store, ``url#cluster-id``); ``recorded``, ``cleared`` or ``unchanged``."""

    # -- containers ------------------------------------------------------------------------
    @abc.abstractmethod
    def container_views(self, *, usage: bool = False, counters: bool = False) -> list[Any]:
        """Every container's view (record, expansion, status, nics; usage when asked;
        ``counters``: also the nics' traffic counters and the root filesystem's size)."""

    def container_names(self) -> list[str]:
        """Every container's name, without reading its status (shell completion asks on
        every TAB); a backend that can answer cheaper overrides this."""
        return [v.record.name for v in self.container_views()]

    @abc.abstractmethod
    def container_view(self, name: str, *, usage: bool = False, counters: bool = False
                       ) -> Any: ...

    @abc.abstractmethod
    def container_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def container_create(self, name: str, image: str, *, profiles: Sequence[str] | None,
                         config: Config | None, devices: Devices | None, pool: str | None,
                         description: str, start: bool) -> None:
        """Create (and with ``start``, start) a container; nothing is left if either fails."""

    @abc.abstractmethod
    def container_check(self, name: str, image: str, *, profiles: Sequence[str] | None,
                        config: Config | None, devices: Devices | None, pool: str | None) -> None:
        """Raise what ``container_create`` would refuse, creating nothing."""

    @abc.abstractmethod
    def container_start(self, name: str) -> list[str]:
        """Start the container; what the start had to leave out (warnings, one sentence
        each: a disk whose source is missing, ``required=false``)."""

    @abc.abstractmethod
    def container_stop(self, name: str, *, timeout: float | None, force: bool) -> bool:
        """True when init shut down by itself, False when it had to be killed."""

    @abc.abstractmethod
    def containers_start(self, names: Sequence[str]) -> list[Any]:
        """Start several containers in one pass (one lock, their networks prepared once,
        one dnsmasq reload at most per network, one host netlink socket); one
        :class:`~sysmgr.types.Outcome` per name, in order. Each starts whole or not at all,
        and a failure is reported in its outcome while the others go on."""

    @abc.abstractmethod
    def containers_stop(self, names: Sequence[str], *, timeout: float | None,
                        force: bool) -> list[Any]:
        """Stop several containers at once (every halt signal or kill sent before any is
        waited for); one :class:`~sysmgr.types.Outcome` per name (``graceful``)."""

    @abc.abstractmethod
    def containers_delete(self, names: Sequence[str], *, force: bool) -> list[Any]:
        """Delete several containers in one pass (the running ones killed together with
        ``force``; reservations pushed once); one :class:`~sysmgr.types.Outcome` per name."""

    @abc.abstractmethod
    def container_restart(self, name: str, *, timeout: float | None, force: bool) -> None: ...

    @abc.abstractmethod
    def container_set_frozen(self, name: str, frozen: bool) -> None: ...

    @abc.abstractmethod
    def container_delete(self, name: str, *, force: bool) -> None: ...

    @abc.abstractmethod
    def container_update(self, name: str, *, config: Config | None = None,
                         devices: Devices | None = None, profiles: Sequence[str] | None = None,
                         description: str | None = None) -> list[str]:
        """Replace parts of the local definition; the keys that need a restart."""

    @abc.abstractmethod
    def container_set_config(self, name: str, values: Config, unset: Sequence[str]) -> list[str]: ...

    @abc.abstractmethod
    def container_limits(self, name: str) -> Any:
        """The container's limits in kernel terms (:class:`sysmgr.types.Limits`)."""

    @abc.abstractmethod
    def container_console_log(self, name: str) -> str: ...

    @abc.abstractmethod
    def host_security(self) -> Any:
        """What confines containers on this host (:class:`sysmgr.types.HostSecurity`)."""

    @abc.abstractmethod
    def host_cgroups(self) -> Any:
        """The host's cgroup layout (:class:`sysmgr.types.HostCgroups`)."""

    @abc.abstractmethod
    def container_copy(self, name: str, new: str, *, snapshot: str | None, pool: str | None,
                       changes: Mapping[str, Any] | None = None) -> None:
        """Copy a container (without snapshots) on this host; ``changes``: its definition
        changed as ``lxc copy -p/--no-profiles/-c/-d`` say (``profiles``, ``config``,
        ``devices``)."""

    @abc.abstractmethod
    def container_rename(self, name: str, new: str) -> None: ...

    @abc.abstractmethod
    def container_move_pool(self, name: str, pool: str) -> None:
        """Move a stopped container (with its snapshots) to another pool of this host."""

    @abc.abstractmethod
    def container_export(self, name: str, path: str | BinaryIO, *, optimized: bool,
                         progress: Progress | None, volumes: bool = False,
                         instance_only: bool = False) -> Any:
        """Write a backup file, or its bytes to an open stream (``volumes``: with the custom
        volumes its disks name; ``instance_only``: without the snapshots)."""

    @abc.abstractmethod
    def container_import(self, path: str | BinaryIO, *, name: str | None, pool: str | None,
                         progress: Progress | None, allow_devices: bool = False,
                         warn: Warn | None = None) -> str:
        """Create a container from a backup file; its name. Device nodes in it are dropped
        (``warn`` names them) unless ``allow_devices``."""

    # -- copies and moves between members ----------------------------------------------------
    @abc.abstractmethod
    def migration_open(self, role: str, request: Mapping[str, Any]) -> Any:
        """One endpoint (``role`` ``source`` or ``target``) of a copy or move on this member:
        a :class:`sysmgr.remote.endpoints.Endpoint` the mover talks to."""

    @abc.abstractmethod
    def migration_marker(self, name: str) -> dict[str, Any] | None:
        """The mark a move left on container ``name`` (None: none, or no such container)."""

    @abc.abstractmethod
    def migration_settle(self, name: str, migration: str, *, moved: bool) -> str:
        """Finish (``moved``) or roll back move ``migration`` of ``name`` on this member
        (:func:`sysmgr.engine.migration.markers.settle`); what was done."""

    # -- processes and files ---------------------------------------------------------------
    @abc.abstractmethod
    def exec_capture(self, name: str, argv: Sequence[str], *, env: Config | None,
                     cwd: str | None, stdin: bytes | None, user: int | None = None,
                     group: int | None = None) -> tuple[int, bytes, bytes]:
        """Run a command to completion: (exit code, stdout, stderr); as ``user``/``group``
        (container ids; default root)."""

    @abc.abstractmethod
    def exec_interactive(self, name: str, argv: Sequence[str], *, env: Config | None,
                         cwd: str | None, tty: bool | None, stdin: int, stdout: int,
                         stderr: int, user: int | None = None, group: int | None = None) -> int:
        """Run a command with the caller's stdio streamed through; its exit code."""

    @abc.abstractmethod
    def shell_argv(self, name: str) -> list[str]:
        """The login shell command of the container's image."""

    @abc.abstractmethod
    def file_put(self, name: str, path: str, src: BinaryIO, *, mode: int, uid: int, gid: int,
                 mkdir: bool) -> None: ...

    @abc.abstractmethod
    def file_get(self, name: str, path: str) -> bytes: ...

    @abc.abstractmethod
    def file_pull(self, name: str, path: str, dst: BinaryIO) -> None: ...

    @abc.abstractmethod
    def file_stat(self, name: str, path: str) -> Any:
        """Mode, owner (container ids) and size of a file inside."""

    @abc.abstractmethod
    def file_mkdir(self, name: str, path: str, *, mode: int, uid: int, gid: int,
                   parents: bool) -> None:
        """Create a directory inside (or give an existing one that mode and owner)."""

    @abc.abstractmethod
    def file_symlink(self, name: str, path: str, target: str, *, uid: int, gid: int) -> None:
        """Create or replace a symlink inside."""

    @abc.abstractmethod
    def file_delete(self, name: str, path: str, *, recursive: bool) -> None:
        """Remove a file, link or empty directory inside (``recursive``: any directory)."""

    @abc.abstractmethod
    def file_list(self, name: str, path: str) -> list[Any]:
        """The entries of a directory inside (:class:`sysmgr.engine.files.DirEntry`)."""

    # -- snapshots -------------------------------------------------------------------------
    @abc.abstractmethod
    def snapshot_list(self, name: str) -> list[Any]: ...

    @abc.abstractmethod
    def snapshot_get(self, name: str, snap: str) -> Any: ...

    @abc.abstractmethod
    def snapshot_create(self, name: str, snap: str | None, *, expiry: str | None) -> Any: ...

    @abc.abstractmethod
    def snapshot_restore(self, name: str, snap: str, *, force: bool) -> list[str]: ...

    @abc.abstractmethod
    def snapshot_delete(self, name: str, snap: str) -> None: ...

    @abc.abstractmethod
    def snapshot_rename(self, name: str, snap: str, new: str) -> Any:
        """Rename a snapshot; its record under the new name."""

    @abc.abstractmethod
    def snapshot_update(self, name: str, snap: str, *, expires: float | None,
                        description: str) -> Any:
        """Change a snapshot's expiry (a Unix time, None: never) and description."""

    @abc.abstractmethod
    def snapshot_prune(self, name: str | None) -> list[str]:
        """Delete expired snapshots (of ``name``, or of every container)."""

    @abc.abstractmethod
    def snapshot_next(self) -> tuple[float, str] | None:
        """The next scheduled snapshot or expiry (when, what), or None."""

    @abc.abstractmethod
    def snapshot_auto(self) -> list[str]:
        """Take the scheduled snapshots that are due, then prune."""

    # -- profiles --------------------------------------------------------------------------
    @abc.abstractmethod
    def profile_list(self) -> list[Any]: ...

    @abc.abstractmethod
    def profile_get(self, name: str) -> Any: ...

    @abc.abstractmethod
    def profile_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def profile_put(self, name: str, *, description: str, config: Config, devices: Devices,
                    create: bool | None) -> None:
        """Create (``create=True``), replace (``False``) or either (None) a profile."""

    @abc.abstractmethod
    def profile_delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def profile_rename(self, name: str, new: str) -> None:
        """Rename a profile; the containers and snapshots using it follow."""

    @abc.abstractmethod
    def profile_used_by(self, name: str) -> list[str]: ...

    # -- images ----------------------------------------------------------------------------
    @abc.abstractmethod
    def image_list(self) -> list[Any]: ...

    @abc.abstractmethod
    def image_get(self, ref: str) -> Any: ...

    @abc.abstractmethod
    def image_exists(self, ref: str) -> bool: ...

    @abc.abstractmethod
    def image_build(self, builder: str, *, alias: str | None, options: Config | None,
                    pool: str | None, progress: Progress | None) -> Any: ...

    @abc.abstractmethod
    def image_import(self, path: str, *, alias: str | None, pool: str | None,
                     progress: Progress | None, allow_devices: bool = False,
                     warn: Warn | None = None, platform: str | None = None) -> Any:
        """Import an image; device nodes in it are dropped (``warn`` names them) unless
        ``allow_devices``; ``platform``: which of an OCI index's images (default the host's)."""

    @abc.abstractmethod
    def image_publish(self, ref: str, *, fmt: str, output: str | None, alias: str | None,
                      progress: Progress | None) -> tuple[str, Any]:
        """A stopped container or a snapshot (``NAME/SNAP``) as an image: (its manifest
        digest, the stored image or None when written to ``output`` as OCI)."""

    @abc.abstractmethod
    def image_alias(self, alias: str, ref: str) -> None: ...

    @abc.abstractmethod
    def image_delete_alias(self, alias: str) -> None: ...

    @abc.abstractmethod
    def image_rename_alias(self, alias: str, new: str) -> None: ...

    @abc.abstractmethod
    def image_set_properties(self, ref: str, properties: Config) -> Any:
        """Replace an image's properties; its record."""

    @abc.abstractmethod
    def image_delete(self, ref: str) -> None: ...

    @abc.abstractmethod
    def image_used_by(self, fingerprint: str) -> list[str]: ...

    @abc.abstractmethod
    def image_export(self, ref: str, path: str, *, progress: Progress | None) -> str:
        """Write the image as a unified tarball to ``path`` (a file of the CALLER, as for
        ``container_export``); the digest of the tree written, for :meth:`image_receive`."""

    @abc.abstractmethod
    def image_receive(self, path: str, *, fingerprint: str, digest: str,
                      aliases: Sequence[str], origin: str, progress: Progress | None) -> Any:
        """Store the image another member exported (``path``: the caller's file) under the
        same ``fingerprint``; refused unless its unpacked tree has ``digest``. Sets the
        ``aliases`` this host does not use yet. Returns the image record."""

    # -- storage pools ---------------------------------------------------------------------
    @abc.abstractmethod
    def pool_list(self) -> list[Any]: ...

    @abc.abstractmethod
    def pool_get(self, name: str) -> Any: ...

    @abc.abstractmethod
    def pool_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def pool_create(self, name: str, driver: str, config: Config, description: str) -> Any: ...

    @abc.abstractmethod
    def pool_delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def pool_update(self, name: str, *, config: Config | None,
                    description: str | None) -> Any:
        """Change a pool's config (``user.*``; a loop pool's ``size``, grown online) and
        description; its record."""

    @abc.abstractmethod
    def pool_usage(self, name: str) -> Any: ...

    @abc.abstractmethod
    def pool_used_by(self, name: str) -> list[str]: ...

    @abc.abstractmethod
    def default_storage_driver(self) -> str:
        """The driver ``init`` picks for the default pool on this host."""

    # -- custom storage volumes --------------------------------------------------------------
    @abc.abstractmethod
    def volume_list(self, pool: str | None) -> list[Any]:
        """Every custom volume's view (of ``pool``, when given): record, users, usage,
        snapshots (:class:`sysmgr.engine.custom_volumes.VolumeView`)."""

    @abc.abstractmethod
    def volume_get(self, pool: str, name: str) -> Any: ...

    @abc.abstractmethod
    def volume_exists(self, pool: str, name: str) -> bool: ...

    @abc.abstractmethod
    def volume_create(self, pool: str, name: str, config: Config, description: str) -> Any:
        """Make an empty volume; its view."""

    @abc.abstractmethod
    def volume_update(self, pool: str, name: str, *, config: Config | None,
                      description: str | None) -> None:
        """Replace config and/or description (a new size applies at once)."""

    @abc.abstractmethod
    def volume_delete(self, pool: str, name: str) -> None:
        """Delete a volume and its snapshots (refused while anything uses it)."""

    @abc.abstractmethod
    def volume_snapshot(self, pool: str, name: str, snap: str | None) -> Any:
        """Snapshot a volume (``snapN`` by default); the snapshot's record."""

    @abc.abstractmethod
    def volume_snapshot_delete(self, pool: str, name: str, snap: str) -> None: ...

    @abc.abstractmethod
    def volume_restore(self, pool: str, name: str, snap: str) -> None: ...

    @abc.abstractmethod
    def volume_copy(self, pool: str, name: str, dst_pool: str, dst: str, *,
                    volume_only: bool) -> Any:
        """Copy a volume (with its snapshots unless ``volume_only``); the copy's view."""

    @abc.abstractmethod
    def volume_move(self, pool: str, name: str, dst_pool: str, dst: str) -> Any:
        """Rename (same pool) or move a volume with its snapshots; its new view."""

    @abc.abstractmethod
    def volume_attach(self, pool: str, name: str, container: str, path: str, *,
                      device: str | None, readonly: bool) -> list[str]:
        """Add the volume to a container as a disk device; the keys that need a restart."""

    @abc.abstractmethod
    def volume_detach(self, pool: str, name: str, container: str, *,
                      device: str | None) -> list[str]: ...

    # -- networks --------------------------------------------------------------------------
    @abc.abstractmethod
    def network_list(self) -> list[Any]: ...

    @abc.abstractmethod
    def network_get(self, name: str) -> Any: ...

    @abc.abstractmethod
    def network_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def network_create(self, name: str, config: Config, *, type: str, description: str) -> Any: ...

    @abc.abstractmethod
    def network_update(self, name: str, *, config: Config | None,
                       description: str | None) -> list[str]:
        """The running containers that keep the old address or MTU until restarted."""

    @abc.abstractmethod
    def network_delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def network_rename(self, name: str, new: str) -> None:
        """Rename a network no container or profile uses."""

    @abc.abstractmethod
    def network_used_by(self, name: str) -> tuple[list[str], list[str]]:
        """(containers, profiles) with a nic on the network."""

    @abc.abstractmethod
    def network_state(self, name: str) -> Any:
        """What the host has for the network (:class:`~sysmgr.api.networks.NetworkState`
        fields: status, bridge, up, mtu, addresses, ports, dnsmasq pid, nft table, problems,
        leases)."""

    # -- events ----------------------------------------------------------------------------
    @abc.abstractmethod
    def event_list(self, *, since: float | None, types: Sequence[str] | None,
                   last: int | None = None) -> list[Any]:
        """The root's events (:class:`sysmgr.engine.events.Event`), oldest first: those at
        or after ``since`` (a Unix time of the host's clock), of ``types`` (None: all), only
        the ``last`` N of them (None: all)."""

    @abc.abstractmethod
    def event_follow(self, *, types: Sequence[str] | None, from_end: bool,
                     since: float | None, stop: Any) -> Iterator[Any]:
        """The root's events as they are written, until ``stop`` (a ``threading.Event``) is
        set; ``from_end``: from now on, else all first (``since``: from then on)."""

    # -- manifests -------------------------------------------------------------------------
    @abc.abstractmethod
    def manifest_validate(self, paths: Sequence[str]) -> Any: ...

    @abc.abstractmethod
    def manifest_plan(self, paths: Sequence[str], *, prune: bool = False, backup: bool = True,
                      keep_backups: float | None = None,
                      revision: str = "") -> Any:
        """The plan for manifest files; ``paths`` may also be an already loaded Manifest
        (a cluster plan sends each member its share). ``prune``: also delete what was
        created from these manifests and left them (a container backed up first, unless
        not ``backup``); ``revision`` is recorded with the objects created."""

    @abc.abstractmethod
    def manifest_apply(self, plan: Any, *, progress: Progress | None) -> Any: ...

    @abc.abstractmethod
    def manifest_report(self, plan: Any) -> int:
        """Log the drift ``plan`` found without applying it (``drift`` events, ``detected``;
        a report-only controller); how many actions drifted."""
