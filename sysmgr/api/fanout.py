"""One command's reach into the cluster: each member's backend, opened on first use (one
per member per command, reused for every call), and calls on many members at once.

:func:`parallel` runs a call per member on a bounded set of daemon threads and waits at most
``deadline`` seconds: a member that does not answer in time is reported as such while the
others' answers are used, and since the threads are daemons a stuck member can never keep
the command from exiting (the transport's own timeouts normally answer first).
"""

from __future__ import annotations

import os.path
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Sequence, TypeVar

from sysmgr.api import remote
from sysmgr.api.backend import Backend
from sysmgr.engine import cluster as ecluster
from sysmgr.errors import RemoteError, SysmgrError
from sysmgr.types import MemberSpec

T = TypeVar("T")
I = TypeVar("I")

#: members reached at once; each is mostly waiting on I/O
WORKERS = 8
#: seconds to connect to a member (the transport's connect and handshake timeouts)
CONNECT_TIMEOUT = 5.0
#: seconds a cluster-wide look (list, hello, locating a container) waits for a member that
#: is connected but does not answer (one that cannot be reached fails at CONNECT_TIMEOUT)
LOOK_DEADLINE = 15.0


@dataclass
class Outcome(Generic[T]):
    """One member's answer, or why there is none."""

    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def reason(self) -> str:
        e = self.error
        return getattr(e, "message", None) or str(e) or type(e).__name__

    def unwrap(self) -> T:
        """The value; re-raises the error (a bug is never taken for an unreachable member)."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def parallel(items: Sequence[I], fn: Callable[[I], T], *, workers: int = WORKERS,
             deadline: float | None = None) -> list[Outcome[T]]:
    """``fn(item)`` for every item, ``workers`` at a time; outcomes in the items' order."""
    if len(items) == 1 and deadline is None:
        return [_call(fn, items[0])]
    results: list[Outcome[T] | None] = [None] * len(items)
    pending = iter(range(len(items)))
    cond = threading.Condition()

    def work() -> None:
        while True:
            with cond:
                i = next(pending, None)
            if i is None:
                return
            out = _call(fn, items[i])
            with cond:
                results[i] = out
                cond.notify_all()

    for _ in range(min(workers, len(items))):
        threading.Thread(target=work, daemon=True, name="sysmgr-member").start()
    with cond:
        cond.wait_for(lambda: all(r is not None for r in results), timeout=deadline)
        return [r if r is not None else
                Outcome(error=RemoteError(f"no answer within {deadline:g} s"))
                for r in results]


def _call(fn: Callable[[I], T], item: I) -> Outcome[T]:
    try:
        return Outcome(value=fn(item))
    except Exception as e:  # noqa: BLE001 - carried to the caller, which decides
        return Outcome(error=e)


class MemberSet:
    """The members of one admin root as one command reaches them.

    Args:
        admin_root: the root holding the cluster record (and known host keys).
        specs: the members.
        own: the admin root's own backend, used for a ``local:`` member whose root is the
            admin root itself (two handles on one root in one process would fight over its
            lock).
    """

    def __init__(self, admin_root: str, specs: Iterable[MemberSpec], *,
                 own: Backend | None = None) -> None:
        self.admin_root = admin_root
        self.specs: dict[str, MemberSpec] = {s.name: s for s in specs}
        self._own = own
        self._backends: dict[str, Backend] = {}
        self._locks = {n: threading.Lock() for n in self.specs}

    @property
    def own(self) -> Backend | None:
        return self._own

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    def spec(self, name: str) -> MemberSpec:
        return self.specs[name]

    def backend(self, name: str) -> Backend:
        """Member ``name``'s backend, connected on first use (RemoteError if unreachable)."""
        with self._locks[name]:
            b = self._backends.get(name)
            if b is None:
                spec = self.specs[name]
                if spec.is_local and self._own is not None and _same_root(spec.root, self._own.root):
                    b = self._own
                else:
                    b = remote.connect(spec, admin_root=self.admin_root, timeout=CONNECT_TIMEOUT)
                self._backends[name] = b
            return b

    def each(self, fn: Callable[[str, Backend], T], names: Sequence[str] | None = None, *,
             deadline: float | None = LOOK_DEADLINE) -> dict[str, Outcome[T]]:
        """``fn(name, backend)`` on every member (or ``names``) at once."""
        chosen = list(self.names if names is None else names)
        outs = parallel(chosen, lambda n: fn(n, self.backend(n)), deadline=deadline)
        return dict(zip(chosen, outs))

    def hello(self, names: Sequence[str] | None = None) -> dict[str, Outcome[ecluster.MemberFacts]]:
        """What every member says about itself."""
        def one(name: str) -> ecluster.MemberFacts:
            spec = self.specs[name]
            return ecluster.facts_of(remote.hello(spec, admin_root=self.admin_root,
                                                  timeout=CONNECT_TIMEOUT))
        chosen = list(self.names if names is None else names)
        return dict(zip(chosen, parallel(chosen, one, deadline=LOOK_DEADLINE)))

    def close(self) -> None:
        backends, self._backends = self._backends, {}
        for b in backends.values():
            if b is not self._own:
                try:
                    b.close()
                except SysmgrError:
                    pass  # closing a broken connection: nothing left to release


def _same_root(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def failures(outcomes: dict[str, Outcome[T]]) -> dict[str, str]:
    """member -> reason, for the members that did not answer with a sysmgr error; any other
    exception (a bug) is raised."""
    out: dict[str, str] = {}
    for name, o in outcomes.items():
        if o.error is None:
            continue
        if not isinstance(o.error, SysmgrError):
            raise o.error
        out[name] = o.reason()
    return out
