"""Shared fixtures: a fresh host root per test, and a leak check around every test.

Tests run as root against the real kernel. Each test gets its own sysmgr root directory
(``sysmgr_root``), hence its own root id and kernel-object prefix. The autouse ``leak_check``
fixture fails a test that leaves mounts, cgroups, network interfaces, loop devices or
processes behind. This pytest process makes itself a child subreaper so container inits
whose starter exited are reparented here and reaped, instead of becoming zombies under a
PID 1 that does not reap (the reference VM's does not).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `init` makes a loop-backed btrfs default pool when the host can run it; a test that wants
# one creates (and deletes) it itself, so every other root keeps a plain dir pool
os.environ.setdefault("SYSMGR_STORAGE_DRIVER", "dir")
# `init` gives root a subordinate id range in /etc/subuid and /etc/subgid when it has none:
# the tests' roots use files of this session instead of the machine's
_SUBIDS = tempfile.mkdtemp(prefix="sysmgr-test-subids-")
os.environ.setdefault("SYSMGR_SUBUID", os.path.join(_SUBIDS, "subuid"))
os.environ.setdefault("SYSMGR_SUBGID", os.path.join(_SUBIDS, "subgid"))
atexit.register(shutil.rmtree, _SUBIDS, True)
PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def reap_children() -> None:
    """Reap exited children (orphaned container inits land here)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def is_root() -> bool:
    return os.geteuid() == 0


requires_root = pytest.mark.skipif(not is_root(), reason="needs root (real kernel)")


def in_forked_child(fn: Callable[[], Any]) -> Any:
    """``fn()`` run in a forked child, which may change itself for good (a seccomp filter,
    another cgroup); returns its JSON-able result. An exception in the child fails the test."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out: dict[str, Any] = {"result": fn()}
            except BaseException as e:  # noqa: BLE001 - carried to the parent, which raises
                out = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    assert "error" not in out, f"in the forked child: {out['error']}"
    return out["result"]


# -- snapshots of kernel objects -----------------------------------------------------------

# Only what this test session made is checked (and cleaned up after a failure): other sysmgr
# roots — a user's, a benchmark's, another test run's — may work on the same machine at the
# same time. A session's roots live under its base temp dir, and their kernel objects carry
# the roots' ids.

def _root_ids(base: str) -> set[str]:
    """Ids of the sysmgr roots under ``base`` (a root is at most three levels down)."""
    ids = set()
    for pattern in ("*/root.id", "*/*/root.id", "*/*/*/root.id"):
        for path in glob.glob(os.path.join(base, pattern)):
            try:
                with open(path) as f:
                    ids.add(f.read().strip())
            except OSError:
                pass
    return {i for i in ids if i}


def _mounts(base: str) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {" ".join(line.split()[3:5]) for line in f
                if (line.split()[4] + "/").startswith(base + "/")}


def _cgroups(ids: set[str]) -> set[str]:
    found: set[str] = set()
    # v1 hierarchies, a v2 root, or the delegated scopes under systemd (sysmgr.slice)
    for d in glob.glob("/sys/fs/cgroup/*/sysmgr-*") + glob.glob("/sys/fs/cgroup/sysmgr-*"):
        if os.path.basename(d).removeprefix("sysmgr-").removesuffix(".scope") not in ids:
            continue
        found.add(d)
        for sub, dirs, _ in os.walk(d):
            found.update(os.path.join(sub, x) for x in dirs)
    return found


def _links(ids: set[str]) -> set[str]:
    try:
        out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return set()
    names = set()
    for line in out.splitlines():
        m = re.match(r"\d+: ([^:@]+)", line)
        if m and (m.group(1).startswith("sm") or "sysmgr" in m.group(1)) \
                and any(i in m.group(1) for i in ids):
            names.add(m.group(1))
    return names


def _loops(marker: str) -> set[str]:
    try:
        out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return set()
    return {line.split(":")[0] for line in out.splitlines() if marker + "/" in line}


def _procs(marker: str, prefix: str | None) -> set[str]:
    """Live (non-zombie) processes rooted under ``marker`` or in a cgroup of ``prefix``."""
    found = set()
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            if st[st.rfind(")") + 2] == "Z":
                continue
            root = os.readlink(f"/proc/{p}/root")
            cg = open(f"/proc/{p}/cgroup").read() if prefix else ""
        except OSError:
            continue
        if (root + "/").startswith(marker + "/") or (prefix and prefix in cg):
            found.add(f"{p} root={root}")
    return found


@pytest.fixture
def sysmgr_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, empty directory to use as a sysmgr host root."""
    return str(tmp_path_factory.mktemp("root"))


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if not is_root():
        yield
        return
    base = str(tmp_path_factory.getbasetemp())
    ids = _root_ids(base)
    before = (_mounts(base), _cgroups(ids), _links(ids), _loops(base))
    yield
    # give killed processes a moment to be reaped and veths to vanish
    deadline = time.monotonic() + 3
    ids = _root_ids(base)  # the roots the test made
    while True:
        reap_children()
        after = (_mounts(base), _cgroups(ids), _links(ids), _loops(base))
        procs = _procs(base, None)
        leaked = {
            "mounts": sorted(after[0] - before[0]),
            "cgroups": sorted(after[1] - before[1]),
            "links": sorted(after[2] - before[2]),
            "loop devices": sorted(after[3] - before[3]),
            "processes": sorted(procs),
        }
        leaked = {k: v for k, v in leaked.items() if v}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if leaked:
        _force_cleanup(base, leaked)
        pytest.fail(f"test leaked kernel objects: {leaked}", pytrace=False)


