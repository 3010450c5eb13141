"""Pure network helpers: IPAM (subnets, addresses, conflicts, MACs) and host-object names.

Table-driven, no kernel, no root: everything the engine decides before a driver runs.
"""

from __future__ import annotations

import random

import pytest

from sysmgr.drivers.network import base, ipam
from sysmgr.drivers.network.base import NetworkSpec, NicSpec
from sysmgr.errors import Conflict, ValidationError

ROOT = "1a2b3c"


# -- names ------------------------------------------------------------------------------------

def test_interface_names_fit_ifnamsiz_and_carry_the_root_id() -> None:
    assert base.bridge_ifname(ROOT, 0) == "smb1a2b3c0"
    assert base.veth_ifname(ROOT, 42) == "smv1a2b3c42"
    longest = base.veth_ifname(ROOT, base.MAX_INDEX)
    assert longest == "smv1a2b3c999999" and len(longest) == 15
    assert len(base.bridge_ifname(ROOT, base.MAX_INDEX)) == 15
    assert base.nft_table_name("smb1a2b3c0") == "sysmgr_smb1a2b3c0"


@pytest.mark.parametrize("root_id, index", [
    ("1A2B3C", 0), ("1a2b3", 0), ("1a2b3c4", 0), ("zzzzzz", 0), ("", 0),
    (ROOT, -1), (ROOT, base.MAX_INDEX + 1),
])
def test_bad_root_ids_and_indices_are_rejected(root_id: str, index: int) -> None:
    with pytest.raises(ValidationError):
        base.bridge_ifname(root_id, index)


@pytest.mark.parametrize("name, expected", [
    ("smb1a2b3c0", 0), ("smb1a2b3c17", 17), ("smb1a2b3c017", None), ("smb1a2b3c", None),
    ("smb1a2b3cx", None), ("smbffffff0", None), ("smv1a2b3c0", None), ("lxdbr0", None),
])
def test_parse_index_recognises_only_this_roots_names(name: str, expected: int | None) -> None:
    assert base.parse_index(name, base.BRIDGE_PREFIX, ROOT) == expected


def test_parse_index_round_trips() -> None:
    for i in (0, 1, 9, 10, 12345, base.MAX_INDEX):
        assert base.parse_index(base.veth_ifname(ROOT, i), base.VETH_PREFIX, ROOT) == i


def test_next_index_reuses_the_smallest_gap() -> None:
    assert base.next_index([]) == 0
    assert base.next_index([0, 1, 3]) == 2
    assert base.next_index(range(5)) == 5


def test_aliases_name_root_and_object() -> None:
    assert base.network_alias(ROOT, "sysmgrbr0") == "sysmgr:1a2b3c:network:sysmgrbr0"
    assert base.nic_alias(ROOT, "web1", "eth0") == "sysmgr:1a2b3c:nic:web1/eth0"


# -- validation of specs ----------------------------------------------------------------------

def _net(**kw: object) -> NetworkSpec:
    args: dict[str, object] = {"name": "n", "ifname": base.bridge_ifname(ROOT, 0),
                               "ipv4_cidr": "10.12.34.1/24"}
    args.update(kw)
    return NetworkSpec(**args)  # type: ignore[arg-type]


def test_network_spec_properties() -> None:
    net = _net()
    assert (net.gateway, net.prefixlen, net.subnet) == ("10.12.34.1", 24, "10.12.34.0/24")
    base.validate_network(ROOT, net)


