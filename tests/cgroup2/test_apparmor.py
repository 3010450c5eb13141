"""AppArmor on the real kernel: each container's init and every command exec'ed in it run
under the container's own profile (``sysmgr-<root id>-<name>``), which denies what a
privileged root could otherwise do to the host (a proc mounted elsewhere, the masks over
kernel files unmounted, ``core_pattern`` and ``sysrq-trigger`` written through a fresh proc),
and the profile leaves the kernel with the container (delete, rename).

This host has no AppArmor: the tests skip here and run in the systemd guest of
``scripts/test-cgroup2`` (Debian's kernel, AppArmor on, the ``apparmor`` package installed).
Marked ``cgroup2`` for that reason. No network (the guest has none).
"""

from __future__ import annotations

import json
import os

import pytest

from sysmgr.drivers.runtime import apparmor
from tests.conftest import requires_root, run_cli

UNAVAILABLE = apparmor.unavailable_reason()
pytestmark = [pytest.mark.cgroup2, requires_root,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"AppArmor: {UNAVAILABLE}")]


def _root(sysmgr_root: str) -> str:
    """An initialised root with the busybox image; returns the profiles' prefix."""
    run_cli("init", "--auto", "--network", "none", root=sysmgr_root, check=True)
    run_cli("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root, check=True)
    with open(os.path.join(sysmgr_root, "root.id")) as f:
        return f"sysmgr-{f.read().strip()}-"


def _sh(root: str, name: str, script: str) -> tuple[int, str]:
    """Exit code and output (stderr in order with stdout) of ``script`` run in ``name``."""
    res = run_cli("exec", name, "--", "sh", "-c", f"({script}) 2>&1", root=root)
    return res.returncode, res.stdout


def _label_of_init(root: str, name: str) -> str:
    pid = json.loads(run_cli("info", name, "--format", "json", root=root, check=True).stdout)["pid"]
    with open(f"/proc/{pid}/attr/apparmor/current") as f:
        return f.read().strip()


def test_privileged_container_is_held_by_its_profile(sysmgr_root: str) -> None:
    prefix = _root(sysmgr_root)
    profile = prefix + "p1"
    run_cli("launch", "busybox", "p1", "-c", "security.privileged=true",
            "-c", "raw.apparmor=deny /etc/raw-denied w,", root=sysmgr_root, check=True)
    try:
        assert _label_of_init(sysmgr_root, "p1") == f"{profile} (enforce)"
        assert _sh(sysmgr_root, "p1", "cat /proc/self/attr/current") == (0, f"{profile} (enforce)\n")
        host = run_cli("info", root=sysmgr_root, check=True).stdout
        assert f"AppArmor: enabled: each container runs under its own profile {prefix}<name>" in host
        assert f"loaded now: {profile}" in host
        # each of these works for a privileged root without the profile
        code, out = _sh(sysmgr_root, "p1", "mkdir -p /tmp/p && mount -t proc proc /tmp/p")
        assert code != 0 and "Permission denied" in out, out
        # (the privileged seccomp filter refuses umount first, EPERM; the profile would EACCES)
        code, out = _sh(sysmgr_root, "p1", "umount /proc/sysrq-trigger; umount -l /proc/sys")
        assert out.count("Operation not permitted") + out.count("Permission denied") == 2, out
        # a fresh proc over /proc has no read-only binds: only the profile stands in the way
        code, out = _sh(sysmgr_root, "p1", "mount -t proc proc /proc && echo MOUNTED && "
                        "echo h > /proc/sysrq-trigger; cat /proc/sys/kernel/core_pattern > /tmp/cp && "
                        "cat /tmp/cp > /proc/sys/kernel/core_pattern; echo $?")
        assert "MOUNTED" in out and out.count("Permission denied") == 2 and out.endswith("1\n"), out
        # raw.apparmor went into the profile; the rest of /etc stays writable
        code, out = _sh(sysmgr_root, "p1", "echo x > /etc/raw-denied; echo x > /etc/raw-allowed && echo OK")
        assert "Permission denied" in out and "OK" in out, out
    finally:
        run_cli("delete", "--force", "p1", root=sysmgr_root, check=True)
    assert apparmor.loaded(profile) == []


def test_unprivileged_container_boots_under_its_profile_and_rename_moves_it(sysmgr_root: str) -> None:
    prefix = _root(sysmgr_root)
    run_cli("launch", "busybox", "u1", root=sysmgr_root, check=True)
    try:
        assert _label_of_init(sysmgr_root, "u1") == f"{prefix}u1 (enforce)"
        # rcS mounted its tmpfs under the profile; exec'ed commands get the profile too
        code, out = _sh(sysmgr_root, "u1", "grep -c ' /tmp tmpfs ' /proc/mounts; cat /proc/self/attr/current")
        assert (code, out) == (0, f"1\n{prefix}u1 (enforce)\n"), out
        run_cli("stop", "u1", "--force", root=sysmgr_root, check=True)
        run_cli("rename", "u1", "u2", root=sysmgr_root, check=True)
        assert apparmor.loaded(prefix + "u1") == []
        run_cli("start", "u2", root=sysmgr_root, check=True)
        assert _label_of_init(sysmgr_root, "u2") == f"{prefix}u2 (enforce)"
        # a rule the parser refuses stops the start, and the error names the profile
        run_cli("create", "busybox", "u3", "-c", "raw.apparmor=no such rule,", root=sysmgr_root, check=True)
        res = run_cli("start", "u3", root=sysmgr_root)
        assert res.returncode == 1 and f"cannot load AppArmor profile {prefix}u3" in res.stderr, res.stderr
    finally:
        for name in ("u1", "u2", "u3"):
            run_cli("delete", "--force", name, root=sysmgr_root)
    assert apparmor.loaded(prefix) == []
