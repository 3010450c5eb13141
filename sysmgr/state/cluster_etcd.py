"""The :class:`~sysmgr.state.cluster.ClusterStore` in etcd v3, for a cluster several admin
hosts, CI runners and member controllers act on at once.

Keys, all under ``/sysmgr/<cluster-id>/``:

- ``members/<name>``: the member's record (JSON, with its evacuated mark);
  ``evacuated/<member>/<container>``: how evacuating it stopped that container;
- ``alive/<member>``: its controller's facts, attached to the controller's lease (gone
  within the TTL of the controller's death: the member is then OFFLINE);
- ``names/<container>``: where it lives (``member``, ``memory``), the authoritative location;
  while a launch is under way it is a reservation attached to the launcher's lease;
  ``usage/<member>/<container>``: the same, indexed by member (what placement counts);
  ``capacity/<member>``: bumped by every reservation on the member: a reservation is a
  transaction that compares its ``mod_revision`` with the one read (compare-and-swap), so
  two launches that read the same usage cannot both succeed;
- ``locks/<container>``: a move's lock (its holder), attached to the mover's lease;
- ``inventory/<kind>/<name>``: objects created from manifests;
- ``events/<time>-<id>``: the event stream (``monitor --all-members`` watches it); an
  event with an ``id`` is written only if its key is absent (members' backlogs).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import asdict, replace
from typing import Any, Iterator

from sysmgr.errors import AlreadyExists, Conflict, NotFound, SysmgrError
from sysmgr.state.cluster import Capacity, ClusterStore, Location
from sysmgr.state.etcd import KV, TLS, EtcdClient, compare, delete_op, put_op, range_op
from sysmgr.types import MemberSpec

#: attempts of one reservation against concurrent ones before giving up
_CAS_ATTEMPTS = 200
#: events stay in the store this long (each process's events share one lease)
EVENT_TTL = 7 * 24 * 3600
_seq = itertools.count()


def _spec_dict(spec: MemberSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["groups"], d["config"] = list(spec.groups), dict(spec.config)
    return d


def _spec(d: dict[str, Any]) -> MemberSpec:
    return MemberSpec(name=d["name"], url=d["url"], root=d["root"], key=d.get("key"),
                      sysmgr=d.get("sysmgr") or "sysmgr", groups=tuple(d.get("groups") or ()),
                      config=tuple(sorted((d.get("config") or {}).items())),
                      host_key=d.get("host_key"), evacuated=bool(d.get("evacuated")))


def _kvs(response: dict[str, Any]) -> list[KV]:
    return [KV.of(d) for d in (response.get("response_range") or {}).get("kvs") or []]


class EtcdClusterStore(ClusterStore):
    """The cluster's records in etcd (see the module docstring for the keys)."""

    kind = "etcd"
    lease_liveness = True

    def __init__(self, endpoints: list[str], cluster_id: str, tls: TLS | None = None) -> None:
        self.client = EtcdClient(endpoints, tls)
        self.cluster_id = cluster_id
        self.prefix = f"/sysmgr/{cluster_id}/"
        #: container -> (member, memory, lease) of the reservations this process made
        self._reserved: dict[str, tuple[str, int, int]] = {}
        self._event_lease = 0

    def k(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def close(self) -> None:
        self.client.close()

    def check(self) -> None:
        # a linearizable read needs the quorum: StoreUnavailable without one
        self.client.get(self.k("quorum-probe"))

    # -- members ------------------------------------------------------------------------------
    def members(self) -> list[MemberSpec]:
        kvs, _ = self.client.range(self.k("members", ""))
        return [_spec(kv.json()) for kv in kvs]

    def member(self, name: str) -> MemberSpec:
        kv = self.client.get(self.k("members", name))
        if kv is None:
            raise NotFound(f"cluster member {name!r} not found",
                           hint="sysmgr cluster list shows the members")
        return _spec(kv.json())

    def add(self, spec: MemberSpec) -> None:
        key = self.k("members", spec.name)
        ok, _ = self.client.txn([compare(key, "VERSION", 0)], [put_op(key, _spec_dict(spec))])
        if not ok:
            raise AlreadyExists(f"cluster member {spec.name!r} already exists")

    def _update(self, name: str, change: Any, *, create: MemberSpec | None = None) -> None:
        """Read-modify-write of one member's record, retried when another writer came in."""
        key = self.k("members", name)
        for _ in range(_CAS_ATTEMPTS):
            kv = self.client.get(key)
            if kv is None and create is None:
                self.member(name)  # NotFound
            old = _spec(kv.json()) if kv else create
            new = _spec_dict(change(old))
            cmp = compare(key, "MOD", kv.mod_revision) if kv else compare(key, "VERSION", 0)
            if self.client.txn([cmp], [put_op(key, new)])[0]:
                return
        raise Conflict(f"cluster member {name!r} kept changing under this update")

    def put(self, spec: MemberSpec) -> None:
        self._update(spec.name, lambda old: replace(spec, evacuated=old.evacuated), create=spec)

    def remove(self, name: str) -> None:
        self.member(name)
        self.client.txn([], [delete_op(self.k("members", name)),
                             delete_op(self.k("evacuated", name, ""), prefix=True)])

    def set_groups(self, name: str, groups: tuple[str, ...]) -> None:
        self._update(name, lambda old: replace(old, groups=tuple(groups)))

    def set_evacuated(self, name: str, evacuated: bool) -> None:
        self._update(name, lambda old: replace(old, evacuated=evacuated))

    def record_evacuated(self, member: str, container: str, mode: str) -> None:
        self.client.put(self.k("evacuated", member, container), mode)

    def evacuated_containers(self, member: str) -> list[tuple[str, str]]:
        kvs, _ = self.client.range(self.k("evacuated", member, ""))
        return [(kv.key.rsplit("/", 1)[1], kv.json()) for kv in kvs]

    def forget_evacuated(self, member: str, container: str) -> None:
        self.client.delete(self.k("evacuated", member, container))

    # -- leases and liveness --------------------------------------------------------------------
    def grant(self, ttl: float) -> int:
        return self.client.grant(ttl)

    def keepalive(self, lease: int) -> bool:
        return self.client.keepalive(lease)

    def revoke(self, lease: int) -> None:
        self.client.revoke(lease)

    def set_alive(self, member: str, lease: int, facts: dict[str, Any]) -> None:
        self.client.put(self.k("alive", member), facts, lease)

    def alive(self) -> dict[str, dict[str, Any]]:
        kvs, _ = self.client.range(self.k("alive", ""))
        return {kv.key.rsplit("/", 1)[1]: kv.json() for kv in kvs}

    # -- locations and reservations -----------------------------------------------------------
    def _snapshot(self, member: str, container: str) -> tuple[KV | None, list[KV], KV | None]:
        """The member's capacity key, its usage and the name's record, read atomically."""
        _, rs = self.client.txn([], [range_op(self.k("capacity", member)),
                                     range_op(self.k("usage", member, ""), prefix=True),
                                     range_op(self.k("names", container))])
        cap, usage, name = (_kvs(r) for r in rs)
        return (cap[0] if cap else None), usage, (name[0] if name else None)

    def reserve(self, member: str, container: str, *, memory: int, capacity: Capacity,
                lease: int, holder: str) -> str | None:
        cap_key, name_key = self.k("capacity", member), self.k("names", container)
        record = {"member": member, "memory": memory, "holder": holder}
        for _ in range(_CAS_ATTEMPTS):
            cap, usage, taken = self._snapshot(member, container)
            old = (taken.json() or {}) if taken else {}
            if taken is not None and taken.lease:
                raise AlreadyExists(f"container {container!r} is being launched on "
                                    f"{old.get('member')}")
            used = sum(int((kv.json() or {}).get("memory", 0)) for kv in usage
                       if kv.key.rsplit("/", 1)[1] != container)
            count = sum(1 for kv in usage if kv.key.rsplit("/", 1)[1] != container)
            why = capacity.refusal(count, used, memory)
            if why is not None:
                return why
            # a placed record of a name no member holds (the caller asked them) is stale
            cmp = [compare(name_key, "MOD", taken.mod_revision) if taken else
                   compare(name_key, "VERSION", 0),
                   compare(cap_key, "MOD", cap.mod_revision) if cap else
                   compare(cap_key, "VERSION", 0)]
            stale = [delete_op(self.k("usage", old["member"], container))] \
                if old.get("member") not in (None, member) else []
            ok, _ = self.client.txn(cmp, [
                put_op(name_key, record, lease),
                put_op(self.k("usage", member, container), {"memory": memory}, lease),
                put_op(cap_key, {"by": holder}), *stale])
            if ok:
                self._reserved[container] = (member, memory, lease)
                return None
        raise Conflict(f"too many concurrent launches on {member}: try again")

    def _location_kv(self, container: str) -> tuple[KV | None, dict[str, Any]]:
        kv = self.client.get(self.k("names", container))
        return kv, (kv.json() or {}) if kv else {}

    def commit(self, container: str, member: str, memory: int = 0) -> None:
        mine = self._reserved.pop(container, None)
        if mine is not None and mine[0] == member:  # one transaction while it is ours
            ok, _ = self.client.txn([compare(self.k("names", container), "LEASE", mine[2])], [
                put_op(self.k("names", container), {"member": member, "memory": memory}),
                put_op(self.k("usage", member, container), {"memory": memory})])
            if ok:
                return
        self.set_location(container, member, memory)  # the reservation had expired

    def release(self, container: str) -> None:
        kv, rec = self._location_kv(container)
        if kv is None or not kv.lease:
            return  # gone already, or placed: not a reservation
        self.client.txn([compare(kv.key, "MOD", kv.mod_revision)], [
            delete_op(kv.key), delete_op(self.k("usage", rec["member"], container))])

    def set_location(self, container: str, member: str, memory: int = 0) -> None:
        kv, rec = self._location_kv(container)
        ops = [put_op(self.k("names", container), {"member": member, "memory": memory}),
               put_op(self.k("usage", member, container), {"memory": memory}),
               put_op(self.k("capacity", member), {"by": "set_location"})]
        if rec and rec.get("member") != member:
            ops.append(delete_op(self.k("usage", rec["member"], container)))
        self.client.txn([], ops)

    def forget_location(self, container: str) -> None:
        kv, rec = self._location_kv(container)
        if kv is not None:
            self.client.txn([compare(kv.key, "MOD", kv.mod_revision)], [
                delete_op(kv.key), delete_op(self.k("usage", rec["member"], container))])

    def usage_counts(self) -> dict[str, int]:
        kvs, _ = self.client.range(self.k("usage", ""), keys_only=True)
        counts: dict[str, int] = {}
        start = len(self.k("usage", ""))
        for kv in kvs:
            member = kv.key[start:].split("/", 1)[0]
            counts[member] = counts.get(member, 0) + 1
        return counts

    def locations(self, member: str | None = None) -> list[Location]:
        if member is not None:
            kvs, _ = self.client.range(self.k("usage", member, ""))
            names = [kv.key.rsplit("/", 1)[1] for kv in kvs]
            return [Location(n, member, int((kv.json() or {}).get("memory", 0)), kv.lease)
                    for n, kv in zip(names, kvs)]
        kvs, _ = self.client.range(self.k("names", ""))
        out = []
        for kv in kvs:
            rec = kv.json() or {}
            out.append(Location(kv.key.rsplit("/", 1)[1], rec.get("member", ""),
                                int(rec.get("memory", 0)), kv.lease, rec.get("holder", "")))
        return out

    def location(self, container: str) -> Location | None:
        kv, rec = self._location_kv(container)
        if kv is None:
            return None
        return Location(container, rec.get("member", ""), int(rec.get("memory", 0)), kv.lease,
                        rec.get("holder", ""))

    # -- move locks -----------------------------------------------------------------------------
    def lock(self, name: str, holder: str, lease: int) -> str | None:
        key = self.k("locks", name)
        ok, rs = self.client.txn([compare(key, "VERSION", 0)], [put_op(key, holder, lease)],
                                 [range_op(key)])
        if ok:
            return None
        kvs = _kvs(rs[0]) if rs else []
        return str(kvs[0].json()) if kvs else "another command (just released: try again)"

    def unlock(self, name: str, holder: str) -> None:
        key = self.k("locks", name)
        self.client.txn([compare(key, "VALUE", holder)], [delete_op(key)])

    def lock_holder(self, name: str) -> str | None:
        kv = self.client.get(self.k("locks", name))
        return None if kv is None else str(kv.json())

    def move_location(self, container: str, source: str, target: str, holder: str, *,
                      new_name: str | None = None) -> bool:
        kv, rec = self._location_kv(container)
        if rec and rec.get("member") != source:
            return False
        memory = int(rec.get("memory", 0))
        new = new_name or container
        cmp = [compare(self.k("locks", container), "VALUE", holder),
               compare(self.k("names", container), "MOD", kv.mod_revision) if kv else
               compare(self.k("names", container), "VERSION", 0)]
        ops = [delete_op(self.k("names", container)),
               delete_op(self.k("usage", source, container)),
               put_op(self.k("names", new), {"member": target, "memory": memory}),
               put_op(self.k("usage", target, new), {"memory": memory}),
               put_op(self.k("capacity", target), {"by": holder})]
        if new != container:  # etcd refuses two operations on one key in a txn
            return self.client.txn(cmp, ops)[0]
        return self.client.txn(cmp, ops[1:2] + ops[2:] if source != target else ops[2:])[0]

    # -- manifest inventory ---------------------------------------------------------------------
    def inventory_put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        self.client.put(self.k("inventory", kind, name), record)

    def inventory_delete(self, kind: str, name: str) -> None:
        self.client.delete(self.k("inventory", kind, name))

    def inventory(self) -> dict[tuple[str, str], dict[str, Any]]:
        kvs, _ = self.client.range(self.k("inventory", ""))
        out = {}
        for kv in kvs:
            kind, name = kv.key[len(self.k("inventory", "")):].split("/", 1)
            out[(kind, name)] = kv.json()
        return out

    # -- events ---------------------------------------------------------------------------------
    def add_event(self, event: dict[str, Any]) -> None:
        """Record ``event``; one with an ``id`` only if it is not there yet (a backlog
        written again after a cut-off flush adds nothing twice)."""
        if not self._event_lease:
            self._event_lease = self.client.grant(EVENT_TTL)
        value = json.loads(json.dumps(event, default=str))
        if event.get("id") is None:
            key = self.k("events", f"{time.time_ns():020d}-{os.getpid()}-{next(_seq)}")
            self.client.put(key, value, self._event_lease)
            return
        when = int(float(event.get("time") or 0) * 1e9)
        key = self.k("events", f"{when:020d}-{event['id']}")
        self.client.txn([compare(key, "VERSION", 0)], [put_op(key, value, self._event_lease)])

    def events(self, after: int = 0) -> list[tuple[int, dict[str, Any]]]:
        kvs, _ = self.client.range(self.k("events", ""), min_mod_revision=after + 1)
        return sorted(((kv.mod_revision, kv.json()) for kv in kvs), key=lambda p: p[0])

    def watch_events(self, after: int, stop: threading.Event, poll: float = 0.5
                     ) -> Iterator[tuple[int, dict[str, Any]]]:
        for pos, ev in self.events(after):
            after = pos
            yield pos, ev
        for kind, kv in self.client.watch(self.k("events", ""), after + 1, stop, poll):
            if kind != "DELETE" and kv.value:
                yield kv.mod_revision, kv.json()
