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


def install_mode() -> str:
    """How the sysmgr being measured is installed: an editable venv, a regular ``pip install
    .`` (what users get), or a source tree on ``sys.path``; and where it is imported from."""
    import importlib.metadata
    import json

    import sysmgr

    here = os.path.dirname(os.path.abspath(sysmgr.__file__))
    try:
        dist = importlib.metadata.distribution("sysmgr")
    except importlib.metadata.PackageNotFoundError:
        return f"not installed: a source tree on sys.path ({here})"
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    editable = direct.get("dir_info", {}).get("editable", False)
    how = "editable venv (pip install -e .)" if editable else "regular install (pip install .)"
    return f"{how}; sysmgr imported from {here}"


def bytecode_note() -> str:
    """A warning when the modules run from source (no .pyc written or shipped): every
    command then compiles what it imports, and CLI figures are inflated several-fold."""
    import sysmgr

    cache = os.path.join(os.path.dirname(os.path.abspath(sysmgr.__file__)), "__pycache__")
    if os.path.isdir(cache) and os.listdir(cache):
        return ""
    return "warning: no compiled bytecode next to sysmgr (PYTHONDONTWRITEBYTECODE?): " \
           "run python -m compileall on the package first"
