"""Container nics on the start path and in views: plugging them in, unplugging, showing.

Before a start, :meth:`NicEngine.prepare_start` completes the nic records, brings the
container's networks up (repairing them if needed) and writes ``/etc/resolv.conf``; the
runtime then calls :meth:`NicEngine.attacher`'s hook between "namespaces exist" and "init
runs", so each nic's address and default route are configured *before init runs* (dnsmasq
serves the same address by DHCP; a nic with ``ipv4.dhcp: true`` is left to the guest's DHCP
client). Records and allocation are :mod:`sysmgr.engine.networks`'.
"""

from __future__ import annotations

import contextlib
import stat as stat_mod
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

from sysmgr._util import safefs
from sysmgr.drivers.network import base as netbase
from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.engine.netplan import Devices, claims, is_dhcp, nic_devices
from sysmgr.engine.networks import NetworkEngine
from sysmgr.errors import Issue, NotFound, SysmgrError, ValidationError
from sysmgr.state.db import ContainerRecord
from sysmgr.state.networks import NetworkRecord

RESOLV_MARKER = "# written by sysmgr"


class NicEngine:
    """The nics of one host root's containers (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.networks = NetworkEngine(host)
        self.store = host.store

    @property
    def driver(self) -> netbase.NetworkDriver:
        return self.networks.driver  # loaded on first use: a stopped container needs none

    def _nic_spec(self, rec: ContainerRecord, dname: str, dev: Mapping[str, str],
                  r: Mapping[str, str], nets: Mapping[str, NetworkRecord]) -> netbase.NicSpec:
        ifname = dev.get("name") or dname
        mtu = int(dev["mtu"]) if dev.get("mtu") else None
        net = nets.get(dev.get("network") or "")
        if net is not None:
            nic = netbase.NicSpec.on_network(
                self.networks.spec(net), container=rec.name, device=dname, host_ifname=r["host_name"],
                container_ifname=ifname, mac=r["hwaddr"],
                ipv4=None if is_dhcp(dev) else r.get("ipv4"))
            return replace(nic, mtu=mtu) if mtu else nic
        bridge = dev.get("parent") or (nets[r["network"]].bridge if r.get("network") in nets
                                       else r["host_name"])
        return netbase.NicSpec(container=rec.name, device=dname, host_ifname=r["host_name"],
                               container_ifname=ifname, mac=r["hwaddr"], bridge=bridge, mtu=mtu)

    def prepare_start(self, name: str, rootfs: str) -> list[netbase.NicSpec]:
        """Before a start: records in place, the container's networks up (repaired if
        needed), ``/etc/resolv.conf`` for pre-configured nics; the nics to attach."""
        devs = nic_devices(records.expanded(self.host, self.store.container(name))[1])
        if not devs:
            return []
        # level-based: records completed and this container's reservations pushed again
        # (a rename or a restored snapshot changed them without telling us)
        self._refuse_taken_static(name, devs)
        self.networks.sync(touched={d["network"] for d in devs.values() if d.get("network")})
        rec = self.store.container(name)
        nets = {r.name: r for r in self.networks.records()}
        nic_recs = self.networks.nic_records(rec)
        missing = sorted({d["network"] for d in devs.values()
                          if d.get("network") and d["network"] not in nets})
        if missing:
            raise NotFound(f"container {name!r}: network {missing[0]!r} not found",
                           hint="create it (sysmgr network create) or change the nic")
        checked: set[str] = set()
        nics = []
        resolv: NetworkRecord | None = None
        for dname, dev in devs.items():
            net = dev.get("network")
            if net and net not in checked:
                checked.add(net)
                if self.networks.problems(nets[net]):
                    self.repair(net)
                if resolv is None and not is_dhcp(dev):
                    resolv = nets[net]
            nics.append(self._nic_spec(rec, dname, dev, nic_recs[dname], nets))
        if resolv is not None:
            write_resolv(rootfs, self.networks.spec(resolv))
        return nics

    def _refuse_taken_static(self, name: str, devs: Devices) -> None:
        """A copy, import or restore made outside ``create`` may carry another container's
        static address: refuse to start it while an older or a running container has it."""
        rec = self.store.container(name)
        holders: dict[tuple[str, str], str] = {}
        for c in self.store.containers():
            if c.name == name:
                continue
            if (c.created, c.name) < (rec.created, rec.name) or \
                    records.status(self.host, c).state != STOPPED:
                for cl in claims(c.name, records.expanded(self.host, c)[1], self.networks.nic_records(c)):
                    holders[(cl.network, cl.address)] = cl.container
        issues = [Issue(f"container {name!r} cannot start: {cl.address} is already used on "
                        f"network {cl.network!r} by container {holders[(cl.network, cl.address)]}",
                        path=f"devices.{cl.device}.ipv4.address")
                  for cl in claims(name, devs, {}) if cl.static
                  and (cl.network, cl.address) in holders]
        if issues:
            raise ValidationError(issues)

    def repair(self, network: str) -> list[str]:
        """Repair ``network`` (bridge, dnsmasq, nftables, leases) and put the running
        containers' nics on it back on its bridge: a repaired network is connectivity,
        not only a bridge. One line per nic put back."""
        self.networks.repair(network)
        nets = {r.name: r for r in self.networks.records()}
        done = []
        with self.host.locked():
            for rec in self.store.containers():
                st = records.status(self.host, rec)
                if st.state == STOPPED or not st.pid:
                    continue
                nic_recs = self.networks.nic_records(rec)
                for dname, dev in sorted(nic_devices(records.expanded(self.host, rec)[1]).items()):
                    if dev.get("network") != network or dname not in nic_recs:
                        continue
                    nic = self._nic_spec(rec, dname, dev, nic_recs[dname], nets)
                    how = "re-joined" if self.driver.replug(nic, st.pid) else "plugged in again"
                    done.append(f"{rec.name} {dname} {how}")
        return done

    def repair_all(self) -> list[str]:
        """Repair every recorded network with a problem; what was done (for ``init``)."""
        done = []
        for rec in self.networks.records():
            found = self.networks.problems(rec)
            if found:
                nics = self.repair(rec.name)
                done.append(f"repaired network {rec.name!r}: {'; '.join(found)}"
                            + (f" (nics back on it: {', '.join(nics)})" if nics else ""))
        return done

    def attacher(self, nics: Sequence[netbase.NicSpec]) -> Callable[[int], None] | None:
        """The runtime's ``before_go`` hook: plug every nic into init's netns."""
        if not nics:
            return None

        def attach(pid: int) -> None:
            for nic in nics:
                self.driver.attach(nic, pid)

        return attach

    def detach(self, name: str) -> None:
        """Unplug a stopped container's nics (the real ones vanished with its netns)."""
        rec = self.store.container(name)
        nic_recs = self.networks.nic_records(rec)
        if not nic_recs:
            return
        nets = {r.name: r for r in self.networks.records()}
        devs = nic_devices(records.expanded(self.host, rec)[1])
        for dname, r in sorted(nic_recs.items()):
            with contextlib.suppress(SysmgrError):  # never fail a stop over a leftover
                self.driver.detach(self._nic_spec(rec, dname, devs.get(dname, {}), r, nets))

    def view(self, rec: ContainerRecord, devices: Devices, pid: int | None,
             cache: dict[str, Any] | None = None) -> dict[str, Any]:
        """``nics`` (per device: interface, host end, MAC, network, address), ``addresses``
        (``{"address", "family", "device"}``, LXD's shape: the interface inside) and ``ipv4``
        (``"10.x.y.z (eth0)"`` for ``list``) of a container; ``pid``: its init when running.

        Pre-configured nics show their recorded address; DHCP nics the address their lease
        has; nics on unmanaged bridges are read from the container's netns.
        """
        cache = {} if cache is None else cache
        nic_recs = self.networks.nic_records(rec)
        nics: dict[str, dict[str, Any]] = {}
        ipv4: list[str] = []
        addresses: list[dict[str, str]] = []

        def found(address: str, ifname: str) -> None:
            ipv4.append(f"{address} ({ifname})")
            addresses.append({"address": address, "family": "inet", "device": ifname})

        unmanaged: dict[str, str] = {}
        for dname, dev in nic_devices(devices).items():
            r = nic_recs.get(dname, {})
            ifname = dev.get("name") or dname
            nics[dname] = {"name": ifname, "host_name": r.get("host_name"),
                           "hwaddr": r.get("hwaddr"), "network": dev.get("network"),
                           "parent": dev.get("parent"), "ipv4": r.get("ipv4"),
                           "dhcp": is_dhcp(dev)}
            if pid is None:
                continue
            net = dev.get("network")
            if not net:
                unmanaged[ifname] = dname
            elif r.get("ipv4") and not is_dhcp(dev):
                found(r["ipv4"], ifname)
            elif r.get("hwaddr"):
                leased = self._leased(net, cache).get(r["hwaddr"].lower())
                if leased:
                    found(leased, ifname)
        if unmanaged and pid is not None:
            with contextlib.suppress(SysmgrError):
                for ifname, cidr in self.driver.container_addresses(pid):
                    if ifname in unmanaged:
                        found(cidr.split("/")[0], ifname)
        return {"nics": nics, "ipv4": ipv4, "addresses": addresses}

    def _leased(self, net: str, cache: dict[str, Any]) -> dict[str, str]:
        key = f"leases:{net}"
        if key not in cache:
            try:
                found = self.driver.leases(self.networks.spec(self.networks.record(net)))
                cache[key] = {lz.mac.lower(): lz.ipv4 for lz in found if lz.ipv4}
            except SysmgrError:
                cache[key] = {}
        return cache[key]


def write_resolv(rootfs: str, net: netbase.NetworkSpec) -> None:
    """Point the container's resolver at its network's DNS server, unless the file is
    someone else's (non-empty without sysmgr's marker, or not a regular file)."""
    text = (f"{RESOLV_MARKER} for network {net.name}; replace it to manage it yourself\n"
            f"nameserver {net.gateway}\nsearch {net.dns_domain}\n")
    try:
        st = safefs.stat(rootfs, "/etc/resolv.conf", follow_symlinks=False)
    except NotFound:
        st = None
    except SysmgrError:
        return
    if st is not None:
        if not stat_mod.S_ISREG(st.st_mode):
            return  # e.g. systemd-resolved's symlink: the image manages DNS itself
        if st.st_size:
            try:
                current = safefs.read_file(rootfs, "/etc/resolv.conf").decode(errors="replace")
            except SysmgrError:
                return
            if current == text or not current.startswith(RESOLV_MARKER):
                return
    with contextlib.suppress(NotFound):  # an image without /etc
        safefs.write_file(rootfs, "/etc/resolv.conf", text.encode(), mode=0o644)
