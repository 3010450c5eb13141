"""Streams between the admin host and a member, each on an SSH exec channel of its own.

The RPC channel carries JSON lines only; bulk and interactive bytes never go through it (nor
through base64). Each stream runs ``<sysmgr> --root ROOT _stream KIND --rpc N REQUEST`` on a
new channel of the member's connection (:mod:`sysmgr.remote.stream_server` is the other
end). Its stdout starts with JSON lines — notifications ``{"progress": ...}`` /
``{"warn": ...}``, then a status: ``{"ok": true, ...}`` after which raw bytes follow (exec,
pull, export), or ``{"result": ...}`` / ``{"error": ...}`` at the end (push, import). An
error the member finds before the stream starts therefore reaches the admin as the same
sysmgr exception, exit code included.

- ``exec``: the caller's stdin is copied in by a thread of its own (a member that writes
  without reading must never stall our reading), stdout and stderr come back on the
  channel's two streams; with a tty the channel has a pseudo-terminal of the member's sshd,
  the local terminal is raw and window changes are forwarded. The member's exit status is
  the command's exit code.
- ``pull`` / ``push``: a file's bytes; ``export`` / ``import``: a backup or image file, staged
  in the member root's ``tmp`` directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import selectors
import shutil
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Mapping, Sequence

from sysmgr._util import ptyproxy
from sysmgr.errors import DriverError, Issue, NotFound, RemoteError, RemoteRejected, ValidationError
from sysmgr.remote import codec, protocol
from sysmgr.remote.session import ChannelReader, MemberSession

CHUNK = 1 << 20
Callbacks = Mapping[str, Callable[[str], None] | None]


def _status(reader: ChannelReader, session: MemberSession, what: str,
            callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Read notifications up to the stream's status; raise the member's error."""
    while True:
        line = reader.readline()
        if line is None:  # no status at all: not a sysmgr that speaks this protocol
            tail = reader.stderr_tail()
            raise RemoteRejected(
                f"{session.name}: '{session.spec.sysmgr}' on {session.conn.address} does not "
                f"answer sysmgr's {what} stream" + (f": {tail.splitlines()[-1]}" if tail else ""),
                hint="install the same sysmgr version there, or give the member's sysmgr command")
        msg = protocol.loads(line)
        for kind in codec.CALLBACKS:
            cb = (callbacks or {}).get(kind)
            if kind in msg and cb is not None:
                cb(str(msg[kind]))
        if "error" in msg:
            raise codec.decode_error(msg["error"])
        if "ok" in msg or "result" in msg:
            return msg


def _late_error(reader: ChannelReader, session: MemberSession, what: str, code: int) -> Exception:
    """The error of a stream that failed after its bytes began (its stderr's last line
    carries it as JSON), or a plain RemoteError."""
    tail = reader.stderr_tail()
    last = tail.splitlines()[-1] if tail else ""
    with contextlib.suppress(protocol.ProtocolError):
        msg = protocol.loads(last.encode())
        if "error" in msg:
            return codec.decode_error(msg["error"])
    return RemoteError(f"{session.name}: the {what} stream failed (exit status {code})"
                       + (f": {last}" if last else ""))


# -- exec ------------------------------------------------------------------------------------

def _winsize(fd: int) -> tuple[int, int]:
    """(columns, rows) of terminal ``fd`` (80x24 when it has none)."""
    rows, cols = ptyproxy.window(fd) or (24, 80)
    return cols, rows


def exec_interactive(session: MemberSession, name: str, argv: Sequence[str], *,
                     env: Mapping[str, str] | None, cwd: str | None, tty: bool | None,
                     stdin: int, stdout: int, stderr: int, user: int | None = None,
                     group: int | None = None) -> int:
    """Run ``argv`` in container ``name`` on the member with the caller's stdio streamed
    through; the command's exit code."""
    if tty is None:
        tty = os.isatty(stdin) and os.isatty(stdout)
    tty_fd = stdin if os.isatty(stdin) else stdout
    pty = (os.environ.get("TERM") or "xterm", *_winsize(tty_fd)) if tty else None
    request = {"name": name, "argv": list(argv), "env": dict(env) if env else None,
               "cwd": cwd, "tty": tty, "user": user, "group": group}
    chan = session.stream("exec", request, pty=pty)
    try:
        reader = ChannelReader(chan)
        chan.settimeout(session.call_timeout)
        _status(reader, session, "exec")
        chan.settimeout(None)  # an interactive session may sit idle for as long as it likes
        code = _relay(chan, reader.take(), (stdin, stdout, stderr), tty, tty_fd)
    finally:
        chan.close()
    if code < 0:
        raise RemoteError(f"{session.name}: the exec session ended without an exit status")
    return code


