"""The nic counters of ``sysmgr top`` and ``sysmgr metrics`` on a real bridge (in the test's
network namespace): what the container itself counts on its eth0 is what both report, read
on its veth's host end."""

from __future__ import annotations

import json

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import bind_netns, remove_networks, requires_root, run_cli

pytestmark = requires_root


@pytest.fixture
def root(sysmgr_root: str, netns):
    bind_netns(sysmgr_root, netns)
    run_cli("init", "--auto", "--storage-driver", "dir", root=sysmgr_root, check=True)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    yield sysmgr_root
    run_cli("delete", "--force", "n1", root=sysmgr_root)
    remove_networks(sysmgr_root)


def inside(root: str, what: str) -> int:
    """A counter of eth0 as the container counts it."""
    return int(run_cli("exec", "n1", "--", "cat", f"/sys/class/net/eth0/statistics/{what}",
                       root=root, check=True).stdout)


def test_nic_counters_are_the_containers_own(root):
    run_cli("launch", "busybox", "n1", root=root, check=True)
    gw = run_cli("exec", "n1", "--", "sh", "-c", "ip route | awk '/^default/ {print $3}'",
                 root=root, check=True).stdout.strip()
    assert gw, "the container has no default route"
    run_cli("exec", "n1", "--", "ping", "-c", "3", "-W", "1", gw, root=root, check=True)
    rx0, tx0 = inside(root, "rx_bytes"), inside(root, "tx_bytes")
    text = run_cli("metrics", root=root, check=True).stdout
    rows = json.loads(run_cli("top", "--once", "-f", "json", "--refresh", "0.3", root=root,
                              check=True).stdout)
    rx1, tx1 = inside(root, "rx_bytes"), inside(root, "tx_bytes")
    assert rx0 > 0 and tx0 > 0                       # three pings and their answers at least
    got = {(s.name, s.labels.get("device")): s.value
           for f in text_string_to_metric_families(text) for s in f.samples
           if s.labels.get("name") == "n1"}
    assert rx0 <= got[("sysmgr_network_receive_bytes_total", "eth0")] <= rx1
    assert tx0 <= got[("sysmgr_network_transmit_bytes_total", "eth0")] <= tx1
    assert got[("sysmgr_network_receive_packets_total", "eth0")] >= 3
    assert got[("sysmgr_network_transmit_drop_total", "eth0")] >= 0
    row = rows[0]
    assert row["name"] == "n1" and rx0 <= row["network_rx_bytes"] <= rx1
    assert row["network_rx_bytes_per_second"] is not None and row["network_rx_bytes_per_second"] >= 0
