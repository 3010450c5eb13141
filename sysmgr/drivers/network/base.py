"""The network driver interface, its data types, and the names of the host objects it makes.

A network driver manages LXD-style *managed networks* (a host bridge with a gateway address,
DHCP/DNS and optional NAT) and plugs container ``nic`` devices into them. Drivers declare what
they can do with :class:`NetworkInfo` flags; callers branch on the flags, never on the name.

Everything a driver needs comes in as data (:class:`NetworkSpec`, :class:`NicSpec`,
:class:`Lease`): the engine decides names and addresses (pure helpers below and in
:mod:`.ipam`) and records them in state; the driver makes the host match and reports what it
finds (:class:`NetworkStatus`).

**Names of host objects.** Interface names are limited to 15 characters (IFNAMSIZ - 1), too
short for the layout prefix ``sysmgr-<6hex>``, so interfaces use a compact scheme that still
carries the root's 6-hex id (two roots never collide, and the conftest leak checker's ``sm``
rule catches them)::

    bridge of a managed network     smb<rootid><index>     smb1a2b3c0, smb1a2b3c12
    host end of a container's veth  smv<rootid><index>     smv1a2b3c0 ... smv1a2b3c999999
    nftables table of a network     sysmgr_<bridge>        sysmgr_smb1a2b3c0
    interface alias (IFLA_IFALIAS)  sysmgr:<rootid>:network:<name>
                                    sysmgr:<rootid>:nic:<container>/<device>

``index`` is a small decimal number (0..999999) chosen by the caller, unique per root among
live objects of that kind (:func:`next_index` picks the smallest free one) and recorded in
state with the object, so the name is stable for the object's life and derivable from the
record. Network names (up to 63 characters) cannot fit, hence the index. The alias is the
ownership proof: a driver deletes or reuses an interface only when its name has this root's
prefix **and** its alias says it is the recorded object, so it never touches interfaces that
another root, LXD, Docker or the administrator made.

Layer: drivers (network). Importing this module imports no third-party library.
"""

from __future__ import annotations

import abc
import contextlib
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from sysmgr.errors import ValidationError

IFNAMSIZ_MAX = 15                  # usable characters of a Linux interface name
BRIDGE_PREFIX = "smb"
VETH_PREFIX = "smv"
MAX_INDEX = 999_999                # "smb" + 6 hex + 6 digits = 15 characters
DEFAULT_DNS_DOMAIN = "sysmgr"
_ROOT_ID_RE = re.compile(r"^[0-9a-f]{6}$")


# -- names (pure) -----------------------------------------------------------------------------

def _check_root_id(root_id: str) -> str:
    if not isinstance(root_id, str) or not _ROOT_ID_RE.match(root_id):
        raise ValidationError(f"invalid root id {root_id!r}: expected 6 lowercase hex digits")
    return root_id


def _ifname(prefix: str, root_id: str, index: int) -> str:
    if not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise ValidationError(f"interface index {index!r} out of range 0..{MAX_INDEX}")
    name = f"{prefix}{_check_root_id(root_id)}{index}"
    assert len(name) <= IFNAMSIZ_MAX, name
    return name


def bridge_ifname(root_id: str, index: int) -> str:
    """Host bridge name of a managed network: ``smb<rootid><index>`` (at most 15 chars)."""
    return _ifname(BRIDGE_PREFIX, root_id, index)


def veth_ifname(root_id: str, index: int) -> str:
    """Host-end name of a container nic's veth pair: ``smv<rootid><index>``."""
    return _ifname(VETH_PREFIX, root_id, index)


def parse_index(ifname: str, prefix: str, root_id: str) -> int | None:
    """The index in a name made by :func:`bridge_ifname`/:func:`veth_ifname`, else None."""
    head = prefix + root_id
    tail = ifname[len(head):] if ifname.startswith(head) else ""
    if tail.isdigit() and (tail == "0" or not tail.startswith("0")):
        return int(tail)
    return None


def next_index(used: Iterable[int]) -> int:
    """The smallest index not in ``used`` (indices are reused once their object is gone)."""
    taken = set(used)
    for i in range(MAX_INDEX + 1):
        if i not in taken:
            return i
    raise ValidationError(f"no free interface index left (all {MAX_INDEX + 1} are in use)")


def nft_table_name(bridge: str) -> str:
    """nftables table (family ``ip``) holding one network's rules: ``sysmgr_<bridge>``.

    One table per network (not per root) so a network's rules are replaced atomically
    (delete + add of its table in one ``nft -f`` transaction) without touching the others.
    """
    return f"sysmgr_{bridge}"


