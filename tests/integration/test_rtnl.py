"""sysmgr's netlink encoder against pyroute2 on the real kernel, inside test namespaces.

The nic path's requests are sent once by the encoder (:mod:`sysmgr.drivers.network._rtnl`)
and once by pyroute2 (the reference: what the driver sent before), each into its own pair of
namespaces ("host" and "container", held by ``unshare -n sleep``); what the kernel made of
them (``ip -j`` output, interface indices and random host-end MACs set aside) must be the
same. The encoder's reads must agree with pyroute2's on the same namespace.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sysmgr.drivers.network import _rtnl, nft
from sysmgr.errors import Conflict, NotFound
from tests.conftest import Netns, requires_root

pyroute2 = pytest.importorskip("pyroute2")
pytestmark = [requires_root, pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")]

ROOT = "5e1f00"
BRIDGE, HOST_END, PEER = f"smb{ROOT}0", f"smv{ROOT}0", "eth0"
MAC_BR, MAC_PEER = "02:5e:1f:00:00:01", "02:5e:1f:00:00:02"
ALIAS = f"sysmgr:{ROOT}:nic:c1/eth0"


@pytest.fixture
def namespaces() -> Iterator[Callable[[], Netns]]:
    made: list[Netns] = []

    def make() -> Netns:
        made.append(Netns())
        return made[-1]

    yield make
    strays = [s for ns in reversed(made) for s in ns.close()]
    assert not strays, f"processes left in the test namespaces: {strays}"


def with_ours(host: Netns, container: Netns) -> None:
    with _rtnl.session(host.path) as nl:
        br = nl.add_bridge(BRIDGE, mac=MAC_BR, mtu=1400)
        nl.set_link(br, alias=f"sysmgr:{ROOT}:network:n", up=True)
        nl.add_ipv4(br, "10.77.0.1/24")
        end = nl.add_veth(HOST_END, peer=PEER, peer_pid=container.pid, peer_mac=MAC_PEER,
                          mtu=1400)
        nl.set_link(end, alias=ALIAS, master=br.index, up=True)
    with _rtnl.session(container.path) as cn:
        peer = cn.require(PEER)
        cn.set_link(peer, up=True)
        cn.set_link(cn.require("lo"), up=True)
        cn.add_ipv4(peer, "10.77.0.5/24")
        cn.set_default_route("10.77.0.1")


def with_pyroute2(host: Netns, container: Netns) -> None:
    """The same, as the bridge driver did it with pyroute2."""
    from pyroute2 import IPRoute

    with IPRoute(netns=host.path) as ipr:
        ipr.link("add", ifname=BRIDGE, kind="bridge", address=MAC_BR, mtu=1400)
        br = ipr.link_lookup(ifname=BRIDGE)[0]
        ipr.link("set", index=br, ifalias=f"sysmgr:{ROOT}:network:n", state="up")
        ipr.addr("add", index=br, address="10.77.0.1", prefixlen=24, broadcast="10.77.0.255")
        ipr.link("add", ifname=HOST_END, kind="veth", mtu=1400,
                 peer={"ifname": PEER, "net_ns_pid": container.pid, "address": MAC_PEER,
                       "mtu": 1400})
        end = ipr.link_lookup(ifname=HOST_END)[0]
        ipr.link("set", index=end, ifalias=ALIAS, master=br, state="up")
    with IPRoute(netns=container.path) as ipr:
        peer = ipr.link_lookup(ifname=PEER)[0]
        ipr.link("set", index=peer, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.addr("add", index=peer, address="10.77.0.5", prefixlen=24, broadcast="10.77.0.255")
        ipr.route("replace", dst="0.0.0.0/0", gateway="10.77.0.1")


_VARYING = {"ifindex", "link_index", "link", "link_netnsid", "address", "operstate",
            "linkinfo", "addr_info", "txqlen", "qdisc", "num_tx_queues",
            "num_rx_queues", "inet6_addr_gen_mode"}


def seen(host: Netns, container: Netns) -> dict[str, Any]:
    """What the kernel has, without what differs between two namespaces by chance."""
    def ip(ns: Netns, *args: str) -> Any:
        return json.loads(ns.run("ip", "-j", "-d", *args).stdout or "[]")

    def links(ns: Netns) -> list[dict[str, Any]]:
        out = []
        for lk in ip(ns, "link"):
            kept = {k: v for k, v in lk.items() if k not in _VARYING}
            kept["kind"] = (lk.get("linkinfo") or {}).get("info_kind")
            kept["mac"] = lk["address"] if lk["ifname"] != HOST_END else "random"
            out.append(kept)
        return sorted(out, key=lambda x: x["ifname"])

    def addrs(ns: Netns) -> list[Any]:
        return sorted((a["ifname"], i["local"], i["prefixlen"], i.get("broadcast"), i["scope"])
                      for a in ip(ns, "addr") for i in a["addr_info"] if i["family"] == "inet")

    def routes(ns: Netns) -> list[dict[str, Any]]:
        return sorted(ip(ns, "route", "show", "table", "all"),
                      key=lambda r: json.dumps(r, sort_keys=True))

    return {"host links": links(host), "host addresses": addrs(host),
            "container links": links(container), "container addresses": addrs(container),
            "container routes": routes(container)}


def test_the_kernel_makes_the_same_of_both(namespaces: Callable[[], Netns]) -> None:
    a_host, a_ct, b_host, b_ct = (namespaces() for _ in range(4))
    with_ours(a_host, a_ct)
    with_pyroute2(b_host, b_ct)
    mine, reference = seen(a_host, a_ct), seen(b_host, b_ct)
    assert mine == reference
    # and it is what a nic needs: the peer born inside with its name and MAC, on the bridge
    peer = next(lk for lk in mine["container links"] if lk["ifname"] == PEER)
    assert peer["mac"] == MAC_PEER and peer["mtu"] == 1400 and "UP" in peer["flags"]
    assert [r["gateway"] for r in mine["container routes"] if r.get("dst") == "default"] \
        == ["10.77.0.1"]
    assert a_ct.ping("10.77.0.1")


def test_reads_agree_with_pyroute2(namespaces: Callable[[], Netns]) -> None:
    from pyroute2 import IPRoute

    host, ct = namespaces(), namespaces()
    with_pyroute2(host, ct)
    with _rtnl.session(host.path) as nl, IPRoute(netns=host.path) as ipr:
        theirs = {m["index"]: m for m in ipr.get_links()}
        for link in nl.links():
            m = theirs.pop(link.index)
            info = m.get_attr("IFLA_LINKINFO")
            assert (link.ifname, link.mtu, link.mac, link.alias, link.up, link.master,
                    link.kind) == (
                m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MTU"), m.get_attr("IFLA_ADDRESS"),
                m.get_attr("IFLA_IFALIAS") or None, bool(m["flags"] & 1),
                m.get_attr("IFLA_MASTER") or None,
                info.get_attr("IFLA_INFO_KIND") if info is not None else None)
        assert not theirs
        br = nl.require(BRIDGE)
        assert nl.ports(br) == [HOST_END]
        assert nl.ipv4_addresses(br) == [
            f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
            for m in ipr.get_addr(family=2, index=br.index)]
        assert nl.link("nothere") is None


def test_errors_and_ownership_checks(namespaces: Callable[[], Netns]) -> None:
    host, ct = namespaces(), namespaces()
    with _rtnl.session(host.path) as nl:
        nl.add_veth(HOST_END, peer=PEER, peer_pid=ct.pid, peer_mac=MAC_PEER, mtu=None)
        with pytest.raises(Conflict, match=f"cannot create veth pair {HOST_END}/eth1: File exists"):
            nl.add_veth(HOST_END, peer="eth1", peer_pid=ct.pid, peer_mac=MAC_PEER, mtu=None)
        with pytest.raises(NotFound):
            nl.require("nothere")
        assert nl.delete_link(HOST_END) and not nl.delete_link(HOST_END)
    # one socket, many requests: sequence numbers keep answers apart
    with _rtnl.session(ct.path) as cn:
        assert [cn.require("lo").index for _ in range(50)] == [1] * 50
        assert cn.link(PEER) is None  # the pair went with its host end


def test_nftables_table_lookup_agrees_with_nft(namespaces: Callable[[], Netns]) -> None:
    if not shutil.which("nft") and not os.path.exists("/usr/sbin/nft"):
        pytest.skip("needs nftables")
    host = namespaces()
    assert not nft.exists("sysmgr_probe", host.path)
    host.run("nft", "add", "table", "ip", "sysmgr_probe")
    host.run("nft", "add", "table", "ip6", "sysmgr_other")
    assert nft.exists("sysmgr_probe", host.path)
    assert "sysmgr_probe" in nft.tables(host.path)
    assert not nft.exists("sysmgr_other", host.path)  # family ip only, as nft.tables
