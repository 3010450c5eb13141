"""``client.networks``: managed networks as pylxd shows them (``client.networks.create``,
``network.save()``, ``network.delete()``, ``network.state()``).

A :class:`Network`'s fields are a snapshot taken when it was made; ``refresh()`` re-reads.
``config["ipv4.address"]`` is the recorded gateway CIDR (``auto`` is resolved at creation).
"""

from __future__ import annotations

from typing import Any, Mapping

from sysmgr.api.base import Manager, Model
from sysmgr.types import NetworkLease, NetworkState

__all__ = ["Network", "NetworkLease", "NetworkManager", "NetworkState"]


class Network(Model):
    """One managed network."""

    def _set(self, rec: Any) -> None:
        self.name: str = rec.name
        self.type: str = rec.type
        self.config: dict[str, str] = dict(rec.config)
        self.description: str = rec.description
        self.bridge: str = rec.bridge          # host interface name, stable for its life
        self.created_at: float = rec.created
        self.managed = True

    def _fetch(self) -> Any:
        return self._backend.network_get(self.name)

    @property
    def used_by(self) -> list[str]:
        """Containers and profiles with a nic on it (``profile:NAME`` for profiles)."""
        containers, profiles = self._backend.network_used_by(self.name)
        return sorted(containers) + [f"profile:{p}" for p in sorted(profiles)]

    def save(self) -> list[str]:
        """Store ``config``/``description`` and make the host match. Returns the running
        containers that keep the old address or MTU until restarted."""
        pending = self._backend.network_update(self.name, config=self.config,
                                               description=self.description)
        self.refresh()
        return pending

    def delete(self) -> None:
        """Remove the network (refused while a container or profile has a nic on it)."""
        self._backend.network_delete(self.name)

    def rename(self, new: str) -> None:
        """Rename the network (refused while a container or profile has a nic on it)."""
        self._backend.network_rename(self.name, new)
        self.name = new
        self.refresh()

    def state(self) -> NetworkState:
        """What the host has for the network now: bridge, addresses, dnsmasq, leases."""
        return self._backend.network_state(self.name)

    def __repr__(self) -> str:
        return f"<Network {self.name} ({self.bridge})>"


class NetworkManager(Manager[Network]):
    """``client.networks``."""

    kind = "network"
    model = Network

    def create(self, name: str, config: Mapping[str, str] | None = None, *,
               type: str = "bridge", description: str = "") -> Network:
        """Create a managed network and bring it up (``ipv4.address`` defaults to ``auto``)."""
        return self._wrap(self._backend.network_create(name, dict(config or {}), type=type,
                                                       description=description))
