"""The etcd cluster store end to end, through the real CLI: two local members with their
controllers keeping liveness leases, busybox containers on dir pools, a real etcd (one node,
or three for the quorum cases) started on loopback by the fixtures.

- 8 concurrent launches onto members with room for 3 + 2 place exactly 5 and refuse 3;
- two concurrent moves of one container: one wins, the other is refused naming the holder,
  one copy afterwards (and a delete meanwhile is refused too);
- a member's controller killed: OFFLINE in ``cluster list`` within the lease TTL;
- a 3-node etcd: one node killed changes nothing; two killed: read-only commands answer
  (marked stale), launch / move / prune are refused with one line and change nothing;
  the nodes back: work resumes with nothing lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

import sysmgr
from sysmgr.errors import Conflict
from tests.conftest import REPO, requires_root, run_cli
from tests.etcd import EtcdCluster, etcd_cluster, etcd_server  # noqa: F401  (fixtures)

pytestmark = requires_root

TTL = "2s"


class Members:
    """An admin root on an etcd store with members n1 and n2 (their controllers running)."""

    def __init__(self, base: str, etcd: EtcdCluster, limits: dict[str, int]) -> None:
        self.base, self.etcd = base, etcd
        self.admin = f"{base}/admin"
        self.roots = {n: f"{base}/{n}" for n in limits}
        self.cluster_id = uuid.uuid4().hex[:8]
        self.controllers: dict[str, subprocess.Popen] = {}
        for n, root in self.roots.items():
            with sysmgr.Client(root=root) as c:
                c.init(storage_driver="dir")
                c.images.build("busybox", alias="busybox")
            run_cli("cluster", "add", n, "local:", "--root", root, "-c",
                    f"limits.instances={limits[n]}", root=self.admin, check=True)
        run_cli("cluster", "store", "migrate", "--to", etcd.url, "--cluster-id",
                self.cluster_id, root=self.admin, check=True)
        for n in self.roots:
            self.start_controller(n)
        self.wait_state({n: "ONLINE" for n in self.roots})

    def start_controller(self, n: str) -> None:
        env = {**os.environ, "PYTHONPATH": REPO}
        self.controllers[n] = subprocess.Popen(
            [sys.executable, "-m", "sysmgr", "--root", self.roots[n], "controller", "run",
             "--cluster-store", self.etcd.url, "--cluster-id", self.cluster_id, "--member", n,
             "--lease-ttl", TTL], env=env, stdout=subprocess.DEVNULL,
            stderr=open(f"{self.base}/controller-{n}.log", "ab"))

    def stop_controller(self, n: str, sig: int = signal.SIGTERM) -> None:
        proc = self.controllers.pop(n)
        proc.send_signal(sig)
        proc.wait(60)

    def states(self) -> dict[str, str]:
        res = run_cli("cluster", "list", "-f", "json", root=self.admin, check=True)
        return {r["name"]: r["state"] for r in json.loads(res.stdout)}

    def wait_state(self, want: dict[str, str], deadline: float = 30) -> float:
        t0 = time.monotonic()
        while self.states() != want:
            assert time.monotonic() - t0 < deadline, (self.states(), want)
            time.sleep(0.2)
        return time.monotonic() - t0

    def store(self) -> Any:
        from sysmgr.state.cluster_etcd import EtcdClusterStore
        return EtcdClusterStore(self.etcd.endpoints, self.cluster_id)

    def containers(self) -> dict[str, list[str]]:
        out = {}
        for n, root in self.roots.items():
            with sysmgr.Client(root=root) as c:
                out[n] = sorted(ct.name for ct in c.containers.all())
        return out

    def close(self) -> None:
        for n in list(self.controllers):
            self.stop_controller(n)
        for root in self.roots.values():
            with sysmgr.Client(root=root) as c:
                for ct in c.containers.all():
                    ct.delete(force=True)


def _members(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster,
             limits: dict[str, int]) -> Iterator[Members]:
    m = Members(str(tmp_path_factory.mktemp("members")), etcd, limits)
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def members(etcd_server: EtcdCluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Members]:
    """Members n1 (room for 3 containers) and n2 (2) on a one-node etcd."""
    yield from _members(tmp_path_factory, etcd_server, {"n1": 3, "n2": 2})


def _launch(admin: str, name: str, out: dict[str, subprocess.CompletedProcess]) -> None:
    out[name] = run_cli("launch", "busybox", name, root=admin)


def test_concurrent_launches_never_overcommit(members: Members) -> None:
    results: dict[str, subprocess.CompletedProcess] = {}
    threads = [threading.Thread(target=_launch, args=(members.admin, f"c{i}", results))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = sorted(n for n, r in results.items() if r.returncode == 0)
    refused = {n: r for n, r in results.items() if r.returncode != 0}
    assert len(placed) == 5, {n: r.stderr for n, r in results.items()}
    for r in refused.values():
        assert r.returncode == 1 and "no cluster member can take container" in r.stderr, r
        assert "full (3/3" in r.stderr and "full (2/2" in r.stderr, r.stderr
    held = members.containers()
    assert len(held["n1"]) == 3 and len(held["n2"]) == 2
    assert sorted(held["n1"] + held["n2"]) == placed
    with members.store() as st:
        locs = {loc.container: loc.member for loc in st.locations()}
    assert locs == {n: m for m, names in held.items() for n in names}   # no reservation left


def test_concurrent_moves_one_wins(members: Members) -> None:
    run_cli("launch", "busybox", "m1", "--target", "n1", root=members.admin, check=True)
    env = {**os.environ, "PYTHONPATH": REPO}
    first = subprocess.Popen([sys.executable, "-m", "sysmgr", "--root", members.admin, "move",
                              "m1", "--target", "n2"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    with members.store() as st:
        deadline = time.monotonic() + 60
        while st.lock_holder("m1") is None:       # the first move holds the lock now
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = run_cli("move", "m1", "--target", "n2", root=members.admin)
        deleting = run_cli("delete", "--force", "m1", root=members.admin)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, (out, err)
    assert second.returncode == 1 and "is locked: move of m1 to n2 by pid" in second.stderr, \
        second
    assert deleting.returncode == 1 and "is locked" in deleting.stderr, deleting
    assert members.containers() == {"n1": [], "n2": ["m1"]}              # one copy
    with members.store() as st:
        assert st.location("m1").member == "n2" and st.lock_holder("m1") is None
    res = run_cli("exec", "m1", "--", "hostname", root=members.admin)
    assert res.returncode == 0 and res.stdout == "m1\n"


def test_killed_controller_is_offline_within_the_ttl(members: Members) -> None:
    with members.store() as st:
        facts = st.alive()["n1"]
    assert facts["ttl"] == 2.0 and facts["pid"] == members.controllers["n1"].pid
    members.stop_controller("n1", signal.SIGKILL)          # no revoke: the lease must expire
    members.wait_state({"n1": "OFFLINE", "n2": "ONLINE"}, deadline=2.0 + 3.0)
    res = run_cli("launch", "busybox", "x1", "--target", "@nonexistent", root=members.admin)
    assert res.returncode == 2                              # (an unknown group: bad input)
    res = run_cli("launch", "busybox", "x1", root=members.admin, check=True)
    assert "x1" in members.containers()["n2"]               # placement skipped the dead n1
    members.start_controller("n1")
    members.wait_state({"n1": "ONLINE", "n2": "ONLINE"})


def test_monitor_all_members_watches_the_store(members: Members) -> None:
    run_cli("launch", "busybox", "a1", "--target", "n1", root=members.admin, check=True)
    env = {**os.environ, "PYTHONPATH": REPO}
    mon = subprocess.Popen([sys.executable, "-m", "sysmgr", "--root", members.admin, "monitor",
                            "--all-members", "--since", "10m", "--format", "json"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, mon.kill)         # never hang the suite on a missed event
    watchdog.start()
    try:
        seen: set[tuple[str, str, str]] = set()
        want = {("n1", "container/a1", "started"), ("n2", "container/a2", "started")}
        launched = False
        assert mon.stdout is not None
        for line in mon.stdout:                       # the recorded ones, then the watch
            e = json.loads(line)
            seen.add((e.get("member"), e["object"], e["action"]))
            if ("n1", "container/a1", "started") in seen and not launched:
                launched = True                       # a2 happens while it watches
                run_cli("launch", "busybox", "a2", "--target", "n2", root=members.admin,
                        check=True)
            if want <= seen:
                break
    finally:
        watchdog.cancel()
        mon.send_signal(signal.SIGINT)
        mon.communicate(timeout=30)
    assert want <= seen
    assert ("n1", "container/a1", "created") in seen


def _profile_dir(base: str) -> str:
    d = f"{base}/site"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/small.yaml", "w") as f:
        f.write("kind: Profile\nname: tiny\nconfig:\n  limits.processes: '100'\n")
    return d


def test_apply_records_the_inventory_in_the_store(members: Members) -> None:
    site = _profile_dir(members.base)
    run_cli("apply", "-f", site, "--yes", root=members.admin, check=True)
    with members.store() as st:
        inv = st.inventory()
    assert {k for k in inv if k[0] == "Profile"} == {("Profile", "n1/tiny"), ("Profile", "n2/tiny")}
    assert inv[("Profile", "n1/tiny")]["member"] == "n1"


@pytest.fixture
def quorum_members(etcd_cluster: EtcdCluster, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Members]:
    """Members n1 and n2 (room for 5 each) on a three-node etcd."""
    yield from _members(tmp_path_factory, etcd_cluster, {"n1": 5, "n2": 5})


def test_quorum_loss_and_return(quorum_members: Members) -> None:
    m, etcd = quorum_members, quorum_members.etcd
    admin = m.admin
    etcd.kill(0)                                            # one of three: nothing changes
    run_cli("launch", "busybox", "q1", "--target", "n1", root=admin, check=True)
    run_cli("move", "q1", "--target", "n2", root=admin, check=True)
    res = run_cli("cluster", "list", root=admin, check=True)
    assert "STALE" not in res.stderr and res.stdout.count("ONLINE") == 2

    etcd.kill(1)                                            # two of three: no quorum
    res = run_cli("cluster", "list", "-f", "json", root=admin)
    assert res.returncode == 0 and "STALE" in res.stderr
    assert sorted(r["name"] for r in json.loads(res.stdout)) == ["n1", "n2"]
    res = run_cli("list", "-f", "json", root=admin)
    assert res.returncode == 0 and "STALE" in res.stderr
    assert [(r["name"], r["location"]) for r in json.loads(res.stdout)] == [("q1", "n2")]
    before = m.containers()
    site = _profile_dir(m.base)
    for argv in (("launch", "busybox", "q2"), ("move", "q1", "--target", "n1"),
                 ("apply", "-f", site, "--prune", "--yes")):
        res = run_cli(*argv, root=admin)
        assert res.returncode == 1, res
        errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "cluster store does not answer" in errors[0], res.stderr
    assert m.containers() == before                          # nothing half-done

    etcd.start(0)
    etcd.start(1)
    etcd.wait_healthy()
    m.wait_state({"n1": "ONLINE", "n2": "ONLINE"})
    res = run_cli("cluster", "list", root=admin, check=True)
    assert "STALE" not in res.stderr
    with m.store() as st:                                    # nothing lost
        assert [s.name for s in st.members()] == ["n1", "n2"]
        assert st.location("q1").member == "n2"
    run_cli("launch", "busybox", "q2", "--target", "n1", root=admin, check=True)
    run_cli("move", "q1", "--target", "n1", root=admin, check=True)
    assert m.containers() == {"n1": ["q1", "q2"], "n2": []}


def test_api_delete_honours_the_move_lock(members: Members) -> None:
    """``Container.delete()`` in the Python API does what the CLI's delete does: refused
    while a move holds the name, and the deleted container's location leaves the store."""
    from sysmgr.api.cluster_store import move_lock

    run_cli("launch", "busybox", "d1", "--target", "n2", root=members.admin, check=True)
    with sysmgr.Client(root=members.admin) as client:
        ct = client.containers.get("d1")
        assert ct.location == "n2"
        with move_lock(client.cluster, "d1", "move of d1 to n1"):
            with pytest.raises(Conflict, match="is locked: move of d1 to n1 by pid"):
                ct.delete(force=True)
        assert members.containers()["n2"] == ["d1"]           # nothing was deleted
        ct.delete(force=True)
    assert members.containers() == {"n1": [], "n2": []}
    with members.store() as st:
        assert st.location("d1") is None and st.lock_holder("d1") is None
