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

from sysmgr.api.fanout import failures
from sysmgr.engine import cluster as ecluster
from sysmgr.engine import cluster_store as estore
from sysmgr.errors import Conflict, StoreUnavailable, SysmgrError, ValidationError

Cluster = Any  # sysmgr.api.cluster.ClusterManager (which imports this module)
Warn = Callable[[str], None]
_FIX = "once it answers, 'sysmgr cluster store set {}' tells it"


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
            cert: str | None = None, key: str | None = None,
            warn: Warn | None = None) -> estore.StoreConfig:
        """Switch the admin root to the store at ``url`` (``sqlite`` or ``etcd://...``),
        after checking that it answers, and tell the members (see :func:`push`; ``warn``
        gets a line for each member that could not be told). Nothing is copied (see
        :meth:`migrate`); setting the store in use again tells the members again."""
        conf = estore.parse_store(url, cluster_id=cluster_id, cacert=cacert, cert=cert, key=key)
        self._open_checked(conf).close()
        self._switch(conf, warn)
        return conf

    def migrate(self, url: str, *, cluster_id: str | None = None, cacert: str | None = None,
                cert: str | None = None, key: str | None = None,
                warn: Warn | None = None) -> dict[str, int]:
        """Copy the cluster's record from the current store into the one at ``url`` (members,
        evacuation records, locations, inventory), then switch to it and tell the members
        (as :meth:`set`); counts by kind."""
        conf = estore.parse_store(url, cluster_id=cluster_id, cacert=cacert, cert=cert, key=key)
        if conf == self.config():
            raise Conflict(f"the cluster store is {conf.url} already")
        src = self._cluster.store
        src.check()
        with self._open_checked(conf) as dst:
            counts = estore.copy_records(src, dst)
        self._switch(conf, warn)
        return counts

    def _switch(self, conf: estore.StoreConfig, warn: Warn | None) -> None:
        """Record ``conf`` as the admin root's store, then tell the members: those of the
        new store get it, those only the old one had stop reporting to the old one."""
        old = self.config()
        try:
            old_specs = self._cluster.specs()
        except SysmgrError:
            old_specs = []  # the old store is away: its members are not told
        self._cluster.close()
        estore.write_config(self._cluster.layout.cluster_store, conf)
        push(self._cluster, conf, previous=(old, old_specs), warn=warn)


def push(cluster: Cluster, conf: estore.StoreConfig, *, names: Sequence[str] | None = None,
         previous: tuple[estore.StoreConfig, Sequence[Any]] | None = None,
         warn: Warn | None = None) -> None:
    """Tell the members of the store in use (or ``names`` of them) which store they report
    to: ``conf`` with each one's name (an etcd store: their controllers keep a lease and
    their events go there), or nothing (``sqlite``: cleared). ``previous``: the store before
    a switch and its members (those the new one lacks stop reporting to the old one).
    ``warn``: a line for each member that could not be told."""
    try:
        specs = list(cluster.specs())
    except SysmgrError:
        specs = []
    if names is not None:
        specs = [s for s in specs if s.name in names]
    jobs = {s.name: (s, estore.member_config(conf, s.name), None) for s in specs}
    old, old_specs = previous if previous is not None else (conf, ())
    if old.kind == "etcd":
        jobs.update((s.name, (s, None, estore.store_id(old))) for s in old_specs
                    if s.name not in jobs)
    tell(cluster, jobs, warn=warn)


def tell(cluster: Cluster, jobs: Mapping[str, tuple[Any, Any, str | None]], *,
         fix: str | None = None, warn: Warn | None = None) -> None:
    """``member -> (spec, config or None, only_cluster)``: each member's
    ``member_store_set`` at once; ``warn`` gets a line for each that could not be told
    (ending with ``fix``, what to do about it)."""
    if not jobs:
        return
    ms = cluster.member_set_of([spec for spec, _, _ in jobs.values()])
    try:
        outs = ms.each(lambda m, b: b.member_store_set(jobs[m][1], only_cluster=jobs[m][2]))
    finally:
        ms.close()
    for m, why in sorted(failures(outs).items()):
        what = ("does not know which cluster store it reports to" if jobs[m][1] else
                "may still report its events to an etcd store")
        again = fix or _FIX.format(cluster.store_admin.config().url)
        if warn is not None:
            warn(f"member {m} {what}: {why} ({again})")


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


