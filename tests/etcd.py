"""etcd servers for tests: Debian's ``etcd`` started on loopback ports the test picks (never
the default 2379), data in the test's tmp directory, killed and removed by the fixtures.

``etcd_server`` gives one node; ``etcd_cluster`` three (``.kill(i)`` / ``.start(i)`` for the
fault cases: one node down keeps the quorum, two down lose it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdCluster:
    """``n`` etcd nodes on 127.0.0.1 (client and peer ports picked free)."""

    def __init__(self, base: str, n: int, tls: "Certs | None" = None,
                 netns: Any = None) -> None:
        self.base = base
        #: a test network namespace (``tests.conftest.Netns``) the nodes run in, for admin
        #: roots that live there (the SSH test hosts'); None: the machine's loopback
        self.netns = netns
        os.makedirs(base, exist_ok=True)
        self.names = [f"e{i}" for i in range(n)]
        self.client_ports = [free_port() for _ in range(n)]
        self.peer_ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.token = uuid.uuid4().hex[:12]
        self.tls = tls

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def _argv(self, i: int) -> list[str]:
        peers = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports))
        scheme = "https" if self.tls else "http"
        client = f"{scheme}://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        tls = ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
               "--client-cert-auth", "--trusted-ca-file", self.tls.ca] if self.tls else []
        return [ETCD, *tls, "--name", self.names[i], "--data-dir", f"{self.base}/{self.names[i]}",
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                "--election-timeout", "500", "--logger", "zap", "--log-outputs",
                f"{self.base}/{self.names[i]}.log"]

    def start(self, i: int) -> None:
        env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": ""}
        argv = self.netns.argv(*self._argv(i)) if self.netns else self._argv(i)
        self.procs[i] = subprocess.Popen(argv, stdout=subprocess.DEVNULL,  # nsenter execs etcd
                                         stderr=subprocess.DEVNULL, env=env)

    def start_all(self) -> None:
        for i in range(len(self.names)):
            self.start(i)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        if self.netns:
            return self._wait_healthy_in_netns(timeout)
        from sysmgr.state.etcd import TLS, EtcdClient

        tls = TLS(self.tls.ca, self.tls.client_cert, self.tls.client_key) if self.tls else None
        client = EtcdClient([e for i, e in enumerate(self.endpoints) if self.procs[i]], tls)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.get("/health-probe")  # linearizable: needs the quorum
                client.close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _wait_healthy_in_netns(self, timeout: float) -> None:
        """etcdctl from inside the namespace (a linearizable read: needs the quorum)."""
        argv = self.netns.argv("etcdctl", "--endpoints", ",".join(self.endpoints),
                               "--dial-timeout", "1s", "get", "/health-probe")
        deadline = time.monotonic() + timeout
        while subprocess.run(argv, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}
                             ).returncode != 0:
            assert time.monotonic() < deadline, "etcd did not answer in its namespace"
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.procs[i] = None

    def close(self) -> None:
        for i in range(len(self.names)):
            self.kill(i)
        shutil.rmtree(self.base, ignore_errors=True)


class Certs:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate
    (openssl), for an etcd that wants client certificates."""

    def __init__(self, d: str) -> None:
        self.ca, ca_key = f"{d}/ca.pem", f"{d}/ca.key"
        self.server_cert, self.server_key = f"{d}/server.pem", f"{d}/server.key"
        self.client_cert, self.client_key = f"{d}/client.pem", f"{d}/client.key"
        self._run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                  "/CN=sysmgr-test-ca", "-keyout", ca_key, "-out", self.ca)
        for cert, key, cn, ext in (
                (self.server_cert, self.server_key, "127.0.0.1",
                 "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                (self.client_cert, self.client_key, "sysmgr-admin",
                 "extendedKeyUsage=clientAuth")):
            with open(f"{key}.ext", "w") as f:
                f.write(ext + "\n")
            self._run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                      "-keyout", key, "-out", f"{key}.csr")
            self._run("x509", "-req", "-in", f"{key}.csr", "-CA", self.ca, "-CAkey", ca_key,
                      "-CAcreateserial", "-days", "1", "-extfile", f"{key}.ext", "-out", cert)

    @staticmethod
    def _run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True)


def _make(tmp_path_factory: pytest.TempPathFactory, n: int, *, tls: bool = False
          ) -> Iterator[EtcdCluster]:
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (scripts/setup installs etcd-server)")
    if tls and not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    certs = Certs(str(tmp_path_factory.mktemp("certs"))) if tls else None
    cluster = EtcdCluster(str(tmp_path_factory.mktemp("etcd")), n, tls=certs)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd node on loopback (a fresh data directory)."""
    yield from _make(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def module_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd node shared by a module's tests (each uses its own cluster id)."""
    yield from _make(tmp_path_factory, 1)


@pytest.fixture
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd node that speaks TLS and wants a client certificate (``.tls``: the files)."""
    yield from _make(tmp_path_factory, 1, tls=True)


@pytest.fixture
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three etcd nodes on loopback."""
    yield from _make(tmp_path_factory, 3)
