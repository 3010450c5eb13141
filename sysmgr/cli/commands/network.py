"""``sysmgr network``: managed networks as ``lxc network`` manages them: list, show, info,
create, get/set/unset/edit (``--property description``), rename, delete, attach/detach (a
nic on a container), list-leases and list-allocations."""

from __future__ import annotations

from typing import Any, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, Group, confirm, echo_err, format_option, output, parse_assignments,
    pass_app, report_pending)
from sysmgr.errors import AlreadyExists, NotFound
from sysmgr.cli.commands._keyvalue import Noun, register, save_local_config

HEADERS = ("NAME", "TYPE", "BRIDGE", "IPV4", "NAT", "DESCRIPTION", "USED BY", "STATE")


def network_document(n: Any) -> dict[str, Any]:
    return {
        "name": n.name,
        "type": n.type,
        "managed": True,
        "bridge": n.bridge,
        "description": n.description,
        "config": dict(sorted(n.config.items())),
        "used_by": list(n.used_by),
    }


def network_edit_document(n: Any) -> dict[str, Any]:
    """What ``network edit`` opens: the name and the fields it can change (the type, bridge
    and users are the network's own, not the user's to edit)."""
    return {"name": n.name, "description": n.description, "config": dict(sorted(n.config.items()))}


def _report_pending(name: str, pending: Sequence[str]) -> None:
    if pending:
        echo_err(f"Restart these containers for network {name}'s new address or MTU to reach "
                 f"them: {', '.join(pending)}")


@click.group(cls=Group)
def network() -> None:
    """Manage networks (managed bridges with DHCP, DNS and NAT).

    \b
    Keys (see 'sysmgr keys --network'): ipv4.address (CIDR or auto), ipv4.nat,
    ipv4.dhcp, ipv4.dhcp.ranges, dns.domain, dns.upstream, bridge.mtu, user.*
    """


NETWORK = Noun(
    "network",
    fetch=lambda client, name: client.networks.get(name),
    document=lambda n, expanded: network_document(n),
    edit_document=network_edit_document,
    edit_fields=("config", "description"),
    set_config=save_local_config("network"),
    report=_report_pending,
    properties=("description",),
    help={
        "get": "Print one config key of a network.",
        "set": "Set network config keys (KEY=VALUE..., or KEY VALUE) and make the host match.",
        "unset": "Remove config keys from a network (back to their defaults).",
        "edit": "Edit a network's description and config as YAML ($EDITOR, or YAML on stdin)\n"
                "and make the host match.",
    },
    keys_doc="Keys: sysmgr keys --network",
)
register(network, NETWORK)


@network.command("list")
@format_option()
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List networks."""
    records = []
    for n in sorted(app.client.networks.all(), key=lambda n: n.name):
        doc = network_document(n)
        st = n.state()
        doc["status"] = st.status
        doc["problems"] = list(st.problems)
        records.append(doc)
    output(render.listing(fmt, HEADERS, records, lambda r: [
        r["name"], r["type"], r["bridge"], r["config"].get("ipv4.address", ""),
        r["config"].get("ipv4.nat", "true"), r["description"], len(r["used_by"]),
        r["status"].upper()]))


@network.command("info")
@click.argument("name")
@format_option(("text", "yaml", "json"), default="text")
@pass_app
def info(app: AppContext, name: str, fmt: str) -> None:
    """Show a network's state: bridge, addresses, dnsmasq, nftables, ports and leases."""
    n = app.client.networks.get(name)
    st = n.state()
    record = {
        **network_document(n),
        "state": {
            "status": st.status, "up": st.up, "mtu": st.mtu, "addresses": list(st.addresses),
            "ports": list(st.ports), "dnsmasq_pid": st.dnsmasq_pid, "nft_table": st.nft_table,
            "problems": list(st.problems),
        },
        "leases": [{"hostname": lz.hostname, "hwaddr": lz.hwaddr, "address": lz.address,
                    "type": lz.type} for lz in st.leases],
    }
    if fmt != "text":
        click.echo(render.document(fmt, record))
        return
    cfg = n.config
    lines = [f"Name: {n.name}", f"Type: {n.type}", f"Interface: {n.bridge}",
             f"State: {'up' if st.up else 'down'}"]
    if n.description:
        lines.append(f"Description: {n.description}")
    lines += ["", "IP addresses:"] + [f"  inet {a}" for a in st.addresses]
    lines += ["", "Network:",
              f"  NAT: {cfg.get('ipv4.nat', 'true')}",
              f"  DHCP: {cfg.get('ipv4.dhcp', 'true')}",
              f"  DNS domain: {cfg.get('dns.domain', 'sysmgr')}",
              f"  MTU: {st.mtu if st.mtu is not None else ''}",
              f"  dnsmasq: {'pid ' + str(st.dnsmasq_pid) if st.dnsmasq_pid else 'not running'}",
              f"  nftables table: {'present' if st.nft_table else 'missing'}"]
    if st.problems:
        lines += ["", "Problems (sysmgr init or apply repairs them):"]
        lines += [f"  {p}" for p in st.problems]
    if st.ports:
        lines += ["", "Ports:"] + [f"  {p}" for p in st.ports]
    if st.leases:
        lines += ["", "DHCP leases:"]
        lines += [f"  {lz.hostname:<20} {lz.hwaddr}  {lz.address or '-':<15} {lz.type}"
                  for lz in st.leases]
    used = record["used_by"]
    if used:
        lines += ["", "Used by:"] + [f"  {u}" for u in used]
    click.echo("\n".join(lines))


