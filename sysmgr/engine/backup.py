"""Backups: ``export`` a container (config, snapshots, root filesystem) to one file, and
``import`` it again, on this host or another, onto any pool.

The file is a tar archive compressed with zstd::

    backup/index.yaml                      what is inside (read first, checked before anything
                                           changes): the container's definition, its image's
                                           metadata, its snapshots with theirs, the streams
    backup/snapshots/<snap>.<ext>.NNNNNN   one stream per snapshot, oldest first, in chunks
    backup/container.<ext>.NNNNNN          the root filesystem as it was at export time
    backup/volumes/<pool>/<vol>.tar.NNNNNN with --volumes: each custom volume the container's
                                           disks name (format version 2, see backup_volumes)
    backup/checksums.yaml                  size and CRC-32 of every stream (read last)

Streams hold the files as they are on disk: where a filesystem could not idmap, a
container's files carry its host ids (:mod:`sysmgr.engine.idshift`). The index records that
(``volatile``, for the container and each snapshot) and an import records it again, so the
imported container's first start shifts from there (to its own map, or back to container ids
on a pool that idmaps): one rule for portable and optimized streams alike, and nothing is
rewritten on export.

A *stream* is a ``tar`` archive of a tree (``ext`` ``tar``: portable, imports onto any pool),
or with ``--optimized`` the pool's own ``send`` stream (``ext`` ``bin``, format
``info.stream_format``, incremental from the previous snapshot where the driver can): it
imports only onto a pool with the same stream format, and keeps the blocks that snapshots
share. Streams are cut into chunks of :data:`CHUNK` bytes, each a tar member, so nothing has
to be spooled to know a member's size; ``cat backup/container.bin.* | btrfs receive DIR``
works by hand.

Export takes a temporary snapshot for a consistent root filesystem where snapshots are cheap
(``info.cow_snapshots``; a dir pool is read live: stop the container for a consistent copy),
writes ``FILE.partial-<pid>`` and renames it into place. Import reads the index, checks it
against this host (name free, profiles present, pool able), then streams everything into the
new container's volume; a short read, a bad tar header, a failing consumer, a checksum
mismatch or a zstd error reject the file with a clear error, and everything imported so far
is removed (by the undo, or by the intent if sysmgr is killed): nothing half-imported stays.

The tar, chunk and zstd machinery is :mod:`sysmgr.engine.streams`; this module keeps the
file's layout (index, streams, checksums) and the export / import steps.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from sysmgr._util import exposure
from sysmgr._util.exposure import Warn
from sysmgr.engine import (
    arrival, backup_volumes, events, idshift, journal, records, streams, volume_streams, volumes)
from sysmgr.engine.host import DEFAULT_POOL, Host
from sysmgr.engine.reverter import Reverter
from sysmgr.engine.snapshots import check_name
from sysmgr.errors import (
    AlreadyExists, DriverError, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state.db import ContainerRecord, Store
from sysmgr.state.snapshots import SnapshotRecord, SnapshotStore

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.drivers.storage.base import StoragePool
    from sysmgr.engine.journal import Intent

FORMAT_VERSION = 1
VOLUMES_VERSION = 2   # a backup carrying custom volumes: older versions refuse it clearly
CHUNK = 4 << 20
INDEX = "backup/index.yaml"
CHECKSUMS = "backup/checksums.yaml"

Progress = Callable[[str], None]


class Corrupt(ValidationError):
    """The backup file is truncated or damaged."""


def _corrupt(path: str, why: str) -> Corrupt:
    return Corrupt([Issue(f"backup {path} is truncated or corrupt: {why}")],
                   hint="nothing was imported; export it again from the source")


def _yaml() -> ModuleType:
    import yaml  # lazy: slow to import, and the CLI must not pay for it at start-up

    return yaml


def _dump(data: Any) -> bytes:
    return _yaml().safe_dump(data, sort_keys=False).encode()


# -- export ----------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    path: str
    size: int
    snapshots: list[str]
    optimized: bool
    stream_format: str
    volumes: list[str] = field(default_factory=list)   # POOL/NAME of the volumes carried


def export_path(path: str) -> str:
    """The backup file's absolute path, checked: not a directory, in one that exists."""
    out_path = os.path.abspath(path)
    if os.path.isdir(out_path):
        raise ValidationError([Issue(f"{out_path} is a directory", path="file")],
                              hint="give the backup file's name, e.g. c1.tar.zst")
    if not os.path.isdir(os.path.dirname(out_path)):
        raise NotFound(f"directory {os.path.dirname(out_path)} does not exist")
    return out_path


