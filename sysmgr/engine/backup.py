"""Backups: ``export`` a container (config, snapshots, root filesystem) to one file, and
``import`` it again, on this host or another, onto any pool.

The file is a tar archive compressed with zstd::

    backup/index.yaml                      what is inside (read first, checked before anything
                                           changes): the container's definition, its image's
                                           metadata, its snapshots with theirs, the streams
    backup/snapshots/<snap>.<ext>.NNNNNN   one stream per snapshot, oldest first, in chunks
    backup/container.<ext>.NNNNNN          the root filesystem as it was at export time
    backup/checksums.yaml                  size and CRC-32 of every stream (read last)

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

Layer: engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import queue
import secrets
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

from sysmgr._util import proc
from sysmgr.drivers.storage.base import command_stream, feed_command
from sysmgr.engine import journal, records, volumes
from sysmgr.engine.reverter import Reverter
from sysmgr.errors import (
    AlreadyExists, DriverError, DriverUnavailable, Issue, NotFound, SysmgrError, ValidationError)
from sysmgr.model import expand as mexpand
from sysmgr.model import keys as mkeys
from sysmgr.model import names as mnames
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotRecord, SnapshotStore

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.engine.host import Host

FORMAT_VERSION = 1
CHUNK = 4 << 20
INDEX = "backup/index.yaml"
CHECKSUMS = "backup/checksums.yaml"
ZSTD_ARGS = ["-T0", "-1"]  # every core, the fastest level: export runs at the speed of the pool
# what a root filesystem needs from tar: numeric owners, ACLs, every xattr (file
# capabilities live in security.*), sparse files; hard links are tar's default
_TAR_KEEP = ["--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"]
_ZSTD_HINT = "apt-get install zstd"

Progress = Callable[[str], None]


class Corrupt(ValidationError):
    """The backup file is truncated or damaged."""


def _corrupt(path: str, why: str) -> Corrupt:
    return Corrupt([Issue(f"backup {path} is truncated or corrupt: {why}")],
                   hint="nothing was imported; export it again from the source")


def _need_zstd() -> None:
    if proc.which("zstd") is None:
        raise DriverUnavailable("backups need the zstd program", hint=_ZSTD_HINT)


# -- tar, written and read by hand (members of known size, streamed) ---------------------------

class _TarOut:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.now = int(time.time())

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:  # a raw pipe write may be partial
            view = view[self.raw.write(view):]

    def member(self, name: str, data: bytes | memoryview) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = self.now
        info.mode = 0o600
        self._write(info.tobuf(format=tarfile.USTAR_FORMAT))
        self._write(data)
        pad = -len(data) % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)

    def close(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))


class _TarIn:
    def __init__(self, raw: BinaryIO, path: str) -> None:
        self.raw = io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[arg-type]
        self.path = path
        self._pushed: tarfile.TarInfo | None = None
        self.ended = False

    def exact(self, n: int) -> bytes:
        data = self.raw.read(n)
        if len(data) != n:
            raise _corrupt(self.path, "the archive ends in the middle of a member")
        return data

    def next(self) -> tarfile.TarInfo | None:
        """The next member's header, or None at the end of the archive."""
        if self._pushed is not None:
            info, self._pushed = self._pushed, None
            return info
        if self.ended:
            return None
        block = self.raw.read(tarfile.BLOCKSIZE)
        if len(block) == 0:
            raise _corrupt(self.path, "the archive ends before its end marker")
        if len(block) != tarfile.BLOCKSIZE:
            raise _corrupt(self.path, "the archive ends in the middle of a header")
        if block == b"\0" * tarfile.BLOCKSIZE:
            self.ended = True
            return None
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise _corrupt(self.path, f"bad tar header ({e})") from None

    def push(self, info: tarfile.TarInfo) -> None:
        self._pushed = info

    def skip_pad(self, size: int) -> None:
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self.exact(pad)

    def small(self, name: str) -> bytes:
        info = self.next()
        if info is None or info.name != name:
            raise _corrupt(self.path, f"expected {name}, found "
                           f"{info.name if info else 'the end of the archive'}")
        if info.size > 16 << 20:
            raise _corrupt(self.path, f"{name} is implausibly large")
        data = self.exact(info.size)
        self.skip_pad(info.size)
        return data


