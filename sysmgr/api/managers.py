"""Managers and model objects of the Python API (pylxd's shape, explicit ``refresh()``)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping, Sequence

from sysmgr.engine.host import ContainerView
from sysmgr.state.db import ImageRecord, PoolRecord, ProfileRecord

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client
    from sysmgr.engine.actions import Plan
    from sysmgr.engine.apply import ApplyResult
    from sysmgr.model.objects import Manifest

Progress = Callable[[str], None]


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


def _images():
    """Image operations, imported on first use (they pull in yaml and tar handling)."""
    from sysmgr.engine import images

    return images


_STATUS_WORD = {"RUNNING": "Running", "STOPPED": "Stopped", "FROZEN": "Frozen"}


# -- containers -----------------------------------------------------------------------------

class Container:
    """A container. Fields are a snapshot taken when the object was made; ``refresh()``."""

    def __init__(self, client: "Client", view: ContainerView) -> None:
        self._client = client
        self._set(view)
        self.files = ContainerFiles(self)
        from sysmgr.api.snapshots import SnapshotManager

        self.snapshots = SnapshotManager(self)

    def _set(self, view: ContainerView) -> None:
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
        # nics: {device: {name, host_name, hwaddr, network, parent, ipv4, dhcp}}; ipv4: the
        # addresses of a running container as `list` shows them, "10.0.3.5 (eth0)"
        self.nics: dict[str, dict[str, Any]] = dict(view.extra.get("nics") or {})
        self.ipv4: list[str] = list(view.extra.get("ipv4") or [])

    @property
    def _host(self):
        return self._client.host

    def refresh(self) -> "Container":
        self._set(self._host.view(self.name))
        return self

    # lifecycle
    def start(self, wait: bool = True) -> None:
        self._host.start(self.name)
        self.refresh()

    def stop(self, timeout: float | None = None, force: bool = False, wait: bool = True) -> bool:
        """Stop the container: the image's halt signal, then a kill after ``timeout`` seconds
        (default ``boot.host_shutdown_timeout``, 30). Returns True when init shut down by
        itself, False when it had to be killed."""
        graceful = self._host.stop(self.name, timeout=timeout, force=force)
        self.refresh()
        return graceful

    def restart(self, timeout: float | None = None, force: bool = False) -> None:
        self._host.restart(self.name, timeout=timeout, force=force)
        self.refresh()

    def freeze(self) -> None:
        self._host.freeze(self.name)
        self.refresh()

    def unfreeze(self) -> None:
        self._host.unfreeze(self.name)
        self.refresh()

    def delete(self, force: bool = False) -> None:
        """Delete the container, its root filesystem and its snapshots."""
        self._host.delete_container(self.name, force=force)

    # storage (sysmgr.api.snapshots): copy, rename, backups
    def copy(self, name: str, *, snapshot: str | None = None, pool: str | None = None) -> "Container":
        """Copy this container (or its ``snapshot``) to a new stopped container ``name``
        with a new identity, on ``pool`` (default: the same pool)."""
        from sysmgr.api import snapshots

        snapshots.copy(self, name, snapshot=snapshot, pool=pool)
        return self._client.containers.get(name)

    def rename(self, name: str) -> None:
        """Rename this (stopped) container."""
        from sysmgr.api import snapshots

        snapshots.rename(self, name)
        self.name = name
        self.refresh()

    def export(self, path: str, *, optimized: bool = False, progress: Progress | None = None):
        """Write a backup file (config, snapshots, root filesystem; zstd). ``optimized``
        stores the pool's own streams (imports only onto a pool of the same kind)."""
        from sysmgr.api import snapshots

        return snapshots.export(self, path, optimized=optimized, progress=progress)

    def state(self) -> ContainerState:
        v = self._host.view(self.name, usage=True)
        u = v.usage
        disk = None
        try:
            disk = self._host.pool_driver(v.record.pool).container_usage(self.name)
        except Exception:  # usage is informational; a pool hiccup must not fail `info`
            disk = None
        return ContainerState(_STATUS_WORD[v.status.state], v.status.pid,
                              u.memory_bytes if u else None, u.memory_peak_bytes if u else None,
                              u.pids if u else None, u.cpu_ns if u else None, disk)

    def limits(self):
        from sysmgr.model import keys

        from sysmgr._util.hostinfo import host_facts  # TEMP: host facts for the pure model

        facts = host_facts()
        return keys.limits_from_config(self.expanded_config, host_cpus=facts.cpus,
                                       host_mem=facts.memory_bytes)

    # config (pylxd: edit .config then save())
    def save(self) -> list[str]:
        """Store the local ``config``/``devices``/``profiles``/``description``; live keys
        apply at once. Returns the keys that need a restart to take effect."""
        pending = self._host.update_container(self.name, config=self.config, devices=self.devices,
                                              profiles=self.profiles, description=self.description)
        self.refresh()
        return pending

    def set_config(self, values: Mapping[str, str], unset: Sequence[str] = ()) -> list[str]:
        pending = self._host.set_config(self.name, values, unset)
        self.refresh()
        return pending

    # exec
    def execute(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                cwd: str | None = None, stdin: bytes | None = None) -> ExecResult:
        """Run a command to completion, capturing its output (bytes decoded as UTF-8)."""
        host = self._host
        init = host.running_init(self.name)
        spec = host.process_spec(self.name, argv, env=env, cwd=cwd)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            proc = host.runtime.exec(init, spec, stdin=in_r, stdout=out_w, stderr=err_w)
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        out: list[bytes] = []
        err: list[bytes] = []

        def feed() -> None:
            with os.fdopen(in_w, "wb") as f:
                try:
                    if stdin:
                        f.write(stdin)  # a buffered file writes all of it, in as many writes as needed
                except BrokenPipeError:
                    pass

        def drain(fd: int, sink: list[bytes]) -> None:
            with os.fdopen(fd, "rb") as f:
                sink.append(f.read())

        threads = [threading.Thread(target=feed), threading.Thread(target=drain, args=(out_r, out)),
                   threading.Thread(target=drain, args=(err_r, err))]
        for t in threads:
            t.start()
        code = proc.wait()
        for t in threads:
            t.join()
        return ExecResult(code, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def interactive(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, tty: bool | None = None,
                    stdin: int = 0, stdout: int = 1, stderr: int = 2) -> int:
        """Run a command with the caller's stdio streamed through; with ``tty`` (default:
        when stdin and stdout are terminals) on a pty inside the container. Returns the
        command's exit code."""
        host = self._host
        if tty is None:
            tty = os.isatty(stdin) and os.isatty(stdout)
        init = host.running_init(self.name)
        spec = host.process_spec(self.name, argv, env=env, cwd=cwd, tty=tty)
        if tty:
            from sysmgr._util import ptyproxy

            proc, master = host.runtime.exec_pty(init, spec)
            try:
                return ptyproxy.proxy(master, proc, stdin, stdout)
            finally:
                os.close(master)
        return host.runtime.exec(init, spec, stdin=stdin, stdout=stdout, stderr=stderr).wait()

    def shell(self) -> int:
        """A login shell inside, like ``lxc shell`` (``su -l`` when the image has su)."""
        root = self._host.file_root(self.name)
        from sysmgr._util import safefs

        argv = ["su", "-l"] if any(safefs.exists(root, p) for p in ("/bin/su", "/usr/bin/su")) \
            else ["/bin/sh", "-l"]
        return self.interactive(argv)

    def console_log(self) -> str:
        return self._host.console_log(self.name)

    def __repr__(self) -> str:
        return f"<Container {self.name} {self.status}>"


class ContainerFiles:
    """``container.files``: push and pull files, resolved inside the container's root."""

    def __init__(self, container: Container) -> None:
        self._c = container

    def put(self, path: str, data: bytes | BinaryIO, *, mode: int | None = None, uid: int = 0,
            gid: int = 0, mkdir: bool = False) -> None:
        from io import BytesIO

        from sysmgr._util import safefs

        root = self._c._host.file_root(self._c.name)
        src = BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        safefs.push(root, path, src, mode=0o644 if mode is None else mode, uid=uid, gid=gid,
                    mkdir_parents=mkdir)

    def get(self, path: str) -> bytes:
        from sysmgr._util import safefs

        return safefs.read_file(self._c._host.file_root(self._c.name), path)

    def pull(self, path: str, dst: BinaryIO) -> None:
        from sysmgr._util import safefs

        safefs.pull(self._c._host.file_root(self._c.name), path, dst)


class ContainerManager:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def all(self, *, usage: bool = False) -> list[Container]:
        return [Container(self._client, v) for v in self._client.host.views(usage=usage)]

    def get(self, name: str) -> Container:
        return Container(self._client, self._client.host.view(name))

    def exists(self, name: str) -> bool:
        return self._client.host.store.has_container(name)

    def import_(self, path: str, *, name: str | None = None, pool: str | None = None,
                progress: Progress | None = None) -> Container:
        """Create a stopped container from a backup file (``Container.export``)."""
        from sysmgr.api import snapshots

        return self.get(snapshots.import_(self._client.host, path, name=name, pool=pool,
                                          progress=progress))

    def create(self, name: str, image: str, *, profiles: Sequence[str] | None = None,
               config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               description: str = "", start: bool = False, wait: bool = True) -> Container:
        """Create a container from an image (alias or fingerprint); ``start`` it if asked
        (``lxc launch``). If the start fails the new container is deleted again."""
        host = self._client.host
        with host.locked():
            host.create_container(name, image, profiles=profiles, config=config, devices=devices,
                                  pool=pool, description=description)
            if start:
                try:
                    host.start(name)
                except BaseException:
                    host.delete_container(name, force=True)
                    raise
        return self.get(name)


# -- profiles -------------------------------------------------------------------------------

class Profile:
    def __init__(self, client: "Client", rec: ProfileRecord) -> None:
        self._client = client
        self.name = rec.name
        self.description = rec.description
        self.config = dict(rec.config)
        self.devices = {k: dict(v) for k, v in rec.devices.items()}

    @property
    def used_by(self) -> list[str]:
        return self._client.host.store.containers_using_profile(self.name)

    def save(self) -> None:
        self._client.host.put_profile(
            ProfileRecord(self.name, self.description, self.config, self.devices), create=False)

    def delete(self) -> None:
        self._client.host.delete_profile(self.name)

    def refresh(self) -> "Profile":
        rec = self._client.host.store.profile(self.name)
        self.__init__(self._client, rec)  # type: ignore[misc]
        return self

    def __repr__(self) -> str:
        return f"<Profile {self.name}>"


class ProfileManager:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def all(self) -> list[Profile]:
        return [Profile(self._client, r) for r in self._client.host.store.profiles()]

    def get(self, name: str) -> Profile:
        return Profile(self._client, self._client.host.store.profile(name))

    def exists(self, name: str) -> bool:
        return self._client.host.store.has_profile(name)

    def create(self, name: str, *, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, description: str = "") -> Profile:
        from sysmgr.model import keys

        rec = ProfileRecord(name, description, {k: keys.value_to_str(v) for k, v in (config or {}).items()},
                            {k: {dk: keys.value_to_str(dv) for dk, dv in d.items()} for k, d in (devices or {}).items()})
        self._client.host.put_profile(rec, create=True)
        return self.get(name)


# -- images ---------------------------------------------------------------------------------

class Image:
    def __init__(self, client: "Client", rec: ImageRecord) -> None:
        self._client = client
        self.fingerprint = rec.fingerprint
        self.aliases = list(rec.aliases)
        self.metadata = dict(rec.metadata)
        self.properties: dict[str, str] = dict(rec.metadata.get("properties") or {})
        self.size = rec.size
        self.created_at = rec.created
        self.source = rec.source

    @property
    def used_by(self) -> list[str]:
        return _images().in_use(self._client.host, self.fingerprint)

    def delete(self) -> None:
        _images().delete(self._client.host, self.fingerprint)

    def __repr__(self) -> str:
        return f"<Image {self.fingerprint[:12]} {self.aliases}>"


class ImageManager:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def all(self) -> list[Image]:
        return [Image(self._client, r) for r in self._client.host.store.images()]

    def get(self, ref: str) -> Image:
        return Image(self._client, self._client.host.store.image(ref))

    def exists(self, ref: str) -> bool:
        return self._client.host.store.has_image(ref)

    def build(self, builder: str, *, alias: str | None = None, options: Mapping[str, str] | None = None,
              pool: str | None = None, progress: Progress | None = None) -> Image:
        rec = _images().build(self._client.host, builder, alias=alias, options=options, pool=pool,
                            progress=progress)
        return Image(self._client, rec)

    def import_(self, path: str, *, alias: str | None = None, pool: str | None = None,
                progress: Progress | None = None) -> Image:
        rec = _images().import_image(self._client.host, path, alias=alias, pool=pool, progress=progress)
        return Image(self._client, rec)

    def alias(self, alias: str, ref: str) -> None:
        _images().set_alias(self._client.host, alias, ref)

    def delete_alias(self, alias: str) -> None:
        _images().delete_alias(self._client.host, alias)


# -- storage pools --------------------------------------------------------------------------

class StoragePoolObj:
    def __init__(self, client: "Client", rec: PoolRecord) -> None:
        self._client = client
        self.name = rec.name
        self.driver = rec.driver
        self.config = dict(rec.config)
        self.description = rec.description

    @property
    def used_by(self) -> list[str]:
        return [c.name for c in self._client.host.store.containers() if c.pool == self.name]

    def usage(self):
        return self._client.host.pool_driver(self.name).usage()

    def delete(self) -> None:
        self._client.host.delete_pool(self.name)

    def __repr__(self) -> str:
        return f"<StoragePool {self.name} ({self.driver})>"


class StoragePoolManager:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def all(self) -> list[StoragePoolObj]:
        return [StoragePoolObj(self._client, r) for r in self._client.host.store.pools()]

    def get(self, name: str) -> StoragePoolObj:
        return StoragePoolObj(self._client, self._client.host.store.pool(name))

    def exists(self, name: str) -> bool:
        return self._client.host.store.has_pool(name)

    def create(self, name: str, driver: str = "dir", config: Mapping[str, str] | None = None,
               description: str = "") -> StoragePoolObj:
        rec = self._client.host.create_pool(name, driver, dict(config or {}), description)
        return StoragePoolObj(self._client, rec)


# -- manifests ------------------------------------------------------------------------------

class ManifestManager:
    """``validate`` / ``plan`` (diff) / ``apply`` for manifest files and directories."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def load(self, paths: Sequence[str]) -> "Manifest":
        from sysmgr.model.loader import load_paths

        return load_paths(paths)

    def validate(self, paths: Sequence[str]) -> "Manifest":
        """Load and check the manifests, including references to existing objects when the
        host root exists. Raises ValidationError listing every problem."""
        from sysmgr.engine import planner

        manifest = self.load(paths)
        if self._client.layout.exists():
            planner.check_references(manifest, self._observe())
        return manifest

    def _observe(self):
        from sysmgr.engine.observe import observe

        return observe(self._client.host)

    def plan(self, paths: Sequence[str]) -> "Plan":
        from sysmgr.engine import planner

        manifest = self.load(paths)
        return planner.plan(manifest, self._observe())

    def apply(self, plan: "Plan", *, progress: Progress | None = None) -> "ApplyResult":
        from sysmgr.engine.apply import apply

        return apply(self._client.host, plan, progress=progress)
