"""Plain value types shared across layers (no behaviour, no I/O).

They sit below every layer so that the model can produce them, the engine can pass them on and
the drivers can consume them without any of those importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Resource limits in kernel terms (already parsed from LXD keys by the model)."""

    cpuset: str | None = None            # "0-1", "0,2"; None = all
    cpu_quota_us: int | None = None      # hard limit: quota per period
    cpu_period_us: int = 100_000
    cpu_shares: int | None = None        # soft limit (v1 cpu.shares; v2 cpu.weight derived)
    memory_bytes: int | None = None
    memory_swap: bool = True             # False: memory+swap limited to memory_bytes
    pids_max: int | None = None


@dataclass(frozen=True)
class IdMapEntry:
    """One extra mapping (LXD's ``raw.idmap``): ``size`` host ids from ``host_id`` appear as
    ``ns_id``.. inside; ``kind`` is ``uid``, ``gid`` or ``both``."""

    kind: str
    host_id: int
    ns_id: int
    size: int = 1


@dataclass(frozen=True)
class IdMap:
    """A container's user-namespace mapping: container ids 0..size-1 are host ids
    host_start.., except where an ``extra`` entry maps container ids to other host ids."""

    host_start: int = 100_000
    size: int = 65_536
    extra: tuple[IdMapEntry, ...] = ()

    def mappings(self, kind: str) -> list[tuple[int, int, int]]:
        """``(container id, host id, count)`` lines for ``uid`` or ``gid``, sorted, as
        ``/proc/PID/uid_map`` takes them: the base range with holes where extras sit."""
        extras = sorted((e.ns_id, e.host_id, e.size) for e in self.extra if e.kind in (kind, "both"))
        out: list[tuple[int, int, int]] = []
        start = 0
        for ns, host, n in extras + [(self.size, 0, 0)]:
            if ns > start:  # the base range up to this extra
                end = min(ns, self.size)
                if end > start:
                    out.append((start, self.host_start + start, end - start))
            if n:
                out.append((ns, host, n))
            start = max(start, ns + n)
        return sorted(out)

    def host_id(self, kind: str, ns_id: int) -> int | None:
        """The host id container id ``ns_id`` maps to (None: unmapped)."""
        for ns, host, n in self.mappings(kind):
            if ns <= ns_id < ns + n:
                return host + ns_id - ns
        return None


@dataclass(frozen=True)
class HostFacts:
    """What the model needs to know of the host to resolve relative values (``50%`` of
    memory, a CPU count clamped to the host's). The engine reads them; the model never does."""

    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class NetworkLease:
    """A DHCP reservation or lease on a managed network."""

    hostname: str
    hwaddr: str
    address: str | None
    type: str                 # "static" (sysmgr's reservation) | "dynamic" (an active lease)


@dataclass(frozen=True)
class NetworkState:
    """What the host has for a managed network right now (read from the kernel and dnsmasq)."""

    status: str               # "Created" | "Errored"
    bridge: str
    up: bool
    mtu: int | None
    addresses: tuple[str, ...]
    ports: tuple[str, ...]    # host ends of container nics plugged into the bridge
    dnsmasq_pid: int | None
    nft_table: bool
    problems: tuple[str, ...]
    leases: tuple[NetworkLease, ...]


@dataclass(frozen=True)
class HostSecurity:
    """What confines containers on this host, as ``sysmgr info`` shows it."""

    apparmor: str                    # "not available on this host" | "enabled: each container ..."


@dataclass(frozen=True)
class HostCgroups:
    """The host's cgroup layout as ``sysmgr info`` and ``sysmgr init`` show it."""

    layout: str                      # v1 | hybrid | unified
    systemd: bool = False            # unified, and systemd owns the root of the tree
    subtree: str | None = None       # where this root's containers' cgroups live; None before init
    delegated: bool = False          # subtree is a systemd scope with Delegate=yes


@dataclass(frozen=True)
class MemberSpec:
    """How the admin host reaches one cluster member (a ``kind: Member`` manifest, or what
    ``sysmgr cluster add`` recorded). ``url`` is ``ssh://user@host[:port]`` for a member
    reached over SSH, or ``local:`` for the admin host's own root (``root``)."""

    name: str
    url: str
    root: str = "/var/lib/sysmgr"
    key: str | None = None            # private key file (default: the user's agent/keys)
    sysmgr: str = "sysmgr"            # the command to run there
    groups: tuple[str, ...] = ()
    config: tuple[tuple[str, str], ...] = ()
    host_key: str | None = None       # "SHA256:..." recorded when the member was added
    evacuated: bool = False

    @property
    def is_local(self) -> bool:
        return self.url.startswith("local:")


@dataclass(frozen=True)
class Outcome:
    """What one container's share of a call on several containers came to (``start``,
    ``stop`` or ``delete`` of many): done, or the error that kept it from being done, as
    data (it travels from a cluster member like any record)."""

    name: str
    error: str | None = None          # the error's message; None: done
    hint: str | None = None
    exit_code: int = 0                # the error's exit code (1 failure, 2 bad input)
    warnings: tuple[str, ...] = ()    # what a start had to leave out
    graceful: bool | None = None      # a stop: init shut down by itself (False: killed)

    @property
    def ok(self) -> bool:
        return self.error is None
