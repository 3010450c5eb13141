"""Reaching a member through its mux (:mod:`sysmgr.remote.mux`), started on first use.

:func:`open_connection` is what a command calls: a live mux for the member's spec answers
on its socket (no paramiko import, no SSH handshake, no new ``sysmgr _rpc`` on the member),
else one is started and waited for; with ``ssh.persist`` 0 (or ``SYSMGR_SSH_PERSIST=0``) it
is today's direct :class:`~sysmgr.remote.ssh.Connection`. A :class:`MuxConnection` offers
what :class:`~sysmgr.remote.session.MemberSession` and :mod:`sysmgr.remote.streams` use of a
Connection: ``rpc_channel`` and ``session`` return objects with the part of paramiko's
Channel those modules call (:class:`RpcChannel`, :class:`StreamChannel`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

from sysmgr._util import proc
from sysmgr.errors import MemberUnreachable
from sysmgr.remote import codec, muxwire, protocol
from sysmgr.remote.ssh import Address, Connection, parse_url
from sysmgr.types import MemberSpec

#: seconds a new mux may take to start Python, connect and log in, beyond the timeout
START_SLACK = 30.0


def open_connection(spec: MemberSpec, *, admin_root: str, timeout: float) -> Any:
    """The member's connection for one command: its mux's, or a direct one."""
    idle = muxwire.persist(spec)
    path = muxwire.socket_path(admin_root, spec)
    if idle > 0 and len(path) <= muxwire.MAX_PATH:
        try:
            conn = MuxConnection.attach(spec, path, timeout) or _start(spec, admin_root, path,
                                                                        idle, timeout)
        except OSError:  # e.g. an admin root we may not write to: connect directly
            conn = None
        if conn is not None:
            return conn
    return Connection.open(spec.name, spec.url, admin_root=admin_root, key=spec.key,
                           host_key=spec.host_key, timeout=timeout)


def _dial(path: str, header: dict[str, Any], timeout: float) -> socket.socket | None:
    """A connection to the mux at ``path`` that accepted ``header``; None when no mux
    answers there, or one whose connection dropped (it ends: the caller starts a new one,
    which finds the member as a fresh command would). The mux's error answer is raised."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(protocol.dumps(header))
        reply = muxwire.read_line(sock)
    except (OSError, protocol.ProtocolError):
        sock.close()
        return None
    if reply is None or "error" in reply or reply.get("gone"):
        sock.close()
        if reply is not None and "error" in reply:
            raise codec.decode_error(reply["error"])
        return None
    return sock


