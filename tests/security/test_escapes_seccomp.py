"""Issue 9, rows 4, 5, 6 and the seccomp half of 8: each attack run as root inside a real
busybox container launched with the defaults, asserted to fail; and the capability sets
inside equal the explicit default set (``security.capabilities.add`` gives one back).

The attacks are a small C program (``escape_probe.c``) built static with the system gcc at
test time and pushed into the container with ``container.files.put``: inside, only busybox
exists. It prints ``name=errno`` per attempt (0 = the attack worked).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from sysmgr._util import capabilities
from sysmgr.drivers.runtime import bundle
from tests.conftest import requires_root
from tests.security.helpers import ENGINES, use_engine

pytestmark = [requires_root]

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    out = str(tmp_path_factory.mktemp("probe") / "escape_probe")
    res = subprocess.run(["gcc", "-static", "-O1", "-o", out, os.path.join(HERE, "escape_probe.c")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot build a static helper: {res.stderr.strip()[-300:]}")
    with open(out, "rb") as f:
        return f.read()


@pytest.fixture(scope="module", params=ENGINES)
def client(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A root whose containers start under each runtime engine in turn."""
    if not shutil.which("busybox") and not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    import sysmgr

    c = sysmgr.Client(root=str(tmp_path_factory.mktemp("sec-root")))
    c.init()
    c.images.build("busybox", alias="busybox")
    use_engine(c, request.param)
    yield c
    c.close()


@pytest.fixture
def launch(client, probe, request: pytest.FixtureRequest):
    """Start a busybox container (the defaults, plus ``config``) with the probe inside."""
    made = []

    def start(config: dict[str, str] | None = None):
        name = f"sec{len(made)}-{request.node.name[5:20]}".replace("_", "-").strip("-")
        ct = client.containers.create(name, "busybox", config=config or {}, start=True)
        made.append(ct)
        ct.files.put("/probe", probe, mode=0o755)
        return ct

    yield start
    for ct in made:
        ct.delete(force=True)


def run_probe(ct) -> dict[str, int]:
    res = ct.execute(["/probe"])
    assert res.exit_code == 0, res.stderr
    return {k: int(v) for k, v in (line.split("=") for line in res.stdout.split())}


def status(ct) -> dict[str, str]:
    res = ct.execute(["cat", "/proc/1/status"])
    assert res.exit_code == 0, res.stderr
    return {k: v.strip() for k, _, v in (line.partition(":") for line in res.stdout.splitlines())}


def expected_caps(add: tuple[str, ...] = (), *, privileged: bool = False) -> int:
    """The default set (all but :data:`bundle.DEFAULT_DROPPED`) plus ``add``. A privileged
    container gets them as far as this test process holds them (a launcher cannot hand out
    what it lacks); an unprivileged one, the default, holds them in its own user namespace."""
    dropped = set(bundle.DROPPED_CAPABILITIES) - {capabilities.oci_name(a) for a in add}
    keep = capabilities.mask([c for c in bundle.ALL_CAPABILITIES if c not in dropped])
    if not privileged:
        return keep
    with open("/proc/self/status") as f:
        held = int(next(line for line in f if line.startswith("CapPrm:")).split()[1], 16)
    return keep & held


MODES = pytest.mark.parametrize("mode", [{}, {"security.privileged": "true"}],
                                ids=["unprivileged", "privileged"])


@MODES
def test_open_by_handle_at_cannot_reach_the_host(launch, mode) -> None:
    """Rows 4 and 5: a handle through the bind-mounted /dev/console (the host's ext4 root)
    or on the cgroup2 kernfs (the host's cgroup root, release_agent) is never opened, with
    or without a user namespace."""
    got = run_probe(launch(mode))
    for tag in ("console", "cgroup"):
        assert got[f"{tag}_open_own_handle"] == errno.EPERM, got
        assert got[f"{tag}_open_forged_handle"] == errno.EPERM, got


def test_open_by_handle_at_stays_denied_with_dac_read_search_given_back(launch) -> None:
    """The capability alone is not the only wall: seccomp still refuses the call."""
    got = run_probe(launch({"security.capabilities.add": "dac_read_search"}))
    assert got["console_open_forged_handle"] == errno.EPERM
    assert got["cgroup_open_forged_handle"] == errno.EPERM


@MODES
def test_kernel_log_and_keyring_are_out_of_reach(launch, mode) -> None:
    """Row 6: dmesg (CAP_SYSLOG dropped) and the host's keyrings (keyctl/add_key denied)."""
    ct = launch(mode)
    got = run_probe(ct)
    assert got["syslog_size_unread"] == errno.EPERM
    assert got["keyctl_user_keyring"] == errno.EPERM
    assert got["add_key"] == errno.EPERM
    with open("/proc/sys/kernel/dmesg_restrict") as f:
        if f.read().strip() == "1":
            res = ct.execute(["dmesg"])
            assert res.exit_code != 0 and "not permitted" in res.stderr, res


@MODES
def test_tiocsti_cannot_type_into_a_terminal(launch, mode) -> None:
    """Row 8, the seccomp half: TIOCSTI on a pty fails even with CAP_SYS_ADMIN kept."""
    assert run_probe(launch(mode))["tiocsti"] == errno.EPERM


def test_capability_sets_inside_are_the_explicit_default(launch) -> None:
    ct = launch()
    st = status(ct)
    keep = expected_caps()
    for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(st[field], 16) == keep, (field, st[field], f"{keep:016x}")
    assert int(st["CapBnd"], 16) & ~keep == 0
    assert st["Seccomp"] == "2" and int(st["Seccomp_filters"]) >= 1
    # an exec'd process has the same sets and the same filter (read from its own status)
    res = ct.execute(["cat", "/proc/self/status"])
    own = {k: v.strip() for k, _, v in (line.partition(":") for line in res.stdout.splitlines())}
    assert int(own["CapEff"], 16) == keep and own["Seccomp"] == "2"


def test_security_capabilities_add_gives_one_back(launch) -> None:
    # unprivileged (the default): the capability is back, but it is the container's user
    # namespace's; the host's kernel log wants it in the host's, so it stays out of reach
    ct = launch({"security.capabilities.add": "syslog"})
    st = status(ct)
    assert int(st["CapEff"], 16) == expected_caps(("syslog",))
    assert int(st["CapEff"], 16) >> capabilities.NUMBERS["syslog"] & 1
    assert run_probe(ct)["syslog_size_unread"] != 0
    # privileged: the capability is the host's, as asked for
    priv = launch({"security.capabilities.add": "syslog", "security.privileged": "true"})
    st = status(priv)
    assert int(st["CapEff"], 16) == expected_caps(("syslog",), privileged=True)
    assert run_probe(priv)["syslog_size_unread"] == 0
