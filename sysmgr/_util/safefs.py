"""File access inside a container's root that can never reach a host file.

A container's root filesystem is untrusted: any path in it may be a symlink to ``/etc/shadow``
or ``../../..``. Every lookup here goes through ``openat2(2)`` with ``RESOLVE_IN_ROOT`` (the
kernel resolves ``/``, ``..`` and absolute symlink targets as if the root were ``/``) and
``RESOLVE_NO_MAGICLINKS`` (no ``/proc/self/fd/N`` style jumps), relative to an ``O_PATH`` fd of
the root. The root is a host path: the rootfs directory of a stopped container, or
``/proc/<init pid>/root`` of a running one.

The final component of a write is never followed: :func:`push` replaces a symlink there with a
regular file (the same way ``install(1)`` or an atomic editor save would), so a link planted by
the container can neither redirect the write nor make it fail.

Layer: utility (``_util``); used by drivers (image import, builders) and the runtime/API for
``container.files``. Errors: :class:`NotFound` for a missing path, :class:`ValidationError` for a
path of the wrong kind (directory, device...), :class:`DriverError` for anything else.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import shutil  # at the top: remove() runs as a container's root, who may not read the host's library
import stat as stat_mod
import struct
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from sysmgr.errors import DriverError, DriverUnavailable, NotFound, ValidationError

# A root is a path (opened and closed per call) or an fd from open_root() the caller owns.
Root = str | int

_SYS_openat2 = 437          # same number on every architecture (new-style syscall table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_CHUNK = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0,
             resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) -> int:
    """Raw ``openat2``; raises OSError. Retries EAGAIN (a concurrent rename raced the lookup)."""
    how = ctypes.create_string_buffer(struct.pack("=QQQ", flags | os.O_CLOEXEC, mode, resolve), 24)
    for _ in range(16):
        fd = _libc.syscall(ctypes.c_long(_SYS_openat2), ctypes.c_int(dirfd),
                           os.fsencode(path), how, ctypes.c_size_t(24))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            continue
        if err == errno.ENOSYS:
            raise DriverUnavailable("the kernel has no openat2() (Linux 5.6 or newer is needed)")
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` atomically, failing with ``FileExistsError`` if ``dst`` exists.

    Plain ``rename`` silently replaces an empty directory, which would let two concurrent
    creators both "win"; ``renameat2(RENAME_NOREPLACE)`` makes the check and the move atomic.
    """
    r = _libc.renameat2(ctypes.c_int(_AT_FDCWD), os.fsencode(src), ctypes.c_int(_AT_FDCWD),
                        os.fsencode(dst), ctypes.c_uint(RENAME_NOREPLACE))
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src, None, dst)


# -- paths and errors ------------------------------------------------------------------------

def _rel(path: str) -> str:
    """The lookup path relative to the root fd ('.' for the root itself)."""
    rel = path.lstrip("/")
    return rel or "."


def _split(path: str) -> tuple[str, str]:
    """Split into (parent, basename); the basename must name an entry, not '.' or '..'."""
    norm = path.rstrip("/")
    parent, base = os.path.split(norm)
    if base in ("", ".", ".."):
        raise ValidationError(f"{path!r} does not name a file")
    return parent or "/", base


def _shown(path: str) -> str:
    return "/" + path.lstrip("/")


def _translate(e: OSError, path: str, what: str = "") -> Exception:
    """Map an OSError from a lookup inside the container to a sysmgr error."""
    p = _shown(path)
    if e.errno == errno.ENOENT:
        return NotFound(f"{p} not found in container")
    if e.errno == errno.EISDIR:
        return ValidationError(f"{p} is a directory")
    if e.errno == errno.ENOTDIR:
        return ValidationError(f"{p}: a parent of it is not a directory")
    if e.errno == errno.ELOOP:
        return ValidationError(f"{p}: too many levels of symbolic links (or a /proc magic link)")
    if e.errno == errno.ENXIO:
        return ValidationError(f"{p} is not a regular file")
    return DriverError(f"cannot {what or 'access'} {p} in container: {e.strerror}")


