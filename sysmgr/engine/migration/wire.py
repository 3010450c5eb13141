"""The frames a migration's mover exchanges with its two endpoints.

A copy or a move runs one *endpoint* on each member (:mod:`.source` where the container is,
:mod:`.target` where it goes) and a *mover* that talks to both (the ``sysmgr move`` process,
wherever it runs). Each endpoint has one byte channel to the mover (an SSH exec channel, or
a pipe pair to a local process) carrying frames: a kind byte, a 32-bit big-endian length,
the payload:

- ``J``: one JSON message (a request, a reply, a stream's header);
- ``D``: bytes of the stream being sent (at most :data:`MAX_DATA` per frame);
- ``E``: the end of that stream; its payload is JSON (``{"size": N, "crc32": "..."}``,
  counted by the sender; the receiver compares).

A volume travels as ``J`` (its header), ``D``... , ``E``: the mover passes those frames from
the source to the target unchanged and counts the bytes (progress, rate, round sizes).
Nothing here knows what a request does (:func:`serve_requests` only dispatches it).

Layer: engine.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Callable, Mapping

from sysmgr.errors import Conflict, RemoteError

MSG, DATA, END = b"J", b"D", b"E"
HEAD = struct.Struct(">cI")
MAX_DATA = 1 << 20
_KINDS = (MSG, DATA, END)


class WireClosed(RemoteError):
    """The other end closed the channel (or died) in the middle of the exchange."""


class Wire:
    """Frames over a byte channel: ``read(n)`` returns up to ``n`` bytes (b"" at its end),
    ``write(data)`` writes all of ``data``."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], Any], *,
                 who: str = "the other end", buffered: bytes = b"") -> None:
        self._read = read
        self._write = write
        self.who = who
        self._buf = bytearray(buffered)  # bytes already read from the channel

    # -- writing ---------------------------------------------------------------------------
    def frame(self, kind: bytes, payload: bytes | memoryview) -> None:
        self._write(HEAD.pack(kind, len(payload)) + bytes(payload))

    def send(self, msg: dict[str, Any]) -> None:
        """One ``J`` message."""
        self.frame(MSG, json.dumps(msg, separators=(",", ":")).encode())

    def send_stream(self, header: dict[str, Any], read: Callable[[int], bytes]) -> tuple[int, int]:
        """A whole stream: ``header``, then what ``read`` gives until b"", then its end
        (size and CRC-32, both returned)."""
        self.send(header)
        size, crc = 0, 0
        while chunk := read(MAX_DATA):
            view = memoryview(chunk)
            while view:  # a read may give more than one frame holds
                part = view[:MAX_DATA]
                self.frame(DATA, part)
                crc = zlib.crc32(part, crc)
                size += len(part)
                view = view[MAX_DATA:]
        self.frame(END, json.dumps({"size": size, "crc32": f"{crc:08x}"}).encode())
        return size, crc

    # -- reading ---------------------------------------------------------------------------
    def _exact(self, n: int) -> bytes:
        """The next ``n`` bytes: from what was read ahead, then read as they are missing
        (a frame's payload is read in one piece where the channel allows, never copied
        through the read-ahead buffer)."""
        buf = self._buf
        if len(buf) >= n:
            out = bytes(buf[:n])
            del buf[:n]
            return out
        parts: list[bytes | memoryview] = [bytes(buf)]
        have = len(buf)
        buf.clear()
        while have < n:
            chunk = self._read(max(n - have, 1 << 16))
            if not chunk:
                raise WireClosed(f"{self.who} closed the migration channel")
            need = n - have
            if len(chunk) > need:  # read ahead into the next frame: kept for it
                buf += memoryview(chunk)[need:]
                chunk = memoryview(chunk)[:need]
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def recv(self) -> tuple[bytes, bytes]:
        """The next frame: (kind, payload)."""
        kind, length = HEAD.unpack(self._exact(HEAD.size))
        if kind not in _KINDS or (kind == DATA and length > MAX_DATA):
            raise RemoteError(f"{self.who} sent a bad migration frame ({kind!r}, {length} bytes)")
        return kind, self._exact(length)

    def recv_msg(self) -> dict[str, Any]:
        """The next frame, which must be a ``J`` message."""
        kind, payload = self.recv()
        if kind != MSG:
            raise RemoteError(f"{self.who} sent stream bytes where a message was expected")
        return decode(payload, self.who)


def serve_requests(wire: Wire, endpoint: Any, ops: Mapping[str, Callable[[Any, dict[str, Any]], Any]],
                   encode_error: Callable[[BaseException], Any], role: str) -> int:
    """An endpoint's loop: answer each ``J`` request ``{"op": NAME, ...}`` with
    ``{"ok": ops[NAME](endpoint, msg)}``, or ``{"error": encode_error(e)}`` when it fails
    (the endpoint goes on), until ``bye`` (0). A closed channel raises :class:`WireClosed`."""
    while True:
        msg = wire.recv_msg()
        op = str(msg.get("op"))
        if op == "bye":
            wire.send({"ok": None})
            return 0
        handler = ops.get(op)
        try:
            if handler is None:
                raise Conflict(f"the {role} of a migration has no request {op!r}")
            result = handler(endpoint, msg)
        except WireClosed:
            raise
        except Exception as e:  # noqa: BLE001 - every failure goes back to the mover
            wire.send({"error": encode_error(e)})
            continue
        wire.send({"ok": result})


def decode(payload: bytes, who: str) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise RemoteError(f"{who} sent a message that is not a JSON object")
    return msg


class StreamReader:
    """The ``D`` frames of one stream as a file (``read``), up to its ``E`` frame; checks
    the size and CRC-32 the sender counted (a mismatch raises :class:`RemoteError`)."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.size = 0
        self.crc = 0
        self.done = False
        self._left = b""

    def read(self, size: int = -1, /) -> bytes:
        while not self._left:
            if self.done:
                return b""
            kind, payload = self.wire.recv()
            if kind == END:
                self.done = True
                want = decode(payload, self.wire.who)
                if (want.get("size"), want.get("crc32")) != (self.size, f"{self.crc:08x}"):
                    raise RemoteError(f"a migration stream from {self.wire.who} arrived damaged "
                                      f"({self.size} bytes; the sender counted "
                                      f"{want.get('size')})")
                return b""
            if kind != DATA:
                raise RemoteError(f"{self.wire.who} sent a message in the middle of a stream")
            self.size += len(payload)
            self.crc = zlib.crc32(payload, self.crc)
            self._left = payload
        if size is None or size < 0 or size >= len(self._left):
            out, self._left = self._left, b""
        else:
            out, self._left = self._left[:size], self._left[size:]
        return out

    def drain(self) -> None:
        """Read what the consumer left, to the stream's end (a consumer that failed)."""
        while self.read(MAX_DATA):
            pass
