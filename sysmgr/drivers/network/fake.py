"""The ``fake`` network driver, for fast engine/API/CLI unit tests: no kernel, no daemons.

It keeps the same contract as :class:`~sysmgr.drivers.network.bridge.BridgeNetwork` (the
same validation, idempotence, ownership and not-found rules) but records everything in one
JSON file, ``<state_dir>/fake-network.json``, updated under an ``flock``. So several driver
objects, and several processes (the CLI run as a subprocess), agree on what exists, as they
would with real bridges.

Test hooks: ``fail`` (operation names such as ``"attach"``) makes those operations raise
:class:`DriverError` to exercise the engine's revert paths; ``bridges`` names host bridges
that exist outside sysmgr (``nictype: bridged`` parents); ``host_networks`` are reported by
:meth:`used_networks` as if they were on the host. Fake daemon pids are negative, like the
fake runtime's, so nothing can ever signal them.

Layer: drivers (network).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from sysmgr.drivers.network import ipam
from sysmgr.drivers.network.base import (
    Lease,
    NetworkDriver,
    NetworkInfo,
    NetworkSpec,
    NetworkStatus,
    NicSpec,
    network_alias,
    nic_alias,
    validate_network,
    validate_nic,
)
from sysmgr.errors import Conflict, DriverError, NotFound

STATE_FILE = "fake-network.json"
FAKE_DNSMASQ_PID = -10_000_001


class FakeNetwork(NetworkDriver):
    """Managed networks and nics recorded in a JSON file."""

    name: ClassVar[str] = "fake"
    info: ClassVar[NetworkInfo] = NetworkInfo(dhcp=True, dns=True, nat=True,
                                              static_in_netns=True, real_kernel=False)

    def __init__(self, root_id: str, state_dir: str, *, host_netns: str | None = None,
                 fail: Iterable[str] = (), bridges: Iterable[str] = (),
                 host_networks: Iterable[str] = ()) -> None:
        super().__init__(root_id, state_dir, host_netns=host_netns)
        self.fail = frozenset(fail)
        self.bridges = frozenset(bridges)
        self.host_networks = tuple(host_networks)

    # -- state file --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _state(self, write: bool = True) -> Iterator[dict[str, Any]]:
        """The recorded state, locked; written back when the block exits normally."""
        os.makedirs(self.state_dir, exist_ok=True)
        path = os.path.join(self.state_dir, STATE_FILE)
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path) as f:
                    state = json.load(f)
            except FileNotFoundError:
                state = {}
            state.setdefault("networks", {})
            state.setdefault("nics", {})
            yield state
            if write:
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(state, f, indent=1, sort_keys=True)
                os.replace(tmp, path)

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise DriverError(f"fake network driver: injected failure in {op}")

    @staticmethod
    def _bridge_owner(state: dict[str, Any], ifname: str) -> dict[str, Any] | None:
        for rec in state["networks"].values():
            if rec["spec"]["ifname"] == ifname:
                return dict(rec)
        return None

    # -- networks ----------------------------------------------------------------------------
    def ensure(self, net: NetworkSpec) -> None:
        validate_network(self.root_id, net)
        self._maybe_fail("ensure")
        with self._state() as st:
            other = self._bridge_owner(st, net.ifname)
            if other is not None and other["alias"] != network_alias(self.root_id, net.name):
                raise Conflict(f"interface {net.ifname} exists but is not the bridge of "
                               f"network {net.name}")
            rec = st["networks"].setdefault(net.name, {"reservations": []})
            rec["spec"] = dataclasses.asdict(net)
            rec["alias"] = network_alias(self.root_id, net.name)

    def delete(self, net: NetworkSpec) -> None:
        validate_network(self.root_id, net)
        self._maybe_fail("delete")
        with self._state() as st:
            rec = st["networks"].get(net.name)
            if rec is None:
                return
            if rec["spec"]["ifname"] != net.ifname:
                raise Conflict(f"network {net.name} is recorded on bridge "
                               f"{rec['spec']['ifname']}, not {net.ifname}")
            del st["networks"][net.name]
            for host, nic in list(st["nics"].items()):
                if nic["bridge"] == net.ifname:
                    del st["nics"][host]

    def set_leases(self, net: NetworkSpec, leases: Sequence[Lease]) -> None:
        validate_network(self.root_id, net)
        self._maybe_fail("set_leases")
        with self._state() as st:
            rec = st["networks"].get(net.name)
            if rec is None:
                raise NotFound(f"network {net.name} does not exist on the host")
            rec["reservations"] = [dataclasses.asdict(lz) for lz in leases]

    def leases(self, net: NetworkSpec) -> list[Lease]:
        """Active leases as a DHCP client would have them: every attached nic without a
        static address whose MAC has a reservation got that reservation."""
        validate_network(self.root_id, net)
        with self._state(write=False) as st:
            rec = st["networks"].get(net.name)
            if rec is None:
                return []
            waiting = {n["mac"].lower() for n in st["nics"].values()
                       if n["bridge"] == net.ifname and not n.get("ipv4")}
            return [Lease(**lz) for lz in rec["reservations"]
                    if lz["mac"].lower() in waiting and lz["ipv4"]]

    def reservations(self, net: NetworkSpec) -> list[Lease]:
        """What :meth:`set_leases` recorded (test helper; the real driver keeps it in a file)."""
        with self._state(write=False) as st:
            rec = st["networks"].get(net.name)
            return [Lease(**lz) for lz in rec["reservations"]] if rec else []

    def status(self, net: NetworkSpec) -> NetworkStatus:
        validate_network(self.root_id, net)
        with self._state(write=False) as st:
            rec = st["networks"].get(net.name)
            if rec is None or rec["spec"]["ifname"] != net.ifname:
                return NetworkStatus(exists=False)
            spec = rec["spec"]
            ports = sorted(h for h, n in st["nics"].items() if n["bridge"] == net.ifname)
            return NetworkStatus(
                exists=True, up=True, mtu=spec["mtu"] or 1500,
                addresses=(str(ipam.parse_gateway(spec["ipv4_cidr"])),), ports=tuple(ports),
                dnsmasq_pid=FAKE_DNSMASQ_PID, nft_table=True, leases=())

    # -- nics --------------------------------------------------------------------------------
    def attach(self, nic: NicSpec, init_pid: int) -> None:
        validate_nic(self.root_id, nic)
        self._maybe_fail("attach")
        with self._state() as st:
            if self._bridge_owner(st, nic.bridge) is None and nic.bridge not in self.bridges:
                raise NotFound(f"container {nic.container} device {nic.device}: bridge "
                               f"{nic.bridge} does not exist", hint="ensure the network first")
            old = st["nics"].get(nic.host_ifname)
            alias = nic_alias(self.root_id, nic.container, nic.device)
            if old is not None and old["alias"] != alias:
                raise Conflict(f"container {nic.container} device {nic.device}: interface "
                               f"{nic.host_ifname} exists and is not this nic's")
            rec = dataclasses.asdict(nic)
            rec.update(alias=alias, init_pid=init_pid)
            st["nics"][nic.host_ifname] = rec

    def replug(self, nic: NicSpec, init_pid: int) -> bool:
        validate_nic(self.root_id, nic)
        with self._state() as st:
            if nic.host_ifname in st["nics"]:
                return True
        self.attach(nic, init_pid)
        return False

    def detach(self, nic: NicSpec) -> None:
        validate_nic(self.root_id, nic)
        self._maybe_fail("detach")
        with self._state() as st:
            old = st["nics"].get(nic.host_ifname)
            if old is None:
                return
            if old["alias"] != nic_alias(self.root_id, nic.container, nic.device):
                raise Conflict(f"container {nic.container} device {nic.device}: interface "
                               f"{nic.host_ifname} is not this nic's; left alone")
            del st["nics"][nic.host_ifname]

    def container_addresses(self, init_pid: int) -> list[tuple[str, str]]:
        with self._state(write=False) as st:
            return sorted((n["container_ifname"], f"{n['ipv4']}/{n['prefixlen']}")
                          for n in st["nics"].values()
                          if n.get("init_pid") == init_pid and n.get("ipv4"))

    def attached(self) -> dict[str, NicSpec]:
        """host ifname -> nic, for assertions (the real driver: look at the bridge's ports)."""
        fields = {f.name for f in dataclasses.fields(NicSpec)}
        with self._state(write=False) as st:
            return {h: NicSpec(**{k: v for k, v in n.items() if k in fields})
                    for h, n in st["nics"].items()}

    # -- observation -------------------------------------------------------------------------
    def used_networks(self) -> list[str]:
        with self._state(write=False) as st:
            nets = {str(ipam.parse_gateway(r["spec"]["ipv4_cidr"]).network)
                    for r in st["networks"].values()}
        return sorted(nets | set(self.host_networks))

    def owned_interfaces(self) -> list[str]:
        with self._state(write=False) as st:
            names = {r["spec"]["ifname"] for r in st["networks"].values()} | set(st["nics"])
        return sorted(names)
