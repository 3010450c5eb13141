"""Managed networks on the host and the nic records of containers (the side effects).

The :class:`NetworkEngine` of a host root owns everything networked but the start path:

- **networks**: ``kind: Network`` records (:mod:`sysmgr.state.networks`); creating one picks
  the host bridge name ``smb<rootid><index>`` and, for ``ipv4.address: auto``, a free /24
  (:func:`ipam.pick_subnet` over the host's networks and the recorded ones), both recorded so
  they stay stable. The driver makes the host match (:meth:`NetworkDriver.ensure`: bridge,
  dnsmasq, nftables); :meth:`NetworkEngine.problems` observes it every time and
  :meth:`NetworkEngine.repair` re-ensures what is gone (after a reboot, a killed dnsmasq).
- **nic records**: each container nic has a record in the container's volatile state
  (``volatile["nics"][device]``: ``host_name`` ``smv<rootid><index>``, ``hwaddr``, and on a
  managed network ``network`` + ``ipv4``), made by :meth:`NetworkEngine.sync` and kept for the
  container's life, so its MAC, host interface and address survive restarts. A static
  ``ipv4.address`` is recorded as given; otherwise the lowest free address is allocated.
  ``sync`` is level-based: it allocates what is missing, drops what no device needs any more,
  re-allocates duplicates (a copied record; the older container keeps its values) and pushes
  the DHCP reservations + DNS names of every network whose set changed.

The nic rules and the planning are pure (:mod:`sysmgr.engine.nicrules`, :mod:`sysmgr.engine.netplan`); plugging nics into a
starting container is :mod:`sysmgr.engine.nics`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from sysmgr.drivers.network import base as netbase
from sysmgr.drivers.network import ipam
from sysmgr.drivers.runtime.base import STOPPED
from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.engine.nicrules import (
    DEFAULT_NIC, NICS, RESTART_KEYS, Claim, Devices, NetFacts, claims,
    conflicts, dns_label, facts, nic_devices, nic_problems, normalize_address)
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    AlreadyExists, Conflict, DriverError, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.model import network_keys as nkeys
from sysmgr.state import networks as snet
from sysmgr.state.db import ContainerRecord
from sysmgr.state.networks import NetworkRecord
from sysmgr.types import NetworkLease, NetworkState

if TYPE_CHECKING:  # pragma: no cover - plans and observation: not on a start's import path
    from sysmgr.engine.actions import Action, Plan
    from sysmgr.engine.observed import ObservedNetwork

#: static addresses of a plan being applied: never handed out by allocation
_RESERVED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "sysmgr_reserved_addresses", default=frozenset())


@contextlib.contextmanager
def reserving(plan: Plan) -> Iterator[None]:
    """While ``plan`` runs, keep the static addresses it declares out of allocations."""
    from sysmgr.engine.netplan import reserved_addresses  # plans only (cold start)

    token = _RESERVED.set(frozenset(reserved_addresses(plan)))
    try:
        yield
    finally:
        _RESERVED.reset(token)


def execute(host: Host, a: Action, rev: Reverter) -> None:
    """Run one network action of a plan, registering its undo."""
    from sysmgr.engine.actions import CreateNetwork, UpdateNetwork  # plans only (cold start)

    engine = NetworkEngine(host)
    if isinstance(a, CreateNetwork):
        engine.create(a.name, dict(a.config), type=a.type, description=a.description)
        rev.add(lambda: engine.delete(a.name), f"delete network {a.name}")
    elif isinstance(a, UpdateNetwork):
        old = engine.record(a.name)
        engine.update(a.name, config=dict(a.config), description=a.description)
        rev.add(lambda: engine.update(old.name, config=old.config, description=old.description),
                f"restore network {a.name}")
    else:  # pragma: no cover - RepairNetwork runs through nics.NicEngine.repair
        raise SysmgrError(f"not a network action: {a!r}")


class NetworkEngine:
    """Networks and nic records of one host root (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def store(self) -> Any:
        return self.host.store

    @property
    def driver(self) -> netbase.NetworkDriver:
        return self.host.network_driver

    # -- records -----------------------------------------------------------------------------
    def records(self) -> list[NetworkRecord]:
        return snet.all_networks(self.store)

    def record(self, name: str) -> NetworkRecord:
        return snet.get(self.store, name)

    def exists(self, name: str) -> bool:
        return snet.exists(self.store, name)

    def spec(self, rec: NetworkRecord) -> netbase.NetworkSpec:
        """The driver's view of a recorded network."""
        norm = nkeys.normalize_network_config(rec.type, rec.config)
        ranges = norm.get("ipv4.dhcp.ranges")
        return netbase.NetworkSpec(
            name=rec.name, ifname=rec.bridge, ipv4_cidr=norm["ipv4.address"],
            nat=norm["ipv4.nat"] == "true", dhcp=norm["ipv4.dhcp"] == "true",
            dhcp_ranges=nkeys.parse_ranges_text(ranges) if ranges else (),
            dns_domain=norm["dns.domain"],
            mtu=int(norm["bridge.mtu"]) if norm.get("bridge.mtu") else None,
            dns_upstream=norm["dns.upstream"] == "true")

    def facts(self) -> dict[str, NetFacts]:
        return {r.name: facts(r.type, r.config) for r in self.records()}

    def _subnets(self, exclude: str | None = None) -> list[str]:
        return [str(ipaddress.IPv4Interface(r.config["ipv4.address"]).network)
                for r in self.records() if r.name != exclude and r.config.get("ipv4.address")]

    def _check_config(self, name: str, ntype: str, config: Mapping[str, str]) -> None:
        issues = []
        reason = mnames.object_name_problem(name)
        if reason:
            issues.append(Issue(f"invalid network name {name!r}: {reason}", path="name"))
        reason = nkeys.type_problem(ntype)
        if reason:
            issues.append(Issue(reason, path="type"))
        else:
            issues += [Issue(r, path=p) for p, r in nkeys.validate_network_config(ntype, config)]
        if issues:
            raise ValidationError(issues)

    def _resolve_address(self, name: str, config: dict[str, str], current: str | None) -> None:
        """Turn ``auto``/unset into a concrete subnet (kept when ``current``), and refuse one
        that overlaps a network already on the host."""
        wanted = str(config.get("ipv4.address", "")).strip()
        if not wanted or wanted.lower() == nkeys.AUTO:
            config["ipv4.address"] = current or ipam.pick_subnet(
                [*self.driver.used_networks(), *self._subnets()])
            return
        config["ipv4.address"] = str(ipam.parse_gateway(wanted))
        if current is not None and \
                ipaddress.IPv4Interface(current).network == ipaddress.IPv4Interface(wanted).network:
            return
        mine = ({str(ipaddress.IPv4Interface(current).network)} if current else set())
        hits = [n for n in ipam.overlapping(wanted, [*self.driver.used_networks(),
                                                     *self._subnets(exclude=name)])
                if n not in mine]
        if hits:
            raise ValidationError([Issue(f"{wanted} overlaps {', '.join(hits)}, already used on "
                                         "this host", path="config.ipv4.address")],
                                  hint="pick another subnet, or ipv4.address=auto")

    # -- networks ----------------------------------------------------------------------------
    def create(self, name: str, config: Mapping[str, str] | None = None, *,
               type: str = nkeys.DEFAULT_TYPE, description: str = "") -> NetworkRecord:
        """Create a managed network and bring it up on the host."""
        cfg = {k: mkeys.value_to_str(v) for k, v in (config or {}).items()}
        self._check_config(name, type, cfg)
        with self.host.locked():
            if self.exists(name):
                raise AlreadyExists(f"network {name!r} already exists")
            self._resolve_address(name, cfg, None)
            root_id = self.host.layout.root_id
            used = {netbase.parse_index(r.bridge, netbase.BRIDGE_PREFIX, root_id)
                    for r in self.records()}
            used |= {netbase.parse_index(i, netbase.BRIDGE_PREFIX, root_id)
                     for i in self.driver.owned_interfaces()}
            index = netbase.next_index(i for i in used if i is not None)
            rec = NetworkRecord(name, type, cfg, description,
                                netbase.bridge_ifname(root_id, index), time.time())
            spec = self.spec(rec)
            with Reverter() as r:
                self.driver.ensure(spec)
                r.add(lambda: self.driver.delete(spec), f"remove network {name} from the host")
                with self.store.transaction():
                    snet.add(self.store, rec)
                r.success()
            return rec

    def update(self, name: str, *, config: Mapping[str, str] | None = None,
               description: str | None = None) -> list[str]:
        """Replace a network's config and/or description and make the host match.

        ``ipv4.address: auto`` (or unset) keeps the recorded subnet. A new subnet moves every
        allocated address into it (static ones must fit it).

        Returns:
            Running containers on the network that keep the old address or MTU until
            restarted.
        """
        with self.host.locked():
            old = self.record(name)
            cfg = dict(old.config) if config is None else \
                {k: mkeys.value_to_str(v) for k, v in config.items()}
            self._check_config(name, old.type, cfg)
            self._resolve_address(name, cfg, old.config.get("ipv4.address"))
            new = NetworkRecord(old.name, old.type, cfg,
                                old.description if description is None else description,
                                old.bridge, old.created)
            nets = {name: facts(new.type, new.config)}

            def on_it(devs: Devices) -> Devices:
                return {k: d for k, d in nic_devices(devs).items() if d.get("network") == name}

            issues = [Issue(f"container {c.name}: {r}", path=p) for c in self.store.containers()
                      for p, r in nic_problems(on_it(records.expanded(self.host, c)[1]), nets)]
            issues += [Issue(f"profile {pr.name}: {r}", path=p) for pr in self.store.profiles()
                       for p, r in nic_problems(on_it(pr.devices), nets)]
            if issues:
                raise ValidationError(issues)
            with Reverter() as r:
                self.driver.ensure(self.spec(new))
                r.add(lambda: self.driver.ensure(self.spec(old)), f"restore network {name}")
                with self.store.transaction():
                    snet.update(self.store, new)
                r.success()
            self.sync(touched=[name])
            o = nkeys.normalize_network_config(old.type, old.config)
            n = nkeys.normalize_network_config(new.type, new.config)
            baked = sorted(k for k in RESTART_KEYS if o.get(k) != n.get(k))
            if not baked:
                return []
            users = self.running_users(name)
            for c in users:
                records.need_restart(self.host, c, [f"network {name}: {', '.join(baked)}"])
            return users

    def delete(self, name: str) -> None:
        """Remove a network from the host and the record; refused while a nic uses it."""
        with self.host.locked():
            rec = self.record(name)
            containers, profiles = self.used_by(name)
            if containers or profiles:
                what = "; ".join(x for x in (
                    f"containers {', '.join(containers)}" if containers else "",
                    f"profiles {', '.join(profiles)}" if profiles else "") if x)
                raise Conflict(f"network {name!r} is in use by {what}",
                               hint="remove those nic devices first, e.g. "
                                    f"'sysmgr profile device remove {(profiles or ['PROFILE'])[0]} "
                                    f"{DEFAULT_NIC}'")
            self.driver.delete(self.spec(rec))
            with self.store.transaction():
                snet.delete(self.store, name)

    def rename(self, name: str, new: str) -> None:
        """Rename an unused network (as LXD: a nic names its network, and the host's bridge,
        dnsmasq and nftables carry the name, so one in use would be cut off)."""
        with self.host.locked():
            rec = self.record(name)
            self._check_config(new, rec.type, rec.config)
            if self.exists(new):
                raise AlreadyExists(f"network {new!r} already exists")
            containers, profiles = self.used_by(name)
            if containers or profiles:
                raise Conflict(f"network {name!r} is in use by "
                               f"{', '.join(containers + [f'profile {p}' for p in profiles])}",
                               hint="detach it first: sysmgr network detach NETWORK CONTAINER")
            new_rec = NetworkRecord(new, rec.type, rec.config, rec.description, rec.bridge,
                                    rec.created)
            with Reverter() as r:
                self.driver.delete(self.spec(rec))
                r.add(lambda: self.driver.ensure(self.spec(rec)), f"bring network {name} back")
                self.driver.ensure(self.spec(new_rec))
                r.add(lambda: self.driver.delete(self.spec(new_rec)), f"remove network {new}")
                with self.store.transaction():
                    snet.rename(self.store, name, new)
                r.success()

    def used_by(self, name: str) -> tuple[list[str], list[str]]:
        """(containers, profiles) with a nic on network ``name``."""
        def uses(devs: Devices) -> bool:
            return any(d.get("network") == name for d in nic_devices(devs).values())

        containers = [c.name for c in self.store.containers() if uses(records.expanded(self.host, c)[1])]
        profiles = [p.name for p in self.store.profiles() if uses(p.devices)]
        return containers, profiles

    def running_users(self, name: str) -> list[str]:
        out = []
        for c in self.store.containers():
            if any(d.get("network") == name for d in nic_devices(records.expanded(self.host, c)[1]).values()) \
                    and records.status(self.host, c).state != STOPPED:
                out.append(c.name)
        return out

    def status(self, name: str) -> netbase.NetworkStatus:
        return self.driver.status(self.spec(self.record(name)))

    def problems(self, rec: NetworkRecord) -> list[str]:
        """What is missing on the host for a recorded network (empty: healthy)."""
        spec = self.spec(rec)
        st = self.driver.health(spec)
        out = []
        if not st.exists:
            out.append(f"bridge {rec.bridge} is missing")
        else:
            if not st.up:
                out.append(f"bridge {rec.bridge} is down")
            if str(ipam.parse_gateway(spec.ipv4_cidr)) not in st.addresses:
                out.append(f"bridge {rec.bridge} lacks its address {spec.ipv4_cidr}")
        if st.dnsmasq_pid is None:
            out.append("dnsmasq is not running (or runs with an old configuration)")
        if not st.nft_table:
            out.append(f"nftables table {netbase.nft_table_name(rec.bridge)} is missing")
        return out

    def repair(self, name: str) -> None:
        """Re-ensure a network (bridge, address, dnsmasq, nftables) and its leases."""
        with self.host.locked():
            rec = self.record(name)
            self.driver.ensure(self.spec(rec))
            self.push(rec, self.leases().get(name, []))

    def observe(self, *, host_networks: bool = True
                ) -> tuple[dict[str, ObservedNetwork], tuple[str, ...]]:
        """Every recorded network with its problems, and (``host_networks``) the IPv4
        networks on the host: only a plan with networks in it needs those, and reading them
        loads netlink."""
        from sysmgr.engine.observed import ObservedNetwork  # plans only (cold start)

        recs = self.records()
        nets = {r.name: ObservedNetwork(r, tuple(self.problems(r))) for r in recs}
        if not host_networks:
            return nets, ()
        try:
            used = tuple(self.driver.used_networks())
        except SysmgrError:
            used = ()  # no pyroute2 or no permission: overlaps are then checked at create
        return nets, used

    def init_default(self, name: str) -> list[str]:
        """Create the default network of ``init`` unless it exists; what was done."""
        if self.exists(name):
            return []
        rec = self.create(name, {}, description="Default sysmgr network")
        return [f"created network {name!r} (bridge {rec.bridge}, {rec.config['ipv4.address']})"]

    # -- nic records -------------------------------------------------------------------------
    @staticmethod
    def nic_records(rec: ContainerRecord) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in (rec.volatile.get(NICS) or {}).items()}

    def check_addresses(self, changed: Mapping[str, Devices]) -> None:
        """Refuse static addresses already held by another nic on the same network, for
        containers about to get ``changed`` (name -> expanded devices; a name not yet
        recorded is a new container). Per-nic checks are :func:`nic_problems`'.

        Raises:
            ValidationError: one issue per problem, naming the device key.
        """
        issues = []
        every: list[Claim] = []
        held: list[Claim] = []
        for c in self.store.containers():
            now = claims(c.name, records.expanded(self.host, c)[1], self.nic_records(c))
            held += now
            if c.name not in changed:
                every += now
        for name, devs in changed.items():
            recs = self.nic_records(self.store.container(name)) \
                if self.store.has_container(name) else {}
            every += claims(name, devs, recs)
        for claim, reason in conflicts(every, held):
            if claim.container in changed:
                prefix = f"container {claim.container}: " if len(changed) > 1 else ""
                issues.append(Issue(prefix + reason, path=f"devices.{claim.device}.ipv4.address"))
        if issues:
            raise ValidationError(issues)

    def sync(self, *, touched: Iterable[str] = ()) -> None:
        """Make every container's nic records match its expanded devices, then push the
        reservations of each network whose set changed (and of ``touched``)."""
        st = self.store
        nets = {r.name: r for r in self.records()}
        containers = sorted(st.containers(), key=lambda c: (c.created, c.name))
        before = self.leases(containers)
        profiles = {p.name: p for p in st.profiles()}  # read once, not once per container
        expanded = {c.name: records.expanded(self.host, c, override=profiles)[1]
                    for c in containers}
        alloc = _Allocation(self, nets, expanded)
        changed: dict[str, dict[str, dict[str, str]]] = {}
        for c in containers:
            old = self.nic_records(c)
            new = {dname: alloc.nic(old.get(dname) or {}, dev)
                   for dname, dev in nic_devices(expanded[c.name]).items()}
            if new != old:
                changed[c.name] = new
        if changed:
            with st.transaction():
                for c in containers:
                    if c.name in changed:
                        vol = dict(st.container(c.name).volatile)  # fresh: never lose a key
                        if changed[c.name]:
                            vol[NICS] = changed[c.name]
                        else:
                            vol.pop(NICS, None)
                        st.set_volatile(c.name, vol)
                        c.volatile = vol
        after = self.leases(containers)
        for name, rec in nets.items():
            if before.get(name) != after.get(name) or name in set(touched):
                self.push(rec, after.get(name, []))

    def keep_or_allocate(self, spec: netbase.NetworkSpec, old: Mapping[str, str],
                         taken: set[str]) -> str:
        """The nic's recorded address on network ``spec`` while still valid and free, else
        the lowest free one (added to ``taken``)."""
        prev = old.get("ipv4") if old.get("network") == spec.name else None
        if prev and prev not in taken and _keepable(spec.ipv4_cidr, spec.dhcp_ranges, prev):
            taken.add(prev)
            return prev
        addr = ipam.allocate(spec.ipv4_cidr, taken, dhcp_ranges=spec.dhcp_ranges,
                             reserved=_RESERVED.get())
        taken.add(addr)
        return addr

    def leases(self, containers: Sequence[ContainerRecord] | None = None
               ) -> dict[str, list[netbase.Lease]]:
        """network -> DHCP reservations + DNS names of every recorded nic on it."""
        if containers is None:
            containers = self.store.containers()
        out: dict[str, list[netbase.Lease]] = {}
        for c in sorted(containers, key=lambda c: c.name):
            seen: set[str] = set()
            for dname, r in sorted(self.nic_records(c).items()):
                net = r.get("network")
                if not net or not r.get("ipv4"):
                    continue
                host = c.name if net not in seen else dns_label(f"{c.name}-{dname}")
                seen.add(net)
                out.setdefault(net, []).append(netbase.Lease(r["hwaddr"], r["ipv4"], host))
        return out

    def push(self, rec: NetworkRecord, leases: Sequence[netbase.Lease]) -> None:
        spec = self.spec(rec)
        try:
            self.driver.set_leases(spec, leases)
        except (DriverError, NotFound):
            # the network is gone from the host (a reboot): bring it back, then retry
            self.driver.ensure(spec)
            self.driver.set_leases(spec, leases)

    def networks_of(self, rec: ContainerRecord) -> list[str]:
        return sorted({r["network"] for r in self.nic_records(rec).values() if r.get("network")})

    # -- container lifecycle -----------------------------------------------------------------
    # -- views -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _keepable(cidr: str, dhcp_ranges: tuple[tuple[str, str], ...], address: str) -> bool:
    """Whether a recorded ``address`` may stay on network ``cidr``: usable there, and not in
    a dynamic range (pure; a sync asks it for every nic of every container)."""
    if ipam.address_problems(cidr, {"x": address}):
        return False
    ip = ipaddress.IPv4Address(address)
    return not any(ipaddress.IPv4Address(a) <= ip <= ipaddress.IPv4Address(b)
                   for a, b in dhcp_ranges)


