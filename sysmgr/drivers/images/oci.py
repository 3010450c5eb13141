"""OCI images from files: an image layout directory, an ``oci-archive`` (that layout in a
tar, as ``skopeo copy ... oci-archive:`` or buildah write it) and a ``docker save`` archive.

:func:`detect` says which a path is; :func:`open_image` reads it and picks the manifest for a
platform (the host's unless one is asked for) from the index, checking the digest and size of
the index's manifest and of the config before anything is unpacked; :func:`unpack` applies
the layers in order (:mod:`.layers`), checking each layer's digest and size as it streams and
its uncompressed digest against the config's ``rootfs.diff_ids``. gzip and uncompressed
layers are read by Python, zstd ones through ``zstd -dc``. The image's fingerprint is its
manifest digest (a docker archive has no manifest: its config digest, docker's image id).

What a system container can use of the image config: ``StopSignal`` is the halt signal,
``Env`` the default environment, ``Labels`` image properties; ``Entrypoint`` and ``Cmd``
are recorded (``oci.entrypoint``, ``oci.cmd``) for the hint a launch gives when the image
has no init.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as platform_mod
import re
import shlex
import tarfile
from typing import IO, Any, BinaryIO, Iterator

from sysmgr._util import proc
from sysmgr.drivers.images.base import ImageMetadata
from sysmgr.drivers.images.layers import Applier, LayerError
from sysmgr.errors import DriverError, ValidationError

LAYOUT, ARCHIVE, DOCKER = "oci-layout", "oci-archive", "docker-archive"

_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
           "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_KERNEL_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "386": "i686",
                "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_MAX_JSON = 4 << 20  # an index, manifest or config larger than this is not one


# -- where the blobs are ------------------------------------------------------------------------

class _Files:
    """Named files of an image: a directory's, or an archive's members (read in place)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if not os.path.isdir(path):
            try:
                self._tar = tarfile.open(path, "r:*")
                for m in self._tar.getmembers():
                    if m.isfile():
                        self._members["/".join(p for p in m.name.split("/") if p not in ("", "."))] = m
            except (tarfile.TarError, OSError) as e:
                raise ValidationError(f"image {path} is not a readable archive: {e}") from e

    def has(self, name: str) -> bool:
        if self._tar is None:
            return os.path.isfile(os.path.join(self.path, name))
        return name in self._members

    def open(self, name: str) -> IO[bytes]:
        if self._tar is None:
            try:
                return open(os.path.join(self.path, name), "rb")
            except OSError as e:
                raise ValidationError(f"image {self.path}: cannot read {name}: {e.strerror}") from e
        m = self._members.get(name)
        f = self._tar.extractfile(m) if m else None
        if f is None:
            raise ValidationError(f"image {self.path}: {name} is missing")
        return f

    def json(self, name: str) -> Any:
        with self.open(name) as f:
            raw = f.read(_MAX_JSON + 1)
        return _loads(raw, f"{self.path}: {name}")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _loads(raw: bytes, what: str) -> Any:
    if len(raw) > _MAX_JSON:
        raise ValidationError(f"image {what} is too large to be JSON metadata")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ValidationError(f"image {what} is not valid JSON: {e}") from e


def detect(path: str) -> str | None:
    """:data:`LAYOUT`, :data:`ARCHIVE`, :data:`DOCKER`, or None for anything else."""
    if os.path.isdir(path):
        return LAYOUT if os.path.isfile(os.path.join(path, "oci-layout")) else None
    try:
        with tarfile.open(path, "r:*") as tf:
            names = set()
            for m in tf:  # the small JSON files come first in both writers' archives
                names.add(m.name.lstrip("./"))
                if {"oci-layout", "index.json"} <= names:
                    return ARCHIVE
                if "manifest.json" in names and "oci-layout" not in names and len(names) > 64:
                    break
    except (tarfile.TarError, OSError, EOFError):
        return None
    if {"oci-layout", "index.json"} <= names:
        return ARCHIVE
    return DOCKER if "manifest.json" in names else None


# -- the image ---------------------------------------------------------------------------------

