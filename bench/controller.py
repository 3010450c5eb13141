#!/usr/bin/env python3
"""Controller benchmark (issue 12): prints medians (never asserts).

A root with a dir pool and the busybox image; a manifest directory declaring N busybox
containers (``--containers``, 100), running. One ``sysmgr controller run --source DIR`` (its
interval an hour: only changes and SIGHUP make it reconcile) creates and starts them in its
first pass; then, in the same run:

1. **idle cost**: the controller's resident memory (VmRSS) and its CPU use over
   ``--idle`` seconds (10) with nothing to do (targets: RSS <= 40 MiB, CPU <= 1% of a core);
2. **change to applied**: one container's ``limits.memory`` rewritten in its manifest file,
   until the root's record holds it (read in this process every 10 ms): inotify, the
   debounce (0.2 s), the plan and the apply (target <= 2 s), median of ``--runs`` (5);
3. **a pass with no changes** over the N containers (SIGHUP; its duration as the controller
   records it in its status; target <= 1 s), median of ``--runs``;
4. **crash to restarted**: one container given ``boot.restart: always`` (through its
   manifest); its init killed (SIGKILL) until a new init runs (the pid in its record
   changes): the backoff of a first crash in a row (1 s) plus what the controller adds
   (target: <= 2 s + the backoff). One run: a second crash in a row would wait 2 s.

Run as root from a checkout: ``.venv/bin/python bench/controller.py [--containers N]``.
Everything is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MANIFEST = """\
kind: Container
name: {name}
image: busybox
state: running
config:
  limits.memory: {memory}
"""


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<52} {value:>12}   {note}")


def cli(root: str, *args: str) -> str:
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "sysmgr", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def write(src: str, name: str, memory: str) -> None:
    path = os.path.join(src, f"{name}.yaml")
    with open(path + ".tmp", "w") as f:
        f.write(MANIFEST.format(name=name, memory=memory))
    os.rename(path + ".tmp", path)


def status(root: str) -> dict:
    with open(os.path.join(root, "controller", "status.json")) as f:
        return json.load(f)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait(pred, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("gave up waiting")
        time.sleep(0.05)


def crash_to_restart(src: str, client, name: str) -> None:
    """One crash of a ``boot.restart: always`` container: SIGKILL of its init until a new
    init runs (the first crash in a row: a 1 s backoff)."""
    path = os.path.join(src, f"{name}.yaml")
    with open(path) as f:
        text = f.read()
    with open(path + ".tmp", "w") as f:
        f.write(text + "  boot.restart: always\n")
    os.rename(path + ".tmp", path)
    wait(lambda: client.containers.get(name).config.get("boot.restart") == "always", 30)
    old = client.containers.get(name).pid
    t = time.monotonic()
    os.kill(old, signal.SIGKILL)
    wait(lambda: client.containers.get(name).pid not in (None, old), 60)
    took = time.monotonic() - t
    row("crash to restarted (SIGKILL, boot.restart: always)", f"{took * 1000:.0f} ms",
        "target <= 2 s + the backoff (1 s for a first crash)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=10.0)
    args = ap.parse_args()
    import sysmgr

    base = tempfile.mkdtemp(prefix="sysmgr-bench-ctl-")
    root, src = os.path.join(base, "root"), os.path.join(base, "src")
    os.makedirs(src)
    proc = None
    try:
        cli(root, "init", "--auto", "--storage-driver", "dir", "--network", "none")
        cli(root, "image", "build", "busybox", "--alias", "busybox")
        names = [f"b{i:03d}" for i in range(args.containers)]
        for n in names:
            write(src, n, "64MiB")
        env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO)
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sysmgr", "controller", "run", "--source",
                                 src, "--interval", "1h"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait(lambda: os.path.exists(os.path.join(root, "controller", "status.json"))
             and status(root).get("passes", 0) >= 1)
        first = time.monotonic() - t
        print(f"sysmgr controller bench: {args.containers} busybox containers on a dir pool")
        row("first pass: create and start them all", f"{first:.1f} s")
        time.sleep(2)  # the pass's own tail (status, supervision, heap trim) is not idling
        t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
        time.sleep(args.idle)
        cpu = (cpu_ticks(proc.pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        row("idle: resident memory", f"{rss_kib(proc.pid) / 1024:.1f} MiB", "target <= 40 MiB")
        row(f"idle: CPU over {args.idle:g} s", f"{cpu * 100:.2f} %", "target <= 1% of a core")
        client = sysmgr.Client(root=root)
        lat = []
        for i in range(args.runs):
            want = f"{65 + i}MiB"
            t = time.monotonic()
            write(src, names[0], want)
            wait(lambda: client.containers.get(names[0]).config.get("limits.memory") == want, 30)
            lat.append(time.monotonic() - t)
            time.sleep(0.5)
        row("manifest change to applied (inotify)", f"{statistics.median(lat) * 1000:.0f} ms",
            "target <= 2 s; each: " + ", ".join(f"{x * 1000:.0f}" for x in lat))
        passes = []
        for _ in range(args.runs):
            n = status(root)["passes"]
            proc.send_signal(signal.SIGHUP)
            wait(lambda: status(root)["passes"] > n, 60)
            passes.append(status(root)["last"]["seconds"])
        row(f"a pass with no changes over {args.containers} containers",
            f"{statistics.median(passes) * 1000:.0f} ms",
            "target <= 1 s; each: " + ", ".join(f"{x * 1000:.0f}" for x in passes))
        crash_to_restart(src, client, names[0])
        client.close()
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        if os.path.exists(os.path.join(root, "sysmgr.db")):
            for c in json.loads(cli(root, "list", "-f", "json")):
                cli(root, "delete", "--force", c["name"])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
