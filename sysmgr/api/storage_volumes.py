"""``client.storage_volumes``: custom storage volumes (LXD's ``storage volume``), attached to
containers as disk devices.

    >>> vol = client.storage_volumes.create("default", "data", config={"size": "1GiB"})
    >>> vol.attach("web1", "/srv/data")          # live into a running container
    >>> vol.snapshot()                            # snap0
    >>> vol.copy("fast", "data-copy")             # with its snapshots
"""

from __future__ import annotations

from typing import Any, Mapping

from sysmgr.api.base import HasBackend, Model


class StorageVolume(Model):
    """One custom volume: pool, name, driver, config, description, ``used_by`` (containers),
    ``profiles`` (profiles naming it), ``usage_bytes`` and ``snapshots`` (records), as read."""

    def _set(self, rec: Any) -> None:
        self.pool: str = rec.pool
        self.name: str = rec.name
        self.driver: str = rec.driver
        self.config: dict[str, str] = dict(rec.config)
        self.description: str = rec.description
        self.created_at: float = rec.created
        self.used_by: list[str] = list(rec.used_by)
        self.profiles: list[str] = list(rec.profiles)
        self.usage_bytes: int | None = rec.usage_bytes
        self.snapshots: list[Any] = list(rec.snapshots)

    def _fetch(self) -> Any:
        return self._backend.volume_get(self.pool, self.name)

    def save(self) -> None:
        """Store ``config`` and ``description`` (a new ``size`` applies at once)."""
        self._backend.volume_update(self.pool, self.name, config=self.config,
                                    description=self.description)
        self.refresh()

    def delete(self) -> None:
        """Delete the volume and its snapshots (refused while anything uses it)."""
        self._backend.volume_delete(self.pool, self.name)

    def attach(self, container: str, path: str, device: str | None = None, *,
               readonly: bool = False) -> list[str]:
        """Attach to ``container`` on ``path`` as disk device ``device`` (default: the
        volume's name); returns the keys that wait for a restart (none on a live runtime)."""
        pending = self._backend.volume_attach(self.pool, self.name, container, path,
                                              device=device, readonly=readonly)
        self.refresh()
        return pending

    def detach(self, container: str, device: str | None = None) -> list[str]:
        pending = self._backend.volume_detach(self.pool, self.name, container, device=device)
        self.refresh()
        return pending

    def snapshot(self, name: str | None = None) -> Any:
        """Take a snapshot (``snapN`` by default); its record."""
        snap = self._backend.volume_snapshot(self.pool, self.name, name)
        self.refresh()
        return snap

    def delete_snapshot(self, name: str) -> None:
        self._backend.volume_snapshot_delete(self.pool, self.name, name)
        self.refresh()

    def restore(self, snapshot: str) -> None:
        """Make the volume its snapshot again (refused while a running container has it)."""
        self._backend.volume_restore(self.pool, self.name, snapshot)
        self.refresh()

    def copy(self, pool: str, name: str, *, volume_only: bool = False) -> "StorageVolume":
        """A copy on ``pool`` named ``name`` (with the snapshots unless ``volume_only``)."""
        return StorageVolume(self._client, self._backend.volume_copy(
            self.pool, self.name, pool, name, volume_only=volume_only))

    def move(self, pool: str, name: str) -> "StorageVolume":
        """Rename (same pool) or move to ``pool``; this object then describes the result."""
        self._set(self._backend.volume_move(self.pool, self.name, pool, name))
        return self

    def __repr__(self) -> str:
        return f"<StorageVolume {self.pool}/{self.name}>"


class StorageVolumeManager:
    """``client.storage_volumes``: a volume is named by its pool and its name."""

    def __init__(self, client: HasBackend) -> None:
        self._client = client

    def all(self, pool: str | None = None) -> list[StorageVolume]:
        """Every volume (of ``pool``, when given)."""
        return [StorageVolume(self._client, v) for v in self._client.backend.volume_list(pool)]

    def get(self, pool: str, name: str) -> StorageVolume:
        return StorageVolume(self._client, self._client.backend.volume_get(pool, name))

    def exists(self, pool: str, name: str) -> bool:
        return bool(self._client.backend.volume_exists(pool, name))

    def create(self, pool: str, name: str, config: Mapping[str, Any] | None = None,
               description: str = "") -> StorageVolume:
        """An empty volume (``config``: ``size``, ``user.*``; values as LXD's strings)."""
        return StorageVolume(self._client, self._client.backend.volume_create(
            pool, name, {k: str(v) for k, v in (config or {}).items()}, description))