class Layer:
    """A layer blob: its file in the image, digest (None: a docker archive's, unknown), size
    (-1: unknown) and the uncompressed digest the config promises."""

    __slots__ = ("name", "digest", "size", "diff_id")

    def __init__(self, name: str, digest: str | None, size: int, diff_id: str | None) -> None:
        self.name, self.digest, self.size, self.diff_id = name, digest, size, diff_id


class Image:
    """An opened OCI image: close it (or use ``with``)."""

    def __init__(self, files: _Files, fingerprint: str, config: dict[str, Any],
                 layers: list[Layer], platform: str) -> None:
        self.files, self.fingerprint, self.config = files, fingerprint, config
        self.layers, self.platform = layers, platform

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc: object) -> None:
        self.files.close()


def host_platform() -> str:
    m = platform_mod.machine()
    return f"linux/{_GOARCH.get(m, m)}" + ("/v7" if m == "armv7l" else "")


def open_image(path: str, platform: str | None = None) -> Image:
    """Read the image at ``path`` (a layout dir, oci-archive or docker archive) for
    ``platform`` (``os/arch[/variant]``; default the host's). The index, manifest and config
    are checked here; the layers as :func:`unpack` reads them."""
    kind = detect(path)
    if kind is None:
        raise ValidationError(f"{path} is not an OCI image layout, oci-archive or docker archive")
    files = _Files(path)
    try:
        if kind == DOCKER:
            return _docker(files)
        return _oci(files, platform or host_platform(), platform is not None)
    except BaseException:
        files.close()
        raise


def _blob_name(desc: dict[str, Any], what: str) -> str:
    m = _DIGEST.match(str(desc.get("digest", "")))
    if not m:
        raise ValidationError(f"{what}: unsupported or malformed digest {desc.get('digest')!r}")
    return f"blobs/sha256/{m.group(1)}"


def _checked_json(files: _Files, desc: dict[str, Any], what: str) -> Any:
    """The JSON blob ``desc`` points at, after checking its size and digest."""
    name = _blob_name(desc, what)
    with files.open(name) as f:
        raw = f.read(_MAX_JSON + 1)
    if len(raw) != desc.get("size") or "sha256:" + hashlib.sha256(raw).hexdigest() != desc["digest"]:
        raise ValidationError(f"image {files.path}: {what} {desc['digest'][:19]}… does not match "
                              f"its digest or size (the image is damaged or was altered)")
    return _loads(raw, f"{files.path}: {what}")


def _oci(files: _Files, want: str, asked: bool) -> Image:
    index = files.json("index.json")
    desc = _pick(files, index, want, asked, depth=0)
    manifest = _checked_json(files, desc, "manifest")
    config_desc = manifest.get("config") or {}
    config = _checked_json(files, config_desc, "config")
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    descs = manifest.get("layers") or []
    if len(diff_ids) != len(descs):
        raise ValidationError(f"image {files.path}: the config lists {len(diff_ids)} layers, "
                              f"the manifest {len(descs)}")
    layers = [Layer(_blob_name(d, "layer"), d["digest"], int(d.get("size", -1)), diff)
              for d, diff in zip(descs, diff_ids)]
    plat = _platform_of(desc) or f"{config.get('os', 'linux')}/{config.get('architecture', '?')}"
    return Image(files, desc["digest"].split(":", 1)[1], config, layers, plat)


def _platform_of(desc: dict[str, Any]) -> str | None:
    p = desc.get("platform")
    if not p:
        return None
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def _candidates(files: _Files, index: dict[str, Any], depth: int) -> Iterator[dict[str, Any]]:
    for d in index.get("manifests") or []:
        if d.get("mediaType") in _INDEX_TYPES:
            if depth > 4:
                raise ValidationError(f"image {files.path}: indexes nested too deep")
            yield from _candidates(files, _checked_json(files, d, "index"), depth + 1)
        elif _platform_of(d) != "unknown/unknown":  # buildkit's attestations, not images
            yield d