class _Allocation:
    """One :meth:`NetworkEngine.sync` pass: the host interface names, MACs and addresses
    taken so far, handed out to nics in order (static values first: they win over recorded
    ones)."""

    def __init__(self, engine: NetworkEngine, nets: Mapping[str, NetworkRecord],
                 expanded: Mapping[str, Devices]) -> None:
        self.engine = engine
        self.nets = nets
        self.specs: dict[str, netbase.NetworkSpec] = {}  # normalised once per pass, not per nic
        self.root_id = engine.host.layout.root_id
        self.addr: dict[str, set[str]] = {n: set() for n in nets}
        self.macs: set[str] = set()
        self.host_names: set[str] = set()
        self.owned: list[str] | None = None
        for devs in expanded.values():
            for dev in nic_devices(devs).values():
                net = dev.get("network")
                if net in nets and dev.get("ipv4.address"):
                    with contextlib.suppress(ValueError):
                        self.addr[net].add(normalize_address(dev["ipv4.address"]))
                if dev.get("hwaddr"):
                    self.macs.add(dev["hwaddr"].strip().lower())

    def nic(self, old: Mapping[str, str], dev: Mapping[str, str]) -> dict[str, str]:
        """The record of one nic: the old values where still valid, new ones otherwise."""
        r = {"host_name": self._host_name(old.get("host_name", "")), "hwaddr": self._mac(old, dev)}
        net = dev.get("network")
        if net and net in self.nets:
            r["network"] = net
            if dev.get("ipv4.address"):
                r["ipv4"] = normalize_address(dev["ipv4.address"])
            else:
                if net not in self.specs:
                    self.specs[net] = self.engine.spec(self.nets[net])
                r["ipv4"] = self.engine.keep_or_allocate(self.specs[net], old, self.addr[net])
        return r

    def _host_name(self, current: str) -> str:
        if netbase.parse_index(current, netbase.VETH_PREFIX, self.root_id) is None \
                or current in self.host_names:
            if self.owned is None:  # leftovers of this root on the host are not reused
                self.owned = self.engine.driver.owned_interfaces()
            used = {netbase.parse_index(n, netbase.VETH_PREFIX, self.root_id)
                    for n in (*self.host_names, *self.owned)}
            current = netbase.veth_ifname(self.root_id,
                                          netbase.next_index(i for i in used if i is not None))
        self.host_names.add(current)
        return current

    def _mac(self, old: Mapping[str, str], dev: Mapping[str, str]) -> str:
        mac = (dev.get("hwaddr") or "").strip().lower()
        if mac:
            return mac
        mac = old.get("hwaddr", "")
        while not mac or mac in self.macs:
            mac = ipam.generate_mac()
        self.macs.add(mac)
        return mac


def network_state(host: Host, name: str) -> NetworkState:
    """The network as the host has it: bridge, addresses, dnsmasq, nftables, problems, and
    its leases (sysmgr's static reservations, then active dynamic ones)."""
    engine = NetworkEngine(host)
    rec = engine.record(name)
    st = engine.status(name)
    problems = tuple(engine.problems(rec))
    active = {lz.mac.lower(): lz for lz in st.leases}
    leases = [NetworkLease(lz.hostname, lz.mac, lz.ipv4, "static")
              for lz in engine.leases().get(name, [])]
    known = {lz.hwaddr.lower() for lz in leases}
    leases += [NetworkLease(lz.hostname, lz.mac, lz.ipv4, "dynamic")
               for mac, lz in sorted(active.items()) if mac not in known]
    return NetworkState("Errored" if problems else "Created", rec.bridge, st.up, st.mtu,
                        st.addresses, st.ports, st.dnsmasq_pid, st.nft_table, problems,
                        tuple(leases))
