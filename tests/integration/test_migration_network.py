"""A container with a nic on a managed network moves between two LOCAL members that both
have a network of that name (each its own bridge and subnet, in one network namespace of
the test's): it keeps its MAC, gets an address of the target's network (the output says
so), and is reachable there. (Keeping the static address when both members have the same
subnet needs a namespace per member: tests/cluster/test_migration_ssh.py.)
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import Netns, bind_netns, remove_networks, requires_root, run_cli

pytestmark = requires_root


@pytest.fixture
def members(tmp_path_factory: pytest.TempPathFactory, netns: Netns):
    base = str(tmp_path_factory.mktemp("mignet"))
    roots = {n: os.path.join(base, n) for n in ("n1", "n2")}
    admin = os.path.join(base, "admin")
    for root in (*roots.values(), admin):
        bind_netns(root, netns)
    for n, root in roots.items():
        _ok("init", "--auto", "--storage-driver", "dir", "--network", "lan", root=root)
        _ok("cluster", "add", n, "local:", "--root", root, root=admin)
    _ok("image", "build", "busybox", "--alias", "busybox", root=roots["n1"])
    try:
        yield admin, roots
    finally:
        for root in roots.values():
            for c in json.loads(run_cli("list", "-f", "json", root=root).stdout or "[]"):
                run_cli("delete", "--force", c["name"], root=root)
            remove_networks(root)


def _ok(*args: str, root: str):
    res = run_cli(*args, root=root)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def _nic(root: str, name: str) -> dict:
    info = json.loads(_ok("info", name, "-f", "json", root=root).stdout)
    return info["network"]["eth0"]


def test_moved_container_keeps_its_mac_and_gets_the_targets_address(members, netns) -> None:
    admin, roots = members
    _ok("launch", "busybox", "c1", root=roots["n1"])
    before = _nic(roots["n1"], "c1")
    res = _ok("move", "c1", "--target", "n2", root=admin)
    after = _nic(roots["n2"], "c1")
    assert after["hwaddr"] == before["hwaddr"]                        # the same MAC
    assert after["ipv4"] != before["ipv4"]                            # the target's subnet
    assert re.search(rf"eth0: new address {re.escape(after['ipv4'])} on network lan "
                     rf"\(was {re.escape(before['ipv4'])}\)", res.stdout), res.stdout
    assert after["host_name"] != before["host_name"]                  # the target root's prefix
    assert netns.ping(after["ipv4"])                                  # plugged in and answering
    out = _ok("exec", "c1", "--", "cat", "/sys/class/net/eth0/address", root=admin).stdout
    assert out.strip() == before["hwaddr"]
