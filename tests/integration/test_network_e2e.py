"""Managed networks end to end through the real CLI, on the real kernel, each test in a network
namespace of its own (``netns`` fixture: sysmgr runs inside it, so its bridges, veths, dnsmasq
and nftables tables never touch the machine's namespace, and nothing leaves the machine).

Covers issue 4's test list: containers ping each other by address and by ``NAME.sysmgr``; the
host end of the bridge reaches them; a static address is exactly what the container gets; a
DHCP container gets its lease; addresses survive restarts; 20 create/delete cycles leave no
interface, dnsmasq, lease or nft rule behind; every bad input exits 2 with nothing changed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO, Netns, bind_netns, remove_networks, requires_root, run_cli

pytestmark = requires_root

LAB = "10.77.0.1/24"


@pytest.fixture
def root(sysmgr_root: str, netns: Netns):
    """A root in its own network namespace: default network (init --auto) and busybox."""
    bind_netns(sysmgr_root, netns)
    run_cli("init", "--auto", root=sysmgr_root, check=True)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    yield sysmgr_root
    res = run_cli("list", "--format", "json", root=sysmgr_root)
    for c in json.loads(res.stdout or "[]"):
        run_cli("delete", "--force", c["name"], root=sysmgr_root)
    remove_networks(sysmgr_root)


def sysmgr_json(*args: str, root: str):
    return json.loads(run_cli(*args, "--format", "json", root=root, check=True).stdout)


def containers(root: str) -> dict[str, dict]:
    """``list``'s records by name; ``ipv4``: their IPv4 addresses as the IPV4 column shows
    them (``10.x.y.z (eth0)``), from the structured ``addresses``."""
    out = {}
    for c in sysmgr_json("list", root=root):
        assert all(set(a) == {"address", "family", "device"} for a in c["addresses"]), c
        c["ipv4"] = [f"{a['address']} ({a['device']})" for a in c["addresses"]
                     if a["family"] == "inet"]
        out[c["name"]] = c
    return out


def exec_out(root: str, name: str, *argv: str) -> str:
    return run_cli("exec", name, "--", *argv, root=root, check=True).stdout


def wait_for(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def nft_table(ns: Netns, bridge: str) -> str:
    res = ns.run("nft", "list", "table", "ip", f"sysmgr_{bridge}", check=False)
    return res.stdout if res.returncode == 0 else ""


MANIFEST = f"""
    kind: Network
    name: lab
    description: test network
    config:
      ipv4.address: {LAB}
      ipv4.nat: "false"
    ---
    kind: Container
    name: web1
    image: busybox
    devices:
      eth0: {{type: nic, network: lab, name: eth0, ipv4.address: 10.77.0.10}}
    state: running
    ---
    kind: Container
    name: db1
    image: busybox
    devices:
      eth0: {{type: nic, network: lab, name: eth0}}
    state: running
    ---
    kind: Container
    name: dyn
    image: busybox
    devices:
      eth0: {{type: nic, network: lab, name: eth0, ipv4.dhcp: "true"}}
    state: running
    """


def test_containers_on_a_network_reach_each_other_by_address_and_name(root, netns, tmp_path):
    path = write(tmp_path, "lab.yaml", MANIFEST)
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    nets = {n["name"]: n for n in sysmgr_json("network", "list", root=root)}
    lab, default = nets["lab"], nets["sysmgrbr0"]
    assert lab["config"]["ipv4.address"] == LAB and lab["status"] == "Created"
    assert sorted(lab["used_by"]) == ["db1", "dyn", "web1"]

    # a static address is exactly what the container gets, configured before init ran
    inside = exec_out(root, "web1", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert [line.split()[3] for line in inside.splitlines()] == ["10.77.0.10/24"]
    assert "default via 10.77.0.1" in exec_out(root, "web1", "ip", "route")
    listing = containers(root)
    assert listing["web1"]["ipv4"] == ["10.77.0.10 (eth0)"]
    db_addr = listing["db1"]["ipv4"][0].split()[0]
    assert ipaddress.IPv4Address(db_addr) in ipaddress.IPv4Network("10.77.0.0/24")
    assert db_addr not in ("10.77.0.1", "10.77.0.10")

    # the DHCP container's rcS asks dnsmasq, which serves it the address recorded for it
    info = sysmgr_json("info", "dyn", root=root)
    reserved = info["network"]["eth0"]["ipv4"]
    assert info["network"]["eth0"]["dhcp"] is True
    wait_for(lambda: containers(root)["dyn"]["ipv4"] == [f"{reserved} (eth0)"], 15,
             "dyn's DHCP lease")
    assert f"inet {reserved}/24" in exec_out(root, "dyn", "ip", "-4", "addr", "show", "eth0")

    # neighbours by address and by name; the host end of the bridge reaches every one
    assert "0% packet loss" in exec_out(root, "db1", "ping", "-c1", "-W2", "10.77.0.10")
    assert "0% packet loss" in exec_out(root, "db1", "ping", "-c1", "-W2", "web1.sysmgr")
    assert "0% packet loss" in exec_out(root, "web1", "ping", "-c1", "-W2", "db1.sysmgr")
    assert "0% packet loss" in exec_out(root, "dyn", "ping", "-c1", "-W2", "web1.sysmgr")
    for addr in ("10.77.0.10", db_addr, reserved):
        assert netns.ping(addr), addr
    assert "nameserver 10.77.0.1" in exec_out(root, "db1", "cat", "/etc/resolv.conf")

    # host ends: stable names, shown by info, plugged into the network's bridge
    host_ends = {n: sysmgr_json("info", n, root=root)["network"]["eth0"]["host_name"]
                 for n in ("web1", "db1", "dyn")}
    links = netns.run("ip", "-o", "link", "show", "master", lab["bridge"]).stdout
    assert all(h in links for h in host_ends.values()), (host_ends, links)
    text = run_cli("info", "db1", root=root, check=True).stdout
    assert host_ends["db1"] in text and db_addr in text

    # NAT: the default network masquerades (ipv4.nat true), lab does not (ruleset only)
    assert "masquerade" in nft_table(netns, default["bridge"])
    assert "masquerade" not in nft_table(netns, lab["bridge"]) and nft_table(netns, lab["bridge"])

    # addresses, MACs and host ends survive restarts
    before = {n: sysmgr_json("info", n, root=root)["network"] for n in ("db1", "dyn")}
    run_cli("restart", "db1", "dyn", "--force", root=root, check=True)
    assert {n: sysmgr_json("info", n, root=root)["network"] for n in ("db1", "dyn")} == before
    wait_for(lambda: containers(root)["dyn"]["ipv4"] == [f"{reserved} (eth0)"], 15, "re-lease")
    assert containers(root)["db1"]["ipv4"] == [f"{db_addr} (eth0)"]
    assert netns.ping(db_addr)
    assert "no changes" in run_cli("apply", "-f", path, "--yes", root=root, check=True).stdout

    # changing a running container's nic is a restart, and the plan says so
    with open(path) as f:
        text = f.read().replace("ipv4.address: 10.77.0.10", "ipv4.address: 10.77.0.11")
    with open(path, "w") as f:
        f.write(text)
    diff = run_cli("diff", "-f", path, root=root)
    assert diff.returncode == 1 and "restart needed: devices.eth0" in diff.stdout, diff.stdout

    # a network in use cannot go; stopped nics vanish from the host
    res = run_cli("network", "delete", "lab", root=root)
    assert res.returncode == 1 and "in use" in res.stderr
    run_cli("stop", "web1", "--force", root=root, check=True)
    assert host_ends["web1"] not in netns.links()
    for name in ("web1", "db1", "dyn"):
        run_cli("delete", "--force", name, root=root, check=True)
    assert not [i for i in netns.links() if i.startswith("smv")]
    leases = sysmgr_json("network", "info", "lab", root=root)["leases"]
    assert leases == []
    run_cli("network", "delete", "lab", root=root, check=True)
    assert lab["bridge"] not in netns.links() and not nft_table(netns, lab["bridge"])


CYCLES = """
import sys, time
import sysmgr