def _plan_streams(snaps: list[SnapshotRecord], tmp: str | None, optimized: bool,
                  incremental: bool) -> list[dict[str, Any]]:
    """The index's streams: one per snapshot, oldest first, then the container (read from
    the snapshot ``tmp`` when there is one); optimized ones incremental where possible."""
    ext = "bin" if optimized else "tar"
    inc = optimized and incremental
    files: list[dict[str, Any]] = []
    prev = None
    for s in snaps:
        files.append({"file": f"snapshots/{s.name}.{ext}", "snapshot": s.name,
                      "base": prev if inc else None})
        prev = s.name
    files.append({"file": f"container.{ext}", "snapshot": tmp, "base": prev if inc else None})
    return files


def _build_index(host: Host, rec: ContainerRecord, drv: "StoragePool",
                 snaps: list[SnapshotRecord], files: list[dict[str, Any]],
                 optimized: bool, with_volumes: bool = False) -> dict[str, Any]:
    """The content of :data:`INDEX`: everything import checks before it changes anything."""
    img_meta: dict[str, Any] = {}
    with contextlib.suppress(NotFound):
        img_meta = host.store.image(rec.image).metadata
    img_meta = dict(rec.volatile.get("image.meta") or img_meta)
    _, devs = records.expanded(host, rec)
    vols = backup_volumes.entries(host, devs) if with_volumes else []
    return {
        "format_version": VOLUMES_VERSION if vols else FORMAT_VERSION,
        "created": time.time(),
        "name": rec.name,
        "optimized": optimized,
        "stream_format": (drv.info.stream_format or "") if optimized else "tar",
        "pool": {"name": rec.pool, "driver": drv.name},
        "container": {"image": rec.image, "image_meta": img_meta,
                      "image_os": rec.volatile.get("image.os", ""),
                      "profiles": list(rec.profiles), "config": dict(rec.config),
                      "devices": {k: dict(v) for k, v in rec.devices.items()},
                      "description": rec.description, "created": rec.created,
                      "root_size": mkeys.root_disk_size(devs),
                      "volatile": idshift.disk_state(rec.volatile)},
        "snapshots": [{"name": s.name, "created": s.created, "expires": s.expires,
                       "profiles": s.profiles, "config": s.config, "devices": s.devices,
                       "description": s.description, "volatile": idshift.disk_state(s.volatile)}
                      for s in snaps],
        "streams": files,
        **({"volumes": vols} if vols else {}),
    }


def _write_backup(f: BinaryIO, host: Host, drv: "StoragePool", name: str,
                  index: dict[str, Any], progress: Progress | None) -> None:
    """The archive into ``f`` through zstd: the index, every stream in chunks, checksums."""
    sums: dict[str, dict[str, Any]] = {}
    with streams.compressor(f) as zin:
        out = streams.TarWriter(zin)
        out.member(INDEX, _dump(index))
        for s in index["streams"]:
            if progress:
                progress(f"exporting {s['file']}")
            kind = index["stream_format"] if index["optimized"] else volume_streams.TAR
            with volume_streams.open_volume(drv, name, s["snapshot"], kind=kind,
                                            base=s["base"]) as stream:
                streams.big_pipe(stream)
                size, crc, n = out.chunked(f"backup/{s['file']}", stream, CHUNK)
            sums[s["file"]] = {"size": size, "crc32": f"{crc:08x}", "chunks": n}
        backup_volumes.write(out, host, index.get("volumes", []), sums, CHUNK, progress)
        out.member(CHECKSUMS, _dump({"streams": sums}))
        out.close()


