"""Managed networks and container nics: records, address management and the driver calls.

Layer: engine. The :class:`NetworkEngine` of a :class:`~sysmgr.engine.host.Host` owns
everything networked for one root:

- **networks**: ``kind: Network`` records (:mod:`sysmgr.state.networks`); creating one picks
  the host bridge name ``smb<rootid><index>`` and, for ``ipv4.address: auto``, a free /24
  (:func:`ipam.pick_subnet` over the host's networks and the recorded ones), both recorded so
  they stay stable. The driver makes the host match (:meth:`NetworkDriver.ensure`: bridge,
  dnsmasq, nftables); :meth:`NetworkEngine.problems` observes it every time and
  :meth:`NetworkEngine.repair` re-ensures what is gone (after a reboot, a killed dnsmasq).
- **nics**: each container nic has a record in the container's volatile state
  (``volatile["nics"][device]``: ``host_name`` ``smv<rootid><index>``, ``hwaddr``, and on a
  managed network ``network`` + ``ipv4``), made by :meth:`NetworkEngine.sync` and kept for the
  container's life, so its MAC, host interface and address survive restarts. A static
  ``ipv4.address`` is recorded as given; otherwise the lowest free address is allocated.
  ``sync`` is level-based: it allocates what is missing, drops what no device needs any more,
  re-allocates duplicates (a copied record; the older container keeps its values) and pushes
  the DHCP reservations + DNS names of every network whose set changed.
- **addressing rule**: sysmgr configures the nic's address and default route inside the
  container's network namespace *before init runs* (and writes ``/etc/resolv.conf`` when it
  is empty or its own), and dnsmasq serves the same address by DHCP. A nic with
  ``ipv4.dhcp: true`` is left unconfigured for the guest's DHCP client (the busybox image's
  rcS runs udhcpc on any ``eth*`` without an address) and is served its reserved address.
- **validation**: static addresses outside the subnet, on the gateway, or used twice on one
  network are rejected before anything changes (:func:`nic_problems`, :func:`conflicts`), by
  the planner with file:line and by the imperative commands.

Pure helpers at the top serve both the planner and the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import stat as stat_mod
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from sysmgr.drivers import registry
from sysmgr.drivers.network import base as netbase
from sysmgr.drivers.network import ipam
from sysmgr.engine.actions import (
    Action, Change, CreateContainer, CreateNetwork, Plan, PutProfile, RepairNetwork,
    UpdateContainer, UpdateNetwork)
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    AlreadyExists, Conflict, DriverError, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.model import network_keys as nkeys
from sysmgr.model.objects import Manifest, NetworkSpec
from sysmgr.state import networks as snet
from sysmgr.state.networks import NetworkRecord

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.engine.host import Host
    from sysmgr.engine.observe import Observed
    from sysmgr.state.db import ContainerRecord

DEFAULT_NETWORK = "sysmgrbr0"          # the network `sysmgr init --auto` creates (LXD: lxdbr0)
DEFAULT_NIC = "eth0"
NICS = "nics"                           # key of the nic records in ContainerRecord.volatile
RESOLV_MARKER = "# written by sysmgr"
_RESTART_KEYS = ("ipv4.address", "bridge.mtu")   # what a running container's nic has baked in

Devices = Mapping[str, Mapping[str, str]]
Problem = tuple[str, str]


# -- pure helpers (planner and host) ----------------------------------------------------------

@dataclass(frozen=True)
class NetFacts:
    """What validating a nic needs to know about its network."""

    cidr: str | None           # gateway CIDR; None: ``auto`` and not created yet
    dhcp: bool = True


def facts(ntype: str, config: Mapping[str, str]) -> NetFacts:
    norm = nkeys.normalize_network_config(ntype, config)
    address = norm.get("ipv4.address", nkeys.AUTO)
    return NetFacts(None if address == nkeys.AUTO else address, norm.get("ipv4.dhcp") == "true")


def nic_devices(devices: Devices) -> dict[str, Mapping[str, str]]:
    return {n: d for n, d in sorted(devices.items()) if d.get("type") == "nic"}


def is_dhcp(dev: Mapping[str, str]) -> bool:
    """Whether the guest's DHCP client configures this nic (``ipv4.dhcp: true``)."""
    try:
        return mkeys.parse_bool(dev.get("ipv4.dhcp") or "false")
    except ValueError:
        return False  # reported by the key table