class _StreamIn:
    """One stream of the archive (its chunk members, in order) as a readable file."""

    def __init__(self, tin: _TarIn, base: str) -> None:
        self.tin = tin
        self.base = base
        self.index = 0
        self.left = 0
        self.size = 0
        self.crc = 0
        self.started = False
        self.done = False
        self._cur = 0

    def _advance(self) -> bool:
        if self.started:
            self.tin.skip_pad(self._cur)
        info = self.tin.next()
        want = f"{self.base}.{self.index:06d}"
        if info is None or info.name != want:
            if not self.started:
                raise _corrupt(self.tin.path, f"expected {want}, found "
                               f"{info.name if info else 'the end of the archive'}")
            if info is not None:
                self.tin.push(info)
            self.done = True
            return False
        self.started = True
        self.index += 1
        self.left = self._cur = info.size
        return True

    def read(self, size: int = -1, /) -> bytes:
        while self.left == 0:
            if self.done or not self._advance():
                return b""
        n = self.left if size is None or size < 0 else min(size, self.left)
        data = self.tin.exact(n)
        self.left -= n
        self.size += n
        self.crc = zlib.crc32(data, self.crc)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@contextlib.contextmanager
def _piped(reader: _StreamIn) -> Iterator[io.FileIO]:
    """``reader``'s bytes through a pipe of our own (1 MiB), fed by a thread: the consumer
    (``btrfs receive``, ``tar -x``) gets the pipe as its stdin directly. An error of the
    reader (a truncated archive) is raised on leaving the block."""
    rfd, wfd = os.pipe()
    rf = io.FileIO(rfd, "rb", closefd=True)
    _big_pipe(rf)
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            while chunk := reader.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(wfd, view):]
        except BrokenPipeError:
            pass  # the consumer gave up: its own error says why
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failed.append(e)
        finally:
            os.close(wfd)  # EOF (or a cut stream) for the consumer

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        yield rf
    finally:
        rf.close()  # a feeder still writing gets EPIPE
        t.join()
    if failed:
        raise failed[0]


# -- processes -------------------------------------------------------------------------------

@contextlib.contextmanager
def _compressor(out: BinaryIO) -> Iterator[BinaryIO]:
    """``zstd`` writing to ``out``; yields its stdin (raw). Raises DriverError if it fails."""
    _need_zstd()
    with tempfile.TemporaryFile() as err:
        p = proc.popen(["zstd", "-q", *ZSTD_ARGS, "-c"], stdin=subprocess.PIPE, stdout=out,
                       stderr=err, bufsize=0)
        assert p.stdin is not None
        _big_pipe(p.stdin)
        ok = False
        try:
            yield p.stdin  # type: ignore[misc]
            ok = True
        finally:
            with contextlib.suppress(BrokenPipeError):
                p.stdin.close()
            if not ok:
                p.kill()
            rc = p.wait()
        if rc != 0:
            err.seek(0)
            raise DriverError(f"zstd failed: {err.read().decode(errors='replace').strip()}")


def _zstd_says(lines: list[str], rc: int) -> str:
    last = lines[-1].strip() if lines else f"exit code {rc}"
    return last if last.startswith("zstd:") else f"zstd: {last}"