def _pick(files: _Files, index: dict[str, Any], want: str, asked: bool, depth: int) -> dict[str, Any]:
    found = list(_candidates(files, index, depth))
    if not found:
        raise ValidationError(f"image {files.path}: its index lists no image manifest")
    if len(found) == 1 and (not asked or _platform_of(found[0]) is None):
        return found[0]
    for d in found:
        p = _platform_of(d) or ""
        if p == want or (want.count("/") == 1 and p.rsplit("/", 1)[0] == want and p.count("/") == 2):
            return d
    have = ", ".join(sorted({_platform_of(d) or "unspecified" for d in found}))
    raise ValidationError(f"image {files.path} has no manifest for {want} (it has: {have})",
                          hint="choose one with --platform OS/ARCH")


def _docker(files: _Files) -> Image:
    entries = files.json("manifest.json")
    if not isinstance(entries, list) or len(entries) != 1:
        raise ValidationError(f"image {files.path}: a docker archive with one image is needed "
                              f"(its manifest.json lists {len(entries) if isinstance(entries, list) else 'no'} images)")
    entry = entries[0]
    cfg_name = str(entry.get("Config", ""))
    hexid = os.path.basename(cfg_name).removesuffix(".json")
    if not re.fullmatch(r"[0-9a-f]{64}", hexid):
        raise ValidationError(f"image {files.path}: config {cfg_name!r} is not named by its digest")
    with files.open(cfg_name) as f:
        raw = f.read(_MAX_JSON + 1)
    if hashlib.sha256(raw).hexdigest() != hexid:
        raise ValidationError(f"image {files.path}: config {hexid[:12]} does not match its digest "
                              "(the image is damaged or was altered)")
    config = _loads(raw, f"{files.path}: config")
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    names = [str(n) for n in entry.get("Layers") or []]
    if len(diff_ids) != len(names):
        raise ValidationError(f"image {files.path}: the config lists {len(diff_ids)} layers, "
                              f"manifest.json {len(names)}")
    layers = [Layer(n, None, -1, d) for n, d in zip(names, diff_ids)]
    plat = f"{config.get('os', 'linux')}/{config.get('architecture', '?')}"
    return Image(files, hexid, config, layers, plat)


# -- unpacking -------------------------------------------------------------------------------

class _Hashing:
    """A reader that hashes what passes through and counts it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        self.n += len(b)
        return b

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def unpack(image: Image, dest: str) -> list[str]:
    """Apply the layers to the empty directory ``dest``; the device nodes refused (their
    paths). A layer that does not match its digest, size or diff id fails the whole unpack
    (the caller empties ``dest``)."""
    applier = Applier(dest)
    for i, layer in enumerate(image.layers):
        what = f"{i + 1}/{len(image.layers)} ({(layer.digest or layer.name)[:19]})"
        raw, plain = _apply_layer(image, layer, applier, what)
        _check_blob(image, layer, raw, what)
        if layer.diff_id and "sha256:" + plain.h.hexdigest() != layer.diff_id:
            raise ValidationError(f"image {image.files.path}: layer {what} does not match the "
                                  "config's diff id (the image is damaged or was altered)")
    return applier.refused


def _apply_layer(image: Image, layer: Layer, applier: Applier, what: str
                 ) -> tuple[_Hashing, _Hashing]:
    """Apply one layer; (the hashed compressed and uncompressed streams). A layer that
    cannot be read as a compressed tar is first checked against its digest: a damaged
    blob is said to be one, not a decompressor's complaint."""
    import gzip
    import zlib

    with image.files.open(layer.name) as raw_f:
        raw = _Hashing(raw_f)
        try:
            with _Decompressed(raw, what) as plain_f:
                plain = _Hashing(plain_f)
                applier.apply(plain, what)  # type: ignore[arg-type]
                plain.drain()
        except (gzip.BadGzipFile, zlib.error, EOFError, LayerError) as e:
            raw.drain()
            _check_blob(image, layer, raw, what)
            if isinstance(e, LayerError):
                raise
            raise ValidationError(f"image {image.files.path}: layer {what} cannot be "
                                  f"decompressed: {e}") from e
        raw.drain()
    return raw, plain


