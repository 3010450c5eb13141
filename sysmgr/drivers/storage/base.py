"""The storage pool driver interface.

A pool holds image volumes (read-only templates, one per image fingerprint) and container
volumes (the writable root filesystem of one container). Drivers declare what they can do
with :class:`StorageInfo` capability flags; callers branch on the flags, never on the name.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator, Mapping


@dataclass(frozen=True)
class StorageInfo:
    cow_snapshots: bool = False     # container-from-image and copies in constant time
    quotas: bool = False            # root disk ``size`` can be enforced
    send_receive: bool = False      # volumes can be streamed (migration, optimized backups)
    incremental_send: bool = False


@dataclass(frozen=True)
class PoolUsage:
    used_bytes: int | None = None
    total_bytes: int | None = None


class StoragePool(abc.ABC):
    """One pool. Constructed cheaply (no I/O); ``create``/``mount`` touch the host."""

    name: ClassVar[str]            # driver name, e.g. "dir"
    info: ClassVar[StorageInfo]
    config_keys: ClassVar[Mapping[str, str]] = {}   # key -> one-line doc; others rejected

    def __init__(self, pool: str, config: Mapping[str, str], default_path: str) -> None:
        """``default_path`` is where the pool lives when the config gives no ``source``."""
        self.pool = pool
        self.config = dict(config)
        self.default_path = default_path

    # -- pool ----------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self) -> None:
        """Create the pool on the host (idempotent)."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Remove the pool from the host; only what sysmgr created."""

    def mount(self) -> None:
        """Make the pool usable after a host restart (idempotent)."""

    @abc.abstractmethod
    def usage(self) -> PoolUsage: ...

    # -- images --------------------------------------------------------------------------
    @abc.abstractmethod
    def has_image(self, fingerprint: str) -> bool: ...

    @abc.abstractmethod
    @contextlib.contextmanager
    def create_image(self, fingerprint: str) -> Iterator[str]:
        """Yield an empty staging directory to fill with the image's rootfs. On normal exit
        the volume becomes the image (read-only template); on an exception it is removed."""

    @abc.abstractmethod
    def image_path(self, fingerprint: str) -> str: ...

    @abc.abstractmethod
    def delete_image(self, fingerprint: str) -> None: ...

    def list_images(self) -> list[str]:
        """Fingerprints of the image volumes in the pool (for observing actual state)."""
        raise NotImplementedError

    # -- containers ----------------------------------------------------------------------
    @abc.abstractmethod
    def create_container(self, name: str, fingerprint: str) -> str:
        """Create a writable volume for ``name`` from an image; return its rootfs path.
        On failure nothing is left behind."""

    @abc.abstractmethod
    def container_path(self, name: str) -> str: ...

    @abc.abstractmethod
    def has_container(self, name: str) -> bool: ...

    def list_containers(self) -> list[str]:
        """Names of the container volumes in the pool (for observing actual state)."""
        raise NotImplementedError

    @abc.abstractmethod
    def delete_container(self, name: str) -> None:
        """Remove the volume (idempotent: already gone is success)."""

    @abc.abstractmethod
    def rename_container(self, old: str, new: str) -> str: ...

    @abc.abstractmethod
    def container_usage(self, name: str) -> int | None:
        """Bytes used by the container's volume, or None when unknown."""
