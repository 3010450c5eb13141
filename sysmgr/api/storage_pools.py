"""``client.storage_pools``: where images, root filesystems and snapshots live."""

from __future__ import annotations

from typing import Any, Mapping

from sysmgr.api.base import Manager, Model


class StoragePoolObj(Model):
    """One storage pool: name, driver, config and description."""

    def _set(self, rec: Any) -> None:
        self.name: str = rec.name
        self.driver: str = rec.driver
        self.config: dict[str, str] = dict(rec.config)
        self.description: str = rec.description

    def _fetch(self) -> Any:
        return self._backend.pool_get(self.name)

    @property
    def used_by(self) -> list[str]:
        """The containers whose root disk is on the pool (read now)."""
        return self._backend.pool_used_by(self.name)

    def usage(self) -> Any:
        """Used and total bytes of the pool."""
        return self._backend.pool_usage(self.name)

    def delete(self) -> None:
        """Delete the pool (refused while anything uses it)."""
        self._backend.pool_delete(self.name)

    def save(self) -> list[str]:
        """Store the edited ``description`` and ``config`` (``user.*`` keys; a loop pool's
        ``size``, which grows it while in use: it never shrinks). Nothing waits for a
        restart: the empty list."""
        self._set(self._backend.pool_update(self.name, config=self.config,
                                            description=self.description))
        return []

    def __repr__(self) -> str:
        return f"<StoragePool {self.name} ({self.driver})>"


class StoragePoolManager(Manager[StoragePoolObj]):
    """``client.storage_pools``."""

    kind = "pool"
    model = StoragePoolObj

    def create(self, name: str, driver: str = "dir", config: Mapping[str, str] | None = None,
               description: str = "") -> StoragePoolObj:
        """Create a pool (``btrfs``: a loop file sysmgr formats and mounts, or ``source=``
        an existing btrfs directory; ``dir``: anywhere)."""
        return self._wrap(self._backend.pool_create(name, driver, dict(config or {}), description))
