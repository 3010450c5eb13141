"""Importing images from tarballs and directories, fingerprints, and unified-tarball export.

Accepted inputs (see :class:`Kind`):

* an LXD/LXC **unified image tarball**: ``metadata.yaml`` + ``rootfs/`` (+ ``templates/``, which
  sysmgr ignores), uncompressed or compressed with gzip, xz, zstd (or bzip2);
* a **plain rootfs tarball** (``etc/``, ``usr/``... at the top, no ``metadata.yaml``), same
  compressions;
* a **directory**: either the unified layout or a bare root filesystem.

Extraction uses GNU tar through :func:`sysmgr._util.proc.run`, preserving numeric owners,
permissions and all xattrs (file capabilities such as ``ping``'s live there). Before anything is
written the member list is read (``tar -t``), which both validates the whole archive (a truncated
or corrupt file fails here, with ``dest`` untouched) and lets us reject members that would land
outside ``dest`` (absolute names, ``..``). GNU tar itself also refuses such names, strips ``/``
and ``..`` from hard-link targets and defers absolute symlinks, so a member can never be written
through a symlink the archive planted.

Layer: drivers (images). Errors: :class:`ValidationError` for a bad image,
:class:`DriverUnavailable` for a missing decompressor, :class:`DriverError` for host failures.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from typing import Any

import yaml

from sysmgr._util import proc, safefs
from sysmgr.drivers.images.base import ImageMetadata
from sysmgr.errors import (
    CommandFailed,
    DriverError,
    DriverUnavailable,
    NotFound,
    SysmgrError,
    ValidationError,
)

__all__ = [
    "Kind",
    "inspect",
    "unpack",
    "parse_metadata",
    "render_metadata",
    "detect_halt_signal",
    "fingerprint_file",
    "fingerprint_tree",
    "write_unified_tarball",
]


class Kind(enum.Enum):
    """What an image path holds."""

    UNIFIED_TARBALL = "unified-tarball"
    ROOTFS_TARBALL = "rootfs-tarball"
    UNIFIED_DIR = "unified-dir"
    ROOTFS_DIR = "rootfs-dir"

    @property
    def is_tarball(self) -> bool:
        return self in (Kind.UNIFIED_TARBALL, Kind.ROOTFS_TARBALL)


# Top-level names of which at least one must exist for something to pass as a root filesystem.
_ROOTFS_MARKERS = ("etc", "usr", "bin", "sbin", "lib")

# compression -> (magic prefix, tar flag, program tar runs, apt package providing it)
_COMPRESSIONS: dict[str, tuple[bytes, str | None, str | None, str | None]] = {
    "gz": (b"\x1f\x8b", "--gzip", "gzip", "gzip"),
    "xz": (b"\xfd7zXZ\x00", "--xz", "xz", "xz-utils"),
    "zstd": (b"\x28\xb5\x2f\xfd", "--zstd", "zstd", "zstd"),
    "bz2": (b"BZh", "--bzip2", "bzip2", "bzip2"),
    "none": (b"", None, None, None),
}

_TAR_EXTRACT = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xp"]

# dpkg architecture names -> kernel names (LXD's metadata.yaml ``architecture``)
_KERNEL_ARCH = {
    "amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv6l", "i386": "i686",
    "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}

_SYSMGR_KEYS = ("sysmgr.init", "sysmgr.halt_signal", "sysmgr.no_new_privs")


# -- detection -------------------------------------------------------------------------------

def _compression(path: str) -> str:
    """Name the compression of the file at ``path`` from its magic bytes ('none' for plain tar)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ValidationError(f"cannot read image {path}: {e.strerror}") from e
    for name, (magic, *_rest) in _COMPRESSIONS.items():
        if magic and head.startswith(magic):
            return name
    if len(head) == 512 and head[257:262] == b"ustar":
        return "none"
    raise ValidationError(
        f"image {path} is not a valid image tarball: unrecognised format "
        "(expected a tar archive, uncompressed or compressed with gzip, xz or zstd)")


