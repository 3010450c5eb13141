"""Applying OCI image layers (tar change sets) to a root filesystem, as the image spec says.

Each layer is a tar stream applied over the ones before it:

- ``.wh.NAME`` deletes NAME of the lower layers; ``.wh..wh..opq`` in a directory deletes
  everything of the lower layers in it (an entry of the same layer stays);
- a file, directory, symlink, hard link or FIFO is made with the tar header's numeric owner,
  mode (setuid and setgid kept: chown comes first), modification time and extended
  attributes (``SCHILY.xattr.*`` PAX records); an entry replaces whatever the lower layers
  had at that path (a directory over a directory keeps the contents);
- refused: a name with a ``..`` component (it would leave the root: the whole import fails),
  and device nodes (never made: the runtime gives each container a ``/dev`` of its own; the
  caller is told their names).

Every lookup resolves inside the root (:mod:`sysmgr._util.safefs`: ``openat2`` with
``RESOLVE_IN_ROOT``), so a symlink made by a layer (``etc -> /etc``) cannot send a later
entry to the host: ``etc/passwd`` then lands in the image's ``/etc``. Each entry is made
in a directory held by fd, by its last name only, never following a link there.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import BinaryIO

from sysmgr._util import safefs
from sysmgr.errors import NotFound, ValidationError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20


class LayerError(ValidationError):
    """A layer that cannot be applied as the spec says (the import fails, nothing is kept)."""


def entry_path(name: str, layer: str) -> str:
    """The root-relative path of a tar member ``name`` (``./``, ``/`` and repeated slashes
    dropped); :class:`LayerError` when a component is ``..``."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer {layer}: {name!r} leaves the image's root (a '..' component)")
    return "/".join(parts)


class Applier:
    """Applies layers, in order, to the root filesystem at ``root`` (an empty directory at
    first). ``refused`` collects the device nodes left out (their paths)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.refused: list[str] = []

    def apply(self, stream: BinaryIO, layer: str) -> None:
        """Apply one uncompressed layer tar read from ``stream`` (read to its end)."""
        rfd = safefs.open_root(self.root)
        try:
            made: set[str] = set()
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for m in tf:
                    self._entry(rfd, tf, m, layer, made)
        except tarfile.TarError as e:
            raise LayerError(f"layer {layer} is not a valid tar stream: {e}") from e
        finally:
            os.close(rfd)

    # -- one member ---------------------------------------------------------------------------

    def _entry(self, rfd: int, tf: tarfile.TarFile, m: tarfile.TarInfo, layer: str,
               made: set[str]) -> None:
        path = entry_path(m.name, layer)
        if not path:
            if m.isdir():
                self._attrs_of_root(rfd, m)
            return
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            self._opaque(rfd, parent, made)
            return
        if base.startswith(WHITEOUT):
            gone = (parent + "/" if parent else "") + base[len(WHITEOUT):]
            if gone and gone not in made:
                self._remove(rfd, gone)
            return
        if m.ischr() or m.isblk():
            self.refused.append(path)
            return
        made.add(path)
        with self._parent(rfd, parent) as pfd:
            self._clear_for(pfd, base, m.isdir())
            if m.isdir():
                self._mkdir(pfd, base)
            elif m.isreg():
                self._file(pfd, base, tf.extractfile(m))
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=pfd)
            elif m.islnk():
                self._hardlink(rfd, pfd, base, entry_path(m.linkname, layer), layer)
                return  # a hard link shares its target's inode: its owner, mode and times
            elif m.isfifo():
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                raise LayerError(f"layer {layer}: {m.name!r} has an unsupported type {m.type!r}")
            self._attrs(pfd, base, m)

    def _parent(self, rfd: int, parent: str):
        """The directory ``parent`` (made 0755 root-owned where the layer did not list it)."""
        if parent:
            try:
                return _Fd(safefs.open_path(rfd, parent, os.O_PATH | os.O_DIRECTORY))
            except NotFound:
                # made where the image's own symlinks lead, inside the root (a lower layer's
                # ``lib -> usr/lib`` is followed; nothing runs in the tree meanwhile)
                inside = os.path.relpath(safefs.in_root(self.root, parent), self.root)
                safefs.mkdir(rfd, inside, parents=True)
                return _Fd(safefs.open_path(rfd, parent, os.O_PATH | os.O_DIRECTORY))
        return _Fd(safefs.open_path(rfd, "/", os.O_PATH | os.O_DIRECTORY))

    @staticmethod
    def _clear_for(pfd: int, base: str, is_dir: bool) -> None:
        """Make room for the new entry: what the lower layers had there goes, except a
        directory that a directory replaces (its contents stay, its attributes change)."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not is_dir:
                _rmtree_at(pfd, base)
        else:
            os.unlink(base, dir_fd=pfd)

    @staticmethod
    def _mkdir(pfd: int, base: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            pass

    @staticmethod
    def _file(pfd: int, base: str, src: BinaryIO | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            while src is not None:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    @staticmethod
    def _hardlink(rfd: int, pfd: int, base: str, target: str, layer: str) -> None:
        tparent, _, tbase = target.rpartition("/")
        try:
            tfd = safefs.open_path(rfd, tparent or "/", os.O_PATH | os.O_DIRECTORY)
        except NotFound:
            raise LayerError(f"layer {layer}: hard link {base!r} to a missing {target!r}") from None
        try:
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LayerError(f"layer {layer}: hard link to a missing {target!r}") from None
        finally:
            os.close(tfd)

    @staticmethod
    def _attrs(pfd: int, base: str, m: tarfile.TarInfo) -> None:
        """Owner, then mode (chown clears setuid), extended attributes, times."""
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not m.issym():
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
        xattrs = {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items()
                  if k.startswith("SCHILY.xattr.")}
        if xattrs:
            # the entry by its last name in the held directory, the link itself not followed
            where = f"/proc/self/fd/{pfd}/{base}"
            for k, v in xattrs.items():
                raw = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                os.setxattr(where, k, raw, follow_symlinks=False)
        os.utime(base, ns=(int(m.mtime * 1e9),) * 2, dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _attrs_of_root(rfd: int, m: tarfile.TarInfo) -> None:
        fd = safefs.open_path(rfd, "/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)
        finally:
            os.close(fd)

    def _opaque(self, rfd: int, parent: str, made: set[str]) -> None:
        """Empty ``parent`` of what the lower layers put there (this layer's entries stay)."""
        prefix = parent + "/" if parent else ""
        try:
            entries = safefs.listdir(rfd, parent or "/")
        except NotFound:
            return
        for name, _, _ in entries:
            if prefix + name not in made:
                self._remove(rfd, prefix + name)

    @staticmethod
    def _remove(rfd: int, path: str) -> None:
        try:
            safefs.remove(rfd, path, recursive=True)
        except NotFound:
            pass  # whited out twice, or never there: nothing to delete


class _Fd:
    """An fd closed on leaving a ``with`` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _rmtree_at(pfd: int, base: str) -> None:
    import shutil

    try:
        shutil.rmtree(base, dir_fd=pfd)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise

