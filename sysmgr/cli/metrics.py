"""``sysmgr metrics``: every running container's figures as OpenMetrics, under LXD's names.

A prometheus_client custom collector (:class:`ContainerCollector`) yields metric families
built from one API listing with usage (``containers.all(usage=True, counters=True)``, or every member's
with ``survey``): the cgroup figures ``list``/``info``/``top`` read, each nic's counters
(read on its veth's host end) and the root filesystem's size. LXD's names with the
``sysmgr_`` prefix (``lxd_memory_RSS_bytes`` -> ``sysmgr_memory_RSS_bytes``); labels
``name``, ``member``, ``project="default"`` and ``type="container"`` as LXD's, plus LXD's
``cpu``/``mode``, ``device``, ``mountpoint``, ``fstype`` where it has them. Like LXD, only
running containers have metrics. ``MemTotal`` is the memory limit (the host's memory when
there is none), ``MemFree`` what the container has left of it, ``MemAvailable`` that plus
its reclaimable page cache (``Inactive_file``).

:func:`serve` answers Prometheus scrapes over HTTP (loopback unless the caller allows a
remote address: :func:`listen_address` refuses one otherwise). Imported only by the
``metrics`` verb: prometheus_client is loaded here, never at CLI start.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from typing import Any, Callable, Iterable, Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest

from sysmgr.errors import ValidationError

PREFIX = "sysmgr_"
BASE_LABELS = ("name", "member", "project", "type")
# memory.stat figures (LXD's names, as the API reports them) and the help LXD gives them
MEMORY_HELP = {
    "Active_anon": "anonymous memory on the active LRU list",
    "Active": "memory on the active LRU list",
    "Active_file": "file-backed memory on the active LRU list",
    "Cached": "cached memory",
    "Dirty": "memory waiting to be written back to the disk",
    "Inactive_anon": "anonymous memory on the inactive LRU list",
    "Inactive": "memory on the inactive LRU list",
    "Inactive_file": "file-backed memory on the inactive LRU list",
    "Mapped": "mapped memory",
    "RSS": "anonymous and swap cache memory",
    "Shmem": "cached filesystem data that is swap-backed",
    "Unevictable": "unevictable memory",
    "Writeback": "memory queued for syncing to disk",
    "MemTotal": "memory the container may use (its limit, or the host's memory)",
    "MemFree": "free memory",
    "MemAvailable": "available memory",
    "Swap": "used swap space",
}
NETWORK = ("bytes", "packets", "errs", "drop")
FILESYSTEM = {"avail": "available space", "free": "free space", "size": "size of the filesystem"}


def _memory(use: Any) -> dict[str, int]:
    """The memory figures of one container (``MemTotal`` and the rest: see the module)."""
    stat = dict(getattr(use, "memory_stat", None) or {})
    total, used = getattr(use, "memory_limit_bytes", None), use.memory_bytes
    if total is not None and used is not None:
        stat["MemTotal"] = total
        stat["MemFree"] = max(0, total - used)
        stat["MemAvailable"] = min(total, stat["MemFree"] + stat.get("Inactive_file", 0))
    if getattr(use, "swap_bytes", None) is not None:
        stat["Swap"] = use.swap_bytes
    return stat


class Families:
    """The metric families of one scrape, made on first use (one per name)."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}

    def add(self, kind: str, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        fam = self.found.get(name)
        if fam is None:
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam = self.found[name] = make(PREFIX + name, doc, labels=list(labels))
        fam.add_metric(list(labels.values()), value)


def container_metrics(fams: Families, c: Any, member: str) -> None:
    """Add one running container's samples to ``fams``."""
    use = c.usage
    base = {"name": c.name, "member": member, "project": "default", "type": "container"}
    for cpu, modes in sorted((getattr(use, "cpu_modes", None) or {}).items()):
        for mode, ns in sorted(modes.items()):
            fams.add("counter", "cpu_seconds", "The total number of CPU time used in seconds.",
                     {**base, "cpu": str(cpu), "mode": mode}, ns / 1e9)
    for key, value in sorted(_memory(use).items()):
        fams.add("gauge", f"memory_{key}_bytes",
                 f"The amount of {MEMORY_HELP.get(key, key)} in bytes.", base, value)
    if use.oom_kills is not None:
        fams.add("counter", "memory_OOM_kills", "The number of out of memory kills.", base,
                 use.oom_kills)
    if use.pids is not None:
        fams.add("gauge", "procs_total", "The number of running processes.", base, use.pids)
    for device, counters in sorted((getattr(c, "network", None) or {}).items()):
        for way in ("receive", "transmit"):
            for what in NETWORK:
                value = counters.get(f"{way}_{what}")
                if value is not None:
                    unit = "bytes" if what == "bytes" else what
                    fams.add("counter", f"network_{way}_{unit}",
                             f"The amount of {unit} {way}d.", {**base, "device": device}, value)
    fs = getattr(c, "filesystem", None) or {}
    if fs:
        labels = {**base, "device": fs["device"], "mountpoint": fs["mountpoint"],
                  "fstype": fs["fstype"]}
        for key, doc in FILESYSTEM.items():
            fams.add("gauge", f"filesystem_{key}_bytes", f"The {doc} in bytes.", labels, fs[key])


def running_containers(client: Any) -> Iterator[tuple[Any, str]]:
    """(container, member) of every running container: every member's on an admin root with
    cluster members, else this host's (``member``: the host's name)."""
    here = os.uname().nodename
    # an admin root's ``containers`` spans its members (the unreachable ones left out)
    for c in client.containers.all(usage=True, counters=True):
        if c.status == "Running" and c.usage is not None:
            yield c, getattr(c, "location", None) or here


class ContainerCollector:
    """A prometheus_client collector: one API listing per scrape."""

    def __init__(self, containers: Callable[[], Iterable[tuple[Any, str]]]) -> None:
        self.containers = containers

    def collect(self) -> Iterator[Any]:
        fams = Families()
        for c, member in self.containers():
            container_metrics(fams, c, member)
        yield from fams.found.values()


def registry(client: Any) -> CollectorRegistry:
    """A registry holding only the containers' collector (no process metrics of this CLI)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ContainerCollector(lambda: running_containers(client)))
    return reg


def text(client: Any) -> str:
    """One scrape as OpenMetrics text (ends with ``# EOF``)."""
    return generate_latest(registry(client)).decode()


def listen_address(listen: str, allow_remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9472`` for IPv6) -> (host, port); a host that is not a loopback
    address is refused unless ``allow_remote``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValidationError(f"--listen {listen!r}: expected HOST:PORT",
                              hint="e.g. --listen 127.0.0.1:9472")
    host = host.strip("[]") or "127.0.0.1"
    try:
        found = {ai[4][0] for ai in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)}
    except socket.gaierror as e:
        raise ValidationError(f"--listen {listen!r}: cannot resolve {host}: {e}") from e
    loopback = all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)
    if not loopback and not allow_remote:
        raise ValidationError(
            f"--listen {listen}: {host} is not a loopback address; the metrics would be "
            "readable by anyone who can reach it",
            hint="add --allow-remote to serve them beyond this host")
    return host, int(port)


def serve(client: Any, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Answer scrapes on ``host:port`` until SIGINT or SIGTERM (the socket is closed on the
    way out); ``ready`` gets the address once it listens."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass  # one line per scrape would flood the log

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    servers: list[Any] = []

    def stop(_sig: int, _frame: Any) -> None:
        # not an exception raised wherever the main thread is (inside a scrape's collector
        # it left the server half-way): the loop is asked to end after the request it serves
        import threading

        if not servers:
            raise KeyboardInterrupt  # before it listens: nothing to finish
        for httpd in servers:
            threading.Thread(target=httpd.shutdown, daemon=True).start()

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with make_server(host, port, make_wsgi_app(registry(client)), server_class=Server,
                         handler_class=Quiet) as httpd:
            servers.append(httpd)
            ready(f"{host}:{httpd.server_port}")
            httpd.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
