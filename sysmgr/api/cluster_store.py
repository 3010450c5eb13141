"""``client.cluster.store``: which store holds the cluster's record (SQLite in the admin
root, or etcd shared by several admin hosts), switching and migrating between them, and what
the store coordinates across commands: reservations for new containers (no double-booking),
move locks, and a member controller's liveness heartbeat.

    >>> client.cluster.store.show()["kind"]
    'sqlite'
    >>> client.cluster.store.migrate("etcd://10.0.0.1:2379,10.0.0.2:2379")
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from sysmgr.engine import cluster as ecluster
from sysmgr.engine import cluster_store as estore
from sysmgr.errors import Conflict, StoreUnavailable, SysmgrError

Cluster = Any  # sysmgr.api.cluster.ClusterManager (which imports this module)


class StoreManager:
    """``client.cluster.store``."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def config(self) -> estore.StoreConfig:
        return estore.store_config(self._cluster.layout)

    def show(self) -> dict[str, Any]:
        """The store: kind, url, cluster id, TLS files, and whether it answers now."""
        conf = self.config()
        out: dict[str, Any] = {"kind": conf.kind, "url": conf.url}
        if conf.kind == "etcd":
            out.update(cluster_id=conf.cluster_id, endpoints=list(conf.endpoints),
                       cacert=conf.cacert, cert=conf.cert, key=conf.key)
        else:
            out["path"] = self._cluster.layout.cluster_db
        try:
            members = self._cluster.store.members()
            out.update(state="ok", members=len(members))
        except StoreUnavailable as e:
            out.update(state="unavailable", reason=e.message)
        return out

    def _open_checked(self, conf: estore.StoreConfig) -> Any:
        store = estore.open_config(conf, self._cluster.layout)
        try:
            store.check()
        except SysmgrError:
            store.close()
            raise
        return store

    def set(self, url: str, *, cluster_id: str | None = None, cacert: str | None = None,
            cert: str | None = None, key: str | None = None) -> estore.StoreConfig:
        """Switch the admin root to the store at ``url`` (``sqlite`` or ``etcd://...``),
        after checking that it answers. Nothing is copied (see :meth:`migrate`)."""
        conf = estore.parse_store(url, cluster_id=cluster_id, cacert=cacert, cert=cert, key=key)
        self._open_checked(conf).close()
        self._cluster.close()
        estore.write_config(self._cluster.layout.cluster_store, conf)
        return conf

    def migrate(self, url: str, *, cluster_id: str | None = None, cacert: str | None = None,
                cert: str | None = None, key: str | None = None) -> dict[str, int]:
        """Copy the cluster's record from the current store into the one at ``url`` (members,
        evacuation records, locations, inventory), then switch to it; counts by kind."""
        conf = estore.parse_store(url, cluster_id=cluster_id, cacert=cacert, cert=cert, key=key)
        if conf == self.config():
            raise Conflict(f"the cluster store is {conf.url} already")
        src = self._cluster.store
        src.check()
        with self._open_checked(conf) as dst:
            counts = estore.copy_records(src, dst)
        self._cluster.close()
        estore.write_config(self._cluster.layout.cluster_store, conf)
        return counts


# -- reservations and locks --------------------------------------------------------------------

def live_store(cluster: Cluster) -> Any:
    """The store, for an operation that must not run on stale records: StoreUnavailable
    (one line, nothing done) while it has no quorum."""
    cluster.specs()
    if cluster.stale:
        raise StoreUnavailable(f"refused: {cluster.stale}",
                               hint="retry once the cluster store has its quorum again")
    store = cluster.store
    store.check()
    return store


def reserve(cluster: Cluster, name: str, lease: int, *, target: str | None,
            config: Mapping[str, str] | None, profiles: Sequence[str] | None
            ) -> tuple[str, int]:
    """Choose a member for new container ``name`` and reserve its slot there (a
    compare-and-swap on the member's capacity key); a member found full is passed over and
    the next best tried. ``(member, bytes of memory reserved)``. Conflict when no member can take it. (The caller has checked the
    store with :func:`live_store`.)"""
    store = cluster.store
    cands, specs, group, memory = cluster.candidates(name, target=target, config=config,
                                                     profiles=profiles)
    need = ecluster.memory_need(memory)
    counts = store.usage_counts()
    full = ecluster.known_full({c.name: specs[c.name] for c in cands}, counts)
    holder = estore.holder_name(f"launch of {name}")
    while True:
        live = [ecluster.with_count(c, counts.get(c.name, 0)) for c in cands
                if c.name not in full]
        result = ecluster.place(live, group=group, memory=memory)
        if result.member is None:
            why = "; ".join([*(f"{m}: {r}" for m, r in full.items()),
                             *([result.reason()] if result.rejected else [])])
            raise Conflict(f"no cluster member can take container {name!r}: "
                           f"{why or 'the cluster has no members'}")
        member = result.member
        facts = cluster.alive_facts().get(member) if store.lease_liveness else None
        why = store.reserve(member, name, memory=need, lease=lease, holder=holder,
                            capacity=ecluster.capacity(specs[member], facts))
        if why is None:
            return member, need
        full[member] = why


