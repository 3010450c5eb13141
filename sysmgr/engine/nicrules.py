"""Container nics, the pure rules: which devices are nics, the facts of a network a nic needs
(:class:`NetFacts`), per-nic checks (:func:`nic_problems`: the network exists, a static
address fits its subnet and is not the gateway's), the addresses containers claim and which
claims lose (:func:`claims`, :func:`conflicts`).

Split from :mod:`sysmgr.engine.netplan` (the planner's side) so that a start with a nic loads
these rules without the plan's actions, drift and observation modules. No I/O: the side
effects are :mod:`sysmgr.engine.networks` (networks on the host) and
:mod:`sysmgr.engine.nics` (container nics).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sysmgr.drivers.network import ipam
from sysmgr.model import keys as mkeys
from sysmgr.model import network_keys as nkeys
from sysmgr.model.suggest import did_you_mean

DEFAULT_NETWORK = "sysmgrbr0"          # the network `sysmgr init --auto` creates (LXD: lxdbr0)
DEFAULT_NIC = "eth0"
NICS = "nics"                           # key of the nic records in ContainerRecord.volatile
RESOLV_MARKER = "# written by sysmgr"
RESTART_KEYS = ("ipv4.address", "bridge.mtu")   # what a running container's nic has baked in

Devices = Mapping[str, Mapping[str, str]]
Problem = tuple[str, str]


# -- facts and checks ----------------------------------------------------------------------

@dataclass(frozen=True)
class NetFacts:
    """What validating a nic needs to know about its network."""

    cidr: str | None           # gateway CIDR; None: ``auto`` and not created yet
    dhcp: bool = True


def facts(ntype: str, config: Mapping[str, str]) -> NetFacts:
    norm = nkeys.normalize_network_config(ntype, config)
    address = norm.get("ipv4.address", nkeys.AUTO)
    return NetFacts(None if address == nkeys.AUTO else address, norm.get("ipv4.dhcp") == "true")


def nic_devices(devices: Devices) -> dict[str, Mapping[str, str]]:
    return {n: d for n, d in sorted(devices.items()) if d.get("type") == "nic"}


def is_dhcp(dev: Mapping[str, str]) -> bool:
    """Whether the guest's DHCP client configures this nic (``ipv4.dhcp: true``)."""
    try:
        return mkeys.parse_bool(dev.get("ipv4.dhcp") or "false")
    except ValueError:
        return False  # reported by the key table


def normalize_address(text: str) -> str:
    return str(ipaddress.IPv4Address(str(text).strip()))


def nic_problems(devices: Devices, nets: Mapping[str, NetFacts], *,
                 where: str = "devices", broken: frozenset[str] = frozenset()) -> list[Problem]:
    """Per-nic checks against the networks: the network exists, a static address fits its
    subnet (not the network, broadcast or gateway address), DHCP is served when asked for.

    Returns:
        ``(key path, reason)`` per problem.
    """
    out: list[Problem] = []
    for name, dev in nic_devices(devices).items():
        net = dev.get("network")
        if not net:
            continue
        f = nets.get(net)
        if f is None:
            if net not in broken:  # (a network document that did not load says why itself)
                out.append((f"{where}.{name}.network",
                            f"network {net!r} not found" + did_you_mean(net, nets)))
            continue
        if is_dhcp(dev) and not f.dhcp:
            out.append((f"{where}.{name}.ipv4.dhcp",
                        f"network {net!r} does not serve DHCP (its ipv4.dhcp is false)"))
        address = dev.get("ipv4.address")
        try:
            address = normalize_address(address) if address else None
        except ValueError:
            address = None  # not an address at all: the key table reports it
        if address and f.cidr is None:
            out.append((f"{where}.{name}.ipv4.address",
                        f"network {net!r} has ipv4.address auto and does not exist yet, so its "
                        "subnet is unknown: give the network an explicit ipv4.address"))
        elif address and f.cidr:
            for p in ipam.address_problems(f.cidr, {"nic": address}):
                out.append((f"{where}.{name}.ipv4.address",
                             f"{p.address} cannot be used on network {net!r}: {p.reason}"))
    return out


@dataclass(frozen=True)
class Claim:
    """One container nic's address on a managed network: static, or recorded (allocated)."""

    container: str
    device: str
    network: str
    address: str
    static: bool


def claims(container: str, devices: Devices, nic_records: Mapping[str, Any]) -> list[Claim]:
    """The addresses a container holds, from its expanded devices and its nic records."""
    out = []
    for name, dev in nic_devices(devices).items():
        net = dev.get("network")
        if not net:
            continue
        static = dev.get("ipv4.address")
        if static:
            with contextlib.suppress(ValueError):
                out.append(Claim(container, name, net, normalize_address(static), True))
            continue
        rec = nic_records.get(name) or {}
        if rec.get("network") == net and rec.get("ipv4"):
            out.append(Claim(container, name, net, rec["ipv4"], False))
    return out


def conflicts(all_claims: Iterable[Claim], held: Iterable[Claim] = ()) -> list[tuple[Claim, str]]:
    """Static addresses that are already somebody's on the same network.

    What the host already has wins: recorded (allocated) addresses first, then the claims in
    ``held`` (the current ones of existing containers), then the rest in (container, device)
    order. Returns ``(losing claim, reason)`` for every static claim that loses; duplicate
    allocations are :meth:`NetworkEngine.sync`'s to fix, not the user's.
    """
    keep = set(held)
    owner: dict[tuple[str, str], Claim] = {}
    out = []
    for c in sorted(all_claims, key=lambda c: (c.static, c not in keep, c.container, c.device)):
        key = (c.network, c.address)
        first = owner.get(key)
        if first is None:
            owner[key] = c
        elif c.static:
            who = (f"device {first.device} of the same container" if first.container == c.container
                   else f"container {first.container}")
            out.append((c, f"{c.address} is already used on network {c.network!r} by {who}"))
    return out


def dns_label(text: str) -> str:
    """A DNS label from ``container-device`` (a second nic on the same network)."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:63].rstrip("-")
    return label or "nic"
