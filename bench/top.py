#!/usr/bin/env python3
"""``sysmgr top`` benchmark: CPU per frame with N running containers (issue 15: <= 200 ms
with 100). Prints medians (never asserts).

A frame is what the live view does every ``--refresh`` seconds, in one process (the view
runs in one): one sample through the API (``containers.all(usage=True, counters=True)``:
every container's cgroup figures, root volume usage, nic counters), the rates against the
previous sample, the sort, and the rich table rendered (to a buffer, as wide as a terminal).
CPU is this process's user + system time plus its children's (a pool may run a tool), from
``getrusage``; the wall time is printed beside it.

Throw-away root with busybox containers on the default pool (``init()``: btrfs on a loop
file when the host can, else dir); ``--nics`` gives each a nic on a bridge (a network of
the root's own, in the host's namespace) so the counters' netlink dump is in the frame.

Run as root: ``.venv/bin/python bench/top.py [--containers 100] [--frames 15] [--nics]``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms, reap_children, teardown  # noqa: E402

TARGET_MS = 200.0


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def frames(client, count: int) -> tuple[list[float], list[float], list]:
    """(CPU seconds, wall seconds) of ``count`` frames, and the rows of the last one."""
    from rich.console import Console

    from sysmgr.cli import top

    console = Console(file=io.StringIO(), width=140, force_terminal=True)
    cpu, wall, before, rows = [], [], None, []
    for _ in range(count):
        c0, w0 = cpu_seconds(), time.perf_counter()
        now = top.take_sample(client)
        rows = top.sort_rows(top.frame(before, now), "cpu")
        console.print(top.rich_table(rows, "cpu", 2.0, now.unreachable))
        cpu.append(cpu_seconds() - c0)
        wall.append(time.perf_counter() - w0)
        console.file = io.StringIO()
        before = now
        time.sleep(0.2)  # a little between frames, as the live view has (rates need time)
    return cpu, wall, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--nics", action="store_true", help="each container gets a nic on a bridge")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    import sysmgr

    root = tempfile.mkdtemp(prefix="sysmgr-bench-top-")
    client = sysmgr.Client(root=root)
    try:
        client.init(network="sysmgrbr0" if args.nics else None)
        client.images.build("busybox", alias="busybox")
        names = [f"t{i:03d}" for i in range(args.containers)]
        t0 = time.perf_counter()
        for n in names:
            client.containers.create(n, image="busybox", start=True)
        print(f"started {len(names)} containers in {time.perf_counter() - t0:.1f} s "
              f"(pool {client.storage_pools.all()[0].driver}, nics: {'yes' if args.nics else 'no'})")
        frames(client, 2)  # warm: imports, the network driver, page cache
        cpu, wall, last = frames(client, args.frames)
        rows, with_nic = len(last), sum(r.now.rx_bytes is not None for r in last)
        cpu_ms, wall_ms = median_ms(cpu), median_ms(wall)
        print(f"top frame, {rows} containers ({with_nic} with nic counters): CPU median {cpu_ms:.1f} ms "
              f"(target <= {TARGET_MS:.0f} ms: {'ok' if cpu_ms <= TARGET_MS else 'MISSED'}), "
              f"wall median {wall_ms:.1f} ms, {args.frames} frames")
    finally:
        teardown(client)
        client.close()
        reap_children()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
