"""Issue 9, item 5: the default profile keeps one container from taking the host down.

The profile ``init`` creates (and ``profiles/default.yaml``) sets ``limits.processes`` and
``limits.memory``; they are documented in the README, a container can override them, and a
fork bomb inside a container started with nothing but the default profile stops at the
limit while the host goes on forking.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import yaml

from tests.conftest import REPO, requires_root, run_cli
from tests.security.helpers import ENGINES, init_args, ok

pytestmark = requires_root

INIT = init_args()
LIMITS = {"limits.processes": "2000", "limits.memory": "50%"}


@pytest.fixture
def root(sysmgr_root: str):
    ok(*INIT, root=sysmgr_root)
    ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    try:
        yield sysmgr_root
    finally:
        for c in json.loads(ok("list", "--format", "json", root=sysmgr_root)):
            run_cli("delete", "--force", c["name"], root=sysmgr_root)


def test_default_profile_has_limits_and_they_are_documented():
    with open(os.path.join(REPO, "profiles", "default.yaml")) as f:
        doc = yaml.safe_load(f)
    assert {k: str(v) for k, v in doc["config"].items()} == LIMITS
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    for key, value in LIMITS.items():
        assert f"`{key}: {value}`" in readme or f"{key}: {value}" in readme, key


def test_init_makes_them_and_containers_override_them(root):
    prof = yaml.safe_load(ok("profile", "show", "default", root=root))
    assert {k: v for k, v in prof["config"].items() if k.startswith("limits.")} == LIMITS
    ok("create", "busybox", "small", "-c", "limits.processes=100", "-c", "limits.memory=64MiB",
       root=root)
    info = json.loads(ok("info", "small", "-f", "json", root=root))
    assert info["limits"]["limits.processes"] == "100"
    assert info["limits"]["limits.memory"] == "64MiB"
    # an existing default profile is the user's: a second init leaves an edit alone
    prof["config"]["limits.processes"] = "3000"
    ok("profile", "edit", "default", root=root, input=yaml.safe_dump(prof))
    ok(*INIT, root=root)
    prof = yaml.safe_load(ok("profile", "show", "default", root=root))
    assert str(prof["config"]["limits.processes"]) == "3000"


def _pids(root: str, name: str) -> int:
    return json.loads(ok("info", name, "-f", "json", root=root))["resources"]["processes"]


@pytest.mark.parametrize("engine", ENGINES)
def test_fork_bomb_stops_at_the_default_limit(root, engine):
    # the default profile only (and the engine)
    ok("launch", "busybox", "bomb", "-c", f"runtime.engine={engine}", root=root)
    limit = int(LIMITS["limits.processes"])
    t0 = time.monotonic()
    # forks sleepers until fork fails (EAGAIN): ash then gives up with "can't fork"
    res = run_cli("exec", "bomb", "--", "sh", "-c",
                  "while :; do sleep 600 </dev/null >/dev/null 2>&1 & done", root=root,
                  timeout=300)
    took = time.monotonic() - t0
    assert res.returncode != 0 and "can't fork" in res.stderr, (res.returncode, res.stderr[-500:])
    pids = _pids(root, "bomb")
    assert limit - 10 <= pids <= limit, pids
    # the host is fine: it forks, and the container's count stays at the limit
    host = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5; do true & done; wait; echo ok"],
                          capture_output=True, text=True, timeout=30)
    assert host.stdout.strip() == "ok"
    assert _pids(root, "bomb") <= limit
    assert took < 240, f"the bomb took {took:.0f}s to hit the limit"
