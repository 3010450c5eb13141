"""Custom volumes in a backup (``export --volumes``): the volumes a container's disk devices
name travel beside it, and its import makes them again.

The index (format version 2) lists them under ``volumes``::

    - {pool: default, name: data, config: {size: 1GiB}, description: "",
       file: volumes/default/data.tar}

After the container's streams, each volume's current tree follows as a tar stream (numeric
owners, ACLs, xattrs: the container ids its files keep), cut into chunks as the container's
are, with its size and CRC-32 in the checksums. Its snapshots stay behind.

An import puts a volume on the pool of its name where this host has one, else on the pool the
container goes to (and points the container's own disk devices there); a volume of that name
already there refuses the import before anything changes. The volumes are made with the
container and undone with it (an intent each: a killed import leaves none behind).

Layer: engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sysmgr.drivers.storage.base import StoragePool
from sysmgr.engine import custom_volumes, disks, journal, streams, volume_streams
from sysmgr.engine.host import Host
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import SysmgrError
from sysmgr.model import keys as mkeys
from sysmgr.model import volume_keys as mvol
from sysmgr.state import volumes as svol
from sysmgr.state.db import ContainerRecord, Store

Progress = Callable[[str], None]
Sums = dict[str, dict[str, Any]]


def entries(host: Host, devices: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    """The index entries of the volumes ``devices`` (expanded) name, each once."""
    out: list[dict[str, Any]] = []
    for dname in mkeys.disk_order(devices):
        d = devices[dname]
        if not disks.is_volume(d) or any((e["pool"], e["name"]) == (d["pool"], d["source"])
                                         for e in out):
            continue
        rec = svol.get(host.store, d["pool"], d["source"])
        out.append({"pool": rec.pool, "name": rec.name, "config": dict(rec.config),
                    "description": rec.description,
                    "file": f"volumes/{rec.pool}/{rec.name}.tar"})
    return out


def write(out: streams.TarWriter, host: Host, vols: list[dict[str, Any]], sums: Sums,
          chunk: int, progress: Progress | None) -> None:
    """Each volume's tree as a chunked tar stream; its size and CRC-32 into ``sums``."""
    for v in vols:
        if progress:
            progress(f"exporting {v['file']}")
        view = host.pool_driver(v["pool"]).custom_volumes()
        with volume_streams.open_volume(view, v["name"], None, kind=volume_streams.TAR) as stream:
            streams.big_pipe(stream)
            size, crc, n = out.chunked(f"backup/{v['file']}", stream, chunk)
        sums[v["file"]] = {"size": size, "crc32": f"{crc:08x}", "chunks": n}


def check_index(vols: Any) -> str | None:
    """Why the index's ``volumes`` entry is malformed (None: it is fine)."""
    if not isinstance(vols, list):
        return "the index's volumes are not a list"
    for v in vols:
        if not isinstance(v, dict) or not all(isinstance(v.get(k), str) for k in ("pool", "name")):
            return "a volume in the index has no pool or name"
        if mvol.volume_name_problem(v["name"]) or v.get("file") != f"volumes/{v['pool']}/{v['name']}.tar":
            return f"volume {v.get('name')!r} in the index has a bad name or file"
    return None


@dataclass
class Arrival:
    """One volume an import makes: its index entry, where it goes, that pool's view."""

    entry: dict[str, Any]
    pool: str
    view: StoragePool

    @property
    def name(self) -> str:
        return str(self.entry["name"])


def plan(host: Host, index: Mapping[str, Any], target: str, rec: ContainerRecord) -> list[Arrival]:
    """Where each volume of the backup goes, checked (free name, a size the pool can
    enforce); the container's own disk devices of a volume that changes pool follow it."""
    out = []
    for v in index.get("volumes") or []:
        pool = v["pool"] if host.store.has_pool(v["pool"]) else target
        config = {str(k): mkeys.value_to_str(x) for k, x in (v.get("config") or {}).items()}
        try:
            drv = custom_volumes.check_new(host, pool, v["name"], config)
        except SysmgrError as e:
            e.hint = e.hint or "import into another pool (-s POOL), or delete the volume first"
            raise
        for d in rec.devices.values():
            if disks.is_volume(d) and (d["pool"], d["source"]) == (v["pool"], v["name"]):
                d["pool"] = pool
        out.append(Arrival({**v, "config": config}, pool, drv.custom_volumes()))
    return out


def receive(host: Host, arrivals: list[Arrival], tin: streams.TarReader, stack: contextlib.ExitStack,
            r: Reverter, progress: Progress | None) -> list[tuple[int, str]]:
    """Store each volume's stream as a new volume (its intent on ``stack``, its undo on
    ``r``); returns each one's size and CRC-32."""
    got = []
    for a in arrivals:
        if progress:
            progress(f"importing {a.entry['file']}")
        it = stack.enter_context(journal.intent(host, "volume", volume=a.name, pool=a.pool))
        reader = streams.ChunkReader(tin, f"backup/{a.entry['file']}")
        r.add(lambda a=a: a.view.delete_container(a.name), f"delete storage volume {a.pool}/{a.name}")
        volume_streams.store_volume(a.view, a.name, reader, kind=volume_streams.TAR, snap=None,
                                    intent=it)
        reader.drain()
        size = custom_volumes.check_size(a.view, a.entry["config"])
        if a.view.info.quotas:
            a.view.set_quota(a.name, size)
        got.append((reader.size, f"{reader.crc:08x}"))
    return got


def commit(st: Store, arrivals: list[Arrival]) -> None:
    """The volumes' records (inside the import's transaction)."""
    for a in arrivals:
        svol.add(st, svol.VolumeRecord(a.pool, a.name, dict(a.entry["config"]),
                                       str(a.entry.get("description") or "")))