def _tar_flags(comp: str) -> list[str]:
    _magic, flag, prog, pkg = _COMPRESSIONS[comp]
    if prog and proc.which(prog) is None:
        raise DriverUnavailable(f"{prog} is not installed (needed for {comp} images)",
                                hint=f"apt-get install {pkg}")
    return [flag] if flag else []


def _tar_reason(err: CommandFailed) -> str:
    """tar's own explanation, without its generic closing lines."""
    boring = ("Error is not recoverable", "Exiting with failure status", "Child returned status")
    lines = []
    for line in err.stderr.strip().splitlines():
        line = line.strip()
        if line.startswith("tar: "):
            line = line[5:]
        if line and not line.startswith(boring):
            lines.append(line)
    return "; ".join(lines[:3]) or f"tar exited with status {err.returncode}"


def _norm(name: str) -> str:
    """Member name without a leading './' (mmdebstrap and ``tar -C dir .`` produce those)."""
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def _members(path: str, comp: str) -> list[str]:
    """List the archive's member names; validates the whole archive on the way."""
    try:
        res = proc.run(["tar", "-t", *_tar_flags(comp), "-f", path])
    except CommandFailed as e:
        raise ValidationError(f"image {path} is not a valid image tarball: {_tar_reason(e)}") from e
    names = res.stdout.decode("utf-8", errors="surrogateescape").splitlines()
    if not names:
        raise ValidationError(f"image {path} is not a valid image tarball: the archive is empty")
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValidationError(
                f"image {path} is not a valid image tarball: member {name!r} points outside "
                "the image")
    return names


def _kind_of_members(path: str, names: list[str]) -> tuple[Kind, str]:
    """Return the tarball kind and the member prefix ('' or './')."""
    for name in names:
        if _norm(name) == "metadata.yaml":
            prefix = name[: len(name) - len("metadata.yaml")]
            if not any(_norm(n).split("/")[0] == "rootfs" for n in names):
                raise ValidationError(
                    f"image {path} is not a valid image tarball: metadata.yaml but no rootfs/")
            return Kind.UNIFIED_TARBALL, prefix
    tops = {_norm(n).split("/")[0] for n in names}
    if not tops.intersection(_ROOTFS_MARKERS):
        raise ValidationError(
            f"image {path} is not a valid image tarball: neither metadata.yaml + rootfs/ nor a "
            f"root filesystem (no {', '.join(m + '/' for m in _ROOTFS_MARKERS)} at the top)")
    return Kind.ROOTFS_TARBALL, ""


def _dir_kind(path: str) -> Kind:
    if os.path.isfile(os.path.join(path, "metadata.yaml")) and os.path.isdir(os.path.join(path, "rootfs")):
        return Kind.UNIFIED_DIR
    if any(os.path.lexists(os.path.join(path, m)) for m in _ROOTFS_MARKERS):
        return Kind.ROOTFS_DIR
    raise ValidationError(
        f"image directory {path} holds neither metadata.yaml + rootfs/ nor a root filesystem")


def inspect(path: str) -> Kind:
    """Say what ``path`` holds; raise :class:`ValidationError` if it is not an image."""
    if os.path.isdir(path):
        return _dir_kind(path)
    if not os.path.exists(path):
        raise ValidationError(f"image {path} does not exist")
    names = _members(path, _compression(path))
    return _kind_of_members(path, names)[0]


# -- metadata --------------------------------------------------------------------------------

def _signal_ok(name: str) -> bool:
    m = re.fullmatch(r"SIGRT(MIN|MAX)(?:([+-])(\d+))?", name)
    if m:
        n = int(m.group(3) or 0)
        base = signal.SIGRTMIN if m.group(1) == "MIN" else signal.SIGRTMAX
        num = base + n if m.group(2) == "+" else base - n
        return signal.SIGRTMIN <= num <= signal.SIGRTMAX
    return name.startswith("SIG") and name in signal.Signals.__members__


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("true", "yes", "1", "on"):
        return True
    if s in ("false", "no", "0", "off", ""):
        return False
    raise ValidationError(f"{where}: expected true or false, not {value!r}")