def export(host: Host, name: str, path: str | BinaryIO, *, optimized: bool = False,
           progress: Progress | None = None, volumes: bool = False,
           instance_only: bool = False) -> ExportResult:
    """Write container ``name`` with its snapshots (``instance_only``: without) to the
    backup file ``path``, or to the open binary stream ``path`` (``export NAME -``: stdout;
    nothing to rename there); ``volumes``: and the custom volumes its disks name."""
    sink = None if isinstance(path, str) else path
    out_path = export_path(path) if isinstance(path, str) else "-"
    streams.need_zstd()
    with host.locked():
        journal.recover(host)
        rec = host.store.container(name)
        drv = host.pool_driver(rec.pool)
        if optimized and not drv.info.send_receive:
            raise ValidationError([Issue(f"storage pool {rec.pool!r} (driver {drv.name}) cannot "
                                         "stream its volumes: export without --optimized",
                                         path="optimized")])
        snaps = [] if instance_only else SnapshotStore(host.store).all(name)
        tmp = None  # a snapshot of our own, for a consistent root filesystem where it is cheap
        if drv.info.snapshots and (optimized or drv.info.cow_snapshots):
            tmp = "backup-" + secrets.token_hex(6)
        files = _plan_streams(snaps, tmp, optimized, drv.info.incremental_send)
        index = _build_index(host, rec, drv, snaps, files, optimized, volumes)
        partial = f"{out_path}.partial-{os.getpid()}" if sink is None else ""
        with journal.intent(host, "export", container=name, pool=rec.pool, partial=partial) as it:
            try:
                if tmp is not None:
                    it.note(snapshot=tmp)
                    drv.create_snapshot(name, tmp)
                if sink is not None:
                    size = _write_to_stream(sink, host, drv, name, index, progress)
                else:
                    with open(partial, "wb") as f:
                        _write_backup(f, host, drv, name, index, progress)
                    os.rename(partial, out_path)
                    size = os.path.getsize(out_path)
            finally:
                if tmp is not None:
                    with contextlib.suppress(NotFound):
                        drv.delete_snapshot(name, tmp)
        return ExportResult(out_path, size, [s.name for s in snaps], optimized,
                            index["stream_format"],
                            [f"{v['pool']}/{v['name']}" for v in index.get("volumes", [])])


def _write_to_stream(sink: BinaryIO, host: Host, drv: "StoragePool", name: str,
                     index: dict[str, Any], progress: Progress | None) -> int:
    """The archive into an open stream (zstd writes to its fd); its size when it is a
    regular file, else -1 (a pipe's reader knows)."""
    sink.flush()
    _write_backup(sink, host, drv, name, index, progress)
    st = os.fstat(sink.fileno())
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


# -- import: read and check the index, plan the container ------------------------------------

def _check_index(path: str, index: Any) -> dict[str, Any]:
    """``index`` if it has the shape this version writes (fields, snapshot names, streams)."""
    if not isinstance(index, dict) or index.get("format_version") not in (FORMAT_VERSION,
                                                                          VOLUMES_VERSION):
        raise _corrupt(path, "not a sysmgr backup (no index of a known format version)")
    why = backup_volumes.check_index(index.get("volumes", []))
    if why:
        raise _corrupt(path, why)
    for key, kind in (("name", str), ("container", dict), ("snapshots", list), ("streams", list),
                      ("optimized", bool)):
        if not isinstance(index.get(key), kind):
            raise _corrupt(path, f"index field {key!r} is missing or not a {kind.__name__}")
    names = [s.get("name") for s in index["snapshots"] if isinstance(s, dict)]
    if len(names) != len(index["snapshots"]) or len(set(names)) != len(names):
        raise _corrupt(path, "the index lists snapshots without names or twice")
    for n in names:
        check_name(n)
    files = [s.get("file") for s in index["streams"] if isinstance(s, dict)]
    if len(files) != len(names) + 1 or any(not isinstance(f, str) for f in files):
        raise _corrupt(path, "the index's streams do not match its snapshots")
    return index


def _read_index(tin: streams.TarReader, path: str) -> dict[str, Any]:
    """The archive's first member, :data:`INDEX`, parsed and checked."""
    yaml = _yaml()
    try:
        return _check_index(path, yaml.safe_load(tin.small(INDEX)))
    except yaml.YAMLError as e:
        raise _corrupt(path, f"unreadable index ({e})") from None


