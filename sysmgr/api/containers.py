"""``client.containers``: containers as pylxd shows them.

    >>> c = client.containers.create("web1", image="busybox", start=True)
    >>> code, out, err = c.execute(["hostname"])
    >>> c.stop(timeout=10)

A :class:`Container`'s fields are a snapshot (``refresh()`` re-reads); ``config`` and
``devices`` are the local ones, ``expanded_config``/``expanded_devices`` include profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping, Sequence

from sysmgr.api.base import HasBackend, Manager, Model, collect_warnings
from sysmgr.api.snapshots import SnapshotManager
from sysmgr.errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.migration import Meter, MigrationResult
    from sysmgr.types import Limits, Outcome

Progress = Callable[[str], None]
Warn = Callable[[str], None]
_STATUS_WORD = {"RUNNING": "Running", "STOPPED": "Stopped", "FROZEN": "Frozen"}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str

    def __iter__(self):  # allows ``code, out, err = c.execute(...)`` like pylxd
        return iter((self.exit_code, self.stdout, self.stderr))


@dataclass(frozen=True)
class ContainerState:
    status: str                       # Running | Stopped | Frozen (LXD's words)
    pid: int | None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None
    cpu_ns: int | None = None
    disk_bytes: int | None = None
    oom_kills: int | None = None


class MemberClient:
    """What an object on a cluster member needs of its client: that member's backend and
    name, and the cluster (for copies and moves)."""

    def __init__(self, member: str, backend: Any, cluster: Any = None) -> None:
        self.member = member
        self.backend = backend
        self.cluster = cluster


class Container(Model):
    """A container. Fields are a snapshot taken when the object was made; ``refresh()``.

    ``warnings`` holds what the call that returned it had to say (``import_``: the device
    nodes it dropped or kept); it is empty otherwise.
    """

    warnings: tuple[str, ...] = ()
    #: what a copy to another member sent (on the copy ``copy()`` returned), else None
    transfer: "MigrationResult | None" = None

    def __init__(self, client: HasBackend, view: Any) -> None:
        #: the cluster member it lives on (None on a single host)
        self.location: str | None = getattr(client, "member", None)
        super().__init__(client, view)
        self.files = ContainerFiles(self)
        self.snapshots = SnapshotManager(self)

    def _set(self, view: Any) -> None:
        rec = view.record
        self.name: str = rec.name
        self.status: str = _STATUS_WORD[view.status.state]
        self.pid: int | None = view.status.pid
        self.config: dict[str, str] = dict(rec.config)
        self.devices: dict[str, dict[str, str]] = {k: dict(v) for k, v in rec.devices.items()}
        self.profiles: list[str] = list(rec.profiles)
        self.expanded_config: dict[str, str] = view.expanded_config
        self.expanded_devices: dict[str, dict[str, str]] = view.expanded_devices
        self.description: str = rec.description
        self.pool: str = rec.pool
        self.created_at: float = rec.created
        self.image_fingerprint: str = rec.image
        self.image_aliases: list[str] = list(view.image.aliases) if view.image else []
        self.image_os: str = (view.image.metadata.get("properties", {}).get("os", "")
                              if view.image else rec.volatile.get("image.os", ""))
        self.usage = view.usage
        self.disk_bytes: int | None = view.disk_bytes  # with ``containers.all(usage=True)``
        # with ``counters``, while it runs: each nic's counters as the container sees them
        # ({"eth0": {"receive_bytes": n, ...}}) and its root filesystem ({size, free, avail,
        # fstype, device, mountpoint})
        self.network: dict[str, dict[str, int]] = dict(getattr(view, "network", None) or {})
        self.filesystem: dict[str, Any] = dict(getattr(view, "filesystem", None) or {})
        # nics: {device: {name, host_name, hwaddr, network, parent, ipv4, dhcp}}; ipv4: the
        # addresses of a running container as `list` shows them, "10.0.3.5 (eth0)"
        self.nics: dict[str, dict[str, Any]] = dict(view.extra.get("nics") or {})
        self.ipv4: list[str] = list(view.extra.get("ipv4") or [])
        # the same addresses as data: [{"address": "10.0.3.5", "family": "inet", "device": "eth0"}]
        self.addresses: list[dict[str, str]] = [dict(a) for a in view.extra.get("addresses") or []]
        # when it last started (LXD's last_used_at; None: never), kept after it stops
        self.last_used_at: float | None = float(rec.volatile.get("last_used") or 0) or None
        # "unprivileged (host ids 1000000+65536)" or "privileged" (no user namespace)
        self.security: str = str(view.extra.get("security") or "")
        # whose memory, CPUs and uptime /proc shows inside (lxcfs), while it runs
        self.resource_views: str = str(view.extra.get("resource_views") or "")
        # the runtime engine its init runs under, while it runs (native, crun, runc)
        self.engine: str = str(view.extra.get("engine") or "")
        # the last move between members ({from, to, at, stream, rounds, downtime: {shutdown,
        # sysmgr, boot}}), and the mark of one under way ({id, role, peer, phase})
        self.last_migration: dict[str, Any] | None = view.extra.get("last_migration")
        self.migration: dict[str, Any] | None = view.extra.get("migration")

    def _fetch(self) -> Any:
        return self._backend.container_view(self.name)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, wait: bool = True) -> None:
        """Start the container's init (returns once it runs). What the start had to leave
        out (a disk whose source is missing, ``required=false``) is in ``warnings``."""
        said = self._backend.container_start(self.name)
        self.refresh()
        self.warnings = tuple(said or ())

    def stop(self, timeout: float | None = None, force: bool = False, wait: bool = True) -> bool:
        """Stop the container: the image's halt signal, then a kill after ``timeout`` seconds
        (default ``boot.host_shutdown_timeout``, 30). Returns True when init shut down by
        itself, False when it had to be killed."""
        graceful = self._backend.container_stop(self.name, timeout=timeout, force=force)
        self.refresh()
        return graceful

    def restart(self, timeout: float | None = None, force: bool = False) -> None:
        """Stop (as :meth:`stop`) and start again; a stopped container is a Conflict (as
        ``lxc restart``: start it instead)."""
        self._backend.container_restart(self.name, timeout=timeout, force=force)
        self.refresh()

    def freeze(self) -> None:
        """Freeze every process of the running container (a frozen one: Conflict)."""
        self._backend.container_set_frozen(self.name, True)
        self.refresh()

    def unfreeze(self) -> None:
        """Thaw a frozen container (one that is not frozen: Conflict, as in LXD)."""
        self._backend.container_set_frozen(self.name, False)
        self.refresh()

    def delete(self, force: bool = False) -> None:
        """Delete the container, its root filesystem and its snapshots (a running one only
        with ``force``). In a cluster, as ``cluster.containers.delete_many``: refused while a
        move holds it, and its location leaves the cluster store."""
        # a container on a member (a cluster's, or a client made for one member) is in the
        # cluster's record; a single host's is not (and must not open the cluster store)
        cluster = getattr(self._client, "cluster", None) if self.location else None
        if cluster is None:
            self._backend.container_delete(self.name, force=force)
            return
        from sysmgr.api.cluster_store import deleting

        with deleting(cluster, [self.name]):
            self._backend.container_delete(self.name, force=force)

    # -- storage -------------------------------------------------------------------------------
    def copy(self, name: str, *, snapshot: str | None = None, pool: str | None = None,
             target: str | None = None, refresh: bool = False, instance_only: bool = False,
             changes: Mapping[str, Any] | None = None, progress: Progress | None = None,
             meter: "Meter | None" = None) -> "Container":
        """Copy this container to a new stopped container ``name`` with a new identity.

        As ``lxc copy``: with its snapshots (streamed, see :mod:`sysmgr.api.migration`)
        unless ``instance_only`` (then on the same pool a pool-level copy: constant time on
        btrfs), or its ``snapshot`` alone; on ``pool`` (default: the same pool), on cluster
        member ``target`` (default: its own). ``refresh`` brings an existing copy ``name``
        up to date, sending only what changed since their newest common snapshot.
        ``changes`` change the copy's definition (``profiles``, ``config`` keys,
        ``devices`` set whole). The returned copy's ``transfer`` says what a stream sent (a
        :class:`~sysmgr.api.mover.MigrationResult`; None for a pool-level copy).
        """
        from sysmgr.api import migration

        elsewhere = target is not None and target != self.location
        if snapshot is not None and (refresh or elsewhere):
            raise ValidationError("a copy to another member (or --refresh) takes the "
                                  "container with its snapshots, not one snapshot",
                                  hint="copy the snapshot on its member first")
        streamed = refresh or elsewhere or (snapshot is None and not instance_only
                                            and bool(self.snapshots.all()))
        if not streamed:
            self._backend.container_copy(self.name, name, snapshot=snapshot, pool=pool,
                                         changes=dict(changes) if changes else None)
            return type(self)(self._client, self._backend.container_view(name))
        cluster = migration.cluster_of(self._client)
        if cluster is None and elsewhere:
            raise ValidationError(f"--target {target}: this root has no cluster members",
                                  hint="sysmgr cluster add NAME URL adds one")
        here = cluster is None
        cluster = cluster or migration.ThisHost(self._client)
        source = self.location or getattr(cluster, "member", "local")
        dest = target or source
        result = migration.copy(cluster, self.name, source, dest, name, pool=pool,
                                refresh=refresh, progress=progress, meter=meter,
                                changes=dict(changes) if changes else None,
                                instance_only=instance_only)
        backend = cluster.backend(dest)
        client = self._client if here else MemberClient(dest, backend, cluster)
        copied = type(self)(client, backend.container_view(name))
        copied.transfer = result
        return copied

    def migrate(self, member: str, *, live: bool = True, name: str | None = None,
                pool: str | None = None, progress: Progress | None = None,
                meter: "Meter | None" = None, wait: bool = False) -> "MigrationResult":
        """Move this container to cluster member ``member`` (as ``name``, onto ``pool``).
        Another move of it holds its lock: Conflict naming it, or (``wait``) wait for it.

        A running container on pools that stream incrementally moves near-live (copied
        while it runs, stopped only for the last increment); otherwise (``live=False``, or
        a dir pool) it is stopped first. It runs on ``member`` afterwards if it ran before;
        the result says how long it was down, in parts. On any failure it stays (running,
        if it ran) where it is. This object then describes it on ``member``.
        """
        from sysmgr.api import migration

        cluster = migration.cluster_of(self._client)
        if cluster is None or self.location is None:
            raise ValidationError("moving a container needs cluster members",
                                  hint="sysmgr cluster add NAME URL adds one")
        result = migration.move(cluster, self.name, self.location, member, new_name=name,
                                pool=pool, live=live, progress=progress, meter=meter,
                                wait=wait)
        backend = cluster.backend(member)
        self._client = MemberClient(member, backend, cluster)
        self.location = member
        self._set(backend.container_view(result.new_name))
        return result

    def move_to_pool(self, pool: str) -> None:
        """Move this (stopped) container, with its snapshots, to storage pool ``pool`` of its
        own host (``lxc move NAME -s POOL``): copied first, its record switched, then the
        old copy deleted; on a failure it stays where it was."""
        self._backend.container_move_pool(self.name, pool)
        self.refresh()

    def rename(self, name: str) -> None:
        """Rename this (stopped) container."""
        self._backend.container_rename(self.name, name)
        self.name = name
        self.refresh()

    def export(self, path: "str | BinaryIO", *, optimized: bool = False,
               progress: Progress | None = None, volumes: bool = False,
               instance_only: bool = False) -> Any:
        """Write a backup file (config, snapshots, root filesystem; zstd), or the same bytes
        to an open binary stream (``export NAME -``). ``optimized`` stores the pool's own
        streams (imports only onto a pool of the same kind); ``volumes`` carries the custom
        volumes its disks name (an import makes them again); ``instance_only`` leaves the
        snapshots out."""
        return self._backend.container_export(self.name, path, optimized=optimized,
                                              progress=progress, volumes=volumes,
                                              instance_only=instance_only)

    def state(self) -> ContainerState:
        """Status, init pid and usage (memory, peak, processes, CPU time, disk) now."""
        v = self._backend.container_view(self.name, usage=True)
        u = v.usage
        return ContainerState(_STATUS_WORD[v.status.state], v.status.pid,
                              u.memory_bytes if u else None, u.memory_peak_bytes if u else None,
                              u.pids if u else None, u.cpu_ns if u else None, v.disk_bytes,
                              u.oom_kills if u else None)

    def limits(self) -> "Limits":
        """The container's ``limits.*`` in kernel terms."""
        return self._backend.container_limits(self.name)

    # -- config (pylxd: edit .config then save()) ------------------------------------------------
    def save(self) -> list[str]:
        """Store the local ``config``/``devices``/``profiles``/``description``; live keys
        apply at once. Returns the keys that need a restart to take effect."""
        pending = self._backend.container_update(
            self.name, config=self.config, devices=self.devices, profiles=self.profiles,
            description=self.description)
        self.refresh()
        return pending

    def set_config(self, values: Mapping[str, str], unset: Sequence[str] = ()) -> list[str]:
        """Set and unset local config keys; the keys that need a restart."""
        pending = self._backend.container_set_config(self.name, values, unset)
        self.refresh()
        return pending

    # -- processes -------------------------------------------------------------------------------
    def execute(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                cwd: str | None = None, stdin: bytes | None = None, user: int | None = None,
                group: int | None = None) -> ExecResult:
        """Run a command to completion, capturing its output (bytes decoded as UTF-8); as
        ``user``/``group`` (the container's ids; default root)."""
        code, out, err = self._backend.exec_capture(self.name, argv, env=env, cwd=cwd,
                                                    stdin=stdin, user=user, group=group)
        return ExecResult(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def interactive(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, tty: bool | None = None,
                    stdin: int = 0, stdout: int = 1, stderr: int = 2, user: int | None = None,
                    group: int | None = None) -> int:
        """Run a command with the caller's stdio streamed through; with ``tty`` (default:
        when stdin and stdout are terminals) on a pty inside the container. Returns the
        command's exit code."""
        return self._backend.exec_interactive(self.name, argv, env=env, cwd=cwd, tty=tty,
                                              stdin=stdin, stdout=stdout, stderr=stderr,
                                              user=user, group=group)

    def shell(self) -> int:
        """A login shell inside, like ``lxc shell`` (``su -l`` when the image has su)."""
        return self.interactive(self._backend.shell_argv(self.name))

    def console_log(self) -> str:
        """What init and its children wrote to ``/dev/console``."""
        return self._backend.container_console_log(self.name)

    def __repr__(self) -> str:
        return f"<Container {self.name} {self.status}>"


class ContainerFiles:
    """``container.files``: push and pull files, resolved inside the container's root."""

    def __init__(self, container: Container) -> None:
        self._c = container

    def put(self, path: str, data: bytes | BinaryIO, *, mode: int | None = None, uid: int = 0,
            gid: int = 0, mkdir: bool = False) -> None:
        """Write ``data`` to ``path`` inside (``mkdir``: create missing parent directories)."""
        src = BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        self._c._backend.file_put(self._c.name, path, src, mode=0o644 if mode is None else mode,
                                  uid=uid, gid=gid, mkdir=mkdir)

    def get(self, path: str) -> bytes:
        """The contents of the file at ``path`` inside."""
        return self._c._backend.file_get(self._c.name, path)

    def pull(self, path: str, dst: BinaryIO) -> None:
        """Copy the file at ``path`` inside to the open file ``dst``."""
        self._c._backend.file_pull(self._c.name, path, dst)

    def stat(self, path: str) -> Any:
        """``mode``, ``uid``, ``gid`` (the container's ids, as its processes see them) and
        ``size`` of the file at ``path`` inside."""
        return self._c._backend.file_stat(self._c.name, path)

    def mkdir(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
              parents: bool = False) -> None:
        """Create a directory inside (an existing one gets ``mode`` and the owner)."""
        self._c._backend.file_mkdir(self._c.name, path, mode=mode, uid=uid, gid=gid,
                                    parents=parents)

    def symlink(self, path: str, target: str, *, uid: int = 0, gid: int = 0) -> None:
        self._c._backend.file_symlink(self._c.name, path, target, uid=uid, gid=gid)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, a link or an empty directory inside (``recursive``: any)."""
        self._c._backend.file_delete(self._c.name, path, recursive=recursive)

    def listdir(self, path: str) -> list[Any]:
        """The entries of a directory inside: ``name``, ``mode``, ``uid``, ``gid``, ``size``,
        ``target`` (a link's), sorted by name."""
        return self._c._backend.file_list(self._c.name, path)

    def push_tree(self, local: str, path: str, *, uid: int | None = None,
                  gid: int | None = None, mode: int | None = None,
                  parents: bool = False) -> list[str]:
        """Copy the local directory ``local`` to ``path`` inside (``lxc file push -r``):
        directories, regular files and symlinks, with their local modes and owners unless
        ``uid``/``gid`` (everything) or ``mode`` (files) say otherwise. Returns the local
        paths skipped (devices, sockets, FIFOs)."""
        from sysmgr.api import filetrees  # the tree walks only when asked for

        return filetrees.push_tree(self, local, path, uid=uid, gid=gid, mode=mode,
                                   parents=parents)

    def pull_tree(self, path: str, local: str) -> list[str]:
        """Copy the directory ``path`` inside to the local ``local`` (created; ``lxc file
        pull -r``); returns the container paths skipped (devices, sockets, FIFOs)."""
        from sysmgr.api import filetrees

        return filetrees.pull_tree(self, path, local)


class ContainerManager(Manager[Container]):
    """``client.containers``."""

    kind = "container"
    model = Container

    def all(self, *, usage: bool = False, counters: bool = False) -> list[Container]:
        """Every container (``usage``: with memory, processes, CPU and disk usage;
        ``counters``: also each nic's traffic counters and the root filesystem's size)."""
        kw = {"counters": True} if counters else {}  # a member of an older version: no such word
        return [self._wrap(v) for v in self._backend.container_views(usage=usage, **kw)]

    def get(self, name: str) -> Container:
        return self._wrap(self._backend.container_view(name))

    def names(self) -> list[str]:
        """Every container's name: the records alone, no status read (cheap: completion)."""
        return self._backend.container_names()

    # -- by name, without reading the container first: one call to the host (on a cluster
    # member, one SSH channel), which reports a missing or stopped container itself. The
    # CLI's hot verbs use these; a Container object's methods also re-read it afterwards.

    def _backend_of(self, name: str) -> Any:
        """The backend of the host container ``name`` lives on."""
        return self._backend

    def interactive(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, tty: bool | None = None, user: int | None = None,
                    group: int | None = None) -> int:
        """:meth:`Container.interactive` by name (the CLI's ``exec``)."""
        return self._backend_of(name).exec_interactive(name, argv, env=env, cwd=cwd, tty=tty,
                                                       stdin=0, stdout=1, stderr=2, user=user,
                                                       group=group)

    def shell(self, name: str) -> int:
        """:meth:`Container.shell` by name (the CLI's ``shell``)."""
        backend = self._backend_of(name)
        return backend.exec_interactive(name, backend.shell_argv(name), env=None, cwd=None,
                                        tty=None, stdin=0, stdout=1, stderr=2)

    def start(self, name: str) -> list[str]:
        """:meth:`Container.start` by name; returns what the start had to leave out (its
        ``warnings``)."""
        return list(self._backend_of(name).container_start(name) or ())

    def stop(self, name: str, *, timeout: float | None = None, force: bool = False) -> bool:
        """:meth:`Container.stop` by name: True when init shut down by itself, False when it
        had to be killed."""
        return self._backend_of(name).container_stop(name, timeout=timeout, force=force)

    def import_(self, path: "str | BinaryIO", *, name: str | None = None, pool: str | None = None,
                progress: Progress | None = None, allow_devices: bool = False,
                warn: Warn | None = None) -> Container:
        """Create a stopped container from a backup file (``Container.export``) or an open
        binary stream holding one (``import -``).

        Device nodes in the backup's trees are dropped unless ``allow_devices`` (the
        runtime makes the container's ``/dev``); each warning naming them goes to ``warn``
        and is in the returned container's ``warnings``.
        """
        said: list[str] = []
        name = self._backend.container_import(path, name=name, pool=pool, progress=progress,
                                              allow_devices=allow_devices,
                                              warn=collect_warnings(said, warn))
        c = self.get(name)
        c.warnings = tuple(said)
        return c

    # -- several at once ---------------------------------------------------------------------
    def start_many(self, names: Sequence[str]) -> list["Outcome"]:
        """Start several containers in one call (``sysmgr start c1 c2 ...``): one pass over
        their networks and one netlink socket instead of one command's worth each. Each
        starts whole or not at all; one that fails is reported in its
        :class:`~sysmgr.types.Outcome` (``ok``, ``error``, ``hint``) and the others go on
        (those started stay running). A start's ``warnings`` are in its outcome."""
        return self._backend.containers_start(list(names))

    def stop_many(self, names: Sequence[str], *, timeout: float | None = None,
                  force: bool = False) -> list["Outcome"]:
        """Stop several containers at once: every halt signal (``force``: every kill) is
        sent before any is waited for, so ``timeout`` bounds them all together. An
        outcome's ``graceful`` is :meth:`Container.stop`'s answer."""
        return self._backend.containers_stop(list(names), timeout=timeout, force=force)

    def delete_many(self, names: Sequence[str], *, force: bool = False) -> list["Outcome"]:
        """Delete several containers (the running ones with ``force``, killed together);
        one outcome each, as :meth:`start_many`."""
        return self._backend.containers_delete(list(names), force=force)

    def free_name(self) -> str:
        """A name no container has, in LXD's style (``fond-cricket``): what ``lxc launch
        IMAGE`` without a name gets."""
        from sysmgr.engine.records import free_name

        return free_name(self.exists)

    def create(self, name: str | None, image: str, *, profiles: Sequence[str] | None = None,
               config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               description: str = "", start: bool = False, wait: bool = True) -> Container:
        """Create a container from an image (alias or fingerprint); ``start`` it if asked
        (``lxc launch``). If the start fails the new container is deleted again. Without a
        ``name`` it gets a free one (:meth:`free_name`)."""
        name = name or self.free_name()
        self._backend.container_create(name, image, profiles=profiles, config=config,
                                       devices=devices, pool=pool, description=description,
                                       start=start)
        return self.get(name)

    def check(self, name: str, image: str, *, profiles: Sequence[str] | None = None,
              config: Mapping[str, str] | None = None,
              devices: Mapping[str, Mapping[str, str]] | None = None,
              pool: str | None = None) -> None:
        """Raise what :meth:`create` would refuse (ValidationError, AlreadyExists) without
        creating anything: ``launch`` checks before it says "Creating"."""
        self._backend.container_check(name, image, profiles=profiles, config=config,
                                      devices=devices, pool=pool)
