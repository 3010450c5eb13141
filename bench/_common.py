"""Helpers shared by the benchmark scripts in this directory (imported as ``_common``: the
scripts run as ``python bench/<name>.py``, which puts this directory on ``sys.path``)."""

from __future__ import annotations

import os
import statistics


def median_ms(samples: list[float]) -> float:
    """The median of ``samples`` (seconds), in milliseconds."""
    return statistics.median(samples) * 1000


def reap_children() -> None:
    """Reap every exited child without blocking (the container inits a benchmark stopped)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def teardown(client) -> None:
    """Remove everything a benchmark's throw-away root holds, so nothing stays mounted or
    attached: containers, then what profiles hold on pools and networks, then networks and
    pools (a loop-backed pool is unmounted and its loop device released)."""
    import sys

    steps = [c.delete for c in client.containers.all()]
    for obj in steps:
        try:
            obj(force=True)
        except Exception as e:  # keep cleaning up; say what stays
            print(f"bench: cleanup failed: {e}", file=sys.stderr)
    for p in client.profiles.all():
        if p.devices:
            p.devices = {}
            p.save()
    for n in client.networks.all():
        n.delete()
    for pool in client.storage_pools.all():
        pool.delete()


# -- what the figures are taken with, and what they are compared with -----------------------

#: LXC 5.0.2 and LXD 5.0.2 on the reference machine (../shared/anchors/lxc-lxd-baseline.md,
#: run C medians, python timer; LXC with lxcfs hooks cleared, net=empty, as LXC's intrinsic
#: cost): used when LXC is not installed here. None: the anchors have no such figure.
ANCHORS_MS = {
    # row: (LXC, LXD)
    "exec": (9.4, 33.9),           # lxc-attach -- /bin/true; lxc exec -- /bin/true
    "start": (13.5, 221.3),        # lxc-start -d + lxc-wait RUNNING; lxc start
    "stop_force": (7.3, 720.7),    # lxc-stop -k; lxc stop -f
    "stop_graceful": (2019.3, 2723.5),
    "list": (None, None),
    "version": (None, None),
}


#: run by the interpreter the CLI runs on, with its environment: what it imports is what is timed
_INSTALL = """\
import importlib.metadata, json, os, sysmgr
here = os.path.dirname(os.path.abspath(sysmgr.__file__))
try:
    direct = importlib.metadata.distribution("sysmgr").read_text("direct_url.json") or "{}"
    editable = json.loads(direct).get("dir_info", {}).get("editable", False)
    how = "editable venv (pip install -e .)" if editable else "regular install (pip install .)"
except importlib.metadata.PackageNotFoundError:
    how = "not installed (a source tree on sys.path)"
print(f"{how}; the CLI imports sysmgr from {here}")
cache = os.path.join(here, "__pycache__")
if not (os.path.isdir(cache) and os.listdir(cache)):
    print("warning: no compiled bytecode beside it (PYTHONDONTWRITEBYTECODE?): every command "
          "compiles what it imports; run python -m compileall on the package first")
"""


def install_mode(python: str) -> list[str]:
    """How the sysmgr that ``python`` (the CLI's interpreter, in this environment) imports
    is installed: an editable venv, a regular ``pip install .`` (what users get) or a source
    tree; and a warning when it has no compiled bytecode (CLI figures several-fold too high)."""
    import subprocess

    # not from this directory: ``python -c`` puts the working directory first on sys.path
    res = subprocess.run([python, "-c", _INSTALL], capture_output=True, text=True, cwd="/")
    return res.stdout.splitlines() or [f"unknown ({res.stderr.strip()})"]