class _Decompressor:
    def __init__(self, path: str) -> None:
        _need_zstd()
        self.path = path
        self.err = tempfile.TemporaryFile()
        self.p = proc.popen(["zstd", "-q", "-d", "-c", "--", path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=self.err, bufsize=0)
        assert self.p.stdout is not None
        _big_pipe(self.p.stdout)
        self.stdout: BinaryIO = self.p.stdout  # type: ignore[assignment]

    def finish(self) -> None:
        """Read to the end and check zstd's verdict (a damaged or cut frame)."""
        while self.stdout.read(1 << 20):
            pass
        rc = self.p.wait()
        if rc != 0:
            self.err.seek(0)
            lines = self.err.read().decode(errors="replace").strip().splitlines()
            raise _corrupt(self.path, _zstd_says(lines, rc))

    def failure(self) -> str | None:
        """zstd's complaint when it has failed (damaged, cut or not a zstd file), else None."""
        try:
            rc = self.p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        if rc == 0:
            return None
        self.err.seek(0)
        lines = self.err.read().decode(errors="replace").strip().splitlines()
        return _zstd_says(lines, rc)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.stdout.close()
        self.err.close()


_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def _big_pipe(f: object) -> None:
    """Grow a pipe's buffer (fewer wake-ups between producer, sysmgr and zstd)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(f.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]


def _read_into(stream: BinaryIO, buf: bytearray) -> memoryview:
    """Fill ``buf`` from a raw stream; the part filled (short only at the stream's end)."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return view[:got]


def _chunks(stream: BinaryIO, size: int) -> Iterator[tuple[memoryview, int]]:
    """The stream in chunks of ``size`` (the last one shorter, at least one chunk), each with
    the CRC-32 of the stream so far; read (and summed) by a thread, so that reading the
    producer overlaps writing to zstd. A chunk is valid until the next one is asked for."""
    depth = 2
    bufs = [bytearray(size) for _ in range(depth + 2)]  # queued + being filled + being written
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def reader() -> None:
        crc, i = 0, 0
        try:
            while not stop.is_set():
                chunk = _read_into(stream, bufs[i % len(bufs)])
                i += 1
                crc = zlib.crc32(chunk, crc)  # releases the GIL
                q.put((chunk, crc))
                if len(chunk) < size:
                    return
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if len(item[0]) < size:
                return
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()  # unblock a reader waiting on a full queue
        t.join()


def _tar_stream(path: str, what: str) -> contextlib.AbstractContextManager[BinaryIO]:
    return command_stream(["tar", "--create", "--file=-", "--directory", path, "--one-file-system",
                           "--sparse", *_TAR_KEEP, "."], what=what)


def _extract(stream: Any, path: str, what: str) -> None:
    # GNU tar refuses '..' members and defers risky symlinks: a hostile archive stays inside
    feed_command(["tar", "--extract", "--file=-", "--directory", path, "--same-owner",
                  "--preserve-permissions", *_TAR_KEEP], stream, what=what)


def _clear(path: str) -> None:
    """Empty a volume's root directory (keeping the directory itself)."""
    from sysmgr.drivers.storage.dir import remove_tree

    for n in os.listdir(path):
        remove_tree(os.path.join(path, n))


# -- export ----------------------------------------------------------------------------------

@dataclass
class ExportResult:
    path: str
    size: int
    snapshots: list[str]
    optimized: bool
    stream_format: str


def _dump(data: Any) -> bytes:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).encode()


def export(host: "Host", name: str, path: str, *, optimized: bool = False,
           progress: Progress | None = None) -> ExportResult:
    """Write container ``name`` with its snapshots to the backup file ``path``."""
    out_path = os.path.abspath(path)
    if os.path.isdir(out_path):
        raise ValidationError([Issue(f"{out_path} is a directory", path="file")],
                              hint="give the backup file's name, e.g. c1.tar.zst")
    if not os.path.isdir(os.path.dirname(out_path)):
        raise NotFound(f"directory {os.path.dirname(out_path)} does not exist")
    _need_zstd()
    with host.locked():
        journal.recover(host)
        st = host.store
        rec = st.container(name)
        drv = host.pool_driver(rec.pool)
        if optimized and not drv.info.send_receive:
            raise ValidationError([Issue(f"storage pool {rec.pool!r} (driver {drv.name}) cannot "
                                         "stream its volumes: export without --optimized",
                                         path="optimized")])
        snaps = SnapshotStore(st).all(name)
        fmt = (drv.info.stream_format or "") if optimized else "tar"
        ext = "bin" if optimized else "tar"
        img_meta: dict[str, Any] = {}
        with contextlib.suppress(NotFound):
            img_meta = st.image(rec.image).metadata
        img_meta = dict(rec.volatile.get("image.meta") or img_meta)
        tmp = None
        if drv.info.snapshots and (optimized or drv.info.cow_snapshots):
            tmp = "backup-" + secrets.token_hex(6)
        streams = []
        prev = None
        for s in snaps:
            streams.append({"file": f"snapshots/{s.name}.{ext}", "snapshot": s.name,
                            "base": prev if optimized and drv.info.incremental_send else None})
            prev = s.name
        streams.append({"file": f"container.{ext}", "snapshot": tmp,
                        "base": prev if optimized and drv.info.incremental_send else None})
        _, devs = records.expanded(host, rec)
        index = {
            "format_version": FORMAT_VERSION,
            "created": time.time(),
            "name": name,
            "optimized": optimized,
            "stream_format": fmt,
            "pool": {"name": rec.pool, "driver": drv.name},
            "container": {"image": rec.image, "image_meta": img_meta,
                          "image_os": rec.volatile.get("image.os", ""),
                          "profiles": list(rec.profiles), "config": dict(rec.config),
                          "devices": {k: dict(v) for k, v in rec.devices.items()},
                          "description": rec.description, "created": rec.created,
                          "root_size": mkeys.root_disk_size(devs)},
            "snapshots": [{"name": s.name, "created": s.created, "expires": s.expires,
                           "profiles": s.profiles, "config": s.config, "devices": s.devices,
                           "description": s.description} for s in snaps],
            "streams": streams,
        }
        partial = f"{out_path}.partial-{os.getpid()}"
        sums: dict[str, dict[str, Any]] = {}
        with journal.intent(host, "export", container=name, pool=rec.pool, partial=partial) as it:
            try:
                if tmp is not None:
                    it.note(snapshot=tmp)
                    drv.create_snapshot(name, tmp)
                with open(partial, "wb") as f, _compressor(f) as zin:  # type: ignore[arg-type]
                    out = _TarOut(zin)
                    out.member(INDEX, _dump(index))
                    for s in streams:
                        if progress:
                            progress(f"exporting {s['file']}")
                        if optimized:
                            src = drv.send(name, s["snapshot"], since=s["base"])
                        elif s["snapshot"] is not None:
                            src = _tar_stream(drv.snapshot_path(name, s["snapshot"]), f"tar of {name}")
                        else:
                            src = _tar_stream(drv.container_path(name), f"tar of {name}")
                        crc, size, i = 0, 0, 0
                        with src as stream:
                            _big_pipe(stream)
                            for chunk, crc in _chunks(stream, CHUNK):
                                out.member(f"backup/{s['file']}.{i:06d}", chunk)
                                size += len(chunk)
                                i += 1
                        sums[s["file"]] = {"size": size, "crc32": f"{crc:08x}", "chunks": i}
                    out.member(CHECKSUMS, _dump({"streams": sums}))
                    out.close()
                os.rename(partial, out_path)
            finally:
                if tmp is not None:
                    with contextlib.suppress(NotFound):
                        drv.delete_snapshot(name, tmp)
        return ExportResult(out_path, os.path.getsize(out_path), [s.name for s in snaps],
                            optimized, fmt)


# -- import ----------------------------------------------------------------------------------

def _check_index(path: str, index: Any) -> dict[str, Any]:
    if not isinstance(index, dict) or index.get("format_version") != FORMAT_VERSION:
        raise _corrupt(path, "not a sysmgr backup (no index of a known format version)")
    for key, kind in (("name", str), ("container", dict), ("snapshots", list), ("streams", list),
                      ("optimized", bool)):
        if not isinstance(index.get(key), kind):
            raise _corrupt(path, f"index field {key!r} is missing or not a {kind.__name__}")
    from sysmgr.engine.snapshots import check_name

    names = [s.get("name") for s in index["snapshots"] if isinstance(s, dict)]
    if len(names) != len(index["snapshots"]) or len(set(names)) != len(names):
        raise _corrupt(path, "the index lists snapshots without names or twice")
    for n in names:
        check_name(n)
    files = [s.get("file") for s in index["streams"] if isinstance(s, dict)]
    if len(files) != len(names) + 1 or any(not isinstance(f, str) for f in files):
        raise _corrupt(path, "the index's streams do not match its snapshots")
    return index


def _retarget(host: "Host", rec: ContainerRecord, pool: str) -> dict[str, dict[str, str]]:
    """``rec``'s local devices, with the root disk moved to ``pool`` when its expansion puts
    it elsewhere (a local override of the expanded root disk, as ``-s POOL`` does)."""
    devices = {k: dict(v) for k, v in rec.devices.items()}
    _, devs = records.expanded(host, rec)
    root = next((n for n, d in devs.items() if mkeys.is_root_disk(d)), "root")
    if devs.get(root, {}).get("pool") != pool:
        devices[root] = {**devs.get(root, {"type": "disk", "path": "/"}), "pool": pool}
    return devices


def import_(host: "Host", path: str, *, name: str | None = None, pool: str | None = None,
            progress: Progress | None = None) -> ContainerRecord:
    """Create a container (stopped) from the backup file ``path``."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise NotFound(f"backup file {path} not found")
    import yaml

    from sysmgr.engine.host import DEFAULT_POOL

    with host.locked():
        journal.recover(host)
        st = host.store
        dec = _Decompressor(path)
        try:
            tin = _TarIn(dec.stdout, path)
            try:
                index = _check_index(path, yaml.safe_load(tin.small(INDEX)))
            except yaml.YAMLError as e:
                raise _corrupt(path, f"unreadable index ({e})") from None
            c = index["container"]
            name = name or index["name"]
            reason = mnames.name_problem(name)
            if reason:
                raise ValidationError([Issue(f"invalid container name {name!r}: {reason}", path="name")])
            if st.has_container(name):
                raise AlreadyExists(f"container {name!r} already exists",
                                    hint="import it under another name: sysmgr import FILE NEWNAME")
            src_pool = (index.get("pool") or {}).get("name")
            target = pool or (src_pool if src_pool and st.has_pool(src_pool) else None) or \
                (DEFAULT_POOL if st.has_pool(DEFAULT_POOL) else (st.pools()[0].name if st.pools() else None))
            if target is None:
                raise NotFound("no storage pool exists", hint="run 'sysmgr init --auto'")
            st.pool(target)
            drv = host.pool_driver(target)
            optimized = index["optimized"]
            if optimized and (not drv.info.send_receive or drv.info.stream_format != index.get("stream_format")):
                raise ValidationError([Issue(
                    f"this backup was exported with --optimized from a {index.get('stream_format')} "
                    f"pool; storage pool {target!r} (driver {drv.name}, stream format "
                    f"{drv.info.stream_format or 'none'}) cannot receive it", path="pool")],
                    hint="import it into a pool of the same driver (-s POOL), or export it again "
                         "without --optimized")
            if index["snapshots"] and not drv.info.snapshots:
                raise ValidationError(f"storage pool {target!r} (driver {drv.name}) cannot hold "
                                      "the backup's snapshots")
            meta = {"image.os": c.get("image_os", "")}
            if c.get("image_meta"):
                meta["image.meta"] = c["image_meta"]
            try:
                rec = ContainerRecord(name, str(c.get("image", "")), target,
                                      [str(p) for p in c.get("profiles", [])],
                                      {str(k): mkeys.value_to_str(v) for k, v in (c.get("config") or {}).items()},
                                      {str(k): {str(dk): mkeys.value_to_str(dv) for dk, dv in d.items()}
                                       for k, d in (c.get("devices") or {}).items()},
                                      str(c.get("description", "")), meta, time.time())
            except (TypeError, AttributeError) as e:
                raise _corrupt(path, f"bad container definition in the index ({e})") from None
            missing = [Issue(f"profile {p!r} not found on this host", path=f"profiles[{i}]")
                       for i, p in enumerate(rec.profiles) if not st.has_profile(p)]
            if missing:
                raise ValidationError(missing, hint="create the profiles first, then import again")
            issues = [Issue(r, path=p) for p, r in mkeys.validate_config(rec.config)]
            issues += [Issue(r, path=p) for p, r in mkeys.validate_devices(rec.devices)]
            if issues:
                raise ValidationError(issues)
            rec.devices = _retarget(host, rec, target)
            cfg, devs = records.expanded(host, rec)
            problems = mexpand.validate_expanded(cfg, devs)
            issues = [Issue(r, path=p) for p, r in problems] + volumes.size_issues(host, devs)
            if issues:
                raise ValidationError(issues)
            snap_recs = [SnapshotRecord(name, s["name"], float(s.get("created") or time.time()),
                                        s.get("expires"), list(s.get("profiles") or []),
                                        dict(s.get("config") or {}),
                                        {k: dict(v) for k, v in (s.get("devices") or {}).items()},
                                        str(s.get("description", ""))) for s in index["snapshots"]]
            for sr in snap_recs:  # a restore must find the root disk on the pool it is on now
                if all(st.has_profile(p) for p in sr.profiles):
                    sr.devices = _retarget(host, ContainerRecord(name, "", target, sr.profiles,
                                                                 sr.config, sr.devices), target)
            with journal.intent(host, "import", container=name, pool=target) as it, \
                    volumes.full_is_clear(target), Reverter() as r:
                r.add(lambda: drv.delete_container(name), f"delete volume of {name}")
                vol = None
                for s in index["streams"]:
                    if progress:
                        progress(f"importing {s['file']}")
                    reader = _StreamIn(tin, f"backup/{s['file']}")
                    snap = s.get("snapshot")
                    try:
                        if optimized:
                            if not snap:
                                raise _corrupt(path, f"stream {s['file']} names no snapshot")
                            with _piped(reader) as pipe:
                                vol = drv.receive(name, pipe, snap=snap)
                        else:
                            if vol is None:
                                vol = volumes.empty_volume(drv, name, it)
                            else:
                                _clear(vol)
                            with _piped(reader) as pipe:
                                _extract(pipe, vol, f"unpacking {s['file']}")
                            if s is not index["streams"][-1]:
                                drv.create_snapshot(name, snap)
                        reader.drain()
                    except Corrupt:
                        raise
                    except DriverError as e:
                        full = volumes.pool_full(e, target)
                        if full is not None:
                            raise full from e
                        raise _corrupt(path, f"{s['file']}: {e.message}") from e
                    s["_got"] = (reader.size, f"{reader.crc:08x}")
                try:
                    sums = yaml.safe_load(tin.small(CHECKSUMS))["streams"]
                except (yaml.YAMLError, TypeError, KeyError):
                    raise _corrupt(path, "unreadable checksums") from None
                for s in index["streams"]:
                    want = sums.get(s["file"]) if isinstance(sums, dict) else None
                    if not isinstance(want, dict) or (want.get("size"), want.get("crc32")) != s["_got"]:
                        raise _corrupt(path, f"{s['file']} does not match its checksum")
                if tin.next() is not None:
                    raise _corrupt(path, "unexpected data after the checksums")
                dec.finish()
                if optimized:
                    last = index["streams"][-1]["snapshot"]
                    if snap_recs:
                        drv.restore_snapshot(name, last)
                    drv.delete_snapshot(name, last)
                assert vol is not None
                size = mkeys.root_disk_size(devs)
                if size is not None or drv.info.quotas:
                    volumes.set_size(host, name, target, size)
                if name != index["name"]:
                    records.write_hostname(drv.container_path(name), name)
                rdir = host.layout.container_dir(name)
                os.makedirs(rdir, exist_ok=True)
                r.add(lambda: records.remove_tree(rdir, ignore_errors=True), f"remove {rdir}")
                with st.transaction():
                    st.add_container(rec)
                    snaps = SnapshotStore(st)
                    for sr in snap_recs:
                        snaps.add(sr)
                r.success()
            return rec
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
