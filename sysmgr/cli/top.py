"""``sysmgr top``: a live table of every container's CPU, memory, disk, network and processes.

Two samples make a frame: CPU% and the network rates are the counters' differences over the
time between them (CPU% of one CPU, as top's default: a container busy on two CPUs shows
200%). The figures come through the API (``containers.all(usage=True, counters=True)``, or every member's
with ``survey`` on an admin root with cluster members): the same cgroup and veth reads
``list`` and ``info`` make, no second reader.

The pure parts (:func:`frame`, :func:`sort_rows`, :func:`on_key`, :func:`to_records`) are
unit-tested; :func:`run_live` owns the terminal (cbreak mode, restored on the way out) and
redraws a rich table. Imported only by the ``top`` verb (rich is loaded here, not at start).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from sysmgr.cli import render

#: key -> sort order (LXD's letters where ``list`` has them); q quits
SORT_KEYS: dict[str, str] = {"c": "cpu", "m": "memory", "d": "disk", "n": "net"}
SORTS = ("cpu", "memory", "disk", "net", "name")
QUIT_KEYS = ("q", "Q", "\x03", "\x04")  # q, Ctrl-C and Ctrl-D (cbreak mode keeps ISIG)


@dataclass(frozen=True)
class Reading:
    """One container's counters at one instant (``at``: time.monotonic())."""

    name: str
    location: str | None
    status: str
    at: float
    cpu_ns: int | None = None
    memory: int | None = None
    memory_limit: int | None = None
    disk: int | None = None
    rx_bytes: int | None = None     # as the container sees it: what it received
    tx_bytes: int | None = None
    pids: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.location or "", self.name)


@dataclass(frozen=True)
class Row:
    """One line of a frame: the newer reading and the rates since the older one."""

    now: Reading
    cpu_percent: float | None = None
    rx_rate: float | None = None    # bytes per second
    tx_rate: float | None = None

    @property
    def net_rate(self) -> float | None:
        if self.rx_rate is None and self.tx_rate is None:
            return None
        return (self.rx_rate or 0.0) + (self.tx_rate or 0.0)


@dataclass
class Sample:
    """Every container's reading, and the members that did not answer (why)."""

    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


def reading(c: Any, at: float) -> Reading:
    """A :class:`Reading` of an API container fetched with ``usage=True``."""
    use = getattr(c, "usage", None)
    nets = (getattr(c, "network", None) or {}).values()
    rx = [n.get("receive_bytes") for n in nets if n.get("receive_bytes") is not None]
    tx = [n.get("transmit_bytes") for n in nets if n.get("transmit_bytes") is not None]
    return Reading(c.name, getattr(c, "location", None), c.status, at,
                   cpu_ns=getattr(use, "cpu_ns", None), memory=getattr(use, "memory_bytes", None),
                   memory_limit=getattr(use, "memory_limit_bytes", None),
                   disk=getattr(c, "disk_bytes", None), rx_bytes=sum(rx) if rx else None,
                   tx_bytes=sum(tx) if tx else None, pids=getattr(use, "pids", None))


def take_sample(client: Any, members: Sequence[str] | None = None) -> Sample:
    """Read every container's usage now (every member's on an admin root with members)."""
    if getattr(client, "clustered", False):
        survey = client.containers.survey(usage=True, members=members, counters=True)
        at = time.monotonic()
        return Sample({r.key: r for r in (reading(c, at) for c in survey.containers)},
                      dict(survey.unreachable))
    found = client.containers.all(usage=True, counters=True)
    at = time.monotonic()
    return Sample({r.key: r for r in (reading(c, at) for c in found)})


