"""Images of remote members through the admin root, over real SSH (test hosts: network
namespaces with their own sshd and sysmgr root): ``image publish`` of a container a member
holds, into that member's store or as an oci-archive / OCI layout written on the admin
host (checked with skopeo, imported back and booted), an OCI layout directory imported to
a member, and a publish failing half-way leaving nothing on either side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import requires_root

pytestmark = [requires_root, pytest.mark.slow]


def ok(cluster, *args: str):
    res = cluster.cli(*args)
    assert res.returncode == 0, f"sysmgr {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def images_on(cluster, member: str) -> dict[str, list[str]]:
    rows = json.loads(ok(cluster, "image", "list", "--format", "json", "--target", member).stdout)
    return {r["fingerprint"]: [a["name"] for a in r["aliases"]] for r in rows}


def skopeo_manifest(ref: str) -> dict:
    res = subprocess.run(["skopeo", "inspect", "--raw", ref], capture_output=True, text=True)
    assert res.returncode == 0, (ref, res.stderr)
    return json.loads(res.stdout)


def tmp_empty(m, limit: float = 30) -> list[str]:
    """What streams staged in the member root's tmp directory, once no stream is left
    writing there (export-*, import-*, publish-*: none should stay)."""
    tmp = os.path.join(m.root, "tmp")

    def staged() -> list[str]:
        return [n for n in os.listdir(tmp) if n.startswith(("export-", "import-", "publish-"))]

    deadline = time.monotonic() + limit
    while staged() and time.monotonic() < deadline:
        time.sleep(0.1)  # the member's stream may still be cleaning up after a cut
    return staged()


@pytest.fixture
def two(test_cluster):
    """Two members on an admin root; m1 holds the stopped container p1 (a marker file owned
    by container ids 7:8, environment ROLE=web) and its snapshot s0."""
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed (scripts/setup installs it)")
    cluster = test_cluster(2, trust=False)
    for m in cluster.members:
        ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
           "--sysmgr", m.sysmgr, "--accept-host-key", m.host_key)
    ok(cluster, "image", "build", "busybox", "--alias", "busybox", "--target", "m1")
    ok(cluster, "launch", "busybox", "p1", "--target", "m1", "-c", "environment.ROLE=web")
    ok(cluster, "exec", "p1", "--", "sh", "-c",
       "echo published > /root/marker; chown 7:8 /root/marker")
    ok(cluster, "stop", "p1", "--timeout", "10")
    ok(cluster, "snapshot", "create", "p1", "s0")
    return cluster


def boots_with_marker(cluster, image: str, name: str, member: str) -> None:
    ok(cluster, "launch", image, name, "--target", member)
    out = ok(cluster, "exec", name, "--", "sh", "-c",
             "cat /root/marker; stat -c %u:%g /root/marker; echo $ROLE").stdout.split()
    assert out == ["published", "7:8", "web"]
    ok(cluster, "delete", "--force", name)


def test_publish_on_a_member_and_back(two, tmp_path) -> None:
    cluster = two
    m1, m2 = cluster.members
    # LXD's publish through the admin root: the image goes to the store of the member
    # that holds the container (not the admin root's, nor the other member's)
    res = ok(cluster, "image", "publish", "p1", "--alias", "p1-base")
    fp = res.stdout.strip().rsplit(" ", 1)[1]
    assert "member m1" in res.stderr, res.stderr
    assert images_on(cluster, "m1")[fp] == ["p1-base"]
    assert fp not in images_on(cluster, "m2")
    # for OCI tooling: written on the admin host, streamed back over the member session
    archive, layout = tmp_path / "p1.oci.tar", tmp_path / "p1s0.d"
    res = ok(cluster, "image", "publish", "p1", "--format", "oci", "-o", str(archive))
    digest = res.stdout.strip().rsplit(" ", 1)[1].rstrip(")")
    ok(cluster, "image", "publish", "p1/s0", "--format", "oci-layout", "-o", str(layout),
       "--target", "m1")  # a member client does the same
    assert skopeo_manifest(f"oci-archive:{archive}")["layers"]
    index = json.loads((layout / "index.json").read_text())
    assert skopeo_manifest(f"oci:{layout}")["config"] and index["manifests"][0]["digest"] != digest
    assert sorted(os.listdir(tmp_path)) == ["p1.oci.tar", "p1s0.d"]  # no staging left here
    assert tmp_empty(m1) == []                                         # nor on the member
    # back in: the archive (a file) and the layout (a directory, packed on the way) to m2
    res = ok(cluster, "image", "import", str(archive), "--alias", "from-tar", "--target", "m2")
    assert res.stdout.strip().endswith(digest.split(":")[1])  # the manifest digest travelled
    ok(cluster, "image", "import", str(layout), "--alias", "from-dir", "--target", "m2")
    assert tmp_empty(m2) == []
    boots_with_marker(cluster, "from-tar", "c2", "m2")
    boots_with_marker(cluster, "from-dir", "c3", "m2")


def test_publish_refusals_and_a_failure_half_way_leave_nothing(two, tmp_path) -> None:
    cluster = two
    m1, _ = cluster.members
    (tmp_path / "taken").write_text("mine")
    res = cluster.cli("image", "publish", "p1", "--format", "oci", "-o", str(tmp_path / "taken"))
    assert res.returncode == 2 and "already exists" in res.stderr, res.stderr
    assert (tmp_path / "taken").read_text() == "mine"
    ok(cluster, "start", "p1")
    res = cluster.cli("image", "publish", "p1", "--format", "oci-layout", "-o", str(tmp_path / "d"))
    assert res.returncode == 1 and "running" in res.stderr, res.stderr  # the member's error
    ok(cluster, "stop", "p1", "--timeout", "10")
    # the admin host's disk fills up half-way through the stream: no partial file or
    # directory here, no staging left on the member
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        for fmt, out in (("oci", "p1.tar"), ("oci-layout", "p1.d")):
            res = cluster.cli("image", "publish", "p1", "--format", fmt, "-o", str(small / out))
            assert res.returncode == 1 and "No space left" in res.stderr, (fmt, res.stderr)
            assert "Traceback" not in res.stderr
            assert os.listdir(small) == [], fmt
            assert tmp_empty(m1) == [], fmt
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert images_on(cluster, "m1") and len(images_on(cluster, "m1")) == 1  # busybox alone


def test_a_broken_layout_directory_is_refused_before_the_member_imports(two, tmp_path) -> None:
    cluster = two
    m1, m2 = cluster.members
    layout = tmp_path / "lay"
    ok(cluster, "image", "publish", "p1", "--format", "oci-layout", "-o", str(layout))
    before = images_on(cluster, "m2")
    blobs = layout / "blobs" / "sha256"
    victim = next(p for p in blobs.iterdir() if p.stat().st_size > 4096)  # the layer
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    res = cluster.cli("image", "import", str(layout), "--alias", "bad", "--target", "m2")
    assert res.returncode == 2 and "digest" in res.stderr, res.stderr  # checked on the member
    os.symlink("/etc/shadow", blobs / ("0" * 64))
    res = cluster.cli("image", "import", str(layout), "--alias", "bad", "--target", "m2")
    assert res.returncode == 2 and "regular files" in res.stderr, res.stderr
    assert images_on(cluster, "m2") == before and tmp_empty(m2) == []