@contextlib.contextmanager
def placing(cluster: Cluster, name: str, **kw: Any) -> Iterator[str]:
    """A reserved member for new container ``name`` while the block creates it there: the
    reservation becomes its location when the block succeeds and is released when it fails
    (a launcher that dies leaves a reservation that expires with its lease)."""
    store = live_store(cluster)
    with estore.LeaseKeeper(store) as keeper:
        member, need = reserve(cluster, name, keeper.lease, **kw)
        try:
            yield member
        except BaseException:
            with contextlib.suppress(SysmgrError):
                store.release(name)
            raise
        store.commit(name, member, need)


@contextlib.contextmanager
def move_lock(cluster: Cluster, name: str, what: str, *, wait: bool = False,
              say: Callable[[str], None] | None = None) -> Iterator[Any]:
    """Hold container ``name``'s lock for ``what`` (a move, a delete) while the block runs:
    another holder makes it Conflict naming the holder, or (``wait``) waits for it. The lock
    is bound to a lease: a killed holder releases it within the TTL."""
    store = live_store(cluster)
    holder = estore.holder_name(what)
    with estore.LeaseKeeper(store) as keeper:
        held = _Held(store, holder)
        while (other := store.lock(name, holder, keeper.lease)) is not None:
            if not wait:
                raise Conflict(f"container {name!r} is locked: {other}",
                               hint="wait for it, or retry with --wait")
            if say and not held.waited:
                say(f"waiting for {other}")
            held.waited = True
            time.sleep(0.5)
        try:
            yield held
        finally:
            with contextlib.suppress(SysmgrError):
                store.unlock(name, holder)


class _Held:
    """A held move lock: what the move's final step records with it."""

    def __init__(self, store: Any, holder: str) -> None:
        self.store, self.holder = store, holder
        self.waited = False

    def flip(self, name: str, source: str, target: str, new_name: str | None = None) -> None:
        """The location flips to ``target`` in one transaction guarded by this lock; if
        the lock was lost meanwhile (its lease expired while the store was away) the record
        is set all the same: the container is on ``target`` now, and only there."""
        try:
            if not self.store.move_location(name, source, target, self.holder,
                                            new_name=new_name):
                self.store.forget_location(name)
                self.store.set_location(new_name or name, target)
        except SysmgrError:
            pass  # the store is away: the next launch or move of the name corrects it


def check_unlocked(cluster: Cluster, names: Sequence[str]) -> None:
    """Conflict when a move holds one of ``names`` (a delete is refused with the holder)."""
    if not cluster.enabled:
        return
    store = live_store(cluster)
    for n in names:
        other = store.lock_holder(n)
        if other is not None:
            raise Conflict(f"container {n!r} is locked: {other}", hint="wait for it to finish")


@contextlib.contextmanager
def deleting(cluster: Cluster | None, names: Sequence[str]) -> Iterator[list[str]]:
    """Around a delete of ``names`` in a cluster: a name a move holds is refused with its
    holder, and the names the block leaves in the list it gets (the deleted ones) leave the
    store's locations afterwards. Outside a cluster (``cluster`` None) it does nothing."""
    deleted = list(names)
    if cluster is not None:
        check_unlocked(cluster, deleted)
    yield deleted
    if cluster is not None:
        forget_locations(cluster, deleted)


def record_location(cluster: Cluster, name: str, member: str) -> None:
    """A container made on ``member`` without a reservation (an import, a copy) is recorded
    there (best effort, as :func:`forget_locations`)."""
    with contextlib.suppress(SysmgrError):
        cluster.store.set_location(name, member)


def forget_locations(cluster: Cluster, names: Sequence[str]) -> None:
    """Deleted containers leave the store (best effort: a stale record is replaced by the
    next launch of the name, and does not stop one)."""
    with contextlib.suppress(SysmgrError):
        for n in names:
            cluster.store.forget_location(n)


@contextlib.contextmanager
def heartbeat(store_url: str, member: str, *, root: str, ttl: float,
              facts: Callable[[], dict[str, Any]], log: Callable[[str], None],
              cacert: str | None = None, cert: str | None = None, key: str | None = None,
              cluster_id: str | None = None) -> Iterator[None]:
    """A member's liveness while the block runs (the controller's): the member root records
    the store (its events go there too) and a lease is kept alive with the member's facts."""
    from sysmgr.layout import Layout

    layout = Layout(root)
    conf = estore.parse_store(store_url, cluster_id=cluster_id, cacert=cacert, cert=cert,
                              key=key)
    conf = replace(conf, member=member, ttl=ttl)
    estore.write_config(layout.cluster_member, conf)
    store = estore.open_config(conf, layout)
    try:
        with estore.Heartbeat(store, member, ttl, facts, log):
            yield
    finally:
        store.close()
