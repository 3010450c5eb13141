"""Streaming building blocks for moving volumes as bytes: backups today, copy and move
between hosts next.

- a tar archive written and read by hand (:class:`TarWriter`, :class:`TarReader`), member by
  member, so members of known size can be streamed without spooling;
- a *chunked stream*: one byte stream (a ``tar`` of a tree, a pool's ``send`` stream) cut
  into members ``<base>.000000``, ``<base>.000001``... of a fixed size, written with
  :meth:`TarWriter.chunked` and read back as a file with :class:`ChunkReader`, both
  keeping its size and CRC-32;
- zstd as a child process (:func:`compressor`, :class:`Decompressor`), ``tar`` of a tree and
  back (:func:`tar_stream`, :func:`extract_tar`), and plumbing between them (:func:`piped`,
  :func:`big_pipe`, :func:`chunks`).

Nothing here knows what the archive holds (a backup's index and checksums live in
``backup.py``). A damaged or cut stream is reported through ``on_corrupt(why)``, a callable
that returns the exception to raise: the caller words it for its users (a backup says which
file is corrupt); the default raises :class:`StreamError`.

Layer: engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import queue
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from sysmgr._util import proc
from sysmgr.drivers.storage.base import Readable, command_stream, feed_command
from sysmgr.errors import DriverError, DriverUnavailable, SysmgrError

ZSTD_ARGS = ("-T0", "-1")  # every core, the fastest level: export runs at the speed of the pool
ZSTD_HINT = "apt-get install zstd"
# what a root filesystem needs from tar: numeric owners, ACLs, every xattr (file
# capabilities live in security.*), sparse files; hard links are tar's default
TAR_KEEP = ["--numeric-owner", "--acls", "--xattrs", "--xattrs-include=*"]
PIPE_SIZE = 1 << 20
SMALL_MAX = 16 << 20  # the largest member TarReader.small accepts
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, missing from the fcntl module before Python 3.10
_READ = 1 << 20  # how much a pump reads at a time

OnCorrupt = Callable[[str], BaseException]


class StreamError(SysmgrError):
    """A stream is truncated or damaged (the default of ``on_corrupt``)."""


def _stream_error(why: str) -> BaseException:
    return StreamError(f"stream is truncated or corrupt: {why}")


def need_zstd() -> None:
    """Raise DriverUnavailable (with the install hint) if the ``zstd`` program is missing."""
    if proc.which("zstd") is None:
        raise DriverUnavailable("backups need the zstd program", hint=ZSTD_HINT)


def chunk_name(base: str, index: int) -> str:
    """The member name of chunk ``index`` of the chunked stream ``base``."""
    return f"{base}.{index:06d}"


# -- tar, written and read by hand (members of known size, streamed) ---------------------------

class TarWriter:
    """Writes a ustar archive to a raw stream, one member of known size at a time."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.now = int(time.time())

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:  # a raw pipe write may be partial
            view = view[self.raw.write(view):]

    def member(self, name: str, data: bytes | memoryview) -> None:
        """Append a regular file ``name`` (mode 0600) holding ``data``."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = self.now
        info.mode = 0o600
        self._write(info.tobuf(format=tarfile.USTAR_FORMAT))
        self._write(data)
        pad = -len(data) % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)

    def chunked(self, base: str, stream: BinaryIO, size: int) -> tuple[int, int, int]:
        """Append ``stream`` to its end as the chunked stream ``base`` (members of ``size``
        bytes, see :func:`chunks`); returns its size, CRC-32 and number of chunks."""
        crc, total, i = 0, 0, 0
        for chunk, crc in chunks(stream, size):
            self.member(chunk_name(base, i), chunk)
            total += len(chunk)
            i += 1
        return total, crc, i

    def close(self) -> None:
        """Write the end-of-archive marker (the raw stream stays open)."""
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))


class TarReader:
    """Reads a tar archive member by member from a stream, strictly: a short read or a bad
    header raises ``on_corrupt(why)``."""

    def __init__(self, raw: BinaryIO, *, on_corrupt: OnCorrupt = _stream_error) -> None:
        self.raw = io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[arg-type]
        self.on_corrupt = on_corrupt
        self._pushed: tarfile.TarInfo | None = None
        self.ended = False

    def exact(self, n: int) -> bytes:
        """The next ``n`` bytes of the archive, all of them."""
        data = self.raw.read(n)
        if len(data) != n:
            raise self.on_corrupt("the archive ends in the middle of a member")
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
            raise self.on_corrupt("the archive ends before its end marker")
        if len(block) != tarfile.BLOCKSIZE:
            raise self.on_corrupt("the archive ends in the middle of a header")
        if block == b"\0" * tarfile.BLOCKSIZE:
            self.ended = True
            return None
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise self.on_corrupt(f"bad tar header ({e})") from None

    def push(self, info: tarfile.TarInfo) -> None:
        """Put a header back: the next :meth:`next` returns it again."""
        self._pushed = info

    def skip_pad(self, size: int) -> None:
        """Skip the padding after a member of ``size`` bytes."""
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self.exact(pad)

    def small(self, name: str, limit: int = SMALL_MAX) -> bytes:
        """The content of the next member, which must be ``name`` and at most ``limit`` bytes."""
        info = self.next()
        if info is None or info.name != name:
            raise self.on_corrupt(f"expected {name}, found "
                                  f"{info.name if info else 'the end of the archive'}")
        if info.size > limit:
            raise self.on_corrupt(f"{name} is implausibly large")
        data = self.exact(info.size)
        self.skip_pad(info.size)
        return data


class ChunkReader:
    """The chunked stream ``base`` of a :class:`TarReader` (its chunk members, in order) as a
    readable file; counts its ``size`` and ``crc`` (CRC-32) as it is read. It must have a
    first chunk; it ends at the first member that is not its next chunk (left unread)."""

    def __init__(self, tin: TarReader, base: str) -> None:
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
        want = chunk_name(self.base, self.index)
        if info is None or info.name != want:
            if not self.started:
                raise self.tin.on_corrupt(f"expected {want}, found "
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
        """Up to ``size`` bytes (the rest of the current chunk at most); b"" at the end."""
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
        """Read (and sum) what the consumer left, up to the stream's end."""
        while self.read(_READ):
            pass


