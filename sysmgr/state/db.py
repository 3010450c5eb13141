"""SQLite (WAL) store with schema migrations and plain record types.

Records are plain dataclasses; JSON columns hold config maps. Every write happens inside
``Store.transaction()`` so a failure half-way leaves the previous record intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from sysmgr.errors import AlreadyExists, NotFound, SysmgrError

# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE storage_pools (
        name TEXT PRIMARY KEY, driver TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
        description TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
    CREATE TABLE profiles (
        name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL DEFAULT '{}', devices TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE images (
        fingerprint TEXT PRIMARY KEY, metadata TEXT NOT NULL DEFAULT '{}',
        size INTEGER, created REAL NOT NULL, source TEXT NOT NULL DEFAULT '');
    CREATE TABLE image_aliases (
        alias TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE);
    CREATE TABLE image_volumes (
        pool TEXT NOT NULL REFERENCES storage_pools(name),
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE,
        PRIMARY KEY (pool, fingerprint));
    CREATE TABLE containers (
        name TEXT PRIMARY KEY, image TEXT NOT NULL, pool TEXT NOT NULL,
        profiles TEXT NOT NULL DEFAULT '[]', config TEXT NOT NULL DEFAULT '{}',
        devices TEXT NOT NULL DEFAULT '{}', description TEXT NOT NULL DEFAULT '',
        volatile TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
    """,
    # 2: container snapshots (the filesystem lives in the pool; this is the config it had)
    """
    CREATE TABLE IF NOT EXISTS snapshots (
        container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE ON UPDATE CASCADE,
        name TEXT NOT NULL, created REAL NOT NULL, expires REAL,
        profiles TEXT NOT NULL DEFAULT '[]', config TEXT NOT NULL DEFAULT '{}',
        devices TEXT NOT NULL DEFAULT '{}', description TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (container, name));
    """,
    # 3: managed networks (bridge = the host bridge name, recorded so it stays stable)
    """
    CREATE TABLE IF NOT EXISTS networks (
        name TEXT PRIMARY KEY, type TEXT NOT NULL, config TEXT NOT NULL DEFAULT '{}',
        description TEXT NOT NULL DEFAULT '', bridge TEXT NOT NULL UNIQUE,
        created REAL NOT NULL);
    """,
    # 4: a snapshot's volatile state: what describes its files (the ids they carry on disk)
    """
    ALTER TABLE snapshots ADD COLUMN volatile TEXT NOT NULL DEFAULT '{}';
    """,
    # 5: the inventory of objects created from manifests (what apply --prune may delete)
    """
    CREATE TABLE IF NOT EXISTS inventory (
        kind TEXT NOT NULL, name TEXT NOT NULL, origin TEXT NOT NULL,
        revision TEXT NOT NULL DEFAULT '', prune INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL, PRIMARY KEY (kind, name));
    """,
    # 6: what the last apply asked of each object from manifests (drift vs a manifest change)
    """
    CREATE TABLE IF NOT EXISTS applied (
        kind TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,
        PRIMARY KEY (kind, name));
    """,
    # 7: custom storage volumes (LXD's `storage volume`) and their snapshots; the files live
    # in the pool, these are their config and description
    """
    CREATE TABLE IF NOT EXISTS storage_volumes (
        pool TEXT NOT NULL REFERENCES storage_pools(name), name TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}', description TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL, PRIMARY KEY (pool, name));
    CREATE TABLE IF NOT EXISTS volume_snapshots (
        pool TEXT NOT NULL, volume TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
        config TEXT NOT NULL DEFAULT '{}', description TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (pool, volume, name),
        FOREIGN KEY (pool, volume) REFERENCES storage_volumes(pool, name)
            ON DELETE CASCADE ON UPDATE CASCADE);
    """,
]


@dataclass
class PoolRecord:
    name: str
    driver: str
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    created: float = 0.0


@dataclass
class ProfileRecord:
    name: str
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class ImageRecord:
    fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict)   # ImageMetadata.to_dict()
    size: int | None = None
    created: float = 0.0
    source: str = ""                                          # "build:busybox", "file:/path"
    aliases: list[str] = field(default_factory=list)


@dataclass
class ContainerRecord:
    name: str
    image: str                                   # fingerprint
    pool: str
    profiles: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    description: str = ""
    volatile: dict[str, Any] = field(default_factory=dict)   # init pid, starttime, cgroup...
    created: float = 0.0


