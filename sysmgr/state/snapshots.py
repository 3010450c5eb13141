"""Snapshot records (table ``snapshots``, schema migration 2) and container renames.

A snapshot's filesystem lives in the container's storage pool; its record keeps the
container's local definition (profiles, config, devices, description) as it was when the
snapshot was taken, and the volatile keys that describe its files (migration 4: the ids they
carry on disk), so a restore brings configuration and filesystem back together. Records
go with their container (``ON DELETE CASCADE``) and follow a rename (``ON UPDATE CASCADE``).

Writes happen inside the caller's ``Store.transaction()``.

Layer: state.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from sysmgr.errors import AlreadyExists, NotFound
from sysmgr.state.db import Store


@dataclass
class SnapshotRecord:
    container: str
    name: str
    created: float
    expires: float | None = None
    profiles: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""
    volatile: dict[str, str] = field(default_factory=dict)  # the container's, for its files


def _from_row(r: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(r["container"], r["name"], r["created"], r["expires"],
                          json.loads(r["profiles"]), json.loads(r["config"]),
                          json.loads(r["devices"]), r["description"], json.loads(r["volatile"]))


class SnapshotStore:
    """Snapshot queries on one :class:`~sysmgr.state.db.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    def all(self, container: str | None = None) -> list[SnapshotRecord]:
        """A container's snapshots (every container's when None), oldest first."""
        if container is None:
            rows = self.conn.execute("SELECT * FROM snapshots ORDER BY container, created, name")
        else:
            rows = self.conn.execute("SELECT * FROM snapshots WHERE container=? ORDER BY created, name",
                                     (container,))
        return [_from_row(r) for r in rows.fetchall()]

    def get(self, container: str, name: str) -> SnapshotRecord:
        r = self.conn.execute("SELECT * FROM snapshots WHERE container=? AND name=?",
                              (container, name)).fetchone()
        if r is None:
            raise NotFound(f"snapshot {container}/{name} not found",
                           hint=f"see 'sysmgr snapshot list {container}'")
        return _from_row(r)

    def has(self, container: str, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM snapshots WHERE container=? AND name=?",
                                 (container, name)).fetchone() is not None

    def add(self, rec: SnapshotRecord) -> None:
        if self.has(rec.container, rec.name):
            raise AlreadyExists(f"snapshot {rec.container}/{rec.name} already exists")
        self.conn.execute(
            "INSERT INTO snapshots(container, name, created, expires, profiles, config, devices,"
            " description, volatile) VALUES (?,?,?,?,?,?,?,?,?)",
            (rec.container, rec.name, rec.created, rec.expires, json.dumps(rec.profiles),
             json.dumps(rec.config, sort_keys=True), json.dumps(rec.devices, sort_keys=True),
             rec.description, json.dumps(rec.volatile, sort_keys=True)))

    def rename(self, container: str, name: str, new: str) -> None:
        if self.has(container, new):
            raise AlreadyExists(f"snapshot {container}/{new} already exists")
        self.get(container, name)
        self.conn.execute("UPDATE snapshots SET name=? WHERE container=? AND name=?",
                          (new, container, name))

    def set_about(self, container: str, name: str, *, expires: float | None,
                  description: str) -> None:
        """Change what a snapshot's user may edit: its expiry and description."""
        self.get(container, name)
        self.conn.execute("UPDATE snapshots SET expires=?, description=? WHERE container=? "
                          "AND name=?", (expires, description, container, name))

    def set_devices(self, container: str, name: str, devices: dict[str, dict[str, str]]) -> None:
        """The devices a snapshot recorded, changed (its root disk moved with its container)."""
        self.conn.execute("UPDATE snapshots SET devices=? WHERE container=? AND name=?",
                          (json.dumps(devices, sort_keys=True), container, name))

    def rename_profile(self, old: str, new: str) -> None:
        """A renamed profile, in every snapshot that recorded it."""
        for s in self.all():
            if old in s.profiles:
                self.conn.execute("UPDATE snapshots SET profiles=? WHERE container=? AND name=?",
                                  (json.dumps([new if p == old else p for p in s.profiles]),
                                   s.container, s.name))

    def delete(self, container: str, name: str) -> None:
        self.conn.execute("DELETE FROM snapshots WHERE container=? AND name=?", (container, name))

    def expired(self, now: float, container: str | None = None) -> list[SnapshotRecord]:
        return [s for s in self.all(container) if s.expires is not None and s.expires <= now]


def rename_container(store: Store, old: str, new: str) -> None:
    """Rename a container record; its snapshot records follow (``ON UPDATE CASCADE``)."""
    if store.has_container(new):
        raise AlreadyExists(f"container {new!r} already exists")
    store.container(old)
    store.conn.execute("UPDATE containers SET name=? WHERE name=?", (new, old))
