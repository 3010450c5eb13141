"""Observe the host: a plain snapshot of records plus kernel status, for the pure planner.

Level-based: every plan starts from a fresh observation (the kernel is the truth for what
runs). The digest lets ``apply`` refuse a plan made against a state that has since changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from sysmgr.engine.host import Host, _init_record
from sysmgr.engine.network import ObservedNetwork
from sysmgr.state.db import ContainerRecord, ImageRecord, PoolRecord, ProfileRecord


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
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def observe(host: Host) -> Observed:
    """Read the record and the kernel status of every object (empty for a fresh root)."""
    if not host.layout.exists():
        return Observed()
    st = host.store
    images = {i.fingerprint: i for i in st.images()}
    aliases = {a: i.fingerprint for i in images.values() for a in i.aliases}
    containers = {}
    for rec in st.containers():
        containers[rec.name] = ObservedContainer(rec, host.runtime.status(_init_record(rec)).state)
    networks, host_networks = host.networks.observe()
    return Observed(
        pools={p.name: p for p in st.pools()},
        profiles={p.name: p for p in st.profiles()},
        images=images,
        aliases=aliases,
        containers=containers,
        networks=networks,
        host_networks=host_networks,
    )