@contextmanager
def _rootfd(root: Root) -> Iterator[int]:
    if isinstance(root, int):
        yield root
        return
    fd = open_root(root)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _opened(rootfd: int, path: str, flags: int, what: str, mode: int = 0) -> Iterator[int]:
    try:
        fd = _openat2(rootfd, _rel(path), flags, mode)
    except OSError as e:
        raise _translate(e, path, what) from e
    try:
        yield fd
    finally:
        os.close(fd)


# -- public API ------------------------------------------------------------------------------

def open_root(root_path: str) -> int:
    """Open a container root for lookups: an ``O_PATH | O_DIRECTORY`` fd the caller closes."""
    try:
        return os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NotFound(f"container root {root_path} does not exist") from e
    except OSError as e:
        raise DriverError(f"cannot open container root {root_path}: {e.strerror}") from e


def resolve(root: Root, path: str) -> str:
    """Return where ``path`` leads inside the root (symlinks followed, within the root).

    E.g. ``resolve(rootfs, "/sbin/init") == "/usr/lib/systemd/systemd"``. Meant for a rootfs
    directory on the host: the answer is computed from the fds' paths as this process sees
    them, which for ``/proc/<pid>/root`` of another mount namespace may not be meaningful.
    """
    with _rootfd(root) as rfd, _opened(rfd, path, os.O_PATH, "resolve") as fd:
        base = os.readlink(f"/proc/self/fd/{rfd}")
        real = os.readlink(f"/proc/self/fd/{fd}")
    if real == base:
        return "/"
    prefix = base.rstrip("/") + "/"
    if not real.startswith(prefix):  # cannot happen with RESOLVE_IN_ROOT; be loud if it does
        raise DriverError(f"{_shown(path)} resolved outside the container root")
    return "/" + real[len(prefix):]


def stat(root: Root, path: str, *, follow_symlinks: bool = True) -> os.stat_result:
    """``stat`` (or ``lstat``) of ``path`` inside the root."""
    flags = os.O_PATH | (0 if follow_symlinks else os.O_NOFOLLOW)
    with _rootfd(root) as rfd, _opened(rfd, path, flags, "stat") as fd:
        return os.fstat(fd)


def exists(root: Root, path: str) -> bool:
    """Whether ``path`` exists inside the root (a dangling symlink counts as missing)."""
    try:
        stat(root, path)
    except (NotFound, ValidationError):
        return False
    return True


@contextmanager
def _open_regular(root: Root, path: str) -> Iterator[int]:
    # O_NONBLOCK: opening a FIFO planted by the container must not hang us
    with _rootfd(root) as rfd, _opened(rfd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK,
                                       "read") as fd:
        st = os.fstat(fd)
        if stat_mod.S_ISDIR(st.st_mode):
            raise ValidationError(f"{_shown(path)} is a directory")
        if not stat_mod.S_ISREG(st.st_mode):
            raise ValidationError(f"{_shown(path)} is not a regular file")
        yield fd


def pull(root: Root, path: str, dst: BinaryIO) -> int:
    """Copy the regular file ``path`` inside the root to ``dst``; return the bytes copied."""
    total = 0
    with _open_regular(root, path) as fd:
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError as e:
                raise _translate(e, path, "read") from e
            if not chunk:
                return total
            dst.write(chunk)
            total += len(chunk)


def read_file(root: Root, path: str) -> bytes:
    """Return the content of the regular file ``path`` inside the root."""
    buf = io.BytesIO()
    pull(root, path, buf)
    return buf.getvalue()


