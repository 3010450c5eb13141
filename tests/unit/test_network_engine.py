"""Managed networks and nics through the API and engine on the FAKE runtime, storage and
network drivers: allocation, records, leases, validation, planning. No kernel objects."""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap

import pytest

import sysmgr
from sysmgr.drivers.network.fake import FakeNetwork
from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.engine.actions import CreateNetwork, RepairNetwork, Restart, UpdateNetwork
from sysmgr.engine.networks import NetworkEngine
from sysmgr.errors import Conflict, ValidationError

NET = "sysmgrbr0"


@pytest.fixture
def client(sysmgr_root: str):
    FakeRuntime.reset()
    c = sysmgr.Client(root=sysmgr_root, runtime="fake")
    done = c.init(storage_driver="fake", runtime="fake", network=NET)
    assert any("created network 'sysmgrbr0'" in line for line in done)
    c.images.build("busybox", alias="busybox")
    yield c
    for ct in c.containers.all():
        ct.delete(force=True)
    c.close()
    FakeRuntime.reset()


def fake(client) -> FakeNetwork:
    drv = client.host.network_driver
    assert isinstance(drv, FakeNetwork)
    return drv


def spec(client, name: str = NET):
    engine = NetworkEngine(client.host)
    return engine.spec(engine.record(name))


def nic(c) -> dict:
    return c.refresh().nics["eth0"]


def subnet(client, name: str = NET) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Interface(client.networks.get(name).config["ipv4.address"]).network


def host(client, n: int, name: str = NET) -> str:
    return str(subnet(client, name).network_address + n)


def test_init_makes_the_default_network_and_nic_once(client, sysmgr_root):
    net = client.networks.get(NET)
    assert net.bridge == f"smb{client.layout.root_id}0"
    assert ipaddress.IPv4Interface(net.config["ipv4.address"]).network.prefixlen == 24
    assert client.profiles.get("default").devices["eth0"] == {
        "type": "nic", "network": NET, "name": "eth0"}
    assert fake(client).status(spec(client)).exists
    assert client.init(network=NET) == []          # idempotent: nothing to repair or create
    assert net.used_by == ["profile:default"]
    assert net.state().status == "Created"


def test_nics_get_stable_macs_host_ends_and_addresses(client):
    c1 = client.containers.create("c1", "busybox")
    c2 = client.containers.create("c2", "busybox")
    n1, n2 = nic(c1), nic(c2)
    root_id = client.layout.root_id
    assert (n1["host_name"], n2["host_name"]) == (f"smv{root_id}0", f"smv{root_id}1")
    assert (n1["ipv4"], n2["ipv4"]) == (host(client, 2), host(client, 3))
    assert n1["hwaddr"] != n2["hwaddr"] and n1["hwaddr"].startswith("00:16:3e:")
    # static DHCP reservations + DNS names for every recorded nic
    assert {(lz.hostname, lz.ipv4, lz.mac) for lz in fake(client).reservations(spec(client))} == {
        ("c1", n1["ipv4"], n1["hwaddr"]), ("c2", n2["ipv4"], n2["hwaddr"])}
    # start plugs it in with its address before init runs; stop unplugs; restart keeps all
    c1.start()
    attached = fake(client).attached()[n1["host_name"]]
    assert (attached.ipv4, attached.mac, attached.gateway, attached.container_ifname) == (
        n1["ipv4"], n1["hwaddr"], host(client, 1), "eth0")
    assert c1.refresh().ipv4 == [f"{n1['ipv4']} (eth0)"]
    c1.stop(force=True)
    assert n1["host_name"] not in fake(client).attached() and c1.refresh().ipv4 == []
    c1.start()
    c1.restart(force=True)
    assert nic(c1) == n1
    # a deleted container's address, host end and reservation are free again
    c1.delete(force=True)
    assert [lz.hostname for lz in fake(client).reservations(spec(client))] == ["c2"]
    c3 = client.containers.create("c3", "busybox")
    assert (nic(c3)["ipv4"], nic(c3)["host_name"]) == (n1["ipv4"], n1["host_name"])


def test_static_and_dhcp_nics(client):
    s = client.containers.create("s1", "busybox", devices={
        "eth0": {"type": "nic", "network": NET, "name": "eth0", "ipv4.address": host(client, 50)}})
    d = client.containers.create("d1", "busybox", devices={
        "eth0": {"type": "nic", "network": NET, "ipv4.dhcp": "true"}})
    assert nic(s)["ipv4"] == host(client, 50)
    assert nic(d)["dhcp"] is True and nic(d)["ipv4"] == host(client, 2)
    d.start()
    # left to the guest's DHCP client: no address configured, the reservation is served
    assert fake(client).attached()[nic(d)["host_name"]].ipv4 is None
    assert d.refresh().ipv4 == [f"{host(client, 2)} (eth0)"]
    s.start()
    assert fake(client).attached()[nic(s)["host_name"]].ipv4 == host(client, 50)


