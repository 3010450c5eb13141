"""Manifest files travel with the call: ``validate``/``diff``/``apply -f`` name files on the
admin host, and the member plans against its own state.

The admin side (:func:`pack`) expands the paths exactly as the loader does and ships each
file's bytes with the path as given; the member side (:func:`materialise`) writes them under
a private temporary directory that mirrors the admin's paths, runs the call from the mirrored
working directory (so relative names read the same), and :func:`unprefix` takes the
temporary directory out of what goes back, so file names in errors and plans are the
admin's. Limitation: an ``Image`` document's ``path:`` names a file on the admin host that
does not travel; import the image with ``sysmgr image import`` on the member instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

STDIN_NAME = "<stdin>"


@dataclass(frozen=True)
class ManifestFiles:
    """Manifest files as the admin read them: ``(path as given, bytes or None when it could
    not be read)`` in the loader's order, and the admin's working directory."""

    cwd: str
    files: tuple[tuple[str, bytes | None], ...]


def pack(paths: Sequence[str]) -> ManifestFiles:
    """Read the manifests ``paths`` name (directories recursively, ``-`` is stdin)."""
    from sysmgr.model.loader import expand_paths  # YAML: only commands that ship manifests

    out: list[tuple[str, bytes | None]] = []
    for path, issue in expand_paths(paths):
        if issue is not None:
            out.append((path, None))
        elif path == "-":
            out.append((STDIN_NAME, sys.stdin.buffer.read()))
        else:
            try:
                with open(path, "rb") as f:
                    out.append((path, f.read()))
            except OSError:
                out.append((path, None))
    return ManifestFiles(os.getcwd(), tuple(out))


def _mirror(tmp: str, cwd: str, path: str) -> str:
    return os.path.join(tmp, os.path.abspath(os.path.join(cwd, path)).lstrip("/"))


@contextlib.contextmanager
def materialise(shipped: ManifestFiles, parent: str | None = None) -> Iterator[tuple[list[str], str]]:
    """Write the shipped files under a new directory in ``parent``; yield ``(paths to load,
    the directory)`` with the process's working directory at the mirrored admin one."""
    tmp = tempfile.mkdtemp(prefix="manifests-", dir=parent)
    old_cwd = os.getcwd()
    try:
        paths = []
        for path, data in shipped.files:
            target = _mirror(tmp, shipped.cwd, path)
            if data is not None:
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data)
            paths.append(target if os.path.isabs(path) else path)
        work = _mirror(tmp, shipped.cwd, ".")
        os.makedirs(work, mode=0o700, exist_ok=True)
        os.chdir(work)
        yield paths, tmp
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def unprefix(data: Any, prefix: str) -> Any:
    """Encoded ``data`` with ``prefix`` removed from every string (paths back to the admin's)."""
    if isinstance(data, str):
        return data.replace(prefix, "") if prefix in data else data
    if isinstance(data, list):
        return [unprefix(v, prefix) for v in data]
    if isinstance(data, dict):
        return {k: unprefix(v, prefix) for k, v in data.items()}
    return data