def _check_blob(image: Image, layer: Layer, raw: _Hashing, what: str) -> None:
    if layer.digest and ("sha256:" + raw.h.hexdigest() != layer.digest
                         or (layer.size >= 0 and raw.n != layer.size)):
        raise ValidationError(f"image {image.files.path}: layer {what} does not match its "
                              "digest or size (the image is damaged or was altered)")


class _Decompressed:
    """The uncompressed stream of a layer read from ``raw``: gzip and plain tars by
    Python, zstd through ``zstd -dc`` (whose stdin is fed from ``raw`` by a thread)."""

    def __init__(self, raw: _Hashing, what: str) -> None:
        self.raw, self.what, self.proc = raw, what, None
        self.head = raw.read(4)

    def __enter__(self) -> BinaryIO:
        head = self.head
        joined = _Prefixed(head, self.raw)
        if head[:2] == b"\x1f\x8b":
            import gzip

            self.out = gzip.GzipFile(fileobj=joined)  # type: ignore[arg-type]
            return self.out  # type: ignore[return-value]
        if head == b"\x28\xb5\x2f\xfd":
            return self._zstd(joined)
        return joined  # type: ignore[return-value]

    def _zstd(self, joined: "_Prefixed") -> BinaryIO:
        import subprocess
        import threading

        self.proc = proc.popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)

        def feed() -> None:
            try:
                while chunk := joined.read(1 << 20):
                    self.proc.stdin.write(chunk)  # type: ignore[union-attr]
            except OSError:
                pass  # zstd stopped reading: its exit status says why
            finally:
                self.proc.stdin.close()  # type: ignore[union-attr]

        self.feeder = threading.Thread(target=feed, daemon=True)
        self.feeder.start()
        return self.proc.stdout  # type: ignore[return-value]

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.feeder.join()
        code = self.proc.wait()
        if code != 0 and exc_type is None:
            raise DriverError(f"layer {self.what}: zstd could not decompress it (exit {code})")


class _Prefixed:
    """``head`` (already read) followed by the rest of ``f``."""

    def __init__(self, head: bytes, f: _Hashing) -> None:
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.f.read(n)
        if n < 0:
            out, self.head = self.head, b""
            return out + self.f.read()
        out, self.head = self.head[:n], self.head[n:]
        return out + self.f.read(n - len(out)) if len(out) < n else out


# -- what the config says --------------------------------------------------------------------

def metadata(image: Image, rootfs: str, detect_halt: Any) -> ImageMetadata:
    """The image's metadata: ``StopSignal`` (else what ``detect_halt(rootfs)`` finds),
    ``Env``, ``Labels``, the architecture, and where it came from."""
    cfg = image.config.get("config") or {}
    arch = image.platform.split("/")[1] if "/" in image.platform else ""
    labels = {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}
    props = dict(labels)
    props.update({
        "architecture": _KERNEL_ARCH.get(arch, arch),
        "os": labels.get("org.opencontainers.image.title") or "oci",
        "description": labels.get("org.opencontainers.image.description")
        or f"OCI image {image.fingerprint[:12]} ({image.platform})",
        "oci.digest": "sha256:" + image.fingerprint,
        "oci.platform": image.platform,
    })
    for key in ("Entrypoint", "Cmd"):
        if cfg.get(key):
            props[f"oci.{key.lower()}"] = shlex.join(str(a) for a in cfg[key])
    if image.config.get("created"):
        props["oci.created"] = str(image.config["created"])
    env = {}
    for item in cfg.get("Env") or []:
        k, sep, v = str(item).partition("=")
        if sep and k:
            env[k] = v
    stop = str(cfg.get("StopSignal") or "")
    halt = _signal_name(stop) if stop else detect_halt(rootfs)
    return ImageMetadata(properties=props, halt_signal=halt, environment=env)


def _signal_name(value: str) -> str:
    """``SIGTERM``, ``TERM`` or ``15`` as the name the metadata keeps."""
    import signal

    v = value.strip().upper()
    if v.isdigit():
        try:
            return signal.Signals(int(v)).name
        except ValueError:
            raise ValidationError(f"image StopSignal {value!r} is not a signal") from None
    return v if v.startswith("SIG") else "SIG" + v
