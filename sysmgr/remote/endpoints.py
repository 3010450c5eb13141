"""The mover's handles on a migration's two endpoints, and the member side that serves one.

An endpoint (:mod:`sysmgr.engine.migration.source` / ``.target``) talks frames
(:mod:`sysmgr.engine.migration.wire`) over one byte channel:

- on a member reached over SSH, the channel is a ``sysmgr _stream migrate`` exec channel
  (:func:`remote`); the member runs :func:`serve` with its stdin and stdout;
- on a ``local:`` member, a socket pair, and :func:`serve` in a thread of the mover with a
  :class:`~sysmgr.engine.host.Host` of its own (:func:`local`). If the mover dies, so does
  the thread: the endpoint's intents name the mover's pid and the next recovery resolves
  them, as for any sysmgr killed half-way.

Errors cross as the codec encodes them (:func:`sysmgr.remote.codec.encode_error`): the
mover raises the member's own exception, exit code included.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Callable, Mapping

from sysmgr.engine.migration.wire import Wire, WireClosed
from sysmgr.errors import SysmgrError
from sysmgr.remote import codec

ROLES = ("source", "target")


class Endpoint:
    """One endpoint, as the mover sees it: requests and their replies, and the raw wire
    (the mover passes a send's frames on to the other endpoint)."""

    def __init__(self, wire: Wire, member: str, close: Callable[[], None]) -> None:
        self.wire = wire
        self.member = member
        self._close = close
        self.closed = False

    def request(self, op: str, **fields: Any) -> None:
        """Send a request; its reply is read with :meth:`reply`."""
        self.wire.send({"op": op, **fields})

    def reply(self) -> Any:
        msg = self.wire.recv_msg()
        if "error" in msg:
            raise codec.decode_error(msg["error"])
        if "ok" not in msg:
            raise SysmgrError(f"{self.member}: the migration endpoint answered out of turn")
        return msg["ok"]

    def call(self, op: str, **fields: Any) -> Any:
        self.request(op, **fields)
        return self.reply()

    def close(self) -> None:
        """End the exchange (the endpoint sees the channel close)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self._close()


def _guarded(fn: Callable[..., Any], who: str) -> Callable[..., Any]:
    """``fn`` with a broken channel reported as :class:`WireClosed`."""
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except (OSError, EOFError) as e:
            raise WireClosed(f"the channel to {who} broke: {e}") from None
    return call


def serve(host: Any, role: str, request: Mapping[str, Any], read: Callable[[int], bytes],
          write: Callable[[bytes], Any]) -> int:
    """Serve one endpoint of ``role`` for ``host`` (an engine Host) on a byte channel;
    the exit status (0: the mover said goodbye)."""
    from sysmgr.engine.migration.source import Source
    from sysmgr.engine.migration.target import Target

    wire = Wire(_guarded(read, "the mover"), _guarded(write, "the mover"), who="the mover")
    if role == "source":
        return Source(host, wire, str(request.get("name")),
                      encode_error=codec.encode_error).serve()
    if role == "target":
        return Target(host, wire, encode_error=codec.encode_error,
                      member=str(request.get("member") or "")).serve()
    raise codec.CodecError(f"no migration role {role!r}")


def local(make_host: Callable[[], Any], member: str, role: str,
          request: Mapping[str, Any]) -> Endpoint:
    """An endpoint served by a thread of this process (a ``local:`` member)."""
    ours, theirs = socket.socketpair()
    failed: list[BaseException] = []

    def run() -> None:
        host = make_host()  # its own database connection: sqlite's are per thread
        try:
            with theirs:
                serve(host, role, request, theirs.recv, theirs.sendall)
        except BaseException as e:  # noqa: BLE001 - the mover sees the channel close
            failed.append(e)
        finally:
            host.close()

    t = threading.Thread(target=run, name=f"migrate-{role}", daemon=True)
    t.start()

    def close() -> None:
        with contextlib.suppress(OSError):
            ours.shutdown(socket.SHUT_RDWR)
        ours.close()
        t.join()

    who = f"member {member}"
    wire = Wire(_guarded(ours.recv, who), _guarded(ours.sendall, who), who=who)
    return Endpoint(wire, member, close)


def remote(session: Any, role: str, request: Mapping[str, Any],
           opened: Callable[[Any], bytes]) -> Endpoint:
    """An endpoint on a member over SSH: a ``_stream migrate`` channel. ``opened(chan)``
    reads the stream's status (the member's early error is raised there) and returns what
    it read beyond it."""
    chan = session.stream("migrate", {"role": role, **request})
    try:
        chan.settimeout(None)  # a round may stream for minutes without a reply
        rest = opened(chan)
    except BaseException:
        chan.close()
        raise
    who = f"member {session.name}"
    wire = Wire(_guarded(chan.recv, who), _guarded(chan.sendall, who), who=who, buffered=rest)
    return Endpoint(wire, session.name, chan.close)