client = sysmgr.Client(root=sys.argv[1])
for i in range(20):
    dhcp = "true" if i % 2 else "false"
    c = client.containers.create(f"cyc{i}", "busybox", start=True, devices={
        "eth0": {"type": "nic", "network": "sysmgrbr0", "name": "eth0", "ipv4.dhcp": dhcp}})
    deadline = time.monotonic() + 15
    while not c.refresh().ipv4:  # a DHCP container: until its lease shows
        assert time.monotonic() < deadline, f"cyc{i} got no address"
        time.sleep(0.05)
    c.delete(force=True)
print("ok")
"""


def test_twenty_create_delete_cycles_leave_nothing_behind(root, netns):
    net = sysmgr_json("network", "info", "sysmgrbr0", root=root)
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run(netns.argv(sys.executable, "-c", CYCLES, root), capture_output=True,
                         text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0 and "ok" in res.stdout, res.stdout + res.stderr
    # no interface, lease entry or rule of the containers is left; one dnsmasq (restarted
    # when a deleted container's active lease is released: it reads leases only at start)
    assert sorted(netns.links()) == sorted(["lo", net["bridge"]])
    after = sysmgr_json("network", "info", "sysmgrbr0", root=root)
    assert after["leases"] == [] and after["state"]["ports"] == []
    assert after["state"]["dnsmasq_pid"] is not None and after["state"]["problems"] == []
    ndir = os.path.join(root, "networks", "sysmgrbr0")
    for name in ("dhcp-hosts", "hosts", "dnsmasq.leases"):
        with open(os.path.join(ndir, name)) as f:
            assert [x for x in f.read().splitlines() if x and not x.startswith("#")] == [], name
    assert [s for s in netns.strays() if "dnsmasq" in s] and len(netns.strays()) == 1
    tables = netns.run("nft", "list", "tables").stdout.split()
    assert [t for t in tables if t.startswith("sysmgr_")] == [f"sysmgr_{net['bridge']}"]
    remove_networks(root)
    assert netns.strays() == [] and netns.links() == ["lo"]
    assert "sysmgr_" not in netns.run("nft", "list", "tables").stdout


def snapshot(root: str, ns: Netns) -> tuple:
    """Records, files and the namespace's interfaces and nftables tables."""
    con = sqlite3.connect(os.path.join(root, "sysmgr.db"))
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = tuple(tuple(sorted(map(tuple, con.execute(f"SELECT * FROM {t}")))) for t in sorted(tables))
    con.close()
    files = tuple(sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, fs in os.walk(root)
                         for f in fs + dirs if not f.startswith("sysmgr.db") and f != "lock"
                         and not f.endswith(".log")))
    return rows, files, tuple(sorted(ns.links())), ns.run("nft", "list", "tables").stdout


def _ct(name: str, eth0: str) -> str:
    return f"kind: Container\nname: {name}\nimage: busybox\ndevices:\n  eth0: {eth0}\n"


BAD_MANIFESTS = {
    "static address used twice": (
        _ct("b1", "{type: nic, network: lab, ipv4.address: 10.77.0.20}") + "---\n"
        + _ct("b2", "{type: nic, network: lab, ipv4.address: 10.77.0.20}"),
        "bad.yaml:11: devices.eth0.ipv4.address: 10.77.0.20 is already used on network 'lab' "
        "by container b1"),
    "outside the subnet": (_ct("b1", "{type: nic, network: lab, ipv4.address: 10.78.0.5}"),
                           "bad.yaml:5: devices.eth0.ipv4.address: 10.78.0.5 cannot be used on "
                           "network 'lab': outside the network's subnet 10.77.0.0/24"),
    "the gateway's address": (_ct("b1", "{type: nic, network: lab, ipv4.address: 10.77.0.1}"),
                              "the gateway's address"),
    "an allocated address": (_ct("b1", "{type: nic, network: lab, ipv4.address: ALLOCATED}"),
                             "by container taken"),
    "unknown network": (_ct("b1", "{type: nic, network: ghost}"), "network 'ghost' not found"),
    "dhcp without a server": (
        "kind: Network\nname: nodhcp\nconfig:\n  ipv4.address: 10.79.0.1/24\n"
        "  ipv4.dhcp: \"false\"\n---\n"
        + _ct("b1", "{type: nic, network: nodhcp, ipv4.dhcp: \"true\"}"),
        "does not serve DHCP"),
    "bad gateway": ("kind: Network\nname: n2\nconfig:\n  ipv4.address: 10.80.0.0/24\n",
                    "bad.yaml:4: config.ipv4.address: invalid IPv4 gateway"),
    "ranges with auto": ("kind: Network\nname: n2\nconfig:\n  ipv4.dhcp.ranges: 10.1.1.5-10.1.1.9\n",
                         "needs an explicit ipv4.address"),
    "unknown key": ("kind: Network\nname: n2\nconfig:\n  ipv4.natt: \"true\"\n",
                    "unknown bridge network config key 'ipv4.natt' (did you mean 'ipv4.nat'?)"),
    "overlapping subnet": ("kind: Network\nname: n2\nconfig:\n  ipv4.address: 10.77.0.129/25\n",
                           "overlaps 10.77.0.0/24"),
    "address on an unmanaged bridge": (
        _ct("b1", "{type: nic, nictype: bridged, parent: br0, ipv4.address: 10.77.0.30}"),
        "needs a managed network"),
}


