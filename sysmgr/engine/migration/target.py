"""The target endpoint of a copy or a move: runs on the member the container goes to, as
long as the mover talks to it (``sysmgr _stream migrate`` with ``role: target``).

Requests (answered like the source's, see :mod:`.source`):

- ``prepare``: checks everything against this member before anything changes — the name
  (free, or for ``refresh`` an existing stopped copy), the pool (the one asked for, else the
  source's pool name: a member without it is an error naming it), the stream format, the
  networks the nics use, the space the source says it needs — then creates the profiles
  the container uses that this member lacks (from the source's definitions). Says which
  snapshots it holds, with their UUIDs (a refresh's common base);
- ``receive``: volume streams (a ``J`` header, ``D``/``E`` frames each) up to
  ``{"op": "end"}``; a failing stream is read to its end before the error is answered, so
  the mover is never left writing into a channel nobody reads;
- ``commit``: makes the received state the container's volume, drops the temporary
  snapshots, writes the records (the container's and its snapshots'; a move's carries the
  mark, :mod:`.markers`) and says which nic got a new address;
- ``start`` / ``probe``: starts the committed container (a marked one: only this move may) /
  runs ``true`` in it (the guest answers);
- ``finish``: the move is done: the mark goes and the move's figures stay in the record;
- ``abort``: before ``commit`` everything received goes; after it the copy is removed.

Until ``commit`` everything received is covered by an intent (``import`` for a new
container, ``receive`` for a refresh): if this process dies, the next
:func:`sysmgr.engine.journal.recover` removes it. If the mover disappears before
``commit`` the same happens at once; after it the committed copy stays (marked, for a move)
until the mover settles it.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import (
    arrival, events, execution, idshift, journal, lifecycle, records, volume_streams, volumes)
from sysmgr.engine.copy import changed_definition
from sysmgr.engine.containers import device_ref_issues
from sysmgr.engine.host import Host
from sysmgr.engine.migration import markers, settling
from sysmgr.engine.migration.wire import serve_requests, StreamReader, Wire, WireClosed
from sysmgr.engine.networks import NetworkEngine
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    AlreadyExists, Conflict, DriverError, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state import networks as snet
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotRecord, SnapshotStore

EncodeError = Callable[[BaseException], Any]


class Aborted(SysmgrError):
    """The mover called the copy off."""


class Target:
    """One container arriving on this member (a copy, a move or a refresh)."""

    def __init__(self, host: Host, wire: Wire, *, encode_error: EncodeError,
                 member: str = "") -> None:
        self.host = host
        self.here = f"member {member}" if member else "this member"  # in messages
        self.wire = wire
        self.encode_error = encode_error
        self.name = ""
        self.pool = ""
        self.mid = ""
        self.source: dict[str, Any] = {}
        self.refresh = False
        self.move: dict[str, Any] | None = None
        self.changes: dict[str, Any] | None = None
        self.committed = False
        self.received: list[str] = []      # snapshots received (refresh: to undo)
        self._pending = contextlib.ExitStack()  # what is undone unless committed
        self._intent: journal.Intent | None = None

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> int:
        try:
            return serve_requests(self.wire, self, _OPS, self.encode_error, "target")
        except WireClosed:
            self._undo(WireClosed("the mover is gone"))
            return 1
        except BaseException as e:
            self._undo(e)
            raise
        finally:
            self._undo(Aborted("the migration ended before its commit"))

    def _undo(self, why: BaseException) -> None:
        """Remove everything received (nothing once committed)."""
        if self.committed:
            return
        with contextlib.suppress(Exception), self.host.locked():
            self._pending.__exit__(type(why), why, None)
        self._pending = contextlib.ExitStack()

    # -- prepare -----------------------------------------------------------------------------
    def prepare(self, msg: dict[str, Any]) -> dict[str, Any]:
        src = msg["source"]
        self.source = src
        self.name = str(msg.get("name") or src["name"])
        self.refresh = bool(msg.get("refresh"))
        self.move = msg.get("move")
        self.changes = msg.get("changes")  # a copy's -p/--no-profiles/-c/-d
        self.mid = str(msg.get("id") or "")
        host, st = self.host, self.host.store
        with host.locked():
            journal.recover(host)
            self.pool = pool = self._pick_pool(msg.get("pool"), src)
            drv = host.pool_driver(pool)
            self._check_name()
            if src["snapshots"] and not drv.info.snapshots:
                raise ValidationError([Issue(
                    f"storage pool {pool!r} (driver {drv.name}) cannot hold the container's "
                    f"{len(src['snapshots'])} snapshot(s)", path="pool")],
                    hint="choose a pool that can (-s POOL), or delete the snapshots first")
            self._check_networks(src)
            self._check_space(drv, src)
            created = self._ensure_profiles(src)
            try:
                rec = self._record(src)
                devs = arrival.check_record(host, rec, pool)
                issues = device_ref_issues(host, {k: v for k, v in devs.items()
                                                  if v.get("type") != "nic"})
                if issues:
                    raise ValidationError(issues)
            except BaseException:
                for p in created:
                    _delete_profile(st, p)
                raise
            self._hold(drv, created)
            have = drv.snapshot_ids(self.name) if self.refresh and drv.info.incremental_send else {}
            names = ([s.name for s in SnapshotStore(st).all(self.name)] if self.refresh else [])
            return {"pool": pool, "driver": drv.name, "format": volume_streams.native_kind(drv),
                    "incremental": drv.info.incremental_send, "snapshots": names,
                    "have": {k: list(v) for k, v in have.items()}, "profiles_created": created}

    def _pick_pool(self, asked: str | None, src: dict[str, Any]) -> str:
        pool = asked or src["pool"]["name"]
        if not self.host.store.has_pool(pool):
            raise NotFound(f"{self.here} has no storage pool {pool!r}",
                           hint="give a pool it has: -s POOL (sysmgr storage list --target "
                                "MEMBER)")
        if self.refresh and self.host.store.has_container(self.name):
            have = self.host.store.container(self.name).pool
            if asked is None:
                return have
            if have != pool:
                raise Conflict(f"the copy {self.name} to refresh is on pool {have!r}, not "
                               f"{pool!r}")
        return pool

    def _check_name(self) -> None:
        st = self.host.store
        reason = mnames.name_problem(self.name)
        if reason:
            raise ValidationError([Issue(f"invalid container name {self.name!r}: {reason}",
                                         path="name")])
        if self.refresh:
            if not st.has_container(self.name):
                raise NotFound(f"there is no copy {self.name} to refresh on {self.here}",
                               hint="copy it first (without --refresh)")
            rec = st.container(self.name)
            markers.refuse(rec, "refresh")
            if records.status(self.host, rec).state != STOPPED:
                raise Conflict(f"the copy {self.name} runs: a refresh replaces its files",
                               hint=f"stop it first: sysmgr stop {self.name}")
        elif st.has_container(self.name):
            raise AlreadyExists(f"container {self.name!r} already exists on {self.here}",
                                hint="give the copy another name (MEMBER:NEWNAME), or "
                                     "bring an existing copy up to date with --refresh")

    def _check_networks(self, src: dict[str, Any]) -> None:
        missing = [n for n in src.get("networks") or [] if not snet.exists(self.host.store, n)]
        if missing:
            raise ValidationError([Issue(f"network {n!r} does not exist on {self.here}",
                                         path="devices") for n in missing],
                                  hint="create it there first (sysmgr network create ... "
                                       "--target MEMBER), or change the container's nics")

    def _check_space(self, drv: Any, src: dict[str, Any]) -> None:
        need = src.get("usage")
        if self.refresh or not need:
            return
        free = None
        with contextlib.suppress(SysmgrError, OSError):  # unknown: a full pool fails the receive
            u = drv.usage()
            if u.total_bytes is not None and u.used_bytes is not None:
                free = u.total_bytes - u.used_bytes
        if free is not None and need > free:  # raised outside the block, which would swallow it
            raise Conflict(f"storage pool {self.pool!r} has {free >> 20} MiB free; "
                           f"the container needs about {need >> 20} MiB",
                           hint="free some space there or choose another pool (-s POOL)")

    def _ensure_profiles(self, src: dict[str, Any]) -> list[str]:
        """Create the profiles the container uses that this member lacks, from the source's
        definitions; a profile the source could not describe is an error naming it."""
        st = self.host.store
        asked = (self.changes or {}).get("profiles") if not self.move else None
        wanted = list(src["record"]["profiles"] if asked is None else asked)
        lacking = [p for p in wanted if not st.has_profile(p)]
        unknown = [p for p in lacking if p not in src.get("profiles", {})]
        if unknown:
            raise ValidationError([Issue(f"profile {p!r} exists on neither member",
                                         path="profiles") for p in unknown])
        from sysmgr.engine import profiles as eprofiles  # the profile verbs, when needed
        for p in lacking:
            d = src["profiles"][p]
            eprofiles.put(self.host, p, description=d["description"], config=d["config"],
                          devices=d["devices"], create=True)
        return lacking

    def _record(self, src: dict[str, Any]) -> ContainerRecord:
        r = src["record"]
        volatile = dict(r.get("volatile") or {})
        try:
            volatile.update(idshift.checked_state(volatile))
        except ValueError as e:
            raise ValidationError(f"the source sent a bad id map state ({e})") from None
        profiles, config, devices = changed_definition(r["profiles"], r["config"], r["devices"],
                                                       None if self.move else self.changes)
        if not self.move:  # a copy gets MACs of its own
            devices = {k: {dk: dv for dk, dv in d.items()
                           if not (d.get("type") == "nic" and dk == "hwaddr")}
                       for k, d in devices.items()}
        return ContainerRecord(self.name, r["image"], self.pool, profiles, config, devices,
                               r.get("description", ""), volatile,
                               r["created"] if self.move else time.time())

    def _hold(self, drv: Any, created: list[str]) -> None:
        """Cover what is about to arrive: undone unless committed."""
        st = self.host.store
        r = self._pending.enter_context(Reverter())
        for p in created:
            r.add(lambda p=p: _delete_profile(st, p), f"delete profile {p}")
        op = "receive" if self.refresh else "import"
        self._intent = self._pending.enter_context(
            journal.intent(self.host, op, container=self.name, pool=self.pool, snapshots=[]))
        if not self.refresh:
            r.add(lambda: drv.delete_container(self.name), f"delete volume of {self.name}")

    # -- receive -----------------------------------------------------------------------------
    def receive(self, msg: dict[str, Any]) -> dict[str, Any]:
        if not self.pool or self.committed:
            raise Conflict("nothing to receive: prepare first")
        drv = self.host.pool_driver(self.pool)
        failed: BaseException | None = None
        total = 0
        while True:
            head = self.wire.recv_msg()
            if head.get("op") == "end":
                break
            v = head.get("volume") or {}
            reader = StreamReader(self.wire)
            try:
                if failed is None:
                    snap = v.get("snapshot")
                    if snap:
                        assert self._intent is not None
                        self._intent.add("snapshots", snap)
                        self.received.append(snap)
                    with self.host.locked():
                        volume_streams.store_volume(drv, self.name, reader, kind=str(v["kind"]),
                                                    snap=snap, intent=self._intent)
            except WireClosed:
                raise
            except Exception as e:  # noqa: BLE001 - answered once the streams are read
                failed = e
            reader.drain()
            total += reader.size
        if failed is not None:
            if isinstance(failed, (DriverError, OSError)):
                full = volumes.pool_full(failed, self.pool)
                if full is not None:
                    raise full from failed
            raise failed
        return {"bytes": total}

    # -- commit ------------------------------------------------------------------------------
    def commit(self, msg: dict[str, Any]) -> dict[str, Any]:
        host, st = self.host, self.host.store
        drv = host.pool_driver(self.pool)
        src = self.source
        with host.locked():
            state = msg.get("state")
            if state:  # the container's last state came as a snapshot: make it the volume
                drv.restore_snapshot(self.name, state)
            for t in msg.get("drop") or []:
                with contextlib.suppress(NotFound):
                    drv.delete_snapshot(self.name, t)
            for s in msg.get("delete") or []:  # a refresh: snapshots the source no longer has
                with contextlib.suppress(NotFound):
                    drv.delete_snapshot(self.name, s)
                with st.transaction():
                    SnapshotStore(st).delete(self.name, s)
            rec = self._record(src)
            rec.devices = arrival.retarget(host, rec, self.pool)
            _, devs = records.expanded(host, rec)
            size = mkeys.root_disk_size(devs)
            if size is not None or drv.info.quotas:
                volumes.set_size(host, self.name, self.pool, size)
            if self.name != src["name"] and not self.refresh:
                records.write_hostname(drv.container_path(self.name), self.name)
            if self.move:
                rec.volatile[markers.KEY] = {
                    "id": self.mid, "role": markers.IN, "peer": self.move.get("peer", ""),
                    "peer_name": self.move.get("peer_name", ""),
                    "phase": "arrived", "running": bool(self.move.get("running")),
                    "since": time.time()}
            snaps = self._snapshot_records(src, msg.get("snapshots"))
            os.makedirs(host.layout.container_dir(self.name), exist_ok=True)
            with st.transaction():
                if self.refresh:
                    old = st.container(self.name)
                    rec.volatile = {**old.volatile, **idshift.disk_state(rec.volatile)}
                    rec.created = old.created
                    st.update_container(rec)
                else:
                    st.add_container(rec)
                for sr in snaps:
                    SnapshotStore(st).add(sr)
            self.committed = True
            self._pending.close()  # the intent goes: the records hold it all now
            if not self.move:  # a move arrives at its finish (or its settling)
                events.container(host, self.name, "refreshed" if self.refresh else "copied",
                                 detail=f"from {src['name']} on another member")
            return {"addresses": self._addresses(src)}

    def _snapshot_records(self, src: dict[str, Any], only: list[str] | None
                          ) -> list[SnapshotRecord]:
        out = []
        for s in src["snapshots"]:
            if only is not None and s["name"] not in only:
                continue
            # a copy's -p/-c/-d reach its snapshots too: each stays restorable where it lands
            profiles, config, devices = changed_definition(
                s["profiles"], s["config"], s["devices"], None if self.move else self.changes)
            sr = SnapshotRecord(self.name, s["name"], float(s["created"]), s.get("expires"),
                                profiles, config, devices, s.get("description", ""),
                                idshift.checked_state(s.get("volatile")))
            if all(self.host.store.has_profile(p) for p in sr.profiles):
                sr.devices = arrival.retarget(self.host, ContainerRecord(
                    self.name, "", self.pool, sr.profiles, sr.config, sr.devices), self.pool)
            out.append(sr)
        return out

    def _addresses(self, src: dict[str, Any]) -> list[str]:
        """Sync the nic records; a line for each nic whose address is not the one it had."""
        rec = self.host.store.container(self.name)
        _, devs = records.expanded(self.host, rec)
        if not records.has_nics(devs):
            return []
        nets = NetworkEngine(self.host)
        nets.sync()
        before = (src["record"].get("volatile") or {}).get("nics") or {}
        after = nets.nic_records(self.host.store.container(self.name))
        notes = []
        for dev, r in sorted(after.items()):
            old = (before.get(dev) or {}).get("ipv4")
            if self.move and old and r.get("ipv4") and r["ipv4"] != old:
                notes.append(f"{dev}: new address {r['ipv4']} on network {r.get('network')} "
                             f"(was {old})")
        return notes

    # -- after the commit --------------------------------------------------------------------
    def start(self, msg: dict[str, Any]) -> float:
        t = time.monotonic()
        lifecycle.start(self.host, self.name, migration=self.mid or None)
        return time.monotonic() - t

    def probe(self, msg: dict[str, Any]) -> float:
        """Run ``true`` in the container until it answers (its init runs and can be joined)."""
        t = time.monotonic()
        execution.execute(self.host, self.name, ["true"])
        return time.monotonic() - t

    def finish(self, msg: dict[str, Any]) -> None:
        with self.host.locked():
            rec = self.host.store.container(self.name)
            m = markers.marker(rec)
            if m is not None and m.get("id") == self.mid:
                markers.set_marker(self.host, self.name, None)
                events.container(self.host, self.name, "moved-in", member=m.get("peer") or None)
            if msg.get("record"):
                vol = dict(self.host.store.container(self.name).volatile)
                vol["last_migration"] = msg["record"]
                with self.host.store.transaction():
                    self.host.store.set_volatile(self.name, vol)

    def abort(self, msg: dict[str, Any]) -> str:
        if not self.committed:
            self._undo(Aborted("called off by the mover"))
            return "removed what had arrived"
        if self.move:
            return settling.settle(self.host, self.name, self.mid, moved=False)
        return ""


def _delete_profile(st: Any, name: str) -> None:
    with st.transaction():
        st.delete_profile(name)


_OPS: dict[str, Callable[[Target, dict[str, Any]], Any]] = {
    "prepare": Target.prepare, "receive": Target.receive, "commit": Target.commit,
    "start": Target.start, "probe": Target.probe, "finish": Target.finish,
    "abort": Target.abort,
}