class Store:
    """One host root's database. Cheap to open; use as a context manager to close."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # 0600, whatever the umask: it holds every container's config (environment.*
            # keys included); SQLite gives its journal the same mode
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.chmod(path, 0o600)
        except OSError as e:
            raise SysmgrError(f"cannot open state database {path}: {e.strerror}") from e
        try:
            # one thread at a time, not always the one that opened it: a cluster command
            # reaches a member's root in a worker thread, then goes on in the main one
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                        check_same_thread=False)
        except sqlite3.Error as e:
            raise SysmgrError(f"cannot open state database {path}: {e}") from e
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._depth = 0
        self._migrate()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- schema ------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == len(MIGRATIONS):
            return
        if version > len(MIGRATIONS):
            raise SysmgrError(
                f"state database {self.path} has schema {version}, newer than this sysmgr "
                f"understands ({len(MIGRATIONS)})", hint="upgrade sysmgr")
        self.conn.execute("PRAGMA journal_mode = WAL")
        with self.transaction():
            for i in range(version, len(MIGRATIONS)):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
        """Nestable transaction: the outermost one commits or rolls back."""
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self.conn.execute("COMMIT")

    def change_marker(self) -> tuple[int, int]:
        """A value that changes whenever anyone commits a change to the database: SQLite's
        ``data_version`` (commits by other connections) and this connection's own count."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.conn.total_changes

    # -- meta --------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- pools ------------------------------------------------------------------------
    def pools(self) -> list[PoolRecord]:
        rows = self.conn.execute("SELECT * FROM storage_pools ORDER BY name").fetchall()
        return [PoolRecord(r["name"], r["driver"], json.loads(r["config"]), r["description"],
                           r["created"]) for r in rows]

    def pool(self, name: str) -> PoolRecord:
        for p in self.pools():
            if p.name == name:
                return p
        raise NotFound(f"storage pool {name!r} not found")

    def has_pool(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM storage_pools WHERE name=?", (name,)).fetchone() is not None

    def add_pool(self, rec: PoolRecord) -> None:
        if self.has_pool(rec.name):
            raise AlreadyExists(f"storage pool {rec.name!r} already exists")
        self.conn.execute(
            "INSERT INTO storage_pools(name, driver, config, description, created) VALUES (?,?,?,?,?)",
            (rec.name, rec.driver, json.dumps(rec.config), rec.description, rec.created or time.time()))

    def update_pool(self, rec: PoolRecord) -> None:
        self.conn.execute("UPDATE storage_pools SET config=?, description=? WHERE name=?",
                          (json.dumps(rec.config), rec.description, rec.name))

    def delete_pool(self, name: str) -> None:
        self.conn.execute("DELETE FROM storage_pools WHERE name=?", (name,))

    # -- profiles ---------------------------------------------------------------------
    def profiles(self) -> list[ProfileRecord]:
        rows = self.conn.execute("SELECT * FROM profiles ORDER BY name").fetchall()
        return [ProfileRecord(r["name"], r["description"], json.loads(r["config"]),
                              json.loads(r["devices"])) for r in rows]

    def profile(self, name: str) -> ProfileRecord:
        r = self.conn.execute("SELECT * FROM profiles WHERE name=?", (name,)).fetchone()
        if r is None:
            raise NotFound(f"profile {name!r} not found")
        return ProfileRecord(r["name"], r["description"], json.loads(r["config"]), json.loads(r["devices"]))

    def has_profile(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM profiles WHERE name=?", (name,)).fetchone() is not None

    def put_profile(self, rec: ProfileRecord) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO profiles(name, description, config, devices) VALUES (?,?,?,?)",
            (rec.name, rec.description, json.dumps(rec.config, sort_keys=True),
             json.dumps(rec.devices, sort_keys=True)))

    def delete_profile(self, name: str) -> None:
        self.conn.execute("DELETE FROM profiles WHERE name=?", (name,))

    # -- images -----------------------------------------------------------------------
    def _image_from_row(self, r: sqlite3.Row) -> ImageRecord:
        aliases = [a[0] for a in self.conn.execute(
            "SELECT alias FROM image_aliases WHERE fingerprint=? ORDER BY alias", (r["fingerprint"],))]
        return ImageRecord(r["fingerprint"], json.loads(r["metadata"]), r["size"], r["created"],
                           r["source"], aliases)

    def images(self) -> list[ImageRecord]:
        aliases: dict[str, list[str]] = {}  # every image's aliases in one query, not one each
        for alias, fingerprint in self.conn.execute(
                "SELECT alias, fingerprint FROM image_aliases ORDER BY alias"):
            aliases.setdefault(fingerprint, []).append(alias)
        rows = self.conn.execute("SELECT * FROM images ORDER BY created").fetchall()
        return [ImageRecord(r["fingerprint"], json.loads(r["metadata"]), r["size"], r["created"],
                            r["source"], aliases.get(r["fingerprint"], [])) for r in rows]

    def image(self, ref: str) -> ImageRecord:
        """Find an image by alias, full fingerprint or unique fingerprint prefix."""
        row = self.conn.execute(
            "SELECT i.* FROM images i JOIN image_aliases a ON a.fingerprint=i.fingerprint "
            "WHERE a.alias=?", (ref,)).fetchone()
        if row is None and ref:
            rows = self.conn.execute("SELECT * FROM images WHERE fingerprint LIKE ?",
                                     (ref.lower() + "%",)).fetchall()
            if len(rows) > 1:
                raise NotFound(f"image fingerprint prefix {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"image {ref!r} not found",
                           hint="see 'sysmgr image list', or build one with 'sysmgr image build busybox'")
        return self._image_from_row(row)

    def has_image(self, ref: str) -> bool:
        try:
            self.image(ref)
            return True
        except NotFound:
            return False

    def add_image(self, rec: ImageRecord) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO images(fingerprint, metadata, size, created, source) VALUES (?,?,?,?,?)",
            (rec.fingerprint, json.dumps(rec.metadata), rec.size, rec.created or time.time(), rec.source))
        for a in rec.aliases:
            self.set_alias(a, rec.fingerprint)

    def set_alias(self, alias: str, fingerprint: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO image_aliases(alias, fingerprint) VALUES (?,?)",
                          (alias, fingerprint))

    def delete_alias(self, alias: str) -> None:
        self.conn.execute("DELETE FROM image_aliases WHERE alias=?", (alias,))

    def set_image_metadata(self, fingerprint: str, metadata: dict[str, Any]) -> None:
        self.conn.execute("UPDATE images SET metadata=? WHERE fingerprint=?",
                          (json.dumps(metadata), fingerprint))

    def delete_image(self, fingerprint: str) -> None:
        self.conn.execute("DELETE FROM images WHERE fingerprint=?", (fingerprint,))

    def image_pools(self, fingerprint: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT pool FROM image_volumes WHERE fingerprint=? ORDER BY pool", (fingerprint,))]

    def add_image_volume(self, pool: str, fingerprint: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO image_volumes(pool, fingerprint) VALUES (?,?)",
                          (pool, fingerprint))

    def delete_image_volume(self, pool: str, fingerprint: str) -> None:
        self.conn.execute("DELETE FROM image_volumes WHERE pool=? AND fingerprint=?", (pool, fingerprint))

    # -- containers -------------------------------------------------------------------
    @staticmethod
    def _container_from_row(r: sqlite3.Row) -> ContainerRecord:
        return ContainerRecord(
            r["name"], r["image"], r["pool"], json.loads(r["profiles"]), json.loads(r["config"]),
            json.loads(r["devices"]), r["description"], json.loads(r["volatile"]), r["created"])

    def containers(self) -> list[ContainerRecord]:
        rows = self.conn.execute("SELECT * FROM containers ORDER BY name").fetchall()
        return [self._container_from_row(r) for r in rows]

    def container(self, name: str) -> ContainerRecord:
        r = self.conn.execute("SELECT * FROM containers WHERE name=?", (name,)).fetchone()
        if r is None:
            raise NotFound(f"container {name!r} not found")
        return self._container_from_row(r)

    def has_container(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM containers WHERE name=?", (name,)).fetchone() is not None

    def add_container(self, rec: ContainerRecord) -> None:
        if self.has_container(rec.name):
            raise AlreadyExists(f"container {rec.name!r} already exists")
        self.conn.execute(
            "INSERT INTO containers(name, image, pool, profiles, config, devices, description, volatile, created)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (rec.name, rec.image, rec.pool, json.dumps(rec.profiles), json.dumps(rec.config, sort_keys=True),
             json.dumps(rec.devices, sort_keys=True), rec.description, json.dumps(rec.volatile),
             rec.created or time.time()))

    def update_container(self, rec: ContainerRecord) -> None:
        self.conn.execute(
            "UPDATE containers SET image=?, pool=?, profiles=?, config=?, devices=?, description=?, volatile=?"
            " WHERE name=?",
            (rec.image, rec.pool, json.dumps(rec.profiles), json.dumps(rec.config, sort_keys=True),
             json.dumps(rec.devices, sort_keys=True), rec.description, json.dumps(rec.volatile), rec.name))

    def set_volatile(self, name: str, volatile: dict[str, Any]) -> None:
        self.conn.execute("UPDATE containers SET volatile=? WHERE name=?", (json.dumps(volatile), name))

    def delete_container(self, name: str) -> None:
        self.conn.execute("DELETE FROM containers WHERE name=?", (name,))

    def containers_using_profile(self, profile: str) -> list[str]:
        return [c.name for c in self.containers() if profile in c.profiles]

    def containers_using_image(self, fingerprint: str) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM containers WHERE image=?", (fingerprint,))]
