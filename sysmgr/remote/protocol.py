"""The RPC's wire format: versioned JSON lines (both ends).

One JSON object per line, UTF-8, ``\\n``-terminated:

- request ``{"id": 7, "method": "container_view", "args": [...], "kwargs": {...}}`` (values
  encoded by :mod:`sysmgr.remote.codec`);
- response ``{"id": 7, "result": ...}`` or ``{"id": 7, "error": {...}}``;
- notifications for a request's callbacks while it runs: ``{"id": 7, "progress": line}``,
  ``{"id": 7, "warn": line}``.

The first call is ``hello`` (:class:`Hello`); its ``rpc`` must equal :data:`RPC_VERSION` on
both ends, since any change to a Backend signature or record changes what travels.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any, BinaryIO

from sysmgr._util import hostinfo
from sysmgr.errors import SysmgrError

#: bumped whenever a Backend method, a record or this framing changes
RPC_VERSION = 1
#: a line longer than this is refused (a peer that is not speaking this protocol)
MAX_LINE = 256 * 1024 * 1024


class ProtocolError(SysmgrError):
    """The peer sent something that is not this protocol."""


@dataclass(frozen=True)
class Hello:
    """What a member says about itself (``hello``): ``cluster add`` checks it, ``cluster
    list`` shows it."""

    rpc: int
    version: str                  # the member's sysmgr version
    root: str
    hostname: str
    initialised: bool
    cpus: int
    memory_total: int             # bytes
    memory_free: int              # bytes available (MemAvailable)
    containers: int


def hello_info(root: str, *, version: str, initialised: bool, containers: int) -> dict[str, Any]:
    """This end's hello reply (the member side); ``version`` is its sysmgr's."""
    return {"rpc": RPC_VERSION, "version": version, "root": root,
            "hostname": socket.gethostname(), "initialised": initialised,
            "facts": {"cpus": os.cpu_count() or 1, "memory_total": hostinfo.memory_total(),
                      "memory_free": hostinfo.memory_available()},
            "containers": containers}


def parse_hello(data: Any) -> Hello:
    """A hello reply as :class:`Hello` (ProtocolError when it is not one)."""
    try:
        facts = data.get("facts") or {}
        return Hello(int(data["rpc"]), str(data.get("version", "?")), str(data.get("root", "")),
                     str(data.get("hostname", "")), bool(data.get("initialised", False)),
                     int(facts.get("cpus", 0)), int(facts.get("memory_total", 0)),
                     int(facts.get("memory_free", 0)), int(data.get("containers", 0)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"not a hello reply: {data!r:.200}") from e


def dumps(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def loads(line: bytes) -> dict[str, Any]:
    """One line as a message (ProtocolError when it is not a JSON object)."""
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"not a JSON line: {line[:200]!r}") from e
    if not isinstance(msg, dict):
        raise ProtocolError(f"not a JSON object: {line[:200]!r}")
    return msg


def read_message(rfile: BinaryIO) -> dict[str, Any] | None:
    """The next message from ``rfile``; None at end of input."""
    line = rfile.readline(MAX_LINE)
    if not line:
        return None
    if not line.endswith(b"\n") and len(line) >= MAX_LINE:
        raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
    return loads(line)


def write_message(wfile: BinaryIO, message: dict[str, Any]) -> None:
    wfile.write(dumps(message))
    wfile.flush()


def request(rid: int, method: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"id": rid, "method": method, "args": args, "kwargs": kwargs}
