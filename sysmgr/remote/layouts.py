"""An OCI image layout directory as a tar stream, both ways, for the streams to a member.

- :func:`pack` writes a layout directory (``oci-layout``, ``blobs/ALG/HEX``, ``index.json``)
  as an ``oci-archive`` tar to any object with ``write`` (an SSH channel), file by file as
  it goes: no copy of the image is made first. ``index.json`` goes last, so a stream cut
  short never holds an index (the member's import then fails instead of taking part of it).
- :func:`unpack` reads such a tar from a stream into a new directory, and takes nothing but
  what a layout holds: regular files and directories under the names above. No name can
  leave the directory (no ``..``, no absolute path, no link of any kind), so an archive
  from a member cannot write anywhere else on the admin host.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
from typing import BinaryIO, Protocol

from sysmgr.errors import DriverError, ValidationError

CHUNK = 1 << 20
#: the names a layout holds: its marker, its index, the blob directories and the blobs
#: (an algorithm as the image spec writes it, ``[a-z0-9]+([+._-][a-z0-9]+)*``: never ``..``)
_ALG = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*"
_NAMES = re.compile(rf"(oci-layout|index\.json|blobs|blobs/{_ALG}|blobs/{_ALG}/[A-Za-z0-9=_-]+)")


class Writer(Protocol):
    def write(self, data: bytes) -> object: ...


def is_layout(path: str) -> bool:
    """Whether ``path`` is an OCI image layout directory (its ``oci-layout`` marker)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "oci-layout"))


def _entries(layout: str) -> list[str]:
    """The layout's names in the order they travel (``index.json`` last); anything that is
    not a regular file or directory is refused (a link could send the host's files)."""
    names = ["oci-layout"]
    for dirpath, dirs, files in os.walk(os.path.join(layout, "blobs")):
        dirs.sort()
        rel = os.path.relpath(dirpath, layout)
        names.append(rel)
        names += [os.path.join(rel, f) for f in sorted(files)]
        names += [os.path.join(rel, d) for d in dirs if os.path.islink(os.path.join(dirpath, d))]
    names.append("index.json")
    for name in names:
        if not _NAMES.fullmatch(name):
            raise ValidationError(f"{os.path.join(layout, name)}: not a name an OCI image "
                                  "layout holds", hint="an OCI layout holds oci-layout, "
                                  "index.json and blobs/ALGORITHM/DIGEST only")
    return names


def pack(layout: str, out: Writer) -> None:
    """Write the OCI layout directory ``layout`` to ``out`` as an uncompressed tar."""
    names = _entries(layout)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[arg-type]
        for name in names:
            path = os.path.join(layout, name)
            try:
                st = os.lstat(path)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                    raise ValidationError(f"{path}: an OCI layout holds regular files and "
                                          "directories only")
                info = tf.gettarinfo(path, arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info)
            except FileNotFoundError as e:
                raise ValidationError(f"{path} is missing: not a whole OCI image layout") from e
            except PermissionError as e:
                raise DriverError(f"cannot read {path}: {e.strerror}") from e


def unpack(src: BinaryIO, dest: str) -> None:
    """Read an OCI layout tar from ``src`` into the new directory ``dest`` (made here; left
    half-written on failure: the caller stages it and removes it)."""
    os.mkdir(dest, 0o755)
    try:
        with tarfile.open(fileobj=src, mode="r|") as tf:
            for m in tf:
                _extract(tf, m, dest)
    except (tarfile.TarError, EOFError) as e:
        raise DriverError(f"the OCI layout stream is damaged: {e}") from e
    except OSError as e:  # a name sent twice (O_EXCL), a full disk
        raise DriverError(f"cannot write the OCI layout {dest}: {e.strerror or e}") from e
    if not is_layout(dest) or not os.path.isfile(os.path.join(dest, "index.json")):
        raise DriverError("the OCI layout stream ended before the layout was whole")


def _extract(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: str) -> None:
    name = m.name.removeprefix("./").rstrip("/")
    if not _NAMES.fullmatch(name) or not (m.isreg() or m.isdir()):
        raise DriverError(f"the OCI layout stream holds {m.name!r}: not a name or kind of "
                          "file a layout holds")
    path = os.path.join(dest, name)
    if m.isdir():
        os.makedirs(path, 0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    data = tf.extractfile(m)
    assert data is not None  # a regular file has data
    # O_EXCL: a name sent twice is refused, never followed or overwritten
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        shutil.copyfileobj(data, f, CHUNK)
