"""The frames between a migration's mover and its endpoints (sysmgr.engine.migration.wire):
a stream arrives whole and checked, a damaged or cut one is refused, a closed channel is
told apart from a bad frame."""

from __future__ import annotations

import io
import json
import socket
import threading

import pytest

from sysmgr.engine.migration.wire import (
    DATA, END, MAX_DATA, MSG, StreamReader, Wire, WireClosed)
from sysmgr.errors import RemoteError


def _pair() -> tuple[Wire, Wire, socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return Wire(a.recv, a.sendall, who="a"), Wire(b.recv, b.sendall, who="b"), a, b


def test_a_stream_arrives_whole_with_its_header() -> None:
    wa, wb, a, b = _pair()
    data = bytes(range(256)) * (3 * MAX_DATA // 256 + 7)   # more than three frames
    t = threading.Thread(target=lambda: wa.send_stream({"volume": {"snapshot": "s1"}},
                                                       io.BytesIO(data).read))
    t.start()
    assert wb.recv_msg() == {"volume": {"snapshot": "s1"}}
    reader = StreamReader(wb)
    got = b"".join(iter(lambda: reader.read(1000), b""))
    t.join()
    assert got == data and reader.size == len(data) and reader.done
    a.close(), b.close()


def test_a_damaged_stream_is_refused() -> None:
    wa, wb, a, b = _pair()
    wa.frame(DATA, b"hello")
    wa.frame(END, json.dumps({"size": 6, "crc32": "00000000"}).encode())
    with pytest.raises(RemoteError, match="arrived damaged"):
        StreamReader(wb).drain()
    wa.frame(DATA, b"x")
    wa.frame(MSG, b'{"error": 1}')                   # a message in the middle of a stream
    with pytest.raises(RemoteError, match="in the middle of a stream"):
        StreamReader(wb).drain()
    a.close(), b.close()


def test_closed_channel_and_bad_frames() -> None:
    wa, wb, a, b = _pair()
    a.sendall(b"Z\x00\x00\x00\x01x")                  # no such frame kind
    with pytest.raises(RemoteError, match="bad migration frame") as e:
        wb.recv()
    assert not isinstance(e.value, WireClosed)
    a.close(), b.close()
    wa, wb, a, b = _pair()                            # (a bad frame ends that channel)
    wa.frame(MSG, b"[1, 2]")
    with pytest.raises(RemoteError, match="not a JSON object"):
        wb.recv_msg()
    a.sendall(b"J\x00\x00")                           # a header cut short, then the end
    a.close()
    with pytest.raises(WireClosed):
        wb.recv()
    b.close()