# a container's traffic as LXD names it, from its veth's host end: what the host end
# transmits the container receives
SEEN_FROM_INSIDE = {"receive_bytes": "tx_bytes", "receive_packets": "tx_packets",
                    "receive_errs": "tx_errors", "receive_drop": "tx_dropped",
                    "transmit_bytes": "rx_bytes", "transmit_packets": "rx_packets",
                    "transmit_errs": "rx_errors", "transmit_drop": "rx_dropped"}


def inside_counters(host_end: Mapping[str, int]) -> dict[str, int]:
    """A container's nic counters (LXD's names) from its veth's host end's."""
    return {name: host_end[stat] for name, stat in SEEN_FROM_INSIDE.items() if stat in host_end}


def network_alias(root_id: str, network: str) -> str:
    """IFLA_IFALIAS marker written on a network's bridge (the ownership proof)."""
    return f"sysmgr:{root_id}:network:{network}"


def nic_alias(root_id: str, container: str, device: str) -> str:
    """IFLA_IFALIAS marker written on the host end of a container nic."""
    return f"sysmgr:{root_id}:nic:{container}/{device}"


# -- data -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkInfo:
    """Capability flags: branch on these, never on the driver's name."""

    dhcp: bool = False              # serves DHCP leases (static reservations from set_leases)
    dns: bool = False               # answers NAME.<dns_domain> on the gateway address
    nat: bool = False               # masquerades the subnet when NetworkSpec.nat is true
    static_in_netns: bool = False   # attach() configures address + default route before init
    real_kernel: bool = False       # touches the host (False: the in-memory fake)


@dataclass(frozen=True)
class NetworkSpec:
    """One managed network as the host should have it.

    Attributes:
        name: network name from the manifest (``Network`` document), e.g. ``sysmgrbr0``.
        ifname: host bridge name, from :func:`bridge_ifname` and recorded in state.
        ipv4_cidr: the gateway (bridge) address with the subnet's prefix, ``10.12.34.1/24``.
        nat: masquerade traffic from the subnet leaving it (``ipv4.nat``).
        dhcp: serve DHCP on the bridge (``ipv4.dhcp``); DNS is served either way.
        dhcp_ranges: dynamic pools ``((first, last), ...)`` for clients without a
            reservation; empty means reservations only (sysmgr's IPAM owns every address).
        dns_domain: containers resolve as ``NAME.<dns_domain>`` (``dns.domain``).
        mtu: bridge MTU (``bridge.mtu``), also given to nics and announced by DHCP.
        dns_upstream: forward names outside ``dns_domain`` to the host's resolvers
            (``/etc/resolv.conf``); off, no DNS query leaves the host (tests).
    """

    name: str
    ifname: str
    ipv4_cidr: str
    nat: bool = True
    dhcp: bool = True
    dhcp_ranges: tuple[tuple[str, str], ...] = ()
    dns_domain: str = DEFAULT_DNS_DOMAIN
    mtu: int | None = None
    dns_upstream: bool = False

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.ipv4_cidr)

    @property
    def gateway(self) -> str:
        return str(self.interface.ip)

    @property
    def prefixlen(self) -> int:
        return self.interface.network.prefixlen

    @property
    def subnet(self) -> str:
        return str(self.interface.network)


@dataclass(frozen=True)
class NicSpec:
    """One container nic: a veth pair whose host end sits on ``bridge``.

    Attributes:
        container: container name (goes into the host end's alias).
        device: device name under ``devices:`` (e.g. ``eth0``).
        host_ifname: host end, from :func:`veth_ifname` and recorded in state
            (``volatile.<device>.host_name`` in LXD terms).
        container_ifname: the name inside the container (``name:``, default the device name).
        mac: the container end's MAC (stable: recorded in state).
        bridge: host bridge to plug into (a managed network's ``ifname``, or a ``parent``).
        ipv4: static address configured inside the netns before init runs; None: the
            container's own DHCP client configures it.
        prefixlen: prefix of ``ipv4``'s subnet.
        gateway: default route set inside the netns with ``ipv4``; None: no route.
        mtu: MTU of both ends; None: the kernel default (1500).
    """

    container: str
    device: str
    host_ifname: str
    container_ifname: str
    mac: str
    bridge: str
    ipv4: str | None = None
    prefixlen: int | None = None
    gateway: str | None = None
    mtu: int | None = None

    @classmethod
    def on_network(cls, net: NetworkSpec, *, container: str, device: str, host_ifname: str,
                   container_ifname: str, mac: str, ipv4: str | None) -> NicSpec:
        """A nic on managed network ``net`` (bridge, prefix, gateway and MTU from it)."""
        return cls(container=container, device=device, host_ifname=host_ifname,
                   container_ifname=container_ifname, mac=mac, bridge=net.ifname, ipv4=ipv4,
                   prefixlen=net.prefixlen if ipv4 else None,
                   gateway=net.gateway if ipv4 else None, mtu=net.mtu)


