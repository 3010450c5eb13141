"""The admin side of one member for one command: :class:`MemberSession`.

It holds one SSH :class:`~sysmgr.remote.ssh.Connection` (or the member's mux's,
:mod:`sysmgr.remote.muxclient`, which keeps it between commands), runs ``<sysmgr> --root ROOT _rpc``
on one exec channel of it (the RPC, JSON lines, one call at a time; started by the first
call), and opens further exec channels for streams (``_stream``,
:mod:`sysmgr.remote.streams`). The RPC server's hello, and each stream's first line, check
the RPC version: a member whose sysmgr speaks another
:data:`~sysmgr.remote.protocol.RPC_VERSION`, or none, is refused
(:class:`~sysmgr.errors.RemoteRejected`, exit 2).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
from typing import Any, Callable, Mapping, Sequence

from sysmgr.errors import MemberUnreachable, RemoteError, RemoteRejected
from sysmgr.remote import codec, protocol
from sysmgr.remote.protocol import RPC_VERSION, Hello
from sysmgr.remote.ssh import Connection
from sysmgr.remote.muxclient import MuxConnection, open_connection
from sysmgr.types import MemberSpec

#: how long a member's sysmgr may take to start and say hello
HELLO_TIMEOUT = 30.0
#: default longest silence during one call (a call sending progress may take longer)
CALL_TIMEOUT = 600.0


class ChannelReader:
    """Lines, then raw bytes, from a channel's stdout (paramiko's own file object buffers
    ahead, and a stream switches from lines to raw bytes in the middle)."""

    ERR_TAIL = 4096

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self.buf = bytearray()
        self.eof = False
        self.err = b""  # the end of stderr: read as it comes so it never fills the window

    def _drain_stderr(self) -> None:
        with contextlib.suppress(OSError):
            while self.chan.recv_stderr_ready():
                self.err = (self.err + self.chan.recv_stderr(1 << 16))[-self.ERR_TAIL:]

    def _fill(self) -> bool:
        self._drain_stderr()
        data = self.chan.recv(1 << 16)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readline(self) -> bytes | None:
        """The next line (without its end; ``\\r\\n`` too: a pty adds the ``\\r``), or None
        at end of output."""
        while b"\n" not in self.buf:
            if len(self.buf) > protocol.MAX_LINE:
                raise protocol.ProtocolError("a line longer than the protocol allows")
            if self.eof or not self._fill():
                rest, self.buf = bytes(self.buf), bytearray()
                return rest or None
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        return line.rstrip(b"\r")

    def take(self) -> bytes:
        """What was read past the last line."""
        rest, self.buf = bytes(self.buf), bytearray()
        return rest

    def stderr_tail(self) -> str:
        """The end of what the channel wrote on stderr so far (to explain a failure)."""
        self._drain_stderr()
        return self.err.decode(errors="replace").strip()


class MemberSession:
    """One member, reached for the length of one command."""

    def __init__(self, spec: MemberSpec, conn: Connection | MuxConnection, *,
                 call_timeout: float) -> None:
        self.spec = spec
        self.name = spec.name
        self.conn = conn
        self.call_timeout = call_timeout
        self._lock = threading.Lock()
        self._next_id = 0
        self._chan: Any = None
        self._reader: ChannelReader | None = None
        self._closed = False
        #: what the member said in its hello (None until the RPC server has started)
        self.hello: Hello | None = None

    @classmethod
    def open(cls, spec: MemberSpec, *, admin_root: str, timeout: float = 5.0,
             call_timeout: float = CALL_TIMEOUT, hello: bool = False) -> "MemberSession":
        """Connect and log in (host key checked). The member's RPC server starts with the
        first call, or now with ``hello``: a command that only streams (exec, file push)
        starts one sysmgr on the member, not two, and each stream checks the RPC version
        itself."""
        conn = open_connection(spec, admin_root=admin_root, timeout=timeout)
        session = cls(spec, conn, call_timeout=call_timeout)
        if hello:
            try:
                session.start()
            except BaseException:
                session.close()
                raise
        return session

    def command(self, *argv: str) -> str:
        """The shell command line running ``sysmgr --root ROOT ARGV...`` on the member
        (``spec.sysmgr`` as given: it may be a command with arguments of its own)."""
        words = ["--root", self.spec.root, *argv]
        return f"{self.spec.sysmgr} " + " ".join(shlex.quote(w) for w in words)

    def start(self) -> Hello:
        """Start the member's RPC server (once) and check its hello."""
        with self._lock:
            return self._started()

    def _started(self) -> Hello:
        if self.hello is not None:
            return self.hello
        if self._closed:
            raise RemoteError(f"{self.name}: the session with the member is closed")
        self._chan = self.conn.rpc_channel(self.command("_rpc"))
        self._reader = ChannelReader(self._chan)
        try:
            data = self._exchange("hello", [], {"rpc": RPC_VERSION}, {}, timeout=HELLO_TIMEOUT)
        except RemoteError as e:
            self._drop()
            reason = e.message.removeprefix(f"{self.name}: ")
            raise RemoteRejected(
                f"{self.name}: '{self.spec.sysmgr}' on {self.conn.address} does not answer "
                f"sysmgr's RPC: {reason}", hint="install sysmgr there, or give the member's "
                "sysmgr command") from None
        hello = protocol.parse_hello(data)
        if hello.rpc != RPC_VERSION:
            self._drop()
            raise RemoteRejected(
                f"{self.name}: the member runs sysmgr {hello.version} speaking RPC "
                f"v{hello.rpc}; this sysmgr speaks v{RPC_VERSION}",
                hint="install the same sysmgr version on the admin host and the member")
        self.hello = hello
        return hello

    def call(self, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run one Backend method on the member; progress/warn callbacks in ``kwargs`` are
        called as the member's notifications arrive. Raises the member's error."""
        callbacks = {k: v for k, v in kwargs.items() if k in codec.CALLBACKS and callable(v)}
        enc_args = codec.encode(list(args))
        enc_kwargs = codec.encode_args(dict(kwargs))
        with self._lock:
            self._started()
            return codec.decode(self._exchange(method, enc_args, enc_kwargs, callbacks,
                                               timeout=self.call_timeout))

    def _exchange(self, method: str, args: Any, kwargs: Any,
                  callbacks: Mapping[str, Callable[[str], None]], *, timeout: float) -> Any:
        """Send one request and read up to its reply (the caller holds the lock)."""
        if self._chan is None or self._reader is None:
            raise RemoteError(f"{self.name}: the session with the member is closed")
        self._next_id += 1
        rid = self._next_id
        try:
            self._chan.settimeout(timeout)
            self._chan.sendall(protocol.dumps(protocol.request(rid, method, args, kwargs)))
            while True:
                msg = self._read(method, timeout)
                if msg.get("id") != rid:
                    continue  # a stale reply (cannot happen with one call at a time)
                for kind in codec.CALLBACKS:
                    if kind in msg and kind in callbacks:
                        callbacks[kind](str(msg[kind]))
                if "error" in msg:
                    raise codec.decode_error(msg["error"])
                if "result" in msg:
                    return msg["result"]
        except (TimeoutError, OSError, EOFError) as e:
            self._drop()
            if isinstance(e, TimeoutError):
                raise RemoteError(f"{self.name}: no answer to {method} within "
                                  f"{timeout:g} s; the session was closed") from None
            raise MemberUnreachable(f"{self.name}: the connection broke during "
                                    f"{method}: {e}") from None

    def _read(self, method: str, timeout: float) -> dict[str, Any]:
        assert self._reader is not None
        line = self._reader.readline()
        if line is None:
            tail = self._reader.stderr_tail()
            self._drop()
            raise RemoteError(f"{self.name}: the member's sysmgr ended the session during "
                              f"{method}" + (f": {tail.splitlines()[-1]}" if tail else ""))
        return protocol.loads(line)

    def stream(self, kind: str, request: Mapping[str, Any], *,
               pty: tuple[str, int, int] | None = None) -> Any:
        """A new channel running the member's ``_stream KIND`` for ``request``."""
        cmd = self.command("_stream", kind, "--rpc", str(RPC_VERSION),
                           json.dumps(dict(request), separators=(",", ":")))
        return self.conn.session(cmd, pty=pty)

    def _drop(self) -> None:
        chan, self._chan, self._reader = self._chan, None, None
        if chan is not None:
            chan.close()

    def close(self) -> None:
        """End the RPC (the member's server sees end of input) and the connection."""
        self._closed = True
        self._drop()
        self.conn.close()
