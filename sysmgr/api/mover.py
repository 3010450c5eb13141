"""The mover: one copy or move of a container between two members, talking to both
endpoints (:mod:`sysmgr.engine.migration`) and passing the volumes' frames from one to the
other. See :mod:`sysmgr.api.migration` for what a copy and a move do and promise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sysmgr.api import migration_journal as mj
from sysmgr.engine.migration import markers
from sysmgr.engine.migration.wire import DATA, END, MSG, decode
from sysmgr.errors import Conflict, Interrupted, RemoteError, SysmgrError, ValidationError
from sysmgr.remote import codec

Progress = Callable[[str], None]
#: ``meter(label, sent)``: bytes sent so far in the round ``label``
Meter = Callable[[str, int], None]
TAR = "tar"
DEFAULT_ROUNDS = 4
DEFAULT_THRESHOLD = 8 << 20
DEFAULT_SHUTDOWN = 30.0
#: cluster manager (``client.cluster``): spec(), backend(), admin_root
Cluster = Any


@dataclass(frozen=True)
class Downtime:
    """How long a moved container was not running, in its three parts (seconds)."""

    shutdown: float   # the guest's own shutdown: stop request -> the source's init exits
    sysmgr: float     # sysmgr's share: the source's init exited -> the target's init runs
    boot: float       # the target's init runs -> the guest answers (``true`` runs in it)

    @property
    def total(self) -> float:
        return self.shutdown + self.sysmgr + self.boot


@dataclass(frozen=True)
class MigrationResult:
    """What a copy or move did."""

    name: str
    new_name: str
    source: str
    target: str
    kind: str                       # live, cold, copy or refresh
    stream: str                     # the volumes' format: btrfs, tar...
    rounds: tuple[int, ...]         # bytes sent in each round
    seconds: float
    downtime: Downtime | None = None
    notes: tuple[str, ...] = ()

    @property
    def bytes(self) -> int:
        return sum(self.rounds)


#: the points where a test can have the mover killed (``SYSMGR_FAULT=<point>``: SIGKILL there;
#: ``<point>:INT``: SIGINT, as a Ctrl-C)
FAULT_POINTS = ("begun", "copied", "stopped", "final", "committed", "started", "released")


def _fault(point: str) -> None:
    """A fault injection point: the tests kill (or interrupt) the mover at each step of a
    move and check that exactly one good copy is left once the move is settled."""
    name, _, sig = os.environ.get("SYSMGR_FAULT", "").partition(":")
    if name == point:
        os.kill(os.getpid(), signal.SIGINT if sig == "INT" else signal.SIGKILL)


class Mover:
    """One copy or move of container ``name`` from member ``source`` to ``target``."""

    def __init__(self, cluster: Cluster, name: str, source: str, target: str, *,
                 new_name: str | None = None, pool: str | None = None,
                 progress: Progress | None = None, meter: Meter | None = None,
                 changes: dict[str, Any] | None = None, instance_only: bool = False) -> None:
        self.cluster = cluster
        self.changes = changes  # a copy's -p/--no-profiles/-c/-d (see engine.copy)
        self.instance_only = instance_only  # a copy without the snapshots
        self.name = name
        self.new_name = new_name or name
        self.source = source
        self.target = target
        self.pool = pool
        self.say = progress or (lambda _m: None)
        self.meter = meter
        self.mid = secrets.token_hex(6)
        self.S: Any = None
        self.T: Any = None
        self.info: dict[str, Any] = {}
        self.tinfo: dict[str, Any] = {}
        self.kind = TAR
        self.rounds: list[int] = []
        self.temps: list[str] = []       # the source's temporary snapshots, oldest first
        self.sent_temps: list[str] = []  # those the target received
        self.notes: list[str] = []
        self.near_live = False
        #: called once the source's copy is deleted: the move's final step (the cluster
        #: store's location flips with it)
        self.released: Callable[[], None] | None = None

    # -- opening -------------------------------------------------------------------------
    def _open(self, *, move: bool, refresh: bool) -> None:
        if self.source == self.target and self.name == self.new_name:
            raise Conflict(f"container {self.name} is on member {self.source} already")
        src_b, dst_b = self.cluster.backend(self.source), self.cluster.backend(self.target)
        # the target's endpoint starts (a sysmgr process on the member) while the source
        # says what it sends: a few hundred milliseconds less per copy or move
        opening = _Opening(dst_b, {"member": self.target}, self.source != self.target)
        try:
            self.S = src_b.migration_open("source", {"name": self.name, "member": self.source})
            self.info = self.S.call("hello", id=self.mid, move=move)
            if self.instance_only and not move:  # the target hears of no snapshot at all
                self.info = {**self.info, "snapshots": []}
        except BaseException:
            with contextlib.suppress(Exception):
                self.T = opening.result()  # closed with the source: the source's error wins
            raise
        self.T = opening.result()
        if move and self.info.get("marker"):
            raise markers.refusal(self.name, self.info["marker"], "move")
        self.tinfo = self.T.call(
            "prepare", source=self.info, name=self.new_name, pool=self.pool, id=self.mid,
            refresh=refresh, changes=None if move else self.changes,
            move={"peer": self.source, "peer_name": self.name,
                  "running": self.info["running"]} if move else None)
        for p in self.tinfo.get("profiles_created") or []:
            self.notes.append(f"created profile {p} on {self.target} (it had none of that name)")
        fmt = self.info["pool"]["format"]
        self.kind = fmt if fmt and fmt == self.tinfo.get("format") else TAR

    def _close(self) -> None:
        for ep in (self.S, self.T):
            if ep is not None:
                ep.close()

    def _bye(self) -> None:
        for ep in (self.S, self.T):
            with contextlib.suppress(SysmgrError):
                ep.call("bye")
        self._close()

    def _cfg(self, key: str, default: float) -> float:
        """A number the source's expanded config holds (stored normalised: sizes in bytes)."""
        value = (self.info.get("config") or {}).get(key)
        try:
            return float(value) if value else default
        except ValueError:
            return default

    # -- rounds --------------------------------------------------------------------------
    def _relay(self, volumes: list[dict[str, Any]], label: str) -> int:
        """One round: the source sends ``volumes``, the target stores them; bytes sent."""
        S, T = self.S, self.T
        T.request("receive")
        S.request("send", volumes=volumes)
        sent, in_stream = 0, False
        src_error: BaseException | None = None
        while True:
            kind, payload = S.wire.recv()
            if kind == MSG:
                msg = decode(payload, S.wire.who)
                if "volume" in msg:
                    T.wire.frame(MSG, payload)
                    in_stream = True
                    continue
                if "error" in msg:
                    src_error = codec.decode_error(msg["error"])
                break
            T.wire.frame(kind, payload)
            if kind == DATA:
                sent += len(payload)
                if self.meter:
                    self.meter(label, sent)
            elif kind == END:
                in_stream = False
        if in_stream:  # the source failed in the middle of a volume: the target drops it
            T.wire.frame(END, b'{"aborted": true}')
        T.request("end")
        try:
            T.reply()
        except SysmgrError:
            if src_error is not None:
                raise src_error from None
            raise
        if src_error is not None:
            raise src_error
        return sent

    def _chain(self, snaps: list[dict[str, Any]], base: str | None) -> list[dict[str, Any]]:
        """Volumes for ``snaps`` (oldest first), each against the one before (``base``
        first) where the stream kind allows."""
        vols = []
        for s in snaps:
            vols.append({"snapshot": s["name"], "kind": self.kind,
                         "base": base if self.kind != TAR else None})
            base = s["name"]
        return vols

    def _state(self, label: str | int, base: str | None) -> dict[str, Any]:
        """The container's current state as a volume: a temporary snapshot where the pool
        makes them cheaply (a pool stream needs one), else its live tree."""
        if self.kind != TAR:
            snap = self.S.call("snapshot", label=label)
            self.temps.append(snap)
            return {"snapshot": snap, "kind": self.kind, "base": base}
        if self.info["pool"]["format"]:  # a tar of a snapshot, stored as the tree
            snap = self.S.call("snapshot", label=label)
            self.temps.append(snap)
            return {"snapshot": snap, "as": None, "kind": TAR, "base": None}
        return {"snapshot": None, "kind": TAR, "base": None}

    def _round(self, volumes: list[dict[str, Any]], label: str) -> int:
        n = self._relay(volumes, label)
        self.sent_temps += [v["snapshot"] for v in volumes
                            if v["snapshot"] in self.temps and v.get("as", v["snapshot"])]
        self.rounds.append(n)
        self.say(f"{label}: {_size(n)} sent")
        return n

    def _forget_older(self) -> None:
        """Keep only the newest temporary snapshot on the source (the next base)."""
        old = self.temps[:-1]
        if old:
            self.S.call("forget", snapshots=old)
            self.temps = self.temps[-1:]

    # -- copy ----------------------------------------------------------------------------
    def copy(self, *, refresh: bool = False) -> MigrationResult:
        """Copy the container (with its snapshots) to ``target`` as ``new_name``, stopped;
        with ``refresh``, bring that existing copy up to date."""
        t0 = time.monotonic()
        try:
            self._open(move=False, refresh=refresh)
            snaps = self.info["snapshots"]
            if refresh:
                vols, commit, base = self._refresh_plan(snaps)
            else:
                vols, commit, base = self._chain(snaps, None), {}, None
            last = vols[-1]["snapshot"] if vols else base   # the state's base
            vols.append(self._state(0, last if self.kind != TAR else None))
            self._round(vols, "refresh" if refresh else "copy")
            state = vols[-1]["snapshot"] if self.kind != TAR else None
            self.T.call("commit", state=state, drop=list(self.sent_temps), **commit)
            self._bye()
        except BaseException:
            self._close()
            raise
        return MigrationResult(self.name, self.new_name, self.source, self.target,
                               "refresh" if refresh else "copy", self.kind, tuple(self.rounds),
                               time.monotonic() - t0, None, tuple(self.notes))

    def _refresh_plan(self, snaps: list[dict[str, Any]]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
        """What a refresh sends (the snapshots after the newest common one), what its
        commit records and deletes on the target, and the newest common snapshot."""
        theirs = list(self.tinfo.get("snapshots") or [])
        if self.kind != TAR:
            have = self.tinfo.get("have") or {}
            ids = {i for pair in have.values() for i in pair if i}
            common = max((i for i, s in enumerate(snaps) if s.get("id") in ids), default=-1)
            src_ids = {s.get("id") for s in snaps}
            gone = [n for n, pair in have.items() if not (set(pair) & src_ids)]
            new = snaps[common + 1:]
            clash = [s["name"] for s in new if s["name"] in theirs and s["name"] not in gone]
            if clash:
                raise Conflict(f"the copy {self.new_name} on {self.target} has snapshot(s) "
                               f"{', '.join(clash)} that differ from the source's",
                               hint="delete them there, or copy under another name")
            base = snaps[common]["name"] if common >= 0 else None
            if base is None and snaps:
                self.notes.append("no snapshot in common with the copy: everything was sent")
            vols = self._chain(new, base)
            commit = {"snapshots": [s["name"] for s in new], "delete": gone}
            return vols, commit, base
        mine = [s["name"] for s in snaps]
        new = [s for s in snaps if s["name"] not in theirs]
        return self._chain(new, None), {"snapshots": [s["name"] for s in new],
                                        "delete": [n for n in theirs if n not in mine]}, None

    # -- move ----------------------------------------------------------------------------
    def move(self, *, live: bool = True) -> MigrationResult:
        """Move the container to ``target`` (near-live when it runs and both pools stream
        incrementally, unless ``live`` is False); see the module's description."""
        t0 = time.monotonic()
        admin = self.cluster.admin_root
        entry = mj.Entry(self.mid, self.name, self.new_name, self.source, self.target)
        state = {"begun": False, "committed": False, "commit_sent": False, "released": False}
        try:
            self._open(move=True, refresh=False)
            mj.write(admin, entry)
            self.S.call("begin", peer=self.target, peer_name=self.new_name)
            state["begun"] = True
            _fault("begun")
            downtime = self._move_rounds(live, entry, state)
            self.T.call("finish", record=self._record(downtime))
            self._bye()
        except BaseException as e:
            self._close()
            if state["begun"]:
                self._fail(entry, state, e)
            else:
                mj.remove(admin, entry)
            if state["begun"]:
                self._explain(e, entry)
            raise
        mj.remove(admin, entry)
        kind = "live" if self.near_live else "cold"
        return MigrationResult(self.name, self.new_name, self.source, self.target, kind,
                               self.kind, tuple(self.rounds), time.monotonic() - t0, downtime,
                               tuple(self.notes))

    def _move_rounds(self, live: bool, entry: mj.Entry, state: dict[str, bool]) -> Downtime | None:
        running = bool(self.info["running"])
        near_live = (live and running and self.kind != TAR
                     and self.info["pool"]["incremental"] and self.tinfo.get("incremental"))
        self.near_live = bool(near_live)
        if live and running and not near_live:
            self.notes.append(f"moved stopped: a live move needs the same streaming pool on both "
                              f"members (here {self.info['pool']['driver']} to "
                              f"{self.tinfo.get('driver')})")
        timeout = self._cfg("boot.host_shutdown_timeout", DEFAULT_SHUTDOWN)
        shutdown = 0.0
        exited = None
        if running and not near_live:
            shutdown, exited = self._stop(timeout, entry)
        vols = self._chain(self.info["snapshots"], None)
        last = vols[-1]["snapshot"] if vols and self.kind != TAR else None
        vols.append(self._state(0, last))
        self._round(vols, "round 1" if near_live else "copy")
        _fault("copied")
        if near_live:
            limit = int(self._cfg("migration.precopy.rounds", DEFAULT_ROUNDS))
            threshold = self._cfg("migration.precopy.threshold", DEFAULT_THRESHOLD)
            k = 1
            while k <= limit and self.rounds[-1] > threshold:
                vol = self._state(k, self.temps[-1])
                k += 1
                self._round([vol], f"round {k}")
                self._forget_older()
            shutdown, exited = self._stop(timeout, entry)
            vol = self._state("final", self.temps[-1])
            self._round([vol], "final round")
            self._forget_older()
        _fault("final")
        final = self.temps[-1] if self.kind != TAR and self.temps else None
        state["commit_sent"] = True
        entry.phase = "committing"
        mj.write(self.cluster.admin_root, entry)
        got = self.T.call("commit", state=final, drop=list(self.sent_temps))
        state["committed"] = True
        _fault("committed")
        for line in got.get("addresses") or []:
            self.notes.append(line)
        entry.phase = "committed"
        mj.write(self.cluster.admin_root, entry)
        downtime = None
        if running:
            self.T.call("start")
            ran = time.monotonic()
            boot = float(self.T.call("probe"))
            assert exited is not None
            downtime = Downtime(shutdown, ran - exited, boot)
        _fault("started")
        self.S.call("delete")
        state["released"] = True
        if self.released is not None:
            self.released()
        entry.phase, entry.decision = "released", "moved"
        mj.write(self.cluster.admin_root, entry)
        _fault("released")
        return downtime

    def _stop(self, timeout: float, entry: mj.Entry) -> tuple[float, float]:
        entry.phase = "stopped"
        mj.write(self.cluster.admin_root, entry)
        self.say(f"stopping {self.name} on {self.source}")
        got = self.S.call("stop", timeout=timeout)
        _fault("stopped")
        if not got.get("graceful"):
            self.notes.append(f"{self.name} did not halt within {timeout:g} s and was killed")
        return float(got["shutdown"]), time.monotonic()

    def _record(self, downtime: Downtime | None) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self.mid, "from": self.source, "to": self.target,
                               "at": time.time(), "stream": self.kind,
                               "rounds": list(self.rounds)}
        if downtime is not None:
            rec["downtime"] = {"shutdown": round(downtime.shutdown, 3),
                               "sysmgr": round(downtime.sysmgr, 3),
                               "boot": round(downtime.boot, 3)}
        return rec

    def _explain(self, e: BaseException, entry: mj.Entry) -> None:
        """Say in the error (one line) where the container is now that the move failed."""
        moved = entry.decision == "moved"
        where = (f"it runs on {self.target} (the move was finished)" if moved else
                 f"it stays on {self.source}" + (", running" if self.info.get("running") else ""))
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(f"the move of {self.name} was interrupted: {where}") from e
        if isinstance(e, SysmgrError) and not isinstance(e, ValidationError) \
                and "could not be settled" not in e.message:
            e.message = f"moving {self.name} to {self.target} failed ({e.message}); {where}"
            e.args = (e.message,)

    def _fail(self, entry: mj.Entry, state: dict[str, bool], err: BaseException) -> None:
        """Settle a move that failed: forward once the source was released; back while
        the target had not committed, or when it refused a later step itself (its start
        failed); otherwise (the link to it broke, Ctrl-C, after its commit) from its record:
        a committed copy may be running there, so the move is finished rather than risk
        the name running on both."""
        if state["released"]:
            entry.decision = "moved"
        elif not state["commit_sent"]:
            entry.decision = "stayed"
        elif state["committed"] and isinstance(err, SysmgrError) \
                and not isinstance(err, RemoteError):
            entry.decision = "stayed"
        mj.write(self.cluster.admin_root, entry)
        try:
            said = mj.settle(self.cluster, entry, target_optional=not state["commit_sent"])
        except SysmgrError as e:
            raise SysmgrError(
                f"moving {self.name} from {self.source} to {self.target} failed "
                f"({why(err)}), and it could not be settled yet: {e.message}",
                hint=f"nothing was deleted; run 'sysmgr move {self.name}' again to finish it "
                     "or roll it back") from err
        for line in said:
            self.say(line)


class _Opening:
    """A target endpoint being opened in a thread of its own (``parallel``), or at once."""

    def __init__(self, backend: Any, request: dict[str, Any], parallel: bool) -> None:
        self._backend = backend
        self._request = request
        self._got: Any = None
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        if parallel:
            self._thread = threading.Thread(target=self._open, daemon=True)
            self._thread.start()

    def _open(self) -> None:
        try:
            self._got = self._backend.migration_open("target", self._request)
        except BaseException as e:  # noqa: BLE001 - raised in the mover's thread
            self._failed = e

    def result(self) -> Any:
        """The endpoint (raises what opening it raised)."""
        if self._thread is None:
            self._open()
        else:
            self._thread.join()
        if self._failed is not None:
            raise self._failed
        return self._got


def why(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return e.message if isinstance(e, SysmgrError) else str(e) or type(e).__name__


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


