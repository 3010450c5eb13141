"""Cluster members behind the same API door: :func:`connect` and :class:`RemoteBackend`.

    >>> backend = connect(spec, admin_root="/var/lib/sysmgr")   # a MemberSpec
    >>> backend.container_views()                               # same records as locally

``connect`` gives a :class:`~sysmgr.api.local.LocalBackend` for a ``local:`` member and a
:class:`RemoteBackend` for an ``ssh://user@host[:port]`` one: one SSH connection for the
command, the member's ``sysmgr _rpc`` on one channel of it, every Backend method sent as the
same call (records and errors come back as the same classes, so exit codes stay right), and
streams — exec, file push/pull, export/import — on channels of their own.

Errors: an address that does not answer is :class:`~sysmgr.errors.MemberUnreachable` (exit
1); a bad key file, an unknown or changed host key, a refused login, a member whose sysmgr
speaks another RPC version are :class:`~sysmgr.errors.RemoteRejected` (exit 2).
"""

from __future__ import annotations

import abc
import functools
from io import BytesIO
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Sequence

from sysmgr.api import events
from sysmgr.api.backend import Backend, Config, Progress, Warn
from sysmgr.api.local import LocalBackend
from sysmgr.api.member import hello_info
from sysmgr.errors import HostKeyRejected, Issue, MemberUnreachable, ValidationError
from sysmgr.layout import Layout
from sysmgr.remote import muxclient, protocol, ssh, streams
from sysmgr.remote.manifests import pack
from sysmgr.remote.protocol import RPC_VERSION, Hello
from sysmgr.remote.session import MemberSession
from sysmgr.remote.ssh import HostKey, known_hosts_path
from sysmgr.types import MemberSpec

__all__ = ["RPC_VERSION", "Hello", "HostKey", "RemoteBackend", "accept_host_key", "connect",
           "fetch_host_key", "forget_connections", "forget_host_key", "hello",
           "known_hosts_path"]


class RemoteBackend(Backend):
    """A cluster member over SSH. Methods not written out below are sent as they are (see
    the end of this module); those here need a stream or files of the admin host."""

    def __init__(self, session: MemberSession) -> None:
        self.session = session
        self.spec = session.spec
        self.root = session.spec.root

    @property
    def hello(self) -> Hello:
        """What the member says about itself (starts its RPC server if not yet running)."""
        return self.session.start()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "RemoteBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes and files ---------------------------------------------------------------
    def exec_interactive(self, name: str, argv: Sequence[str], *, env: Config | None,
                         cwd: str | None, tty: bool | None, stdin: int, stdout: int,
                         stderr: int, user: int | None = None, group: int | None = None) -> int:
        return streams.exec_interactive(self.session, name, argv, env=env, cwd=cwd, tty=tty,
                                        stdin=stdin, stdout=stdout, stderr=stderr, user=user,
                                        group=group)

    def file_put(self, name: str, path: str, src: BinaryIO, *, mode: int, uid: int, gid: int,
                 mkdir: bool) -> None:
        streams.file_put(self.session, name, path, src, mode=mode, uid=uid, gid=gid, mkdir=mkdir)

    def file_get(self, name: str, path: str) -> bytes:
        buf = BytesIO()
        streams.file_pull(self.session, name, path, buf)
        return buf.getvalue()

    def file_pull(self, name: str, path: str, dst: BinaryIO) -> None:
        streams.file_pull(self.session, name, path, dst)

    # -- copies and moves: a stream of their own -----------------------------------------------
    def migration_open(self, role: str, request: Mapping[str, Any]) -> Any:
        return streams.migration_endpoint(self.session, role, request)

    # -- backups and images: the files are the admin host's ------------------------------------
    def container_export(self, name: str, path: str | BinaryIO, *, optimized: bool,
                         progress: Progress | None, volumes: bool = False,
                         instance_only: bool = False) -> Any:
        return streams.container_export(self.session, name, path, optimized=optimized,
                                         progress=progress, volumes=volumes,
                                         instance_only=instance_only)

    def container_import(self, path: str | BinaryIO, *, name: str | None, pool: str | None,
                         progress: Progress | None, allow_devices: bool = False,
                         warn: Warn | None = None) -> str:
        return streams.import_file(self.session, "container", path,
                                   {"name": name, "pool": pool, "allow_devices": allow_devices},
                                   progress=progress, warn=warn)

    def image_import(self, path: str, *, alias: str | None, pool: str | None,
                     progress: Progress | None, allow_devices: bool = False,
                     warn: Warn | None = None, platform: str | None = None) -> Any:
        return streams.import_file(self.session, "image", path,
                                   {"alias": alias, "pool": pool, "allow_devices": allow_devices,
                                    "platform": platform},
                                   progress=progress, warn=warn)

    def image_publish(self, ref: str, *, fmt: str, output: str | None, alias: str | None,
                      progress: Progress | None) -> tuple[str, Any]:
        if fmt == "image" or not output:  # into the member's store (or refused there)
            return self.session.call("image_publish", [ref],
                                     {"fmt": fmt, "output": None, "alias": alias,
                                      "progress": progress})
        # for OCI tooling: the file or directory is the admin host's
        return streams.image_publish(self.session, ref, fmt=fmt, output=output, alias=alias,
                                     progress=progress)

    def image_export(self, ref: str, path: str, *, progress: Progress | None) -> str:
        return streams.image_export(self.session, ref, path, progress=progress)

    def image_receive(self, path: str, *, fingerprint: str, digest: str,
                      aliases: Sequence[str], origin: str, progress: Progress | None) -> Any:
        return streams.import_file(self.session, "image-receive", path,
                                   {"fingerprint": fingerprint, "digest": digest,
                                    "aliases": list(aliases), "origin": origin},
                                   progress=progress, warn=None)

    # -- events: the member's log cannot be watched from here, so it is asked what is new --------
    def event_follow(self, *, types: Sequence[str] | None, from_end: bool,
                     since: float | None, stop: Any) -> Iterator[Any]:
        return events.poll(self, types=list(types) if types else None, from_end=from_end,
                           since=since, stop=stop)

    # -- manifests: the files are the admin host's ---------------------------------------------
    # (a cluster plan sends each member its share as an already loaded Manifest record)
    def manifest_validate(self, paths: Sequence[str]) -> Any:
        return self.session.call("manifest_validate", [_files_or_manifest(paths)], {})

    def manifest_plan(self, paths: Sequence[str], *, prune: bool = False, backup: bool = True,
                      keep_backups: float | None = None,
                      revision: str = "") -> Any:
        return self.session.call("manifest_plan", [_files_or_manifest(paths)],
                                 {"prune": prune, "backup": backup, "revision": revision,
                                  "keep_backups": keep_backups})

    def __repr__(self) -> str:
        return f"<RemoteBackend {self.spec.name} {self.spec.url} root={self.root}>"


