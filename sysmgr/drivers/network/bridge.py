"""The ``bridge`` network driver: LXD-style managed bridges on the real kernel.

A managed network is a Linux bridge ``smb<rootid><index>`` holding the gateway address, one
dnsmasq (DHCP reservations + DNS ``NAME.<domain>``, :mod:`.dnsmasq`) and one nftables table
(masquerade + forward rules, :mod:`.nft`). A container nic is a veth pair: the host end
``smv<rootid><index>`` on the bridge, the other end born directly inside the container's
network namespace with its final name and MAC, its address and default route configured
there *before* init runs (so init finds the network ready, DHCP or not).

Ownership: the driver changes or deletes an interface only when its name has this root's
prefix and its alias (IFLA_IFALIAS) names the recorded network or nic
(:func:`base.network_alias`, :func:`base.nic_alias`); anything else is a :class:`Conflict`.

**Forwarding** (documented decision). ``net.ipv4.ip_forward`` is host-global: setting it
turns forwarding on for every interface, present and future. This driver instead sets the
per-interface switch ``net.ipv4.conf.<bridge>.forwarding=1`` (packets *entering* through the
bridge, i.e. from the containers, may be routed). The kernel checks the flag of the *input*
interface, so NAT replies entering through the uplink need it too (measured: with the
bridge alone, replies are dropped); when ``nat`` is true the driver therefore also sets it
on the interfaces of the IPv4 default routes as found at ``ensure`` time. Uplink settings
are never reverted (other networks and other software may rely on them; LXD likewise never
turns ``ip_forward`` off), and an uplink that changes later needs another ``ensure``.

Every step of :meth:`BridgeNetwork.ensure` and :meth:`BridgeNetwork.attach` that creates
something registers its undo at once; on failure only what this call created is removed.

**Netlink.** Links, addresses and the default route are sysmgr's own netlink requests
(:mod:`._rtnl`): a start with a nic must not pay pyroute2's import. pyroute2 (through
:mod:`._netlink`) only reads routing tables, when a network is made or repaired. Inside a
:meth:`BridgeNetwork.batch` block the host-side requests of every nic share one socket.

Layer: drivers (network).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

from sysmgr.drivers.network import _netlink, _rtnl, ipam, nft
from sysmgr.drivers.network.base import (
    BRIDGE_PREFIX,
    VETH_PREFIX,
    Lease,
    NetworkDriver,
    NetworkInfo,
    NetworkSpec,
    NetworkStatus,
    NicSpec,
    network_alias,
    nft_table_name,
    nic_alias,
    validate_network,
    validate_nic,
)
from sysmgr.drivers.network.dnsmasq import Dnsmasq, DnsmasqConfig
from sysmgr.errors import Conflict, NotFound, SysmgrError


def _quietly(fn: Callable[..., object], *args: object) -> None:
    """Run an undo step; its own failure must not hide the error being unwound."""
    with contextlib.suppress(SysmgrError):
        fn(*args)


class BridgeNetwork(NetworkDriver):
    """Managed bridges with dnsmasq and nftables; veth nics configured before init runs."""

    name: ClassVar[str] = "bridge"
    info: ClassVar[NetworkInfo] = NetworkInfo(dhcp=True, dns=True, nat=True,
                                              static_in_netns=True, real_kernel=True)
    _shared: _rtnl.Rtnl | None = None   # the host-side session of a batch()

    # -- helpers -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        if self._shared is not None:
            yield
            return
        with _rtnl.session(self.host_netns) as nl:
            self._shared = nl
            try:
                yield
            finally:
                self._shared = None

    @contextlib.contextmanager
    def _host(self) -> Iterator[_rtnl.Rtnl]:
        """A netlink session on the host namespace: the batch's, else a new one."""
        if self._shared is not None:
            yield self._shared
            return
        with _rtnl.session(self.host_netns) as nl:
            yield nl

    def traffic(self) -> dict[str, dict[str, int]]:
        with self._host() as nl:
            return nl.stats()

    def network_dir(self, net: NetworkSpec) -> str:
        """Per-network state dir (dnsmasq pid, lease and host files, log)."""
        return os.path.join(self.state_dir, net.name)

    def _dnsmasq(self, net: NetworkSpec) -> Dnsmasq:
        return Dnsmasq(DnsmasqConfig.for_network(net, self.network_dir(net)), self.host_netns)

    def _check_bridge(self, link: _rtnl.Link, net: NetworkSpec) -> None:
        alias = network_alias(self.root_id, net.name)
        if link.kind != "bridge" or link.alias != alias:
            raise Conflict(
                f"interface {link.ifname} exists but is not the bridge of network {net.name} "
                f"(kind {link.kind or 'device'}, alias {link.alias or 'none'})",
                hint="sysmgr leaves interfaces it did not create alone; rename or remove it")

    def _forwarding(self, net: NetworkSpec, uplinks: Sequence[str]) -> None:
        for ifname in (net.ifname, *uplinks):
            key = f"net.ipv4.conf.{ifname}.forwarding"
            if _netlink.read_sysctl(self.host_netns, key) != "1":
                _netlink.write_sysctl(self.host_netns, key, "1")

    # -- networks ----------------------------------------------------------------------------
    def ensure(self, net: NetworkSpec) -> None:
        validate_network(self.root_id, net)
        dns = self._dnsmasq(net)
        table = nft_table_name(net.ifname)
        with contextlib.ExitStack() as undo:
            self._ensure_bridge(net, undo)
            uplinks: list[str] = []
            if net.nat:
                with _netlink.routes(self.host_netns) as routes:
                    uplinks = routes.default_route_ifnames()
            self._forwarding(net, [u for u in uplinks if u != net.ifname])
            if dns.pid() is None:
                dns.ensure_running()
                undo.callback(_quietly, dns.stop)
            if not nft.exists(table, self.host_netns):
                undo.callback(_quietly, nft.delete, table, self.host_netns)
            nft.apply(nft.NftRules.for_network(self.root_id, net), self.host_netns)
            undo.pop_all()

    def _ensure_bridge(self, net: NetworkSpec, undo: contextlib.ExitStack) -> None:
        """The bridge with its MTU, only the gateway address, up (its undo on ``undo``)."""
        wanted = str(ipam.parse_gateway(net.ipv4_cidr))
        with self._host() as nl:
            br = nl.link(net.ifname)
            if br is None:
                alias = network_alias(self.root_id, net.name)
                br = nl.add_bridge(net.ifname, mac=ipam.derived_mac(alias), mtu=net.mtu)
                undo.callback(_quietly, self._delete_link, net.ifname)
                nl.set_link(br, alias=alias)
            else:
                self._check_bridge(br, net)
                if net.mtu and br.mtu != net.mtu:
                    nl.set_link(br, mtu=net.mtu)
            have = nl.ipv4_addresses(br)
            for cidr in have:
                if cidr != wanted:  # converge: the gateway address changed
                    nl.del_ipv4(br, cidr)
            if wanted not in have:
                nl.add_ipv4(br, wanted)
            if not br.up:
                nl.set_link(br, up=True)

    def _delete_link(self, ifname: str) -> None:
        with self._host() as nl:
            nl.delete_link(ifname)

    def delete(self, net: NetworkSpec) -> None:
        validate_network(self.root_id, net)
        with self._host() as nl:
            br = nl.link(net.ifname)
            if br is not None:
                self._check_bridge(br, net)  # before anything is stopped
        dns = self._dnsmasq(net)
        dns.stop()  # by its pid-file marker: also a daemon left with an older configuration
        nft.delete(nft_table_name(net.ifname), self.host_netns)
        with self._host() as nl:
            br = nl.link(net.ifname)
            if br is not None:
                for link in nl.links():
                    # nics of this root left on the bridge are useless without it
                    if (link.master == br.index
                            and link.ifname.startswith(VETH_PREFIX + self.root_id)
                            and (link.alias or "").startswith(f"sysmgr:{self.root_id}:nic:")):
                        nl.delete_link(link.ifname)
                nl.delete_link(net.ifname)
        dns.remove_files()

    def set_leases(self, net: NetworkSpec, leases: Sequence[Lease]) -> None:
        validate_network(self.root_id, net)
        self._dnsmasq(net).set_leases(list(leases))

    def status(self, net: NetworkSpec) -> NetworkStatus:
        return self._status(net, full=True)

    def health(self, net: NetworkSpec) -> NetworkStatus:
        return self._status(net, full=False)

    def _status(self, net: NetworkSpec, *, full: bool) -> NetworkStatus:
        """The network as the host has it; ``full``: with its ports and active leases."""
        validate_network(self.root_id, net)
        dns = self._dnsmasq(net)
        with self._host() as nl:
            br = nl.link(net.ifname)
            if br is not None and (br.kind != "bridge"
                                   or br.alias != network_alias(self.root_id, net.name)):
                br = None  # not ours: as good as missing
            addresses = tuple(nl.ipv4_addresses(br)) if br is not None else ()
            ports = tuple(nl.ports(br)) if br is not None and full else ()
        return NetworkStatus(
            exists=br is not None, up=br is not None and br.up,
            mtu=br.mtu if br is not None else None, addresses=addresses, ports=ports,
            dnsmasq_pid=dns.pid(),
            nft_table=nft.exists(nft_table_name(net.ifname), self.host_netns),
            leases=tuple(dns.leases()) if full else ())

    def leases(self, net: NetworkSpec) -> list[Lease]:
        validate_network(self.root_id, net)
        return self._dnsmasq(net).leases()  # the lease file only: no netlink, no nft

    # -- nics --------------------------------------------------------------------------------
    def container_addresses(self, init_pid: int) -> list[tuple[str, str]]:
        ns_path = _netlink.pid_netns(init_pid)
        if _netlink.netns_id(ns_path) is None:
            return []
        try:
            with _rtnl.session(ns_path) as cn:
                names = {lk.index: lk.ifname for lk in cn.links()}
                return [(names[i], cidr) for i, cidr in cn.all_ipv4()
                        if i in names and names[i] != "lo"]
        except NotFound:
            return []  # the container stopped meanwhile

    def attach(self, nic: NicSpec, init_pid: int) -> None:
        validate_nic(self.root_id, nic)
        what = f"container {nic.container} device {nic.device}"
        ns_path = _netlink.pid_netns(init_pid)
        target = _netlink.netns_id(ns_path)
        if target is None:
            raise NotFound(f"{what}: process {init_pid} (the container's init) does not exist")
        if target == _netlink.netns_id(self.host_netns):
            # the peer would land on the host itself (e.g. a host "eth0"): never do that
            raise Conflict(f"{what}: process {init_pid} has no network namespace of its own")
        alias = nic_alias(self.root_id, nic.container, nic.device)
        with self._host() as nl:
            br = nl.link(nic.bridge)
            if br is None or br.kind != "bridge":
                raise NotFound(f"{what}: bridge {nic.bridge} does not exist",
                               hint="ensure the network first")
            old = nl.link(nic.host_ifname)
            if old is not None:
                if old.alias != alias:
                    raise Conflict(f"{what}: interface {nic.host_ifname} exists and is not "
                                   "this nic's")
                nl.delete_link(nic.host_ifname)  # a previous attach of this nic: start over
            host = nl.add_veth(nic.host_ifname, peer=nic.container_ifname, peer_pid=init_pid,
                               peer_mac=nic.mac.lower(), mtu=nic.mtu)
            try:
                nl.set_link(host, alias=alias, master=br.index, up=True)
                self._configure_peer(nic, ns_path)
            except BaseException:
                # deleting one end deletes the pair, wherever the other end is
                with contextlib.suppress(SysmgrError):
                    nl.delete_link(nic.host_ifname)
                raise

    @staticmethod
    def _configure_peer(nic: NicSpec, ns_path: str) -> None:
        """Inside the container's namespace: its end and ``lo`` up, its static address and
        default route."""
        with _rtnl.session(ns_path) as cn:
            peer = cn.require(nic.container_ifname)
            cn.set_link(peer, up=True)
            lo = cn.link("lo")
            if lo is not None and not lo.up:
                cn.set_link(lo, up=True)
            if nic.ipv4 is not None:
                cn.add_ipv4(peer, f"{nic.ipv4}/{nic.prefixlen}")
                if nic.gateway is not None:
                    cn.set_default_route(nic.gateway)

    def replug(self, nic: NicSpec, init_pid: int) -> bool:
        validate_nic(self.root_id, nic)
        what = f"container {nic.container} device {nic.device}"
        with self._host() as nl:
            link = nl.link(nic.host_ifname)
            if link is not None:
                if link.alias != nic_alias(self.root_id, nic.container, nic.device):
                    raise Conflict(f"{what}: interface {nic.host_ifname} is not this nic's")
                br = nl.link(nic.bridge)
                if br is None or br.kind != "bridge":
                    raise NotFound(f"{what}: bridge {nic.bridge} does not exist")
                nl.set_link(link, master=br.index, up=True)
                return True
        self.attach(nic, init_pid)
        return False

    def detach(self, nic: NicSpec) -> None:
        validate_nic(self.root_id, nic)
        if nic.host_ifname not in _netlink.ifnames(self.host_netns):
            return  # gone with the container's netns (the usual case after a stop)
        with self._host() as nl:
            link = nl.link(nic.host_ifname)
            if link is None:
                return
            if link.alias != nic_alias(self.root_id, nic.container, nic.device):
                raise Conflict(f"container {nic.container} device {nic.device}: interface "
                               f"{nic.host_ifname} is not this nic's; left alone")
            nl.delete_link(nic.host_ifname)

    # -- observation -------------------------------------------------------------------------
    def used_networks(self) -> list[str]:
        with _netlink.routes(self.host_netns) as routes:
            return routes.used_networks()

    def owned_interfaces(self) -> list[str]:
        prefixes = (BRIDGE_PREFIX + self.root_id, VETH_PREFIX + self.root_id)
        return sorted(n for n in _netlink.ifnames(self.host_netns) if n.startswith(prefixes))
