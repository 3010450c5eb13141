"""A member controller's liveness that follows the store its root records.

The admin host pushes the cluster store to each member root (``cluster store set|migrate``,
``cluster add``); a controller started before, or running when the admin switches stores,
moves its lease and its event flushing to the store the root now records, and stops
reporting when the root records none, without a restart. Options given to ``controller
run`` (``--cluster-store`` and the rest) pin what they name over the record.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable, Iterator

from sysmgr.api import cluster_store as cstore
from sysmgr.engine import cluster_store as estore
from sysmgr.errors import SysmgrError
from sysmgr.layout import Layout

#: how often the root's record is looked at (a stat; read only when it changed)
CHECK_EVERY = 2.0


@contextlib.contextmanager
def following(root: str, *, facts: Callable[[], dict[str, Any]], log: Callable[[str], None],
              check_every: float = CHECK_EVERY, **given: Any) -> Iterator[None]:
    """The controller's liveness while the block runs: a lease in the store member root
    ``root`` reports to (:func:`~sysmgr.api.cluster_store.reporting` with ``given`` over
    the record), re-read whenever the record changes. Bad options raise before the block."""
    first = cstore.reporting(root, **given)
    with _Follower(root, first, facts, log, check_every, given):
        yield


class _Follower:
    def __init__(self, root: str, first: estore.StoreConfig | None,
                 facts: Callable[[], dict[str, Any]], log: Callable[[str], None],
                 check_every: float, given: dict[str, Any]) -> None:
        self.root, self.facts, self.log, self.given = root, facts, log, given
        self.path = Layout(root).cluster_member
        self.check_every = check_every
        self.current: estore.StoreConfig | None = None
        self._beat: contextlib.ExitStack | None = None
        self._seen = self._stamp()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-follow", daemon=True)
        self._switch(first)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _switch(self, conf: estore.StoreConfig | None) -> None:
        """Stop reporting to the current store (its lease revoked) and start with ``conf``."""
        if self._beat is not None:
            self._beat.close()
            self._beat = None
        self.current = conf
        if conf is not None:
            stack = contextlib.ExitStack()
            stack.enter_context(cstore.heartbeat(conf, root=self.root, facts=self.facts,
                                                 log=self.log))
            self._beat = stack
        self._seen = self._stamp()  # heartbeat() may have written the record itself

    def check(self) -> None:
        """One look at the record: a changed store (or none) is followed."""
        stamp = self._stamp()
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            conf = cstore.reporting(self.root, **self.given)
        except SysmgrError as e:
            self.log(f"cluster store: the root's record is unusable, reporting stops: {e.message}")
            conf = None
        if conf == self.current:
            return
        self.log(f"cluster store: now reporting to {conf.url} (cluster {conf.cluster_id}) as "
                 f"{conf.member}" if conf
                 else "cluster store: this root reports to no store now")
        try:
            self._switch(conf)
        except SysmgrError as e:  # the new store's lease starts when it answers (heartbeat)
            self.log(f"cluster store: {e.message}")

    def _run(self) -> None:
        while not self._stop.wait(self.check_every):
            self.check()

    def __enter__(self) -> "_Follower":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._switch(None)
