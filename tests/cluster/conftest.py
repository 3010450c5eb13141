"""Fixtures for cluster tests: ``test_cluster``, a factory of test hosts (network
namespaces with their own sshd and sysmgr root, on a bridge of their own; see
:mod:`tests.cluster.hosts` for the network design)."""

from __future__ import annotations

import shutil
from typing import Callable, Iterator

import pytest

from tests.cluster.hosts import TestCluster
from tests.conftest import is_root


def _missing() -> str | None:
    if not is_root():
        return "needs root (network namespaces, sshd)"
    for tool in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "nsenter", "ip"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/setup installs openssh-server)"
    try:
        import paramiko  # noqa: F401
    except ImportError:
        return "paramiko is not installed (scripts/setup installs it)"
    return None


def _factory(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Callable[..., TestCluster]]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    made: list[TestCluster] = []

    def make(members: int = 1, *, trust: bool = True, init: bool = True) -> TestCluster:
        cluster = TestCluster(str(tmp_path_factory.mktemp("cluster")))
        made.append(cluster)
        for _ in range(members):
            cluster.add_member(trust=trust, init=init)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def test_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., TestCluster]]:
    """A factory: ``test_cluster(3)`` makes a cluster of three members (``.members``), each
    initialised through its sshd, with their host keys in ``.admin_root``'s known_hosts.
    ``trust=False`` leaves known_hosts empty; ``init=False`` leaves the roots empty.
    Everything is torn down after the test."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Callable[..., TestCluster]]:
    """``test_cluster`` shared by the tests of a module (torn down after its last test):
    for a module whose tests each leave the members as they found them."""
    yield from _factory(tmp_path_factory)
