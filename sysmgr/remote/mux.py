"""A member's mux: one SSH connection kept between commands (OpenSSH's ControlPersist).

``python -m sysmgr.remote.mux ADMIN_ROOT SOCKET IDLE SPEC`` is started by the first command
that reaches a member (:mod:`sysmgr.remote.muxclient`); it detaches (double fork, new
session, stdio to /dev/null and a log next to its socket), connects and logs in exactly as a
command does (:class:`~sysmgr.remote.ssh.Connection`: RejectPolicy, the admin root's
known_hosts, the recorded host key), says ``{"ok": true}`` or the error on the pipe its
starter reads, and serves the socket (:mod:`sysmgr.remote.muxwire`) until:

- nobody used it for IDLE seconds;
- the SSH connection dropped, or the member's sshd no longer accepts connections (checked
  with a TCP connection when a command arrives: a kept session outlives its sshd, and a
  command must find the member as a fresh connection would);
- a client asked it to end (``cluster remove``, a mux for a newer spec of the member): its
  socket's name goes at once, and it ends once the commands using it are done.

Only clients of its own uid are served (SO_PEERCRED) on a 0600 socket in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

from sysmgr.errors import MemberUnreachable, RemoteError, SysmgrError
from sysmgr.remote import codec, muxwire, protocol
from sysmgr.remote.session import CALL_TIMEOUT, ChannelReader
from sysmgr.remote.ssh import Connection, probe

CHUNK = 1 << 20
#: seconds a client may take to send its header
HEADER_TIMEOUT = 10.0


class _ClientGone(Exception):
    """The command at the other end of the socket went away."""


class Mux:
    """Serves one member's connection on a listening unix socket."""

    def __init__(self, conn: Connection, listener: socket.socket, path: str, idle: float) -> None:
        self.conn = conn
        self.listener = listener
        self.path = path
        self.inode = os.stat(path).st_ino  # the name this mux bound
        self.idle = idle
        self.lock = threading.Lock()
        self.active = 0
        self.last = time.monotonic()
        self.pool: dict[str, list[tuple[Any, ChannelReader]]] = {}
        self.stopping = threading.Event()
        self.retiring = False  # asked to end: it does once no command uses it

    def serve(self) -> None:
        """Accept clients until idle, disconnected or asked to stop."""
        self.listener.settimeout(1.0)
        try:
            while not self.stopping.is_set():
                try:
                    client, _ = self.listener.accept()
                except TimeoutError:
                    if self._idle_over() or not self.conn.active:
                        break
                    continue
                if not _same_user(client):
                    client.close()
                    continue
                with self.lock:
                    self.active += 1
                threading.Thread(target=self._client, args=(client,), daemon=True).start()
        finally:
            self._unlink()
            self.listener.close()
            self.conn.close()

    def _idle_over(self) -> bool:
        with self.lock:
            return self.active == 0 and (self.retiring or time.monotonic() - self.last >= self.idle)

    def _unlink(self) -> None:
        """Take the socket's name away (first thing when stopping: no new client finds
        a mux that is going)."""
        try:
            if os.stat(self.path).st_ino == self.inode:  # not a newer mux's socket
                os.unlink(self.path)
        except OSError:
            pass

    def stop(self) -> None:
        self._unlink()
        self.stopping.set()

    def _client(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(HEADER_TIMEOUT)
            header = muxwire.read_line(sock)
            if header is not None:
                self._dispatch(sock, header)
        except _ClientGone:
            pass
        except (OSError, protocol.ProtocolError) as e:
            print(f"mux: client: {e}", file=sys.stderr)
        finally:
            sock.close()
            with self.lock:
                self.active -= 1
                self.last = time.monotonic()

    def _dispatch(self, sock: socket.socket, header: dict[str, Any]) -> None:
        op = header.get("op")
        if op == "exit":  # no new command finds it; those under way finish first
            self._unlink()
            self.retiring = True
            _send(sock, protocol.dumps({"ok": True}))
            return
        try:
            if op == "hold":  # a new command: check the member as a new connection would
                if not self.conn.active:  # dropped (sshd restarted): a new mux connects anew
                    self.stop()
                    _send(sock, protocol.dumps({"gone": True}))
                    return
                self._check()
            elif not self.conn.active:
                raise MemberUnreachable(f"{self.conn.name}: the connection to "
                                        f"{self.conn.address} is closed")
            if op == "stream":
                pty = header.get("pty")
                chan = self.conn.session(str(header["command"]),
                                         pty=(str(pty[0]), int(pty[1]), int(pty[2])) if pty else None)
            elif op not in ("hold", "rpc"):
                raise RemoteError(f"the mux offers no operation {op!r}")
        except SysmgrError as e:
            _send(sock, protocol.dumps({"error": codec.encode_error(e)}))
            return
        _send(sock, protocol.dumps({"ok": True, "pid": os.getpid()}))
        sock.settimeout(None)
        if op == "hold":      # a command holds the mux for its length: it never idles out
            while sock.recv(1 << 12):
                pass
        elif op == "rpc":
            self._rpc(sock, str(header["command"]))
        else:
            self._stream(sock, chan)

    def _check(self) -> None:
        """The connection is up and the member's sshd still answers (else the mux ends)."""
        try:
            if not self.conn.active:
                raise MemberUnreachable(f"{self.conn.name}: the connection to "
                                        f"{self.conn.address} is closed")
            probe(self.conn.address, self.conn.name)
        except MemberUnreachable:
            self.stop()
            raise

    # -- RPC ---------------------------------------------------------------------------------
    def _rpc(self, sock: socket.socket, command: str) -> None:
        """Send each request line to an idle ``_rpc`` channel, its answer lines back."""
        with sock.makefile("rb") as rfile:
            while line := rfile.readline(protocol.MAX_LINE):
                try:
                    msg = protocol.loads(line)
                except protocol.ProtocolError as e:
                    _send(sock, protocol.dumps({"id": None, "error": codec.encode_error(e)}))
                    continue
                self._call(sock, command, line, msg)

    def _call(self, sock: socket.socket, command: str, line: bytes, msg: dict[str, Any]) -> None:
        rid, method = msg.get("id"), msg.get("method")
        try:
            chan, reader = self._borrow(command)
        except SysmgrError as e:
            _send(sock, protocol.dumps({"id": rid, "error": codec.encode_error(e)}))
            return
        done = keep = False
        try:
            chan.sendall(line)
            while not done:
                answer = reader.readline()
                if answer is None:
                    tail = reader.stderr_tail()
                    raise RemoteError(f"{self.conn.name}: the member's sysmgr ended the session "
                                      f"during {method}" + (f": {tail.splitlines()[-1]}" if tail else ""))
                reply = protocol.loads(answer)
                done = reply.get("id") == rid and ("result" in reply or "error" in reply)
                keep = done and _compatible(method, reply)
                _send(sock, answer + b"\n")
        except (TimeoutError, OSError, EOFError, RemoteError) as e:
            error = e if isinstance(e, RemoteError) else MemberUnreachable(
                f"{self.conn.name}: the connection broke during {method}: {e}")
            _send(sock, protocol.dumps({"id": rid, "error": codec.encode_error(error)}))
        finally:
            if keep:
                with self.lock:
                    self.pool.setdefault(command, []).append((chan, reader))
            else:
                chan.close()

    def _borrow(self, command: str) -> tuple[Any, ChannelReader]:
        with self.lock:
            idle = self.pool.get(command)
            if idle:
                return idle.pop()
        chan = self.conn.rpc_channel(command)
        chan.settimeout(CALL_TIMEOUT)
        return chan, ChannelReader(chan)

    # -- streams -------------------------------------------------------------------------------
    def _stream(self, sock: socket.socket, chan: Any) -> None:
        feeder = threading.Thread(target=_stream_in, args=(sock, chan), daemon=True)
        feeder.start()
        try:
            _stream_out(sock, chan)
        except (OSError, _ClientGone):
            pass
        finally:
            chan.close()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            feeder.join()


def _stream_out(sock: socket.socket, chan: Any) -> None:
    """The channel's stdout, stderr, end and exit status to the client, as frames."""
    while True:
        select.select([chan], [], [], 1.0)
        busy = False
        while chan.recv_ready():
            _send(sock, muxwire.frame(muxwire.STDOUT, chan.recv(CHUNK)))
            busy = True
        while chan.recv_stderr_ready():
            _send(sock, muxwire.frame(muxwire.STDERR, chan.recv_stderr(CHUNK)))
            busy = True
        if not busy and (chan.eof_received or chan.closed):
            break
    _send(sock, muxwire.frame(muxwire.EOF))
    _send(sock, muxwire.frame(muxwire.STATUS, str(chan.recv_exit_status()).encode()))


def _stream_in(sock: socket.socket, chan: Any) -> None:
    """The client's stdin, its end and window changes to the channel; the client gone
    closes the channel."""
    try:
        while (got := muxwire.read_frame(sock)) is not None:
            kind, data = got
            if kind == muxwire.STDIN:
                chan.sendall(data)
            elif kind == muxwire.SHUT_WRITE:
                chan.shutdown_write()
            elif kind == muxwire.RESIZE:
                cols, rows = struct.unpack(">II", data)
                chan.resize_pty(width=cols, height=rows)
    except (OSError, EOFError, struct.error):
        pass
    chan.close()


def _compatible(method: Any, reply: dict[str, Any]) -> bool:
    """Whether a channel may serve further calls: not one whose hello named another RPC
    version (the client refuses it; it may well not answer again)."""
    if method != "hello":
        return True
    result = reply.get("result")
    return isinstance(result, dict) and result.get("rpc") == protocol.RPC_VERSION


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        raise _ClientGone() from None


def _same_user(sock: socket.socket) -> bool:
    """Whether the peer runs as this process's user."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.geteuid()


def _detach() -> None:
    """Double fork into a new session: no terminal, reparented to init, cwd /."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")


def _listen(path: str) -> socket.socket:
    """The 0600 listening socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        if os.path.exists(path):
            os.unlink(path)  # a dead mux's (the starter holds the member's lock)
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


def main(argv: list[str]) -> int:
    admin_root, path, idle, record = argv
    spec = muxwire.spec_from_record(json.loads(record))
    _detach()
    report = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    try:
        conn = Connection.open(spec.name, spec.url, admin_root=admin_root, key=spec.key,
                               host_key=spec.host_key, timeout=5.0)
        listener = _listen(path)
    except SysmgrError as e:
        os.write(report, protocol.dumps({"error": codec.encode_error(e)}))
        return 1
    os.write(report, protocol.dumps({"ok": True, "pid": os.getpid()}))
    os.close(report)
    Mux(conn, listener, path, float(idle)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
