"""Container nics on the start path and in views: plugging them in, unplugging, showing.

Before a start, :meth:`NicEngine.prepare` completes the nic records and brings the
containers' networks up (repairing them if needed), once for all the containers one call
starts; :meth:`StartNics.specs` writes each one's ``/etc/resolv.conf`` and says its nics; the
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
from sysmgr.engine.nicrules import RESOLV_MARKER, Devices, claims, is_dhcp, nic_devices
from sysmgr.engine.networks import NetworkEngine
from sysmgr.errors import Issue, NotFound, SysmgrError, ValidationError
from sysmgr.state.db import ContainerRecord
from sysmgr.state.networks import NetworkRecord


class NicEngine:
    """The nics of one host root's containers (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.networks = NetworkEngine(host)
        self.store = host.store

    @property
    def driver(self) -> netbase.NetworkDriver:
        return self.networks.driver  # loaded on first use: a stopped container needs none

    def nic_spec(self, rec: ContainerRecord, dname: str, dev: Mapping[str, str],
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

    def prepare(self, starting: Sequence[records.Expanded]) -> StartNics:
        """Before ``starting`` start (one container, or the many of one call): a start that
        would take a static address another container holds is refused; the nic records
        are completed and the reservations of their networks pushed, once for them all
        (dnsmasq reloads at most once per network, and not at all when nothing changed);
        each of their networks is checked, and repaired when broken, once."""
        devs = {ex.record.name: nic_devices(ex.devices) for ex in starting}
        devs = {name: d for name, d in devs.items() if d}
        refused = self._refuse_taken_static(devs)
        used = sorted({d["network"] for name, ds in devs.items() if name not in refused
                       for d in ds.values() if d.get("network")})
        if len(refused) < len(devs):
            # level-based: records completed and reservations pushed again (a rename or a
            # restored snapshot changed them without telling us)
            self.networks.sync(touched=used)
        nets = {r.name: r for r in self.networks.records()}
        broken: dict[str, SysmgrError] = {}
        for net in used:
            try:
                if net in nets and self.networks.problems(nets[net]):
                    self.repair(net)
            except SysmgrError as e:  # only the containers on this network fail
                broken[net] = e
        return StartNics(self, devs, nets, refused, broken)

    def _refuse_taken_static(self, starting: Mapping[str, Devices]) -> dict[str, SysmgrError]:
        """A copy, import or restore made outside ``create`` may carry another container's
        static address: refuse to start one while an older or a running container has it.
        The refusals, by container."""
        statics = {name: [cl for cl in claims(name, devs, {}) if cl.static]
                   for name, devs in starting.items()}
        statics = {name: cls for name, cls in statics.items() if cls}
        if not statics:
            return {}  # the usual case: no container of the whole store is read
        others = [(c, records.status(self.host, c).state != STOPPED,
                   claims(c.name, records.expanded(self.host, c)[1], self.networks.nic_records(c)))
                  for c in self.store.containers()]
        refused: dict[str, SysmgrError] = {}
        for name, mine in statics.items():
            rec = next(c for c, _, _ in others if c.name == name)
            holders = {(cl.network, cl.address): cl.container for c, running, cls in others
                       if c.name != name and (running or (c.created, c.name) < (rec.created, rec.name))
                       for cl in cls}
            issues = [Issue(f"container {name!r} cannot start: {cl.address} is already used on "
                            f"network {cl.network!r} by container {holders[(cl.network, cl.address)]}",
                            path=f"devices.{cl.device}.ipv4.address")
                      for cl in mine if (cl.network, cl.address) in holders]
            if issues:
                refused[name] = ValidationError(issues)
        return refused

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
                    nic = self.nic_spec(rec, dname, dev, nic_recs[dname], nets)
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
                self.driver.detach(self.nic_spec(rec, dname, devs.get(dname, {}), r, nets))

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


class StartNics:
    """The nics of the containers one start call starts (:meth:`NicEngine.prepare`)."""

    def __init__(self, engine: NicEngine, devs: Mapping[str, Devices],
                 nets: Mapping[str, NetworkRecord], refused: Mapping[str, SysmgrError],
                 broken: Mapping[str, SysmgrError]) -> None:
        self.engine = engine
        self.devs = devs
        self.nets = nets
        self.refused = refused
        self.broken = broken

    def specs(self, name: str, rootfs: str) -> list[netbase.NicSpec]:
        """Container ``name``'s nics to attach, after writing its ``/etc/resolv.conf`` for
        pre-configured nics. Raises what keeps it from starting: a static address taken, a
        network missing or broken."""
        devs = self.devs.get(name)
        if not devs:
            return []
        if name in self.refused:
            raise self.refused[name]
        wanted = [d["network"] for d in devs.values() if d.get("network")]
        missing = sorted(n for n in wanted if n not in self.nets)
        if missing:
            raise NotFound(f"container {name!r}: network {missing[0]!r} not found",
                           hint="create it (sysmgr network create) or change the nic")
        for net in wanted:
            if net in self.broken:
                raise self.broken[net]  # what its repair ran into
        rec = self.engine.store.container(name)  # with the records prepare() completed
        nic_recs = self.engine.networks.nic_records(rec)
        resolv = next((self.nets[d["network"]] for d in devs.values()
                       if d.get("network") and not is_dhcp(d)), None)
        if resolv is not None:
            write_resolv(rootfs, self.engine.networks.spec(resolv))
        return [self.engine.nic_spec(rec, dname, dev, nic_recs[dname], self.nets)
                for dname, dev in devs.items()]


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
