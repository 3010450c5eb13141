"""Golden-file tests of what the network driver hands to dnsmasq and nft (pure: no kernel).

Golden files live in ``tests/unit/golden/``: ``dnsmasq_<case>.args`` (one argument per
line), ``dnsmasq_dhcp_hosts.txt``, ``dnsmasq_hosts.txt``, ``nft_<case>.nft``. Regenerate
them after an intended change with ``SYSMGR_REGEN_GOLDEN=1`` and review the diff like code.
The lease bookkeeping (which active leases must be released when reservations change) is
table-tested here too.
"""

from __future__ import annotations

import os

import pytest

from sysmgr.drivers.network import dnsmasq, nft
from sysmgr.drivers.network.base import Lease, NetworkSpec, bridge_ifname
from sysmgr.drivers.network.dnsmasq import DnsmasqConfig
from sysmgr.errors import ValidationError

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
ROOT = "1a2b3c"
STATE = "/var/lib/sysmgr/networks/sysmgrbr0"

NETS = {
    "static_only": NetworkSpec(name="sysmgrbr0", ifname=bridge_ifname(ROOT, 0),
                               ipv4_cidr="10.12.34.1/24"),
    "ranges_mtu_upstream": NetworkSpec(
        name="lan", ifname=bridge_ifname(ROOT, 3), ipv4_cidr="172.20.0.1/16", nat=False,
        dhcp_ranges=(("172.20.100.1", "172.20.100.254"), ("172.20.200.1", "172.20.200.10")),
        dns_domain="lan.example", mtu=1400, dns_upstream=True),
    "no_dhcp": NetworkSpec(name="dnsonly", ifname=bridge_ifname(ROOT, 12),
                           ipv4_cidr="192.168.77.1/24", dhcp=False),
}

LEASES = [
    Lease("00:16:3E:AA:00:02", "10.12.34.20", "web2"),
    Lease("00:16:3e:aa:00:01", "10.12.34.3", "web1"),
    Lease("00:16:3e:aa:00:03", None, "dyn1"),
]