def parse_metadata(text: bytes | str, source: str, rootfs: str | None = None) -> ImageMetadata:
    """Turn an LXD ``metadata.yaml`` into :class:`ImageMetadata`.

    ``sysmgr.init`` / ``sysmgr.halt_signal`` / ``sysmgr.no_new_privs`` are read from the top
    level (where :func:`render_metadata` writes them) or from ``properties``. Without a halt
    signal and with ``rootfs`` given, it is detected from the image's init.
    """
    where = f"{source}: metadata.yaml"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValidationError(f"{where} is not valid YAML: {e}") from e
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValidationError(f"{where} must be a mapping")
    props_in = doc.get("properties") or {}
    if not isinstance(props_in, dict):
        raise ValidationError(f"{where}: properties must be a mapping")
    props = {str(k): "" if v is None else str(v) for k, v in props_in.items()}
    if doc.get("architecture") and "architecture" not in props:
        props["architecture"] = str(doc["architecture"])

    def key(name: str) -> Any:
        return doc[name] if name in doc else props.get(name)

    init = str(key("sysmgr.init") or "/sbin/init")
    if not init.startswith("/"):
        raise ValidationError(f"{where}: sysmgr.init must be an absolute path, not {init!r}")
    halt = key("sysmgr.halt_signal")
    if halt:
        halt = str(halt).upper()
        if not halt.startswith("SIG"):
            halt = "SIG" + halt
        if not _signal_ok(halt):
            raise ValidationError(f"{where}: sysmgr.halt_signal {key('sysmgr.halt_signal')!r} "
                                  "is not a signal name")
    elif rootfs is not None:
        halt = detect_halt_signal(rootfs, init)
    else:
        halt = "SIGPWR"
    nnp = _as_bool(key("sysmgr.no_new_privs") or False, f"{where}: sysmgr.no_new_privs")
    for k in _SYSMGR_KEYS:
        props.pop(k, None)
    return ImageMetadata(properties=props, init=init, halt_signal=halt, no_new_privs=nnp)


