"""Shifting the owners of a tree on disk: the chown walk behind unprivileged containers on a
filesystem that cannot be idmapped (what LXD did before idmapped mounts).

No policy here: the engine (:mod:`sysmgr.engine.idshift`) says from which map to which; this
module rewrites ids as it is told. Maps are *lines* ``(container id, host id, count)``, as
:meth:`sysmgr.types.IdMap.mappings` gives them; "container ids on disk" is the identity over
the other side's container ids.

- :func:`translator` turns two maps into ``host id -> host id``: an id is read through the
  source map as a container id and written through the target map. An id outside the source
  map (a file its container could only see as ``nobody``) becomes the target's
  :data:`OVERFLOW`, as it would look through an idmapped mount: an out-of-map id never aliases
  into the map. ``resume``: ids already in the target map are left as they are (an interrupted
  walk is finished, never applied twice); :func:`consistent` says when that is unambiguous.
- :func:`shift_tree` walks a tree written by an untrusted container: never following a
  symlink (``lchown``; everything else through an ``O_PATH`` fd of the entry, re-checked
  against what was listed), never leaving the filesystem it starts on, with one directory fd
  open at a time whatever the depth (it climbs back with ``..``, checking it lands where it came
  from), each hard-linked inode once. ``chown`` clears setuid/setgid bits and file
  capabilities: the mode is restored, ``security.capability`` rewritten for the new owner
  (its v3 root id shifted like any id), and POSIX ACLs' named users and groups shifted.

Layer: _util.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence

from sysmgr.errors import DriverError

Lines = Sequence[tuple[int, int, int]]
IdFn = Callable[[int], int]

OVERFLOW = 65534                    # the kernel's overflowuid/gid: "nobody" inside
CAPS = "security.capability"
ACLS = ("system.posix_acl_access", "system.posix_acl_default")
_CAP_REV_MASK, _CAP_REV2, _CAP_REV3 = 0xFF000000, 0x02000000, 0x03000000
_CAP_V2_SIZE, _CAP_V3_SIZE = 20, 24
_ACL_USER, _ACL_GROUP = 0x02, 0x08
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# -- ids ---------------------------------------------------------------------------------------

def identity(lines: Lines) -> list[tuple[int, int, int]]:
    """"Container ids on disk" over the container ids ``lines`` use."""
    return [(ns, ns, n) for ns, _host, n in lines]


def _host_to_ns(lines: Lines, h: int) -> int | None:
    for ns, host, n in lines:
        if host <= h < host + n:
            return ns + h - host
    return None


def _ns_to_host(lines: Lines, i: int) -> int | None:
    for ns, host, n in lines:
        if ns <= i < ns + n:
            return host + i - ns
    return None


def consistent(src: Lines, dst: Lines) -> bool:
    """Whether every host id both maps use is the same container id in both: then a walk
    from ``src`` to ``dst`` that was interrupted can be finished with ``resume`` (an id in
    the target map is one already written, or one that needed no change)."""
    return all(ns1 - h1 == ns2 - h2
               for ns1, h1, n1 in src for ns2, h2, n2 in dst if h1 < h2 + n2 and h2 < h1 + n1)


def translator(src: Lines, dst: Lines, *, resume: bool = False) -> IdFn:
    """``host id -> host id`` from map ``src`` to map ``dst`` (see the module's docstring)."""
    cache: dict[int, int] = {}
    overflow = _ns_to_host(dst, OVERFLOW)

    def shift(h: int) -> int:
        out = cache.get(h)
        if out is None:
            if resume and _host_to_ns(dst, h) is not None:
                out = h
            else:
                ns = _host_to_ns(src, h)
                mapped = None if ns is None else _ns_to_host(dst, ns)
                out = mapped if mapped is not None else (overflow if overflow is not None else OVERFLOW)
            cache[h] = out
        return out

    return shift


# -- xattrs that carry ids -------------------------------------------------------------------

def shift_caps(raw: bytes, uid: IdFn) -> bytes:
    """A ``security.capability`` value for the shifted file: its root id (v3; v2 means the
    filesystem's root, 0) shifted like an owner; v2 again when it comes out as 0. Anything
    else is returned as it is."""
    if len(raw) < _CAP_V2_SIZE:
        return raw
    magic = struct.unpack_from("<I", raw)[0]
    rev = magic & _CAP_REV_MASK
    if rev == _CAP_REV3 and len(raw) == _CAP_V3_SIZE:
        root = struct.unpack_from("<I", raw, _CAP_V2_SIZE)[0]
    elif rev == _CAP_REV2 and len(raw) == _CAP_V2_SIZE:
        root = 0
    else:
        return raw
    new_root = uid(root)
    flags = magic & ~_CAP_REV_MASK
    body = raw[4:_CAP_V2_SIZE]
    if new_root == 0:
        return struct.pack("<I", _CAP_REV2 | flags) + body
    return struct.pack("<I", _CAP_REV3 | flags) + body + struct.pack("<I", new_root)


def shift_acl(raw: bytes, uid: IdFn, gid: IdFn) -> bytes:
    """A POSIX ACL xattr value with its named users and groups shifted."""
    if len(raw) < 4 or (len(raw) - 4) % 8:
        return raw
    out = bytearray(raw)
    for off in range(4, len(raw), 8):
        tag, _perm, ident = struct.unpack_from("<HHI", raw, off)
        if tag == _ACL_USER:
            struct.pack_into("<I", out, off + 4, uid(ident))
        elif tag == _ACL_GROUP:
            struct.pack_into("<I", out, off + 4, gid(ident))
    return bytes(out)


def _xattrs(path: str, names: Sequence[str]) -> dict[str, bytes]:
    """The xattrs among ``names`` that ``path`` has (none where the filesystem has none)."""
    try:
        present = set(os.listxattr(path))
    except OSError as e:
        if e.errno in _NO_XATTRS:
            return {}
        raise
    return {n: os.getxattr(path, n) for n in names if n in present}


# -- the walk ----------------------------------------------------------------------------------

@dataclass
class ShiftStats:
    """What a walk did."""

    entries: int = 0            # inodes looked at
    changed: int = 0            # inodes whose owner changed
    seen: set[tuple[int, int]] = field(default_factory=set, repr=False)  # hard-linked inodes


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _Walk:
    def __init__(self, uid: IdFn, gid: IdFn, dev: int) -> None:
        self.uid, self.gid, self.dev = uid, gid, dev
        self.stats = ShiftStats()

    def apply(self, path: str, st: os.stat_result) -> None:
        """Shift one inode (not a symlink) through ``path`` (``/proc/self/fd/N``)."""
        self.stats.entries += 1
        nu, ng = self.uid(st.st_uid), self.gid(st.st_gid)
        wanted = (CAPS, *ACLS) if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) else ()
        xattrs = _xattrs(path, wanted) if wanted else {}
        if (nu, ng) != (st.st_uid, st.st_gid):
            self.stats.changed += 1
            os.chown(path, nu, ng)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))  # chown cleared them
        for name in ACLS:
            if name in xattrs:
                new = shift_acl(xattrs[name], self.uid, self.gid)
                if new != xattrs[name]:
                    os.setxattr(path, name, new)
        if CAPS in xattrs:  # chown dropped it: always written back
            os.setxattr(path, CAPS, shift_caps(xattrs[CAPS], self.uid))

    def entry(self, dfd: int, name: str, st: os.stat_result) -> None:
        """A directory entry that is not a directory."""
        if st.st_nlink > 1:
            if _ident(st) in self.stats.seen:
                return  # another name of an inode already shifted
            self.stats.seen.add(_ident(st))
        if stat.S_ISLNK(st.st_mode):
            self.stats.entries += 1
            nu, ng = self.uid(st.st_uid), self.gid(st.st_gid)
            if (nu, ng) != (st.st_uid, st.st_gid):
                self.stats.changed += 1
                os.chown(name, nu, ng, dir_fd=dfd, follow_symlinks=False)
            return
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            now = os.fstat(fd)
            if _ident(now) != _ident(st) or stat.S_IFMT(now.st_mode) != stat.S_IFMT(st.st_mode):
                raise OSError(errno.ESTALE, "changed while being shifted")
            self.apply(f"/proc/self/fd/{fd}", now)
        finally:
            os.close(fd)