def _open_parent(rfd: int, parent: str, *, mkdir_parents: bool, uid: int, gid: int) -> int:
    """Return an ``O_PATH`` fd of the directory ``parent`` inside the root (creating it)."""
    flags = os.O_PATH | os.O_DIRECTORY
    try:
        return _openat2(rfd, _rel(parent), flags)
    except OSError as e:
        if e.errno != errno.ENOENT or not mkdir_parents:
            raise _translate(e, parent, "open directory") from e
    # Walk down from the root, creating each missing component in the directory we hold an
    # fd of; mkdirat never follows a symlink in its last component.
    fd = _openat2(rfd, ".", flags)
    try:
        done = ""
        for comp in [c for c in parent.split("/") if c and c != "."]:
            done = f"{done}/{comp}"
            try:
                nxt = _openat2(rfd, _rel(done), flags)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise _translate(e, done, "open directory") from e
                existed = False
                try:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    os.chown(comp, uid, gid, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    existed = True  # made concurrently, or a dangling symlink (see below)
                except OSError as e2:
                    raise _translate(e2, done, "create directory") from e2
                try:
                    nxt = _openat2(rfd, _rel(done), flags)
                except OSError as e3:
                    if existed and e3.errno == errno.ENOENT:
                        raise ValidationError(f"{_shown(done)} is a symlink to a missing "
                                              "directory") from e3
                    raise _translate(e3, done, "open directory") from e3
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def push(root: Root, path: str, src: BinaryIO, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
         mkdir_parents: bool = False) -> int:
    """Write ``src`` to the file ``path`` inside the root; return the bytes written.

    An existing regular file is truncated and rewritten in place (its inode is kept, so bind
    mounts of it stay valid); a symlink as the final component is replaced by a new file, never
    followed. ``mode``/``uid``/``gid`` are applied to the file whether new or not.
    ``mkdir_parents`` creates missing parent directories (0755, owned by ``uid``/``gid``).
    """
    parent, base = _split(path)
    shown = _shown(path)
    with _rootfd(root) as rfd:
        pfd = _open_parent(rfd, parent, mkdir_parents=mkdir_parents, uid=uid, gid=gid)
        try:
            fd = _create_nofollow(pfd, base, path)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)   # after chown: chown clears setuid/setgid bits
                total = 0
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    total += len(chunk)
                return total
            except OSError as e:
                raise DriverError(f"cannot write {shown} in container: {e.strerror}") from e
            finally:
                os.close(fd)
        finally:
            os.close(pfd)


