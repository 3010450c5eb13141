"""Pure IPv4 parsing and checking: gateway CIDRs and DHCP ranges (stdlib only, no I/O).

Below every layer, so that the model can validate network config and the network driver can
manage addresses with the same rules, without the model importing a driver.

Conventions: a network is described by its *gateway CIDR*, the bridge's address with the
subnet's prefix (``10.12.34.1/24``, LXD's ``ipv4.address``). DHCP ranges are inclusive
``(first, last)`` address pairs (LXD's ``ipv4.dhcp.ranges`` ``"A-B,C-D"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface

from sysmgr.errors import ValidationError

MIN_PREFIXLEN, MAX_PREFIXLEN = 8, 30    # /31 and /32 leave no room for containers

Range = tuple[str, str]


def parse_gateway(cidr: str) -> IPv4Interface:
    """Parse a gateway CIDR such as ``10.12.34.1/24``.

    Raises:
        ValidationError: not ``ADDRESS/PREFIX``, prefix outside /8../30, or the address is
            the subnet's network or broadcast address.
    """
    text = str(cidr).strip()
    if "/" not in text:
        raise ValidationError(f"invalid IPv4 gateway {cidr!r}: expected ADDRESS/PREFIX "
                              "such as 10.12.34.1/24")
    try:
        iface = IPv4Interface(text)
    except ValueError:
        raise ValidationError(f"invalid IPv4 gateway {cidr!r}: expected ADDRESS/PREFIX "
                              "such as 10.12.34.1/24") from None
    net = iface.network
    if not MIN_PREFIXLEN <= net.prefixlen <= MAX_PREFIXLEN:
        raise ValidationError(f"invalid IPv4 gateway {cidr!r}: the prefix must be between "
                              f"/{MIN_PREFIXLEN} and /{MAX_PREFIXLEN}")
    if iface.ip == net.network_address:
        raise ValidationError(f"invalid IPv4 gateway {cidr!r}: that is the network address; "
                              f"use a host address such as {net.network_address + 1}/{net.prefixlen}")
    if iface.ip == net.broadcast_address:
        raise ValidationError(f"invalid IPv4 gateway {cidr!r}: that is the broadcast address")
    return iface


def parse_ranges(text: str | Sequence[Range], gateway_cidr: str) -> tuple[Range, ...]:
    """Parse and check DHCP ranges: ``"10.0.3.100-10.0.3.199,10.0.3.220-10.0.3.229"`` or
    pairs. Each must lie in the subnet (not its network/broadcast address), be ordered, not
    contain the gateway and not overlap another range.

    Raises:
        ValidationError: naming the offending range.
    """
    iface = parse_gateway(gateway_cidr)
    net = iface.network
    if isinstance(text, str):
        pairs: list[tuple[str, str]] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            head, sep, tail = part.partition("-")
            if not sep:
                raise ValidationError(f"invalid DHCP range {part!r}: expected FIRST-LAST")
            pairs.append((head.strip(), tail.strip()))
    else:
        pairs = [(str(a), str(b)) for a, b in text]
    out: list[tuple[IPv4Address, IPv4Address]] = []
    for first_text, last_text in pairs:
        what = f"invalid DHCP range {first_text}-{last_text}"
        try:
            first, last = IPv4Address(first_text), IPv4Address(last_text)
        except ValueError:
            raise ValidationError(f"{what}: not IPv4 addresses") from None
        if first > last:
            raise ValidationError(f"{what}: the first address is after the last")
        for a in (first, last):
            if a not in net or a in (net.network_address, net.broadcast_address):
                raise ValidationError(f"{what}: {a} is not a host address of {net}")
        if first <= iface.ip <= last:
            raise ValidationError(f"{what}: it contains the gateway {iface.ip}")
        for f2, l2 in out:
            if first <= l2 and f2 <= last:
                raise ValidationError(f"{what}: it overlaps {f2}-{l2}")
        out.append((first, last))
    return tuple((str(a), str(b)) for a, b in out)
