"""The hot verbs import what their lists say and no more: a test on imports, not on time.

A daemonless CLI pays its imports on every command: ``sysmgr exec`` in a script's loop pays for
every module its path loads. Each verb here runs through the console script's entry point
(:func:`sysmgr.cli.fast.main`) in a fresh interpreter against a real root with a running
busybox container; every sysmgr module it loaded must be on its list, every third-party
package too, and the heavy standard-library modules on its ``banned`` list must stay out. A
new import on one of these paths fails here: make it lazy (imported where it is used), or put
it on the list knowing what it costs every call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (a real container)")

#: what the entry point (fast.main) does, then the loaded modules written to argv[1]
_RUN = """\
import sys
out, args = sys.argv[1], sys.argv[2:]
from sysmgr.cli import fast
form = fast.parse(args)
if form is None:
    from sysmgr.cli.main import run
    code = run(args)
else:
    code = fast.run(form)
with open(out, "w") as f:
    f.write("\\n".join(sorted(sys.modules)))
sys.exit(code)
"""

ENTRY = {"sysmgr", "sysmgr.errors", "sysmgr.version", "sysmgr.cli", "sysmgr.cli.app",
         "sysmgr.cli.exits", "sysmgr.cli.fast", "sysmgr.cli.verbs"}
#: reading the state: the API's container manager and the engine's records
STATE = ENTRY | {
    "sysmgr.api", "sysmgr.api.backend", "sysmgr.api.base", "sysmgr.api.client",
    "sysmgr.api.containers", "sysmgr.api.local", "sysmgr.api.snapshots",
    "sysmgr.engine", "sysmgr.engine.host", "sysmgr.engine.records", "sysmgr.layout",
    "sysmgr.model", "sysmgr.model.expand", "sysmgr.state", "sysmgr.state.db",
    "sysmgr.state.locks", "sysmgr.types", "sysmgr._util", "sysmgr._util.exposure",
    "sysmgr.drivers", "sysmgr.drivers.registry"}
#: the native runtime driver (status, exec, stop) and its cgroups
RUNTIME = {
    "sysmgr.drivers.runtime", "sysmgr.drivers.runtime.base", "sysmgr.drivers.runtime.bundle",
    "sysmgr.drivers.runtime.cgroup_base", "sysmgr.drivers.runtime.cgroup_layout",
    "sysmgr.drivers.runtime.cgroup_v2", "sysmgr.drivers.runtime.cgroups",
    "sysmgr.drivers.runtime.native", "sysmgr.drivers.runtime.native.binds",
    "sysmgr.drivers.runtime.native.cgjoin", "sysmgr.drivers.runtime.native.child",
    "sysmgr.drivers.runtime.native.enter",
    "sysmgr.drivers.runtime.native.helper", "sysmgr.drivers.runtime.native.hosted",
    "sysmgr.drivers.runtime.native.plan",
    "sysmgr.drivers.runtime.native.process", "sysmgr.drivers.runtime.native.userns",
    "sysmgr._util.capabilities", "sysmgr._util.linux", "sysmgr._util.safefs",
    "sysmgr._util.seccomp"}
#: a dir pool's driver (a stopped container's files, disk usage, a start's root filesystem)
POOL = {"sysmgr.drivers.storage", "sysmgr.drivers.storage.base", "sysmgr.drivers.storage.usage",
        "sysmgr.drivers.storage.dir",
        "sysmgr.drivers.storage.tool_streams", "sysmgr._util.proc"}
#: the click command tree (verbs the fast path hands over)
CLICK_TREE = {"sysmgr.cli.main", "sysmgr.cli.commands", "sysmgr.cli.commands._common"}
#: how ``list`` and ``info`` describe containers: views, id maps, lxcfs
VIEWS = {"sysmgr.engine.views", "sysmgr.engine.idmap", "sysmgr.engine.idshift",
         "sysmgr.engine.lxcfs", "sysmgr.model.idmaps", "sysmgr.model.keyrules",
         "sysmgr._util.idshift", "sysmgr._util.sizes", "sysmgr._util.hostinfo"}
#: the key tables and what a start sets up
START = {
    "sysmgr.engine.lifecycle", "sysmgr.engine.events", "sysmgr.model.restart",
    "sysmgr.engine.confinement", "sysmgr.engine.disks", "sysmgr.engine.idmap",
    "sysmgr.engine.idshift", "sysmgr.engine.lxcfs", "sysmgr.engine.migration",
    "sysmgr.engine.migration.markers", "sysmgr.engine.reverter", "sysmgr.engine.runspec",
    "sysmgr.drivers.runtime.apparmor", "sysmgr.drivers.runtime.native.idprobe",
    "sysmgr.model.bootorder", "sysmgr.model.device_keys", "sysmgr.model.idmaps",
    "sysmgr.model.keyrules", "sysmgr.model.keys", "sysmgr.model.names",
    "sysmgr.model.pool_keys", "sysmgr.model.schedule", "sysmgr.model.suggest",
    "sysmgr.state.snapshots", "sysmgr._util.hostinfo", "sysmgr._util.idshift",
    "sysmgr._util.sizes"}

#: never on a hot verb's path: validation, YAML, rendering, networking, SSH
HEAVY = {"yaml", "cerberus", "rich", "pyroute2", "paramiko", "pygments"}
#: standard-library modules that cost milliseconds and that these paths do without (shutil
#: is not one: safefs needs it loaded, its functions run as a container's root, who may not
#: be able to read the host's Python library)
SLOW_STDLIB = {"subprocess", "uuid", "platform", "secrets", "hashlib", "tarfile",
               "difflib", "ipaddress", "concurrent", "asyncio", "email", "http", "urllib",
               "argparse", "zipfile"}

# verb -> (argv, allowed sysmgr modules, allowed third-party packages, slow stdlib allowed)
VERBS = {
    "version": (["--version"], ENTRY, set(), set()),
    "exec": (["exec", "c1", "--", "true"], STATE | RUNTIME | {"sysmgr.engine.execution"},
             set(), set()),
    "shell": (["shell", "c1"], STATE | RUNTIME | {
        "sysmgr.engine.execution", "sysmgr.engine.files", "sysmgr.engine.idshift",
        "sysmgr.model.idmaps", "sysmgr._util.idshift", "sysmgr._util.hostinfo"}, set(), set()),
    "stop": (["stop", "--force", "c2"], STATE | RUNTIME | {
        "sysmgr.engine.lifecycle", "sysmgr.engine.events", "sysmgr.model.restart"}, set(), set()),
    # the key tables, the pool's driver (its tool streams run programs)
    "start": (["start", "c2"], STATE | RUNTIME | POOL | START, set(),
              {"subprocess", "difflib", "ipaddress"}),
    # the table, the views, a dir pool's disk usage (one du over every volume)
    "list": (["list"], STATE | RUNTIME | POOL | VIEWS | {"sysmgr.cli.listing",
                                                        "sysmgr.cli.render"},
             set(), {"subprocess", "difflib"}),
    "console": (["console", "c1", "--show-log"], STATE | RUNTIME | POOL | CLICK_TREE | VIEWS | {
        "sysmgr.cli.commands.exec", "sysmgr.engine.execution", "sysmgr.engine.console"},
        {"click"}, {"subprocess", "uuid", "platform", "difflib"}),
}


def _imported(root: str, argv: list[str], tmp_path) -> set[str]:
    out = tmp_path / "modules"
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-c", _RUN, str(out), *argv], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return set(out.read_text().split())


@pytest.fixture
def running(busybox_client):
    """``c1`` running, ``c2`` stopped (the fixture deletes both)."""
    busybox_client.containers.create("c1", image="busybox", start=True)
    busybox_client.containers.create("c2", image="busybox")
    return busybox_client


def test_hot_verbs_import_only_their_lists(running, tmp_path):
    grown = {}
    for verb, (argv, allowed, third_party, slow_ok) in VERBS.items():
        mods = _imported(running.root, argv, tmp_path)
        tops = {m.split(".")[0] for m in mods}
        extra = sorted(m for m in mods if m.startswith("sysmgr") and m not in allowed)
        extra += sorted(tops - set(sys.stdlib_module_names) - {"sysmgr", "__main__",
                                                               "_distutils_hack"} - third_party)
        extra += sorted((tops & SLOW_STDLIB) - slow_ok)
        if extra:
            grown[verb] = extra
        assert not tops & HEAVY, (verb, sorted(tops & HEAVY))
    assert grown == {}, f"hot verbs import more than their lists: {grown}"


def test_the_fast_path_leaves_click_and_sqlite_alone_where_it_can(running, tmp_path):
    """--version reads no state; exec, start, stop and list never load click."""
    assert not {"click", "sqlite3", "dataclasses"} & _imported(running.root, ["--version"], tmp_path)
    for argv in (["exec", "c1", "--", "true"], ["start", "c2"], ["stop", "-f", "c2"], ["list"]):
        assert "click" not in _imported(running.root, argv, tmp_path), argv