@pytest.mark.parametrize("address, reason", [
    ("GW", "the gateway's address"),
    ("OUT", "outside the network's subnet"),
    ("TAKEN", "is already used on network 'sysmgrbr0' by container c1"),
    ("STATIC", "is already used on network 'sysmgrbr0' by container s1"),
])
def test_address_conflicts_are_refused_before_anything_changes(client, address, reason):
    c1 = client.containers.create("c1", "busybox")
    client.containers.create("s1", "busybox", devices={
        "eth0": {"type": "nic", "network": NET, "ipv4.address": host(client, 60)}})
    value = {"GW": host(client, 1), "OUT": "192.0.2.7", "TAKEN": nic(c1)["ipv4"],
             "STATIC": host(client, 60)}[address]
    before = sorted(c.name for c in client.containers.all())
    with pytest.raises(ValidationError) as e:
        client.containers.create("x", "busybox", devices={
            "eth0": {"type": "nic", "network": NET, "ipv4.address": value}})
    assert reason in str(e.value) and e.value.issues[0].path == "devices.eth0.ipv4.address"
    if address != "TAKEN":  # the same through a change of an existing container
        c1.devices = {"eth0": {"type": "nic", "network": NET, "ipv4.address": value}}
        with pytest.raises(ValidationError, match=reason):
            c1.save()
    assert sorted(c.name for c in client.containers.all()) == before
    assert [lz.hostname for lz in fake(client).reservations(spec(client))] == ["c1", "s1"]


def test_a_static_address_shared_through_a_profile_is_refused(client):
    client.containers.create("a", "busybox", profiles=["default"])
    client.containers.create("b", "busybox", profiles=["default"])
    prof = client.profiles.get("default")
    prof.devices["eth0"] = {"type": "nic", "network": NET, "ipv4.address": host(client, 70)}
    with pytest.raises(ValidationError, match="already used"):
        prof.save()
    assert client.profiles.get("default").devices["eth0"].get("ipv4.address") is None


def test_copied_records_are_made_unique_for_the_newer_container(client):
    a = client.containers.create("a", "busybox")
    b = client.containers.create("b", "busybox")
    store = client.host.store
    vol = dict(store.container("b").volatile)
    vol["nics"] = store.container("a").volatile["nics"]   # what a naive copy would do
    with store.transaction():
        store.set_volatile("b", vol)
    b.start()
    na, nb = nic(a), nic(b)
    assert na["ipv4"] != nb["ipv4"] and na["hwaddr"] != nb["hwaddr"]
    assert na["host_name"] != nb["host_name"] and na == nic(a)


def test_networks_create_update_delete(client):
    lab = client.networks.create("lab", {"ipv4.address": "10.66.0.1/24", "bridge.mtu": "1400"})
    assert lab.bridge == f"smb{client.layout.root_id}1"
    assert fake(client).status(spec(client, "lab")).mtu == 1400
    with pytest.raises(ValidationError, match="overlaps 10.66.0.0/24"):
        client.networks.create("lab2", {"ipv4.address": "10.66.0.129/25"})
    c = client.containers.create("c", "busybox", devices={"eth0": {"type": "nic", "network": "lab"}})
    s = client.containers.create("s", "busybox", devices={
        "eth0": {"type": "nic", "network": "lab", "ipv4.address": "10.66.0.9"}})
    c.start()
    with pytest.raises(Conflict, match="in use by containers c, s"):
        lab.delete()
    # a new subnet: refused while a static address would fall outside it...
    lab.config["ipv4.address"] = "10.67.0.1/24"
    with pytest.raises(ValidationError, match="outside the network's subnet 10.67.0.0/24"):
        lab.save()
    s.delete()
    # ...else allocated addresses move into it, and running users are named for a restart
    assert lab.save() == ["c"]
    assert nic(c)["ipv4"] == "10.67.0.2"
    lab.config["ipv4.address"] = "auto"                    # auto keeps the recorded subnet
    assert lab.save() == [] and lab.config["ipv4.address"] == "10.67.0.1/24"
    c.delete(force=True)
    lab.delete()
    assert not client.networks.exists("lab") and not fake(client).status(spec_of(lab)).exists


def spec_of(net):
    from sysmgr.drivers.network.base import NetworkSpec

    return NetworkSpec(name=net.name, ifname=net.bridge, ipv4_cidr=net.config["ipv4.address"])


