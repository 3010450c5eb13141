"""Config-key rule tables of managed networks (``kind: Network``), per network type.

Model layer, pure. Same shape as :mod:`sysmgr.model.keys` (a :class:`~sysmgr.model.keyrules.Key`
per key: validator, normaliser, doc, default), so ``network create/set``, manifests, diffs and
``sysmgr keys --network`` all read one table. Unknown keys are rejected except ``user.*``.

``ipv4.address`` is a gateway CIDR (``10.12.34.1/24``) or ``auto``; the engine resolves
``auto`` to a free private /24 when the network is created and records the result, and a
desired ``auto`` then matches whatever was recorded (no perpetual diff). Cross-key rules
(:func:`validate_network_config`): DHCP ranges must lie in an explicit subnet.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Mapping

from sysmgr._util import ipv4
from sysmgr.errors import ValidationError
from sysmgr.model.keyrules import (
    BOOL, MTU, NORM_BOOL, Key, Problem, accept, check, key_table, lookup_key, norm, normalize_table,
    same, validate_table)
from sysmgr.model.suggest import did_you_mean

AUTO = "auto"
DEFAULT_TYPE = "bridge"
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                        r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _parse_address(value: str) -> None:
    if value.strip().lower() == AUTO:
        return
    try:
        ipv4.parse_gateway(value)
    except ValidationError as e:
        raise ValueError(e.message) from None


def _norm_address(value: str) -> str:
    v = value.strip()
    return AUTO if v.lower() == AUTO else str(ipv4.parse_gateway(v))


def parse_ranges_text(value: str) -> tuple[tuple[str, str], ...]:
    """``"A-B,C-D"`` as address pairs (syntax only; :func:`validate_network_config` checks
    them against the subnet)."""
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        first, sep, last = part.partition("-")
        if not sep:
            raise ValueError(f"invalid DHCP range {part!r}: expected FIRST-LAST such as "
                             "10.0.3.100-10.0.3.199")
        try:
            a, b = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
        except ValueError:
            raise ValueError(f"invalid DHCP range {part!r}: not IPv4 addresses") from None
        if a > b:
            raise ValueError(f"invalid DHCP range {part!r}: the first address is after the last")
        out.append((str(a), str(b)))
    if not out:
        raise ValueError(f"invalid DHCP ranges {value!r}: expected FIRST-LAST[,FIRST-LAST...]")
    return tuple(out)


def _norm_ranges(value: str) -> str:
    return ",".join(f"{a}-{b}" for a, b in parse_ranges_text(value))


def _domain(value: str) -> None:
    if not _DOMAIN_RE.match(value.strip()):
        raise ValueError(f"invalid DNS domain {value!r}: lowercase labels of letters, digits and "
                         "hyphens separated by dots, such as sysmgr or lab.example")


_BRIDGE_KEYS: dict[str, Key] = key_table(
    Key("ipv4.address", check(_parse_address), norm(_norm_address), live=True, default=AUTO,
        doc="Gateway address of the bridge with the subnet's prefix (10.12.34.1/24), or auto: "
            "a free private /24 no host interface uses, picked once and recorded."),
    Key("ipv4.nat", BOOL, NORM_BOOL, live=True, default="true",
        doc="Masquerade traffic leaving the subnet (nftables table of sysmgr's own)."),
    Key("ipv4.dhcp", BOOL, NORM_BOOL, live=True, default="true",
        doc="Serve DHCP on the bridge (static leases for every container nic)."),
    Key("ipv4.dhcp.ranges", check(parse_ranges_text), norm(_norm_ranges), live=True,
        doc="Dynamic DHCP pools for clients sysmgr does not know, FIRST-LAST[,FIRST-LAST]; "
            "default: none (every address comes from sysmgr's allocation)."),
    Key("dns.domain", check(_domain), norm(lambda v: v.strip()), live=True, default="sysmgr",
        doc="Containers resolve as NAME.<domain> through the bridge's DNS server."),
    Key("dns.upstream", BOOL, NORM_BOOL, live=True, default="false",
        doc="Forward names outside dns.domain to the host's resolvers; false: no DNS query "
            "leaves the host."),
    Key("bridge.mtu", MTU[0], MTU[1], live=True,
        doc="MTU of the bridge and of every nic on it (576..9000); default: 1500."),
    Key("user.*", accept, same, live=True,
        doc="Free-form user metadata; sysmgr never interprets it."),
)

#: network type -> key table. Only managed bridges so far (LXD's default type).
NETWORK_TYPES: dict[str, dict[str, Key]] = {"bridge": _BRIDGE_KEYS}


def type_problem(ntype: str) -> str | None:
    """Why ``ntype`` is not a network type, or None."""
    if ntype in NETWORK_TYPES:
        return None
    hint = did_you_mean(ntype, NETWORK_TYPES)
    return f"unknown network type {ntype!r}{hint}; known: {', '.join(sorted(NETWORK_TYPES))}"


def validate_network_config(ntype: str, config: Mapping[str, object], *,
                            where: str = "config") -> list[Problem]:
    """Check a network's config against its type's table, then the cross-key rules.

    Returns:
        One ``(key path, reason)`` per problem; empty when valid (an unknown type gives no
        key problems: :func:`type_problem` reports it).
    """
    table = NETWORK_TYPES.get(ntype)
    if table is None:
        return []
    problems = validate_table(table, config, where, f"{ntype} network config")
    bad = {p for p, _ in problems}
    address = str(config.get("ipv4.address", "") or "").strip()
    ranges = str(config.get("ipv4.dhcp.ranges", "") or "").strip()
    rpath = f"{where}.ipv4.dhcp.ranges"
    if ranges and rpath not in bad and f"{where}.ipv4.address" not in bad:
        if not address or address.lower() == AUTO:
            problems.append((rpath, "ipv4.dhcp.ranges needs an explicit ipv4.address "
                                    "(the subnet of auto is only known once created)"))
        else:
            try:
                ipv4.parse_ranges(ranges, address)
            except ValidationError as e:
                problems.append((rpath, e.message))
    return problems


def normalize_network_config(ntype: str, config: Mapping[str, object], *,
                             defaults: bool = True) -> dict[str, str]:
    """Canonical form of a network config for diffs: values normalised, and with
    ``defaults`` every unset key with a default filled in (``ipv4.nat`` absent == ``true``)."""
    table = NETWORK_TYPES.get(ntype, {})
    out = normalize_table(table, config, drop_managed=False)
    out = {k: v for k, v in out.items() if v != ""}
    if defaults:
        for key in table.values():
            if not key.is_family and key.default is not None and key.name not in out:
                out[key.name] = key.normalize(key.default) if key.default else key.default
    return out


def network_key(ntype: str, key: str) -> Key | None:
    """The rule of ``key`` for networks of type ``ntype`` (or None)."""
    return lookup_key(NETWORK_TYPES.get(ntype, {}), key)


def describe_network_keys() -> list[tuple[str, str, str]]:
    """``(type, key, doc)`` for every network key, sorted, for docs and --help."""
    return sorted((t, k.name, k.doc) for t, tab in NETWORK_TYPES.items() for k in tab.values())