@dataclass(frozen=True)
class Lease:
    """A DHCP reservation + DNS name (input of ``set_leases``), or an active lease (status).

    ``ipv4`` None: a reservation by MAC that only pins the hostname (the address then comes
    from a dynamic range).
    """

    mac: str
    ipv4: str | None
    hostname: str


@dataclass(frozen=True)
class NetworkStatus:
    """What the host has for one network, read from the kernel and the daemon every time."""

    exists: bool                            # the bridge exists (and is this network's)
    up: bool = False
    mtu: int | None = None
    addresses: tuple[str, ...] = ()         # IPv4 addresses on the bridge, CIDR notation
    ports: tuple[str, ...] = ()             # interfaces plugged into the bridge
    dnsmasq_pid: int | None = None          # None: not running with the current configuration
    nft_table: bool = False                 # the network's nftables table exists
    leases: tuple[Lease, ...] = ()          # active DHCP leases (from the lease file)


# -- validation (pure, shared by every driver) -----------------------------------------------

_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MIN_MTU, MAX_MTU = 576, 9000


def _check_mtu(mtu: int | None, what: str) -> None:
    if mtu is not None and (not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU):
        raise ValidationError(f"{what}: invalid MTU {mtu!r} (expected {MIN_MTU}..{MAX_MTU})")


def validate_network(root_id: str, net: NetworkSpec) -> None:
    """Check ``net`` before touching the host: its bridge name belongs to this root, the
    gateway CIDR, the DHCP ranges, the DNS domain and the MTU are well-formed.

    Raises:
        ValidationError: naming the network and the problem.
    """
    from sysmgr.drivers.network import ipam  # pure sibling; kept local to avoid a cycle

    what = f"network {net.name}"
    if parse_index(net.ifname, BRIDGE_PREFIX, _check_root_id(root_id)) is None:
        raise ValidationError(
            f"{what}: bridge name {net.ifname!r} is not one of this root's "
            f"({BRIDGE_PREFIX}{root_id}<index>); sysmgr only manages bridges it named")
    try:
        ipam.parse_gateway(net.ipv4_cidr)
        ipam.parse_ranges(net.dhcp_ranges, net.ipv4_cidr)
    except ValidationError as e:
        raise ValidationError(f"{what}: {e.message}") from None
    if not _DOMAIN_RE.match(net.dns_domain or ""):
        raise ValidationError(f"{what}: invalid DNS domain {net.dns_domain!r}")
    _check_mtu(net.mtu, what)


def validate_nic(root_id: str, nic: NicSpec) -> None:
    """Check ``nic``: host end named by this root, container name, MAC, address fields.

    Raises:
        ValidationError: naming the container, the device and the problem.
    """
    what = f"container {nic.container} device {nic.device}"
    if parse_index(nic.host_ifname, VETH_PREFIX, _check_root_id(root_id)) is None:
        raise ValidationError(f"{what}: host interface name {nic.host_ifname!r} is not one of "
                              f"this root's ({VETH_PREFIX}{root_id}<index>)")
    name = nic.container_ifname
    if (not name or len(name) > IFNAMSIZ_MAX or name in (".", "..", "lo")
            or any(c in name for c in "/: \t\n")):
        raise ValidationError(f"{what}: invalid interface name {name!r}")
    if not _MAC_RE.match(nic.mac.lower()) or int(nic.mac[:2], 16) & 1:
        raise ValidationError(f"{what}: invalid unicast MAC address {nic.mac!r}")
    if not nic.bridge or len(nic.bridge) > IFNAMSIZ_MAX:
        raise ValidationError(f"{what}: invalid bridge name {nic.bridge!r}")
    if nic.ipv4 is not None:
        try:
            iface = ipaddress.IPv4Interface(f"{nic.ipv4}/{nic.prefixlen}")
            if nic.gateway is not None and ipaddress.IPv4Address(nic.gateway) not in iface.network:
                raise ValueError(f"gateway {nic.gateway} is outside {iface.network}")
        except ValueError as e:
            raise ValidationError(f"{what}: invalid IPv4 settings: {e}") from None
    _check_mtu(nic.mtu, what)


