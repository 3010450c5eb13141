"""Test hosts: a small cluster on this machine, each member a network namespace with its
own sshd and its own sysmgr root (the ``test_cluster`` fixture; ``bench/cluster.py`` too).

Network design. Nothing is added to the machine's own network namespace:

- a *switch* namespace holds the test bridge ``br0`` with the admin's address ``.1`` of a
  private /24 (checked against the machine's addresses and routes; since everything lives
  in namespaces of this cluster, two clusters may even use the same subnet at once);
- each member is a namespace of its own with a veth to the bridge (``eth0``, address
  ``.11``, ``.12``...), its own ``sshd`` (Debian's openssh-server, listening on that address
  only, a throw-away ed25519 host key, the test's authorized key) and its own sysmgr root,
  initialised with ``sysmgr init`` through its sshd (dir storage, no network: fast);
- the admin side lives in the switch namespace: CLI runs and ``ssh`` go through
  ``nsenter --net`` (:meth:`TestCluster.argv`, :meth:`TestCluster.cli`), and code in the
  test process enters it for a ``with cluster.admin():`` block (``setns`` of the calling
  thread only: sockets made in the block belong to the switch namespace and keep working
  after it; threads started inside it inherit it).

The alternative, a ``sysmgr``-prefixed bridge in the machine's namespace, would have been
simpler for the admin side but puts an interface and a /24 where other software lives.

The member's ``sysmgr`` command is a wrapper (``MemberSpec.sysmgr``) that runs this
checkout's ``.venv/bin/sysmgr`` with this checkout first on ``PYTHONPATH`` and the test
environment sshd does not pass on (dir storage, the session's subordinate id files).
Everything is cleaned up by :meth:`TestCluster.close`: containers, images and pools
(loop-file pools release their loop devices) on every member, every process in each
namespace (sshd and its sessions), the namespaces (taking their veths and the bridge with
them). The roots stay under pytest's temp dir for the leak check.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

from sysmgr.types import MemberSpec
from tests.conftest import REPO, Netns

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

SSHD_CONFIG = """\
Port 22
ListenAddress {address}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the keys live under a world-writable temp dir
StrictModes no
PrintMotd no
PrintLastLog no
MaxSessions 64
LogLevel ERROR
"""

WRAPPER = """\
#!/bin/sh
# sysmgr of this checkout, with the test environment sshd does not pass on
export PYTHONPATH={repo}
export SYSMGR_STORAGE_DRIVER=dir
export SYSMGR_SUBUID={subuid}
export SYSMGR_SUBGID={subgid}
exec {sysmgr} "$@"
"""


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 that no address or route of this machine's namespace touches."""
    used = []
    for argv in (["ip", "-o", "-4", "addr"], ["ip", "-4", "route"]):
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        for word in out.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and ("/" in word or word.count(".") == 3):
                    used.append(ipaddress.ip_network(word, strict=False))
    for third in range(200, 256):
        net = ipaddress.ip_network(f"10.251.{third}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.251.x.0/24 for the test hosts")


def _sysmgr_command() -> str:
    venv = os.path.join(REPO, ".venv", "bin", "sysmgr")
    return venv if os.path.exists(venv) else f"{sys.executable} -m sysmgr"


