"""The event log of one host root: every lifecycle change, as JSON lines in ``<root>/events.log``.

    >>> events.container(host, "web1", "started")          # what the engine's call sites do
    >>> [e.action for e in events.read(layout, types=["lifecycle"])]
    ['started']
    >>> for e in events.follow(layout, stop=stop): ...     # tail -f (``sysmgr monitor``)

One line per event (:class:`Event`): ``time``, ``type`` (``lifecycle``: a container or
snapshot came, went, started, stopped, moved...; ``operation``: one action of an apply, with
its plan line; ``drift``: the controller found the host off its manifests), ``object``
(``container/web1``, ``snapshot/web1/snap0``, ``network/sysmgrbr0``), ``action``, ``result``
(``ok`` or ``error: ...``), ``pid`` (the sysmgr process that wrote it), and when known
``commit`` (the manifests' commit an apply came from), ``member`` (the other member of a
move) and ``detail`` (the plan line, where a copy came from...). Fields set with
:func:`context` (a controller's commit) go into every event emitted inside it.

Writing: :func:`emit` opens the log ``O_APPEND`` and writes each line with one ``write()``,
which Linux serialises per file, so the lines of concurrent sysmgr processes never
interleave. Past :data:`MAX_BYTES` the log is renamed to ``events.log.1`` (one older
generation is kept; writers appending at the same moment may each add their line first). Writers hold a shared ``flock`` on the file while they append and the
one rotating an exclusive one, so no line lands in a file after its rename: a follower that
drains the old file once it sees the rename has read all of it. An event that cannot be
written (a full disk, a read-only root) never fails the operation it records; it is counted
(:func:`dropped`).

Reading: :func:`read` (both generations, oldest first) and :func:`follow` (``tail -f``: woken
by inotify on the root directory, else a look every :data:`POLL_INTERVAL` seconds; it
follows the rename). A line that does not parse (cut short by a full disk) is skipped.

Layer: engine, but nothing beyond the standard library at import (the hot verbs emit events
and pay for every import at start-up); inotify is loaded by :func:`follow` only.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from sysmgr.layout import Layout

if TYPE_CHECKING:  # pragma: no cover
    from threading import Event as _Stop

LOG_NAME = "events.log"
MAX_BYTES = 8 << 20
TYPES = ("lifecycle", "operation", "drift")
POLL_INTERVAL = 0.2   # without inotify: how often follow() looks at the log
_WAKE_INTERVAL = 0.5  # with inotify: how often follow() looks at its ``stop`` all the same
_OPTIONAL = ("commit", "member", "detail")
_BASE = ("time", "type", "object", "action", "result", "pid", *_OPTIONAL)
# an apply's action kinds as objects: "storage-pool/default", "container/web1"
_KINDS = {"StoragePool": "storage-pool", "StorageVolume": "storage-volume"}

_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "sysmgr_event_context", default=None)
_dropped = 0


@dataclass(frozen=True)
class Event:
    """One line of the log."""

    time: float
    type: str
    object: str
    action: str
    result: str = "ok"
    pid: int = 0
    commit: str | None = None
    member: str | None = None
    detail: str | None = None
    #: fields a writer added beyond these (kept, shown by ``monitor --format json``)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The event as its JSON line has it (optional fields only when set)."""
        d = {k: v for k, v in asdict(self).items()
             if k != "extra" and (v is not None or k not in _OPTIONAL)}
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: Any) -> "Event | None":
        """The event of a parsed line; None when it is not one."""
        try:
            return cls(float(d["time"]), str(d["type"]), str(d["object"]), str(d["action"]),
                       str(d.get("result", "ok")), int(d.get("pid") or 0),
                       *(None if d.get(k) is None else str(d[k]) for k in _OPTIONAL),
                       extra={k: v for k, v in d.items() if k not in _BASE})
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


# -- writing ----------------------------------------------------------------------------------

def log_path(where: Any) -> str:
    """The log of ``where``: a Host, a Layout, or a root directory."""
    layout = getattr(where, "layout", where)
    return os.path.join(getattr(layout, "root", layout), LOG_NAME)


