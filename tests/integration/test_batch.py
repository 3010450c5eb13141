"""Many containers in one call (``sysmgr start c1 c2 ...``, ``stop``, ``delete``) on the real
kernel, inside a network namespace of the test's own (``netns``): every container started by
the call is on the network (pinged from the host, found by name), one that cannot start is
reported while the others run, and dnsmasq re-reads its host files only when they change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from sysmgr.drivers.network import base, dnsmasq, ipam
from sysmgr.drivers.network.base import Lease, NetworkSpec
from sysmgr.drivers.network.bridge import BridgeNetwork
from tests.conftest import Netns, requires_root, run_cli
from tests.integration.test_network_e2e import root  # noqa: F401 - init --auto, busybox

pytestmark = requires_root


def listing(root: str) -> dict[str, dict]:
    res = run_cli("list", "--format", "json", root=root, check=True)
    return {c["name"]: c for c in json.loads(res.stdout)}


def hosts_file(root: str) -> str:
    with open(os.path.join(root, "networks", "sysmgrbr0", dnsmasq.HOSTS_FILE)) as f:
        return f.read()


def test_many_containers_in_one_call(root: str, netns: Netns, tmp_path) -> None:  # noqa: F811
    names = ["c1", "c2", "c3", "c4"]
    for n in names:
        run_cli("create", "busybox", n, root=root, check=True)
    run_cli("create", "busybox", "broken", "-d", f"data,type=disk,source={tmp_path}/gone,"
            "path=/data", root=root, check=True)

    res = run_cli("start", *names, "broken", "ghost", root=root)
    assert res.returncode == 2  # the worst of: a missing source (2), no such container (2)
    assert res.stdout.splitlines() == [f"Container {n} started" for n in names]
    errors = res.stderr.splitlines()
    assert any(e.startswith("Error: broken: ") and "its source" in e for e in errors), errors
    assert any(e.startswith("Error: ghost: ") for e in errors), errors
    now = listing(root)
    assert {n: now[n]["status"] for n in [*names, "broken"]} == {
        **dict.fromkeys(names, "Running"), "broken": "Stopped"}
    # each one is on the network from the start: the host reaches it, its neighbours by name
    for n in names:
        (addr,) = [a["address"] for a in now[n]["addresses"]]
        assert netns.ping(addr), n
    out = run_cli("exec", "c1", "--", "ping", "-c1", "-W2", "c4.sysmgr", root=root, check=True)
    assert "0% packet loss" in out.stdout

    res = run_cli("stop", "--force", *names, root=root, check=True)
    assert res.stdout.splitlines() == [f"Container {n} stopped (killed)" for n in names]
    bridge = json.loads(run_cli("network", "info", "sysmgrbr0", "--format", "json", root=root,
                                check=True).stdout)["bridge"]
    assert netns.run("ip", "-o", "link", "show", "master", bridge).stdout == ""

    run_cli("config", "set", "c2", "security.protection.delete=true", root=root, check=True)
    run_cli("start", "c3", root=root, check=True)
    try:
        res = run_cli("delete", "c1", "c2", "c3", "c4", root=root)
    finally:
        run_cli("config", "unset", "c2", "security.protection.delete", root=root, check=True)
    assert res.returncode == 1
    assert res.stdout.splitlines() == ["Container c1 deleted", "Container c4 deleted"]
    assert "c2: " in res.stderr and "protected" in res.stderr
    assert "c3: " in res.stderr and "running" in res.stderr
    assert sorted(listing(root)) == ["broken", "c2", "c3"]
    names_served = hosts_file(root)
    assert "c2.sysmgr" in names_served and "c3.sysmgr" in names_served
    assert "c1.sysmgr" not in names_served and "c4.sysmgr" not in names_served
    run_cli("delete", "--force", "c3", root=root, check=True)
    assert "c3.sysmgr" not in hosts_file(root)


@pytest.fixture
def driver(netns: Netns, tmp_path) -> Iterator[BridgeNetwork]:
    d = BridgeNetwork("ba7c40", str(tmp_path / "networks"), host_netns=netns.path)
    yield d
    for sub in (tmp_path / "networks").glob("*"):  # a failed test's dnsmasq
        cfg = dnsmasq.DnsmasqConfig(bridge="x", gateway="10.0.0.1", prefixlen=24, domain="x",
                                    state_dir=str(sub))
        dnsmasq.Dnsmasq(cfg, netns.path).stop()


def test_dnsmasq_rereads_its_files_only_when_they_change(driver: BridgeNetwork, netns: Netns,
                                                        monkeypatch) -> None:
    net = NetworkSpec(name="n", ifname=base.bridge_ifname("ba7c40", 0),
                      ipv4_cidr="10.78.0.1/24")
    driver.ensure(net)
    signals: list[int] = []
    reload = dnsmasq.Dnsmasq.reload

    def counting(self: dnsmasq.Dnsmasq) -> None:
        signals.append(1)
        reload(self)

    monkeypatch.setattr(dnsmasq.Dnsmasq, "reload", counting)
    one = [Lease(ipam.generate_mac(), "10.78.0.2", "one")]
    driver.set_leases(net, one)
    driver.set_leases(net, one)  # the running daemon has read these already
    assert len(signals) == 1
    two = [*one, Lease(ipam.generate_mac(), "10.78.0.3", "two")]
    driver.set_leases(net, two)
    assert len(signals) == 2
    # a command killed between writing the files and the signal leaves no false record
    os.unlink(os.path.join(driver.network_dir(net), dnsmasq.LOADED_FILE))
    driver.set_leases(net, two)
    assert len(signals) == 3
    # a new daemon reads the files at its start: nothing to signal
    dns = dnsmasq.Dnsmasq(dnsmasq.DnsmasqConfig.for_network(net, driver.network_dir(net)),
                          netns.path)
    old = dns.pid()
    dns.stop()
    assert dns.ensure_running() != old
    driver.set_leases(net, two)
    assert len(signals) == 3
    assert "two.sysmgr" in open(os.path.join(driver.network_dir(net), "hosts")).read()
    driver.delete(net)