def _force_cleanup(base: str, leaked: dict) -> None:
    """Best effort: remove what the failed test leaked so later tests start clean."""
    for entry in leaked.get("processes", []):
        try:
            os.kill(int(entry.split()[0]), 9)
        except OSError:
            pass
    time.sleep(0.2)
    reap_children()
    for m in sorted(leaked.get("mounts", []), key=len, reverse=True):
        path = m.split()[1]
        subprocess.run(["umount", "-l", path], capture_output=True)
    for cg in sorted(leaked.get("cgroups", []), key=len, reverse=True):
        for f, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):  # v1, v2
            try:
                open(os.path.join(cg, f), "w").write(thawed)
            except OSError:
                pass
        try:
            os.rmdir(cg)
        except OSError:
            pass
    for link in leaked.get("links", []):
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    for dev in leaked.get("loop devices", []):
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@pytest.fixture
def busybox_client(sysmgr_root: str):
    """A client of a fresh root (dir pool, no network) with the busybox image ``busybox``;
    its containers are deleted afterwards."""
    import sysmgr

    c = sysmgr.Client(root=sysmgr_root)
    c.init(storage_driver="dir")
    c.images.build("busybox", alias="busybox")
    yield c
    for ct in c.containers.all():
        ct.delete(force=True)
    c.close()


def cli_ok(*args: str, root: str, input: str | None = None) -> subprocess.CompletedProcess:
    """:func:`run_cli` that must succeed (the assertion shows the command and its output)."""
    res = run_cli(*args, root=root, input=input)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


@pytest.fixture
def busybox_cli_root(sysmgr_root: str):
    """A fresh root initialised through the CLI (dir pool, no network) with the busybox image
    ``busybox``; its containers are deleted afterwards."""
    import json

    cli_ok("init", "--auto", "--storage-driver", "dir", "--network", "none", root=sysmgr_root)
    cli_ok("image", "build", "busybox", "--alias", "busybox", root=sysmgr_root)
    yield sysmgr_root
    for c in json.loads(cli_ok("list", "-f", "json", root=sysmgr_root).stdout):
        run_cli("delete", "--force", c["name"], root=sysmgr_root)