def _golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("SYSMGR_REGEN_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} differs from its golden file"


# -- dnsmasq ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(NETS))
def test_dnsmasq_command_line_matches_golden(case: str) -> None:
    cfg = DnsmasqConfig.for_network(NETS[case], STATE)
    argv = dnsmasq.render_argv(cfg)
    _golden(f"dnsmasq_{case}.args", "\n".join(argv) + "\n")


def test_dnsmasq_command_line_invariants() -> None:
    for net in NETS.values():
        argv = dnsmasq.render_argv(DnsmasqConfig.for_network(net, STATE))
        assert argv[0] == "dnsmasq"
        assert "--keep-in-foreground" not in argv          # it must outlive the CLI
        assert f"--pid-file={STATE}/dnsmasq.pid" in argv     # the marker of our daemon
        assert "--conf-file=/dev/null" in argv and "--bind-interfaces" in argv
        assert f"--interface={net.ifname}" in argv and f"--listen-address={net.gateway}" in argv
        assert ("--no-resolv" in argv) == (not net.dns_upstream)
        assert any(a.startswith("--dhcp-range=") for a in argv) == net.dhcp
        assert len(argv) == len(set(argv))


def test_dnsmasq_host_files_match_golden() -> None:
    _golden("dnsmasq_dhcp_hosts.txt", dnsmasq.render_dhcp_hosts(LEASES))
    _golden("dnsmasq_hosts.txt", dnsmasq.render_hosts(LEASES, "sysmgr"))


def test_host_files_are_sorted_and_round_trip() -> None:
    text = dnsmasq.render_dhcp_hosts(LEASES)
    assert text == dnsmasq.render_dhcp_hosts(list(reversed(LEASES)))
    back = dnsmasq.parse_dhcp_hosts(text)
    assert sorted(back, key=lambda lz: lz.mac) == sorted(
        (Lease(lz.mac.lower(), lz.ipv4, lz.hostname) for lz in LEASES), key=lambda lz: lz.mac)


@pytest.mark.parametrize("lease", [
    Lease("00:16:3e:aa:00:01", "10.12.34.3", "web,1"),
    Lease("00:16:3e:aa:00:01", "10.12.34.3", "web 1"),
    Lease("00:16:3e:aa:00:01", "10.12.34.3", ""),
    Lease("00:16:3e:aa:00:01\n", "10.12.34.3", "web1"),
])
def test_host_files_refuse_entries_that_would_inject_fields(lease: Lease) -> None:
    with pytest.raises(ValidationError):
        dnsmasq.render_dhcp_hosts([lease])
    if lease.mac.strip() == lease.mac:  # the DNS file has no MAC field
        with pytest.raises(ValidationError):
            dnsmasq.render_hosts([lease], "sysmgr")


def test_parse_leases_reads_dnsmasqs_lease_file() -> None:
    text = ("1735000000 00:16:3e:aa:00:01 10.12.34.3 web1 01:00:16:3e:aa:00:01\n"
            "1735000100 00:16:3E:AA:00:09 10.12.34.150 * *\n"
            "duid 00:01:00:01:2c:aa:bb:cc:00:16:3e:00:00:01\n"
            "garbage\n")
    assert dnsmasq.parse_leases(text) == [
        Lease("00:16:3e:aa:00:01", "10.12.34.3", "web1"),
        Lease("00:16:3e:aa:00:09", "10.12.34.150", ""),
    ]


A, B, C = "00:16:3e:00:00:0a", "00:16:3e:00:00:0b", "00:16:3e:00:00:0c"


@pytest.mark.parametrize("active, old, new, released", [
    # unchanged reservation: keep
    ([Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.2", "a")], []),
    # container recreated with a new MAC, same address: the old MAC's lease blocks it
    ([Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.2", "a")], [Lease(B, "10.0.0.2", "a")], [0]),
    # reservation moved to another address
    ([Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.9", "a")], [0]),
    # container deleted: its reservation is gone
    ([Lease(A, "10.0.0.2", "a")], [Lease(A, "10.0.0.2", "a")], [], [0]),
    # a dynamic client sysmgr never reserved: keep
    ([Lease(C, "10.0.0.150", "")], [Lease(A, "10.0.0.2", "a")], [], []),
    # MAC-only reservation (address from a range) keeps its lease
    ([Lease(A, "10.0.0.150", "a")], [Lease(A, None, "a")], [Lease(A, None, "a")], []),
])
def test_leases_to_release(active: list, old: list, new: list, released: list) -> None:
    assert dnsmasq.leases_to_release(active, old, new) == [active[i] for i in released]


def test_without_leases_drops_only_the_released_lines() -> None:
    text = (f"1 {A} 10.0.0.2 a *\n"
            f"2 {B.upper()} 10.0.0.3 b *\n"
            "duid 00:01\n")
    out = dnsmasq.without_leases(text, [Lease(B, "10.0.0.3", "b")])
    assert out == f"1 {A} 10.0.0.2 a *\nduid 00:01\n"


# -- nftables ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["static_only", "ranges_mtu_upstream"])
def test_nft_ruleset_matches_golden(case: str) -> None:
    rules = nft.NftRules.for_network(ROOT, NETS[case])
    name = "nat" if NETS[case].nat else "nonat"
    _golden(f"nft_{name}.nft", nft.render(rules))


def test_nft_apply_script_replaces_the_table_in_one_transaction() -> None:
    rules = nft.NftRules.for_network(ROOT, NETS["static_only"])
    script = nft.render_apply(rules)
    head = script.splitlines()[:3]
    assert head == ["add table ip sysmgr_smb1a2b3c0", "delete table ip sysmgr_smb1a2b3c0",
                    "table ip sysmgr_smb1a2b3c0 {"]
    assert nft.render_delete("sysmgr_smb1a2b3c0") == (
        "add table ip sysmgr_smb1a2b3c0\ndelete table ip sysmgr_smb1a2b3c0\n")
    # nft -f wants every closing brace of a chain on its own line
    assert all(line.strip() == "}" for line in script.splitlines() if "}" in line)


def test_nft_masquerade_only_with_nat() -> None:
    on = nft.render(nft.NftRules.for_network(ROOT, NETS["static_only"]))
    off = nft.render(nft.NftRules.for_network(ROOT, NETS["ranges_mtu_upstream"]))
    assert "ip saddr 10.12.34.0/24 ip daddr != 10.12.34.0/24 masquerade" in on
    assert "masquerade" not in off and "hook postrouting" not in off
    assert 'iifname "smb1a2b3c3" accept' in off
