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


def install_mode() -> str:
    """How the ``sysmgr`` next to this interpreter (with this environment) gets its code:
    a regular install (``pip install .``, what users get), an editable one (``pip install
    -e``), or a source checkout put first on ``PYTHONPATH``."""
    import json
    import subprocess
    import sys
    from importlib import metadata

    where = subprocess.run([sys.executable, "-c", "import sysmgr; print(sysmgr.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    package = os.path.dirname(os.path.realpath(where))
    if "site-packages" in package.split(os.sep):
        return f"regular install (pip install .) in {package}"
    try:
        url = json.loads(metadata.distribution("sysmgr").read_text("direct_url.json") or "{}")
    except metadata.PackageNotFoundError:
        url = {}
    editable = url.get("dir_info", {}).get("editable", False)
    source = url.get("url", "").removeprefix("file://")
    if editable and os.path.realpath(source) == os.path.dirname(package):
        return f"editable install (pip install -e) of {os.path.dirname(package)}"
    return f"source checkout on PYTHONPATH: {os.path.dirname(package)}"
