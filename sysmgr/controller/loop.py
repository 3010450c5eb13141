"""``sysmgr controller run``: keep one host root converged to its manifests.

One pass (:meth:`Controller.reconcile`): sync the git sources, load every source's
manifests, plan exactly as ``sysmgr apply`` does (same planner, the plan's lines in the
log), apply the plan unless the controller only reports (``self_heal=False``) or is
suspended, then take the snapshots that are due and delete the expired ones. A source that
fails to load (a YAML error, a git fetch that fails) changes nothing: the error is logged
and kept in the status, and the next change or interval tries again.

A pass runs at start, on every change in a watched directory (inotify; a burst of writes
is one change), every ``interval`` (with up to 10% jitter, so several hosts' controllers do
not fetch from one git server at once) and on SIGHUP. SIGTERM or SIGINT stop the
controller once the pass under way has finished, so an apply is never cut half-way (an
apply undoes itself only when one of its actions fails). The controller is a child
subreaper: container inits whose starter exited are its children, and it reaps them as soon
as they exit (no zombie stays while it runs).
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from sysmgr._util import linux
from sysmgr._util.inotify import TreeWatch
from sysmgr.controller import state
from sysmgr.controller.sources import Source
from sysmgr.errors import SysmgrError

DEFAULT_INTERVAL = 60.0
DEBOUNCE = 0.2        # a burst of writes (an editor, a git checkout) is one change
Log = Callable[[str], None]


def stderr_log(out: TextIO = sys.stderr) -> Log:
    """Log lines on stderr (the journal takes them from there under systemd)."""
    def log(line: str) -> None:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        out.flush()
    return log


@dataclass
class PassResult:
    """What one reconcile pass found and did."""

    started: float
    seconds: float = 0.0
    revisions: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)   # the plan's lines
    plan: str = ""                                      # its summary ("plan: 1 to update")
    applied: bool = False
    error: str = ""
    snapshots: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)    # plan lines that put drift back
    next_snapshot: tuple[float, str] | None = None    # (when, what): the pass that runs it

    def summary(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if not self.changes:
            return "in sync"
        return self.plan.removeprefix("plan: ") + (", applied" if self.applied else ", pending")


def _drift_lines(plan: Any) -> list[str]:
    """The plan lines of actions that put back what the host changed."""
    if plan is None:
        return []
    actions = getattr(plan, "actions", None)
    if actions is None:  # a cluster plan: its members' plans
        actions = [a for mp in plan.members for a in mp.plan.actions]
    return [a.describe() for a in actions if a.drift()]


class Controller:
    """The controller of the root ``client`` works on."""

    def __init__(self, client: Any, sources: list[Source], *, interval: float = DEFAULT_INTERVAL,
                 self_heal: bool = True, prune: bool = False, keep_backups: float | None = None,
                 log: Log | None = None) -> None:
        self.client = client
        self.root = client.layout.root
        self.sources = sources
        self.interval = interval
        self.self_heal = self_heal
        self.prune = prune
        self.keep_backups = keep_backups
        self.log = log or stderr_log()
        self.stopping = False
        self.since = time.time()
        self.last: PassResult | None = None
        self.passes = 0
        self.supervisor: Any = None   # crash detection and restarts, while the loop runs
        self._reported: list[str] = []  # the drift last logged as found (report-only)

    # -- one pass ----------------------------------------------------------------------------
    def reconcile(self) -> PassResult:
        r = PassResult(time.time())
        t0 = time.monotonic()
        suspended = state.suspended(self.root)
        try:
            for s in self.sources:
                s.sync()
                r.revisions[str(s)] = s.revision()
            paths = [s.path for s in self.sources]
            revision = ",".join(v for v in r.revisions.values() if not v.startswith("dir:"))
            plan = self.client.manifests.plan(paths, prune=self.prune, revision=revision,
                                              keep_backups=self.keep_backups) if paths else None
            r.changes = list(plan.lines()) if plan is not None else []
            r.plan = plan.summary() if plan is not None else ""
            r.drift = _drift_lines(plan)
            for line in r.changes:
                self.log(("(suspended) " if suspended else "") + line)
            if r.changes and self.self_heal and not suspended:
                self.client.manifests.apply(plan, progress=lambda m: self.log(f"  {m}"))
                r.applied = True
            elif r.drift and r.drift != self._reported:  # once per new drift, not every pass
                self.client.manifests.report(plan)
            self._reported = [] if r.applied else r.drift
            if not suspended:
                r.snapshots = self._snapshots()
                r.next_snapshot = self.client.backend.snapshot_next()
        except SysmgrError as e:
            r.error = e.message
            self.log(f"error: {e.message}" + (f" ({e.hint})" if e.hint else ""))
        r.seconds = time.monotonic() - t0
        self.last = r
        self.passes += 1
        self.log(f"reconcile: {r.summary()} in {r.seconds:.2f} s")
        self._write_status()
        return r

    def _supervise(self) -> None:
        """Record crashed inits and run the restarts that are due (not while suspended)."""
        sup = self.supervisor
        if sup is None or state.suspended(self.root):
            return
        try:
            lines = sup.step()
        except SysmgrError as e:
            lines = [f"error: supervising: {e.message}"]
        for line in lines:
            self.log(line)
        if lines:
            self._write_status()

    def _snapshots(self) -> list[str]:
        """Scheduled snapshots that are due, and expired ones deleted."""
        backend = self.client.backend
        done = [f"snapshot {n}" for n in backend.snapshot_auto()]
        done += [f"expired {n}" for n in backend.snapshot_prune(None)]
        for line in done:
            self.log(line)
        return done

    def _write_status(self) -> None:
        last = self.last
        state.write_status(self.root, {
            "pid": os.getpid(), "since": self.since, "passes": self.passes,
            "sources": [str(s) for s in self.sources], "interval": self.interval,
            "self_heal": self.self_heal,
            "last": None if last is None else {
                "time": last.started, "seconds": round(last.seconds, 3),
                "result": last.summary(), "error": last.error, "revisions": last.revisions,
                "changes": last.changes, "applied": last.applied,
                "snapshots": last.snapshots, "next_snapshot": last.next_snapshot},
            "pending": [] if last is None or last.applied else last.changes,
            "drift": [] if last is None or last.applied else last.drift,
            "applied_revisions": (self._applied_revisions(last)),
            "containers": self.supervisor.status() if self.supervisor is not None else [],
        })

    def _applied_revisions(self, last: PassResult | None) -> dict[str, str]:
        if last is None or last.error or (last.changes and not last.applied):
            prev = state.read_status(self.root).get("applied_revisions") or {}
            return dict(prev)
        return dict(last.revisions)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, *, once: bool = False) -> int:
        """Reconcile until SIGTERM/SIGINT (or one pass with ``once``); the exit status."""
        with state.locked(self.root):
            if once:
                return 1 if self.reconcile().error else 0
            linux.set_child_subreaper(True)
            with _Wakeups() as wake, TreeWatch() as ino, self.client.backend.supervisor() as sup:
                for s in self.sources:
                    ino.watch_tree(s.path)
                self.log(f"controller {os.getpid()} for {self.root}: sources "
                         f"{', '.join(map(str, self.sources)) or '(none)'}, every "
                         f"{self.interval:g} s" + ("" if self.self_heal else ", report only"))
                self.supervisor = sup
                if not state.suspended(self.root):
                    for line in sup.boot():
                        self.log(f"boot: {line}")
                self._loop(wake, ino)
            self.log("controller stopped")
        return 0

    def _loop(self, wake: "_Wakeups", ino: TreeWatch) -> None:
        due = time.monotonic()  # the first pass at once
        sup = self.supervisor
        while not self.stopping:
            timeout = max(0.0, due - time.monotonic())
            more = sup.timeout()
            if more is not None:
                timeout = min(timeout, more)
            ready, _, _ = select.select([wake, ino, *sup.fds()], [], [], timeout)
            self._supervise()     # exit codes first: before anything else reaps those inits
            _reap()
            if wake in ready:
                self.stopping, now = wake.read()
                if now:
                    due = time.monotonic()
            if self.stopping:
                break
            changed = False
            if ino in ready and ino.changed():
                time.sleep(DEBOUNCE)
                ino.changed()
                changed = True
                self.log("sources changed")
            if changed or time.monotonic() >= due:
                self.reconcile()
                self._supervise()
                _reap()
                _trim()
                due = time.monotonic() + self.interval * random.uniform(0.9, 1.0)
                snap = self.last.next_snapshot if self.last is not None else None
                if snap is not None:  # a schedule does not wait for the interval
                    due = min(due, time.monotonic() + max(0.0, snap[0] - time.time()))


def _trim() -> None:
    """Give the memory a pass used back to the system: an idle controller stays small."""
    gc.collect()
    linux.malloc_trim()


def _reap() -> None:
    """Collect every child that exited (container inits the controller outlived)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Wakeups:
    """Signals as readable bytes (``signal.set_wakeup_fd``): SIGTERM/SIGINT stop, SIGHUP
    reconciles now, SIGCHLD only wakes the loop (to reap)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)

    def __enter__(self) -> "_Wakeups":
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}
        self._old_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
        return self

    def fileno(self) -> int:
        return self.r

    def read(self) -> tuple[bool, bool]:
        """(stop, reconcile now) from the signals received."""
        with contextlib.suppress(BlockingIOError):
            got = set(os.read(self.r, 512))
            return (signal.SIGTERM in got or signal.SIGINT in got), signal.SIGHUP in got
        return False, False

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for s, h in self._old.items():
            signal.signal(s, h)
        os.close(self.r)
        os.close(self.w)