def _start(spec: MemberSpec, admin_root: str, path: str, idle: int,
           timeout: float) -> "MuxConnection | None":
    """Start the member's mux (one starter at a time per member) and attach to it; None
    if it could not start (the caller connects directly). Its connection error is raised."""
    directory = muxwire.mux_dir(admin_root)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    lock = os.open(path[:-len(".sock")] + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = MuxConnection.attach(spec, path, timeout)  # another command started it
        if conn is not None:
            return conn
        stop(admin_root, spec.name, keep=path)  # a mux of an older spec of this member
        if not _spawn(spec, admin_root, path, idle, timeout):
            return None
        return MuxConnection.attach(spec, path, timeout)
    finally:
        os.close(lock)


def _spawn(spec: MemberSpec, admin_root: str, path: str, idle: int, timeout: float) -> bool:
    """Run the mux and wait for its word: True when it listens; its error raised."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "sysmgr.remote.mux", admin_root, path, str(idle),
            json.dumps(muxwire.spec_record(spec))]
    log = os.open(path[:-len(".sock")] + ".log",
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        child = proc.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env,
                           start_new_session=True)
    finally:
        os.close(log)
    assert child.stdout is not None
    try:
        line = _read_line(child.stdout.fileno(), timeout + START_SLACK)
    finally:
        child.stdout.close()
        child.wait()  # the first of the double fork: gone at once
    if not line:
        return False
    reply = protocol.loads(line)
    if "error" in reply:
        raise codec.decode_error(reply["error"])
    return True


def _read_line(fd: int, timeout: float) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            return b""
        buf += chunk
    return buf


def stop(admin_root: str, member: str | None = None, *, keep: str | None = None) -> None:
    """Ask the muxes of ``member`` (all members: None) to end, but ``keep``'s."""
    pattern = os.path.join(muxwire.mux_dir(admin_root), f"{member or '*'}.*.sock")
    for path in glob.glob(pattern):
        if path == keep:
            continue
        sock = _dial(path, {"op": "exit"}, 5.0)
        if sock is None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # nothing listens: a crashed mux's name
        else:
            sock.close()


class MuxConnection:
    """A member's connection held by its mux, for one command."""

    def __init__(self, spec: MemberSpec, path: str, hold: socket.socket, timeout: float) -> None:
        self.name = spec.name
        self.address: Address = parse_url(spec.url)
        self.path = path
        self.timeout = timeout
        self._hold = hold  # while open, the mux does not idle out

    @classmethod
    def attach(cls, spec: MemberSpec, path: str, timeout: float) -> "MuxConnection | None":
        """The live mux at ``path`` (it checks that the member still answers), or None."""
        try:
            if os.stat(path).st_uid != os.geteuid():
                return None  # not our mux: never talk to it
        except OSError:
            return None
        hold = _dial(path, {"op": "hold"}, timeout)
        return None if hold is None else cls(spec, path, hold, timeout)

    def _open(self, header: dict[str, Any]) -> socket.socket:
        sock = _dial(self.path, header, self.timeout + 5.0)
        if sock is None:
            raise MemberUnreachable(f"{self.name}: the connection to {self.address} is closed")
        return sock

    def rpc_channel(self, command: str) -> "RpcChannel":
        return RpcChannel(self._open({"op": "rpc", "command": command}))

    def session(self, command: str, *, pty: tuple[str, int, int] | None = None) -> "StreamChannel":
        return StreamChannel(self._open({"op": "stream", "command": command, "pty": pty}))

    def close(self) -> None:
        self._hold.close()


class RpcChannel:
    """The RPC through the mux: JSON lines on the socket, as on an ``_rpc`` channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.settimeout = sock.settimeout
        self.sendall = sock.sendall
        self.recv = sock.recv

    def recv_stderr_ready(self) -> bool:
        return False  # the mux keeps the member's stderr

    def close(self) -> None:
        self.sock.close()


class StreamChannel:
    """A stream channel through the mux, as paramiko's Channel: a thread reads the mux's
    frames into buffers; ``fileno()`` is readable while data, the end or the close waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(None)
        self._out = bytearray()
        self._err = bytearray()
        self.eof_received = False
        self.closed = False
        self._status: int | None = None
        self._timeout: float | None = None
        self._cond = threading.Condition()
        self._wlock = threading.Lock()
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._flagged = False
        self._pump = threading.Thread(target=self._read, daemon=True, name="sysmgr-mux-stream")
        self._pump.start()

    def _read(self) -> None:
        try:
            while (got := muxwire.read_frame(self.sock)) is not None:
                kind, data = got
                with self._cond:
                    if kind == muxwire.STDOUT:
                        self._out += data
                    elif kind == muxwire.STDERR:
                        self._err += data
                    elif kind == muxwire.EOF:
                        self.eof_received = True
                    elif kind == muxwire.STATUS:
                        self._status = int(data)
                    self._changed()
        except (OSError, ValueError):
            pass
        with self._cond:
            self.eof_received = True
            self._ended = True
            self._changed()

    _ended = False

    def _changed(self) -> None:
        """Wake the waiters and set or clear ``fileno()``'s readiness (the lock held)."""
        self._cond.notify_all()
        ready = bool(self._out or self._err or self.eof_received or self.closed)
        with contextlib.suppress(OSError):
            if ready and not self._flagged:
                os.write(self._w, b"x")
                self._flagged = True
            elif not ready and self._flagged:
                os.read(self._r, 64)
                self._flagged = False

    def fileno(self) -> int:
        return self._r

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def _take(self, buf: bytearray, n: int) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: buf or self.eof_received or self.closed,
                                       self._timeout):
                raise TimeoutError("timed out")
            data = bytes(buf[:n])
            del buf[:n]
            self._changed()
            return data

    def recv(self, n: int) -> bytes:
        return self._take(self._out, n)

    def recv_stderr(self, n: int) -> bytes:
        return self._take(self._err, n)

    def recv_ready(self) -> bool:
        return bool(self._out)

    def recv_stderr_ready(self) -> bool:
        return bool(self._err)

    def recv_exit_status(self) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._status is not None or self._ended or self.closed)
            return -1 if self._status is None else self._status

    def _send(self, kind: bytes, data: bytes = b"") -> None:
        if self.closed:
            raise OSError("Socket is closed")
        with self._wlock:
            self.sock.sendall(muxwire.frame(kind, data))

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # frames of at most a MiB
            self._send(muxwire.STDIN, bytes(view[:1 << 20]))
            view = view[1 << 20:]

    def shutdown_write(self) -> None:
        self._send(muxwire.SHUT_WRITE)

    def resize_pty(self, width: int = 80, height: int = 24) -> None:
        self._send(muxwire.RESIZE, struct.pack(">II", width, height))

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._changed()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._pump.join()
        self.sock.close()
        os.close(self._r)
        os.close(self._w)