@dataclass
class _ImportPlan:
    """Where and what :func:`import_` creates, checked against this host."""

    name: str
    pool: str
    drv: "StoragePool"
    rec: ContainerRecord
    devs: dict[str, dict[str, str]]  # the record's expanded devices
    snaps: list[SnapshotRecord]
    optimized: bool
    stream_format: str
    allow_devices: bool = False
    devices: set[str] = field(default_factory=set)  # device nodes found (dropped or kept)
    volumes: list[backup_volumes.Arrival] = field(default_factory=list)


def _free_name(st: Store, name: str) -> str:
    """``name`` if it is a valid container name not taken on this host."""
    reason = mnames.name_problem(name)
    if reason:
        raise ValidationError([Issue(f"invalid container name {name!r}: {reason}", path="name")])
    if st.has_container(name):
        raise AlreadyExists(f"container {name!r} already exists",
                            hint="import it under another name: sysmgr import FILE NEWNAME")
    return name


def _pick_pool(st: Store, index: dict[str, Any], pool: str | None) -> str:
    """The pool asked for, else the backup's own pool if this host has one of that name,
    else the default pool, else the first one."""
    src_pool = (index.get("pool") or {}).get("name")
    target = pool or (src_pool if src_pool and st.has_pool(src_pool) else None) or \
        (DEFAULT_POOL if st.has_pool(DEFAULT_POOL) else (st.pools()[0].name if st.pools() else None))
    if target is None:
        raise NotFound("no storage pool exists", hint="run 'sysmgr init --auto'")
    return target


def _check_pool_can(drv: "StoragePool", target: str, index: dict[str, Any]) -> None:
    """The pool can take the backup's streams and snapshots."""
    if index["optimized"] and (not drv.info.send_receive
                               or drv.info.stream_format != index.get("stream_format")):
        raise ValidationError([Issue(
            f"this backup was exported with --optimized from a {index.get('stream_format')} "
            f"pool; storage pool {target!r} (driver {drv.name}, stream format "
            f"{drv.info.stream_format or 'none'}) cannot receive it", path="pool")],
            hint="import it into a pool of the same driver (-s POOL), or export it again "
                 "without --optimized")
    if index["snapshots"] and not drv.info.snapshots:
        raise ValidationError(f"storage pool {target!r} (driver {drv.name}) cannot hold "
                              "the backup's snapshots")


def _record_from_index(c: dict[str, Any], name: str, target: str, path: str) -> ContainerRecord:
    """The container's record from the index's ``container`` entry, on pool ``target``."""
    meta = {"image.os": c.get("image_os", "")}
    if c.get("image_meta"):
        meta["image.meta"] = c["image_meta"]
    try:
        meta.update(idshift.checked_state(c.get("volatile")))  # the ids its files carry
        return ContainerRecord(name, str(c.get("image", "")), target,
                               [str(p) for p in c.get("profiles", [])],
                               {str(k): mkeys.value_to_str(v) for k, v in (c.get("config") or {}).items()},
                               {str(k): {str(dk): mkeys.value_to_str(dv) for dk, dv in d.items()}
                                for k, d in (c.get("devices") or {}).items()},
                               str(c.get("description", "")), meta, time.time())
    except (TypeError, AttributeError, ValueError) as e:
        raise _corrupt(path, f"bad container definition in the index ({e})") from None


def _snapshot_records(host: Host, index: dict[str, Any], name: str,
                      target: str) -> list[SnapshotRecord]:
    """The records of the index's snapshots, their root disk moved to ``target`` too."""
    recs = [SnapshotRecord(name, s["name"], float(s.get("created") or time.time()),
                           s.get("expires"), list(s.get("profiles") or []),
                           dict(s.get("config") or {}),
                           {k: dict(v) for k, v in (s.get("devices") or {}).items()},
                           str(s.get("description", "")), idshift.checked_state(s.get("volatile")))
            for s in index["snapshots"]]
    for sr in recs:  # a restore must find the root disk on the pool it is on now
        if all(host.store.has_profile(p) for p in sr.profiles):
            sr.devices = arrival.retarget(host, ContainerRecord(name, "", target, sr.profiles,
                                                         sr.config, sr.devices), target)
    return recs