def render_metadata(metadata: ImageMetadata, creation_date: int | None = None) -> str:
    """The LXD ``metadata.yaml`` text for ``metadata`` (sysmgr keys at the top level)."""
    arch = metadata.properties.get("architecture") or os.uname().machine
    doc = {
        "architecture": _KERNEL_ARCH.get(arch, arch),
        "creation_date": int(time.time()) if creation_date is None else creation_date,
        "properties": dict(metadata.properties),
        "templates": {},
        "sysmgr.init": metadata.init,
        "sysmgr.halt_signal": metadata.halt_signal,
        "sysmgr.no_new_privs": metadata.no_new_privs,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def detect_halt_signal(rootfs: str, init: str = "/sbin/init") -> str:
    """The signal that halts the image's init, by what ``init`` resolves to *inside* ``rootfs``.

    systemd -> ``SIGRTMIN+3``; busybox -> ``SIGUSR2``; anything else (sysvinit...) ->
    ``SIGPWR``. A missing init also gives ``SIGPWR`` (the runtime reports the missing init).
    """
    try:
        real = safefs.resolve(rootfs, init)
        st = safefs.stat(rootfs, real)
    except (NotFound, ValidationError):
        return "SIGPWR"
    name = os.path.basename(real)
    if name == "systemd":
        return "SIGRTMIN+3"
    if name == "busybox":
        return "SIGUSR2"
    # a busybox binary installed under its applet name (copy or hard link) still says so
    if stat.S_ISREG(st.st_mode) and st.st_size <= 8 << 20:
        try:
            if b"BusyBox v" in safefs.read_file(rootfs, real):
                return "SIGUSR2"
        except SysmgrError:
            pass
    return "SIGPWR"


# -- unpacking -------------------------------------------------------------------------------

def _clear(dest: str) -> None:
    """Remove everything inside ``dest`` (not ``dest`` itself); never follows symlinks."""
    with os.scandir(dest) as it:
        entries = list(it)
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass


def _extract_error(path: str, e: CommandFailed) -> SysmgrError:
    reason = _tar_reason(e)
    if "No space left on device" in reason or "Disk quota exceeded" in reason:
        return DriverError(f"cannot unpack image {path}: {reason}")
    return ValidationError(f"image {path} is not a valid image tarball: {reason}")


def unpack(path: str, dest_rootfs: str) -> ImageMetadata:
    """Fill the empty directory ``dest_rootfs`` with the image's root filesystem.

    Returns the image's metadata (from ``metadata.yaml`` when there is one, else detected). On
    any failure ``dest_rootfs`` is left empty.
    """
    if not os.path.isdir(dest_rootfs):
        raise DriverError(f"unpack destination {dest_rootfs} is not a directory")
    if os.listdir(dest_rootfs):
        raise DriverError(f"unpack destination {dest_rootfs} is not empty")
    try:
        if os.path.isdir(path):
            return _unpack_dir(path, dest_rootfs)
        if not os.path.exists(path):
            raise ValidationError(f"image {path} does not exist")
        return _unpack_tarball(path, dest_rootfs)
    except BaseException:
        _clear(dest_rootfs)
        raise


def _unpack_tarball(path: str, dest: str) -> ImageMetadata:
    comp = _compression(path)
    flags = _tar_flags(comp)
    names = _members(path, comp)
    kind, prefix = _kind_of_members(path, names)
    if kind is Kind.ROOTFS_TARBALL:
        try:
            proc.run([*_TAR_EXTRACT, *flags, "-f", path, "-C", dest])
        except CommandFailed as e:
            raise _extract_error(path, e) from e
        return ImageMetadata(halt_signal=detect_halt_signal(dest))

    try:
        raw = proc.run(["tar", "-x", "-O", *flags, "-f", path, "--", prefix + "metadata.yaml"]).stdout
    except CommandFailed as e:
        raise ValidationError(f"image {path} is not a valid image tarball: {_tar_reason(e)}") from e
    # rootfs/ member names become dest-relative: './rootfs/x' needs one more component stripped
    strip = 1 + prefix.count("/")
    try:
        proc.run([*_TAR_EXTRACT, *flags, "-f", path, "-C", dest, f"--strip-components={strip}",
                  "--", prefix + "rootfs"])
    except CommandFailed as e:
        raise _extract_error(path, e) from e
    return parse_metadata(raw, path, rootfs=dest)


def _unpack_dir(path: str, dest: str) -> ImageMetadata:
    kind = _dir_kind(path)
    src = os.path.join(path, "rootfs") if kind is Kind.UNIFIED_DIR else path
    try:
        # -T: copy src's contents (and its own mode/owner) onto the existing dest
        proc.run(["cp", "-a", "--reflink=auto", "-T", "--", src, dest])
    except CommandFailed as e:
        reason = e.stderr.strip().splitlines()[-1] if e.stderr.strip() else str(e)
        raise DriverError(f"cannot import image directory {path}: {reason}") from e
    if kind is Kind.ROOTFS_DIR:
        return ImageMetadata(halt_signal=detect_halt_signal(dest))
    try:
        with open(os.path.join(path, "metadata.yaml"), "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValidationError(f"cannot read {path}/metadata.yaml: {e.strerror}") from e
    return parse_metadata(raw, path, rootfs=dest)


# -- fingerprints ----------------------------------------------------------------------------

def fingerprint_file(path: str) -> str:
    """sha256 hex digest of the file at ``path`` (streamed)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError as e:
        raise NotFound(f"{path} does not exist") from e
    except OSError as e:
        raise DriverError(f"cannot read {path}: {e.strerror}") from e
    return h.hexdigest()


def _file_digest(path: bytes) -> bytes:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest().encode()


def _xattrs(path: bytes) -> list[bytes]:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return []  # filesystem without xattr support
    out = []
    for n in names:
        if n == "security.selinux":  # assigned by the host's policy, not part of the image
            continue
        try:
            out.append(n.encode() + b"=" + os.getxattr(path, n, follow_symlinks=False).hex().encode())
        except OSError:
            continue
    return out


def fingerprint_tree(root: str) -> str:
    """sha256 over a canonical walk of the tree under ``root`` (``root`` itself excluded).

    Per entry, in sorted depth-first order: relative path, mode (type + permissions), uid,
    gid, xattrs, and for regular files size + content sha256, for symlinks the target (never
    followed), for devices the device number. Times, inode numbers and link counts are left
    out, so two extractions of the same image fingerprint the same.
    """
    h = hashlib.sha256()

    def field(b: bytes) -> bytes:  # length-prefixed: names may contain any byte but NUL
        return b"%d:" % len(b) + b

    stack: list[tuple[bytes, bytes]] = [(os.fsencode(root), b"")]
    try:
        while stack:
            dirpath, rel = stack.pop()
            with os.scandir(dirpath) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for e in entries:
                st = e.stat(follow_symlinks=False)
                relp = rel + b"/" + e.name if rel else e.name
                parts = [relp, b"%o" % st.st_mode, b"%d" % st.st_uid, b"%d" % st.st_gid,
                         *_xattrs(e.path)]
                if stat.S_ISREG(st.st_mode):
                    parts += [b"%d" % st.st_size, _file_digest(e.path)]
                elif stat.S_ISLNK(st.st_mode):
                    parts.append(os.readlink(e.path))
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    parts.append(b"%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
                h.update(b"".join(field(p) for p in parts) + b"\n")
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append((e.path, relp))
            # pushed in reverse so they are popped (walked) in sorted order
            stack.extend(reversed(subdirs))
    except OSError as e:
        raise DriverError(f"cannot fingerprint {root}: {e}") from e
    return h.hexdigest()


# -- export ----------------------------------------------------------------------------------

def write_unified_tarball(rootfs_dir: str, metadata: ImageMetadata, out_path: str,
                          compression: str = "zstd") -> None:
    """Write an LXD unified image tarball (``metadata.yaml`` + ``rootfs/``) to ``out_path``.

    ``compression`` is ``zstd``, ``gz``, ``xz`` or ``none``. The file appears atomically:
    it is written under a temporary name in the same directory and renamed when complete.
    """
    if compression not in ("zstd", "gz", "xz", "none"):
        raise ValidationError(f"unknown compression {compression!r} (use zstd, gz, xz or none)")
    if not os.path.isdir(rootfs_dir):
        raise NotFound(f"root filesystem {rootfs_dir} does not exist")
    flags = _tar_flags(compression)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        with open(os.path.join(tmp, "metadata.yaml"), "w") as f:
            f.write(render_metadata(metadata))
        partial = os.path.join(tmp, "image.tar")
        argv = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--format=posix",
                "--pax-option=delete=atime,delete=ctime", "--sort=name", "-c", *flags,
                "-f", partial, "-C", tmp, "metadata.yaml",
                # '.'-relative names become 'rootfs/...'; S: leave symlink targets alone
                "--transform=s,^\\.,rootfs,S", "-C", os.path.abspath(rootfs_dir), "."]
        try:
            proc.run(argv)
        except CommandFailed as e:
            raise DriverError(f"cannot write image tarball {out_path}: {_tar_reason(e)}") from e
        os.replace(partial, out_path)
