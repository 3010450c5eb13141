"""Observe the host: a plain snapshot of records plus kernel status, for the pure planner.

Level-based: every plan starts from a fresh observation (the kernel is the truth for what
runs).
"""

from __future__ import annotations

from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.engine.networks import NetworkEngine
from sysmgr.engine.observed import Observed, ObservedContainer, ObservedNetwork
from sysmgr.state import applied, inventory
from sysmgr.state import volumes as svol

__all__ = ["Observed", "ObservedContainer", "ObservedNetwork", "observe"]


def observe(host: Host, *, host_networks: bool = True) -> Observed:
    """Read the record and the kernel status of every object (empty for a fresh root);
    ``host_networks``: also the host's IPv4 networks (for new networks' subnets)."""
    if not host.layout.exists():
        return Observed()
    st = host.store
    images = {i.fingerprint: i for i in st.images()}
    aliases = {a: i.fingerprint for i in images.values() for a in i.aliases}
    containers = {}
    for rec in st.containers():
        containers[rec.name] = ObservedContainer(rec, records.status(host, rec).state)
    networks, used = NetworkEngine(host).observe(host_networks=host_networks)
    return Observed(
        pools={p.name: p for p in st.pools()},
        profiles={p.name: p for p in st.profiles()},
        images=images,
        aliases=aliases,
        containers=containers,
        networks=networks,
        host_networks=used,
        inventory={(r.kind, r.name): r for r in inventory.all_records(st)},
        applied=applied.all_specs(st),
        volumes={f"{v.pool}/{v.name}": v for v in svol.all_volumes(st)},
    )