def _plan_import(host: Host, index: dict[str, Any], path: str, name: str | None,
                 pool: str | None, allow_devices: bool) -> _ImportPlan:
    """Check the index against this host before anything changes: name, pool, record."""
    st = host.store
    name = _free_name(st, name or index["name"])
    target = _pick_pool(st, index, pool)
    st.pool(target)
    drv = host.pool_driver(target)
    _check_pool_can(drv, target, index)
    rec = _record_from_index(index["container"], name, target, path)
    devs = arrival.check_record(host, rec, target)
    snaps = _snapshot_records(host, index, name, target)
    vols = backup_volumes.plan(host, index, target, rec)
    return _ImportPlan(name, target, drv, rec, devs, snaps, index["optimized"],
                       str(index.get("stream_format") or volume_streams.TAR), allow_devices,
                       volumes=vols)


# -- import: receive the streams, verify, commit ---------------------------------------------

def _receive_one(p: _ImportPlan, s: dict[str, Any], reader: streams.ChunkReader,
                 last: bool, path: str, it: "Intent") -> str:
    """Store one stream of the archive; returns the container's volume path."""
    snap = s.get("snapshot")
    if p.optimized:
        if not snap:
            raise _corrupt(path, f"stream {s['file']} names no snapshot")
        vol = volume_streams.store_volume(p.drv, p.name, reader, kind=p.stream_format,
                                          snap=snap)
        if not last:
            _refuse_devices(p, p.drv.snapshot_path(p.name, snap), path, snap)
        return vol
    # device nodes go before the snapshot: snapshots are read-only
    return volume_streams.store_volume(p.drv, p.name, reader, kind=volume_streams.TAR,
                                       snap=None if last else snap, intent=it,
                                       unpacked=lambda tree: _devices(p, tree))


def _devices(p: _ImportPlan, tree: str) -> None:
    """Note the device nodes under the writable ``tree``; drop them unless allowed.

    A backup may come from another host or another user: a 0666 block device node in it
    would be a door to this host's disks, and the runtime makes every container's ``/dev``
    itself, so a container needs none in its volume.
    """
    p.devices.update(exposure.find_devices(tree) if p.allow_devices
                     else exposure.drop_devices(tree))


def _refuse_devices(p: _ImportPlan, snap_path: str, path: str, snap: str) -> None:
    """Refuse an optimized backup with device nodes in a snapshot, unless allowed.

    A received snapshot is read-only and the base of the next incremental stream: removing
    a node would mean making it writable (which drops its received identity) and would let
    the next stream apply onto a modified base. A portable backup (tar streams) has its
    nodes dropped instead.
    """
    found = exposure.find_devices(snap_path)
    if found and not p.allow_devices:
        raise ValidationError([Issue(exposure.devices_warning(
            f"backup {path}, snapshot {snap}", found, "holds"), path="allow_devices")],
            hint="import it with --allow-devices, or export it again without --optimized "
                 "(device nodes are then dropped)")
    p.devices.update(found)


def _receive_streams(p: _ImportPlan, index: dict[str, Any], tin: streams.TarReader, path: str,
                     it: "Intent", progress: Progress | None) -> list[tuple[int, str]]:
    """Store every stream, oldest snapshot first; returns each one's size and CRC-32."""
    got: list[tuple[int, str]] = []
    vol = None
    for s in index["streams"]:
        if progress:
            progress(f"importing {s['file']}")
        reader = streams.ChunkReader(tin, f"backup/{s['file']}")
        try:
            vol = _receive_one(p, s, reader, s is index["streams"][-1], path, it)
            reader.drain()
        except Corrupt:
            raise
        except DriverError as e:
            full = volumes.pool_full(e, p.pool)
            if full is not None:
                raise full from e
            raise _corrupt(path, f"{s['file']}: {e.message}") from e
        got.append((reader.size, f"{reader.crc:08x}"))
    assert vol is not None
    return got


def _verify_checksums(tin: streams.TarReader, files: list[dict[str, Any]],
                      got: list[tuple[int, str]], path: str) -> None:
    """Compare what was received with :data:`CHECKSUMS`, the archive's last member."""
    yaml = _yaml()
    try:
        sums = yaml.safe_load(tin.small(CHECKSUMS))["streams"]
    except (yaml.YAMLError, TypeError, KeyError):
        raise _corrupt(path, "unreadable checksums") from None
    for s, have in zip(files, got):
        want = sums.get(s["file"]) if isinstance(sums, dict) else None
        if not isinstance(want, dict) or (want.get("size"), want.get("crc32")) != have:
            raise _corrupt(path, f"{s['file']} does not match its checksum")
    if tin.next() is not None:
        raise _corrupt(path, "unexpected data after the checksums")


