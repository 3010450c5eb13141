"""Custom storage volume records (tables ``storage_volumes`` and ``volume_snapshots``, schema
migration 6).

A custom volume's files live in its pool (the driver's :meth:`custom_volumes` view); its
record keeps the config it was given (``size``, ``user.*``) and its description, and each
snapshot's record the config the volume had when it was taken. Snapshot records go with
their volume (``ON DELETE CASCADE``) and follow a rename (``ON UPDATE CASCADE``). A volume
is named by its pool and its name: the same name may be used on two pools.

Writes happen inside the caller's ``Store.transaction()``.

Layer: state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from sysmgr.errors import AlreadyExists, NotFound
from sysmgr.state.db import Store


@dataclass
class VolumeRecord:
    pool: str
    name: str
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    created: float = 0.0


@dataclass
class VolumeSnapshotRecord:
    pool: str
    volume: str
    name: str
    created: float = 0.0
    config: dict[str, str] = field(default_factory=dict)   # the volume's, when taken
    description: str = ""


def _volume(r: sqlite3.Row) -> VolumeRecord:
    return VolumeRecord(r["pool"], r["name"], json.loads(r["config"]), r["description"],
                        r["created"])


def _snapshot(r: sqlite3.Row) -> VolumeSnapshotRecord:
    return VolumeSnapshotRecord(r["pool"], r["volume"], r["name"], r["created"],
                                json.loads(r["config"]), r["description"])


def all_volumes(st: Store, pool: str | None = None) -> list[VolumeRecord]:
    """Every custom volume (of ``pool`` when given), by pool and name."""
    if pool is None:
        rows = st.conn.execute("SELECT * FROM storage_volumes ORDER BY pool, name")
    else:
        rows = st.conn.execute("SELECT * FROM storage_volumes WHERE pool=? ORDER BY name", (pool,))
    return [_volume(r) for r in rows.fetchall()]


def get(st: Store, pool: str, name: str) -> VolumeRecord:
    r = st.conn.execute("SELECT * FROM storage_volumes WHERE pool=? AND name=?",
                        (pool, name)).fetchone()
    if r is None:
        raise NotFound(f"storage volume {name!r} not found in storage pool {pool!r}",
                       hint=f"see 'sysmgr storage volume list {pool}'")
    return _volume(r)


def exists(st: Store, pool: str, name: str) -> bool:
    return st.conn.execute("SELECT 1 FROM storage_volumes WHERE pool=? AND name=?",
                           (pool, name)).fetchone() is not None


def add(st: Store, rec: VolumeRecord) -> None:
    if exists(st, rec.pool, rec.name):
        raise AlreadyExists(f"storage volume {rec.name!r} already exists in storage pool "
                            f"{rec.pool!r}")
    st.conn.execute(
        "INSERT INTO storage_volumes(pool, name, config, description, created) VALUES (?,?,?,?,?)",
        (rec.pool, rec.name, json.dumps(rec.config, sort_keys=True), rec.description,
         rec.created or time.time()))


def update(st: Store, rec: VolumeRecord) -> None:
    st.conn.execute("UPDATE storage_volumes SET config=?, description=? WHERE pool=? AND name=?",
                    (json.dumps(rec.config, sort_keys=True), rec.description, rec.pool, rec.name))


def delete(st: Store, pool: str, name: str) -> None:
    st.conn.execute("DELETE FROM storage_volumes WHERE pool=? AND name=?", (pool, name))


def rename(st: Store, pool: str, old: str, new: str) -> None:
    """Rename a volume record within its pool; its snapshot records follow."""
    if exists(st, pool, new):
        raise AlreadyExists(f"storage volume {new!r} already exists in storage pool {pool!r}")
    get(st, pool, old)
    st.conn.execute("UPDATE storage_volumes SET name=? WHERE pool=? AND name=?", (new, pool, old))


def snapshots(st: Store, pool: str, volume: str) -> list[VolumeSnapshotRecord]:
    """A volume's snapshots, oldest first."""
    rows = st.conn.execute("SELECT * FROM volume_snapshots WHERE pool=? AND volume=? "
                           "ORDER BY created, name", (pool, volume))
    return [_snapshot(r) for r in rows.fetchall()]


def get_snapshot(st: Store, pool: str, volume: str, name: str) -> VolumeSnapshotRecord:
    r = st.conn.execute("SELECT * FROM volume_snapshots WHERE pool=? AND volume=? AND name=?",
                        (pool, volume, name)).fetchone()
    if r is None:
        raise NotFound(f"snapshot {volume}/{name} not found in storage pool {pool!r}",
                       hint=f"see 'sysmgr storage volume show {pool} {volume}'")
    return _snapshot(r)


def has_snapshot(st: Store, pool: str, volume: str, name: str) -> bool:
    return st.conn.execute("SELECT 1 FROM volume_snapshots WHERE pool=? AND volume=? AND name=?",
                           (pool, volume, name)).fetchone() is not None


def add_snapshot(st: Store, rec: VolumeSnapshotRecord) -> None:
    if has_snapshot(st, rec.pool, rec.volume, rec.name):
        raise AlreadyExists(f"snapshot {rec.volume}/{rec.name} already exists in storage pool "
                            f"{rec.pool!r}")
    st.conn.execute(
        "INSERT INTO volume_snapshots(pool, volume, name, created, config, description) "
        "VALUES (?,?,?,?,?,?)",
        (rec.pool, rec.volume, rec.name, rec.created or time.time(),
         json.dumps(rec.config, sort_keys=True), rec.description))


def delete_snapshot(st: Store, pool: str, volume: str, name: str) -> None:
    st.conn.execute("DELETE FROM volume_snapshots WHERE pool=? AND volume=? AND name=?",
                    (pool, volume, name))
