#!/usr/bin/env python3
"""cgroup-v2 run figures: what ``scripts/test-cgroup2`` costs, and how sysmgr's lifecycle
compares on cgroup v2 and on this host's v1 (hybrid) layout **under the same emulation**.

1. Runs ``scripts/test-cgroup2`` (both guests) and prints, from its ``cgroup2-time:`` stamps,
   each guest's boot-to-first-test and total time and the whole run's time.
2. Boots the initramfs guest twice more with ``bench/cgroup2_guest.py`` instead of pytest:
   once on cgroup v2, once with v1 hierarchies mounted like this host's. Start, exec and
   stop medians are printed with the v2/v1 ratio. The guest runs under TCG emulation, so
   its milliseconds are never compared with native ones (``bench/lifecycle.py`` measures
   those); only the ratio between the two layouts, same kernel, same emulator, is meaningful.

Run as root: ``.venv/bin/python bench/cgroup2.py [--skip-tests] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "test-cgroup2")


def run_script(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    res = subprocess.run([SCRIPT, *args], cwd=REPO, env=dict(os.environ, **(env or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def stamps(output: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^cgroup2-time: (\S+) ([0-9.]+)$", output, re.M)}


def test_figures() -> None:
    code, out = run_script("all")
    t = stamps(out)
    print(f"scripts/test-cgroup2 (exit {code}):")
    for kind in ("initramfs", "systemd"):
        if f"{kind}-boot" in t and f"{kind}-end" in t:
            first = t.get(f"{kind}-first-test")
            boot = f"{first - t[f'{kind}-boot']:6.1f} s" if first else "     -  "
            print(f"  {kind:<10} guest: boot to first test {boot}, "
                  f"whole guest {t[f'{kind}-end'] - t[f'{kind}-boot']:6.1f} s")
    if "script-start" in t and "script-end" in t:
        print(f"  whole v2 run (setup, cache checks, both guests): {t['script-end'] - t['script-start']:.1f} s")


def lifecycle(layout: str, runs: int) -> dict[str, float] | None:
    env = {"SYSMGR_CG2_RUN": f"python bench/cgroup2_guest.py {runs}"}
    if layout == "hybrid":
        env["SYSMGR_CG2_LAYOUT"] = "hybrid"
    _, out = run_script("initramfs", env=env)
    m = re.search(r"^cgroup2-bench: (\{.*\})$", out, re.M)
    if not m:
        print(f"  ({layout} guest gave no figures)\n{out[-2000:]}", file=sys.stderr)
        return None
    return json.loads(m.group(1))


def lifecycle_figures(runs: int) -> None:
    v2 = lifecycle("unified", runs)
    v1 = lifecycle("hybrid", runs)
    if not (v1 and v2):
        return
    print(f"lifecycle in the TCG guest, medians of {runs} (ratio = v2 / v1, same kernel and emulation):")
    for key, name in (("start_ms", "start"), ("exec_ms", "exec true"), ("stop_ms", "forced stop")):
        print(f"  {name:<12} v2 {v2[key]:8.1f} ms   v1 (hybrid) {v1[key]:8.1f} ms   "
              f"ratio {v2[key] / v1[key]:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-tests", action="store_true", help="only the lifecycle ratios")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cgroup2.py: run as root")
    if not args.skip_tests:
        test_figures()
    lifecycle_figures(args.runs)


if __name__ == "__main__":
    main()
