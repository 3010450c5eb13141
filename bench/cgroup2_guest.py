#!/usr/bin/env python3
"""The guest half of ``bench/cgroup2.py``: lifecycle medians (start, exec, stop) of busybox
containers through the native runtime, on whatever cgroup layout this (emulated) machine
has. Prints one line ``cgroup2-bench: {json}``. Run by ``scripts/test-cgroup2`` inside its
QEMU guest, never on its own: the figures only mean something beside the same run on the
other layout under the same emulation.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms, reap_children  # noqa: E402

from sysmgr.drivers.images.busybox import BusyboxBuilder  # noqa: E402
from sysmgr.drivers.runtime.base import Limits, ProcessSpec, RuntimeSpec  # noqa: E402
from sysmgr.drivers.runtime.cgroup_layout import detect_layout  # noqa: E402
from sysmgr.drivers.runtime.native import NativeRuntime  # noqa: E402


def main(runs: int = 5) -> None:
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    rt = NativeRuntime()
    rt.become_subreaper()
    base = tempfile.mkdtemp(prefix="cg2bench-")
    rootfs = os.path.join(base, "rootfs")
    os.mkdir(rootfs)
    BusyboxBuilder().build(rootfs, {})
    starts, execs, stops = [], [], []
    for i in range(runs):
        spec = RuntimeSpec(name=f"b{i}", rootfs=rootfs, runtime_dir=os.path.join(base, f"b{i}"),
                           cgroup=f"sysmgr-bench{os.getpid()}/b{i}", halt_signal=int(signal.SIGUSR2),
                           limits=Limits(memory_bytes=128 << 20, pids_max=100))
        t = time.perf_counter()
        rec = rt.start(spec)
        starts.append(time.perf_counter() - t)
        t = time.perf_counter()
        null = os.open(os.devnull, os.O_RDWR)
        rt.exec(rec, ProcessSpec(argv=("true",)), stdin=null, stdout=null, stderr=null).wait()
        os.close(null)
        execs.append(time.perf_counter() - t)
        t = time.perf_counter()
        rt.stop(rec, halt_signal=signal.SIGKILL, timeout=0, force=True)
        stops.append(time.perf_counter() - t)
        reap_children()
    layout = detect_layout()
    print("cgroup2-bench: " + json.dumps({
        "layout": layout.kind, "runs": runs, "start_ms": median_ms(starts),
        "exec_ms": median_ms(execs), "stop_ms": median_ms(stops)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
