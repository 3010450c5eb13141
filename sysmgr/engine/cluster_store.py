"""Which store holds a cluster's record, and the store's moving parts the engine runs: leases
kept alive in a thread, the controller's liveness heartbeat, copying a record between
stores, the members cache read while the store has no quorum, and what a member root reports
to (pushed by the admin host; its events go there by :mod:`sysmgr.engine.store_events`).

``sqlite`` (``<admin root>/cluster.db``) is the default and needs nothing;
``sysmgr cluster store set etcd://h1:2379,h2:2379`` records an etcd store in
``<admin root>/cluster-store.json``. The etcd client is imported only when a store is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from sysmgr.errors import SysmgrError, ValidationError
from sysmgr.layout import Layout
from sysmgr.state.cluster import ClusterStore, SQLiteClusterStore
from sysmgr.types import MemberSpec

#: default TTL of a controller's liveness lease (seconds)
DEFAULT_TTL = 10.0
#: TTL of a launcher's reservation and a mover's lock (kept alive while the command runs)
COMMAND_TTL = 15.0


@dataclass(frozen=True)
class StoreConfig:
    """A cluster store: ``sqlite`` or ``etcd`` (endpoints, TLS files, cluster id); on a
    member's root also the member's name and its liveness TTL."""

    kind: str = "sqlite"
    endpoints: tuple[str, ...] = ()
    cluster_id: str = "default"
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    member: str | None = None
    ttl: float = DEFAULT_TTL
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def url(self) -> str:
        return f"etcd://{','.join(self.endpoints)}" if self.kind == "etcd" else "sqlite"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d["endpoints"] = list(self.endpoints)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StoreConfig":
        return cls(kind=d.get("kind", "sqlite"), endpoints=tuple(d.get("endpoints") or ()),
                   cluster_id=d.get("cluster_id") or "default", cacert=d.get("cacert"),
                   cert=d.get("cert"), key=d.get("key"), member=d.get("member"),
                   ttl=float(d.get("ttl") or DEFAULT_TTL))


def write_atomic(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o711, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def parse_store(url: str, *, cluster_id: str | None = None, cacert: str | None = None,
                cert: str | None = None, key: str | None = None) -> StoreConfig:
    """``sqlite`` or ``etcd://host:port[,host:port...]`` (ValidationError otherwise)."""
    url = url.strip()
    if url == "sqlite":
        return StoreConfig()
    if not url.startswith("etcd://"):
        raise ValidationError(f"invalid cluster store {url!r}: expected sqlite or "
                              "etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = tuple(e.strip() for e in url[len("etcd://"):].split(",") if e.strip())
    for e in endpoints:
        host, _, port = e.rpartition(":")
        if not host or not port.isdigit():
            raise ValidationError(f"invalid etcd endpoint {e!r}: expected HOST:PORT")
    if not endpoints:
        raise ValidationError("an etcd store needs at least one endpoint: etcd://HOST:PORT")
    files = {n: os.path.abspath(v) if v else None
             for n, v in (("cacert", cacert), ("cert", cert), ("key", key))}
    return StoreConfig("etcd", endpoints, cluster_id or "default", **files)


def read_config(path: str) -> StoreConfig | None:
    try:
        with open(path) as f:
            return StoreConfig.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SysmgrError(f"cannot read the cluster store setting {path}: {e}") from e


def write_config(path: str, conf: StoreConfig | None) -> None:
    if conf is None or (conf.kind == "sqlite" and conf.member is None):
        if os.path.exists(path):
            os.unlink(path)
        return
    try:
        write_atomic(path, (json.dumps(conf.to_dict(), indent=1, sort_keys=True) + "\n")
                     .encode(), mode=0o600)
    except OSError as e:
        raise SysmgrError(f"cannot record the cluster store in {path}: {e.strerror}") from e


def open_config(conf: StoreConfig, layout: Layout) -> ClusterStore:
    if conf.kind == "sqlite":
        return SQLiteClusterStore(layout.cluster_db)
    from sysmgr.state.cluster_etcd import EtcdClusterStore
    from sysmgr.state.etcd import TLS

    return EtcdClusterStore(list(conf.endpoints), conf.cluster_id,
                            TLS(conf.cacert, conf.cert, conf.key))


def store_config(layout: Layout) -> StoreConfig:
    return read_config(layout.cluster_store) or StoreConfig()


def open_store(layout: Layout) -> ClusterStore:
    return open_config(store_config(layout), layout)


def has_store(layout: Layout) -> bool:
    """Whether the root has a cluster record at all (cheap: stats, no SQLite, no etcd)."""
    return os.path.exists(layout.cluster_db) or os.path.exists(layout.cluster_store)


# -- the members cache (read-only commands while the store has no quorum) ---------------------

def _spec_dict(spec: MemberSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["groups"], d["config"] = list(spec.groups), [list(kv) for kv in spec.config]
    return d


def write_cache(layout: Layout, specs: list[MemberSpec]) -> None:
    data = (json.dumps([_spec_dict(s) for s in specs], sort_keys=True) + "\n").encode()
    try:
        with open(layout.cluster_cache, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    try:
        write_atomic(layout.cluster_cache, data, mode=0o600)
    except OSError:
        pass  # a cache: the next successful read writes it again


def read_cache(layout: Layout) -> list[MemberSpec] | None:
    try:
        with open(layout.cluster_cache) as f:
            rows = json.load(f)
    except (OSError, ValueError):
        return None
    return [MemberSpec(**{**r, "groups": tuple(r["groups"]),
                          "config": tuple(tuple(kv) for kv in r["config"])}) for r in rows]


# -- copying a record between stores ------------------------------------------------------------

def copy_records(src: ClusterStore, dst: ClusterStore) -> dict[str, int]:
    """Copy members (with evacuation records), locations and the inventory from ``src`` to
    ``dst`` (what exists in ``dst`` under the same names is replaced); counts by kind.
    Leases, reservations, locks and events belong to running commands: not copied."""
    counts = {"members": 0, "evacuations": 0, "locations": 0, "inventory": 0}
    for spec in src.members():
        dst.put(spec)
        dst.set_evacuated(spec.name, spec.evacuated)
        counts["members"] += 1
        for container, mode in src.evacuated_containers(spec.name):
            dst.record_evacuated(spec.name, container, mode)
            counts["evacuations"] += 1
    for loc in src.locations():
        if not loc.reserved:
            dst.set_location(loc.container, loc.member, loc.memory)
            counts["locations"] += 1
    for (kind, name), record in src.inventory().items():
        dst.inventory_put(kind, name, record)
        counts["inventory"] += 1
    return counts


# -- leases kept alive --------------------------------------------------------------------------

def holder_name(what: str) -> str:
    """Who holds a lock or a reservation, for the message a refused command prints."""
    return (f"{what} by pid {os.getpid()} on {socket.gethostname()} "
            f"since {time.strftime('%H:%M:%S')}")


class LeaseKeeper:
    """A lease granted on entry, renewed every third of its TTL in a thread, revoked on exit
    (what it holds goes with it; a killed process's lease simply expires)."""

    def __init__(self, store: ClusterStore, ttl: float = COMMAND_TTL) -> None:
        self.store, self.ttl = store, ttl
        self.lease = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LeaseKeeper":
        self.lease = self.store.grant(self.ttl)
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.keepalive(self.lease):
                    self.lost = True
                    return
            except SysmgrError:
                continue  # the store is away: try again; the TTL decides

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store.revoke(self.lease)
        except SysmgrError:
            pass  # unreachable: the lease expires by itself


class Heartbeat:
    """A member's liveness: its ``alive`` record attached to a lease kept alive in a thread,
    with ``facts()`` refreshed every TTL. A lease that expired while the store was away is
    replaced by a new one as soon as the store answers again. After every good beat
    ``on_beat()`` runs (the member's event backlog is flushed); the state of the lease is
    written to ``status_path`` (``controller status`` shows it)."""

    def __init__(self, store: ClusterStore, member: str, ttl: float,
                 facts: Callable[[], dict[str, Any]], log: Callable[[str], None], *,
                 on_beat: Callable[[], Any] | None = None, status_path: str | None = None
                 ) -> None:
        self.store, self.member, self.ttl = store, member, ttl
        self.facts, self.log = facts, log
        self.on_beat, self.status_path = on_beat, status_path
        self.lease = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._last_facts = 0.0
        self._down = False

    def beat(self) -> None:
        """One renewal (a new lease and record when the old one is gone)."""
        now = time.monotonic()
        if self.lease and self.store.keepalive(self.lease):
            if now - self._last_facts < self.ttl:
                return
        else:
            self.lease = self.store.grant(self.ttl)
        facts = {**self.facts(), "ttl": self.ttl, "pid": os.getpid(), "since": time.time()}
        self.store.set_alive(self.member, self.lease, facts)
        self._last_facts = now

    def _run(self) -> None:
        while True:
            try:
                self.beat()
                if self.on_beat is not None:
                    self.on_beat()
                if self._down:
                    self.log(f"cluster store: answering again, {self.member} is alive")
                self._down = False
                self._write_status(None)
            except SysmgrError as e:
                if not self._down:
                    self.log(f"cluster store: {e.message} (retrying)")
                self._down = True
                self._write_status(e.message)
            if self._stop.wait(self.ttl / 3):
                return

    def _write_status(self, error: str | None) -> None:
        if self.status_path is None:
            return
        st = {"member": self.member, "pid": os.getpid(), "lease": self.lease, "ttl": self.ttl,
              "state": "down" if error else "alive", "error": error, "time": time.time()}
        with contextlib.suppress(OSError):
            write_atomic(self.status_path, (json.dumps(st, sort_keys=True) + "\n").encode())

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.lease:
            try:
                self.store.revoke(self.lease)  # OFFLINE at once on a clean stop
            except SysmgrError:
                pass
        if self.status_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_path)


# -- what a member root reports to (pushed by the admin host) ----------------------------------

def member_config(conf: StoreConfig, member: str) -> dict[str, Any] | None:
    """What the admin host pushes to member ``member`` for store ``conf``: the store with
    the member's name (TLS paths as given: files the member has), None for ``sqlite``."""
    if conf.kind != "etcd":
        return None
    return replace(conf, member=member).to_dict()


def record_member(layout: Layout, config: dict[str, Any] | None, *,
                  only_cluster: str | None = None) -> str:
    """On a member's root: record the store it reports to (``config``, as
    :func:`member_config` makes it), or clear it (None). ``only_cluster``: clear it only when
    it is that store (``url#cluster-id``): a root moved to another cluster keeps its own.
    What was done: ``recorded``, ``cleared`` or ``unchanged``."""
    old = read_config(layout.cluster_member)
    if config is not None:
        if not layout.exists():
            raise SysmgrError(f"{layout.root} is not an initialised sysmgr root",
                              hint=f"sysmgr --root {layout.root} init")
        new = StoreConfig.from_dict(config)
        if old == new:
            return "unchanged"
        write_config(layout.cluster_member, new)
        return "recorded"
    if old is None or (only_cluster is not None and store_id(old) != only_cluster):
        return "unchanged"
    write_config(layout.cluster_member, None)
    return "cleared"


def store_id(conf: StoreConfig) -> str:
    """Which store and cluster ``conf`` names (``etcd://h1:2379#default``)."""
    return f"{conf.url}#{conf.cluster_id}"


# -- the cluster-wide manifest inventory --------------------------------------------------------

def record_inventory(store: ClusterStore, member: str, plan: Any) -> None:
    """After ``plan`` applied on ``member``: what its manifests made there is in the store's
    inventory (``kind``, ``member/name``), and what it pruned or forgot is not."""
    from sysmgr.engine.actions import ForgetInventory, Prune

    for kind, name, _doc in getattr(plan, "applied", ()):
        store.inventory_put(kind, f"{member}/{name}", {
            "member": member, "name": name, "origin": plan.origin, "revision": plan.revision})
    for a in plan.actions:
        if isinstance(a, (Prune, ForgetInventory)):
            store.inventory_delete(a.target_kind, f"{member}/{a.name}")
