"""What an observation of a host holds: plain records plus kernel status (no I/O here).

The pure planner works from an :class:`Observed`; :func:`sysmgr.engine.observe.observe`
makes one. The digest lets ``apply`` refuse a plan made against a state that has since
changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sysmgr.state.db import ContainerRecord, ImageRecord, PoolRecord, ProfileRecord
from sysmgr.state.inventory import InventoryRecord
from sysmgr.state.networks import NetworkRecord
from sysmgr.state.volumes import VolumeRecord


@dataclass(frozen=True)
class ObservedNetwork:
    """A recorded network and what is wrong with it on the host (empty: healthy)."""

    record: NetworkRecord
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObservedContainer:
    record: ContainerRecord
    state: str              # STOPPED | RUNNING | FROZEN


@dataclass(frozen=True)
class Observed:
    pools: dict[str, PoolRecord] = field(default_factory=dict)
    profiles: dict[str, ProfileRecord] = field(default_factory=dict)
    images: dict[str, ImageRecord] = field(default_factory=dict)      # by fingerprint
    aliases: dict[str, str] = field(default_factory=dict)             # alias -> fingerprint
    containers: dict[str, ObservedContainer] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    host_networks: tuple[str, ...] = ()    # IPv4 networks on the host (subnet overlap checks)
    # objects created from manifests: (kind, name) -> their inventory record
    inventory: dict[tuple[str, str], InventoryRecord] = field(default_factory=dict)
    # what the last apply asked of objects from manifests: (kind, name) -> definition
    # (:mod:`sysmgr.engine.drift`; not in the digest: it only labels changes)
    applied: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    volumes: dict[str, VolumeRecord] = field(default_factory=dict)   # "POOL/NAME" -> record

    def image_ref(self, ref: str) -> str | None:
        """Fingerprint for an alias or unique fingerprint prefix, else None."""
        if ref in self.aliases:
            return self.aliases[ref]
        hits = [fp for fp in self.images if fp.startswith(ref.lower())] if ref else []
        return hits[0] if len(hits) == 1 else None

    @property
    def digest(self) -> str:
        data = {
            "pools": {k: [v.driver, v.config] for k, v in self.pools.items()},
            "profiles": {k: asdict(v) for k, v in self.profiles.items()},
            "aliases": self.aliases,
            "containers": {k: [v.state, v.record.profiles, v.record.config, v.record.devices,
                               v.record.description, v.record.image]
                           for k, v in self.containers.items()},
        }
        if self.networks:
            data["networks"] = {k: [asdict(v.record), list(v.problems)]
                                for k, v in self.networks.items()}
        if self.volumes:
            data["volumes"] = {k: [v.config, v.description] for k, v in self.volumes.items()}
        if self.inventory:
            data["inventory"] = sorted([k, n, r.origin, r.prune]
                                       for (k, n), r in self.inventory.items())
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
