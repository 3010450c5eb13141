"""An OCI layout directory as a tar stream (sysmgr.remote.layouts): packed with index.json
last and nothing but regular files and directories; unpacked taking nothing but a layout's
names (no '..', no absolute path, no link, no device, no name twice), whole or refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from sysmgr.errors import DriverError, ValidationError
from sysmgr.remote import layouts


@pytest.fixture
def layout(tmp_path):
    lay = tmp_path / "lay"
    (lay / "blobs" / "sha256").mkdir(parents=True)
    (lay / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (lay / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    (lay / "blobs" / "sha256" / ("a" * 64)).write_bytes(os.urandom(300_000))
    return lay


def packed(lay) -> bytes:
    buf = io.BytesIO()
    layouts.pack(str(lay), buf)
    return buf.getvalue()


def test_round_trip_with_the_index_last(layout, tmp_path):
    data = packed(layout)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert names[0] == "oci-layout" and names[-1] == "index.json"
    layouts.unpack(io.BytesIO(data), str(tmp_path / "out"))
    blob = f"blobs/sha256/{'a' * 64}"
    assert (tmp_path / "out" / blob).read_bytes() == (layout / blob).read_bytes()
    assert layouts.is_layout(str(tmp_path / "out"))


def test_pack_refuses_links_and_foreign_names(layout):
    os.symlink("/etc/passwd", layout / "blobs" / "sha256" / ("b" * 64))
    with pytest.raises(ValidationError, match="regular files"):
        packed(layout)
    os.unlink(layout / "blobs" / "sha256" / ("b" * 64))
    (layout / "blobs" / "sha256" / "notes.txt").write_text("x")
    with pytest.raises(ValidationError, match="not a name an OCI image layout holds"):
        packed(layout)


def _tar(*entries: tarfile.TarInfo) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info in entries:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    buf.seek(0)
    return buf


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("entries", [
    [_entry("../evil")],
    [_entry("/etc/evil")],
    [_entry("blobs/sha256/../../../evil")],
    [_entry("blobs", tarfile.SYMTYPE, "/etc"), _entry("blobs/sha256/" + "a" * 64)],
    [_entry("blobs/sha256/" + "a" * 64, tarfile.LNKTYPE, "/etc/shadow")],
    [_entry("blobs/sha256/" + "a" * 64, tarfile.CHRTYPE)],
    [_entry("oci-layout"), _entry("oci-layout")],             # a name twice
    # '..' or '.' as the algorithm, in an otherwise whole layout (only the name can refuse it)
    [_entry("oci-layout"), _entry("blobs/../blobs"), _entry("index.json")],
    [_entry("blobs/../oci-layout"), _entry("index.json")],
    [_entry("oci-layout"), _entry("blobs/./" + "a" * 64), _entry("index.json")],
], ids=["dotdot", "absolute", "deep-dotdot", "symlink-dir", "hardlink", "device", "twice",
        "dotdot-algorithm", "dotdot-marker", "dot-algorithm"])
def test_unpack_takes_nothing_but_a_layout(tmp_path, entries):
    out = tmp_path / "out"
    with pytest.raises(DriverError):
        layouts.unpack(_tar(*entries), str(out))
    assert not (tmp_path / "evil").exists()
    for dirpath, dirs, files in os.walk(out):
        for n in dirs + files:
            assert not os.path.islink(os.path.join(dirpath, n))


def test_a_stream_cut_short_is_refused(layout, tmp_path):
    data = packed(layout)
    with pytest.raises(DriverError):
        layouts.unpack(io.BytesIO(data[: len(data) // 2]), str(tmp_path / "out"))
