"""A member's events into its cluster store, none lost while the store is away.

A member root that reports to a store (``cluster-member.json``) writes every event there
too (:func:`send_event`, called by :func:`sysmgr.engine.events.emit`). When the write fails
the event goes to the root's backlog (``cluster-events.backlog``, JSON lines, oldest first);
the next write that succeeds, or the controller's heartbeat (every beat), first writes the
backlog in order, then its own event.

- No duplicates: each event carries an ``id``; the store writes an event only if its key
  (time and id) is absent, so a flush cut off half-way and run again writes each event
  once. Flushed lines leave the backlog by an atomic rewrite.
- Two commands on one root: whoever holds the flush lock (``cluster-events.flush.lock``,
  not waited for) writes; another appends its event to the backlog (under the short
  ``cluster-events.lock``) for the holder to write after what it has.
- Bounded: past :data:`BACKLOG_MAX` lines the oldest are dropped down to
  :data:`BACKLOG_KEEP` (the member's own log keeps every event; the store misses those).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import uuid
from typing import Any, Iterator

from sysmgr.engine.cluster_store import open_config, read_config, write_atomic
from sysmgr.errors import SysmgrError
from sysmgr.layout import Layout
from sysmgr.state.cluster import ClusterStore

#: most lines a backlog holds; past it the oldest go, down to BACKLOG_KEEP
BACKLOG_MAX = 10_000
BACKLOG_KEEP = 9_000
#: after a failed write, events go straight to the backlog this long (a command must not
#: stall on a store that is away; the heartbeat, or a later command, flushes them)
BACKOFF = 30.0


class _Reporting:
    """What this process knows of one member root's store (re-read when the file changes)."""

    def __init__(self, ident: tuple[int, int, int], conf: Any) -> None:
        self.ident, self.conf = ident, conf
        self.store: ClusterStore | None = None
        self.retry_at = 0.0


_roots: dict[str, _Reporting] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def _flock(path: str, *, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``path`` while the block runs; False (not held) when ``wait`` is
    off and someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)  # (closing releases the lock)


def _content_lock(layout: Layout) -> Any:
    return _flock(os.path.join(layout.root, "cluster-events.lock"), wait=True)


def _flush_lock(layout: Layout) -> Any:
    return _flock(os.path.join(layout.root, "cluster-events.flush.lock"), wait=False)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def _replace(path: str, data: bytes) -> None:
    if data:
        write_atomic(path, data, mode=0o600)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def append(layout: Layout, events: list[dict[str, Any]]) -> None:
    """Add ``events`` at the end of the backlog (trimmed to its bound when it can be)."""
    data = b"".join(json.dumps(e, default=str, separators=(",", ":")).encode() + b"\n"
                    for e in events)
    path = layout.cluster_backlog
    with _content_lock(layout):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC |
                     os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > BACKLOG_MAX * 64:  # cheap test first: only a big file can be too long
            _trim(layout)


def _trim(layout: Layout) -> None:
    """Drop the oldest lines past the bound (only while no flush runs: a flusher drops the
    lines it wrote by their length, so the start of the file must stay as it read it)."""
    with _flush_lock(layout) as held:
        if not held:
            return
        lines = _read(layout.cluster_backlog).splitlines(keepends=True)
        if len(lines) > BACKLOG_MAX:
            _replace(layout.cluster_backlog, b"".join(lines[-BACKLOG_KEEP:]))


def backlog(layout: Layout) -> list[dict[str, Any]]:
    """The events waiting in the backlog, oldest first."""
    out = []
    for line in _read(layout.cluster_backlog).splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def _drop_written(layout: Layout, nbytes: int) -> None:
    with _content_lock(layout):
        _replace(layout.cluster_backlog, _read(layout.cluster_backlog)[nbytes:])


def _flush_held(layout: Layout, store: ClusterStore) -> int:
    """Write the backlog to ``store`` in order (the flush lock held); how many were written.
    Raises the store's error after dropping what was written before it."""
    written = 0
    while True:
        data = _read(layout.cluster_backlog)
        data = data[:data.rfind(b"\n") + 1]  # complete lines only (one may be in flight)
        if not data:
            return written
        done = 0
        try:
            for line in data.splitlines(keepends=True):
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None  # a damaged line: dropped, the local log has the event
                if isinstance(event, dict):
                    store.add_event(event)
                    written += 1
                done += len(line)
        finally:
            if done:
                _drop_written(layout, done)


def flush(layout: Layout, store: ClusterStore) -> int:
    """Write the root's backlog to ``store`` unless another process is at it; how many
    events were written (the store's error when it fails: what was written is gone from
    the backlog, the rest stays)."""
    if not os.path.exists(layout.cluster_backlog):
        return 0
    with _flush_lock(layout) as held:
        return _flush_held(layout, store) if held else 0


def deliver(layout: Layout, store: ClusterStore, event: dict[str, Any]) -> None:
    """Write the backlog, then ``event``; when the store fails, ``event`` joins the backlog
    (and the error is raised)."""
    with _flush_lock(layout) as held:
        if not held:  # another process flushes: it writes this after what it has
            append(layout, [event])
            return
        try:
            _flush_held(layout, store)
            store.add_event(event)
        except SysmgrError:
            append(layout, [event])
            raise
    if os.path.exists(layout.cluster_backlog):  # appended by another after the last look
        flush(layout, store)


def _reporting(layout: Layout) -> _Reporting | None:
    """This process's record of the root's store, re-read when the file changed."""
    try:
        st = os.stat(layout.cluster_member)
    except FileNotFoundError:
        _forget(layout.root)
        return None
    ident = (st.st_ino, st.st_mtime_ns, st.st_size)
    cur = _roots.get(layout.root)
    if cur is None or cur.ident != ident:
        _forget(layout.root)
        conf = read_config(layout.cluster_member)
        cur = _roots[layout.root] = _Reporting(ident, conf)
    return cur if cur.conf is not None and cur.conf.kind == "etcd" else None


def _forget(root: str) -> None:
    old = _roots.pop(root, None)
    if old is not None and old.store is not None:
        old.store.close()


def send_event(root: str, fields: dict[str, Any]) -> None:
    """Also record an event of member root ``root`` in its cluster store, when the root
    reports to one (``cluster-member.json``); to the backlog when the store does not take it.
    Never raises: the local log has the event."""
    layout = Layout(root)
    with _lock:
        try:
            rep = _reporting(layout)
        except SysmgrError:
            return  # an unreadable setting: the local log has it
        if rep is None:
            return
        event = {**fields, "member": fields.get("member") or rep.conf.member,
                 "id": fields.get("id") or uuid.uuid4().hex}
        try:
            if rep.store is None and time.monotonic() < rep.retry_at:
                append(layout, [event])
                return
            if rep.store is None:
                try:
                    rep.store = open_config(rep.conf, layout)
                except SysmgrError:
                    append(layout, [event])
                    raise
            deliver(layout, rep.store, event)
            rep.retry_at = 0.0
        except SysmgrError:
            rep.retry_at = time.monotonic() + BACKOFF
            if rep.store is not None:
                rep.store.close()
            rep.store = None
        except OSError:
            pass  # the backlog cannot be written (a full disk): the local log has it
