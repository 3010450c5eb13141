"""The cgroup side of the CLI on the real kernel, on the host's layout (v1 hybrid here; v2,
with and without systemd, in the guests of ``scripts/test-cgroup2``): ``init`` and ``info``
name the layout, limits apply at launch and live, ``info`` counts OOM kills, ``delete``
leaves no cgroup. No network (the guest kernel has no bridge module loaded)."""

from __future__ import annotations

import glob
import json
import time

import pytest

from sysmgr.drivers.runtime.cgroup_layout import detect_layout
from tests.conftest import requires_root, run_cli

pytestmark = [pytest.mark.cgroup2, requires_root]

LAYOUT = detect_layout()


def test_launch_limits_live_change_oom_info_and_delete(sysmgr_root: str) -> None:
    out = run_cli("init", "--auto", "--network", "none", root=sysmgr_root, check=True).stdout
    assert "cgroups: cgroup v" in out
    host = json.loads(run_cli("info", "--format", "json", root=sysmgr_root, check=True).stdout)
    assert host["cgroups"]["layout"] == LAYOUT.kind
    assert host["cgroups"]["delegated"] == (LAYOUT.kind == "unified" and LAYOUT.systemd)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    run_cli("launch", "busybox", "c1", "-c", "limits.memory=32MiB", "-c", "limits.memory.swap=false",
            "-c", "limits.processes=40", root=sysmgr_root, check=True)
    try:
        run_cli("config", "set", "c1", "limits.cpu.allowance=20ms/100ms", root=sysmgr_root, check=True)
        hog = run_cli("exec", "c1", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1",
                      root=sysmgr_root)
        assert hog.returncode == 137
        info = json.loads(run_cli("info", "c1", "--format", "json", root=sysmgr_root, check=True).stdout)
        assert info["status"] == "Running"
        assert info["resources"]["oom_kills"] >= 1
        assert info["limits"]["limits.cpu.allowance"] == "20ms/100ms"
        text = run_cli("info", "c1", root=sysmgr_root, check=True).stdout
        assert "OOM kills:" in text
    finally:
        run_cli("delete", "--force", "c1", root=sysmgr_root, check=True)
    subtree = host["cgroups"]["subtree"].replace("<controller>", "*")
    deadline = time.monotonic() + 10  # under systemd, systemd removes the emptied scope
    while glob.glob(subtree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert glob.glob(subtree) == []