# -- interface --------------------------------------------------------------------------------

class NetworkDriver(abc.ABC):
    """Managed networks and nics of one sysmgr root.

    Constructed cheaply (no I/O).

    Args:
        root_id: the root's 6-hex id (:attr:`sysmgr.layout.Layout.root_id`).
        state_dir: where per-network daemon files live (``<state_dir>/<network>/``:
            dnsmasq pid, lease and host files, log), e.g. ``<root>/networks``.
        host_netns: path of the network namespace that plays "the host" (a
            ``/run/netns/NAME`` or ``/proc/PID/ns/net`` file); None: the caller's own.
            Tests and multi-host simulations run a whole driver inside a namespace.
    """

    name: ClassVar[str]
    info: ClassVar[NetworkInfo]

    def __init__(self, root_id: str, state_dir: str, *, host_netns: str | None = None) -> None:
        self.root_id = _check_root_id(root_id)
        self.state_dir = state_dir
        self.host_netns = host_netns

    # -- networks ----------------------------------------------------------------------------
    @abc.abstractmethod
    def ensure(self, net: NetworkSpec) -> None:
        """Make the host match ``net`` (idempotent): bridge with the gateway address, up,
        MTU; forwarding; DNS/DHCP daemon running with this configuration; nftables table."""

    @abc.abstractmethod
    def delete(self, net: NetworkSpec) -> None:
        """Remove the network's daemon, nftables table, bridge and state files; only what
        this root created. Already gone is success."""

    @abc.abstractmethod
    def set_leases(self, net: NetworkSpec, leases: Sequence[Lease]) -> None:
        """Replace the static DHCP reservations and DNS names (``NAME.<dns_domain>``) with
        ``leases``; active leases of removed or changed reservations are released."""

    @abc.abstractmethod
    def status(self, net: NetworkSpec) -> NetworkStatus: ...

    def health(self, net: NetworkSpec) -> NetworkStatus:
        """:meth:`status` without ``ports`` and ``leases`` (empty): whether the network
        works, asked before every start; drivers override it to skip those reads."""
        return self.status(net)

    def leases(self, net: NetworkSpec) -> list[Lease]:
        """Active DHCP leases of ``net``; drivers override it to skip the kernel queries of
        :meth:`status` (``list`` reads it for every network)."""
        return list(self.status(net).leases)

    # -- nics --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """A block in which many nics are plugged in or out in a row (a start or stop of
        several containers): drivers may keep what the calls share open across it (one host
        netlink socket). Re-entrant; the default does nothing."""
        yield

    def traffic(self) -> dict[str, dict[str, int]]:
        """Traffic counters of the host's interfaces (``rx_bytes``, ``tx_packets``, ...) by
        name, read in the host's namespace; the default (a driver without real interfaces):
        none."""
        return {}

    @abc.abstractmethod
    def attach(self, nic: NicSpec, init_pid: int) -> None:
        """Plug ``nic`` in: veth pair, host end on the bridge and up, container end in the
        netns of ``init_pid`` named ``container_ifname`` with ``mac``, plus the static
        address and default route when given, and ``lo`` up. Call it before init runs (the
        native runtime's ``before_go`` hook). On failure nothing is left behind."""

    @abc.abstractmethod
    def replug(self, nic: NicSpec, init_pid: int) -> bool:
        """Put a running container's ``nic`` back on its bridge after the bridge was made
        again: its host end re-joined to the bridge and up (True), or, when the pair is gone
        too, :meth:`attach` once more (False)."""

    @abc.abstractmethod
    def detach(self, nic: NicSpec) -> None:
        """Unplug ``nic`` (delete the host end; the pair goes with it). Idempotent: the pair
        also vanishes by itself when the container's netns dies."""

    @abc.abstractmethod
    def container_addresses(self, init_pid: int) -> list[tuple[str, str]]:
        """``(interface, CIDR)`` of every IPv4 address inside the network namespace of
        ``init_pid`` (``lo`` excluded); empty when the process is gone."""

    # -- observation -------------------------------------------------------------------------
    @abc.abstractmethod
    def used_networks(self) -> list[str]:
        """IPv4 networks present on the host (addresses and non-default routes), the input
        of :func:`sysmgr.drivers.network.ipam.pick_subnet`."""

    @abc.abstractmethod
    def owned_interfaces(self) -> list[str]:
        """Interfaces on the host that carry this root's prefix (bridges and veth host ends),
        for the engine to find leftovers that state no longer records."""
