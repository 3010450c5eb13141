"""A full-OS container: Debian with systemd as PID 1, built once per run with mmdebstrap.

The slowest test: it builds the image from the Debian archive (about a minute), boots systemd
to ``running`` (or ``degraded``, with the failed units shown), runs ``systemctl`` through exec,
and stops the container with systemd's halt signal.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.conftest import reap_children, requires_root

pytestmark = [requires_root, pytest.mark.slow]


@pytest.fixture(scope="module")
def debian_client(tmp_path_factory: pytest.TempPathFactory):
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed (./scripts/setup installs it)")
    import sysmgr

    root = str(tmp_path_factory.mktemp("debian-root"))
    client = sysmgr.Client(root=root)
    client.init()
    lines: list[str] = []
    client.images.build("debian", alias="debian/12", options={"release": "bookworm"},
                        progress=lines.append)
    assert lines, "the build reports progress"
    yield client
    for c in client.containers.all():
        c.delete(force=True)
    client.close()


def wait_system_running(c, timeout: float = 90.0) -> tuple[str, str]:
    """Poll ``systemctl is-system-running`` until systemd finished booting."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        res = c.execute(["systemctl", "is-system-running"])
        state = res.stdout.strip()
        if state in ("running", "degraded", "maintenance"):
            break
        time.sleep(0.2)
    failed = c.execute(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
    return state, failed


def test_debian_boots_systemd_and_stops_cleanly(debian_client):
    img = debian_client.images.get("debian/12")
    assert img.properties.get("os") == "debian"
    assert img.metadata["halt_signal"] == "SIGRTMIN+3"
    c = debian_client.containers.create("deb1", image="debian/12", start=True)
    state, failed = wait_system_running(c)
    assert state in ("running", "degraded"), f"systemd state {state!r}; failed units:\n{failed}"
    if state == "degraded":
        print(f"systemd degraded; failed units:\n{failed}")
    # systemd is PID 1, knows it is in a container, and took the container's name
    assert c.execute(["readlink", "/proc/1/exe"]).stdout.strip().endswith("systemd")
    assert c.execute(["systemd-detect-virt"]).stdout.strip() == "lxc"
    assert c.execute(["hostname"]).stdout.strip() == "deb1"
    assert c.execute(["systemctl", "is-system-running"]).exit_code in (0, 1)
    # the daily tools run without an error or a warning (dbus, a locale, the exec helper
    # outside the container's cgroup so systemctl can list every process of it)
    for argv in (["hostnamectl"], ["timedatectl"], ["loginctl"], ["systemctl", "status",
                 "--no-pager"], ["su", "-l", "-c", "echo ok"], ["locale"]):
        res = c.execute(argv)
        assert (res.exit_code, res.stderr) == (0, ""), (argv, res.exit_code, res.stderr)
    assert "Static hostname: deb1" in c.execute(["hostnamectl"]).stdout
    # the boot log: systemd's journal, read from the container's volume
    log = c.console_log()
    assert "the container's journal, last boot" in log and "systemd[1]" in log, log[-2000:]

    pid = c.refresh().pid
    assert pid
    # graceful stop: systemd's halt signal (SIGRTMIN+3) brings it down by itself, before the
    # timeout would have killed it (systemd writes nothing to a console that is a log file,
    # so the runtime's report is the evidence)
    assert c.stop(timeout=60) is True
    reap_children()
    assert c.status == "Stopped"
    assert not os.path.exists(f"/proc/{pid}/status") or \
        "Z" in open(f"/proc/{pid}/status").read().split("State:")[1][:4]
    assert "Journal stopped" in c.console_log()          # also once it stopped
    c.delete()