def _relay(chan: Any, first: bytes, stdio: tuple[int, int, int], tty: bool, tty_fd: int) -> int:
    stop_r, stop_w = os.pipe2(os.O_CLOEXEC)
    feeder = threading.Thread(target=_feed, args=(chan, stdio[0], stop_r, tty), daemon=True)
    out = _Sink(stdio[1])
    out.write(first)
    try:
        with contextlib.ExitStack() as stack:
            winch = None
            if tty:
                stack.enter_context(ptyproxy.raw_terminal(stdio[0]))
                winch = stack.enter_context(ptyproxy.sigwinch_pipe())
            feeder.start()
            _drain(chan, out, _Sink(stdio[2]), winch, tty_fd)
        return chan.recv_exit_status()
    finally:
        os.write(stop_w, b"x")
        chan.close()  # a feeder blocked on a full window wakes up with an error
        if feeder.is_alive():
            feeder.join()
        os.close(stop_r)
        os.close(stop_w)


class _Sink:
    """A local output fd; once the reader has gone (EPIPE) the rest is dropped, as the
    local exec does."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.open = True

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.open:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # a non-blocking fd of the caller's: wait until it drains
                select.select([], [self.fd], [])
            except OSError:
                self.open = False


def _drain(chan: Any, out: _Sink, err: _Sink, winch: int | None, tty_fd: int) -> None:
    """Copy the channel's stdout and stderr out until the member's side is finished."""
    with selectors.DefaultSelector() as sel:
        sel.register(chan.fileno(), selectors.EVENT_READ)
        if winch is not None:
            sel.register(winch, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fd == winch:
                    with contextlib.suppress(BlockingIOError):
                        os.read(winch, 64)
                    cols, rows = _winsize(tty_fd)
                    chan.resize_pty(width=cols, height=rows)
            busy = False
            while chan.recv_ready():
                out.write(chan.recv(CHUNK))
                busy = True
            while chan.recv_stderr_ready():
                err.write(chan.recv_stderr(CHUNK))
                busy = True
            if not busy and (chan.eof_received or chan.closed):
                return


def _feed(chan: Any, fd: int, stop: int, tty: bool) -> None:
    """Copy the caller's stdin to the channel until it ends or the session is over. At the
    end of piped input a tty session gets the terminal's EOF character (^D), as locally;
    stdin that cannot be read counts as ended."""
    try:
        # poll(2), not epoll: stdin may be a regular file, which epoll refuses
        with selectors.PollSelector() as sel:
            sel.register(stop, selectors.EVENT_READ)
            try:
                sel.register(fd, selectors.EVENT_READ)
            except (OSError, ValueError):
                sel.unregister(stop)  # no stdin: end the input at once
            while sel.get_map():
                if any(key.fd == stop for key, _ in sel.select()):
                    return
                try:
                    data = os.read(fd, CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                chan.sendall(data)
        if tty:
            chan.sendall(b"\x04")
        else:
            chan.shutdown_write()
    except (OSError, EOFError):
        return  # the session ended: nothing more to send


# -- files -----------------------------------------------------------------------------------

def file_put(session: MemberSession, name: str, path: str, src: BinaryIO, *, mode: int,
             uid: int, gid: int, mkdir: bool) -> None:
    """Write ``src`` to ``path`` in container ``name`` on the member."""
    request = {"name": name, "path": path, "mode": mode, "uid": uid, "gid": gid, "mkdir": mkdir}
    chan = session.stream("push", request)
    try:
        chan.settimeout(session.call_timeout)
        _send(chan, src)
        _status(ChannelReader(chan), session, "file push")
    finally:
        chan.close()


def _send(chan: Any, src: BinaryIO) -> None:
    """Copy ``src`` into the channel, then end its input. A member that stopped reading
    (it refused the request) closes the channel: its status says why."""
    try:
        while chunk := src.read(CHUNK):
            chan.sendall(chunk)
        chan.shutdown_write()
    except (OSError, EOFError):
        pass


def file_pull(session: MemberSession, name: str, path: str, dst: BinaryIO) -> None:
    """Copy the file at ``path`` in container ``name`` on the member to ``dst``."""
    chan = session.stream("pull", {"name": name, "path": path})
    try:
        chan.settimeout(session.call_timeout)
        reader = ChannelReader(chan)
        _status(reader, session, "file pull")
        dst.write(reader.take())
        while data := chan.recv(CHUNK):
            dst.write(data)
        code = chan.recv_exit_status()
        if code != 0:
            raise _late_error(reader, session, "file pull", code)
    finally:
        chan.close()


# -- migrations ------------------------------------------------------------------------------

def migration_endpoint(session: MemberSession, role: str, request: Mapping[str, Any]) -> Any:
    """One endpoint of a copy or move on the member (:mod:`sysmgr.remote.endpoints`)."""
    from sysmgr.remote import endpoints

    def opened(chan: Any) -> bytes:
        reader = ChannelReader(chan)
        _status(reader, session, "migration")
        return reader.take()

    return endpoints.remote(session, role, request, opened)


# -- backups and images ----------------------------------------------------------------------

def container_export(session: MemberSession, name: str, path: str | BinaryIO, *,
                     optimized: bool, progress: Callable[[str], None] | None,
                     volumes: bool = False, instance_only: bool = False) -> Any:
    """Export container ``name`` on the member to the backup file ``path`` here (or to the
    open stream ``path``: ``export NAME -``)."""
    from sysmgr.engine.backup import export_path  # tar and zstd handling: exports only

    # a path is checked here as a local export checks it
    out = export_path(path) if isinstance(path, str) else path
    return export_file(session, {"name": name, "optimized": optimized, "volumes": volumes,
                                 "instance_only": instance_only}, out, progress)


def image_export(session: MemberSession, ref: str, path: str, *,
                 progress: Callable[[str], None] | None) -> Any:
    """Export image ``ref`` on the member as a unified tarball to ``path`` here (for another
    member's ``image_receive``); the digest of its tree."""
    return export_file(session, {"what": "image", "ref": ref}, os.path.abspath(path), progress)


def export_file(session: MemberSession, request: Mapping[str, Any], out_path: str | BinaryIO,
                progress: Callable[[str], None] | None) -> Any:
    """Run an export stream on the member and write what it sends to ``out_path`` here (a
    file, renamed into place once whole; or an open stream, written as it comes)."""
    chan = session.stream("export", dict(request))
    partial = f"{out_path}.partial-{os.getpid()}" if isinstance(out_path, str) else ""
    try:
        chan.settimeout(session.call_timeout)
        reader = ChannelReader(chan)
        status = _status(reader, session, "export", {"progress": progress})
        size = int(status.get("size", -1))
        try:
            with (open(partial, "wb") if partial else contextlib.nullcontext(out_path)) as f:
                got = _copy_out(chan, reader.take(), f)
        except OSError as e:
            if not partial:  # a caller's stream (a pipe to an unpacker): the caller says why
                raise
            raise DriverError(f"cannot write {out_path}: {e.strerror or e}") from e
        if got != size:
            raise RemoteError(f"{session.name}: the export stream ended after {got} of "
                              f"{size} bytes")
        if partial:
            os.replace(partial, out_path)
    finally:
        chan.close()
        if partial:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    result = codec.decode(status.get("result"))
    if dataclasses.is_dataclass(result) and hasattr(result, "path"):
        result = dataclasses.replace(result, path=out_path if isinstance(out_path, str) else "-")
    return result


def image_publish(session: MemberSession, ref: str, *, fmt: str, output: str,
                  alias: str | None, progress: Callable[[str], None] | None) -> tuple[str, None]:
    """Publish container (or snapshot) ``ref`` on the member for OCI tooling, written here
    at ``output``: an oci-archive file (``fmt="oci"``) or a layout directory
    (``"oci-layout"``: the member's archive unpacked as it comes). It appears whole or not
    at all; (the manifest digest, None)."""
    from sysmgr.drivers.images.oci_write import check_output  # publish only

    out = check_output(output)
    request = {"what": "publish", "ref": ref, "alias": alias}
    if fmt == "oci":
        return export_file(session, request, out, progress), None
    stage = tempfile.mkdtemp(prefix=".publish-", dir=os.path.dirname(out))
    try:
        digest = _export_unpacked(session, request, os.path.join(stage, "layout"), progress)
        os.rename(os.path.join(stage, "layout"), out)
        return digest, None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _export_unpacked(session: MemberSession, request: Mapping[str, Any], dest: str,
                     progress: Callable[[str], None] | None) -> Any:
    """An export stream of an OCI layout tar, unpacked into ``dest`` by a thread reading
    a pipe as the bytes arrive (no copy of the archive here)."""
    from sysmgr.remote import layouts

    r, w = os.pipe2(os.O_CLOEXEC)
    failed: list[BaseException] = []

    def unpack() -> None:
        with os.fdopen(r, "rb") as src:  # closed on failure: the writer gets EPIPE
            try:
                layouts.unpack(src, dest)
            except BaseException as e:  # noqa: BLE001 - raised by the caller below
                failed.append(e)
                return
            while src.read(CHUNK):  # the tar's padding after its end: the writer finishes
                pass

    reader = threading.Thread(target=unpack, daemon=True, name="sysmgr-unpack")
    reader.start()
    try:
        with os.fdopen(w, "wb") as sink:
            result = export_file(session, request, sink, progress)
    except BrokenPipeError:  # the unpacker stopped reading: its error says why
        reader.join()
        if failed:
            raise failed[0] from None
        raise
    except BaseException:
        reader.join()  # the pipe is closed: the unpacker ends (its complaint follows from this)
        raise
    reader.join()
    if failed:
        raise failed[0]
    return result


def _copy_out(chan: Any, first: bytes, f: BinaryIO) -> int:
    """Write ``first`` and the rest of the channel's output to ``f``; the bytes written."""
    f.write(first)
    got = len(first)
    while data := chan.recv(CHUNK):
        f.write(data)
        got += len(data)
    f.flush()
    return got


def import_file(session: MemberSession, what: str, path: str | BinaryIO,
                options: Mapping[str, Any], *, progress: Callable[[str], None] | None,
                warn: Callable[[str], None] | None) -> Any:
    """Send the local backup (``what="container"``) or image file ``path`` (or what the
    open stream ``path`` holds: ``import -``; an OCI layout directory, packed as an
    oci-archive on the way) to the member and import it there; the import's result."""
    from sysmgr.remote import layouts

    if not isinstance(path, str):
        return _import_stream(session, what, lambda chan: _send(chan, path), "stdin",
                              options, progress, warn)
    path = os.path.abspath(path)
    if what == "image" and layouts.is_layout(path):
        name = (os.path.basename(path) or "layout") + ".tar"
        return _import_stream(session, what, lambda chan: _send_layout(chan, path), name,
                              options, progress, warn)
    if os.path.isdir(path):
        raise ValidationError([Issue(f"{path} is a directory: a member imports image and "
                                     "backup files, and OCI image layouts", path="file")],
                              hint="pack the directory as a tarball first")
    if not os.path.isfile(path):
        raise NotFound(f"{'backup' if what == 'container' else 'image'} file {path} not found")
    with open(path, "rb") as f:
        return _import_stream(session, what, lambda chan: _send(chan, f),
                              os.path.basename(path), options, progress, warn)


class _ChannelGone(Exception):
    """The member closed the stream (it refused the request: its status says why)."""


class _ChannelWriter:
    """A channel as the file the layout's tar is written to."""

    def __init__(self, chan: Any) -> None:
        self.chan = chan

    def write(self, data: bytes) -> int:
        try:
            self.chan.sendall(data)
        except (OSError, EOFError) as e:
            raise _ChannelGone() from e
        return len(data)


def _send_layout(chan: Any, layout: str) -> None:
    """Pack the OCI layout directory ``layout`` into the channel as it is read, then end
    the channel's input. A local failure (an unreadable blob) closes the channel without
    an end: the tar the member holds then has no ``index.json``, so nothing is imported."""
    from sysmgr.remote import layouts

    try:
        layouts.pack(layout, _ChannelWriter(chan))
        chan.shutdown_write()
    except _ChannelGone:
        pass
    except (OSError, EOFError):
        pass  # ending the input of a channel the member closed


def _import_stream(session: MemberSession, what: str, send: Callable[[Any], None],
                   filename: str, options: Mapping[str, Any],
                   progress: Callable[[str], None] | None,
                   warn: Callable[[str], None] | None) -> Any:
    chan = session.stream("import", {"what": what, "filename": filename, **options})
    try:
        chan.settimeout(session.call_timeout)
        send(chan)
        status = _status(ChannelReader(chan), session, "import",
                         {"progress": progress, "warn": warn})
    finally:
        chan.close()
    return codec.decode(status.get("result"))