def _address(text: str) -> str:
    return str(ipaddress.IPv4Address(str(text).strip()))


def nic_problems(devices: Devices, nets: Mapping[str, NetFacts], *,
                 where: str = "devices") -> list[Problem]:
    """Per-nic checks against the networks: the network exists, a static address fits its
    subnet (not the network, broadcast or gateway address), DHCP is served when asked for.

    Returns:
        ``(key path, reason)`` per problem.
    """
    out: list[Problem] = []
    for name, dev in nic_devices(devices).items():
        net = dev.get("network")
        if not net:
            continue
        f = nets.get(net)
        if f is None:
            out.append((f"{where}.{name}.network", f"network {net!r} not found"))
            continue
        if is_dhcp(dev) and not f.dhcp:
            out.append((f"{where}.{name}.ipv4.dhcp",
                        f"network {net!r} does not serve DHCP (its ipv4.dhcp is false)"))
        address = dev.get("ipv4.address")
        try:
            address = _address(address) if address else None
        except ValueError:
            address = None  # not an address at all: the key table reports it
        if address and f.cidr is None:
            out.append((f"{where}.{name}.ipv4.address",
                        f"network {net!r} has ipv4.address auto and does not exist yet, so its "
                        "subnet is unknown: give the network an explicit ipv4.address"))
        elif address and f.cidr:
            for p in ipam.address_problems(f.cidr, {"nic": address}):
                out.append((f"{where}.{name}.ipv4.address",
                             f"{p.address} cannot be used on network {net!r}: {p.reason}"))
    return out


@dataclass(frozen=True)
class Claim:
    """One container nic's address on a managed network: static, or recorded (allocated)."""

    container: str
    device: str
    network: str
    address: str
    static: bool


def claims(container: str, devices: Devices, nic_records: Mapping[str, Any]) -> list[Claim]:
    """The addresses a container holds, from its expanded devices and its nic records."""
    out = []
    for name, dev in nic_devices(devices).items():
        net = dev.get("network")
        if not net:
            continue
        static = dev.get("ipv4.address")
        if static:
            with contextlib.suppress(ValueError):
                out.append(Claim(container, name, net, _address(static), True))
            continue
        rec = nic_records.get(name) or {}
        if rec.get("network") == net and rec.get("ipv4"):
            out.append(Claim(container, name, net, rec["ipv4"], False))
    return out


def conflicts(all_claims: Iterable[Claim], held: Iterable[Claim] = ()) -> list[tuple[Claim, str]]:
    """Static addresses that are already somebody's on the same network.

    What the host already has wins: recorded (allocated) addresses first, then the claims in
    ``held`` (the current ones of existing containers), then the rest in (container, device)
    order. Returns ``(losing claim, reason)`` for every static claim that loses; duplicate
    allocations are :meth:`NetworkEngine.sync`'s to fix, not the user's.
    """
    keep = set(held)
    owner: dict[tuple[str, str], Claim] = {}
    out = []
    for c in sorted(all_claims, key=lambda c: (c.static, c not in keep, c.container, c.device)):
        key = (c.network, c.address)
        first = owner.get(key)
        if first is None:
            owner[key] = c
        elif c.static:
            who = (f"device {first.device} of the same container" if first.container == c.container
                   else f"container {first.container}")
            out.append((c, f"{c.address} is already used on network {c.network!r} by {who}"))
    return out