def _create_nofollow(pfd: int, base: str, path: str) -> int:
    """Open ``base`` in the directory ``pfd`` for writing, creating it; never follow a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(8):
        try:
            # openat through an O_PATH dirfd: the name is a single component, so the only
            # possible link is the final one, and O_NOFOLLOW refuses it with ELOOP.
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                _unlink_symlink(pfd, base, path)
                continue
            raise _translate(e, path, "write") from e
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise ValidationError(f"{_shown(path)} is not a regular file")
            os.ftruncate(fd, 0)
            os.set_blocking(fd, True)
            return fd
        except OSError as e:
            os.close(fd)
            raise _translate(e, path, "write") from e
        except BaseException:
            os.close(fd)
            raise
    raise DriverError(f"cannot write {_shown(path)} in container: it keeps changing")


def _unlink_symlink(pfd: int, base: str, path: str) -> None:
    try:
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if stat_mod.S_ISLNK(st.st_mode):
            os.unlink(base, dir_fd=pfd)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _translate(e, path, "replace symlink") from e


def in_root(root: str, path: str) -> str:
    """Host path of the container path ``path``, following symlinks as if ``root`` were ``/``
    (an image's ``/dev -> /host/dir`` must not make a privileged launcher write outside).
    A walk by name: for a container that is not running (a start), when no tenant process can
    swap a component under it; everything else goes through openat2 above."""
    todo = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        cand = os.path.join(root, *done, part)
        try:
            target = os.readlink(cand)
        except OSError:  # not a symlink, or missing: taken literally
            done.append(part)
            continue
        links += 1
        if links > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p and p != "."] + todo
    return os.path.join(root, *done)


def create_log(root: Root, path: str) -> int:
    """A new, empty append-only file at ``path`` inside the root (0600, the caller's ids);
    whatever was there (a file, a link, a FIFO the tenant planted) is unlinked, never opened
    or followed. Returns the fd (close-on-exec), which the caller closes."""
    parent, base = _split(path)
    with _rootfd(root) as rfd:
        try:
            pfd = _open_parent(rfd, parent, mkdir_parents=True, uid=0, gid=0)
        except ValidationError:  # through a dangling symlink: made where the container sees it
            if not isinstance(root, str):
                raise
            os.makedirs(in_root(root, parent), exist_ok=True)
            pfd = _open_parent(rfd, parent, mkdir_parents=True, uid=0, gid=0)
        try:
            try:
                os.unlink(base, dir_fd=pfd)
            except FileNotFoundError:
                pass
            except IsADirectoryError as e:
                raise ValidationError(f"{_shown(path)} is a directory") from e
            except OSError as e:
                raise _translate(e, path, "replace") from e
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                return os.open(base, flags, 0o600, dir_fd=pfd)
            except OSError as e:
                raise _translate(e, path, "create") from e
        finally:
            os.close(pfd)


def write_file(root: Root, path: str, data: bytes, mode: int = 0o644, *, uid: int = 0, gid: int = 0,
               mkdir_parents: bool = False) -> None:
    """Write ``data`` to ``path`` inside the root (see :func:`push`)."""
    push(root, path, io.BytesIO(data), mode=mode, uid=uid, gid=gid, mkdir_parents=mkdir_parents)


def symlink(root: Root, path: str, target: str, *, replace: bool = True,
            owner: tuple[int, int] | None = None) -> None:
    """Create the symlink ``path -> target`` inside the root (``target`` is stored verbatim),
    owned by ``owner`` (uid, gid) when given.

    An existing non-directory entry at ``path`` is replaced when ``replace`` is set.
    """
    parent, base = _split(path)
    with _rootfd(root) as rfd, _opened(rfd, parent, os.O_PATH | os.O_DIRECTORY, "open directory") as pfd:
        try:
            _symlink_at(pfd, base, target, owner)
            return
        except FileExistsError:
            if not replace:
                raise ValidationError(f"{_shown(path)} already exists") from None
        except OSError as e:
            raise _translate(e, path, "create symlink") from e
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if stat_mod.S_ISDIR(st.st_mode):
                raise ValidationError(f"{_shown(path)} is a directory")
            os.unlink(base, dir_fd=pfd)
            _symlink_at(pfd, base, target, owner)
        except OSError as e:
            raise _translate(e, path, "create symlink") from e


def _symlink_at(pfd: int, base: str, target: str, owner: tuple[int, int] | None) -> None:
    os.symlink(target, base, dir_fd=pfd)
    if owner is not None:
        os.chown(base, owner[0], owner[1], dir_fd=pfd, follow_symlinks=False)


# -- directories ------------------------------------------------------------------------------

def mkdir(root: Root, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
          parents: bool = False) -> None:
    """Create the directory ``path`` inside the root, or give an existing one ``mode`` and
    owner (as :func:`push` does for a file); never through a symlink. ``parents`` creates
    missing parents (0755, owned by ``uid``/``gid``)."""
    parent, base = _split(path)
    with _rootfd(root) as rfd:
        pfd = _open_parent(rfd, parent, mkdir_parents=parents, uid=uid, gid=gid)
        try:
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)  # closed until its owner and mode are set
            except FileExistsError:
                pass
            except OSError as e:
                raise _translate(e, path, "create directory") from e
            try:
                fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=pfd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ValidationError(f"{_shown(path)} exists and is not a directory") from e
                raise _translate(e, path, "open directory") from e
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(pfd)


def listdir(root: Root, path: str) -> list[tuple[str, os.stat_result, str | None]]:
    """The entries of the directory ``path`` inside the root, sorted by name: ``(name, its
    lstat, the link's target or None)``."""
    out = []
    with _rootfd(root) as rfd, _opened(rfd, path, os.O_RDONLY | os.O_DIRECTORY, "list") as fd:
        for name in sorted(os.listdir(fd)):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=fd) if stat_mod.S_ISLNK(st.st_mode) else None
            except FileNotFoundError:
                continue  # removed while listed
            out.append((name, st, target))
    return out


def remove(root: Root, path: str, *, recursive: bool = False) -> None:
    """Remove ``path`` inside the root: a file or a link (never its target), an empty
    directory, or with ``recursive`` a directory and everything in it (no link followed)."""
    parent, base = _split(path)
    with _rootfd(root) as rfd, _opened(rfd, parent, os.O_PATH | os.O_DIRECTORY,
                                       "open directory") as pfd:
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat_mod.S_ISDIR(st.st_mode):
                os.unlink(base, dir_fd=pfd)
            elif recursive:
                shutil.rmtree(base, dir_fd=pfd)  # fd-based: links inside are removed, not followed
            else:
                os.rmdir(base, dir_fd=pfd)
        except OSError as e:
            if e.errno == errno.ENOTEMPTY:
                raise ValidationError(f"{_shown(path)} is a directory that is not empty",
                                      hint="-f/--force removes it with everything in it") from e
            raise _translate(e, path, "remove") from e


def unlink(root: Root, path: str, *, missing_ok: bool = True) -> None:
    """Remove the non-directory entry ``path`` inside the root (a symlink itself, not its target)."""
    parent, base = _split(path)
    with _rootfd(root) as rfd:
        try:
            pfd = _openat2(rfd, _rel(parent), os.O_PATH | os.O_DIRECTORY)
        except OSError as e:
            if e.errno == errno.ENOENT and missing_ok:
                return
            raise _translate(e, parent, "open directory") from e
        try:
            os.unlink(base, dir_fd=pfd)
        except FileNotFoundError:
            if not missing_ok:
                raise NotFound(f"{_shown(path)} not found in container") from None
        except OSError as e:
            raise _translate(e, path, "remove") from e
        finally:
            os.close(pfd)


def open_path(root: Root, path: str, flags: int = os.O_PATH) -> int:
    """An fd (``O_PATH`` by default) of ``path`` inside the root, symlinks followed within
    it; the caller closes it."""
    with _rootfd(root) as rfd:
        try:
            return _openat2(rfd, _rel(path), flags)
        except OSError as e:
            raise _translate(e, path, "open") from e


def mountpoint(root: Root, path: str, *, directory: bool) -> int:
    """An ``O_PATH`` fd of ``path`` inside the root to mount on (by fd: nothing is looked up
    again, so a symlink swapped in afterwards changes nothing), made if missing: its parents
    (0755, owned by the caller's root) and the entry itself, a directory or (``directory``
    False) an empty file, to match what is mounted there. Symlinks on the way resolve inside
    the root, never out of it. The caller closes the fd.

    Raises:
        ValidationError: the entry exists but is a file where a directory is mounted (or the
            other way round), or a parent is not a directory.
    """
    parent, base = _split(path)
    with _rootfd(root) as rfd:
        pfd = _open_parent(rfd, parent, mkdir_parents=True, uid=0, gid=0)
        try:
            try:
                if directory:
                    os.mkdir(base, 0o755, dir_fd=pfd)
                else:
                    os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=pfd))
            except FileExistsError:
                pass  # there already (or a symlink: followed below, inside the root)
            except OSError as e:
                raise _translate(e, path, "create") from e
        finally:
            os.close(pfd)
        fd = open_path(rfd, path)
    if stat_mod.S_ISDIR(os.fstat(fd).st_mode) != directory:
        os.close(fd)
        want = "a directory" if directory else "a file"
        raise ValidationError(f"{_shown(path)} in the container is not {want}, as its source is")
    return fd