def test_bad_network_input_exits_2_and_changes_nothing(root, netns, tmp_path):
    run_cli("network", "create", "lab", f"ipv4.address={LAB}", root=root, check=True)
    run_cli("launch", "busybox", "taken", "-d", "eth0,network=lab", root=root, check=True)
    allocated = containers(root)["taken"]["ipv4"][0].split()[0]
    before = snapshot(root, netns)
    for case, (text, needle) in BAD_MANIFESTS.items():
        path = write(tmp_path, "bad.yaml", text.replace("ALLOCATED", allocated))
        for verb in ("validate", "apply"):
            args = ("-f", path, "--yes") if verb == "apply" else ("-f", path)
            res = run_cli(verb, *args, root=root)
            assert res.returncode == 2, (case, verb, res.stdout, res.stderr)
            assert needle in res.stderr, (case, verb, res.stderr)
            assert "Traceback" not in res.stderr
    bad_cli = [
        ("network", "create", "n3", "ipv4.address=bogus"),
        ("network", "create", "n3", "foo=bar"),
        ("network", "create", "n3", f"ipv4.address={LAB}"),          # overlaps lab
        ("network", "create", "lab"),                                 # exists
        ("network", "set", "lab", "ipv4.nat=maybe"),
        ("network", "set", "lab", "ipv4.dhcp.ranges=10.78.0.5-10.78.0.9"),   # outside the subnet
        ("launch", "busybox", "b9", "-d", "eth0,network=lab,ipv4.address=10.77.0.1"),
        ("launch", "busybox", "b9", "-d", f"eth0,network=lab,ipv4.address={allocated}"),
        ("launch", "busybox", "b9", "-d", "eth0,network=ghost"),
        ("network", "delete", "ghost"),
    ]
    for args in bad_cli:
        res = run_cli(*args, root=root)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
    assert snapshot(root, netns) == before


def test_a_lost_network_is_repaired_by_init_and_apply(root, netns):
    """What a host reboot does to a network (bridge, dnsmasq and table gone) is seen by
    diff, fixed by init (and apply), and the running containers are back on the network at
    once: they reach the host and each other by name, without a restart."""
    run_cli("launch", "busybox", "c1", root=root, check=True)
    run_cli("launch", "busybox", "c2", root=root, check=True)
    addr = containers(root)["c1"]["ipv4"][0].split()[0]
    net = sysmgr_json("network", "info", "sysmgrbr0", root=root)
    bridge = net["bridge"]
    netns.run("ip", "link", "del", bridge)
    os.kill(net["state"]["dnsmasq_pid"], 9)
    netns.run("nft", "delete", "table", "ip", f"sysmgr_{bridge}")
    wait_for(lambda: not [s for s in netns.strays() if "dnsmasq" in s], 5, "dnsmasq to die")
    assert not netns.ping(addr)
    state = sysmgr_json("network", "info", "sysmgrbr0", root=root)["state"]
    assert state["status"] == "Errored" and len(state["problems"]) == 3, state
    path = os.path.join(REPO, "networks")
    diff = run_cli("diff", "-f", path, root=root)
    assert diff.returncode == 1 and "repair Network sysmgrbr0 (drift: bridge " in diff.stdout, \
        diff.stdout
    out = run_cli("init", "--auto", root=root, check=True).stdout
    assert "repaired network 'sysmgrbr0'" in out and "c1 eth0 re-joined" in out, out
    assert run_cli("diff", "-f", path, root=root).returncode == 0
    assert netns.ping(addr)             # repair is connectivity: no restart needed
    assert "0% packet loss" in exec_out(root, "c2", "ping", "-c1", "-W2", "c1.sysmgr")
    run_cli("restart", "c1", "--force", root=root, check=True)
    assert containers(root)["c1"]["ipv4"] == [f"{addr} (eth0)"]
    assert netns.ping(addr)
    assert "c1" in [lz["hostname"] for lz in
                    sysmgr_json("network", "info", "sysmgrbr0", root=root)["leases"]]