def _label(text: str) -> str:
    """A DNS label from ``container-device`` (a second nic on the same network)."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:63].rstrip("-")
    return label or "nic"


# -- planner side ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ObservedNetwork:
    """A recorded network and what is wrong with it on the host (empty: healthy)."""

    record: NetworkRecord
    problems: tuple[str, ...] = ()


def _issue(spec: object, path: str | None, message: str) -> Issue:
    src = getattr(spec, "source", None)
    return Issue(message, file=getattr(src, "file", None), line=getattr(src, "line", None),
                 path=path)


def planned_facts(manifest: Manifest, obs: "Observed") -> dict[str, NetFacts]:
    """Networks as they will be after apply: desired ones override recorded ones (a desired
    ``auto`` keeps the recorded subnet)."""
    out = {n: facts(o.record.type, o.record.config) for n, o in obs.networks.items()}
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        f = facts(spec.type, spec.config)
        if f.cidr is None and spec.name in out:
            f = replace(f, cidr=out[spec.name].cidr)
        out[spec.name] = f
    return out


def reference_issues(manifest: Manifest, obs: "Observed",
                     profiles: Mapping[str, tuple[Mapping[str, str], Devices]]) -> list[Issue]:
    """The planner's network checks, each with the file:line of the document at fault:
    network type changes and subnet overlaps, nics referring to missing networks or using
    addresses outside their subnet, the gateway's address, or another container's address."""
    issues: list[Issue] = []
    nets = planned_facts(manifest, obs)
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        cur = obs.networks.get(spec.name)
        if cur is not None and cur.record.type != spec.type:
            issues.append(_issue(spec, "type", f"network {spec.name!r} exists with type "
                                 f"{cur.record.type!r}; the type of a network cannot be changed"))
        f = nets[spec.name]
        explicit = str(spec.config.get("ipv4.address", "")).strip().lower() not in ("", nkeys.AUTO)
        if not explicit or f.cidr is None:
            continue
        own = ({str(ipaddress.IPv4Interface(cur_cidr).network)}
               if cur is not None and (cur_cidr := facts(cur.record.type, cur.record.config).cidr)
               else set())
        others = [g.cidr for n, g in nets.items() if n != spec.name and g.cidr]
        hits = [n for n in ipam.overlapping(f.cidr, [*obs.host_networks, *others]) if n not in own]
        if hits:
            issues.append(_issue(spec, "config.ipv4.address",
                                 f"{f.cidr} overlaps {', '.join(hits)}, already used on this host"))

    for spec in manifest.of("Profile"):
        for path, reason in nic_problems(getattr(spec, "devices", {}), nets):
            issues.append(_issue(spec, path, reason))

    in_manifest = {s.name: s for s in manifest.of("Container")}
    old_profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    held: list[Claim] = []
    for name, cur_c in obs.containers.items():  # what the host has now wins a tie
        rec = cur_c.record
        _, devs = mexpand.expand([old_profiles[p] for p in rec.profiles if p in old_profiles],
                                 rec.config, rec.devices)
        held += claims(name, devs, rec.volatile.get(NICS) or {})
    every: list[Claim] = []
    for spec in in_manifest.values():
        prof = [profiles[p] for p in getattr(spec, "profiles", ()) if p in profiles]
        _, devs = mexpand.expand(prof, getattr(spec, "config", {}), getattr(spec, "devices", {}))
        for path, reason in nic_problems(devs, nets):
            issues.append(_issue(spec, path, reason))
        now = obs.containers.get(spec.name)
        records = (now.record.volatile.get(NICS) or {}) if now is not None else {}
        every += claims(spec.name, devs, records)
    for name, cur_c in obs.containers.items():
        if name in in_manifest:
            continue
        rec = cur_c.record
        prof = [profiles[p] for p in rec.profiles if p in profiles]
        _, devs = mexpand.expand(prof, rec.config, rec.devices)
        every += claims(name, devs, rec.volatile.get(NICS) or {})
    for claim, reason in conflicts(every, held):
        owner = in_manifest.get(claim.container)
        issues.append(_issue(owner, f"devices.{claim.device}.ipv4.address",
                             reason if owner is not None else f"container {claim.container}: {reason}"))
    return issues


def _config_changes(rec: NetworkRecord, spec: NetworkSpec) -> list[Change]:
    old = nkeys.normalize_network_config(rec.type, rec.config)
    new = nkeys.normalize_network_config(spec.type, spec.config)
    if new.get("ipv4.address") == nkeys.AUTO:
        new["ipv4.address"] = old.get("ipv4.address", nkeys.AUTO)  # auto: keep the subnet
    return [Change(f"config.{k}", rec.config.get(k, old.get(k)), spec.config.get(k, new.get(k)))
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _running_users(obs: "Observed") -> dict[str, list[str]]:
    """network -> running containers with a nic on it (as they are expanded now)."""
    profiles = {n: (p.config, p.devices) for n, p in obs.profiles.items()}
    out: dict[str, list[str]] = {}
    for name, cur in sorted(obs.containers.items()):
        if cur.state == "STOPPED":
            continue
        rec = cur.record
        _, devs = mexpand.expand([profiles[p] for p in rec.profiles if p in profiles],
                                 rec.config, rec.devices)
        for net in sorted({d["network"] for d in nic_devices(devs).values() if d.get("network")}):
            out.setdefault(net, []).append(name)
    return out


def plan_actions(manifest: Manifest, obs: "Observed") -> tuple[list[Action], list[str]]:
    """Network actions (repairs, creations, updates) and warnings, in plan order (pure)."""
    users = _running_users(obs)
    actions: list[Action] = []
    warnings: list[str] = []
    updated = set()
    for spec in manifest.of("Network"):
        assert isinstance(spec, NetworkSpec)
        cur = obs.networks.get(spec.name)
        if cur is None:
            actions.append(CreateNetwork(spec.name, type=spec.type, config=dict(spec.config),
                                         description=spec.description))
            continue
        changes = _config_changes(cur.record, spec)
        if cur.record.description != spec.description:
            changes.append(Change("description", cur.record.description, spec.description))
        if changes:
            baked = any(c.path[len("config."):] in _RESTART_KEYS for c in changes)
            restart = tuple(users.get(spec.name, ())) if baked else ()
            actions.append(UpdateNetwork(spec.name, type=spec.type, config=dict(spec.config),
                                         description=spec.description, changes=tuple(changes),
                                         restart=restart))
            updated.add(spec.name)
            if restart:
                warnings.append(f"network {spec.name}: running containers keep their old "
                                f"address or MTU until restarted: {', '.join(restart)}")
    repairs: list[Action] = [RepairNetwork(n, problems=o.problems)
                             for n, o in sorted(obs.networks.items())
                             if o.problems and n not in updated]
    return repairs + actions, warnings


@contextlib.contextmanager
def reserving(host: "Host", plan: Plan) -> Iterator[None]:
    """While ``plan`` runs, keep the static addresses it declares out of allocations (a
    container created first must not take the address a later one declares)."""
    wanted: set[str] = set()
    for a in plan.actions:
        if isinstance(a, (CreateContainer, UpdateContainer, PutProfile)):
            for dev in nic_devices(a.devices).values():
                if dev.get("network") and dev.get("ipv4.address"):
                    with contextlib.suppress(ValueError):
                        wanted.add(_address(dev["ipv4.address"]))
    engine = host.networks
    engine.reserved = wanted
    try:
        yield
    finally:
        engine.reserved = set()


def execute(host: "Host", a: Action, rev: Reverter) -> None:
    """Run one network action of a plan, registering its undo."""
    engine = host.networks
    if isinstance(a, CreateNetwork):
        engine.create(a.name, dict(a.config), type=a.type, description=a.description)
        rev.add(lambda: engine.delete(a.name), f"delete network {a.name}")
    elif isinstance(a, UpdateNetwork):
        old = engine.record(a.name)
        engine.update(a.name, config=dict(a.config), description=a.description)
        rev.add(lambda: engine.update(old.name, config=old.config, description=old.description),
                f"restore network {a.name}")
    elif isinstance(a, RepairNetwork):
        engine.repair(a.name)
    else:  # pragma: no cover - only the three above are network actions
        raise SysmgrError(f"not a network action: {a!r}")


NETWORK_ACTIONS = (CreateNetwork, UpdateNetwork, RepairNetwork)


# -- the engine ------------------------------------------------------------------------------

class NetworkEngine:
    """Networks and nics of one host root (see the module docstring)."""

    def __init__(self, host: "Host") -> None:
        self.host = host
        self._driver: netbase.NetworkDriver | None = None
        #: static addresses of a plan being applied: never handed out by allocation
        self.reserved: set[str] = set()

    @property
    def store(self) -> Any:
        return self.host.store

    # -- driver ------------------------------------------------------------------------------
    def driver_name(self) -> str:
        name = self.store.get_meta("network.driver")
        if name:
            return name
        # inits without a network namespace (the fake runtime's) have nowhere to plug a veth
        return "bridge" if self.host.runtime.info.network_namespaces else "fake"

    @property
    def driver(self) -> netbase.NetworkDriver:
        if self._driver is None:
            cls = registry.load("network", self.driver_name())
            self._driver = cls(self.host.layout.root_id, self.host.layout.networks)
        return self._driver

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
                      for p, r in nic_problems(on_it(self.host.expanded(c)[1]), nets)]
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
            if all(o.get(k) == n.get(k) for k in _RESTART_KEYS):
                return []
            return self.running_users(name)

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

    def used_by(self, name: str) -> tuple[list[str], list[str]]:
        """(containers, profiles) with a nic on network ``name``."""
        def uses(devs: Devices) -> bool:
            return any(d.get("network") == name for d in nic_devices(devs).values())

        containers = [c.name for c in self.store.containers() if uses(self.host.expanded(c)[1])]
        profiles = [p.name for p in self.store.profiles() if uses(p.devices)]
        return containers, profiles

    def running_users(self, name: str) -> list[str]:
        from sysmgr.drivers.runtime.base import STOPPED

        out = []
        for c in self.store.containers():
            if any(d.get("network") == name for d in nic_devices(self.host.expanded(c)[1]).values()) \
                    and self.host.runtime.status(_init_record(c)).state != STOPPED:
                out.append(c.name)
        return out

    def status(self, name: str) -> netbase.NetworkStatus:
        return self.driver.status(self.spec(self.record(name)))

    def problems(self, rec: NetworkRecord) -> list[str]:
        """What is missing on the host for a recorded network (empty: healthy)."""
        spec = self.spec(rec)
        st = self.driver.status(spec)
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
            self._push(rec, self.leases().get(name, []))

    def repair_all(self) -> list[str]:
        """Repair every recorded network with a problem; what was done, for ``init``."""
        done = []
        for rec in self.records():
            found = self.problems(rec)
            if found:
                self.repair(rec.name)
                done.append(f"repaired network {rec.name!r}: {'; '.join(found)}")
        return done

    def observe(self) -> tuple[dict[str, ObservedNetwork], tuple[str, ...]]:
        """Every recorded network with its problems, and the IPv4 networks on the host."""
        recs = self.records()
        nets = {r.name: ObservedNetwork(r, tuple(self.problems(r))) for r in recs}
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
    def nic_records(rec: "ContainerRecord") -> dict[str, dict[str, str]]:
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
            now = claims(c.name, self.host.expanded(c)[1], self.nic_records(c))
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

    def _new_host_name(self, taken: set[str], owned: list[str]) -> str:
        root_id = self.host.layout.root_id
        used = {netbase.parse_index(n, netbase.VETH_PREFIX, root_id) for n in (*taken, *owned)}
        name = netbase.veth_ifname(root_id, netbase.next_index(i for i in used if i is not None))
        return name

    def sync(self, *, touched: Iterable[str] = ()) -> None:
        """Make every container's nic records match its expanded devices, then push the
        reservations of each network whose set changed (and of ``touched``)."""
        st = self.store
        nets = {r.name: r for r in self.records()}
        containers = sorted(st.containers(), key=lambda c: (c.created, c.name))
        before = self.leases(containers)
        expanded = {c.name: self.host.expanded(c)[1] for c in containers}
        taken_addr: dict[str, set[str]] = {n: set() for n in nets}
        taken_mac: set[str] = set()
        for c in containers:  # static values first: they win over recorded ones
            for dev in nic_devices(expanded[c.name]).values():
                net = dev.get("network")
                if net in nets and dev.get("ipv4.address"):
                    with contextlib.suppress(ValueError):
                        taken_addr[net].add(_address(dev["ipv4.address"]))
                if dev.get("hwaddr"):
                    taken_mac.add(dev["hwaddr"].strip().lower())
        taken_host: set[str] = set()
        owned: list[str] | None = None
        root_id = self.host.layout.root_id
        changed: dict[str, dict[str, dict[str, str]]] = {}
        for c in containers:
            old = self.nic_records(c)
            new: dict[str, dict[str, str]] = {}
            for dname, dev in nic_devices(expanded[c.name]).items():
                o = old.get(dname) or {}
                r: dict[str, str] = {}
                host_name = o.get("host_name", "")
                if netbase.parse_index(host_name, netbase.VETH_PREFIX, root_id) is None \
                        or host_name in taken_host:
                    if owned is None:  # leftovers of this root on the host are not reused
                        owned = self.driver.owned_interfaces()
                    host_name = self._new_host_name(taken_host, owned)
                taken_host.add(host_name)
                r["host_name"] = host_name
                mac = (dev.get("hwaddr") or "").strip().lower()
                if not mac:
                    mac = o.get("hwaddr", "")
                    while not mac or mac in taken_mac:
                        mac = ipam.generate_mac()
                    taken_mac.add(mac)
                r["hwaddr"] = mac
                net = dev.get("network")
                if net and net in nets:
                    r["network"] = net
                    if dev.get("ipv4.address"):
                        r["ipv4"] = _address(dev["ipv4.address"])
                    else:
                        r["ipv4"] = self._keep_or_allocate(nets[net], o, taken_addr[net])
                new[dname] = r
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
                self._push(rec, after.get(name, []))

    def _keep_or_allocate(self, net: NetworkRecord, old: Mapping[str, str], taken: set[str]) -> str:
        spec = self.spec(net)
        prev = old.get("ipv4") if old.get("network") == net.name else None
        if prev:
            inside = not ipam.address_problems(spec.ipv4_cidr, {"x": prev})
            in_range = any(ipaddress.IPv4Address(a) <= ipaddress.IPv4Address(prev)
                           <= ipaddress.IPv4Address(b) for a, b in spec.dhcp_ranges)
            if inside and not in_range and prev not in taken:
                taken.add(prev)
                return prev
        addr = ipam.allocate(spec.ipv4_cidr, taken, dhcp_ranges=spec.dhcp_ranges,
                             reserved=self.reserved)
        taken.add(addr)
        return addr

    def leases(self, containers: Sequence["ContainerRecord"] | None = None
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
                host = c.name if net not in seen else _label(f"{c.name}-{dname}")
                seen.add(net)
                out.setdefault(net, []).append(netbase.Lease(r["hwaddr"], r["ipv4"], host))
        return out

    def _push(self, rec: NetworkRecord, leases: Sequence[netbase.Lease]) -> None:
        spec = self.spec(rec)
        try:
            self.driver.set_leases(spec, leases)
        except (DriverError, NotFound):
            # the network is gone from the host (a reboot): bring it back, then retry
            self.driver.ensure(spec)
            self.driver.set_leases(spec, leases)

    def networks_of(self, rec: "ContainerRecord") -> list[str]:
        return sorted({r["network"] for r in self.nic_records(rec).values() if r.get("network")})

    # -- container lifecycle -----------------------------------------------------------------
    def _nic_spec(self, rec: "ContainerRecord", dname: str, dev: Mapping[str, str],
                  r: Mapping[str, str], nets: Mapping[str, NetworkRecord]) -> netbase.NicSpec:
        ifname = dev.get("name") or dname
        mtu = int(dev["mtu"]) if dev.get("mtu") else None
        net = nets.get(dev.get("network") or "")
        if net is not None:
            nic = netbase.NicSpec.on_network(
                self.spec(net), container=rec.name, device=dname, host_ifname=r["host_name"],
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
        devs = nic_devices(self.host.expanded(self.store.container(name))[1])
        if not devs:
            return []
        # level-based: records completed and this container's reservations pushed again
        # (a rename or a restored snapshot changed them without telling us)
        self._refuse_taken_static(name, devs)
        self.sync(touched={d["network"] for d in devs.values() if d.get("network")})
        rec = self.store.container(name)
        nets = {r.name: r for r in self.records()}
        records = self.nic_records(rec)
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
                if self.problems(nets[net]):
                    self.repair(net)
                if resolv is None and not is_dhcp(dev):
                    resolv = nets[net]
            nics.append(self._nic_spec(rec, dname, dev, records[dname], nets))
        if resolv is not None:
            _write_resolv(rootfs, self.spec(resolv))
        return nics

    def _refuse_taken_static(self, name: str, devs: Devices) -> None:
        """A copy, import or restore made outside ``create`` may carry another container's
        static address: refuse to start it while an older or a running container has it."""
        from sysmgr.drivers.runtime.base import STOPPED

        rec = self.store.container(name)
        holders: dict[tuple[str, str], str] = {}
        for c in self.store.containers():
            if c.name == name:
                continue
            if (c.created, c.name) < (rec.created, rec.name) or \
                    self.host.runtime.status(_init_record(c)).state != STOPPED:
                for cl in claims(c.name, self.host.expanded(c)[1], self.nic_records(c)):
                    holders[(cl.network, cl.address)] = cl.container
        issues = [Issue(f"container {name!r} cannot start: {cl.address} is already used on "
                        f"network {cl.network!r} by container {holders[(cl.network, cl.address)]}",
                        path=f"devices.{cl.device}.ipv4.address")
                  for cl in claims(name, devs, {}) if cl.static
                  and (cl.network, cl.address) in holders]
        if issues:
            raise ValidationError(issues)

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
        records = self.nic_records(rec)
        if not records:
            return
        nets = {r.name: r for r in self.records()}
        devs = nic_devices(self.host.expanded(rec)[1])
        for dname, r in sorted(records.items()):
            with contextlib.suppress(SysmgrError):  # never fail a stop over a leftover
                self.driver.detach(self._nic_spec(rec, dname, devs.get(dname, {}), r, nets))

    # -- views -------------------------------------------------------------------------------
    def view(self, rec: "ContainerRecord", devices: Devices, pid: int | None,
             cache: dict[str, Any] | None = None) -> dict[str, Any]:
        """``nics`` (per device: interface, host end, MAC, network, address) and ``ipv4``
        (``"10.x.y.z (eth0)"`` for ``list``) of a container; ``pid``: its init when running.

        Pre-configured nics show their recorded address; DHCP nics the address their lease
        has; nics on unmanaged bridges are read from the container's netns.
        """
        cache = {} if cache is None else cache
        records = self.nic_records(rec)
        nics: dict[str, dict[str, Any]] = {}
        ipv4: list[str] = []
        unmanaged: dict[str, str] = {}
        for dname, dev in nic_devices(devices).items():
            r = records.get(dname, {})
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
                ipv4.append(f"{r['ipv4']} ({ifname})")
            elif r.get("hwaddr"):
                leased = self._leased(net, cache).get(r["hwaddr"].lower())
                if leased:
                    ipv4.append(f"{leased} ({ifname})")
        if unmanaged and pid is not None:
            with contextlib.suppress(SysmgrError):
                for ifname, cidr in self.driver.container_addresses(pid):
                    if ifname in unmanaged:
                        ipv4.append(f"{cidr.split('/')[0]} ({ifname})")
        return {"nics": nics, "ipv4": ipv4}

    def _leased(self, net: str, cache: dict[str, Any]) -> dict[str, str]:
        key = f"leases:{net}"
        if key not in cache:
            try:
                found = self.driver.leases(self.spec(self.record(net)))
                cache[key] = {lz.mac.lower(): lz.ipv4 for lz in found if lz.ipv4}
            except SysmgrError:
                cache[key] = {}
        return cache[key]


def _init_record(rec: "ContainerRecord") -> Any:
    from sysmgr.engine.host import _init_record as init_record

    return init_record(rec)


def _write_resolv(rootfs: str, net: netbase.NetworkSpec) -> None:
    """Point the container's resolver at its network's DNS server, unless the file is
    someone else's (non-empty without sysmgr's marker, or not a regular file)."""
    from sysmgr._util import safefs

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
