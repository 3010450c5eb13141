"""``container.snapshots`` and storage operations on containers (copy, rename, backups).

pylxd's shape: ``c.snapshots.create("before-upgrade")``, ``c.snapshots.all()``,
``c.snapshots.get(name).restore()``; a :class:`Snapshot` is a plain snapshot of its record
(``refresh()`` re-reads it). The engine modules are imported on first use.

Layer: api.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.managers import Container

Progress = Callable[[str], None]


def _snapshots():
    from sysmgr.engine import snapshots

    return snapshots


class Snapshot:
    """One snapshot of a container: its name, times and the definition it recorded."""

    def __init__(self, container: "Container", rec: Any) -> None:
        self._container = container
        self.container: str = rec.container
        self.name: str = rec.name
        self.created_at: float = rec.created
        self.expires_at: float | None = rec.expires
        self.profiles: list[str] = list(rec.profiles)
        self.config: dict[str, str] = dict(rec.config)
        self.devices: dict[str, dict[str, str]] = {k: dict(v) for k, v in rec.devices.items()}
        self.description: str = rec.description

    def restore(self, force: bool = False) -> list[str]:
        """Bring the container's filesystem and definition back to this snapshot (it must be
        stopped, or ``force``: stopped, restored and started again). Returns the steps."""
        return self._container.snapshots.restore(self.name, force=force)

    def delete(self) -> None:
        self._container.snapshots.delete(self.name)

    def refresh(self) -> "Snapshot":
        rec = _snapshots().get(self._container._host, self.container, self.name)
        self.__init__(self._container, rec)  # type: ignore[misc]
        return self

    def __repr__(self) -> str:
        return f"<Snapshot {self.container}/{self.name}>"


class SnapshotManager:
    """``container.snapshots``."""

    def __init__(self, container: "Container") -> None:
        self._c = container

    @property
    def _host(self):
        return self._c._host

    def all(self) -> list[Snapshot]:
        """The container's snapshots, oldest first."""
        return [Snapshot(self._c, r) for r in _snapshots().all_(self._host, self._c.name)]

    def get(self, name: str) -> Snapshot:
        return Snapshot(self._c, _snapshots().get(self._host, self._c.name, name))

    def exists(self, name: str) -> bool:
        return any(s.name == name for s in self.all())

    def create(self, name: str | None = None, *, expiry: str | None = None) -> Snapshot:
        """Take a snapshot (default name ``snapN``); ``expiry`` (``2w``, ``""`` for never)
        overrides ``snapshots.expiry``."""
        return Snapshot(self._c, _snapshots().create(self._host, self._c.name, name, expiry=expiry))

    def restore(self, name: str, *, force: bool = False) -> list[str]:
        done = _snapshots().restore(self._host, self._c.name, name, force=force)
        self._c.refresh()
        return done

    def delete(self, name: str) -> None:
        _snapshots().delete(self._host, self._c.name, name)

    def prune(self) -> list[str]:
        """Delete this container's expired snapshots; returns ``container/snap`` names."""
        return _snapshots().prune(self._host, self._c.name)


def copy(container: "Container", dst: str, *, snapshot: str | None = None,
         pool: str | None = None) -> None:
    from sysmgr.engine import copy as ecopy

    ecopy.copy(container._host, container.name, dst, snapshot=snapshot, pool=pool)


def rename(container: "Container", new: str) -> None:
    from sysmgr.engine import copy as ecopy

    ecopy.rename(container._host, container.name, new)


def export(container: "Container", path: str, *, optimized: bool = False,
           progress: Progress | None = None) -> Any:
    from sysmgr.engine import backup

    return backup.export(container._host, container.name, path, optimized=optimized,
                         progress=progress)


def import_(host: Any, path: str, *, name: str | None = None, pool: str | None = None,
            progress: Progress | None = None) -> str:
    from sysmgr.engine import backup

    return backup.import_(host, path, name=name, pool=pool, progress=progress).name


def auto(client: Any) -> list[str]:
    """Take every snapshot ``snapshots.schedule`` says is due, then delete expired ones
    (run from a timer every minute); one line per snapshot taken or deleted."""
    return _snapshots().auto(client.host)


def prune_all(client: Any) -> list[str]:
    """Delete every container's expired snapshots; returns ``container/snap`` names."""
    return _snapshots().prune(client.host)