def test_a_nic_on_an_unmanaged_bridge(root, netns, tmp_path):
    """nictype bridged: the host end joins a bridge sysmgr did not make (and leaves alone);
    the guest configures itself, and list reads its address from the container's netns."""
    netns.run("ip", "link", "add", "br0", "type", "bridge")
    netns.run("ip", "addr", "add", "192.168.77.1/24", "dev", "br0")
    netns.run("ip", "link", "set", "br0", "up")
    path = write(tmp_path, "u.yaml", """
        kind: Container
        name: u1
        image: busybox
        devices:
          eth0: {type: nic, nictype: bridged, parent: br0, hwaddr: "00:16:3e:aa:bb:cc"}
        state: running
        """)
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    nic = sysmgr_json("info", "u1", root=root)["network"]["eth0"]
    assert nic["parent"] == "br0" and nic["hwaddr"] == "00:16:3e:aa:bb:cc" and nic["ipv4"] is None
    assert nic["host_name"] in netns.run("ip", "-o", "link", "show", "master", "br0").stdout
    assert "00:16:3e:aa:bb:cc" in exec_out(root, "u1", "ip", "-o", "link", "show", "eth0")
    exec_out(root, "u1", "ip", "addr", "add", "192.168.77.5/24", "dev", "eth0")
    assert containers(root)["u1"]["ipv4"] == ["192.168.77.5 (eth0)"]
    assert netns.ping("192.168.77.5")
    run_cli("delete", "--force", "u1", root=root, check=True)
    assert nic["host_name"] not in netns.links()
    assert "br0" in netns.links()
    netns.run("ip", "link", "del", "br0")


def test_a_restart_an_mtu_change_needs_stays_planned_until_it_happened(root, tmp_path):
    """The running containers on a network keep its old MTU until they restart: a container
    of the manifests is restarted by the same apply; one outside them is named in every
    plan until it restarted."""
    path = write(tmp_path, "net.yaml", """
        kind: Network
        name: mtu
        config: {ipv4.address: 10.79.0.1/24, bridge.mtu: "1500"}
        ---
        kind: Container
        name: m1
        image: busybox
        state: running
        devices:
          eth0: {type: nic, network: mtu}
        """)
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    run_cli("launch", "busybox", "out1", "-d", "eth0,network=mtu", root=root, check=True)
    edit = open(path).read().replace('bridge.mtu: "1500"', 'bridge.mtu: "1400"')
    open(path, "w").write(edit)
    diff = run_cli("diff", "-f", path, root=root).stdout
    assert "restart Container m1" in diff and "restart needed: network mtu: bridge.mtu" in diff
    assert "out1 (not in these manifests)" not in diff     # (its nic is not changed yet)
    pid = containers(root)["m1"]["pid"]
    run_cli("apply", "-f", path, "--yes", root=root, check=True)
    assert containers(root)["m1"]["pid"] != pid                               # restarted
    assert "mtu 1400" in exec_out(root, "m1", "ip", "link", "show", "eth0")
    for _ in range(2):                                                        # every plan
        diff = run_cli("diff", "-f", path, root=root)
        assert diff.returncode == 0, diff.stdout                              # no action
        assert "warning: container out1 (not in these manifests) needs a restart for: " \
               "network mtu: bridge.mtu" in diff.stdout, diff.stdout
    run_cli("restart", "out1", "--force", root=root, check=True)
    assert run_cli("diff", "-f", path, root=root).stdout.strip() == "no changes"
    assert "mtu 1400" in exec_out(root, "out1", "ip", "link", "show", "eth0")
