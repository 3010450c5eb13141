"""The source endpoint of a copy or a move: runs on the member the container lives on, as
long as the mover talks to it (``sysmgr _stream migrate`` with ``role: source``).

It answers the mover's requests (:mod:`.wire` ``J`` messages, each answered by
``{"ok": RESULT}`` or ``{"error": ...}``):

- ``hello``: what the container is (record, snapshots with their UUIDs, profiles, pool,
  size, whether it runs) — nothing changes;
- ``begin`` (a move): marks the container (:mod:`.markers`): from now on only this move
  starts or deletes it;
- ``snapshot``: a temporary snapshot ``mig-<id>-<round>`` of the live volume;
- ``send``: volume streams (:mod:`sysmgr.engine.volume_streams`), each a ``J`` header,
  ``D`` frames and an ``E`` frame;
- ``stop``: stops the container (the halt signal, then a kill after ``timeout``) and says
  how long the guest took;
- ``forget``: deletes temporary snapshots;
- ``delete``: the move is finished: the container goes from this member;
- ``rollback``: the move failed: temporary snapshots go, the mark is cleared and the
  container is started again if it ran before.

The temporary snapshots it makes are listed in an intent (``send``, made with the first): if
this process dies, the next :func:`sysmgr.engine.journal.recover` removes them, and clears
the mark of a move that had not stopped the container yet. A move cut short after the stop
keeps its mark until the mover settles it (:func:`.settling.settle`).

Layer: engine.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import idshift, journal, lifecycle, records, volume_streams
from sysmgr.engine.copy import KEEP_VOLATILE
from sysmgr.engine.host import Host
from sysmgr.engine.migration import markers, settling
from sysmgr.engine.migration.wire import serve_requests, Wire, WireClosed
from sysmgr.errors import Conflict, NotFound
from sysmgr.model import keys as mkeys
from sysmgr.state.snapshots import SnapshotStore

EncodeError = Callable[[BaseException], Any]

# volatile keys that travel with a moved container: what it is and what its files carry,
# its id map block and its nics' MACs and addresses; never what belongs to this host
# (init pid, cgroup, host interface names). A copy keeps what a copy on one host keeps.
_MOVE_VOLATILE = ("image.os", "image.meta", "image.environment", "idmap.base", "idmap.size", "last_migration")


def travelling_volatile(volatile: dict[str, Any], *, move: bool) -> dict[str, Any]:
    out = {k: volatile[k] for k in (_MOVE_VOLATILE if move else KEEP_VOLATILE) if k in volatile}
    out.update(idshift.disk_state(volatile))  # the ids its files carry on disk
    nics = volatile.get("nics")
    if move and isinstance(nics, dict):
        out["nics"] = {dev: {k: v for k, v in r.items() if k != "host_name"}
                       for dev, r in nics.items() if isinstance(r, dict)}
    return out


class Source:
    """One container leaving (or being copied from) this member."""

    def __init__(self, host: Host, wire: Wire, name: str, *, encode_error: EncodeError) -> None:
        self.host = host
        self.wire = wire
        self.name = name
        self.encode_error = encode_error
        self.mid = ""             # the move's or copy's id (names temporary snapshots)
        self.moving = False
        self.stopped = False      # this move stopped the container
        self.temps: list[str] = []
        self.intent: journal.Intent | None = None
        self._stack = contextlib.ExitStack()

    # -- the loop ----------------------------------------------------------------------------
    def serve(self) -> int:
        """Answer requests until ``bye`` (0) or the mover is gone (1)."""
        with self._stack:  # the intent, once there is a temporary snapshot to cover
            try:
                return serve_requests(self.wire, self, _OPS, self.encode_error, "source")
            except WireClosed:
                self._mover_gone()
                return 1
            finally:
                self._drop_temps()

    def _mover_gone(self) -> None:
        """The mover died or dropped the channel: a move that had not stopped the
        container is dropped (its mark goes); one that had keeps it for settling."""
        if self.moving and not self.stopped:
            with contextlib.suppress(Exception), self.host.locked():
                if self._marked():
                    markers.set_marker(self.host, self.name, None)

    def _marked(self) -> bool:
        m = markers.marker(self.host.store.container(self.name))
        return m is not None and m.get("id") == self.mid

    def _drop_temps(self) -> None:
        with contextlib.suppress(Exception), self.host.locked():
            drv = self.host.pool_driver(self.host.store.container(self.name).pool)
            for snap in list(self.temps):
                with contextlib.suppress(NotFound):
                    drv.delete_snapshot(self.name, snap)
                self.temps.remove(snap)

    # -- requests ----------------------------------------------------------------------------
    def hello(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.mid = str(msg.get("id") or "")
        self.moving = bool(msg.get("move"))
        host, st = self.host, self.host.store
        ex = records.read(host, self.name)
        rec = ex.record
        drv = host.pool_driver(rec.pool)
        ids = drv.snapshot_ids(self.name) if drv.info.incremental_send else {}
        snaps = []
        for s in SnapshotStore(st).all(self.name):
            uuid, received = ids.get(s.name, ("", ""))
            snaps.append({"name": s.name, "created": s.created, "expires": s.expires,
                          "profiles": s.profiles, "config": s.config, "devices": s.devices,
                          "description": s.description,
                          "volatile": idshift.disk_state(s.volatile),
                          "id": received or uuid})
        profiles = {}
        for p in sorted({p for s in [rec.profiles, *[s["profiles"] for s in snaps]] for p in s}):
            with contextlib.suppress(NotFound):
                pr = st.profile(p)
                profiles[p] = {"description": pr.description, "config": dict(pr.config),
                               "devices": {k: dict(v) for k, v in pr.devices.items()}}
        usage = None
        with contextlib.suppress(NotFound, OSError):
            usage = drv.container_usage(self.name)
        return {
            "name": self.name,
            "record": {"image": rec.image, "pool": rec.pool, "profiles": list(rec.profiles),
                       "config": dict(rec.config),
                       "devices": {k: dict(v) for k, v in rec.devices.items()},
                       "description": rec.description, "created": rec.created,
                       "volatile": travelling_volatile(rec.volatile, move=self.moving)},
            "snapshots": snaps,
            "profiles": profiles,
            "networks": sorted({d["network"] for d in ex.devices.values()
                                if d.get("type") == "nic" and d.get("network")}),
            "running": records.status(host, rec).state != STOPPED,
            "pool": {"name": rec.pool, "driver": drv.name,
                     "format": volume_streams.native_kind(drv),
                     "incremental": drv.info.incremental_send,
                     "snapshots": drv.info.snapshots},
            "usage": usage,
            "config": {k: v for k, v in ex.config.items()
                       if k.startswith("migration.") or k in ("security.protection.delete",
                                                               "boot.host_shutdown_timeout")},
            "marker": markers.marker(rec),
        }

    def begin(self, msg: dict[str, Any]) -> None:
        """Mark the container for this move (refused while another move marks it)."""
        with self.host.locked():
            ex = records.read(self.host, self.name)
            markers.refuse(ex.record, "move")
            if mkeys.parse_bool(ex.config.get("security.protection.delete", "false")):
                raise Conflict(f"container {self.name!r} is protected "
                               "(security.protection.delete=true): a move deletes it here",
                               hint=f"copy it instead, or sysmgr config unset {self.name} "
                                    "security.protection.delete")
            running = records.status(self.host, ex.record).state != STOPPED
            markers.set_marker(self.host, self.name, {
                "id": self.mid, "role": markers.OUT, "peer": str(msg.get("peer") or ""),
                "peer_name": str(msg.get("peer_name") or self.name),
                "phase": "copying", "running": running, "since": time.time()})

    def snapshot(self, msg: dict[str, Any]) -> str:
        snap = markers.temp_name(self.mid, str(msg.get("label")))
        with self.host.locked():
            pool = self.host.store.container(self.name).pool
            drv = self.host.pool_driver(pool)
            if self.intent is None:
                self.intent = self._stack.enter_context(journal.intent(
                    self.host, "send", container=self.name, pool=pool, snapshots=[],
                    migration=self.mid))
            self.intent.add("snapshots", snap)  # before it exists: a crash cannot leak it
            self.temps.append(snap)
            drv.create_snapshot(self.name, snap)
        return snap

    def send(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stream the volumes asked for, in order; their sizes."""
        drv = self.host.pool_driver(self.host.store.container(self.name).pool)
        sizes = []
        for v in msg.get("volumes") or []:
            kind, snap, base = str(v["kind"]), v.get("snapshot"), v.get("base")
            with volume_streams.open_volume(drv, self.name, snap, kind=kind, base=base) as f:
                header = {"volume": {"kind": kind, "snapshot": v.get("as", snap)}}
                size, _ = self.wire.send_stream(header, f.read)
            sizes.append(size)
        return {"sizes": sizes}

    def stop(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stop the container for the final round; how long its guest took to shut down."""
        timeout = float(msg.get("timeout") or 30)
        with self.host.locked():
            m = markers.marker(self.host.store.container(self.name))
            if m is not None and m.get("id") == self.mid:
                m["phase"] = "stopped"
                markers.set_marker(self.host, self.name, m)
        self.stopped = True
        t = time.monotonic()
        graceful = lifecycle.stop(self.host, self.name, timeout=timeout)
        return {"shutdown": time.monotonic() - t, "graceful": graceful}

    def forget(self, msg: dict[str, Any]) -> None:
        drv = self.host.pool_driver(self.host.store.container(self.name).pool)
        for snap in msg.get("snapshots") or []:
            if snap in self.temps:
                with contextlib.suppress(NotFound):
                    drv.delete_snapshot(self.name, snap)
                self.temps.remove(snap)

    def delete(self, msg: dict[str, Any]) -> str:
        """The move is finished: the container goes from this member."""
        return settling.settle(self.host, self.name, self.mid, moved=True)

    def rollback(self, msg: dict[str, Any]) -> str:
        self._drop_temps()
        if not self.moving:
            return ""
        return settling.settle(self.host, self.name, self.mid, moved=False)


_OPS: dict[str, Callable[[Source, dict[str, Any]], Any]] = {
    "hello": Source.hello, "begin": Source.begin, "snapshot": Source.snapshot,
    "send": Source.send, "stop": Source.stop, "forget": Source.forget,
    "delete": Source.delete, "rollback": Source.rollback,
}
