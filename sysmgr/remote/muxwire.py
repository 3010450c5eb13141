"""What a member's mux and its clients share: where the socket is, and how they talk.

A mux (:mod:`sysmgr.remote.mux`) keeps one member's SSH connection (and the member's
``sysmgr _rpc``) open between commands, as OpenSSH's ControlPersist does; commands reach it
on a unix socket ``<admin root>/cluster/mux/<member>.<hash>.sock`` (directory 0700, socket
0600). The hash covers everything that decides where and how the member is reached (URL,
key, root, sysmgr command, recorded host key, the RPC and mux wire versions), so a changed
:class:`~sysmgr.types.MemberSpec` never reaches a mux made for the old one.

On a connection, the client sends one JSON line (the *header*) and the mux answers one:

- ``{"op": "rpc", "command": CMD}`` -> ``{"ok": true}``, then JSON lines as on the member's
  ``_rpc`` channel: the mux sends each request to an idle ``_rpc`` channel of its own
  running CMD (one call at a time per channel; it opens another when all are busy) and sends
  back the notifications and reply;
- ``{"op": "stream", "command": CMD, "pty": [TERM, COLS, ROWS] | null}`` -> ``{"ok": true}``
  once a new channel runs CMD on the member, then frames (:func:`frame`) both ways;
- ``{"op": "hold"}`` -> ``{"ok": true}`` once the member's sshd still answers (a command
  holds the mux for its length), or ``{"gone": true}`` when the kept connection dropped:
  the mux ends and the command starts a new one;
- ``{"op": "exit"}`` -> ``{"ok": true}``, and the mux ends.

An error answer is ``{"error": ...}`` (:func:`sysmgr.remote.codec.encode_error`): the client
raises the same sysmgr exception the direct path would.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from typing import Any, Mapping

from sysmgr.model.members import DEFAULT_PERSIST, member_config
from sysmgr.remote import protocol
from sysmgr.types import MemberSpec

#: environment variable overriding every member's ``ssh.persist`` (seconds; 0: no mux)
PERSIST_ENV = "SYSMGR_SSH_PERSIST"
#: bumped whenever this wire changes (a mux of another version is never reached)
MUX_VERSION = 2
#: longest unix socket path (sun_path is 108 bytes, with its NUL)
MAX_PATH = 107

# frame kinds, mux -> client
STDOUT, STDERR, EOF, STATUS = b"o", b"e", b"E", b"x"
# frame kinds, client -> mux
STDIN, SHUT_WRITE, RESIZE = b"i", b"w", b"z"
_HEAD = struct.Struct(">cI")


def mux_dir(admin_root: str) -> str:
    return os.path.join(admin_root, "cluster", "mux")


def spec_hash(spec: MemberSpec) -> str:
    """What decides how the member is reached, hashed (the socket name carries it)."""
    what = [spec.name, spec.url, spec.key, spec.root, spec.sysmgr, spec.host_key, MUX_VERSION,
            protocol.RPC_VERSION]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def socket_path(admin_root: str, spec: MemberSpec) -> str:
    return os.path.join(mux_dir(admin_root), f"{spec.name}.{spec_hash(spec)}.sock")


def persist(spec: MemberSpec) -> int:
    """Seconds the member's mux lives on idle (0: no mux): ``SYSMGR_SSH_PERSIST``, else the
    member's ``ssh.persist``, else 60."""
    value = os.environ.get(PERSIST_ENV) or member_config(spec).get("ssh.persist")
    try:
        return max(0, int(value)) if value not in (None, "") else DEFAULT_PERSIST
    except ValueError:
        return DEFAULT_PERSIST


def spec_record(spec: MemberSpec) -> dict[str, Any]:
    """The spec as the mux gets it on its command line."""
    return {"name": spec.name, "url": spec.url, "root": spec.root, "key": spec.key,
            "sysmgr": spec.sysmgr, "host_key": spec.host_key}


def spec_from_record(data: Mapping[str, Any]) -> MemberSpec:
    return MemberSpec(name=data["name"], url=data["url"], root=data["root"], key=data["key"],
                      sysmgr=data["sysmgr"], host_key=data["host_key"])


def frame(kind: bytes, data: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(data)) + data


def read_exact(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes from ``sock``; None when it ends first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame's kind and data; None at the end of the connection."""
    head = read_exact(sock, _HEAD.size)
    if head is None:
        return None
    kind, size = _HEAD.unpack(head)
    data = read_exact(sock, size) if size else b""
    return None if data is None else (kind, data)


def read_line(sock: socket.socket) -> dict[str, Any] | None:
    """One JSON line read byte-wise from ``sock`` (nothing past it is consumed)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > 1 << 20:
            raise protocol.ProtocolError("a header longer than 1 MiB")
    return protocol.loads(bytes(buf))
