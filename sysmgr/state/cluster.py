"""The record of a cluster: members, their groups, the evacuated mark, which containers an
evacuation stopped (so ``restore`` starts exactly those again), and what several admins,
CI runners and controllers share: leases (liveness), where each container lives, placement
reservations, move locks, the manifest inventory and the event stream.

:class:`ClusterStore` is the interface the engine uses. :class:`SQLiteClusterStore` keeps it
in ``<admin root>/cluster.db``, a file apart from the host's own ``sysmgr.db`` (an admin root
need not be a host, and a host that is a member knows nothing of the cluster); its leases
are rows with an expiry time. :mod:`sysmgr.state.cluster_etcd` keeps the same records in
etcd for clusters shared by several admin hosts. Both pass one contract suite.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import sqlite3
import time
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from sysmgr._util.sizes import format_size
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
    """
    CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL);
    CREATE TABLE alive (member TEXT PRIMARY KEY, lease INTEGER NOT NULL, facts TEXT NOT NULL);
    CREATE TABLE locations (
        container TEXT PRIMARY KEY, member TEXT NOT NULL, memory INTEGER NOT NULL DEFAULT 0,
        lease INTEGER, holder TEXT);
    CREATE INDEX locations_member ON locations(member);
    CREATE TABLE locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, lease INTEGER NOT NULL);
    CREATE TABLE inventory (kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (kind, name));
    CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL);
    """,
]


#: events the SQLite store keeps (the newest)
EVENTS_KEPT = 100_000


@dataclass(frozen=True)
class Location:
    """Where a container lives (``lease`` 0), or a reservation for one being launched there
    (``lease``: the launcher's, so a dead launcher's reservation expires with it)."""

    container: str
    member: str
    memory: int = 0
    lease: int = 0
    holder: str = ""

    @property
    def reserved(self) -> bool:
        return self.lease != 0


@dataclass(frozen=True)
class Usage:
    """What is placed and reserved on a member: containers and bytes of memory limits."""

    containers: int = 0
    memory: int = 0


@dataclass(frozen=True)
class Capacity:
    """A member's limits for placement (None: no limit)."""

    containers: int | None = None
    memory: int | None = None

    def refusal(self, count: int, memory: int, need: int) -> str | None:
        """Why a member holding ``count`` containers and ``memory`` bytes of absolute
        memory limits (placed and reserved) cannot take one more needing ``need`` bytes."""
        if self.containers is not None and count + 1 > self.containers:
            return f"full ({count}/{self.containers} containers, limits.instances)"
        if self.memory is not None and need and memory + need > self.memory:
            return (f"limits.memory: {format_size(memory)} of {format_size(self.memory)} "
                    f"placed, {format_size(need)} more does not fit")
        return None


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

    #: "sqlite" or "etcd"; with ``lease_liveness`` a member is ONLINE while its controller's
    #: lease lives (read from the store), else while it answers ``hello``
    kind = "sqlite"
    lease_liveness = False

    # -- leases and liveness --------------------------------------------------------------------
    @abc.abstractmethod
    def grant(self, ttl: float) -> int:
        """A new lease that expires ``ttl`` seconds after its last keepalive."""

    @abc.abstractmethod
    def keepalive(self, lease: int) -> bool:
        """Renew ``lease``; False when it had expired (what it held is gone)."""

    @abc.abstractmethod
    def revoke(self, lease: int) -> None:
        """End ``lease`` now, and drop what it held."""

    @abc.abstractmethod
    def set_alive(self, member: str, lease: int, facts: dict[str, Any]) -> None:
        """``member`` is alive while ``lease`` lives; ``facts``: what it says of itself."""

    @abc.abstractmethod
    def alive(self) -> dict[str, dict[str, Any]]:
        """member -> its facts, for every member whose liveness lease lives."""

    # -- locations and reservations -----------------------------------------------------------
    @abc.abstractmethod
    def reserve(self, member: str, container: str, *, memory: int, capacity: Capacity,
                lease: int, holder: str) -> str | None:
        """Reserve a slot for ``container`` on ``member`` atomically against its
        ``capacity`` (what is placed and reserved there counts); None when reserved, else
        why not. AlreadyExists while another launch has the name reserved; a placed record
        of the name is replaced (the caller has checked that no member holds it)."""

    @abc.abstractmethod
    def commit(self, container: str, member: str, memory: int = 0) -> None:
        """``container`` now lives on ``member``: its reservation becomes its location (no
        lease any more; recorded afresh if the reservation expired meanwhile)."""

    @abc.abstractmethod
    def release(self, container: str) -> None:
        """Drop ``container``'s reservation (a failed launch); a placed location stays."""

    @abc.abstractmethod
    def set_location(self, container: str, member: str, memory: int = 0) -> None:
        """Record where ``container`` lives (not a reservation)."""

    @abc.abstractmethod
    def forget_location(self, container: str) -> None: ...

    @abc.abstractmethod
    def locations(self, member: str | None = None) -> list[Location]:
        """Every location and reservation (on ``member``), by container name."""

    def location(self, container: str) -> Location | None:
        return next((loc for loc in self.locations() if loc.container == container), None)

    def usage_counts(self) -> dict[str, int]:
        """member -> how many containers are placed or reserved there."""
        counts: dict[str, int] = {}
        for loc in self.locations():
            counts[loc.member] = counts.get(loc.member, 0) + 1
        return counts

    def usage(self, member: str) -> Usage:
        locs = self.locations(member)
        return Usage(len(locs), sum(loc.memory for loc in locs))

    # -- move locks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def lock(self, name: str, holder: str, lease: int) -> str | None:
        """Take the lock on container ``name`` for ``holder`` while ``lease`` lives; None
        when taken, else who holds it."""

    @abc.abstractmethod
    def unlock(self, name: str, holder: str) -> None: ...

    @abc.abstractmethod
    def lock_holder(self, name: str) -> str | None: ...

    @abc.abstractmethod
    def move_location(self, container: str, source: str, target: str, holder: str, *,
                      new_name: str | None = None) -> bool:
        """Flip ``container``'s location from ``source`` to ``target`` (as ``new_name``) in
        one transaction that holds only while ``holder`` has its lock; False otherwise."""

    # -- manifest inventory ---------------------------------------------------------------------
    @abc.abstractmethod
    def inventory_put(self, kind: str, name: str, record: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def inventory_delete(self, kind: str, name: str) -> None: ...

    @abc.abstractmethod
    def inventory(self) -> dict[tuple[str, str], dict[str, Any]]: ...

    # -- events ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_event(self, event: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def events(self, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """``(position, event)`` for the events recorded after ``position`` ``after``."""

    def watch_events(self, after: int, stop: threading.Event, poll: float = 0.5
                     ) -> Iterator[tuple[int, dict[str, Any]]]:
        """The events after ``after`` as they are recorded, until ``stop`` is set."""
        while not stop.is_set():
            for pos, ev in self.events(after):
                after = pos
                yield pos, ev
            stop.wait(poll)

    def check(self) -> None:
        """Raise StoreUnavailable unless the store can serve writes now."""

    def __enter__(self) -> "ClusterStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteClusterStore(ClusterStore):
    """:class:`ClusterStore` in one SQLite file (WAL)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # one connection shared by this process's threads (a lease keeper beside the command):
        # a transaction must not take another thread's statements into it
        self._lock = threading.RLock()
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
        with self._lock:
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

    # -- leases: rows with an expiry; what an expired lease held is dropped on every access --
    def _expire(self) -> None:
        now = time.time()
        self.conn.execute("DELETE FROM leases WHERE expires < ?", (now,))
        live = "SELECT id FROM leases"
        self.conn.execute(f"DELETE FROM alive WHERE lease NOT IN ({live})")
        self.conn.execute(f"DELETE FROM locks WHERE lease NOT IN ({live})")
        self.conn.execute(f"DELETE FROM locations WHERE lease IS NOT NULL AND lease NOT IN ({live})")

    @contextlib.contextmanager
    def _live_tx(self) -> Iterator[None]:
        with self._tx():
            self._expire()
            yield

    def grant(self, ttl: float) -> int:
        with self._live_tx():
            cur = self.conn.execute("INSERT INTO leases(ttl, expires) VALUES (?, ?)",
                                    (ttl, time.time() + ttl))
            return int(cur.lastrowid or 0)

    def keepalive(self, lease: int) -> bool:
        with self._live_tx():
            cur = self.conn.execute("UPDATE leases SET expires = ? + ttl WHERE id = ?",
                                    (time.time(), lease))
            return cur.rowcount > 0

    def revoke(self, lease: int) -> None:
        with self._live_tx():
            self.conn.execute("UPDATE leases SET expires = 0 WHERE id = ?", (lease,))
            self._expire()

    def set_alive(self, member: str, lease: int, facts: dict[str, Any]) -> None:
        with self._live_tx():
            self.conn.execute("INSERT OR REPLACE INTO alive(member, lease, facts) VALUES (?,?,?)",
                              (member, lease, json.dumps(facts, sort_keys=True)))

    def alive(self) -> dict[str, dict[str, Any]]:
        with self._live_tx():
            rows = self.conn.execute("SELECT member, facts FROM alive ORDER BY member").fetchall()
        return {r["member"]: json.loads(r["facts"]) for r in rows}

    # -- locations and reservations -----------------------------------------------------------
    def reserve(self, member: str, container: str, *, memory: int, capacity: Capacity,
                lease: int, holder: str) -> str | None:
        with self._live_tx():  # BEGIN IMMEDIATE: the read and the write are one step
            taken = self.conn.execute("SELECT member, lease FROM locations WHERE container=?",
                                      (container,)).fetchone()
            if taken and taken["lease"] is not None:
                raise AlreadyExists(f"container {container!r} is being launched on "
                                    f"{taken['member']}")
            # a placed record of a name no member holds (the caller asked them): stale
            self.conn.execute("DELETE FROM locations WHERE container=?", (container,))
            count, used = self.conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(memory), 0) FROM locations WHERE member=?",
                (member,)).fetchone()
            why = capacity.refusal(count, used, memory)
            if why is None:
                self.conn.execute("INSERT INTO locations(container, member, memory, lease, "
                                  "holder) VALUES (?,?,?,?,?)",
                                  (container, member, memory, lease, holder))
            return why

    def commit(self, container: str, member: str, memory: int = 0) -> None:
        self.set_location(container, member, memory)

    def release(self, container: str) -> None:
        with self._live_tx():
            self.conn.execute("DELETE FROM locations WHERE container=? AND lease IS NOT NULL",
                              (container,))

    def set_location(self, container: str, member: str, memory: int = 0) -> None:
        with self._live_tx():
            self.conn.execute("INSERT OR REPLACE INTO locations(container, member, memory) "
                              "VALUES (?,?,?)", (container, member, memory))

    def forget_location(self, container: str) -> None:
        with self._live_tx():
            self.conn.execute("DELETE FROM locations WHERE container=?", (container,))

    def locations(self, member: str | None = None) -> list[Location]:
        with self._live_tx():
            rows = self.conn.execute(
                "SELECT * FROM locations" + (" WHERE member=?" if member else "") +
                " ORDER BY container", (member,) if member else ()).fetchall()
        return [Location(r["container"], r["member"], r["memory"], r["lease"] or 0,
                         r["holder"] or "") for r in rows]

    # -- move locks -----------------------------------------------------------------------------
    def lock(self, name: str, holder: str, lease: int) -> str | None:
        with self._live_tx():
            r = self.conn.execute("SELECT holder FROM locks WHERE name=?", (name,)).fetchone()
            if r is not None:
                return str(r["holder"])
            self.conn.execute("INSERT INTO locks(name, holder, lease) VALUES (?,?,?)",
                              (name, holder, lease))
            return None

    def unlock(self, name: str, holder: str) -> None:
        with self._live_tx():
            self.conn.execute("DELETE FROM locks WHERE name=? AND holder=?", (name, holder))

    def lock_holder(self, name: str) -> str | None:
        with self._live_tx():
            r = self.conn.execute("SELECT holder FROM locks WHERE name=?", (name,)).fetchone()
        return None if r is None else str(r["holder"])

    def move_location(self, container: str, source: str, target: str, holder: str, *,
                      new_name: str | None = None) -> bool:
        with self._live_tx():
            held = self.conn.execute("SELECT 1 FROM locks WHERE name=? AND holder=?",
                                     (container, holder)).fetchone()
            r = self.conn.execute("SELECT member, memory FROM locations WHERE container=?",
                                  (container,)).fetchone()
            if not held or (r is not None and r["member"] != source):
                return False
            self.conn.execute("DELETE FROM locations WHERE container=?", (container,))
            self.conn.execute("INSERT OR REPLACE INTO locations(container, member, memory) "
                              "VALUES (?,?,?)", (new_name or container, target,
                                                 r["memory"] if r else 0))
            return True

    # -- manifest inventory ---------------------------------------------------------------------
    def inventory_put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        with self._live_tx():
            self.conn.execute("INSERT OR REPLACE INTO inventory(kind, name, record) "
                              "VALUES (?,?,?)", (kind, name, json.dumps(record, sort_keys=True)))

    def inventory_delete(self, kind: str, name: str) -> None:
        with self._live_tx():
            self.conn.execute("DELETE FROM inventory WHERE kind=? AND name=?", (kind, name))

    def inventory(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            rows = self.conn.execute("SELECT * FROM inventory ORDER BY kind, name").fetchall()
        return {(r["kind"], r["name"]): json.loads(r["record"]) for r in rows}

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, event: dict[str, Any]) -> None:
        with self._live_tx():
            cur = self.conn.execute("INSERT INTO events(event) VALUES (?)",
                                    (json.dumps(event, sort_keys=True, default=str),))
            # the store keeps the newest EVENTS_KEPT (each member's log keeps them all)
            self.conn.execute("DELETE FROM events WHERE seq <= ?",
                              ((cur.lastrowid or 0) - EVENTS_KEPT,))

    def events(self, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self.conn.execute("SELECT seq, event FROM events WHERE seq > ? ORDER BY seq",
                                     (after,)).fetchall()
        return [(r["seq"], json.loads(r["event"])) for r in rows]
