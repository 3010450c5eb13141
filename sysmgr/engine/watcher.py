"""``Watcher``: notice at once when a running container's init exits, without polling.

It holds one pidfd per running container's init (from the runtime: :meth:`Runtime.watch`),
which becomes readable when that init exits, so a long-running process (the controller)
sleeps in ``poll`` until an init dies or its timeout passes, whatever the number of
containers. The set of watched inits follows the records: each :meth:`Watcher.wait` re-reads
them only when the database changed since (any sysmgr process that starts or stops a
container commits a change), so call it in a loop with a timeout of a second or so.

An exited init that was not reaped yet (a zombie) counts as exited. When this process is its
reaper (a child subreaper, as the controller is), the watcher collects its exit code right
away, into :attr:`Watcher.exits`, for :func:`sysmgr.engine.supervise.crashed`. A runtime
without such fds is asked for each container's state instead, at most every
:data:`POLL_INTERVAL` seconds.

Layer: engine. The watcher only reports; what a death means (a crash, or a stop by sysmgr,
which marks the record STOPPED first) is for :func:`~sysmgr.engine.supervise.crashed`.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

from sysmgr.drivers.runtime.base import RUNNING, STOPPED, InitRecord
from sysmgr.engine import records
from sysmgr.engine.host import Host

POLL_INTERVAL = 1.0  # seconds between status checks of inits the runtime gives no fd for


class Watcher:
    """Pidfds of the running containers' inits (see the module docstring).

    Use as a context manager (or call :meth:`close`): the pidfds are closed at the end.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        #: exit codes collected from inits that exited (None: not ours to collect)
        self.exits: dict[InitRecord, int | None] = {}
        self._watched: dict[str, tuple[InitRecord, int | None]] = {}
        self._marker: Any = None

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in list(self._watched):
            self._drop(name)

    def watched(self) -> dict[str, int]:
        """Container name -> init pid, of the inits being watched."""
        return {name: init.pid for name, (init, _fd) in self._watched.items()}

    def fds(self) -> list[int]:
        """The pidfds being watched, readable once their init exits (refreshed first): a
        caller may select on them besides its own fds, then :meth:`wait` with no timeout."""
        self.refresh()
        return [fd for _name, (_init, fd) in sorted(self._watched.items()) if fd is not None]

    # -- following the records --------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Watch the inits the records say run (only re-read when the database changed,
        unless ``force``): new ones get a pidfd, stopped or replaced ones lose theirs."""
        marker = self.host.store.change_marker()
        if marker == self._marker and not force:
            return
        self._marker = marker
        want: dict[str, InitRecord] = {}
        for rec in self.host.store.containers():
            init = records.init_record(rec)
            if init is not None and rec.volatile.get("last_state") == RUNNING:
                want[rec.name] = init
        for name, (init, _fd) in list(self._watched.items()):
            if want.get(name) != init:
                self._drop(name)
        for name, init in want.items():
            if name not in self._watched and init not in self.exits:
                self._watched[name] = (init, self.host.runtime_for(init).watch(init))
        # exit codes are kept until their record no longer names that init (recorded)
        current = set(want.values())
        self.exits = {i: c for i, c in self.exits.items() if i in current}

    def _drop(self, name: str) -> None:
        _init, fd = self._watched.pop(name)
        if fd is not None:
            os.close(fd)

    # -- waiting --------------------------------------------------------------------------

    def wait(self, timeout: float | None) -> list[str]:
        """Containers whose init exited, by name: at once if some already did, else once one
        does or ``timeout`` seconds passed (None: no limit) — then possibly none."""
        self.refresh()
        exited = self._unwatchable_exited()
        fds = {fd: name for name, (_i, fd) in self._watched.items() if fd is not None}
        polls_status = len(fds) < len(self._watched)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if exited:
                left = 0.0  # report what we have; only pick up what is ready too
            elif polls_status:
                left = POLL_INTERVAL if left is None else min(left, POLL_INTERVAL)
            exited += [fds[fd] for fd in _ready(list(fds), left)]
            if polls_status and not exited:
                exited = self._unwatchable_exited()
            if exited or (deadline is not None and time.monotonic() >= deadline):
                break
        return self._collect(sorted(set(exited)))

    def _unwatchable_exited(self) -> list[str]:
        """Watched containers without an fd (gone before they were watched, or the runtime
        has none) whose init is no longer running."""
        return [name for name, (init, fd) in self._watched.items()
                if fd is None and self.host.runtime_for(init).status(init).state == STOPPED]

    def _collect(self, names: list[str]) -> list[str]:
        """Collect the exit codes of ``names``' inits and stop watching them (until their
        records change: a crash recorded, or a new start)."""
        for name in names:
            init = self._watched[name][0]
            self.exits[init] = self.host.runtime_for(init).reap(init)
            self._drop(name)
        return names


def _ready(fds: list[int], timeout: float | None) -> list[int]:
    """The fds among ``fds`` that are readable within ``timeout`` seconds (None: wait)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else int(timeout * 1000)
    return [fd for fd, _ev in poller.poll(ms)]
