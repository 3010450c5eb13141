"""Copy and move containers between cluster members: the *mover*.

The mover talks to two endpoints at once (:mod:`sysmgr.engine.migration`): the source on
the member the container lives on, the target on the member it goes to; either may be
this host (``local:``) or a member over SSH. Volumes travel as the pools' own streams where
both pools speak the same format (btrfs ``send``/``receive``: snapshots oldest first, each
against the previous; the base of an incremental matched by UUID), else as tar. The mover
passes the frames from source to target and counts them.

**Move** (:meth:`Mover.move`). A running container on two pools that stream incrementally
moves *near-live*: a first full round while it runs, then rounds sending what changed since
the last (``migration.precopy.rounds``, until one sends at most
``migration.precopy.threshold``); then it is stopped (the halt signal, a kill after
``boot.host_shutdown_timeout``), the last increment is sent, the target commits and starts
it, and only once it runs there is the source's copy deleted. Otherwise (``live=False``,
``--stateless``, a dir pool on either side) it is stopped first and sent whole. The
downtime is measured in three parts — the guest's shutdown, sysmgr's share (from the
source's init exiting to the target's running), the guest answering on the target — and
kept in the container's record (``volatile.last_migration``).

**Never the only copy.** Before anything changes the mover writes a journal entry in the
admin root (``cluster/migrations/<id>.json``), and the source's record is marked
(:mod:`sysmgr.engine.migration.markers`): nothing but the move starts or deletes it. On any
failure (an endpoint's error, a broken link, a killed member, Ctrl-C) both endpoints are
dropped and the move is *settled*: if the target had not committed, its partial copy goes
and the source is started again when it ran; once the source's copy is deleted the move is
finished instead. When the outcome cannot be known (the target unreachable right after its
commit) nothing is started anywhere and the entry stays: the next ``sysmgr move NAME``,
``sysmgr init`` on the admin host, or :func:`settle_pending` settles it from the target's
record.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sysmgr.engine import journal
from sysmgr.engine.migration import markers
from sysmgr.engine.migration.wire import DATA, END, MSG, decode
from sysmgr.errors import AlreadyExists, Conflict, SysmgrError
from sysmgr.model import keys as mkeys
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


#: the points where a test can have the mover killed (``SYSMGR_FAULT=<point>``: SIGKILL there)
FAULT_POINTS = ("begun", "copied", "stopped", "final", "committed", "started", "released")


def _fault(point: str) -> None:
    """A fault injection point: the tests kill the mover at each step of a move and check
    that exactly one good copy is left once the move is settled."""
    if os.environ.get("SYSMGR_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# -- the admin root's journal of moves ---------------------------------------------------------

@dataclass
class Entry:
    """One move, as the admin root records it until it is settled."""

    id: str
    name: str
    new_name: str
    source: str
    target: str
    owner: dict[str, Any] = field(default_factory=journal.owner)
    phase: str = "copying"
    decision: str = ""              # "", "moved" or "stayed" once known


def _journal_dir(admin_root: str) -> str:
    return os.path.join(admin_root, "cluster", "migrations")


def _write(admin_root: str, e: Entry) -> None:
    d = _journal_dir(admin_root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, f"{e.id}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(asdict(e), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _remove(admin_root: str, e: Entry) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(_journal_dir(admin_root), f"{e.id}.json"))


def entries(admin_root: str) -> list[Entry]:
    """Every recorded move (unfinished ones: finished moves remove theirs)."""
    out = []
    try:
        names = sorted(os.listdir(_journal_dir(admin_root)))
    except FileNotFoundError:
        return []
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            with open(os.path.join(_journal_dir(admin_root), n)) as f:
                out.append(Entry(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue
    return out


# -- the mover ---------------------------------------------------------------------------------

class Mover:
    """One copy or move of container ``name`` from member ``source`` to ``target``."""

    def __init__(self, cluster: Cluster, name: str, source: str, target: str, *,
                 new_name: str | None = None, pool: str | None = None,
                 progress: Progress | None = None, meter: Meter | None = None) -> None:
        self.cluster = cluster
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

    # -- opening -------------------------------------------------------------------------
    def _open(self, *, move: bool, refresh: bool) -> None:
        if self.source == self.target and self.name == self.new_name:
            raise Conflict(f"container {self.name} is on member {self.source} already")
        src_b, dst_b = self.cluster.backend(self.source), self.cluster.backend(self.target)
        self.S = src_b.migration_open("source", {"name": self.name, "member": self.source})
        self.info = self.S.call("hello", id=self.mid, move=move)
        if move and self.info.get("marker"):
            raise markers.refusal(self.name, self.info["marker"], "move")
        self.T = dst_b.migration_open("target", {"member": self.target})
        self.tinfo = self.T.call(
            "prepare", source=self.info, name=self.new_name, pool=self.pool, id=self.mid,
            refresh=refresh,
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
        value = (self.info.get("config") or {}).get(key)
        try:
            return float(mkeys.normalize_config({key: value})[key]) if value else default
        except (ValueError, KeyError, SysmgrError):
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
                vols, commit = self._refresh_plan(snaps)
            else:
                vols = self._chain(snaps, None)
                commit = {}
            last = vols[-1]["snapshot"] if vols and self.kind != TAR else None
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
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """What a refresh sends (the snapshots after the newest common one) and what its
        commit records and deletes on the target."""
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
            return vols, commit
        mine = [s["name"] for s in snaps]
        new = [s for s in snaps if s["name"] not in theirs]
        return self._chain(new, None), {"snapshots": [s["name"] for s in new],
                                        "delete": [n for n in theirs if n not in mine]}

    # -- move ----------------------------------------------------------------------------
    def move(self, *, live: bool = True) -> MigrationResult:
        """Move the container to ``target`` (near-live when it runs and both pools stream
        incrementally, unless ``live`` is False); see the module's description."""
        t0 = time.monotonic()
        admin = self.cluster.admin_root
        entry = Entry(self.mid, self.name, self.new_name, self.source, self.target)
        state = {"begun": False, "committed": False, "commit_sent": False, "released": False}
        try:
            self._open(move=True, refresh=False)
            _write(admin, entry)
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
                _remove(admin, entry)
            raise
        _remove(admin, entry)
        kind = "live" if self.near_live else "cold"
        return MigrationResult(self.name, self.new_name, self.source, self.target, kind,
                               self.kind, tuple(self.rounds), time.monotonic() - t0, downtime,
                               tuple(self.notes))

    def _move_rounds(self, live: bool, entry: Entry, state: dict[str, bool]) -> Downtime | None:
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
        _write(self.cluster.admin_root, entry)
        got = self.T.call("commit", state=final, drop=list(self.sent_temps))
        state["committed"] = True
        _fault("committed")
        for line in got.get("addresses") or []:
            self.notes.append(line)
        entry.phase = "committed"
        _write(self.cluster.admin_root, entry)
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
        entry.phase, entry.decision = "released", "moved"
        _write(self.cluster.admin_root, entry)
        _fault("released")
        return downtime

    def _stop(self, timeout: float, entry: Entry) -> tuple[float, float]:
        entry.phase = "stopped"
        _write(self.cluster.admin_root, entry)
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

    def _fail(self, entry: Entry, state: dict[str, bool], err: BaseException) -> None:
        """Settle a move that failed: forward once the source was released, back while
        the target had not committed, from the target's record when unknown."""
        if state["released"]:
            entry.decision = "moved"
        elif not state["commit_sent"] or state["committed"]:
            entry.decision = "stayed"
        _write(self.cluster.admin_root, entry)
        try:
            said = settle(self.cluster, entry, target_optional=not state["commit_sent"])
        except SysmgrError as e:
            raise SysmgrError(
                f"moving {self.name} from {self.source} to {self.target} failed "
                f"({_why(err)}), and it could not be settled yet: {e.message}",
                hint=f"nothing was deleted; run 'sysmgr move {self.name}' again to finish it "
                     "or roll it back") from err
        for line in said:
            self.say(line)