def emit(where: Any, type: str, object: str, action: str, *, result: str = "ok",
         **extra: Any) -> None:
    """Append one event to the log of ``where`` (a Host, a Layout or a root directory).
    Never raises for the log's sake: an event that cannot be written is counted and dropped.
    ``extra``: ``commit``, ``member``, ``detail`` or any field of the writer's (None: left out)."""
    global _dropped
    try:
        fields: dict[str, Any] = {"time": time.time(), "type": type, "object": object,
                                  "action": action, "result": result, "pid": os.getpid()}
        fields.update((k, v) for k, v in {**(_context.get() or {}), **extra}.items()
                      if v is not None)
        line = json.dumps(fields, default=str, separators=(",", ":")) + "\n"
        path = log_path(where)
        _append(path, line.encode())
    except (OSError, ValueError, TypeError):
        _dropped += 1  # the operation it records stands all the same
        return
    root = os.path.dirname(path)
    if os.path.exists(Layout(root).cluster_member):
        from sysmgr.engine import store_events  # a member reporting to a shared store

        store_events.send_event(root, fields)


def container(where: Any, name: str, action: str, **extra: Any) -> None:
    """A lifecycle event of container ``name`` (``started``, ``stopped``, ``created``...)."""
    emit(where, "lifecycle", f"container/{name}", action, **extra)


def snapshot(where: Any, name: str, snap: str, action: str, **extra: Any) -> None:
    """A lifecycle event of snapshot ``snap`` of container ``name``."""
    emit(where, "lifecycle", f"snapshot/{name}/{snap}", action, **extra)


def operation(where: Any, action: Any, error: BaseException | None = None) -> None:
    """One action of an apply (an :class:`~sysmgr.engine.actions.Action`) and how it ended;
    its plan line is the detail."""
    kind = _KINDS.get(action.kind, str(action.kind).lower())
    emit(where, "operation", f"{kind}/{action.name}", action.effect, result=error_result(error),
         detail=action.describe())


def drift(where: Any, action: Any, *, corrected: bool) -> None:
    """The host was found off its manifests: what drifted (``action.drift()``), and whether
    the apply put it back (``corrected``) or it was only reported (a report-only controller)."""
    kind = _KINDS.get(action.kind, str(action.kind).lower())
    emit(where, "drift", f"{kind}/{action.name}", "corrected" if corrected else "detected",
         detail="; ".join(action.drift()))


def error_result(error: BaseException | None) -> str:
    """``ok``, or ``error: `` and the first line of the error's message."""
    if error is None:
        return "ok"
    lines = str(getattr(error, "message", None) or error or type(error).__name__).splitlines()
    return f"error: {lines[0] if lines else type(error).__name__}"


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Fields every event emitted inside the block carries, e.g. the commit a controller
    applies: ``with events.context(commit=sha): apply(host, plan)``."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def dropped() -> int:
    """How many events this process could not write."""
    return _dropped


def _append(path: str, data: bytes) -> None:
    for _ in range(5):  # a rotation came in between: again, into the new file
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a rotation waits until this line is in
            st = os.fstat(fd)
            if not _is_current(path, st):
                continue
            if st.st_size and st.st_size + len(data) > MAX_BYTES:
                _rotate(path, fd, len(data))
                continue
            if os.write(fd, data) != len(data):
                raise OSError("the event log took part of a line")
            return
        finally:
            os.close(fd)
    raise OSError(f"{path} kept being rotated")


def _rotate(path: str, fd: int, size: int) -> None:
    """Rename the full log (held open as ``fd``) to ``.1``, unless another writer did."""
    fcntl.flock(fd, fcntl.LOCK_EX)  # every writer that checked this file has written
    st = os.fstat(fd)
    if _is_current(path, st) and st.st_size + size > MAX_BYTES:
        os.replace(path, path + ".1")


