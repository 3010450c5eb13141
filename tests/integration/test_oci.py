"""OCI images in (issue 16): a layout directory, an oci-archive and a docker archive, written by
the tests (tests/oci_images.py), imported through the real CLI into a real pool, and what
their layers and configs become: whiteouts, opaque directories, hard links, symlinks, setuid,
xattrs, zstd; refused digests, '..' names and device nodes; the platform of an index; the
config's StopSignal, Env and Labels; and a launch of an image without an init."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from tests.conftest import cli_ok, run_cli
from tests.oci_images import Entry, Layout, archive, docker_archive, layer_tar, tree_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (real kernel)")

if not shutil.which("zstd"):  # scripts/setup installs it
    pytest.skip("zstd is not installed", allow_module_level=True)

BASE = [
    Entry("etc", "dir", mode=0o755),
    Entry("etc/os-release", data=b"ID=test\n"),
    Entry("etc/gone", data=b"lower\n"),
    Entry("opq", "dir", mode=0o755),
    Entry("opq/old1", data=b"1"),
    Entry("opq/sub", "dir", mode=0o700),
    Entry("opq/sub/old2", data=b"2"),
    Entry("usr/bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
    Entry("usr/bin/shared", data=b"same inode", mode=0o640, uid=1000, gid=1001),
    Entry("usr/bin/alias", "hardlink", target="usr/bin/shared"),
    Entry("data", "file", data=b"x", xattrs={"user.origin": "layer1"}),
    Entry("link", "symlink", target="/etc/os-release"),
    Entry("pipe", "fifo", mode=0o600),
]
TOP = [
    Entry("etc/.wh.gone"),
    Entry("opq/.wh..wh..opq"),
    Entry("opq/new", data=b"3"),
    Entry("etc/added", data=b"top\n", mode=0o600, uid=33, gid=33),
    Entry("dev/sda", "chr", mode=0o666),
]


def _image(rootfs: str) -> str:
    return os.path.join(rootfs, "images")


def _import(root: str, path: str, *args: str):
    return run_cli("image", "import", path, *args, root=root)


def _tree(root: str, fp: str) -> str:
    """Where the image with fingerprint ``fp`` is unpacked in the dir pool."""
    for dirpath, dirs, _ in os.walk(root):
        if fp in dirs:
            p = os.path.join(dirpath, fp)
            return os.path.join(p, "rootfs") if os.path.isdir(os.path.join(p, "rootfs")) else p
    raise AssertionError(f"image {fp} not found under {root}")


def _fingerprint(res) -> str:
    return res.stdout.strip().rsplit(" ", 1)[1]


@pytest.fixture
def layout(tmp_path):
    lay = Layout(str(tmp_path / "layout"))
    digest = lay.image([(layer_tar(BASE), "gzip"), (layer_tar(TOP), "zstd")],
                       config={"Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
                               "StopSignal": "SIGRTMIN+3", "Entrypoint": ["/usr/bin/app"],
                               "Labels": {"org.opencontainers.image.title": "demo",
                                          "org.example.team": "infra"}})
    lay.close()
    return lay.path, digest.split(":")[1]


def test_layers_apply_as_the_image_spec_says(busybox_cli_root, layout) -> None:
    root = busybox_cli_root
    path, fp = layout
    res = _import(root, path, "--alias", "demo")
    assert res.returncode == 0, res.stderr
    assert _fingerprint(res) == fp  # the manifest digest
    assert "refused" in res.stderr and "/dev/sda" in res.stderr
    t = _tree(root, fp)
    assert not os.path.lexists(f"{t}/etc/gone")                   # whiteout
    assert sorted(os.listdir(f"{t}/opq")) == ["new"]              # opaque dir: lower ones gone
    assert open(f"{t}/etc/os-release").read() == "ID=test\n"
    st = os.stat(f"{t}/usr/bin/tool")
    assert st.st_mode & 0o7777 == 0o4755                          # setuid kept
    a, b = os.stat(f"{t}/usr/bin/shared"), os.stat(f"{t}/usr/bin/alias")
    assert a.st_ino == b.st_ino and (a.st_uid, a.st_gid) == (1000, 1001)  # hard link, owners
    assert os.readlink(f"{t}/link") == "/etc/os-release"          # symlink stored verbatim
    assert stat.S_ISFIFO(os.lstat(f"{t}/pipe").st_mode)
    assert os.getxattr(f"{t}/data", "user.origin") == b"layer1"
    added = os.stat(f"{t}/etc/added")
    assert (added.st_uid, added.st_mode & 0o777) == (33, 0o600)
    assert not os.path.lexists(f"{t}/dev/sda")                    # device node refused
    info = json.loads(cli_ok("image", "show", "demo", "-f", "json", root=root).stdout)
    props = info["properties"] if "properties" in info else info["metadata"]["properties"]
    assert props["org.example.team"] == "infra" and props["oci.entrypoint"] == "/usr/bin/app"
    assert props["oci.digest"] == "sha256:" + fp
    import sysmgr

    with sysmgr.Client(root=root) as client:  # what the config maps to
        meta = client.images.get("demo").metadata
    assert meta["halt_signal"] == "SIGRTMIN+3"
    assert meta["environment"] == {"PATH": "/usr/bin:/bin", "GREETING": "hello world"}


def test_oci_archive_and_docker_archive(busybox_cli_root, tmp_path, layout) -> None:
    root = busybox_cli_root
    path, fp = layout
    res = _import(root, archive(path, str(tmp_path / "img.tar")), "--alias", "from-archive")
    assert res.returncode == 0, res.stderr
    assert _fingerprint(res) == fp  # the same image, the same fingerprint
    dock = docker_archive(str(tmp_path / "docker.tar"), [layer_tar(BASE), layer_tar(TOP)],
                          config={"StopSignal": "15"})
    res = _import(root, dock, "--alias", "from-docker")
    assert res.returncode == 0, res.stderr
    t = _tree(root, _fingerprint(res))
    assert sorted(os.listdir(f"{t}/opq")) == ["new"] and not os.path.lexists(f"{t}/etc/gone")


def _refused(root: str, path: str, words: str) -> None:
    before = cli_ok("image", "list", "-f", "json", root=root).stdout
    res = _import(root, path, "--alias", "bad")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert words in res.stderr, res.stderr
    assert cli_ok("image", "list", "-f", "json", root=root).stdout == before  # nothing imported


def test_a_bad_digest_is_refused_and_nothing_is_imported(busybox_cli_root, tmp_path) -> None:
    lay = Layout(str(tmp_path / "bad"))
    lay.image([(layer_tar(BASE), "gzip"), (layer_tar(TOP), "none")])
    lay.close()
    # damage the second layer's blob (same size, other bytes)
    blobs = os.path.join(lay.path, "blobs", "sha256")
    manifest = json.load(open(os.path.join(blobs, lay.manifests[0]["digest"].split(":")[1])))
    victim = os.path.join(blobs, manifest["layers"][1]["digest"].split(":")[1])
    data = bytearray(open(victim, "rb").read())
    data[600] ^= 0xFF
    open(victim, "wb").write(bytes(data))
    _refused(busybox_cli_root, lay.path, "does not match its digest")
    pools = [e for e in os.listdir(busybox_cli_root)]
    assert pools  # the root is intact


def test_a_layer_leaving_the_root_is_refused(busybox_cli_root, tmp_path) -> None:
    lay = Layout(str(tmp_path / "evil"))
    lay.image([(layer_tar([Entry("etc", "dir"), Entry("etc/../../escaped", data=b"x")]), "gzip")])
    lay.close()
    _refused(busybox_cli_root, lay.path, "leaves the image's root")
    assert not os.path.exists(os.path.join(os.path.dirname(busybox_cli_root), "escaped"))


def test_a_symlink_from_a_layer_cannot_send_a_file_to_the_host(busybox_cli_root, tmp_path) -> None:
    outside = tmp_path / "host-dir"
    outside.mkdir()
    lay = Layout(str(tmp_path / "sly"))
    lay.image([(layer_tar([Entry("escape", "symlink", target=str(outside))]), "none"),
               (layer_tar([Entry("escape/planted", data=b"owned")]), "none")])
    lay.close()
    res = _import(busybox_cli_root, lay.path, "--alias", "sly")
    assert res.returncode == 0, res.stderr
    assert not (outside / "planted").exists()
    t = _tree(busybox_cli_root, lay.manifests[0]["digest"].split(":")[1])
    assert open(os.path.join(t, str(outside).lstrip("/"), "planted")).read() == "owned"


def test_an_index_with_two_platforms(busybox_cli_root, tmp_path) -> None:
    lay = Layout(str(tmp_path / "multi"))
    amd = lay.image([(layer_tar([Entry("arch", data=b"amd64")]), "gzip")], arch="amd64")
    arm = lay.image([(layer_tar([Entry("arch", data=b"arm64")]), "gzip")], arch="arm64")
    lay.close()
    root = busybox_cli_root
    res = _import(root, lay.path, "--platform", "linux/arm64", "--alias", "arm")
    assert res.returncode == 0, res.stderr
    assert _fingerprint(res) == arm.split(":")[1]
    assert open(os.path.join(_tree(root, _fingerprint(res)), "arch")).read() == "arm64"
    if os.uname().machine == "x86_64":  # the host's platform by default
        res = _import(root, lay.path, "--alias", "native")
        assert res.returncode == 0 and _fingerprint(res) == amd.split(":")[1], res.stderr
    res = _import(root, lay.path, "--platform", "linux/s390x")
    assert res.returncode == 2 and "linux/amd64, linux/arm64" in res.stderr, res.stderr


def test_an_image_without_init_says_how_to_give_one(busybox_cli_root, busybox_rootfs, tmp_path) -> None:
    """A busybox tree without /sbin/init: launch says so and how; --init makes it boot, and
    the config's Env is the default environment (the container's own keys win)."""
    root = busybox_cli_root
    base = tree_layer(busybox_rootfs)
    lay = Layout(str(tmp_path / "noinit"))
    lay.image([(base, "gzip"), (layer_tar([Entry("sbin/.wh.init")]), "none")],
              config={"Env": ["GREETING=hello world", "MODE=image"], "StopSignal": "SIGUSR2",
                      "Entrypoint": ["/bin/sh"]})
    lay.close()
    cli_ok("image", "import", lay.path, "--alias", "noinit", root=root)
    res = run_cli("launch", "noinit", "c1", root=root)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "no init" in res.stderr and "--init" in res.stderr and "boot.init" in res.stderr
    assert "c1" not in cli_ok("list", "-c", "n", "-f", "csv", root=root).stdout  # launch: whole or not at all
    cli_ok("launch", "noinit", "c2", "--init", "/bin/busybox init", "-c", "environment.MODE=own", root=root)
    out = cli_ok("exec", "c2", "--", "sh", "-c", 'echo "$GREETING/$MODE"', root=root).stdout
    assert out.strip() == "hello world/own"
    cli_ok("stop", "c2", "--timeout", "10", root=root)  # SIGUSR2 from StopSignal: busybox halts


def test_publish_a_container_for_oci_tooling_and_back(busybox_cli_root, tmp_path) -> None:
    """An unprivileged container (its files shifted on disk where the pool cannot idmap)
    published as an oci-archive and a layout: container owners in the layer, its init as the
    entrypoint, its halt signal and environment in the config; imported again, it boots."""
    import tarfile

    root = busybox_cli_root
    cli_ok("launch", "busybox", "p1", "-c", "environment.ROLE=web", root=root)
    cli_ok("exec", "p1", "--", "sh", "-c", "echo published > /root/marker; chown 7:8 /root/marker",
           root=root)
    res = run_cli("image", "publish", "p1", "--format", "oci", "-o", str(tmp_path / "p1.tar"),
                  root=root)
    assert res.returncode == 1 and "running" in res.stderr, res.stderr  # stop it first
    cli_ok("stop", "p1", "--timeout", "10", root=root)
    cli_ok("image", "publish", "p1", "--format", "oci", "-o", str(tmp_path / "p1.tar"), root=root)
    cli_ok("image", "publish", "p1", "--format", "oci-layout", "-o", str(tmp_path / "p1.d"), root=root)
    lay = tmp_path / "p1.d"
    index = json.load(open(lay / "index.json"))
    manifest = json.load(open(lay / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]))
    config = json.load(open(lay / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]))
    assert config["config"]["Entrypoint"] == ["/sbin/init"]
    assert config["config"]["StopSignal"] == "SIGUSR2" and "ROLE=web" in config["config"]["Env"]
    layer = lay / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(layer, "r:gz") as tf:
        m = tf.getmember("root/marker")
        assert (m.uid, m.gid) == (7, 8)                       # the container's ids, not the host's
        assert tf.extractfile(m).read() == b"published\n"
        assert tf.getmember("bin/busybox").uid == 0
    if shutil.which("skopeo"):  # an independent reader of both
        for ref in (f"oci-archive:{tmp_path / 'p1.tar'}", f"oci:{lay}"):
            out = json.loads(cli_ok_tool(["skopeo", "inspect", "--raw", ref]))
            assert out["layers"][0]["digest"] == manifest["layers"][0]["digest"]
    cli_ok("image", "import", str(tmp_path / "p1.tar"), "--alias", "from-p1", root=root)
    cli_ok("launch", "from-p1", "p2", root=root)
    out = cli_ok("exec", "p2", "--", "sh", "-c", 'cat /root/marker; stat -c %u:%g /root/marker; echo $ROLE',
                 root=root).stdout.split()
    assert out == ["published", "7:8", "web"]
    # into the store directly (LXD's publish), from a snapshot
    cli_ok("snapshot", "create", "p1", "s0", root=root)
    res = cli_ok("image", "publish", "p1/s0", "--alias", "p1-s0", root=root)
    assert "fingerprint" in res.stdout
    assert "p1-s0" in cli_ok("image", "list", root=root).stdout


def cli_ok_tool(argv: list[str]) -> str:
    import subprocess

    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode == 0, (argv, res.stderr)
    return res.stdout