@pytest.mark.parametrize("kw, fragment", [
    ({"ifname": "lxdbr0"}, "not one of this root's"),
    ({"ifname": "smbffffff0"}, "not one of this root's"),
    ({"ipv4_cidr": "10.12.34.0/24"}, "network address"),
    ({"ipv4_cidr": "10.12.34.1"}, "ADDRESS/PREFIX"),
    ({"dhcp_ranges": (("10.12.35.2", "10.12.35.9"),)}, "not a host address"),
    ({"dns_domain": "Bad_Domain"}, "DNS domain"),
    ({"mtu": 100}, "MTU"),
])
def test_validate_network_names_the_problem(kw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        base.validate_network(ROOT, _net(**kw))


def _nic(**kw: object) -> NicSpec:
    args: dict[str, object] = {
        "container": "c1", "device": "eth0", "host_ifname": base.veth_ifname(ROOT, 0),
        "container_ifname": "eth0", "mac": "00:16:3e:00:00:01",
        "bridge": base.bridge_ifname(ROOT, 0), "ipv4": "10.12.34.2", "prefixlen": 24,
        "gateway": "10.12.34.1"}
    args.update(kw)
    return NicSpec(**args)  # type: ignore[arg-type]


def test_nic_on_network_takes_bridge_prefix_gateway_and_mtu() -> None:
    net = _net(mtu=1400)
    nic = NicSpec.on_network(net, container="c1", device="eth0", host_ifname="smv1a2b3c0",
                             container_ifname="eth0", mac="00:16:3e:00:00:01", ipv4="10.12.34.2")
    assert (nic.bridge, nic.prefixlen, nic.gateway, nic.mtu) == ("smb1a2b3c0", 24, "10.12.34.1", 1400)
    dhcp = NicSpec.on_network(net, container="c1", device="eth0", host_ifname="smv1a2b3c0",
                              container_ifname="eth0", mac="00:16:3e:00:00:01", ipv4=None)
    assert (dhcp.prefixlen, dhcp.gateway) == (None, None)
    base.validate_nic(ROOT, nic)
    base.validate_nic(ROOT, dhcp)


@pytest.mark.parametrize("kw, fragment", [
    ({"host_ifname": "veth0"}, "host interface name"),
    ({"container_ifname": "lo"}, "interface name"),
    ({"container_ifname": "a-very-long-name0"}, "interface name"),
    ({"mac": "01:00:5e:00:00:01"}, "unicast MAC"),
    ({"mac": "00:16:3e:00:00"}, "unicast MAC"),
    ({"gateway": "10.99.0.1"}, "outside"),
    ({"prefixlen": None}, "IPv4 settings"),
])
def test_validate_nic_names_the_problem(kw: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        base.validate_nic(ROOT, _nic(**kw))


# -- gateway and ranges -----------------------------------------------------------------------

@pytest.mark.parametrize("cidr, ok", [
    ("10.12.34.1/24", True), ("10.0.0.254/8", True), ("192.168.7.1/30", True),
    (" 10.12.34.1/24 ", True),
    ("10.12.34.0/24", False),     # network address
    ("10.12.34.255/24", False),   # broadcast
    ("10.12.34.1/31", False), ("10.12.34.1/32", False), ("10.1.1.1/7", False),
    ("10.12.34.1", False), ("10.12.34.300/24", False), ("auto", False), ("", False),
])
def test_parse_gateway(cidr: str, ok: bool) -> None:
    if ok:
        assert str(ipam.parse_gateway(cidr)) == cidr.strip()
    else:
        with pytest.raises(ValidationError):
            ipam.parse_gateway(cidr)


def test_parse_ranges_accepts_lxd_syntax_and_pairs() -> None:
    gw = "10.12.34.1/24"
    text = "10.12.34.100-10.12.34.199, 10.12.34.220-10.12.34.229"
    expected = (("10.12.34.100", "10.12.34.199"), ("10.12.34.220", "10.12.34.229"))
    assert ipam.parse_ranges(text, gw) == expected
    assert ipam.parse_ranges(list(expected), gw) == expected
    assert ipam.parse_ranges("", gw) == ()


@pytest.mark.parametrize("text, fragment", [
    ("10.12.34.100", "FIRST-LAST"),
    ("10.12.34.200-10.12.34.100", "after the last"),
    ("10.12.34.100-10.12.35.100", "not a host address"),
    ("10.12.34.0-10.12.34.10", "not a host address"),
    ("10.12.34.250-10.12.34.255", "not a host address"),
    ("10.12.34.1-10.12.34.10", "contains the gateway"),
    ("10.12.34.10-10.12.34.20,10.12.34.15-10.12.34.30", "overlaps"),
    ("x-y", "not IPv4"),
])
def test_parse_ranges_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ipam.parse_ranges(text, "10.12.34.1/24")


# -- subnets ----------------------------------------------------------------------------------

def test_pick_subnet_returns_a_gateway_cidr_that_avoids_used_networks() -> None:
    used = ["10.0.0.0/9", "192.168.1.0/24", "0.0.0.0/0"]  # the default route is ignored
    for seed in range(20):
        cidr = ipam.pick_subnet(used, rng=random.Random(seed))
        iface = ipam.parse_gateway(cidr)
        assert cidr.endswith(".1/24") and iface.network.subnet_of(ipam.IPv4Network("10.0.0.0/8"))
        assert not ipam.overlapping(cidr, used)


def test_pick_subnet_is_deterministic_for_a_seed_and_random_across_seeds() -> None:
    a = ipam.pick_subnet([], rng=random.Random(7))
    assert a == ipam.pick_subnet([], rng=random.Random(7))
    assert len({ipam.pick_subnet([], rng=random.Random(s)) for s in range(10)}) > 5


def test_pick_subnet_scans_when_random_attempts_miss() -> None:
    # everything but 10.255.255.0/24 is taken: random tries miss, the scan finds it
    used = ["10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "10.224.0.0/12", "10.240.0.0/13",
            "10.248.0.0/14", "10.252.0.0/15", "10.254.0.0/16", "10.255.0.0/17", "10.255.128.0/18",
            "10.255.192.0/19", "10.255.224.0/20", "10.255.240.0/21", "10.255.248.0/22",
            "10.255.252.0/23", "10.255.254.0/24"]
    assert ipam.pick_subnet(used, rng=random.Random(1)) == "10.255.255.1/24"


def test_pick_subnet_fails_when_the_pool_is_full() -> None:
    with pytest.raises(Conflict, match="no free /24"):
        ipam.pick_subnet(["10.0.0.0/8"], rng=random.Random(1))
    with pytest.raises(Conflict):
        ipam.pick_subnet(["10.1.0.0/16"], pool="10.1.0.0/16")


def test_overlapping_lists_the_conflicting_host_networks() -> None:
    used = ["10.12.0.0/16", "10.12.34.128/25", "10.13.0.0/24", "0.0.0.0/0"]
    assert ipam.overlapping("10.12.34.1/24", used) == ["10.12.0.0/16", "10.12.34.128/25"]
    assert ipam.overlapping("10.99.0.1/24", used) == []


# -- addresses --------------------------------------------------------------------------------

def test_allocate_takes_the_lowest_free_host_address() -> None:
    gw = "10.12.34.1/24"
    assert ipam.allocate(gw, []) == "10.12.34.2"
    assert ipam.allocate(gw, ["10.12.34.2", "10.12.34.3"]) == "10.12.34.4"
    assert ipam.allocate("10.12.34.254/24", []) == "10.12.34.1"


def test_allocate_skips_dhcp_ranges_and_reserved_addresses() -> None:
    gw = "10.12.34.1/24"
    ranges = (("10.12.34.2", "10.12.34.99"),)
    assert ipam.allocate(gw, [], dhcp_ranges=ranges) == "10.12.34.100"
    assert ipam.allocate(gw, ["10.12.34.100"], dhcp_ranges=ranges,
                         reserved=["10.12.34.101/24"]) == "10.12.34.102"


def test_allocate_never_hands_out_network_broadcast_or_gateway() -> None:
    gw = "10.12.34.1/30"  # hosts .1 (gateway) and .2
    assert ipam.allocate(gw, []) == "10.12.34.2"
    with pytest.raises(Conflict, match="no free IPv4 address"):
        ipam.allocate(gw, ["10.12.34.2"])


def test_address_problems_gives_one_reason_per_bad_address() -> None:
    problems = ipam.address_problems("10.12.34.1/24", {
        "ok": "10.12.34.10",
        "outside": "10.12.35.10",
        "network": "10.12.34.0",
        "broadcast": "10.12.34.255",
        "gateway": "10.12.34.1",
        "zdup": "10.12.34.10",      # sorted after "ok": the second user is reported
        "garbage": "10.12.34",
        "dhcp": None,
    })
    by = {p.container: p.reason for p in problems}
    assert set(by) == {"outside", "network", "broadcast", "gateway", "zdup", "garbage"}
    assert "outside the network's subnet 10.12.34.0/24" in by["outside"]
    assert "network address" in by["network"]
    assert "broadcast" in by["broadcast"]
    assert "gateway" in by["gateway"]
    assert by["zdup"] == "already used by container ok"
    assert by["garbage"] == "not an IPv4 address"
    assert str(problems[0]).count(":") >= 1


def test_address_problems_is_empty_for_a_clean_assignment() -> None:
    assert ipam.address_problems("10.12.34.1/24", {"a": "10.12.34.2", "b": "10.12.34.3"}) == []


# -- MACs -------------------------------------------------------------------------------------

def test_generated_macs_look_like_lxds_and_are_unicast() -> None:
    macs = {ipam.generate_mac(random.Random(s)) for s in range(50)}
    assert len(macs) == 50
    for mac in macs:
        assert mac.startswith("00:16:3e:") and len(mac) == 17
    assert ipam.generate_mac(random.Random(3)) == ipam.generate_mac(random.Random(3))


def test_derived_macs_are_stable_locally_administered_unicast() -> None:
    mac = ipam.derived_mac("sysmgr:1a2b3c:network:n")
    assert mac == ipam.derived_mac("sysmgr:1a2b3c:network:n")
    assert mac != ipam.derived_mac("sysmgr:1a2b3c:network:m")
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