def _rate(new: int | None, old: int | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0 or new < old:
        return None  # a restart resets the counters: no rate rather than a negative one
    return (new - old) / seconds


def frame(before: Sample | None, now: Sample) -> list[Row]:
    """The rows of a frame: ``now``'s readings with the rates since ``before`` (none for a
    container that was not in ``before`` or has no counter)."""
    rows = []
    for key, cur in now.readings.items():
        old = before.readings.get(key) if before is not None else None
        if old is None:
            rows.append(Row(cur))
            continue
        dt = cur.at - old.at
        cpu = _rate(cur.cpu_ns, old.cpu_ns, dt)
        rows.append(Row(cur, cpu_percent=cpu / 1e7 if cpu is not None else None,  # ns/s -> %
                        rx_rate=_rate(cur.rx_bytes, old.rx_bytes, dt),
                        tx_rate=_rate(cur.tx_bytes, old.tx_bytes, dt)))
    return rows


_SORT_VALUE: dict[str, Callable[[Row], float | None]] = {
    "cpu": lambda r: r.cpu_percent,
    "memory": lambda r: r.now.memory,
    "disk": lambda r: r.now.disk,
    "net": lambda r: r.net_rate,
}


def sort_rows(rows: Sequence[Row], by: str) -> list[Row]:
    """Largest first (unknown values last), then by name and location; ``name``: by name."""
    by_name = sorted(rows, key=lambda r: (r.now.name, r.now.location or ""))
    if by == "name":
        return by_name
    value = _SORT_VALUE[by]
    return sorted(by_name, key=lambda r: (value(r) is None, -(value(r) or 0)))


def on_key(sort: str, key: str) -> tuple[str, bool]:
    """A key press in the live view: the new sort order, and whether to quit."""
    if key in QUIT_KEYS:
        return sort, True
    return SORT_KEYS.get(key.lower(), sort), False


def to_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The frame as ``--format json`` prints it (bytes, bytes per second, percent)."""
    return [{
        "name": r.now.name, "location": r.now.location, "status": r.now.status,
        "cpu_percent": None if r.cpu_percent is None else round(r.cpu_percent, 2),
        "cpu_ns": r.now.cpu_ns, "memory_bytes": r.now.memory,
        "memory_limit_bytes": r.now.memory_limit, "disk_bytes": r.now.disk,
        "network_rx_bytes_per_second": None if r.rx_rate is None else round(r.rx_rate, 1),
        "network_tx_bytes_per_second": None if r.tx_rate is None else round(r.tx_rate, 1),
        "network_rx_bytes": r.now.rx_bytes, "network_tx_bytes": r.now.tx_bytes,
        "pids": r.now.pids,
    } for r in rows]


# -- the table ---------------------------------------------------------------------------------

HEADERS = ("NAME", "LOCATION", "STATE", "CPU%", "MEMORY", "DISK", "NET RX/TX", "PIDS")
_SORT_COLUMN = {"cpu": "CPU%", "memory": "MEMORY", "disk": "DISK", "net": "NET RX/TX",
                "name": "NAME"}


def _size(n: float | None) -> str:
    return render.format_size(int(n)) if n is not None else "-"


def cells(r: Row) -> list[str]:
    """One row's cells as the table shows them."""
    mem = "-" if r.now.memory is None else \
        f"{_size(r.now.memory)}/{_size(r.now.memory_limit)}"
    net = "-" if r.net_rate is None else f"{_size(r.rx_rate or 0)}/s / {_size(r.tx_rate or 0)}/s"
    return [r.now.name, r.now.location or "(local)", r.now.status.upper(),
            "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}",
            mem, _size(r.now.disk), net, "-" if r.now.pids is None else str(r.now.pids)]


def plain_table(rows: Sequence[Row]) -> str:
    """``--once`` in table form (no terminal needed)."""
    return render.table(HEADERS, [cells(r) for r in rows])


def rich_table(rows: Sequence[Row], sort: str, refresh: float, unreachable: Mapping[str, str]
               ) -> Any:
    from rich.table import Table  # the live view only

    caption = (f"sorted by {sort} - keys: c cpu, m memory, d disk, n net, q quit - "
               f"every {refresh:g}s")
    if unreachable:
        caption += " - unreachable: " + ", ".join(sorted(unreachable))
    t = Table(caption=caption, caption_justify="left", expand=False)
    for h in HEADERS:
        t.add_column(h + (" v" if h == _SORT_COLUMN[sort] else ""),
                     justify="left" if h in ("NAME", "LOCATION", "STATE") else "right")
    for r in rows:
        t.add_row(*cells(r))
    return t


# -- the live view -----------------------------------------------------------------------------

@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[bool]:
    """Single key presses without Enter or echo while inside; the terminal's settings are
    restored on the way out (whatever happens). Yields False when ``fd`` is no terminal."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_key(fd: int | None, seconds: float) -> str | None:
    """The next key pressed within ``seconds`` (None: none; or no terminal to read)."""
    if fd is None:
        time.sleep(seconds)
        return None
    ready, _, _ = select.select([fd], [], [], max(0.0, seconds))
    if not ready:
        return None
    data = os.read(fd, 1)
    return data.decode(errors="replace") if data else "q"  # end of input: leave


def run_live(sample: Callable[[], Sample], refresh: float, sort: str = "cpu") -> None:
    """Redraw every ``refresh`` seconds until q (or Ctrl-C); c/m/d/n re-sort at once."""
    from rich.console import Console
    from rich.live import Live

    fd = sys.stdin.fileno()
    with cbreak(fd) as keys, Live(console=Console(), auto_refresh=False,
                                  screen=False, transient=False) as live:
        before = None
        while True:
            now = sample()
            rows = frame(before, now)
            live.update(rich_table(sort_rows(rows, sort), sort, refresh, now.unreachable),
                        refresh=True)
            deadline = time.monotonic() + refresh
            while (left := deadline - time.monotonic()) > 0:
                key = wait_key(fd if keys else None, left)
                if key is None:
                    continue
                sort, done = on_key(sort, key)
                if done:
                    return
                live.update(rich_table(sort_rows(rows, sort), sort, refresh, now.unreachable),
                            refresh=True)
            before = now
