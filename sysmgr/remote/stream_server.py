"""The member side of the streams (``sysmgr _stream KIND``): see :mod:`sysmgr.remote.streams`
for the framing.

Runs with the channel as its stdin (fd 0), stdout (fd 1) and stderr (fd 2). Status lines go
straight to fd 1 with ``os.write`` (nothing buffered ahead of the raw bytes). An error found
before the raw bytes start is sent as ``{"error": ...}`` on stdout; one after is sent as the
last line of stderr, with a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from sysmgr.errors import RemoteRejected, SysmgrError
from sysmgr.remote import codec, protocol
from sysmgr.remote.protocol import RPC_VERSION

CHUNK = 1 << 20


@dataclass
class StreamContext:
    """What a stream needs besides the backend."""

    tmp: str | None                       # where files are staged (the root's tmp dir)
    precheck_exec: Callable[[str], None]  # raises what exec would before it starts


def _line(msg: dict[str, Any], fd: int = 1) -> None:
    _write_all(fd, protocol.dumps(msg))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _notifier(kind: str) -> Callable[[str], None]:
    return lambda text: _line({kind: str(text)})


def _fail_early(e: BaseException) -> int:
    _line({"error": codec.encode_error(e)})
    return getattr(e, "exit_code", 1) or 1


def _fail_late(e: BaseException) -> int:
    _line({"error": codec.encode_error(e)}, fd=2)
    return getattr(e, "exit_code", 1) or 1


def serve_stream(backend: Any, kind: str, raw_request: str, *, rpc: int,
                 ctx: StreamContext) -> int:
    """Serve one stream of ``kind``; the process's exit status."""
    try:
        if rpc != RPC_VERSION:
            raise RemoteRejected(f"this member speaks RPC v{RPC_VERSION}, the admin host "
                                 f"v{rpc}", hint="install the same sysmgr version on both")
        request = json.loads(raw_request)
        handler = _HANDLERS.get(kind)
        if handler is None or not isinstance(request, dict):
            raise codec.CodecError(f"the member offers no stream {kind!r}")
    except Exception as e:  # noqa: BLE001 - every failure goes back to the admin
        return _fail_early(e)
    return handler(backend, request, ctx)


def _id(value: Any) -> int | None:
    """A user or group id the admin host sent (None: the default, root)."""
    return None if value is None else int(value)


def _exec(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    name = str(req.get("name"))
    try:
        ctx.precheck_exec(name)
    except Exception as e:  # noqa: BLE001
        return _fail_early(e)
    _line({"ok": True})
    try:
        return backend.exec_interactive(name, [str(a) for a in req.get("argv") or []],
                                        env=req.get("env"), cwd=req.get("cwd"),
                                        tty=bool(req.get("tty")), stdin=0, stdout=1, stderr=2,
                                        user=_id(req.get("user")), group=_id(req.get("group")))
    except SysmgrError as e:  # after the command started: said the way the CLI says it
        _write_all(2, f"Error: {e.message}\n".encode())
        return e.exit_code


class _OkFirst:
    """The pull's destination: the ``ok`` status goes out just before the first byte, so an
    error found while opening the file is still an early (exact) one."""

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            _line({"ok": True})

    def write(self, data: bytes) -> int:
        self.start()
        _write_all(1, data)
        return len(data)

    def flush(self) -> None:
        pass


def _pull(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    dst = _OkFirst()
    try:
        backend.file_pull(str(req.get("name")), str(req.get("path")), dst)
    except Exception as e:  # noqa: BLE001
        return _fail_late(e) if dst.started else _fail_early(e)
    dst.start()  # an empty file
    return 0


def _push(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    try:
        with os.fdopen(os.dup(0), "rb") as src:
            backend.file_put(str(req.get("name")), str(req.get("path")), src,
                             mode=int(req.get("mode", 0o644)), uid=int(req.get("uid", 0)),
                             gid=int(req.get("gid", 0)), mkdir=bool(req.get("mkdir")))
    except Exception as e:  # noqa: BLE001
        return _fail_early(e)
    _line({"result": None})
    return 0


def _produce(backend: Any, req: dict[str, Any], path: str) -> Any:
    """Write what an export stream sends to ``path``; its result."""
    progress = _notifier("progress")
    if req.get("what") == "image":  # a unified tarball for another member; its digest
        return backend.image_export(str(req.get("ref")), path, progress=progress)
    if req.get("what") == "publish":  # a container as an oci-archive; its manifest digest
        digest, _ = backend.image_publish(str(req.get("ref")), fmt="oci", output=path,
                                          alias=req.get("alias"), progress=progress)
        return digest
    return backend.container_export(str(req.get("name")), path,
                                    optimized=bool(req.get("optimized")), progress=progress,
                                    volumes=bool(req.get("volumes")),
                                    instance_only=bool(req.get("instance_only")))


def _export(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    staging = tempfile.mkdtemp(prefix="export-", dir=ctx.tmp)
    try:
        # the name says what it is (a backup's compression follows its file name)
        path = os.path.join(staging, "image.oci.tar" if req.get("what") == "publish"
                            else "export.tar.zst")
        try:
            result = _produce(backend, req, path)
            _line({"ok": True, "result": codec.encode(result), "size": os.path.getsize(path)})
        except Exception as e:  # noqa: BLE001
            return _fail_early(e)
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                _write_all(1, data)
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    staging = tempfile.mkdtemp(prefix="import-", dir=ctx.tmp)
    try:
        # the admin's file name, so the import's messages name what the admin gave
        path = os.path.join(staging, os.path.basename(str(req.get("filename"))) or "upload")
        with open(path, "wb") as f:
            while data := os.read(0, CHUNK):
                f.write(data)
        opts = {"pool": req.get("pool"), "allow_devices": bool(req.get("allow_devices")),
                "progress": _notifier("progress"), "warn": _notifier("warn")}
        try:
            if req.get("what") == "image-receive":  # another member's export, same fingerprint
                result = backend.image_receive(
                    path, fingerprint=str(req.get("fingerprint")), digest=str(req.get("digest")),
                    aliases=[str(a) for a in req.get("aliases") or ()],
                    origin=str(req.get("origin") or ""), progress=opts["progress"])
            elif req.get("what") == "image":
                result = backend.image_import(path, alias=req.get("alias"),
                                              platform=req.get("platform"), **opts)
            else:
                result = backend.container_import(path, name=req.get("name"), **opts)
            _line({"result": codec.encode(result)})
        except Exception as e:  # noqa: BLE001
            return _fail_early(e)
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _migrate(backend: Any, req: dict[str, Any], ctx: StreamContext) -> int:
    """One endpoint of a copy or move; frames on stdin and stdout from here on."""
    _line({"ok": True})
    return backend.migration_serve(str(req.get("role")), req, lambda n: os.read(0, n),
                                   lambda data: _write_all(1, data))


_HANDLERS: dict[str, Callable[[Any, dict[str, Any], StreamContext], int]] = {
    "exec": _exec, "pull": _pull, "push": _push, "export": _export, "import": _import,
    "migrate": _migrate,
}
