"""IPv4 address management for managed networks: pure functions, no I/O.

The engine owns every address: it picks a network's subnet (``ipv4.address: auto``), gives
each container nic an address from it and records both in state; the driver only applies
them. Everything here takes the facts as arguments (the host's used networks come from
:meth:`NetworkDriver.used_networks`) so it is table-testable without a kernel.

Conventions: a network is described by its *gateway CIDR*, the bridge's address with the
subnet's prefix (``10.12.34.1/24``, LXD's ``ipv4.address``). DHCP ranges are inclusive
``(first, last)`` address pairs (LXD's ``ipv4.dhcp.ranges`` ``"A-B,C-D"``).

Layer: drivers (network).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

# the pure parsers live below the layers (the model validates network config with them);
# re-exported here because the driver and its callers use them as ipam.parse_gateway etc.
from sysmgr._util.ipv4 import (  # noqa: F401
    MAX_PREFIXLEN, MIN_PREFIXLEN, Range, parse_gateway, parse_ranges)
from sysmgr.errors import Conflict, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import random

# hashlib and random (~3 ms to import) serve making networks and nics, not starting them:
# they are imported where a MAC or a subnet is picked

#: Where ``auto`` subnets come from (LXD's habit: a random 10.x.y.0/24).
AUTO_POOL = "10.0.0.0/8"
AUTO_PREFIXLEN = 24
LXD_OUI = "00:16:3e"                    # generated container MACs look like LXD's


@dataclass(frozen=True)
class AddressProblem:
    """Why one container's static address cannot be used."""

    container: str
    address: str
    reason: str

    def __str__(self) -> str:
        return f"{self.container}: {self.address}: {self.reason}"


# -- host networks --------------------------------------------------------------------------

def _networks(used: Iterable[str | IPv4Network | IPv4Interface]) -> list[IPv4Network]:
    nets = []
    for u in used:
        n: IPv4Network | ipaddress.IPv6Network
        if isinstance(u, IPv4Interface):
            n = u.network
        else:
            n = ipaddress.ip_network(str(u), strict=False)
        # a default route overlaps everything and says nothing about addresses in use
        if isinstance(n, IPv4Network) and n.prefixlen > 0:
            nets.append(n)
    return nets


# -- subnets ----------------------------------------------------------------------------------

def overlapping(cidr: str, used: Iterable[str | IPv4Network | IPv4Interface]) -> list[str]:
    """The networks in ``used`` that overlap the subnet of ``cidr`` (sorted, unique)."""
    net = ipaddress.ip_network(str(cidr).strip(), strict=False)
    return sorted({str(u) for u in _networks(used) if u.overlaps(net)},
                  key=lambda s: ipaddress.ip_network(s))


def pick_subnet(used: Iterable[str | IPv4Network | IPv4Interface], *,
                rng: random.Random | None = None, pool: str = AUTO_POOL,
                prefixlen: int = AUTO_PREFIXLEN, attempts: int = 64) -> str:
    """Pick a free subnet for ``ipv4.address: auto`` and return its gateway CIDR (``.1``).

    Like LXD, a random ``prefixlen`` subnet of ``pool`` is tried first (so two hosts or two
    roots rarely pick the same one); after ``attempts`` misses the pool is scanned in order.

    Args:
        used: networks already on the host (addresses, routes) and of other managed
            networks; default routes are ignored.
        rng: source of randomness (tests pass a seeded ``random.Random``).

    Raises:
        Conflict: every candidate overlaps something in ``used``.
    """
    import random

    space = IPv4Network(pool)
    if prefixlen < space.prefixlen or prefixlen > MAX_PREFIXLEN:
        raise ValidationError(f"cannot pick a /{prefixlen} inside {pool}")
    taken = _merged(_networks(used))
    ends = [e for _, e in taken]
    count = 1 << (prefixlen - space.prefixlen)
    step = 1 << (32 - prefixlen)
    base = int(space.network_address)
    rng = rng or random.SystemRandom()

    def blocker(i: int) -> int | None:
        """End of a used interval overlapping candidate ``i``, None when it is free."""
        start, end = base + i * step, base + (i + 1) * step - 1
        k = bisect.bisect_left(ends, start)  # first interval ending at or after start
        return taken[k][1] if k < len(taken) and taken[k][0] <= end else None

    def gateway(i: int) -> str:
        return f"{IPv4Address(base + i * step + 1)}/{prefixlen}"

    for _ in range(min(attempts, count)):
        i = rng.randrange(count)
        if blocker(i) is None:
            return gateway(i)
    i = 0
    while i < count:  # in order, jumping over each used interval
        end = blocker(i)
        if end is None:
            return gateway(i)
        i = (end + 1 - base + step - 1) // step
    raise Conflict(f"no free /{prefixlen} subnet left in {pool}",
                   hint="set the network's ipv4.address explicitly")