def _settle_volume(host: Host, p: _ImportPlan, index: dict[str, Any]) -> None:
    """The volume as the container wants it: the last received state, its size, hostname."""
    if p.optimized:  # the container's state came as one more snapshot: make it the volume
        last = index["streams"][-1]["snapshot"]
        if p.snaps:
            p.drv.restore_snapshot(p.name, last)
        p.drv.delete_snapshot(p.name, last)
    size = mkeys.root_disk_size(p.devs)
    if size is not None or p.drv.info.quotas:
        volumes.set_size(host, p.name, p.pool, size)
    if p.name != index["name"]:
        records.write_hostname(p.drv.container_path(p.name), p.name)


def _commit(host: Host, p: _ImportPlan, r: Reverter) -> None:
    """The container's directory and its records (container and snapshots)."""
    rdir = host.layout.container_dir(p.name)
    os.makedirs(rdir, exist_ok=True)
    r.add(lambda: records.remove_tree(rdir, ignore_errors=True), f"remove {rdir}")
    st = host.store
    with st.transaction():
        st.add_container(p.rec)
        snaps = SnapshotStore(st)
        for sr in p.snaps:
            snaps.add(sr)
        backup_volumes.commit(st, p.volumes)


def _import_streams(host: Host, p: _ImportPlan, index: dict[str, Any], tin: streams.TarReader,
                    dec: streams.Decompressor, path: str, progress: Progress | None) -> None:
    """Everything after the checks, undone as a whole on failure (or by the intent if killed)."""
    with journal.intent(host, "import", container=p.name, pool=p.pool) as it, \
            contextlib.ExitStack() as vol_intents, volumes.full_is_clear(p.pool), Reverter() as r:
        r.add(lambda: p.drv.delete_container(p.name), f"delete volume of {p.name}")
        got = _receive_streams(p, index, tin, path, it, progress)
        got += backup_volumes.receive(host, p.volumes, tin, vol_intents, r, progress)
        _verify_checksums(tin, index["streams"] + index.get("volumes", []), got, path)
        dec.finish()
        _settle_volume(host, p, index)
        if p.optimized:
            _devices(p, p.drv.container_path(p.name))
        _commit(host, p, r)
        r.success()


def import_(host: Host, path: str | BinaryIO, *, name: str | None = None,
            pool: str | None = None, progress: Progress | None = None,
            allow_devices: bool = False, warn: Warn | None = None) -> ContainerRecord:
    """Create a container (stopped) from the backup file ``path``, or from the open binary
    stream ``path`` (``import -``: stdin).

    Device nodes in the backup's trees are dropped unless ``allow_devices`` (an optimized
    backup with nodes in a snapshot is refused instead, see :func:`_refuse_devices`); once
    the import has succeeded, ``warn`` gets one message naming them (dropped or kept).
    """
    source = None if isinstance(path, str) else path
    if isinstance(path, str):
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise NotFound(f"backup file {path} not found")
    else:
        path = "<stdin>"
    on_corrupt = functools.partial(_corrupt, path)
    with host.locked():
        journal.recover(host)
        dec = streams.Decompressor(path, on_corrupt=on_corrupt, source=source)
        try:
            tin = streams.TarReader(dec.stdout, on_corrupt=on_corrupt)
            index = _read_index(tin, path)
            plan = _plan_import(host, index, path, name, pool, allow_devices)
            _import_streams(host, plan, index, tin, dec, path, progress)
            events.container(host, plan.name, "imported", detail=f"from {path}")
            if plan.devices and warn:
                verb = exposure.KEPT if allow_devices else exposure.DROPPED
                warn(exposure.devices_warning(f"backup {path}", sorted(plan.devices), verb))
            return plan.rec
        except Corrupt:
            why = dec.failure()  # a short read usually means zstd gave up: say why
            if why is not None:
                raise _corrupt(path, why) from None
            raise
        except SysmgrError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            full = volumes.pool_full(e, pool or "") if isinstance(e, OSError) else None
            if full is not None:
                raise full from e
            raise _corrupt(path, str(e)) from e
        finally:
            dec.close()