@network.command("create")
@click.argument("name")
@click.argument("config", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-t", "--type", "ntype", default="bridge", show_default=True, help="Network type.")
@click.option("--description", default="", help="Network description.")
@pass_app
def create(app: AppContext, name: str, config: tuple[str, ...], ntype: str,
           description: str) -> None:
    """Create a network: sysmgr network create lab ipv4.address=10.50.0.1/24 ipv4.nat=false"""
    n = app.client.networks.create(name, parse_assignments(config), type=ntype,
                                   description=description)
    confirm("Network", name, f"created (bridge {n.bridge}, {n.config.get('ipv4.address')})")


@network.command("delete")
@click.argument("name")
@pass_app
def delete(app: AppContext, name: str) -> None:
    """Delete a network (refused while a container or profile has a nic on it)."""
    app.client.networks.get(name).delete()
    confirm("Network", name, "deleted")


@network.command("rename")
@click.argument("name")
@click.argument("new")
@pass_app
def rename(app: AppContext, name: str, new: str) -> None:
    """Rename a network (one no container or profile uses, as in LXD)."""
    app.client.networks.get(name).rename(new)
    confirm("Network", name, f"renamed to {new}")


@network.command("attach")
@click.argument("name")
@click.argument("container")
@click.argument("devname", required=False, metavar="[DEVICE]")
@click.argument("ifname", required=False, metavar="[INTERFACE]")
@pass_app
def attach(app: AppContext, name: str, container: str, devname: str | None,
           ifname: str | None) -> None:
    """Give CONTAINER a nic on network NAME: device DEVICE (default: the network's name),
    interface INTERFACE inside (default: the device's name)."""
    app.client.networks.get(name)  # a missing network is named before the container changes
    c = app.client.containers.get(container)
    dev = devname or name
    if dev in c.devices:
        raise AlreadyExists(f"device {dev!r} already exists on {container!r}")
    c.devices[dev] = {"type": "nic", "network": name, "name": ifname or dev}
    pending = c.save()
    confirm("Network", name, f"attached to {container} (device {dev})")
    report_pending(container, pending)


@network.command("detach")
@click.argument("name")
@click.argument("container")
@click.argument("devname", required=False, metavar="[DEVICE]")
@pass_app
def detach(app: AppContext, name: str, container: str, devname: str | None) -> None:
    """Remove CONTAINER's nic on network NAME (DEVICE: which one, when it has several)."""
    c = app.client.containers.get(container)
    mine = [k for k, d in c.devices.items()
            if d.get("type") == "nic" and d.get("network") == name and devname in (None, k)]
    if not mine:
        via = [k for k, d in c.expanded_devices.items()
               if d.get("type") == "nic" and d.get("network") == name]
        hint = (f"its nic {via[0]} comes from a profile: sysmgr config device add "
                f"{container} {via[0]} none") if via else None
        raise NotFound(f"container {container!r} has no nic of its own on network {name!r}",
                       hint=hint)
    if len(mine) > 1:
        raise click.UsageError(f"{container} has several nics on {name} ({', '.join(mine)}): "
                               "name the DEVICE")
    del c.devices[mine[0]]
    pending = c.save()
    confirm("Network", name, f"detached from {container} (device {mine[0]})")
    report_pending(container, pending)


@network.command("list-leases")
@click.argument("name")
@format_option()
@pass_app
def list_leases(app: AppContext, name: str, fmt: str) -> None:
    """List the DHCP leases and reservations of a network (as lxc network list-leases)."""
    st = app.client.networks.get(name).state()
    records = [{"hostname": lz.hostname, "hwaddr": lz.hwaddr, "address": lz.address,
                "type": lz.type.upper()} for lz in st.leases]
    output(render.listing(fmt, ("HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"), records,
                          lambda r: [r["hostname"], r["hwaddr"], r["address"] or "", r["type"]]))


@network.command("list-allocations")
@format_option()
@pass_app
def list_allocations(app: AppContext, fmt: str) -> None:
    """List the addresses in use on this host's networks: each network's own, and each
    container's nic (as lxc network list-allocations)."""
    records = []
    for n in sorted(app.client.networks.all(), key=lambda n: n.name):
        if n.config.get("ipv4.address"):
            records.append({"used_by": f"network/{n.name}", "address": n.config["ipv4.address"],
                            "type": "network", "nat": n.config.get("ipv4.nat", "true") == "true",
                            "hwaddr": "", "network": n.name})
    for c in sorted(app.client.containers.all(), key=lambda c: c.name):
        for dev, nic in sorted((getattr(c, "nics", None) or {}).items()):
            if nic.get("ipv4") and nic.get("network"):
                records.append({"used_by": f"container/{c.name}", "address": f"{nic['ipv4']}/32",
                                "type": "container", "nat": False, "hwaddr": nic.get("hwaddr") or "",
                                "network": nic["network"]})
    output(render.listing(fmt, ("USED BY", "ADDRESS", "TYPE", "NAT", "HARDWARE ADDRESS"), records,
                          lambda r: [r["used_by"], r["address"], r["type"],
                                     str(r["nat"]).lower(), r["hwaddr"]]))
