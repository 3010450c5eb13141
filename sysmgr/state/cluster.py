"""The admin root's record of its cluster: members, their groups, the evacuated mark, and
which containers an evacuation stopped (so ``restore`` starts exactly those again).

:class:`ClusterStore` is the interface the engine uses; :class:`SQLiteClusterStore` keeps it
in ``<admin root>/cluster.db``, a file apart from the host's own ``sysmgr.db`` (an admin root
need not be a host, and a host that is a member knows nothing of the cluster). A shared store
for large clusters (etcd...) can implement the same interface later.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sqlite3
import time
from typing import Iterator

from sysmgr.errors import AlreadyExists, NotFound, SysmgrError
from sysmgr.types import MemberSpec

MIGRATIONS: list[str] = [
    """
    CREATE TABLE members (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, root TEXT NOT NULL, key TEXT,
        sysmgr TEXT NOT NULL, groups TEXT NOT NULL DEFAULT '[]',
        config TEXT NOT NULL DEFAULT '{}', host_key TEXT,
        evacuated INTEGER NOT NULL DEFAULT 0, added REAL NOT NULL);
    CREATE TABLE evacuated (
        member TEXT NOT NULL REFERENCES members(name) ON DELETE CASCADE,
        container TEXT NOT NULL, mode TEXT NOT NULL,
        PRIMARY KEY (member, container));
    """,
]


class ClusterStore(abc.ABC):
    """Members of one cluster as the admin host records them."""

    @abc.abstractmethod
    def members(self) -> list[MemberSpec]:
        """Every member, by name."""

    @abc.abstractmethod
    def member(self, name: str) -> MemberSpec:
        """One member; NotFound."""

    @abc.abstractmethod
    def add(self, spec: MemberSpec) -> None:
        """Record a new member; AlreadyExists."""

    @abc.abstractmethod
    def put(self, spec: MemberSpec) -> None:
        """Record a member, replacing its record (its evacuated mark is kept)."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Forget a member (and its evacuation records); NotFound."""

    @abc.abstractmethod
    def set_groups(self, name: str, groups: tuple[str, ...]) -> None: ...

    @abc.abstractmethod
    def set_evacuated(self, name: str, evacuated: bool) -> None: ...

    @abc.abstractmethod
    def record_evacuated(self, member: str, container: str, mode: str) -> None:
        """Remember that evacuating ``member`` stopped ``container`` (``mode``: how)."""

    @abc.abstractmethod
    def evacuated_containers(self, member: str) -> list[tuple[str, str]]:
        """``(container, mode)`` for what evacuating ``member`` stopped."""

    @abc.abstractmethod
    def forget_evacuated(self, member: str, container: str) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "ClusterStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteClusterStore(ClusterStore):
    """:class:`ClusterStore` in one SQLite file (WAL)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o711, exist_ok=True)
        try:
            # used by one thread at a time, but not always the one that opened it
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as e:
            raise SysmgrError(f"cannot open cluster database {path}: {e}") from e

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == len(MIGRATIONS):
            return
        if version > len(MIGRATIONS):
            raise SysmgrError(f"cluster database {self.path} has schema {version}, newer than "
                              f"this sysmgr understands ({len(MIGRATIONS)})", hint="upgrade sysmgr")
        self.conn.execute("PRAGMA journal_mode = WAL")
        with self._tx():
            for stmt in "".join(MIGRATIONS[version:]).split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    @staticmethod
    def _spec(r: sqlite3.Row) -> MemberSpec:
        return MemberSpec(name=r["name"], url=r["url"], root=r["root"], key=r["key"],
                          sysmgr=r["sysmgr"], groups=tuple(json.loads(r["groups"])),
                          config=tuple(sorted(json.loads(r["config"]).items())),
                          host_key=r["host_key"], evacuated=bool(r["evacuated"]))

    def members(self) -> list[MemberSpec]:
        return [self._spec(r) for r in self.conn.execute("SELECT * FROM members ORDER BY name")]

    def member(self, name: str) -> MemberSpec:
        r = self.conn.execute("SELECT * FROM members WHERE name=?", (name,)).fetchone()
        if r is None:
            raise NotFound(f"cluster member {name!r} not found",
                           hint="sysmgr cluster list shows the members")
        return self._spec(r)

    def _write(self, spec: MemberSpec, *, replace_: bool) -> None:
        verb = "INSERT OR REPLACE" if replace_ else "INSERT"
        self.conn.execute(
            f"{verb} INTO members(name, url, root, key, sysmgr, groups, config, host_key, "
            "evacuated, added) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (spec.name, spec.url, spec.root, spec.key, spec.sysmgr, json.dumps(list(spec.groups)),
             json.dumps(dict(spec.config), sort_keys=True), spec.host_key, int(spec.evacuated),
             time.time()))

    def add(self, spec: MemberSpec) -> None:
        with self._tx():
            if self.conn.execute("SELECT 1 FROM members WHERE name=?", (spec.name,)).fetchone():
                raise AlreadyExists(f"cluster member {spec.name!r} already exists")
            self._write(spec, replace_=False)

    def put(self, spec: MemberSpec) -> None:
        with self._tx():
            r = self.conn.execute("SELECT evacuated FROM members WHERE name=?",
                                  (spec.name,)).fetchone()
            if r is None:
                self._write(spec, replace_=False)
                return
            # an update keeps the evacuation records (REPLACE would cascade them away)
            self.conn.execute(
                "UPDATE members SET url=?, root=?, key=?, sysmgr=?, groups=?, config=?, "
                "host_key=? WHERE name=?",
                (spec.url, spec.root, spec.key, spec.sysmgr, json.dumps(list(spec.groups)),
                 json.dumps(dict(spec.config), sort_keys=True), spec.host_key, spec.name))

    def remove(self, name: str) -> None:
        with self._tx():
            self.member(name)
            self.conn.execute("DELETE FROM members WHERE name=?", (name,))

    def set_groups(self, name: str, groups: tuple[str, ...]) -> None:
        with self._tx():
            self.member(name)
            self.conn.execute("UPDATE members SET groups=? WHERE name=?",
                              (json.dumps(list(groups)), name))

    def set_evacuated(self, name: str, evacuated: bool) -> None:
        with self._tx():
            self.member(name)
            self.conn.execute("UPDATE members SET evacuated=? WHERE name=?", (int(evacuated), name))

    def record_evacuated(self, member: str, container: str, mode: str) -> None:
        with self._tx():
            self.conn.execute("INSERT OR REPLACE INTO evacuated(member, container, mode) "
                              "VALUES (?,?,?)", (member, container, mode))

    def evacuated_containers(self, member: str) -> list[tuple[str, str]]:
        rows = self.conn.execute("SELECT container, mode FROM evacuated WHERE member=? "
                                 "ORDER BY container", (member,))
        return [(r["container"], r["mode"]) for r in rows]

    def forget_evacuated(self, member: str, container: str) -> None:
        with self._tx():
            self.conn.execute("DELETE FROM evacuated WHERE member=? AND container=?",
                              (member, container))
