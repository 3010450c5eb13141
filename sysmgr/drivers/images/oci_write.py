"""Writing a root filesystem as an OCI image: one gzip layer, its config and manifest, an
index naming it, as an image layout directory or the same in a tar (``oci-archive``), which
skopeo, umoci, podman and buildah read.

The layer is a PAX tar of the tree with numeric owners given by ``owner`` (a container's
files may carry host ids on disk: the caller maps them back), modes, hard links, symlinks and
extended attributes (``SCHILY.xattr.*``); device nodes and sockets are left out (a runtime
makes ``/dev``). The config carries what a system container means: ``Entrypoint`` its init,
``StopSignal`` its halt signal, ``Env`` its environment, ``Labels`` the given labels.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from typing import Callable, Mapping, Sequence

from sysmgr.errors import DriverError, ValidationError

Owner = Callable[[int, int], tuple[int, int]]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class _Digesting:
    """A binary file that hashes and counts what is written to it."""

    def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _layer(tree: str, out: str, owner: Owner) -> tuple[dict[str, object], str]:
    """Write the gzip layer of ``tree`` to the file ``out``: (its descriptor, diff id)."""
    with open(out, "wb") as raw_f:
        raw = _Digesting(raw_f)
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:  # type: ignore[arg-type]
            plain = _Digesting(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[arg-type]
                _add_tree(tf, tree, owner)
    return {"mediaType": LAYER_GZIP, "digest": raw.digest, "size": raw.n}, plain.digest


def _add_tree(tf: tarfile.TarFile, tree: str, owner: Owner) -> None:
    """Every entry below ``tree``, parents before children, in name order (reproducible)."""
    for d, dirs, files in os.walk(tree):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            path = os.path.join(d, name)
            st = os.lstat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                    or stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                continue  # device nodes, sockets: a runtime makes /dev
            ti = tf.gettarinfo(path, arcname=os.path.relpath(path, tree))
            ti.uid, ti.gid = owner(st.st_uid, st.st_gid)
            ti.uname = ti.gname = ""
            xattrs = _xattrs(path)
            if xattrs:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            if ti.isreg():
                with open(path, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False).decode("utf-8", "surrogateescape")
        except OSError:
            continue
    return out


def _blob(layout: str, data: bytes, media_type: str) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def write_layout(tree: str, layout: str, *, owner: Owner, init: Sequence[str],
                 stop_signal: str, env: Mapping[str, str], labels: Mapping[str, str],
                 ref: str) -> str:
    """Write the image of ``tree`` as an OCI layout in the new directory ``layout``;
    returns the manifest digest."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    tmp = os.path.join(layout, "blobs", "sha256", ".layer")
    layer, diff_id = _layer(tree, tmp, owner)
    os.rename(tmp, os.path.join(layout, "blobs", "sha256", str(layer["digest"]).split(":")[1]))
    arch = _GOARCH.get(os.uname().machine, os.uname().machine)
    config = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": list(init), "StopSignal": stop_signal,
                   "Env": [f"{k}={v}" for k, v in env.items()], "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "sysmgr image publish"}],
    }
    cfg = _blob(layout, json.dumps(config, sort_keys=True).encode(), CONFIG)
    manifest = _blob(layout, json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                                         "config": cfg, "layers": [layer]}).encode(), MANIFEST)
    manifest["platform"] = {"os": "linux", "architecture": arch}
    manifest["annotations"] = {"org.opencontainers.image.ref.name": ref}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": INDEX, "manifests": [manifest]}, f)
    return str(manifest["digest"])


def check_output(out: str) -> str:
    """``out`` as an absolute path where a published image may go: nothing there yet, in
    a directory that exists."""
    out = os.path.abspath(out)
    if os.path.lexists(out):
        raise ValidationError(f"{out} already exists", hint="give another --output, or remove it")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise ValidationError(f"directory {parent} does not exist")
    return out


def write(tree: str, out: str, *, archive: bool, **image: object) -> str:
    """Write the image of ``tree`` to ``out``: an oci-archive file (``archive``) or a new
    layout directory; it appears whole or not at all. Returns the manifest digest."""
    out = check_output(out)
    stage = tempfile.mkdtemp(prefix=".publish-", dir=os.path.dirname(out))
    try:
        layout = os.path.join(stage, "layout")
        digest = write_layout(tree, layout, **image)  # type: ignore[arg-type]
        if archive:
            part = os.path.join(stage, "image.tar")
            with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tf:
                for name in ("oci-layout", "index.json", "blobs"):
                    tf.add(os.path.join(layout, name), arcname=name)
            os.rename(part, out)
        else:
            os.rename(layout, out)
        return digest
    except OSError as e:
        raise DriverError(f"cannot write OCI image {out}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
