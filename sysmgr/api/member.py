"""The member side of a cluster: what ``sysmgr _rpc`` and ``sysmgr _stream`` run.

An admin host reaches this host over SSH and runs these hidden commands with this host's
root (``--root``): :func:`serve_rpc` answers Backend calls on stdin/stdout with this root's
:class:`~sysmgr.api.local.LocalBackend`; :func:`serve_stream` serves one stream (exec, file
push/pull, export/import) on its own channel.
"""

from __future__ import annotations

import os
from typing import Any

from sysmgr.version import __version__
from sysmgr.api.local import LocalBackend
from sysmgr.layout import Layout
from sysmgr.remote import protocol, server, stream_server


def hello_info(backend: LocalBackend) -> dict[str, Any]:
    """This host's hello: versions, root, facts and how many containers it holds."""
    initialised = backend.initialised()
    count = len(backend.host.store.containers()) if initialised else 0
    return protocol.hello_info(backend.root, version=__version__, initialised=initialised,
                               containers=count)


def root_hello(root: str) -> dict[str, Any]:
    """:func:`hello_info` of ``root`` through a backend of its own (the controller's
    heartbeat thread asks this: the controller's own backend belongs to its thread)."""
    backend = LocalBackend(Layout(root))
    try:
        return hello_info(backend)
    finally:
        backend.close()


def _staging(backend: LocalBackend) -> str | None:
    """The root's own tmp directory (private, on the stores' filesystem) once it exists."""
    tmp = backend.layout.tmp
    return tmp if os.path.isdir(tmp) else None


def serve_rpc(root: str) -> None:
    """Answer an admin host's Backend calls on stdin/stdout until it closes the channel."""
    backend = LocalBackend(Layout(root))
    try:
        server.serve_stdio(backend, hello=lambda: hello_info(backend), tmp=_staging(backend))
    finally:
        backend.close()


def serve_stream(root: str, kind: str, request: str, *, rpc: int) -> int:
    """Serve one stream on stdin/stdout/stderr; the exit status for the channel."""
    backend = LocalBackend(Layout(root))

    def precheck_exec(name: str) -> None:
        from sysmgr.engine import execution  # the exec path's own check: same errors

        execution.running_init(backend.host, name)

    try:
        ctx = stream_server.StreamContext(tmp=_staging(backend), precheck_exec=precheck_exec)
        return stream_server.serve_stream(backend, kind, request, rpc=rpc, ctx=ctx)
    finally:
        backend.close()