def keygen(path: str, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (+ ``.pub``); its SHA256 fingerprint."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, capture_output=True)
    out = subprocess.run(["ssh-keygen", "-l", "-f", path + ".pub"], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


class TestMember:
    """One member: its namespace, address, sshd, host key and sysmgr root."""

    __test__ = False  # not a pytest class

    def __init__(self, cluster: "TestCluster", index: int) -> None:
        self.cluster = cluster
        self.name = f"m{index}"
        self.address = str(cluster.subnet.network_address + 10 + index)
        self.dir = os.path.join(cluster.dir, self.name)
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.dir)
        self.ns = Netns()
        self.sshd: subprocess.Popen | None = None
        self.host_key = keygen(os.path.join(self.dir, "ssh_host_ed25519_key"), self.name)
        with open(os.path.join(self.dir, "sshd_config"), "w") as f:
            f.write(SSHD_CONFIG.format(address=self.address, dir=self.dir,
                                       authorized=cluster.authorized_keys))
        self.sysmgr = os.path.join(self.dir, "sysmgr")
        write_script(self.sysmgr, WRAPPER.format(
            repo=REPO, sysmgr=_sysmgr_command(), subuid=os.environ.get("SYSMGR_SUBUID", ""),
            subgid=os.environ.get("SYSMGR_SUBGID", "")))

    @property
    def url(self) -> str:
        return f"ssh://root@{self.address}"

    def spec(self, **overrides: object) -> MemberSpec:
        """How the admin reaches this member (the test's key, this checkout's sysmgr)."""
        values: dict = dict(name=self.name, url=self.url, root=self.root,
                            key=self.cluster.key, sysmgr=self.sysmgr)
        values.update(overrides)
        return MemberSpec(**values)

    def plug(self) -> None:
        """A veth from the bridge into this member's namespace, addressed and up."""
        sw = self.cluster.switch
        sw.run("ip", "link", "add", f"v{self.name}", "type", "veth", "peer", "name", "eth0",
               "netns", str(self.ns.pid))
        sw.run("ip", "link", "set", f"v{self.name}", "master", "br0", "up")
        self.ns.run("ip", "addr", "add", f"{self.address}/{self.cluster.subnet.prefixlen}",
                    "dev", "eth0")
        self.ns.run("ip", "link", "set", "eth0", "up")

    def start_sshd(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        with open(os.path.join(self.dir, "sshd.log"), "ab") as log:
            self.sshd = subprocess.Popen(self.ns.argv("/usr/sbin/sshd", "-D", "-e", "-f",
                                                      os.path.join(self.dir, "sshd_config")),
                                         stderr=log)
        self.cluster.wait_port(self.address, 22, self.sshd)

    def stop_sshd(self) -> None:
        """Stop the listening sshd (sessions already open live on)."""
        if self.sshd is not None:
            self.sshd.terminate()
            self.sshd.wait(10)
            self.sshd = None

    def ssh_argv(self, *command: str) -> list[str]:
        """OpenSSH's client running ``command`` on the member, from the admin namespace."""
        return self.cluster.argv(
            "ssh", "-q", "-i", self.cluster.key, "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.cluster.fixture_known_hosts}",
            "-o", "StrictHostKeyChecking=yes", f"root@{self.address}", *command)

    def run_sysmgr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """This checkout's sysmgr on the member's root, run inside its namespace but not
        through its sshd (so it works while sshd is down)."""
        return subprocess.run(self.ns.argv(self.sysmgr, "--root", self.root, *args),
                              capture_output=True, text=True, timeout=timeout)

    def create_btrfs_pool(self, name: str, size: str = "1GiB") -> str:
        """A btrfs pool on a loop file of ``size`` (deleted by :meth:`close` or
        :meth:`clear`); the path of its mount, readable from here."""
        res = self.run_sysmgr("storage", "create", name, "btrfs", f"size={size}")
        assert res.returncode == 0, f"pool {name} on {self.name}: {res.stdout}{res.stderr}"
        return self.pool_path(name)

    def pool_path(self, pool: str) -> str:
        """Where a loop-file pool of the member is mounted (its volumes under it)."""
        return os.path.join(self.root, "storage-pools", pool, "mnt")

    def pids(self, word: str) -> list[int]:
        """Processes in the member's namespace whose command line holds ``word``."""
        found = []
        for entry in self.ns.strays():
            pid, _, cmd = entry.partition(" ")
            if word in cmd:
                found.append(int(pid))
        return found

    def kill_sshd(self) -> None:
        """SIGKILL the member's sshd and every session it runs (as if sshd died with the
        member's network end): open connections break, new ones are refused."""
        if self.sshd is not None:
            self.sshd.kill()
            self.sshd.wait(10)
            self.sshd = None
        for pid in self.pids("sshd"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.clear(pools=True)
        self.stop_sshd()
        self.ns.close()  # kills whatever still runs inside (sessions), then the namespace

    def clear(self, *, pools: bool = False) -> None:
        """Delete every container of the member (a move's mark cleared first: a test may
        have left one half-moved), and with ``pools`` its images and every pool but
        ``default`` (so loop-file pools release their loop devices)."""
        if not os.path.exists(os.path.join(self.root, "root.id")):
            return
        res = subprocess.run(self.ns.argv(sys.executable, "-c", _CLEAR, self.root,
                                          "1" if pools else ""),
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
        assert res.returncode == 0, f"clearing {self.name} failed: {res.stderr}"


_CLEAR = """\
import sys, sysmgr
from sysmgr.engine.migration import markers

with sysmgr.Client(root=sys.argv[1]) as c:
    for x in c.containers.all():
        with c.host.locked():
            markers.set_marker(c.host, x.name, None)
        x.delete(force=True)
    if sys.argv[2]:
        for i in c.images.all():
            i.delete()
        for p in c.storage_pools.all():
            if p.name != "default":
                p.delete()
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(")") + 2] != "Z"


def write_script(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


class TestCluster:
    """A switch namespace with a bridge, the admin's key and root, and members on it."""

    __test__ = False

    def __init__(self, base: str) -> None:
        self.dir = base
        self.subnet = free_subnet()
        self.admin_address = str(self.subnet.network_address + 1)
        self.admin_root = os.path.join(base, "admin")
        os.makedirs(os.path.join(self.admin_root, "cluster"), mode=0o700)
        self.known_hosts = os.path.join(self.admin_root, "cluster", "known_hosts")
        # OpenSSH's, for the fixture's own use (init) and the benchmark's comparison
        self.fixture_known_hosts = os.path.join(base, "known_hosts")
        self.key = os.path.join(base, "admin_key")
        keygen(self.key, "sysmgr-test-admin")
        self.authorized_keys = os.path.join(base, "authorized_keys")
        with open(self.key + ".pub") as src, open(self.authorized_keys, "w") as dst:
            dst.write(src.read())
        self.members: list[TestMember] = []
        self.switch = Netns()
        self.switch.run("ip", "link", "add", "br0", "type", "bridge")
        self.switch.run("ip", "addr", "add", f"{self.admin_address}/{self.subnet.prefixlen}",
                        "dev", "br0")
        self.switch.run("ip", "link", "set", "br0", "up")

    def add_member(self, *, trust: bool = True, init: bool = True) -> TestMember:
        """A new member: namespace, veth, sshd; its host key in the admin's known_hosts
        (``trust``) and its root initialised through its sshd (``init``)."""
        m = TestMember(self, len(self.members) + 1)
        self.members.append(m)
        m.plug()
        m.start_sshd()
        self.trust(m, self.fixture_known_hosts)  # the fixture's own ssh always knows it
        if trust:
            self.trust(m)
        if init:
            res = subprocess.run(m.ssh_argv(m.sysmgr, "--root", m.root, "init", "--auto",
                                            "--storage-driver", "dir", "--network", "none"),
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, f"init of {m.name} over ssh failed: {res.stderr}"
        return m

    def trust(self, m: TestMember, known_hosts: str | None = None) -> None:
        """Put the member's host key in the admin root's known_hosts (or ``known_hosts``)."""
        with open(os.path.join(m.dir, "ssh_host_ed25519_key.pub")) as f:
            kind, blob = f.read().split()[:2]
        with open(known_hosts or self.known_hosts, "a") as f:
            f.write(f"{m.address} {kind} {blob}\n")

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run from the admin's side (the switch namespace)."""
        return self.switch.argv(*argv)

    def cli(self, *args: str, root: str | None = None, input: str | None = None,
            timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """This checkout's CLI on the admin side (default root: the admin root; ``env``:
        more environment, e.g. ``SYSMGR_FAULT``)."""
        return subprocess.run(self.cli_argv(*args), env=self.cli_env(root, env), input=input,
                              capture_output=True, text=True, timeout=timeout)

    def cli_argv(self, *args: str) -> list[str]:
        """The argv of :meth:`cli` (for a run in the background: ``subprocess.Popen``)."""
        return self.argv(sys.executable, "-m", "sysmgr", *args)

    def cli_env(self, root: str | None = None, more: dict[str, str] | None = None
                ) -> dict[str, str]:
        return dict(os.environ, SYSMGR_ROOT=root or self.admin_root, PYTHONPATH=REPO,
                    NO_COLOR="1", **(more or {}))

    @contextlib.contextmanager
    def admin(self) -> Iterator[None]:
        """Run the block's network code from the admin side (this thread only)."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.switch.path)
            try:
                yield
            finally:
                if _libc.setns(back, CLONE_NEWNET) != 0:  # pragma: no cover
                    raise OSError(ctypes.get_errno(), "cannot return to the test's namespace")
        finally:
            os.close(back)

    def wait_port(self, address: str, port: int, proc: subprocess.Popen,
                  limit: float = 15) -> None:
        """Until something listens on ``address:port`` (seen from the admin side)."""
        deadline = time.monotonic() + limit
        with self.admin():
            while True:
                try:
                    socket.create_connection((address, port), timeout=0.5).close()
                    return
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"nothing listens on {address}:{port} "
                                           f"(exit status {proc.poll()})") from None
                    time.sleep(0.02)

    def mux_pids(self) -> dict[str, int]:
        """The live muxes of the admin root: socket name -> pid (found in /proc: asking
        a mux on its socket would count as use and keep it from idling out)."""
        found = {}
        for p in os.listdir("/proc"):
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "sysmgr.remote.mux" in argv and self.admin_root in argv and _alive(int(p)):
                found[os.path.basename(argv[argv.index(self.admin_root) + 1])] = int(p)
        return found

    def kill_muxes(self) -> None:
        """End the admin root's muxes (kept member connections) and wait for them."""
        for pid in self.mux_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def close(self) -> None:
        self.kill_muxes()
        for m in reversed(self.members):
            m.close()
        self.switch.close()
