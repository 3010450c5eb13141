#!/usr/bin/env python3
"""OCI benchmark: prints medians (never asserts), sysmgr beside the reference tools.

Import (issue 16): a 2-layer OCI image of about 100 MB (a busybox rootfs plus files, gzip
layers, written here with tests/oci_images.py), imported by ``sysmgr image import`` through
the CLI from the layout directory and from the same image as an oci-archive, each run into a
dir pool and deleted again, and unpacked by ``umoci unpack`` (Debian's umoci) from the same
layout in the same run, pair by pair. Both check every blob's digest and apply the layers
with whiteouts; umoci also writes an mtree manifest of the result, sysmgr records the image.

Start (issue 16, part 3): the same unprivileged busybox container (its own copy of the image
each, on a dir pool, no nic) under each runtime engine (``runtime.engine``: native, crun,
runc), started through the API (``Container.start``, in this process) and through the CLI
(``sysmgr start NAME``, a process of its own), each start returning once init runs, and
stopped with ``--force`` between runs (untimed). The engines take turns within each run, so
a drifting machine moves them alike. An engine whose program is not installed is left out.

Run as root: ``.venv/bin/python bench/oci.py [--runs N] [--size-mb N] [--only import|start]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import install_mode, median_ms, reap_children, teardown as teardown_root  # noqa: E402

from tests.oci_images import Entry, Layout, archive, layer_tar, tree_layer  # noqa: E402


def _payload(mb: int, seed: int) -> list[Entry]:
    """Files of ``mb`` MiB, 4 MiB each, of random bytes: the archive is as large as the
    files (gzip gains nothing), as the issue's "100 MB OCI archive" asks."""
    out = [Entry(f"data{seed}", "dir", mode=0o755)]
    for i in range(mb // 4):
        out.append(Entry(f"data{seed}/f{i:03d}", data=os.urandom(4 << 20)))
    return out


def build_image(where: str, rootfs: str, size_mb: int) -> tuple[str, str]:
    """The 2-layer image as a layout (ref ``bench``) and as an oci-archive."""
    lay = Layout(os.path.join(where, "layout"))
    lay.image([(_with(rootfs, size_mb * 3 // 5), "gzip"),
               (layer_tar(_payload(size_mb * 2 // 5, 2) + [Entry("data1/.wh.f000")]), "gzip")])
    lay.manifests[-1]["annotations"] = {"org.opencontainers.image.ref.name": "bench"}
    lay.close()
    return lay.path, archive(lay.path, os.path.join(where, "image.tar"))


def _with(rootfs: str, mb: int) -> bytes:
    """Layer 1: the busybox rootfs and ``mb`` MiB of files."""
    import io
    import tarfile

    base = tree_layer(rootfs)
    extra = layer_tar(_payload(mb, 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for part in (base, extra):
            with tarfile.open(fileobj=io.BytesIO(part)) as tf:
                for m in tf:
                    out.addfile(m, tf.extractfile(m) if m.isreg() else None)
    return buf.getvalue()


def du_mb(path: str) -> float:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_size
    return total / 1e6


def import_rows(args: argparse.Namespace, work: str) -> dict[str, list[float]]:
    """sysmgr's import (layout, archive) and umoci's unpack, in turn, ``args.runs`` times."""
    import sysmgr

    root = os.path.join(work, "root")
    client = sysmgr.Client(root=root)
    client.init(storage_driver="dir")  # the API makes no network unless asked
    client.images.build("busybox", alias="busybox")
    rootfs = client.host.pool_driver("default").image_path(client.images.get("busybox").fingerprint)
    layout, arch = build_image(work, rootfs, args.size_mb)
    print(f"  image: 2 gzip layers, {os.path.getsize(arch) / 1e6:.0f} MB as an oci-archive, "
          f"{args.size_mb} MiB of files")
    env = dict(os.environ, SYSMGR_ROOT=root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cli = [os.path.join(os.path.dirname(sys.executable), "sysmgr")]
    times: dict[str, list[float]] = {"layout": [], "archive": [], "umoci": []}
    try:
        for _ in range(args.runs):
            for key, src in (("layout", layout), ("archive", arch)):
                t = time.perf_counter()
                subprocess.run([*cli, "image", "import", src, "--alias", "b"], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[key].append(time.perf_counter() - t)
                subprocess.run([*cli, "image", "delete", "b"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
            if shutil.which("umoci"):
                bundle = os.path.join(work, "bundle")
                t = time.perf_counter()
                subprocess.run(["umoci", "unpack", "--image", f"{layout}:bench", bundle], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times["umoci"].append(time.perf_counter() - t)
                shutil.rmtree(bundle)
    finally:
        teardown_root(client)
        client.close()
    return times


ENGINES = ("native", "crun", "runc")


def start_rows(args: argparse.Namespace, work: str) -> dict[str, dict[str, list[float]]]:
    """Start of the same container under each engine, through the API and the CLI."""
    import sysmgr
    from sysmgr.drivers.runtime.native import NativeRuntime

    NativeRuntime.become_subreaper()  # the inits are reparented here and reaped
    root = os.path.join(work, "start-root")
    client = sysmgr.Client(root=root)
    client.init(storage_driver="dir")
    client.images.build("busybox", alias="busybox")
    engines = [e for e in ENGINES if client.host.engine(e).unavailable_reason() is None]
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO)  # this checkout's sysmgr
    cli = [os.path.join(os.path.dirname(sys.executable), "sysmgr")]
    times = {e: {"api": [], "cli": []} for e in engines}
    try:
        cts = {e: client.containers.create(f"s-{e}", "busybox", config={"runtime.engine": e})
               for e in engines}
        for e in engines:  # a first start each: ids shifted on disk, the probe cached
            cts[e].start()
            cts[e].stop(force=True)
        for _ in range(args.runs):
            for e in engines:
                t = time.perf_counter()
                cts[e].start()
                times[e]["api"].append(time.perf_counter() - t)
                cts[e].stop(force=True)
                reap_children()
                t = time.perf_counter()
                subprocess.run([*cli, "start", f"s-{e}"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                times[e]["cli"].append(time.perf_counter() - t)
                subprocess.run([*cli, "stop", "--force", f"s-{e}"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                reap_children()
    finally:
        teardown_root(client)
        client.close()
        reap_children()
    return times


def print_starts(t: dict[str, dict[str, list[float]]]) -> None:
    engines = list(t)
    print(f"\n  {'start of the busybox container':<34}" + "".join(f"{e:>12}" for e in engines))
    for key, label in (("api", "through the API (in-process)"), ("cli", "through the CLI (sysmgr start)")):
        print(f"  {label:<34}" + "".join(f"{median_ms(t[e][key]):9.0f} ms" for e in engines))


def print_imports(t: dict[str, list[float]]) -> None:
    um = statistics.median(t["umoci"]) * 1000 if t["umoci"] else None
    print(f"\n  {'import of the image':<44} {'sysmgr':>10}  {'umoci unpack':>12}  ratio")
    for key, label in (("layout", "image import LAYOUT_DIR (CLI)"),
                       ("archive", "image import ARCHIVE.tar (CLI)")):
        ms = median_ms(t[key])
        ratio = f"{ms / um:5.2f}x" if um else "  (umoci not installed)"
        print(f"  {label:<44} {ms:8.0f} ms  {um or 0:10.0f} ms  {ratio}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--only", choices=("import", "start"), help="one group of rows only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    print(f"sysmgr OCI benchmark: medians of {args.runs} runs")
    for line in install_mode(sys.executable):
        print(f"  install: {line}")
    work = tempfile.mkdtemp(prefix="sysmgr-bench-oci-")
    try:
        if args.only != "start":
            print_imports(import_rows(args, work))
        if args.only != "import":
            print_starts(start_rows(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
