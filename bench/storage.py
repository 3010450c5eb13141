#!/usr/bin/env python3
"""Storage benchmark: prints medians over repeated runs (never asserts), btrfs beside dir.

On a throw-away host root with a btrfs loop pool and a dir pool, through the Python API
(in-process, as the engine runs it):

  - create, and launch (create + start, native runtime, unprivileged: idmapped root
    filesystem, no chown), from a 5 MB and a 300 MB image;
  - snapshot create of a container made from the 300 MB image;
  - copy of that container on the same pool;
  - export / import of it (portable tar streams and --optimized btrfs streams), in MB/s of
    root filesystem, against the raw ``btrfs send | btrfs receive`` pipe between two pools.

Targets (issue 3): on btrfs, create from the 300 MB image within 1.3x of the 5 MB one and
< 100 ms; snapshot < 20 ms; export within 1.5x of the raw pipe. Everything it creates is
deleted at the end (pools unmounted, loop devices released); it runs in a mount namespace of
its own. Run as root:
``.venv/bin/python bench/storage.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms  # noqa: E402

MB = 1000 * 1000


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<50} {value:>14}   {note}")


def make_image_dir(path: str, busybox_root: str, extra_mb: int) -> None:
    """The busybox rootfs plus ``extra_mb`` MB of incompressible files (a 'fat' image)."""
    shutil.copytree(busybox_root, path, symlinks=True)
    data = os.path.join(path, "opt", "payload")
    os.makedirs(data)
    left, i = extra_mb * MB, 0
    while left > 0:
        n = min(left, 10 * MB)
        with open(os.path.join(data, f"blob{i:03d}"), "wb") as f:
            f.write(os.urandom(n))
        left -= n
        i += 1


def tree_bytes(path: str) -> int:
    total = 0
    for d, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(d, f)).st_size
    return total


def private_mounts() -> None:
    """Run in a mount namespace of our own: the pools mounted here are invisible to (and safe
    from) other processes, and vanish with this process even if it is killed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_rec, ms_private, clone_newns = 0x4000, 0x40000, 0x20000
    if libc.unshare(clone_newns) != 0 or libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        print(f"note: no private mount namespace ({os.strerror(ctypes.get_errno())})", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="repetitions per figure (default 10)")
    ap.add_argument("--big-mb", type=int, default=300, help="size of the big image (default 300)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/storage.py: run as root (loop devices, mounts)")
    runs = max(1, args.runs)
    private_mounts()

    import sysmgr
    from sysmgr.drivers.images.busybox import BusyboxBuilder
    from sysmgr.drivers.storage.btrfs import BtrfsPool

    try:
        BtrfsPool.check_host()
    except sysmgr.SysmgrError as e:
        sys.exit(f"bench/storage.py: btrfs is not usable here: {e}")

    base = tempfile.mkdtemp(prefix="sysmgr-bench-storage-", dir="/var/tmp")
    root = os.path.join(base, "root")
    client = sysmgr.Client(root=root, runtime="fake")   # storage only: no container is started
    results: dict[str, float] = {}
    try:
        client.init(storage_driver="dir")
        bb = os.path.join(base, "busybox")
        os.mkdir(bb)
        BusyboxBuilder().build(bb, {})
        small, big = os.path.join(base, "img-5mb"), os.path.join(base, "img-big")
        make_image_dir(small, bb, 5 - tree_bytes(bb) // MB if tree_bytes(bb) < 5 * MB else 0)
        make_image_dir(big, bb, args.big_mb)
        client.images.import_(small, alias="small")
        client.images.import_(big, alias="big")
        big_bytes = tree_bytes(big)
        client.storage_pools.create("bt", "btrfs", {"size": f"{max(8, args.big_mb * 12 // 1000 + 4)}GiB"})
        client.storage_pools.create("bt2", "btrfs", {"size": f"{max(4, args.big_mb * 4 // 1000 + 2)}GiB"})
        pools = {"btrfs": "bt", "dir": "default"}
        print(f"sysmgr storage bench: {runs} runs each, images {tree_bytes(small) / MB:.1f} MB and "
              f"{big_bytes / MB:.0f} MB, on btrfs (loop file) and dir ({base})")

        # -- create from an image ----------------------------------------------------------
        print("\ncreate (launch without start), API, median:")
        for drv, pool in pools.items():
            for img in ("small", "big"):
                client.containers.create(f"warm-{img}", img, pool=pool)  # image copied into the pool once
                client.containers.get(f"warm-{img}").delete()
                samples = []
                for i in range(runs):
                    t = time.perf_counter()
                    client.containers.create(f"c{i}", img, pool=pool)
                    samples.append(time.perf_counter() - t)
                for i in range(runs):
                    client.containers.get(f"c{i}").delete()
                results[f"create {img} {drv}"] = median_ms(samples)
                row(f"{drv:<5} from the {'5 MB' if img == 'small' else f'{args.big_mb} MB'} image",
                    f"{median_ms(samples):.1f} ms")
        ratio = results["create big btrfs"] / results["create small btrfs"]
        row("btrfs: big / small", f"{ratio:.2f}x", "target <= 1.3x, and < 100 ms")

        # unprivileged (the default): the image is attached through an idmapped mount, never
        # chowned, so the big image must launch as fast as the small one (issue 9)
        print("\nlaunch (create + start of its init, native runtime, unprivileged), API, median:")
        native = sysmgr.Client(root=root)
        try:
            for drv, pool in pools.items():
                for img in ("small", "big"):
                    samples = []
                    for i in range(runs):
                        t = time.perf_counter()
                        native.containers.create(f"l{i}", img, pool=pool, start=True)
                        samples.append(time.perf_counter() - t)
                        native.containers.get(f"l{i}").delete(force=True)
                    results[f"launch {img} {drv}"] = median_ms(samples)
                    row(f"{drv:<5} from the {'5 MB' if img == 'small' else f'{args.big_mb} MB'} image",
                        f"{median_ms(samples):.1f} ms")
        finally:
            for c in native.containers.all():
                with contextlib.suppress(Exception):
                    c.delete(force=True)
            native.close()
        ratio = results["launch big btrfs"] / results["launch small btrfs"]
        row("btrfs: big / small", f"{ratio:.2f}x", "target <= 1.3x, and < 100 ms")

        # -- snapshot, copy ------------------------------------------------------------------
        print(f"\nsnapshot create / copy of a container from the {args.big_mb} MB image, median:")
        for drv, pool in pools.items():
            c = client.containers.create(f"src-{drv}", "big", pool=pool)
            samples = []
            for i in range(runs):
                t = time.perf_counter()
                c.snapshots.create(f"s{i}")
                samples.append(time.perf_counter() - t)
            for i in range(runs):
                c.snapshots.delete(f"s{i}")
            row(f"{drv:<5} snapshot create", f"{median_ms(samples):.1f} ms",
                "target < 20 ms" if drv == "btrfs" else "")
            samples = []
            for i in range(runs):
                t = time.perf_counter()
                c.copy(f"cp{i}")
                samples.append(time.perf_counter() - t)
            for i in range(runs):
                client.containers.get(f"cp{i}").delete()
            row(f"{drv:<5} copy (same pool)", f"{median_ms(samples):.1f} ms")

        # -- export / import vs raw btrfs send | receive --------------------------------------
        # interleaved (raw pipe, then each kind of backup, per round) so that all of them see
        # the same background writeback of the files written before
        print(f"\nexport / import of the {args.big_mb} MB container (MB/s of root filesystem), median:")
        # the raw pipe sends a snapshot of a copy: the exported containers have no snapshots
        c = client.containers.get("src-btrfs").copy("raw-src")
        c.snapshots.create("raw")
        snap = os.path.join(root, "storage-pools", "bt", "mnt", "snapshots", "raw-src", "raw")
        dest = os.path.join(root, "storage-pools", "bt2", "mnt", "raw")
        os.mkdir(dest)
        backups = os.path.join(base, "backups")
        os.mkdir(backups)
        kinds = (("btrfs --optimized", "src-btrfs", True, "bt2"),
                 ("btrfs portable (tar)", "src-btrfs", False, "bt2"),
                 ("dir portable (tar)", "src-dir", False, "default"))
        raws: list[float] = []
        exp: dict[str, list[float]] = {k[0]: [] for k in kinds}
        imp: dict[str, list[float]] = {k[0]: [] for k in kinds}
        sizes: dict[str, int] = {}
        for i in range(runs):
            t = time.perf_counter()
            send = subprocess.Popen(["btrfs", "send", "-q", snap], stdout=subprocess.PIPE)
            subprocess.run(["btrfs", "receive", "-q", dest], stdin=send.stdout, check=True)
            assert send.stdout is not None
            send.stdout.close()
            send.wait()
            raws.append(time.perf_counter() - t)
            subprocess.run(["btrfs", "subvolume", "delete", os.path.join(dest, "raw")], check=True,
                           capture_output=True)
            for label, src, optimized, target in kinds:
                f = os.path.join(backups, f"{src}-{optimized}.tar.zst")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f)
                t = time.perf_counter()
                client.containers.get(src).export(f, optimized=optimized)
                exp[label].append(time.perf_counter() - t)
                sizes[label] = os.path.getsize(f)
                t = time.perf_counter()
                client.containers.import_(f, name=f"imp{i}", pool=target)
                imp[label].append(time.perf_counter() - t)
                client.containers.get(f"imp{i}").delete()
        raw = statistics.median(raws)
        row("raw: btrfs send | btrfs receive (two pools)", f"{big_bytes / raw / MB:.0f} MB/s",
            f"{raw * 1000:.0f} ms")
        c.delete()
        for label, _src, optimized, _target in kinds:
            e, m = statistics.median(exp[label]), statistics.median(imp[label])
            row(f"{label}: export", f"{big_bytes / e / MB:.0f} MB/s",
                f"{e * 1000:.0f} ms, {sizes[label] / MB:.0f} MB file, {e / raw:.2f}x the raw pipe"
                + (" (target <= 1.5x)" if optimized else ""))
            row(f"{label}: import", f"{big_bytes / m / MB:.0f} MB/s", f"{m * 1000:.0f} ms, {m / raw:.2f}x")
    finally:
        with contextlib.suppress(Exception):
            for c in client.containers.all():
                c.delete(force=True)
        for p in ("bt", "bt2"):
            with contextlib.suppress(Exception):
                client.storage_pools.get(p).delete()
        client.close()
        mounted = subprocess.run(["grep", "-c", base, "/proc/self/mountinfo"], capture_output=True,
                                 text=True).stdout.strip()
        if mounted in ("", "0"):
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"warning: {base} still has mounts; not removed", file=sys.stderr)


if __name__ == "__main__":
    main()