def _merged(nets: Iterable[IPv4Network]) -> list[tuple[int, int]]:
    """Sorted, merged ``(first, last)`` integer intervals covering ``nets``."""
    out: list[tuple[int, int]] = []
    for n in sorted(nets, key=lambda n: int(n.network_address)):
        first, last = int(n.network_address), int(n.broadcast_address)
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


# -- addresses --------------------------------------------------------------------------------

def _in_ranges(addr: IPv4Address, ranges: Sequence[tuple[IPv4Address, IPv4Address]]) -> bool:
    return any(a <= addr <= b for a, b in ranges)


def allocate(gateway_cidr: str, taken: Iterable[str], *, dhcp_ranges: Sequence[Range] = (),
             reserved: Iterable[str] = ()) -> str:
    """The lowest free host address of the network for a new container nic.

    Skips the network and broadcast addresses, the gateway, the dynamic DHCP ranges (so a
    dynamic client never competes with a static one), ``taken`` (other containers' addresses)
    and ``reserved`` (addresses the caller keeps out, e.g. other hosts on the bridge).

    Raises:
        Conflict: the subnet is full.
    """
    iface = parse_gateway(gateway_cidr)
    net = iface.network
    ranges = [(IPv4Address(a), IPv4Address(b)) for a, b in dhcp_ranges]
    skip = {iface.ip}
    for a in (*taken, *reserved):
        try:
            skip.add(IPv4Address(str(a).split("/")[0]))
        except ValueError:
            continue
    for addr in net.hosts():
        if addr not in skip and not _in_ranges(addr, ranges):
            return str(addr)
    raise Conflict(f"no free IPv4 address left in {net}",
                   hint="use a larger subnet or smaller DHCP ranges")


def address_problems(gateway_cidr: str,
                     assignments: Mapping[str, str | None]) -> list[AddressProblem]:
    """Check static addresses (container -> address) against the network and each other.

    Reasons: not an IPv4 address; outside the subnet; the network, broadcast or gateway
    address; used by another container. An address inside a dynamic DHCP range is accepted
    (the reservation keeps dnsmasq from handing it to anyone else). ``None`` entries (no
    static address) are skipped. Containers are checked in sorted order so the second user
    of a duplicate address is the one reported, deterministically.
    """
    iface = parse_gateway(gateway_cidr)
    net = iface.network
    problems: list[AddressProblem] = []
    owner: dict[IPv4Address, str] = {}
    for container in sorted(assignments):
        text = assignments[container]
        if text is None:
            continue
        try:
            addr = IPv4Address(str(text).strip())
        except ValueError:
            problems.append(AddressProblem(container, str(text), "not an IPv4 address"))
            continue
        if addr not in net:
            reason = f"outside the network's subnet {net}"
        elif addr == net.network_address:
            reason = f"the network address of {net}"
        elif addr == net.broadcast_address:
            reason = f"the broadcast address of {net}"
        elif addr == iface.ip:
            reason = "the gateway's address"
        elif addr in owner:
            reason = f"already used by container {owner[addr]}"
        else:
            owner[addr] = container
            continue
        problems.append(AddressProblem(container, str(addr), reason))
    return problems


# -- MAC addresses ----------------------------------------------------------------------------

def generate_mac(rng: random.Random | None = None) -> str:
    """A new container MAC, ``00:16:3e:xx:xx:xx`` like LXD's (record it: it must be stable)."""
    import random

    rng = rng or random.SystemRandom()
    return LXD_OUI + "".join(f":{rng.randrange(256):02x}" for _ in range(3))


def derived_mac(seed: str) -> str:
    """A stable, locally administered unicast MAC derived from ``seed``.

    Used for bridges: a Linux bridge without an explicit address takes the lowest MAC of its
    ports, so it would change whenever containers come and go (stale ARP caches in every
    container); an explicit one stays.
    """
    import hashlib

    b = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    b[0] = (b[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{x:02x}" for x in b)