def sh(container: Any, script: str) -> tuple[int, str]:
    """``sh -c script`` in a running container: (exit code, stdout + stderr)."""
    r = container.execute(["sh", "-c", script])
    return r.exit_code, r.stdout + r.stderr


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox image rootfs built once per session (read-only template: copy before use)."""
    if not shutil.which("busybox") and not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is not installed")
    from sysmgr.drivers.images.busybox import BusyboxBuilder

    dest = str(tmp_path_factory.mktemp("busybox-image") / "rootfs")
    os.mkdir(dest)
    BusyboxBuilder().build(dest, {})
    return dest


# -- per-test network namespaces ---------------------------------------------------------------

def _ns_ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class Netns:
    """A network namespace of one test, held by ``unshare -n sleep`` (nothing mounted: it
    vanishes with its holder). sysmgr runs inside it (``run_cli(..., netns=ns)``, or every
    call on a root bound with :func:`bind_netns`), so the bridges, veths, dnsmasq and nftables
    tables of a test never touch the machine's own namespace and nothing leaves the machine.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while True:  # unshare(2) happens before the exec of sleep
            try:
                with open(f"/proc/{self.pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the namespace holder did not start"
            time.sleep(0.005)
        self.path = f"/proc/{self.pid}/ns/net"
        self.ident = _ns_ident(self.path)
        assert self.ident != _ns_ident("/proc/self/ns/net")
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def ping(self, address: str, wait: int = 1) -> bool:
        return self.run("busybox", "ping", "-c1", f"-W{wait}", address, check=False).returncode == 0

    def links(self) -> list[str]:
        out = self.run("ip", "-o", "link").stdout
        return [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)", out, re.M)]

    def strays(self) -> list[str]:
        """Processes inside other than the holder (a dnsmasq nobody stopped)."""
        found = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != self.pid and _ns_ident(f"/proc/{p}/ns/net") == self.ident:
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    found.append(f"{p} {cmd}")
                except OSError:
                    pass
        return found

    def close(self) -> list[str]:
        # only while the holder lives is the namespace ours: once it is gone, another
        # namespace (another test run's) may have been given the same inode
        strays = self.strays() if self.proc.poll() is None else []
        for entry in strays:
            try:
                os.kill(int(entry.split()[0]), 9)
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()
        return strays


_ROOT_NETNS: dict[str, Netns] = {}


def bind_netns(root: str, ns: Netns) -> None:
    """Run every later ``run_cli(..., root=root)`` inside ``ns``."""
    _ROOT_NETNS[root] = ns


@pytest.fixture
def netns():
    """A fresh network namespace; fails the test if a process (dnsmasq) is left inside."""
    if not is_root():
        pytest.skip("needs root (network namespaces)")
    ns = Netns()
    yield ns
    for root, bound in list(_ROOT_NETNS.items()):
        if bound is ns:
            del _ROOT_NETNS[root]
    strays = ns.close()
    if strays:
        pytest.fail(f"processes left inside the test's network namespace: {strays}",
                    pytrace=False)


_REMOVE_NETWORKS = """
import sys
import sysmgr

with sysmgr.Client(root=sys.argv[1]) as client:
    names = {n.name for n in client.networks.all()}
    for prof in client.profiles.all():
        nics = [d for d, dev in prof.devices.items() if dev.get("network") in names]
        if nics:
            for d in nics:
                del prof.devices[d]
            prof.save()
    for n in client.networks.all():
        n.delete()
"""


def remove_networks(root: str) -> None:
    """Delete a root's networks (stopping their dnsmasq) once its containers are gone; nics
    go from every profile first, since a network in use cannot be deleted. One process, in
    the namespace the root is bound to."""
    if not os.path.exists(os.path.join(root, "sysmgr.db")):
        return
    argv = [sys.executable, "-c", _REMOVE_NETWORKS, root]
    ns = _ROOT_NETNS.get(root)
    res = subprocess.run(ns.argv(*argv) if ns is not None else argv, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"removing the networks of {root} failed:\n{res.stderr}")


def run_cli(*args: str, root: str, input: str | None = None, check: bool = False,
            env: dict | None = None, timeout: float = 120, netns: Netns | None = None
            ) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m sysmgr``) against ``root`` (inside ``netns``, or the
    namespace the root is bound to)."""
    e = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    e.update(env or {})
    argv = [sys.executable, "-m", "sysmgr", *args]
    ns = netns or _ROOT_NETNS.get(root)
    if ns is not None:
        argv = ns.argv(*argv)
    res = subprocess.run(argv, capture_output=True, text=True,
                         input=input, env=e, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"sysmgr {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res
