"""The member side of the RPC: :func:`serve` answers requests from the admin host.

It dispatches only to the Backend's own methods (the abstract methods of the backend's
class, found on its MRO — this layer does not import the API) and ``hello``; never to
anything else a peer names. Methods that take the caller's file descriptors or open files
(``exec_interactive``, ``file_put``, ``file_pull``) travel on streams of their own
(:mod:`sysmgr.remote.streams`), and ``close`` is the server's own business. Every failure —
a malformed line, an unknown method, an error of the call — becomes an error reply; the
loop ends only at the end of input or when the admin has gone.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from sysmgr.remote import codec, protocol
from sysmgr.remote.manifests import ManifestFiles, materialise, unprefix

#: Backend methods never dispatched: they need the caller's fds or files, end the session,
#: or never return (``event_follow``: the admin side polls ``event_list``)
NOT_SERVED = frozenset({"close", "exec_interactive", "file_put", "file_pull", "event_follow"})


def backend_methods(backend: Any) -> frozenset[str]:
    """The abstract method names of the backend's base classes (the Backend interface)."""
    names: set[str] = set()
    for cls in type(backend).__mro__:
        names.update(getattr(cls, "__abstractmethods__", ()))
    return frozenset(n for n in names if not n.startswith("_")) - NOT_SERVED


def serve(backend: Any, rfile: BinaryIO, wfile: BinaryIO, *,
          hello: Callable[[], dict[str, Any]] | None = None,
          methods: Iterable[str] | None = None, tmp: str | None = None) -> None:
    """Answer requests from ``rfile`` on ``wfile`` until end of input.

    Args:
        hello: this member's hello reply (default: :func:`protocol.hello_info` without
            counting containers).
        methods: the method names served (default: :func:`backend_methods`).
        tmp: where shipped manifest files are written (default: the system's temp dir).
    """
    allowed = frozenset(methods) if methods is not None else backend_methods(backend)
    if hello is None:
        def hello() -> dict[str, Any]:
            return protocol.hello_info(backend.root, version="unknown",
                                       initialised=bool(backend.initialised()), containers=0)
    while True:
        try:
            msg = protocol.read_message(rfile)
        except protocol.ProtocolError as e:
            msg = {"id": None, "error": e}
        if msg is None:
            return
        reply = _answer(backend, msg, wfile, allowed, hello, tmp)
        try:
            protocol.write_message(wfile, reply)
        except (BrokenPipeError, ConnectionError, ValueError):
            return  # the admin went away


def _answer(backend: Any, msg: dict[str, Any], wfile: BinaryIO, allowed: frozenset[str],
            hello: Callable[[], dict[str, Any]], tmp: str | None) -> dict[str, Any]:
    rid = msg.get("id")
    if not isinstance(rid, (int, str, type(None))):
        rid = None
    if isinstance(msg.get("error"), Exception):  # the line itself was unreadable
        return {"id": rid, "error": codec.encode_error(msg["error"])}
    try:
        method, args, kwargs = _parse(msg, allowed)
        if method == "hello":
            return {"id": rid, "result": hello()}
        notify = _notifier(wfile, rid)
        args = codec.decode(args, notify)
        kwargs = codec.decode(kwargs, notify)
        with _shipped_files(args, tmp) as (args, prefix):
            try:
                reply = {"id": rid, "result": codec.encode(getattr(backend, method)(*args, **kwargs))}
            except Exception as e:  # every failure is the caller's to see, not the server's end
                reply = {"id": rid, "error": codec.encode_error(e)}
            return unprefix(reply, prefix) if prefix else reply
    except Exception as e:
        return {"id": rid, "error": codec.encode_error(e)}


def _parse(msg: dict[str, Any], allowed: frozenset[str]) -> tuple[str, list[Any], dict[str, Any]]:
    method = msg.get("method")
    if not isinstance(method, str) or (method != "hello" and method not in allowed):
        raise codec.CodecError(f"the member offers no method {method!r}")
    args = msg.get("args") or []
    kwargs = msg.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise codec.CodecError(f"malformed arguments for {method}")
    return method, args, kwargs


def _notifier(wfile: BinaryIO, rid: Any) -> Callable[[str], Callable[[str], None]]:
    """Callbacks for a request: each call sends a notification before the reply."""
    def make(kind: str) -> Callable[[str], None]:
        def send(line: str) -> None:
            protocol.write_message(wfile, {"id": rid, kind: str(line)})
        return send
    return make


@contextlib.contextmanager
def _shipped_files(args: list[Any], tmp: str | None) -> Iterator[tuple[list[Any], str | None]]:
    """Shipped manifest files (the first argument of the manifest calls) written out and
    replaced by the paths to load; the temporary prefix to take out of the reply."""
    if not args or not isinstance(args[0], ManifestFiles):
        yield args, None
        return
    with materialise(args[0], tmp) as (paths, prefix):
        yield [paths, *args[1:]], prefix


def serve_stdio(backend: Any, **options: Any) -> None:
    """:func:`serve` on this process's stdin and stdout (an SSH exec channel). The protocol
    keeps private copies of the two fds and 0 and 1 become ``/dev/null``, so nothing else the
    process or its children write can corrupt the stream or hold the channel open."""
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.dup2(null, 0)
        os.dup2(null, 1)
    finally:
        os.close(null)
    with os.fdopen(rfd, "rb") as rfile, os.fdopen(wfd, "wb") as wfile:
        serve(backend, rfile, wfile, **options)