@contextlib.contextmanager
def piped(reader: Readable) -> Iterator[io.FileIO]:
    """``reader``'s bytes through a pipe of our own (1 MiB), fed by a thread: the consumer
    (``btrfs receive``, ``tar -x``) gets the pipe as its stdin directly. An error of the
    reader (a truncated archive) is raised on leaving the block."""
    rfd, wfd = os.pipe()
    rf = io.FileIO(rfd, "rb", closefd=True)
    big_pipe(rf)
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            while chunk := reader.read(_READ):
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
def compressor(out: BinaryIO, args: Sequence[str] = ZSTD_ARGS) -> Iterator[BinaryIO]:
    """``zstd`` writing to ``out``; yields its stdin (raw). Raises DriverError if it fails."""
    need_zstd()
    with tempfile.TemporaryFile() as err:
        p = proc.popen(["zstd", "-q", *args, "-c"], stdin=subprocess.PIPE, stdout=out,
                       stderr=err, bufsize=0)
        assert p.stdin is not None
        big_pipe(p.stdin)
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


class Decompressor:
    """``zstd -d`` reading the file ``path`` (or the open stream ``source``: ``import -``):
    read the plain bytes from :attr:`stdout`, then :meth:`finish` for zstd's verdict; always
    :meth:`close`."""

    def __init__(self, path: str, *, on_corrupt: OnCorrupt = _stream_error,
                 source: BinaryIO | None = None) -> None:
        need_zstd()
        self.path = path
        self.on_corrupt = on_corrupt
        self.err = tempfile.TemporaryFile()
        argv = ["zstd", "-q", "-d", "-c"] + (["--", path] if source is None else [])
        self.p = proc.popen(argv, stdin=subprocess.DEVNULL if source is None else source,
                            stdout=subprocess.PIPE, stderr=self.err, bufsize=0)
        assert self.p.stdout is not None
        big_pipe(self.p.stdout)
        self.stdout: BinaryIO = self.p.stdout  # type: ignore[assignment]

    def finish(self) -> None:
        """Read to the end and check zstd's verdict (a damaged or cut frame)."""
        while self.stdout.read(_READ):
            pass
        rc = self.p.wait()
        if rc != 0:
            raise self.on_corrupt(_zstd_says(self._stderr_lines(), rc))

    def failure(self) -> str | None:
        """zstd's complaint when it has failed (damaged, cut or not a zstd file), else None."""
        try:
            rc = self.p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        if rc == 0:
            return None
        return _zstd_says(self._stderr_lines(), rc)

    def _stderr_lines(self) -> list[str]:
        self.err.seek(0)
        return self.err.read().decode(errors="replace").strip().splitlines()

    def close(self) -> None:
        """Stop zstd if it still runs and release its pipe and stderr file."""
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.stdout.close()
        self.err.close()


def big_pipe(f: object) -> None:
    """Grow a pipe's buffer (fewer wake-ups between producer, sysmgr and zstd); anything that
    is not a pipe is left alone."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(f.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]


def read_into(stream: BinaryIO, buf: bytearray) -> memoryview:
    """Fill ``buf`` from a raw stream; the part filled (short only at the stream's end)."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return view[:got]


def chunks(stream: BinaryIO, size: int) -> Iterator[tuple[memoryview, int]]:
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
                chunk = read_into(stream, bufs[i % len(bufs)])
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


def tar_stream(path: str, what: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """``tar`` of the tree at ``path`` (one file system, sparse files, owners, ACLs, xattrs)
    as a readable stream; see :func:`command_stream` (``what`` names it in errors)."""
    return command_stream(["tar", "--create", "--file=-", "--directory", path, "--one-file-system",
                           "--sparse", *TAR_KEEP, "."], what=what)


def extract_tar(stream: Readable, path: str, what: str) -> None:
    """Unpack the tar ``stream`` into the directory ``path``, owners and permissions kept;
    raises DriverError if tar fails (``what`` names it)."""
    # GNU tar refuses '..' members and defers risky symlinks: a hostile archive stays inside
    feed_command(["tar", "--extract", "--file=-", "--directory", path, "--same-owner",
                  "--preserve-permissions", *TAR_KEEP], stream, what=what)