def _why(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return e.message if isinstance(e, SysmgrError) else str(e) or type(e).__name__


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


# -- settling ----------------------------------------------------------------------------------

def settle(cluster: Cluster, entry: Entry, *, target_optional: bool = False) -> list[str]:
    """Finish or roll back the move ``entry`` on both members (its decision, or the
    target's record when it has none); the journal entry goes once both are done.

    The member that keeps the container goes first (the target when moved: it starts there
    at once; the source when it stayed: it runs again at once), the other second: a member
    that cannot be reached leaves the entry for the next try, with the decision kept.
    ``target_optional``: the target never committed, so its partial copy removes itself
    (its endpoint, or its next recovery): not reaching it is no failure.
    """
    if not entry.decision:
        m = cluster.backend(entry.target).migration_marker(entry.new_name)  # may be unreachable
        entry.decision = "moved" if m is not None and m.get("id") == entry.id else "stayed"
        _write(cluster.admin_root, entry)
    moved = entry.decision == "moved"
    steps = [(entry.target, entry.new_name), (entry.source, entry.name)]
    if not moved:
        steps.reverse()
    said = []
    for member, name in steps:
        try:
            line = cluster.backend(member).migration_settle(name, entry.id, moved=moved)
        except SysmgrError:
            if target_optional and member == entry.target and not moved:
                continue
            raise
        if line:
            said.append(f"{member}: {line}")
    _remove(cluster.admin_root, entry)
    return said


def settle_pending(cluster: Cluster, name: str | None = None) -> list[str]:
    """Settle the moves whose mover is gone (of container ``name`` only, when given)."""
    said = []
    for e in entries(cluster.admin_root):
        if (name is not None and name not in (e.name, e.new_name)) or journal.owner_alive(e.owner):
            continue
        said += settle(cluster, e)
        said.append(f"settled the interrupted move of {e.name} ({e.source} -> {e.target}): "
                    f"{'moved' if e.decision == 'moved' else 'it stays on ' + e.source}")
    return said


def settle_all(cluster: Cluster) -> list[str]:
    """:func:`settle_pending` for every container; a move that cannot be settled yet (a
    member unreachable) is named, not raised."""
    said = []
    for e in entries(cluster.admin_root):
        if journal.owner_alive(e.owner):
            continue
        try:
            said += settle_pending(cluster, e.name)
        except SysmgrError as err:
            said.append(f"the interrupted move of {e.name} ({e.source} -> {e.target}) could "
                        f"not be settled yet: {err.message}")
    return said


def check_free(cluster: Cluster, name: str, *, allowed: str | None = None) -> None:
    """Refuse a new name some member (other than ``allowed``) already uses."""
    if isinstance(cluster, ThisHost):
        return
    ms = cluster.member_set()
    taken = sorted(m for m, o in ms.each(lambda m, b: b.container_exists(name)).items()
                   if o.ok and o.value and m != allowed)
    if taken:
        raise AlreadyExists(f"container {name!r} already exists on {', '.join(taken)}")



# -- entry points ------------------------------------------------------------------------------

class ThisHost:
    """A single host as a one-member "cluster" (``local``): a copy ``--refresh`` between two
    containers of one root runs through the same mover."""

    member = "local"

    def __init__(self, client: Any) -> None:
        self.client = client
        self.admin_root = client.layout.root

    def backend(self, name: str) -> Any:
        return self.client.backend


def cluster_of(client: Any) -> Any:
    """The cluster a client belongs to (its admin root's), or None on a single host."""
    cluster = getattr(client, "cluster", None)
    if cluster is not None and getattr(client, "member", None) is not None:
        return cluster
    if cluster is not None and getattr(client, "clustered", True) and \
            getattr(cluster, "enabled", False):
        return cluster
    return None


def move(cluster: Cluster, name: str, source: str, target: str, *,
         new_name: str | None = None, pool: str | None = None, live: bool = True,
         progress: Progress | None = None, meter: Meter | None = None) -> MigrationResult:
    """Move container ``name`` from member ``source`` to ``target`` (as ``new_name``).
    An interrupted earlier move of it is settled first."""
    say = progress or (lambda _m: None)
    for line in settle_pending(cluster, name):
        say(line)
    if cluster.spec(target).evacuated:  # an unknown member: NotFound before anything
        raise Conflict(f"member {target} is evacuated: nothing moves there until "
                       f"'sysmgr cluster restore {target}'")
    new = new_name or name
    check_free(cluster, new, allowed=source if new == name else None)
    return Mover(cluster, name, source, target, new_name=new, pool=pool, progress=progress,
                 meter=meter).move(live=live)


def copy(cluster: Cluster, name: str, source: str, target: str, new_name: str, *,
         pool: str | None = None, refresh: bool = False, progress: Progress | None = None,
         meter: Meter | None = None) -> MigrationResult:
    """Copy container ``name`` (with its snapshots) from ``source`` to ``target`` as
    ``new_name``; ``refresh``: bring that existing copy up to date."""
    if not isinstance(cluster, ThisHost):
        cluster.spec(target)
        if not refresh:
            check_free(cluster, new_name)
    return Mover(cluster, name, source, target, new_name=new_name, pool=pool,
                 progress=progress, meter=meter).copy(refresh=refresh)
