"""``client.events``: the host root's event log (what ``sysmgr monitor`` shows).

    >>> [(e.object, e.action) for e in client.events.all(types=["lifecycle"])]
    [('container/web1', 'created'), ('container/web1', 'started')]
    >>> stop = threading.Event()
    >>> for e in client.events.follow(stop=stop):   # until stop.set() (from another thread)
    ...     print(e.time, e.type, e.object, e.action, e.result)

Events are :class:`sysmgr.engine.events.Event` records (``time``, ``type``, ``object``,
``action``, ``result``, ``pid``; ``commit``, ``member``, ``detail`` when known). On this host
``follow`` reads the log as it grows (inotify); on a cluster member over SSH it asks the
member for what is new every :data:`POLL_INTERVAL` seconds (:func:`poll`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

from sysmgr.engine.events import TYPES, Event

if TYPE_CHECKING:  # pragma: no cover - every client imports this module: threading only to poll
    import threading

__all__ = ["TYPES", "Event", "EventManager", "poll"]

POLL_INTERVAL = 1.0
# events are appended in the order they are written, but stamped a moment before: a poll
# asks again for this many seconds before the newest event it has seen, and skips repeats
_OVERLAP = 5.0


class EventManager:
    """The event log of the client's root (or of its ``member``)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def backend(self) -> Any:
        return self._client.backend

    def all(self, *, since: float | None = None, types: Iterable[str] | None = None,
            last: int | None = None) -> list[Event]:
        """The events, oldest first: at or after ``since`` (a Unix time), of ``types``
        (``lifecycle``, ``operation``, ``drift``; None: all), only the ``last`` N."""
        return self.backend.event_list(since=since, types=_types(types), last=last)

    def follow(self, *, types: Iterable[str] | None = None, since: float | None = None,
               from_end: bool = True, stop: threading.Event | None = None) -> Iterator[Event]:
        """The events as they are written, until ``stop`` is set (None: for ever). Only new
        ones (``from_end``), else all first, or those from ``since`` on first."""
        return self.backend.event_follow(types=_types(types), from_end=from_end, since=since,
                                         stop=stop)


    def follow_cluster(self, *, types: Iterable[str] | None = None, since: float | None = None,
                       stop: threading.Event | None = None) -> Iterator[Event]:
        """Every member's events as the cluster store receives them (``monitor
        --all-members``): one watch on the store, no member asked. ``since``: the recorded
        events from then on first; else only new ones."""
        import threading  # noqa: F811 - at run time only here
        from sysmgr.engine.events import Event as _E

        cluster = self._client.cluster
        store = cluster.store
        stop = stop or threading.Event()
        wanted = set(types) if types else None
        start = 0
        if since is None:
            recorded = store.events()
            start = recorded[-1][0] if recorded else 0
        for _pos, d in store.watch_events(start, stop):
            e = _E.from_dict(d)
            if e is None or (wanted and e.type not in wanted) or \
                    (since is not None and e.time < since):
                continue
            yield e


def _types(types: Iterable[str] | None) -> list[str] | None:
    return sorted(set(types)) if types else None


def poll(backend: Any, *, types: list[str] | None, from_end: bool, since: float | None,
         stop: threading.Event | None, interval: float = POLL_INTERVAL) -> Iterator[Event]:
    """``follow`` through ``backend.event_list`` alone: for a member over SSH, where the
    log cannot be watched from here. Times are the member's, never compared with ours."""
    import threading  # a member's follow only

    stop = stop or threading.Event()
    seen: set[Event] = set()
    cursor: float | None = since
    if from_end and since is None:  # what is there already is not shown: start after it
        newest = backend.event_list(since=None, types=None, last=1)
        if newest:
            cursor = newest[-1].time
            seen = set(backend.event_list(since=cursor - _OVERLAP, types=types))
    while not stop.is_set():
        got = backend.event_list(since=None if cursor is None else cursor - _OVERLAP,
                                 types=types)
        for e in got:
            if e not in seen and (since is None or e.time >= since):
                yield e
        if got:
            seen = set(got)
            cursor = max(cursor or 0.0, max(e.time for e in got))
        stop.wait(interval)