def write(tmp_path, text: str) -> str:
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_plans_create_update_and_repair_networks(client, tmp_path):
    path = write(tmp_path, """
        kind: Network
        name: lab
        config:
          ipv4.address: auto
        ---
        kind: Container
        name: w
        image: busybox
        devices:
          eth0: {type: nic, network: lab, name: eth0}
        state: running
        """)
    plan = client.manifests.plan([path])
    assert isinstance(plan.actions[0], CreateNetwork) and plan.actions[0].name == "lab"
    client.manifests.apply(plan)
    assert client.manifests.plan([path]).empty          # auto matches the recorded subnet
    # a nic change on a running container is planned as a restart
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("name: eth0}", "name: eth0, mtu: 1400}"))
    plan = client.manifests.plan([path])
    assert [type(a) for a in plan.actions][-1] is Restart
    assert "restart needed: devices.eth0" in "\n".join(plan.lines())
    with open(path, "w") as f:
        f.write(text.replace("ipv4.address: auto", "ipv4.address: auto\n  ipv4.nat: \"false\""))
    plan = client.manifests.plan([path])
    upd = [a for a in plan.actions if isinstance(a, UpdateNetwork)]
    assert [c.path for c in upd[0].changes] == ["config.ipv4.nat"] and upd[0].restart == ()
    client.manifests.apply(plan)
    assert client.networks.get("lab").config["ipv4.nat"] == "false"
    # the host lost the network (a reboot): the plan repairs it first
    lab = client.networks.get("lab")
    fake(client).delete(spec_of(lab))
    plan = client.manifests.plan([path])
    assert isinstance(plan.actions[0], RepairNetwork) and "missing" in plan.lines()[1]
    client.manifests.apply(plan)
    assert client.manifests.plan([path]).empty


def test_manifest_conflicts_name_file_and_line(client, tmp_path):
    gw = host(client, 1)
    path = write(tmp_path, f"""
        kind: Container
        name: a
        image: busybox
        devices:
          eth0: {{type: nic, network: {NET}, ipv4.address: {host(client, 9)}}}
        ---
        kind: Container
        name: b
        image: busybox
        devices:
          eth0: {{type: nic, network: {NET}, ipv4.address: {host(client, 9)}}}
        ---
        kind: Container
        name: c
        image: busybox
        devices:
          eth0: {{type: nic, network: {NET}, ipv4.address: {gw}}}
        ---
        kind: Container
        name: d
        image: busybox
        devices:
          eth0: {{type: nic, network: nowhere}}
        """)
    with pytest.raises(ValidationError) as e:
        client.manifests.plan([path])
    found = sorted((i.line, i.path, i.message) for i in e.value.issues)
    assert [(line, p) for line, p, _ in found] == [
        (12, "devices.eth0.ipv4.address"), (18, "devices.eth0.ipv4.address"),
        (24, "devices.eth0.network")]   # the line of each key at fault
    assert "already used on network 'sysmgrbr0' by container a" in found[0][2]
    assert "the gateway's address" in found[1][2] and "'nowhere' not found" in found[2][2]
    assert all(i.file == path for i in e.value.issues)


def test_list_json_shows_addresses(client, sysmgr_root):
    from click.testing import CliRunner

    from sysmgr.cli.main import cli

    c = client.containers.create("c1", "busybox")
    c.start()
    # the CLI in this process sees the fake runtime's running container
    res = CliRunner().invoke(cli, ["--root", sysmgr_root, "list", "--format", "json"])
    assert json.loads(res.stdout)[0]["addresses"] == [
        {"address": nic(c)["ipv4"], "family": "inet", "device": "eth0"}]
    res = CliRunner().invoke(cli, ["--root", sysmgr_root, "info", "c1"])
    assert nic(c)["host_name"] in res.stdout
    assert os.path.exists(os.path.join(sysmgr_root, "networks"))


def test_a_static_address_on_a_network_not_created_yet_needs_its_subnet(client, tmp_path):
    path = write(tmp_path, """
        kind: Network
        name: fresh
        ---
        kind: Container
        name: a
        image: busybox
        devices:
          eth0: {type: nic, network: fresh, ipv4.address: 10.1.2.3}
        """)
    with pytest.raises(ValidationError, match="ipv4.address auto and does not exist yet"):
        client.manifests.plan([path])
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("name: fresh\n", "name: fresh\nconfig:\n  ipv4.address: 10.1.2.1/24\n", 1))
    plan = client.manifests.plan([path])
    client.manifests.apply(plan)
    assert client.containers.get("a").nics["eth0"]["ipv4"] == "10.1.2.3"


def test_a_container_holding_anothers_static_address_does_not_start(client):
    a = client.containers.create("a", "busybox", devices={
        "eth0": {"type": "nic", "network": NET, "ipv4.address": host(client, 80)}})
    client.containers.create("b", "busybox")
    store = client.host.store
    rec = store.container("b")   # what a copy of `a` made outside create would look like
    rec.devices = dict(store.container("a").devices)
    with store.transaction():
        store.update_container(rec)
    with pytest.raises(ValidationError, match="cannot start: .* by container a"):
        client.containers.get("b").start()
    a.start()
    assert a.refresh().ipv4 == [f"{host(client, 80)} (eth0)"]
