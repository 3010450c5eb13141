"""``sysmgr.Client``: the object API every front end uses.

    >>> import sysmgr
    >>> client = sysmgr.Client(root="/var/lib/sysmgr")
    >>> c = client.containers.create("web1", image="busybox", start=True)
    >>> c.execute(["hostname"]).stdout
    'web1\\n'

Managers (``containers``, ``profiles``, ``images``, ``storage_pools``, ``storage_volumes``,
``networks``, ``manifests``, ``events``) return model objects; an object's fields are a snapshot: call
``refresh()`` to re-read (no hidden I/O on attribute access). Mutating calls take the host root's lock. Every
call goes through the client's :attr:`Client.backend` (this host: the engine).

A root with cluster members (``client.cluster``) is an admin root: ``client.containers`` then
spans every member (listing them all at once, finding where a container lives, placing new
ones) and ``client.manifests`` plans across them; the other managers stay on the admin root's
own host. ``Client(member="node2")`` gives the same managers on one member.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from sysmgr.api.backend import Backend
from sysmgr.api.containers import ContainerManager
from sysmgr.api.local import LocalBackend
from sysmgr.layout import Layout, default_root

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.cluster import ClusterManager
    from sysmgr.api.events import EventManager
    from sysmgr.api.images import ImageManager
    from sysmgr.api.manifests import ManifestManager
    from sysmgr.api.networks import NetworkManager
    from sysmgr.api.profiles import ProfileManager
    from sysmgr.api.storage_pools import StoragePoolManager
    from sysmgr.api.storage_volumes import StorageVolumeManager
    from sysmgr.engine.host import Host


def default_storage_driver() -> str:
    """The driver ``init`` picks for the default pool when none is given: btrfs when this
    host can run it (tools and binding present), else dir; ``$SYSMGR_STORAGE_DRIVER`` wins."""
    return LocalBackend(Layout(default_root())).default_storage_driver()


class Client:
    """Entry point for one host root, or one member of its cluster.

    Args:
        root: host root directory; default ``$SYSMGR_ROOT`` or ``/var/lib/sysmgr``. With
            cluster members recorded it is the cluster's admin root.
        runtime: runtime driver name override (``native``; ``fake`` for unit tests). Default:
            the one recorded by ``init``.
        member: a member of the admin root's cluster: every manager acts on that member
            (NotFound: no such member; RemoteError: it cannot be reached).
    """

    def __init__(self, root: str | None = None, *, runtime: str | None = None,
                 member: str | None = None) -> None:
        self.layout = Layout(root or default_root())
        self._local = LocalBackend(self.layout, runtime=runtime)
        #: the member this client works on (None: the root itself, or its whole cluster)
        self.member = member
        self._cluster: "ClusterManager | None" = None
        self.backend: Backend = self._local
        if member is not None:
            self.backend = self.cluster.backend(member)
            self.containers = ContainerManager(self)
        elif self.clustered:
            from sysmgr.api.cluster_containers import ClusterContainerManager

            self.containers = ClusterContainerManager(self)
        else:
            self.containers = ContainerManager(self)

    # the other managers are made (and their modules imported) on first use: a hot verb
    # (exec, start, stop...) uses the containers alone
    @cached_property
    def profiles(self) -> "ProfileManager":
        from sysmgr.api.profiles import ProfileManager

        return ProfileManager(self)

    @cached_property
    def images(self) -> "ImageManager":
        from sysmgr.api.images import ImageManager

        return ImageManager(self)

    @cached_property
    def storage_pools(self) -> "StoragePoolManager":
        from sysmgr.api.storage_pools import StoragePoolManager

        return StoragePoolManager(self)

    @cached_property
    def storage_volumes(self) -> "StorageVolumeManager":
        from sysmgr.api.storage_volumes import StorageVolumeManager

        return StorageVolumeManager(self)

    @cached_property
    def networks(self) -> "NetworkManager":
        from sysmgr.api.networks import NetworkManager

        return NetworkManager(self)

    @cached_property
    def manifests(self) -> "ManifestManager":
        from sysmgr.api.manifests import ManifestManager

        return ManifestManager(self)

    @property
    def root(self) -> str:
        return self.layout.root

    @property
    def events(self) -> "EventManager":
        """The root's event log (``all``, ``follow``; of the ``member``, if one)."""
        from sysmgr.api.events import EventManager  # cold start: exec needs no events

        return EventManager(self)

    @property
    def cluster(self) -> "ClusterManager":
        """The members of this root's cluster (``client.cluster.members``) and what acts on
        the cluster (evacuate, restore)."""
        if self._cluster is None:
            from sysmgr.api.cluster import ClusterManager  # only roots with a cluster need it

            self._cluster = ClusterManager(self)
        return self._cluster

    @property
    def clustered(self) -> bool:
        """Whether this root has cluster members (a single host answers with one stat)."""
        return os.path.exists(self.layout.cluster_db) and self.cluster.enabled

    @property
    def local_backend(self) -> LocalBackend:
        """The admin root's own backend (also a ``local:`` member's on the same root)."""
        return self._local

    @property
    def host(self) -> "Host":
        """The engine's handle on this root, for white-box tests and benchmarks; front ends
        use the managers."""
        return self._local.host

    def init(self, *, auto: bool = True, storage_driver: str | None = None,
             runtime: str | None = None, network: str | None = None,
             network_driver: str | None = None) -> list[str]:
        """Create the host root, a ``default`` storage pool and the ``default`` profile, and
        start the containers ``boot.autostart`` wants running, in boot order. Idempotent;
        returns what it did.

        ``network``: also create that managed network (``sysmgr init --auto`` uses
        ``"sysmgrbr0"``) and give the default profile an ``eth0`` nic on it; the API creates
        none unless asked. Recorded networks are brought back up (after a reboot). On a
        cluster's admin root, moves between members that were cut short (their mover killed)
        are settled: finished or rolled back."""
        done = self.backend.init(storage_driver=storage_driver, runtime=runtime, network=network,
                                 network_driver=network_driver)
        if self.member is None and self.clustered:
            from sysmgr.api import migration  # admin roots with moves recorded only

            done += migration.settle_all(self.cluster)
        return done

    def uninit(self, *, progress: Callable[[str], None] | None = None) -> list[str]:
        """Tear this root down: its containers (and snapshots), the profiles' devices, custom
        volumes, networks, images, pools (a loop pool's mount and file) and finally the
        root directory, in that order (:mod:`sysmgr.api.teardown`). On a cluster's admin
        root, only the admin root's own objects: members are never touched. The lines said,
        each also given to ``progress`` as it happens."""
        from sysmgr.api import teardown

        return teardown.uninit(self, progress)

    def host_security(self) -> Any:
        """What confines containers on this host beyond user namespaces, seccomp and
        capabilities (AppArmor), as :class:`sysmgr.types.HostSecurity`."""
        return self.backend.host_security()

    def host_cgroups(self) -> Any:
        """The host's cgroup layout (v1, hybrid, unified) and where this root's containers'
        cgroups live (on a systemd host: a delegated scope), as :class:`sysmgr.types.HostCgroups`."""
        return self.backend.host_cgroups()

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
        self._local.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
