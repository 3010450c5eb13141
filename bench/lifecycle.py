#!/usr/bin/env python3
"""Lifecycle benchmark: prints medians (never asserts) beside LXC's and LXD's figures.

Through the CLI (the way every user and script meets sysmgr: one process per command, its
start-up and imports included), on a throw-away host root with busybox containers
(unprivileged, the default; no nic), the rows of issue 14 that are not networking:
  - ``sysmgr exec NAME -- true``
  - ``sysmgr start NAME`` (no nic; returns once init runs)
  - ``sysmgr stop --force NAME``
  - ``sysmgr list`` with ``--list-size`` (100) running containers
  - ``sysmgr --version``
and in-process (the API, no start-up), for reference: start until init runs (unprivileged
and privileged, in pairs), graceful and forced stop, exec.

Each row prints sysmgr's median, its target, LXC's figure with the ratio, and LXD's anchor
with the ratio. LXC is measured in the same run on the same rootfs when ``lxc-start`` is
installed (hooks cleared, no network); otherwise its figure is the anchor measured on the
reference machine (../shared/anchors/lxc-lxd-baseline.md), as LXD's always is. The output
says how sysmgr is installed (an editable venv, or ``pip install .`` as users get it) and
which command line was timed. The timer is a blocking ``subprocess.run`` (no timeout:
``Popen.wait(timeout=...)`` polls with back-off and skews millisecond figures).

Run as root: ``.venv/bin/python bench/lifecycle.py [--runs N] [--list-size N]``.
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
import tomllib
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import (  # noqa: E402
    ANCHORS_MS, install_mode, median_ms, reap_children, teardown as teardown_root)

#: issue 14's targets through the CLI (medians, 2-core VM)
TARGETS_MS = {"exec": 35, "start": 60, "stop_force": 30, "list": 150, "version": 50}


def timed(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None,
          teardown: Callable[[], object] | None = None) -> list[float]:
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


def cli_command() -> tuple[list[str], str, str]:
    """The command line that runs sysmgr: the console script beside this interpreter when
    it enters where this source tree says (``[project.scripts]``), else ``python -m sysmgr``
    (a stale editable install's script still enters the old way); a note saying which; and
    the interpreter it runs on."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        wanted = tomllib.load(f)["project"]["scripts"]["sysmgr"]
    script = os.path.join(os.path.dirname(sys.executable), "sysmgr")
    try:
        with open(script) as f:
            text = f.read()
    except OSError:
        text = ""
    module, _, func = wanted.partition(":")
    if f"from {module} import {func}" in text:
        python = text.splitlines()[0].removeprefix("#!").strip() or sys.executable
        return [script], f"{script} (console script, entry point {wanted})", python
    why = "its entry point is stale: pip install -e . again" if text else "none installed"
    return ([sys.executable, "-m", "sysmgr"],
            f"{sys.executable} -m sysmgr (console script: {why})", sys.executable)


def make_cli(argv0: list[str], root: str) -> Callable[..., None]:
    env = dict(os.environ, SYSMGR_ROOT=root)

    def cli(*args: str) -> None:
        # in the root, not here: ``python -m`` puts the working directory first on sys.path
        subprocess.run([*argv0, *args], env=env, cwd=root, stdout=subprocess.DEVNULL,
                       check=True)

    return cli


def lxc_same_run(rootfs: str, runs: int) -> dict[str, float]:
    """Start, attach, kill and --version of LXC on the same busybox rootfs (lxcfs hooks
    cleared, no network), when ``lxc-start`` is installed; {} otherwise."""
    if not shutil.which("lxc-start"):
        return {}
    base = tempfile.mkdtemp(prefix="sysmgr-bench-lxc-")
    name = "smbench"
    args = ["-n", name, "-P", base]
    try:
        os.makedirs(f"{base}/{name}")
        with open(f"{base}/{name}/config", "w") as f:
            f.write(f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
                    "lxc.signal.halt = SIGUSR2\nlxc.tty.max = 0\nlxc.apparmor.profile = unconfined\n"
                    "lxc.include = /usr/share/lxc/config/common.conf\nlxc.hook.mount =\nlxc.hook.post-stop =\n")
        run = lambda *a: subprocess.run(list(a), check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        start = lambda: (run("lxc-start", *args, "-d"), run("lxc-wait", *args, "-s", "RUNNING"))  # noqa: E731
        kill = lambda: run("lxc-stop", "-k", *args)  # noqa: E731
        out = {"start": median_ms(timed(start, runs, teardown=kill)),
               "stop_force": median_ms(timed(kill, runs, setup=start)),
               "version": median_ms(timed(lambda: run("lxc-start", "--version"), runs))}
        start()
        out["exec"] = median_ms(timed(lambda: run("lxc-attach", *args, "--", "/bin/true"), runs))
        kill()
        return out
    finally:
        subprocess.run(["lxc-stop", "-k", *args], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def in_process(client, runs: int) -> dict[str, float]:
    """The API's own figures (no process start-up): start in unprivileged/privileged pairs
    (the ratio taken pair by pair, so a drifting machine moves both sides alike), graceful
    and forced stop, exec."""
    from sysmgr.engine import lifecycle

    host = client.host
    c = client.containers.get("bench")
    p = client.containers.create("bench-priv", image="busybox",
                                 config={"security.privileged": "true"})
    stop = lambda name: (lifecycle.stop(host, name, force=True), reap_children())  # noqa: E731
    pairs = []
    for _ in range(runs):
        pairs.append([timed(lambda: lifecycle.start(host, n), 1, teardown=lambda: stop(n))[0]
                      for n in ("bench", "bench-priv")])
    r = {"start": median_ms([a for a, _ in pairs]), "start_priv": median_ms([b for _, b in pairs]),
         "start_ratio": statistics.median(a / b for a, b in pairs)}
    r["stop_graceful"] = median_ms(timed(
        lambda: (lifecycle.stop(host, "bench", timeout=10), reap_children()), max(3, runs // 4),
        setup=lambda: lifecycle.start(host, "bench")))  # ~2 s each: busybox init's poweroff
    r["stop_force"] = median_ms(timed(lambda: stop("bench"), runs,
                                      setup=lambda: lifecycle.start(host, "bench")))
    for name, obj, key in (("bench", c, "exec"), ("bench-priv", p, "exec_priv")):
        lifecycle.start(host, name)
        time.sleep(0.2)
        r[key] = median_ms(timed(lambda: obj.execute(["true"]), runs))
        stop(name)
    p.delete(force=True)
    return r


def through_cli(client, cli: Callable[..., None], runs: int, list_size: int) -> dict[str, float]:
    """The rows of the issue's table, each command a process of its own."""
    from sysmgr.engine import containers, lifecycle

    host = client.host
    stop = lambda: (lifecycle.stop(host, "bench", force=True), reap_children())  # noqa: E731
    start = lambda: lifecycle.start(host, "bench")  # noqa: E731
    r = {"start": median_ms(timed(lambda: cli("start", "bench"), runs, teardown=stop)),
         "stop_force": median_ms(timed(lambda: (cli("stop", "--force", "bench"), reap_children()),
                                       runs, setup=start))}
    start()
    time.sleep(0.2)
    r["exec"] = median_ms(timed(lambda: cli("exec", "bench", "--", "true"), runs))
    stop()
    r["version"] = median_ms(timed(lambda: cli("--version"), runs))
    names = [f"l{i:03d}" for i in range(list_size)]
    try:
        for n in names:
            client.containers.create(n, image="busybox", start=True)
        r["list"] = median_ms(timed(lambda: cli("list"), max(5, runs // 2)))
        r["list_fast"] = median_ms(timed(lambda: cli("list", "--fast"), max(5, runs // 2)))
    finally:
        for n in names:
            if host.store.has_container(n):
                containers.delete_container(host, n, force=True)
        reap_children()
    return r


#: the least any exec or stop in a container needs from Python: the state (sqlite3), setns and
#: clone3 (ctypes), the fd passing of a terminal (socket), signals and waiting
MINIMAL_STDLIB = ("os", "sys", "sqlite3", "ctypes", "socket", "struct", "signal", "select",
                  "fcntl", "errno", "json")


def floors(python: str, root: str, runs: int) -> dict[str, float]:
    """What CPython alone costs before sysmgr's own code runs, measured here: the interpreter
    (``python -c pass``, site included as the console script has it) and, for each hot verb,
    the interpreter plus the standard-library and C modules that verb loads (read from its
    ``-X importtime`` list; sysmgr's own modules left out). No Python CLI can go below it."""
    env = dict(os.environ, SYSMGR_ROOT=root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bare = lambda *code: subprocess.run([python, "-c", *code], env=env, cwd=root, check=True)  # noqa: E731
    out = {"interpreter": median_ms(timed(lambda: bare("pass"), runs)),
           "minimal": median_ms(timed(lambda: bare("import " + ", ".join(MINIMAL_STDLIB)), runs))}
    for row, args in (("exec", ["exec", "bench", "--", "true"]), ("stop_force", ["stop", "--force", "bench"])):
        trace = subprocess.run([python, "-X", "importtime", "-m", "sysmgr", *args], env=env, cwd=root,
                               capture_output=True, text=True).stderr
        mods = [line.rsplit("|", 1)[1].strip() for line in trace.splitlines()
                if line.startswith("import time:") and "|" in line]
        stdlib = sorted({m for m in mods if m and not m.startswith(("sysmgr", "import time"))
                         and m.split(".")[0] in sys.stdlib_module_names})
        out[row] = median_ms(timed(lambda: bare("import " + ", ".join(stdlib)), runs))
    return out


def compare(name: str, ms: float, target: str, lxc: float | None, lxc_src: str,
            lxd: float | None) -> None:
    def vs(other: float | None) -> str:
        return f"{other:8.1f} ms {ms / other:6.2f}x" if other else f"{'-':>11} {'':7}"

    print(f"  {name:<38} {ms:8.1f} ms  {target:>9}   LXC {vs(lxc)} {lxc_src:<10} LXD {vs(lxd)}")


def report(args, cli_note: tuple[str, str], cli: dict[str, float], api: dict[str, float],
           lxc: dict[str, float], floor: dict[str, float]) -> None:
    src = "(this run)" if lxc else "(anchor)"
    lxc_of = lambda row: lxc.get(row) if lxc else ANCHORS_MS[row][0]  # noqa: E731
    print(f"sysmgr lifecycle benchmark: medians of {args.runs} runs, busybox containers, no nic")
    note, python = cli_note
    for line in install_mode(python):
        print(f"  install: {line}")
    print(f"  command: {note}")
    print(f"  LXC: {'measured in this run (lxcfs hooks cleared)' if lxc else 'not installed here: anchors of the reference machine'}; "
          "LXD 5.0.2: anchors (../shared/anchors/lxc-lxd-baseline.md)")
    print(f"\n  {'through the CLI':<38} {'sysmgr':>11}  {'target':>9}")
    rows = (("exec", "exec NAME -- true"), ("start", "start NAME (no nic)"),
            ("stop_force", "stop --force NAME"), ("list", f"list ({args.list_size} running)"),
            ("version", "--version"))
    for row, label in rows:
        compare(label, cli[row], f"<= {TARGETS_MS[row]} ms", lxc_of(row), src, ANCHORS_MS[row][1])
    compare(f"list --fast ({args.list_size} running)", cli["list_fast"], "", None, "", None)
    print(f"\n  {'in-process (the API, for reference)':<38}")
    compare("start until init runs", api["start"], "", lxc_of("start"), src, None)
    compare("  privileged start", api["start_priv"], "", lxc_of("start"), src, None)
    print(f"  {'  unprivileged / privileged start':<38} {api['start_ratio']:8.2f}x     <= 1.2x (median of pairs)")
    compare("graceful stop (busybox poweroff)", api["stop_graceful"], "",
            ANCHORS_MS["stop_graceful"][0], "(anchor)", ANCHORS_MS["stop_graceful"][1])
    compare("forced stop", api["stop_force"], "", lxc_of("stop_force"), src, None)
    compare("exec true", api["exec"], "", lxc_of("exec"), src, None)
    compare("  privileged exec true", api["exec_priv"], "", lxc_of("exec"), src, None)
    print(f"\n  {'the floor of any Python CLI (no sysmgr code)':<38}")
    print(f"  {'python -c pass':<38} {floor['interpreter']:8.1f} ms")
    print(f"  {'  + the least stdlib a verb needs':<38} {floor['minimal']:8.1f} ms   ({', '.join(MINIMAL_STDLIB)})")
    for row, label in (("exec", "exec"), ("stop_force", "stop --force")):
        own = cli[row] - floor[row] - api[row]
        print(f"  {'  + the stdlib ' + label + ' loads':<38} {floor[row]:8.1f} ms   "
              f"(+ in-process {api[row]:.1f} ms = {floor[row] + api[row]:.1f} ms; sysmgr's imports "
              f"and set-up: {own:.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--list-size", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap container inits we stop

    import sysmgr

    argv0, note, python = cli_command()
    root = tempfile.mkdtemp(prefix="sysmgr-bench-")
    client = sysmgr.Client(root=root)
    try:
        client.init()
        client.images.build("busybox", alias="busybox")
        client.containers.create("bench", image="busybox")
        cli = through_cli(client, make_cli(argv0, root), args.runs, args.list_size)
        api = in_process(client, args.runs)
        from sysmgr.engine import lifecycle

        lifecycle.start(client.host, "bench")  # the traces run exec, then stop --force on it
        floor = floors(python, root, args.runs)
        reap_children()
        lxc = lxc_same_run(client.host.pool_driver("default").container_path("bench"), args.runs)
    finally:
        teardown_root(client)
        client.close()
        shutil.rmtree(root, ignore_errors=True)
    report(args, (note, python), cli, api, lxc, floor)


if __name__ == "__main__":
    main()
