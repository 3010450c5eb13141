"""``container.snapshots``: pylxd's shape.

    >>> c.snapshots.create("before-upgrade")
    >>> c.snapshots.get("before-upgrade").restore()

A :class:`Snapshot` is a plain snapshot of its record (``refresh()`` re-reads it).
"""

from __future__ import annotations

from typing import Any


class Snapshot:
    """One snapshot of a container: its name, times and the definition it recorded."""

    def __init__(self, manager: "SnapshotManager", rec: Any) -> None:
        self._manager = manager
        self.container: str = rec.container
        self.name: str = rec.name
        self.created_at: float = rec.created
        self.expires_at: float | None = rec.expires
        self.profiles: list[str] = list(rec.profiles)
        self.config: dict[str, str] = dict(rec.config)
        self.devices: dict[str, dict[str, str]] = {k: dict(v) for k, v in rec.devices.items()}
        self.description: str = rec.description

    def restore(self, force: bool = False) -> list[str]:
        """Bring the container's filesystem and definition back to this snapshot; a running
        container is stopped, restored and started again, as in LXD (``force`` is accepted
        and not needed). Returns the steps."""
        return self._manager.restore(self.name, force=force)

    def rename(self, new: str) -> None:
        """Rename this snapshot (LXD's ``snapshot rename``)."""
        self._manager.rename(self.name, new)
        self.name = new
        self.refresh()

    def save(self) -> None:
        """Store the edited ``expires_at`` (a Unix time, None: never) and ``description``
        (pylxd's edit-then-save); the filesystem and recorded definition never change."""
        self._manager.backend.snapshot_update(self.container, self.name, expires=self.expires_at,
                                              description=self.description)
        self.refresh()

    def delete(self) -> None:
        self._manager.delete(self.name)

    def refresh(self) -> "Snapshot":
        self.__init__(self._manager, self._manager.backend.snapshot_get(self.container, self.name))  # type: ignore[misc]
        return self

    def __repr__(self) -> str:
        return f"<Snapshot {self.container}/{self.name}>"


class SnapshotManager:
    """``container.snapshots`` (``container``: any object with ``name``, ``_backend`` and
    ``refresh()``, i.e. a :class:`~sysmgr.api.containers.Container`)."""

    def __init__(self, container: Any) -> None:
        self._c = container

    @property
    def backend(self) -> Any:
        return self._c._backend

    def all(self) -> list[Snapshot]:
        """The container's snapshots, oldest first."""
        return [Snapshot(self, r) for r in self.backend.snapshot_list(self._c.name)]

    def get(self, name: str) -> Snapshot:
        return Snapshot(self, self.backend.snapshot_get(self._c.name, name))

    def exists(self, name: str) -> bool:
        return any(s.name == name for s in self.all())

    def create(self, name: str | None = None, *, expiry: str | None = None) -> Snapshot:
        """Take a snapshot (default name ``snapN``); ``expiry`` (``2w``, ``""`` for never)
        overrides ``snapshots.expiry``."""
        return Snapshot(self, self.backend.snapshot_create(self._c.name, name, expiry=expiry))

    def restore(self, name: str, *, force: bool = False) -> list[str]:
        done = self.backend.snapshot_restore(self._c.name, name, force=force)
        self._c.refresh()
        return done

    def delete(self, name: str) -> None:
        self.backend.snapshot_delete(self._c.name, name)

    def rename(self, name: str, new: str) -> Snapshot:
        return Snapshot(self, self.backend.snapshot_rename(self._c.name, name, new))

    def prune(self) -> list[str]:
        """Delete this container's expired snapshots; returns ``container/snap`` names."""
        return self.backend.snapshot_prune(self._c.name)


def auto(client: Any) -> list[str]:
    """Take every snapshot ``snapshots.schedule`` says is due, then delete expired ones
    (run from a timer every minute); one line per snapshot taken or deleted."""
    return client.backend.snapshot_auto()


def prune_all(client: Any) -> list[str]:
    """Delete every container's expired snapshots; returns ``container/snap`` names."""
    return client.backend.snapshot_prune(None)