def reporting(root: str, *, store_url: str | None = None, member: str | None = None,
              ttl: float | None = None, cluster_id: str | None = None,
              cacert: str | None = None, cert: str | None = None, key: str | None = None
              ) -> estore.StoreConfig | None:
    """The store the controller of member root ``root`` reports to: what the root records
    (pushed by the admin host), with the values given here over it (``store_url`` names
    another store); None when neither names an etcd store."""
    from sysmgr.layout import Layout

    recorded = estore.read_config(Layout(root).cluster_member)
    if recorded is not None and recorded.kind != "etcd":
        recorded = None
    if store_url is not None:
        conf = estore.parse_store(store_url, cluster_id=cluster_id, cacert=cacert, cert=cert,
                                  key=key)
        conf = replace(conf, member=member or (recorded.member if recorded else None),
                       ttl=ttl or (recorded.ttl if recorded else estore.DEFAULT_TTL))
    elif recorded is not None:
        given = estore.parse_store(recorded.url, cacert=cacert, cert=cert, key=key)
        conf = replace(recorded, member=member or recorded.member, ttl=ttl or recorded.ttl,
                       cluster_id=cluster_id or recorded.cluster_id,
                       **{k: getattr(given, k) for k in ("cacert", "cert", "key")
                          if getattr(given, k) is not None})
    elif member or cluster_id or cacert or cert or key:
        raise ValidationError("this root records no cluster store to report to",
                              hint="--cluster-store etcd://HOST:PORT, or on the admin host: "
                                   "sysmgr cluster store set etcd://HOST:PORT")
    else:
        return None
    if not conf.member:
        raise ValidationError(f"reporting to {conf.url} needs this member's name",
                              hint="--member NAME")
    return conf


@contextlib.contextmanager
def heartbeat(conf: estore.StoreConfig, *, root: str, facts: Callable[[], dict[str, Any]],
              log: Callable[[str], None]) -> Iterator[None]:
    """A member's liveness while the block runs (the controller's): the member root records
    the store ``conf`` (its events go there too), a lease is kept alive with the member's
    facts, and every beat writes the events the store missed (the root's backlog)."""
    from sysmgr.engine import store_events
    from sysmgr.layout import Layout

    layout = Layout(root)
    if estore.read_config(layout.cluster_member) != conf:
        estore.write_config(layout.cluster_member, conf)
    store = estore.open_config(conf, layout)
    try:
        with estore.Heartbeat(store, conf.member or "", conf.ttl, facts, log,
                              on_beat=lambda: store_events.flush(layout, store),
                              status_path=layout.cluster_lease):
            yield
    finally:
        store.close()


def member_report(root: str) -> dict[str, Any]:
    """What member root ``root`` reports to (``controller status``): the store (url, cluster
    id, member name; empty when none), its controller's lease (``lease``: its state as the
    controller last wrote it, with the controller's pid) and the events waiting for the
    store (``backlog``)."""
    import json

    from sysmgr.engine import store_events
    from sysmgr.layout import Layout

    layout = Layout(root)
    conf = estore.read_config(layout.cluster_member)
    if conf is None or conf.kind != "etcd":
        return {}
    out: dict[str, Any] = {"url": conf.url, "cluster_id": conf.cluster_id,
                           "member": conf.member, "ttl": conf.ttl,
                           "backlog": len(store_events.backlog(layout))}
    try:
        with open(layout.cluster_lease) as f:
            out["lease"] = json.load(f)
    except (OSError, ValueError):
        out["lease"] = None
    return out
