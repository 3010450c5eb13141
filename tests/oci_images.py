"""OCI images written by the tests themselves, with the standard library (and ``zstd`` for a
zstd layer): an image layout directory, the same in a tar (``oci-archive``), and a ``docker
save`` archive. Layers are lists of :class:`Entry`; :func:`tree_layer` makes one from a
directory (a busybox rootfs)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
         "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


@dataclass
class Entry:
    """One tar member: kind is file, dir, symlink, hardlink, fifo, chr."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)


def layer_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.mode, ti.uid, ti.gid, ti.mtime = e.mode, e.uid, e.gid, 1700000000
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                       "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                       "chr": tarfile.CHRTYPE}[e.kind]
            ti.linkname = e.target
            if e.kind == "chr":
                ti.devmajor, ti.devminor = 1, 3
            if e.xattrs:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            ti.size = len(e.data) if e.kind == "file" else 0
            tf.addfile(ti, io.BytesIO(e.data) if e.kind == "file" else None)
    return buf.getvalue()


def tree_layer(path: str) -> bytes:
    """An uncompressed layer of the directory ``path`` (numeric owners kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(path)):
            tf.add(os.path.join(path, name), arcname=name)
    return buf.getvalue()


def compress(raw: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(raw, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    return raw


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layout:
    """An OCI image layout being written in ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.manifests: list[dict] = []

    def blob(self, data: bytes) -> dict:
        d = _digest(data)
        with open(os.path.join(self.path, "blobs", "sha256", d.split(":")[1]), "wb") as f:
            f.write(data)
        return {"digest": d, "size": len(data)}

    def image(self, layers: list[tuple[bytes, str]], *, arch: str = "amd64",
              config: dict | None = None, platform: bool = True) -> str:
        """Add an image of ``layers`` ((uncompressed tar, compression)); its manifest digest."""
        descs, diff_ids = [], []
        for raw, how in layers:
            descs.append({"mediaType": LAYER[how], **self.blob(compress(raw, how))})
            diff_ids.append(_digest(raw))
        cfg = {"architecture": arch, "os": "linux", "config": config or {},
               "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **self.blob(json.dumps(cfg).encode())},
                    "layers": descs}
        m = {"mediaType": OCI_MANIFEST, **self.blob(json.dumps(manifest).encode())}
        if platform:
            m["platform"] = {"os": "linux", "architecture": arch}
        self.manifests.append(m)
        return m["digest"]

    def close(self) -> None:
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.manifests}, f)


def archive(layout_dir: str, out: str) -> str:
    """The layout in a tar (``oci-archive``): oci-layout and index.json first, as skopeo."""
    with tarfile.open(out, "w") as tf:
        for name in ("oci-layout", "index.json", "blobs"):
            tf.add(os.path.join(layout_dir, name), arcname=name)
    return out


def docker_archive(out: str, layers: list[bytes], config: dict | None = None) -> str:
    """A ``docker save`` archive (the classic format: <id>.json, <n>/layer.tar, manifest.json)."""
    cfg = {"architecture": "amd64", "os": "linux", "config": config or {},
           "rootfs": {"type": "layers", "diff_ids": [_digest(raw) for raw in layers]}}
    raw_cfg = json.dumps(cfg).encode()
    cid = hashlib.sha256(raw_cfg).hexdigest()
    members = {f"{cid}.json": raw_cfg}
    names = []
    for raw in layers:
        n = f"{hashlib.sha256(raw).hexdigest()}/layer.tar"
        members[n] = raw
        names.append(n)
    members["manifest.json"] = json.dumps([{"Config": f"{cid}.json", "RepoTags": ["t:latest"],
                                            "Layers": names}]).encode()
    with tarfile.open(out, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return out
