"""``client.networks``: managed networks as pylxd shows them (``client.networks.create``,
``network.save()``, ``network.delete()``, ``network.state()``).

A :class:`Network`'s fields are a snapshot taken when it was made; ``refresh()`` re-reads.
``config["ipv4.address"]`` is the recorded gateway CIDR (``auto`` is resolved at creation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client
    from sysmgr.state.networks import NetworkRecord


@dataclass(frozen=True)
class NetworkLease:
    hostname: str
    hwaddr: str
    address: str | None
    type: str                 # "static" (sysmgr's reservation) | "dynamic" (an active lease)


@dataclass(frozen=True)
class NetworkState:
    """What the host has for the network right now (read from the kernel and dnsmasq)."""

    status: str               # "Created" | "Errored"
    bridge: str
    up: bool
    mtu: int | None
    addresses: tuple[str, ...]
    ports: tuple[str, ...]    # host ends of container nics plugged into the bridge
    dnsmasq_pid: int | None
    nft_table: bool
    problems: tuple[str, ...]
    leases: tuple[NetworkLease, ...]


class Network:
    """One managed network."""

    def __init__(self, client: "Client", rec: "NetworkRecord") -> None:
        self._client = client
        self._set(rec)

    def _set(self, rec: "NetworkRecord") -> None:
        self.name: str = rec.name
        self.type: str = rec.type
        self.config: dict[str, str] = dict(rec.config)
        self.description: str = rec.description
        self.bridge: str = rec.bridge          # host interface name, stable for its life
        self.created_at: float = rec.created
        self.managed = True

    @property
    def _engine(self) -> Any:
        return self._client.host.networks

    @property
    def used_by(self) -> list[str]:
        """Containers and profiles with a nic on it (``profile:NAME`` for profiles)."""
        containers, profiles = self._engine.used_by(self.name)
        return sorted(containers) + [f"profile:{p}" for p in sorted(profiles)]

    def refresh(self) -> "Network":
        self._set(self._engine.record(self.name))
        return self

    def save(self) -> list[str]:
        """Store ``config``/``description`` and make the host match. Returns the running
        containers that keep the old address or MTU until restarted."""
        pending = self._engine.update(self.name, config=self.config, description=self.description)
        self.refresh()
        return pending

    def delete(self) -> None:
        """Remove the network (refused while a container or profile has a nic on it)."""
        self._engine.delete(self.name)

    def state(self) -> NetworkState:
        engine = self._engine
        rec = engine.record(self.name)
        st = engine.status(self.name)
        problems = tuple(engine.problems(rec))
        active = {lz.mac.lower(): lz for lz in st.leases}
        leases = [NetworkLease(lz.hostname, lz.mac, lz.ipv4, "static")
                  for lz in engine.leases().get(self.name, [])]
        known = {lz.hwaddr.lower() for lz in leases}
        leases += [NetworkLease(lz.hostname, lz.mac, lz.ipv4, "dynamic")
                   for mac, lz in sorted(active.items()) if mac not in known]
        return NetworkState("Errored" if problems else "Created", rec.bridge, st.up, st.mtu,
                            st.addresses, st.ports, st.dnsmasq_pid, st.nft_table, problems,
                            tuple(leases))

    def __repr__(self) -> str:
        return f"<Network {self.name} ({self.bridge})>"


class NetworkManager:
    def __init__(self, client: "Client") -> None:
        self._client = client

    @property
    def _engine(self) -> Any:
        return self._client.host.networks

    def all(self) -> list[Network]:
        return [Network(self._client, r) for r in self._engine.records()]

    def get(self, name: str) -> Network:
        return Network(self._client, self._engine.record(name))

    def exists(self, name: str) -> bool:
        return bool(self._engine.exists(name))

    def create(self, name: str, config: Mapping[str, str] | None = None, *,
               type: str = "bridge", description: str = "") -> Network:
        """Create a managed network and bring it up (``ipv4.address`` defaults to ``auto``)."""
        return Network(self._client, self._engine.create(name, dict(config or {}), type=type,
                                                         description=description))