def _open_dir(dfd: int, name: str, want: tuple[int, int]) -> int:
    """``name`` under ``dfd`` as a directory fd, only if it is still the inode ``want``."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    if _ident(os.fstat(fd)) != want:
        os.close(fd)
        raise OSError(errno.ESTALE, "changed while being shifted")
    return fd


def shift_tree(root: str, uid: IdFn, gid: IdFn) -> ShiftStats:
    """Give every inode under ``root`` (``root`` too) the owner ``uid(owner)``/``gid(group)``.

    Raises:
        DriverError: naming the entry that could not be shifted.
    """
    try:
        cur = os.open(root, _DIR_FLAGS)
    except OSError as e:
        raise DriverError(f"cannot shift the ids of {root}: {e.strerror}") from e
    top = os.fstat(cur)
    walk = _Walk(uid, gid, top.st_dev)
    frames: list[tuple[list[str], tuple[int, int], str]] = []
    where = "/"
    try:
        walk.apply(f"/proc/self/fd/{cur}", top)
        frames.append((sorted(os.listdir(cur), reverse=True), _ident(top), "/"))
        while frames:
            names, ident, where = frames[-1]
            if not names:
                frames.pop()
                if frames:  # climb back and check we are where we came from
                    cur = _swap(cur, _open_dir(cur, "..", frames[-1][1]))
                continue
            name = names.pop()
            where = os.path.join(frames[-1][2], name)
            st = _lstat(cur, name)
            if st is None or st.st_dev != walk.dev:
                continue  # gone, or a mount point: not this filesystem's to shift
            if not stat.S_ISDIR(st.st_mode):
                walk.entry(cur, name, st)
                continue
            cur = _swap(cur, _open_dir(cur, name, _ident(st)))
            walk.apply(f"/proc/self/fd/{cur}", st)
            frames.append((sorted(os.listdir(cur), reverse=True), _ident(st), where))
    except OSError as e:
        raise DriverError(f"cannot shift the ids of {root}: {where}: {e.strerror}") from e
    finally:
        os.close(cur)
    return walk.stats


def _swap(old: int, new: int) -> int:
    os.close(old)
    return new


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
