#!/usr/bin/env python3
"""Lifecycle benchmark: prints medians (never asserts) beside LXC's figures when available.

Measures on a throw-away host root, with busybox containers (unprivileged: the default):
  - start until init has been exec'ed, in-process (API) and through the CLI; start and exec of
    the same container privileged beside it (the user namespace and idmapped mount's cost)
  - graceful stop (busybox poweroff) and forced stop
  - ``sysmgr exec NAME -- true`` round trip through the CLI
  - ``sysmgr list`` with 50 running containers
  - CLI cold start (``sysmgr --version``)
When ``lxc-start`` is installed, the same rootfs is started with LXC in the same run and the
ratio is printed. Run as root: ``.venv/bin/python bench/lifecycle.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms, reap_children, teardown as teardown_root  # noqa: E402

# LXC 5.0.2 figures measured on the reference machine (../shared/anchors), used when lxc-start
# is not installed here.
ANCHOR_MS = {"start": 13.5, "stop_graceful": 2019.3, "stop_force": 7.3, "exec": 9.4}


def timed(fn, runs: int, setup=None, teardown=None) -> list[float]:
    out = []
    for _ in range(runs):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if teardown:
            teardown()
    return out


def cli(root: str, *args: str) -> None:
    # a blocking wait without timeout: Popen.wait(timeout=...) polls with back-off and skews ms figures
    env = dict(os.environ, SYSMGR_ROOT=root)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "sysmgr"), *args], env=env,
                   stdout=subprocess.DEVNULL, check=True)


def row(name: str, ms: float, target: str = "", anchor: float | None = None, anchor_src: str = "") -> None:
    ratio = f"{ms / anchor:5.2f}x {anchor_src} ({anchor:.1f} ms)" if anchor else ""
    print(f"  {name:<42} {ms:9.1f} ms   {target:<10} {ratio}")


def lxc_anchor(rootfs: str, runs: int) -> dict[str, float]:
    """Start/stop the same busybox rootfs with LXC (hooks cleared, no network)."""
    if not shutil.which("lxc-start"):
        return {}
    base = tempfile.mkdtemp(prefix="sysmgr-bench-lxc-")
    name = "smbench"
    try:
        os.makedirs(f"{base}/{name}")
        with open(f"{base}/{name}/config", "w") as f:
            f.write(f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
                    "lxc.signal.halt = SIGUSR2\nlxc.tty.max = 0\nlxc.apparmor.profile = unconfined\n"
                    "lxc.include = /usr/share/lxc/config/common.conf\nlxc.hook.mount =\nlxc.hook.post-stop =\n")
        args = ["-n", name, "-P", base]
        start = timed(lambda: (subprocess.run(["lxc-start", *args, "-d"], check=True),
                               subprocess.run(["lxc-wait", *args, "-s", "RUNNING"], check=True)),
                      runs, teardown=lambda: subprocess.run(["lxc-stop", "-k", *args], check=True))
        subprocess.run(["lxc-start", *args, "-d"], check=True)
        execs = timed(lambda: subprocess.run(["lxc-attach", *args, "--", "/bin/true"], check=True), runs)
        subprocess.run(["lxc-stop", "-k", *args], check=True)
        return {"start": median_ms(start), "exec": median_ms(execs)}
    finally:
        subprocess.run(["lxc-stop", "-k", "-n", name, "-P", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--list-size", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap container inits we stop

    import sysmgr
    from sysmgr.engine import containers, lifecycle

    root = tempfile.mkdtemp(prefix="sysmgr-bench-")
    client = sysmgr.Client(root=root)
    results: dict[str, float] = {}
    try:
        client.init()
        client.images.build("busybox", alias="busybox")
        c = client.containers.create("bench", image="busybox")
        host = client.host

        # unprivileged and privileged starts of the same image taken in turn (A B A B ...), so
        # the ratio is taken pair by pair and a drifting machine moves both sides alike
        p = client.containers.create("bench-priv", image="busybox",
                                     config={"security.privileged": "true"})
        pairs = []
        for _ in range(args.runs):
            pair = []
            for name in ("bench", "bench-priv"):
                pair.append(timed(lambda: lifecycle.start(host, name), 1, teardown=lambda: (
                    lifecycle.stop(host, name, force=True), reap_children()))[0])
            pairs.append(pair)
        results["start"] = median_ms([a for a, _ in pairs])
        results["start_priv"] = median_ms([b for _, b in pairs])
        results["start_ratio"] = statistics.median(a / b for a, b in pairs)
        results["start_cli"] = median_ms(timed(lambda: cli(root, "start", "bench"), args.runs,
                                               teardown=lambda: (lifecycle.stop(host, "bench", force=True), reap_children())))
        graceful_runs = max(3, args.runs // 4)  # ~2 s each: busybox init's poweroff sequence
        results["stop_graceful"] = median_ms(timed(lambda: (lifecycle.stop(host, "bench", timeout=10), reap_children()),
                                                   graceful_runs, setup=lambda: lifecycle.start(host, "bench")))
        results["stop_force"] = median_ms(timed(lambda: (lifecycle.stop(host, "bench", force=True), reap_children()),
                                                args.runs, setup=lambda: lifecycle.start(host, "bench")))
        lifecycle.start(host, "bench")
        time.sleep(0.2)
        results["exec_api"] = median_ms(timed(lambda: c.execute(["true"]), args.runs))
        results["exec_cli"] = median_ms(timed(lambda: cli(root, "exec", "bench", "--", "true"), args.runs))
        lifecycle.stop(host, "bench", force=True)
        reap_children()
        # the same container privileged (no user namespace, no idmapped mount): side by side
        lifecycle.start(host, "bench-priv")
        time.sleep(0.2)
        results["exec_api_priv"] = median_ms(timed(lambda: p.execute(["true"]), args.runs))
        lifecycle.stop(host, "bench-priv", force=True)
        reap_children()
        results["version"] = median_ms(timed(lambda: cli(root, "--version"), args.runs))

        names = [f"l{i:02d}" for i in range(args.list_size)]
        for n in names:
            client.containers.create(n, image="busybox", start=True)
        results["list"] = median_ms(timed(lambda: cli(root, "list"), max(5, args.runs // 2)))
        for n in names:
            containers.delete_container(host, n, force=True)
        reap_children()
        rootfs = host.pool_driver("default").container_path("bench")
        anchor = lxc_anchor(rootfs, args.runs)
    finally:
        teardown_root(client)
        client.close()
        shutil.rmtree(root, ignore_errors=True)

    src = "lxc (this run)" if anchor else "lxc 5.0.2 (anchors)"
    a = anchor or ANCHOR_MS
    print(f"sysmgr lifecycle benchmark: medians, {args.runs} runs, busybox image")
    row("start until init runs (in-process)", results["start"], "< 50 ms", a.get("start"), src)
    print(f"  {'  unprivileged / privileged start':<42} {results['start_ratio']:9.2f}x      <= 1.2x  (median of pairs)")
    row("  privileged start (in-process)", results["start_priv"], "", a.get("start"), src)
    row("start through the CLI", results["start_cli"], "< 150 ms", a.get("start"), src)
    row("graceful stop (busybox poweroff)", results["stop_graceful"], "", ANCHOR_MS["stop_graceful"], "lxc 5.0.2 (anchors)")
    row("forced stop", results["stop_force"], "", ANCHOR_MS["stop_force"], "lxc 5.0.2 (anchors)")
    row("exec true (API, in-process)", results["exec_api"], "", a.get("exec"), src)
    row("  privileged exec true (API, in-process)", results["exec_api_priv"], "", a.get("exec"), src)
    row("exec true round trip through the CLI", results["exec_cli"], "< 120 ms", a.get("exec"), src)
    row(f"sysmgr list with {args.list_size} running", results["list"], "< 250 ms")
    row("CLI cold start (sysmgr --version)", results["version"], "< 100 ms")


if __name__ == "__main__":
    main()