def _is_current(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` still names the file of ``st`` (it was not rotated away)."""
    return _ident(path) == (st.st_dev, st.st_ino)


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# -- reading ----------------------------------------------------------------------------------

def parse_line(line: bytes | str) -> Event | None:
    try:
        return Event.from_dict(json.loads(line))
    except ValueError:  # a line cut short: a full disk, a killed writer
        return None


def _select(lines: Iterable[bytes], types: frozenset[str] | None, since: float | None
            ) -> Iterator[Event]:
    for line in lines:
        ev = parse_line(line) if line.strip() else None
        if ev is not None and (types is None or ev.type in types) and \
                (since is None or ev.time >= since):
            yield ev


def _types(types: Iterable[str] | None) -> frozenset[str] | None:
    return frozenset(types) if types else None


def read(where: Any, *, since: float | None = None, types: Iterable[str] | None = None
         ) -> list[Event]:
    """The events of the log, oldest first: those at or after ``since`` (a Unix time), of
    the ``types`` given (all: None)."""
    path = log_path(where)
    for _ in range(3):  # a rotation between the two opens: again
        with _Reader(path) as cur, _Reader(path + ".1") as old:
            if cur.ident is not None and cur.ident == old.ident:
                continue
            return list(_select([*old.lines(), *cur.lines()], _types(types), since))
    return []


class _Reader:
    """One generation of the log, read from where it was opened to its current end."""

    def __init__(self, path: str, *, at_end: bool = False) -> None:
        self.path = path
        self.fd: int | None = None
        self.ident: tuple[int, int] | None = None
        self.buf = b""
        self.open(at_end=at_end)

    def open(self, *, at_end: bool) -> None:
        """(Re)open ``path`` (nothing when it does not exist), at its end or its start."""
        self.close()
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        st = os.fstat(self.fd)
        self.ident = (st.st_dev, st.st_ino)
        if at_end:
            os.lseek(self.fd, 0, os.SEEK_END)

    def lines(self) -> list[bytes]:
        """The whole lines written since the last call (a partial last line waits)."""
        if self.fd is None:
            return []
        chunks = [self.buf]
        while chunk := os.read(self.fd, 1 << 16):
            chunks.append(chunk)
        *whole, self.buf = b"".join(chunks).split(b"\n")
        return whole

    def replaced(self) -> bool:
        """Whether the path names another file now (rotated, created or removed)."""
        return _ident(self.path) != self.ident

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.ident, self.buf = None, None, b""

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def follow(where: Any, *, types: Iterable[str] | None = None, from_end: bool = True,
           since: float | None = None, stop: _Stop | None = None) -> Iterator[Event]:
    """Yield the log's events as they are written (``tail -f``), until ``stop`` is set
    (a ``threading.Event``; None: for ever). ``from_end``: only events written from now on;
    else the log's whole content first (both generations), as does ``since`` (a Unix time:
    the events from then on). Survives rotation; waits for a log that does not exist yet."""
    path = log_path(where)
    wanted = _types(types)
    backlog = since is not None or not from_end
    with _Waker(os.path.dirname(path)) as waker, _Reader(path, at_end=not backlog) as tail:
        if backlog:
            with _Reader(path + ".1") as old:
                if old.ident != tail.ident:  # else it was rotated since: tail reads it
                    yield from _select(old.lines(), wanted, since)
        while stop is None or not stop.is_set():
            yield from _select(tail.lines(), wanted, since)
            if tail.replaced():
                yield from _select(tail.lines(), wanted, since)  # the rest of the old file
                tail.open(at_end=False)  # the new one, from its first line
                continue
            waker.wait(stop)


class _Waker:
    """Waits until the log may have changed: inotify on the root directory, else a timer."""

    def __init__(self, directory: str) -> None:
        self.ino: Any = None
        try:
            from sysmgr._util import inotify  # only followers pay for ctypes

            self.ino = inotify.Inotify()
            self.ino.add_watch(directory, inotify.IN_MODIFY | inotify.IN_CREATE |
                               inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM | inotify.IN_DELETE)
            self._wake_mask = inotify.IN_Q_OVERFLOW | inotify.IN_IGNORED
        except OSError:  # no inotify left (the user's limits): look every POLL_INTERVAL
            self.close()

    def wait(self, stop: _Stop | None) -> None:
        if self.ino is None:
            if stop is not None:
                stop.wait(POLL_INTERVAL)
            else:
                time.sleep(POLL_INTERVAL)
            return
        deadline = time.monotonic() + _WAKE_INTERVAL
        while (left := deadline - time.monotonic()) > 0:
            # the database's writes wake it too: only the log's names (or lost events) count
            if any(e.name.startswith(LOG_NAME) or e.mask & self._wake_mask
                   for e in self.ino.read(left)):
                return
            if stop is not None and stop.is_set():
                return

    def close(self) -> None:
        if self.ino is not None:
            self.ino.close()
            self.ino = None

    def __enter__(self) -> "_Waker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
