"""Streams of tool-backed formats (``btrfs send``/``receive``, ``tar -c``/``-x``): a producer
whose stdout is read as a stream, a consumer fed one, each failing with the tool's own last
word as a DriverError."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import tempfile
from typing import BinaryIO, Iterator, Protocol, Sequence

from sysmgr._util import proc
from sysmgr.errors import CommandFailed, DriverError

STREAM_CHUNK = 1 << 20


class Readable(Protocol):
    """What a consumer reads from: a file, a pipe, an SSH channel file..."""

    def read(self, size: int = -1, /) -> bytes: ...


def _failed(argv: Sequence[str], rc: int, err: BinaryIO, what: str) -> DriverError:
    """DriverError naming the last stderr line, chained to the CommandFailed it stands for."""
    err.seek(0)
    text = err.read().decode(errors="replace")
    lines = text.strip().splitlines()
    if rc == -signal.SIGPIPE:
        reason = "the stream was not read to the end"
    elif rc < 0:
        reason = f"killed by {signal.Signals(-rc).name}"
    else:
        reason = lines[-1] if lines else f"exit code {rc}"
    e = DriverError(f"{what} failed: {reason}")
    e.__cause__ = CommandFailed(argv, rc, text)
    e.__suppress_context__ = True
    return e


@contextlib.contextmanager
def command_stream(argv: Sequence[str], *, what: str, cwd: str | None = None) -> Iterator[BinaryIO]:
    """Run a producer (``btrfs send``, ``tar -c``) and yield its stdout, unbuffered.

    On a clean exit of the block, waits for the producer and raises DriverError if it failed
    (an unread rest makes it fail with a broken pipe: the consumer did not get everything).
    On an exception the producer is killed. stderr goes to a temporary file, so a chatty
    producer can never block on a full pipe.
    """
    with tempfile.TemporaryFile() as err:
        # bufsize=0: stdout is a raw FileIO, so feed_command can hand its fd straight to a
        # local consumer (no copy through Python) without losing buffered bytes
        p = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                       cwd=cwd, bufsize=0)
        assert p.stdout is not None
        ok = False
        try:
            yield p.stdout  # type: ignore[misc]
            ok = True
        finally:
            if not ok:
                p.kill()
            p.stdout.close()  # a producer still writing now gets EPIPE instead of blocking
            rc = p.wait()
        if rc != 0:
            raise _failed(argv, rc, err, what)  # type: ignore[arg-type]


def feed_command(argv: Sequence[str], stream: Readable, *, what: str, cwd: str | None = None) -> None:
    """Run a consumer (``btrfs receive``, ``tar -x``) with ``stream`` as its stdin, to the end.

    A raw file object (``io.FileIO``: a file opened unbuffered, or the stdout of
    :func:`command_stream`) is passed as the consumer's stdin directly; anything else is
    pumped through in chunks. Raises DriverError when the consumer fails; an exception from
    ``stream`` kills the consumer and propagates.
    """
    direct = isinstance(stream, io.FileIO)
    with tempfile.TemporaryFile() as err:
        p = proc.popen(argv, stdin=stream.fileno() if direct else subprocess.PIPE,  # type: ignore[attr-defined]
                       stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, bufsize=0)
        try:
            if not direct:
                assert p.stdin is not None
                try:
                    while chunk := stream.read(STREAM_CHUNK):
                        view = memoryview(chunk)
                        while view:  # a raw write may be partial
                            view = view[p.stdin.write(view):]
                except BrokenPipeError:
                    pass  # the consumer gave up; its exit status and stderr say why
                finally:
                    p.stdin.close()
            rc = p.wait()
        except BaseException:
            p.kill()
            p.wait()
            raise
        if rc != 0:
            raise _failed(argv, rc, err, what)  # type: ignore[arg-type]
