"""Where things live under a host root, and the short id that prefixes kernel objects.

Everything sysmgr keeps is under one directory (``--root`` / ``SYSMGR_ROOT``, default
``/var/lib/sysmgr``), so several independent roots can coexist on one machine. Each root has
a short random id (``root.id``) that goes into the names of the kernel objects it creates
(cgroups ``sysmgr-<id>``, interfaces ``sm<id>...``) so two roots never collide and sysmgr
never touches what another root or other software made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from sysmgr._util.exposure import private_dir

DEFAULT_ROOT = "/var/lib/sysmgr"


def default_root() -> str:
    return os.environ.get("SYSMGR_ROOT") or DEFAULT_ROOT


@dataclass(frozen=True)
class Layout:
    """Paths under one host root. Pure: creating directories is :meth:`ensure`'s job."""

    root: str

    @property
    def db(self) -> str:
        return os.path.join(self.root, "sysmgr.db")

    @property
    def cluster_db(self) -> str:
        """The admin host's record of its cluster members (absent: a single host)."""
        return os.path.join(self.root, "cluster.db")

    @property
    def cluster_store(self) -> str:
        """Which store holds the cluster record when it is not ``cluster.db`` (etcd: its
        endpoints, TLS files, cluster id), written by ``sysmgr cluster store set``."""
        return os.path.join(self.root, "cluster-store.json")

    @property
    def cluster_cache(self) -> str:
        """The members as the shared store last listed them: what read-only commands use
        (marked stale) while the store has no quorum."""
        return os.path.join(self.root, "cluster-members.cache.json")

    @property
    def cluster_member(self) -> str:
        """On a member's own root: the store its controller and events report to, and the
        member's name there (pushed by the admin host's ``cluster store set|migrate`` and
        ``cluster add``; or written by ``controller run --cluster-store``)."""
        return os.path.join(self.root, "cluster-member.json")

    @property
    def cluster_backlog(self) -> str:
        """On a member's root: its events the store could not take yet (JSON lines, oldest
        first), written there before anything newer once the store answers."""
        return os.path.join(self.root, "cluster-events.backlog")

    @property
    def cluster_lease(self) -> str:
        """On a member's root while its controller runs: the state of its liveness lease."""
        return os.path.join(self.root, "cluster-lease.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.root, "lock")

    @property
    def id_file(self) -> str:
        return os.path.join(self.root, "root.id")

    @property
    def images(self) -> str:
        """Image store: ``<fingerprint>/`` with ``metadata.yaml`` and ``rootfs/``."""
        return os.path.join(self.root, "images")

    @property
    def pools(self) -> str:
        """Default place for pools that have no ``source``."""
        return os.path.join(self.root, "storage-pools")

    @property
    def containers(self) -> str:
        """Per-container runtime dirs (bundle ``config.json``, ``console.log``)."""
        return os.path.join(self.root, "containers")

    @property
    def networks(self) -> str:
        """Per-network state (dnsmasq config, hosts and lease files, pid file, log)."""
        return os.path.join(self.root, "networks")

    @property
    def tmp(self) -> str:
        """Staging area on the same filesystem as the stores (renames are atomic)."""
        return os.path.join(self.root, "tmp")

    @property
    def private_dirs(self) -> tuple[str, ...]:
        """The directories no host user but root may enter (mode 0700)."""
        return (self.images, self.pools, self.containers, self.tmp)

    def container_dir(self, name: str) -> str:
        return os.path.join(self.containers, name)

    def exists(self) -> bool:
        return os.path.exists(self.id_file)

    @cached_property
    def root_id(self) -> str:
        """The root's short id (6 hex digits); created by :meth:`ensure`."""
        try:
            with open(self.id_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    @property
    def prefix(self) -> str:
        """Prefix of every kernel object this root creates, e.g. ``sysmgr-1a2b3c``."""
        return f"sysmgr-{self.root_id}"

    def ensure(self) -> None:
        """Create the directory tree and the root id if missing (idempotent).

        The root stays 0711; the directories that hold container root filesystems, images,
        pools and build trees are 0700 (as LXD's ``images`` and per-volume directories), so
        no unprivileged host user can reach a setuid file or a device node inside them. A
        container's own root does not need to traverse them on the host: the runtime sets
        its root filesystem up as host root before it drops into the container. Modes of an
        existing root are tightened here too, so ``sysmgr init`` fixes older roots.
        """
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        for d in self.private_dirs:
            private_dir(d)
        if not os.path.exists(self.id_file):
            import secrets  # only on first init: it costs milliseconds on every start

            tmp = self.id_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(secrets.token_hex(3) + "\n")
            os.replace(tmp, self.id_file)
        self.__dict__.pop("root_id", None)