def _files_or_manifest(paths: Any) -> Any:
    """File names are packed with their contents; a loaded Manifest travels as a record."""
    if isinstance(paths, (str, list, tuple)):
        return pack(paths)
    return paths


def _forward(name: str) -> Callable[..., Any]:
    """A method sending Backend call ``name`` to the member as it is."""
    @functools.wraps(getattr(Backend, name), updated=())  # not __isabstractmethod__
    def call(self: RemoteBackend, *args: Any, **kwargs: Any) -> Any:
        return self.session.call(name, args, kwargs)
    return call


# Every other Backend method travels as it is: a method added to Backend later works over
# the RPC at once (its arguments and records must be in the codec's registry).
for _name in sorted(Backend.__abstractmethods__):
    if _name not in RemoteBackend.__dict__:
        setattr(RemoteBackend, _name, _forward(_name))
abc.update_abstractmethods(RemoteBackend)


def _check_url(spec: MemberSpec) -> None:
    if not spec.url.startswith("ssh://"):
        raise ValidationError([Issue(f"member {spec.name}: unsupported URL {spec.url!r}: "
                                     "expected ssh://user@host[:port] or local:", path="url")])


def connect(spec: MemberSpec, *, admin_root: str, timeout: float = 5.0,
            hello: bool = False) -> Backend:
    """The backend of member ``spec``: this host's engine for ``local:``, the member over
    SSH for ``ssh://`` (host key checked against ``admin_root``'s known_hosts, key login).
    The caller closes it. ``timeout`` bounds connecting, logging in and each channel opened.

    The member's sysmgr starts with the first call: an incompatible or missing sysmgr there
    is refused (RemoteRejected) by that call — or here already with ``hello=True``."""
    if spec.is_local:
        return LocalBackend(_local_layout(spec))
    _check_url(spec)
    return RemoteBackend(MemberSession.open(spec, admin_root=admin_root, timeout=timeout,
                                            hello=hello))


def _local_layout(spec: MemberSpec) -> Layout:
    """A ``local:`` member's root, which must exist (a root moved away is unreachable)."""
    layout = Layout(spec.root)
    if not layout.exists():
        raise MemberUnreachable(f"{spec.root} is not an initialised sysmgr root",
                                hint=f"sysmgr --root {spec.root} init")
    return layout


def hello(spec: MemberSpec, *, admin_root: str, timeout: float = 5.0) -> Hello:
    """What member ``spec`` says about itself (sysmgr and RPC version, root, hostname,
    cpus, memory, containers); the same errors as :func:`connect`."""
    if spec.is_local:
        backend = LocalBackend(_local_layout(spec))
        try:
            return protocol.parse_hello(hello_info(backend))
        finally:
            backend.close()
    _check_url(spec)
    session = MemberSession.open(spec, admin_root=admin_root, timeout=timeout, hello=True)
    try:
        return session.start()
    finally:
        session.close()


def fetch_host_key(url: str, *, timeout: float = 5.0) -> HostKey:
    """The SSH host key the member at ``url`` shows (its ``fingerprint`` for the user to
    confirm); nothing is recorded."""
    return ssh.fetch_host_key(url, timeout=timeout)


def accept_host_key(admin_root: str, url: str, fingerprint: str, *,
                    timeout: float = 5.0) -> HostKey:
    """Record the member's host key in ``admin_root``'s known_hosts if it is the one
    ``fingerprint`` (``SHA256:...``) names; HostKeyRejected otherwise."""
    key = ssh.fetch_host_key(url, timeout=timeout)
    if key.fingerprint != fingerprint:
        raise HostKeyRejected(f"{url} shows host key {key.fingerprint}, not {fingerprint}",
                              fingerprint=key.fingerprint)
    ssh.record_host_key(admin_root, url, key)
    muxclient.stop(admin_root)  # the trusted keys changed: no kept connection outlives that
    return key


def forget_host_key(admin_root: str, url: str) -> None:
    """Stop trusting the member's host key (``cluster remove``); kept connections end."""
    ssh.forget_host_key(admin_root, url)
    muxclient.stop(admin_root)


def forget_connections(admin_root: str, member: str | None = None) -> None:
    """End the kept connections (muxes) of ``member`` (of every member: None)."""
    muxclient.stop(admin_root, member)
