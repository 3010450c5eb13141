"""The controller's supervisor: crashes noticed through pidfds, recorded, and restarted by
each container's ``boot.restart`` policy with its backoff (:mod:`.supervise`,
:mod:`.watcher`), as one object the controller's loop drives.

The loop selects on :meth:`Supervisor.fds` (readable when an init exits) besides its own
fds, with a timeout no longer than :meth:`Supervisor.timeout`, then calls
:meth:`Supervisor.step`: exit codes are collected first (before anything else reaps those
inits), crashes recorded, due restarts run. :meth:`boot` starts what the boot rules want
running (``sysmgr init``'s autostart), once, when the controller starts.

Layer: engine.
"""

from __future__ import annotations

import time

from sysmgr.engine import bootstrap, supervise
from sysmgr.engine.host import Host
from sysmgr.engine.watcher import POLL_INTERVAL, Watcher


class Supervisor:
    """Crash detection and restarts for one root (close it: it holds pidfds)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.watcher = Watcher(host)

    def close(self) -> None:
        self.watcher.close()  # the Host is the caller's

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def boot(self) -> list[str]:
        """Start what the boot rules want running (priorities, delays, dependencies)."""
        with self.host.locked():
            return bootstrap.autostart(self.host)

    def fds(self) -> list[int]:
        """The pidfds of the running inits (the set follows the records)."""
        return self.watcher.fds()

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until the supervisor must step again (a restart falls due, or inits
        without a pidfd are polled), or None when only an init's exit can matter."""
        now = time.time() if now is None else now
        due = [s.backoff_until for s in supervise.supervision_status(self.host, now)
               if s.backoff_until is not None]
        left = max(0.0, min(due) - now) if due else None
        if len(self.fds()) < len(self.watcher.watched()):
            left = POLL_INTERVAL if left is None else min(left, POLL_INTERVAL)
        return left

    def step(self) -> list[str]:
        """Record the crashes, run the restarts that are due; what happened, as log lines."""
        self.watcher.wait(0)
        lines = []
        for crash in supervise.crashed(self.host, self.watcher.exits):
            lines.append(f"crashed: {crash.name}: {crash.exit}; {crash.reason}")
        for name in supervise.restart_due(self.host):
            ok = supervise.restart(self.host, name)
            lines.append(f"restarted {name}" if ok else f"restart of {name} failed")
        return lines

    def status(self) -> list[str]:
        """One line per container that has a policy, waits, or crashed."""
        return [s.summary for s in supervise.supervision_status(self.host)
                if s.policy != "no" or s.waiting_for or s.last_exit or s.error]
