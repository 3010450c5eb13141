"""One contract suite for both cluster stores: SQLite (``cluster.db``) and etcd (a real
etcd started on loopback by the fixture). Members, evacuation records, leases and liveness,
reservations (compare-and-swap against a member's capacity, concurrent reservers included),
locations, move locks, the inventory and events."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from sysmgr.errors import AlreadyExists, NotFound
from sysmgr.state.cluster import Capacity, ClusterStore, SQLiteClusterStore
from sysmgr.types import MemberSpec
from tests.etcd import etcd_tls, module_etcd  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ClusterStore]:
    if request.param == "sqlite":
        st: ClusterStore = SQLiteClusterStore(str(tmp_path / "cluster.db"))
    else:
        from sysmgr.state.cluster_etcd import EtcdClusterStore
        etcd = request.getfixturevalue("module_etcd")
        st = EtcdClusterStore(etcd.endpoints, uuid.uuid4().hex[:8])
    with st:
        yield st


def spec(name: str, **kw) -> MemberSpec:
    return MemberSpec(name, "local:", root=f"/srv/{name}", **kw)


def test_members_and_evacuations(store: ClusterStore) -> None:
    store.add(spec("n1", groups=("web",), config=(("limits.instances", "3"),)))
    store.add(spec("n2"))
    with pytest.raises(AlreadyExists):
        store.add(spec("n1"))
    assert [s.name for s in store.members()] == ["n1", "n2"]
    assert store.member("n1").config == (("limits.instances", "3"),)
    store.set_evacuated("n1", True)
    store.put(spec("n1", groups=("db",)))                 # the mark is kept by put
    assert store.member("n1").evacuated and store.member("n1").groups == ("db",)
    store.set_groups("n2", ("a", "b"))
    assert store.member("n2").groups == ("a", "b")
    store.record_evacuated("n1", "c1", "stop")
    store.record_evacuated("n1", "c2", "migrate")
    assert store.evacuated_containers("n1") == [("c1", "stop"), ("c2", "migrate")]
    store.forget_evacuated("n1", "c1")
    assert store.evacuated_containers("n1") == [("c2", "migrate")]
    store.remove("n1")
    assert store.evacuated_containers("n1") == []
    with pytest.raises(NotFound):
        store.member("n1")


def test_liveness_by_lease(store: ClusterStore) -> None:
    lease = store.grant(1)
    store.set_alive("n1", lease, {"containers": 2})
    assert store.alive() == {"n1": {"containers": 2}}
    assert store.keepalive(lease)
    other = store.grant(30)
    store.set_alive("n2", other, {})
    store.revoke(other)                                    # a clean stop: gone at once
    assert "n2" not in store.alive()
    deadline = time.monotonic() + 10
    while "n1" in store.alive():                           # no keepalive: expires by itself
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.2)
    assert not store.keepalive(lease)


def test_reservations_against_capacity(store: ClusterStore) -> None:
    cap = Capacity(containers=2, memory=100)
    lease = store.grant(30)
    assert store.reserve("n1", "a", memory=60, capacity=cap, lease=lease, holder="t") is None
    with pytest.raises(AlreadyExists):
        store.reserve("n2", "a", memory=0, capacity=Capacity(), lease=lease, holder="t")
    why = store.reserve("n1", "b", memory=60, capacity=cap, lease=lease, holder="t")
    assert why is not None and "limits.memory" in why
    assert store.reserve("n1", "b", memory=40, capacity=cap, lease=lease, holder="t") is None
    why = store.reserve("n1", "c", memory=0, capacity=cap, lease=lease, holder="t")
    assert why is not None and "full (2/2" in why
    store.commit("a", "n1", 60)
    store.release("b")                                     # a failed launch
    assert [(x.container, x.reserved) for x in store.locations("n1")] == [("a", False)]
    assert store.usage("n1").containers == 1 and store.usage("n1").memory == 60
    store.revoke(lease)                                    # a committed location stays
    assert store.location("a").member == "n1"
    store.forget_location("a")
    assert store.location("a") is None and store.locations() == []


def test_stale_reservation_expires_with_its_lease(store: ClusterStore) -> None:
    lease = store.grant(1)
    cap = Capacity(containers=1)
    assert store.reserve("n1", "x", memory=0, capacity=cap, lease=lease, holder="dead") is None
    assert store.reserve("n1", "y", memory=0, capacity=cap, lease=lease, holder="t") is not None
    deadline = time.monotonic() + 10
    while store.location("x") is not None:
        assert time.monotonic() < deadline, "the reservation never expired"
        time.sleep(0.2)
    other = store.grant(30)
    assert store.reserve("n1", "y", memory=0, capacity=cap, lease=other, holder="t") is None
    store.commit("x", "n2")           # a launch that finished after its reservation expired
    assert store.location("x").member == "n2" and not store.location("x").reserved


def test_concurrent_reservations_never_overcommit(store: ClusterStore, tmp_path) -> None:
    lease = store.grant(60)
    caps = {"n1": Capacity(containers=3), "n2": Capacity(containers=2)}

    def launch(i: int) -> str | None:
        for member in ("n1", "n2"):
            if store.reserve(member, f"c{i}", memory=0, capacity=caps[member], lease=lease,
                             holder=f"launch {i}") is None:
                return member
        return None

    with ThreadPoolExecutor(8) as pool:
        placed = list(pool.map(launch, range(8)))
    assert sorted(p for p in placed if p) == ["n1", "n1", "n1", "n2", "n2"]
    assert placed.count(None) == 3
    assert len(store.locations("n1")) == 3 and len(store.locations("n2")) == 2


def test_move_lock_and_location_flip(store: ClusterStore) -> None:
    store.set_location("web1", "n1", memory=10)
    lease = store.grant(30)
    assert store.lock("web1", "move A", lease) is None
    assert store.lock("web1", "move B", lease) == "move A"
    assert store.lock_holder("web1") == "move A"
    assert not store.move_location("web1", "n1", "n2", "move B")     # not the holder
    assert not store.move_location("web1", "n2", "n3", "move A")     # not where it lives
    assert store.move_location("web1", "n1", "n2", "move A")
    loc = store.location("web1")
    assert (loc.member, loc.memory) == ("n2", 10)
    assert store.locations("n1") == [] and len(store.locations("n2")) == 1
    store.unlock("web1", "move B")                                   # not B's to release
    assert store.lock_holder("web1") == "move A"
    store.unlock("web1", "move A")
    assert store.lock_holder("web1") is None
    lease2 = store.grant(30)
    assert store.lock("web1", "move C", lease2) is None
    store.revoke(lease2)                                             # a crashed mover
    assert store.lock_holder("web1") is None


def test_inventory_and_events(store: ClusterStore) -> None:
    store.inventory_put("Container", "web1", {"member": "n1", "source": "a.yaml"})
    store.inventory_put("Profile", "p", {"member": "n2"})
    assert store.inventory() == {("Container", "web1"): {"member": "n1", "source": "a.yaml"},
                                 ("Profile", "p"): {"member": "n2"}}
    store.inventory_delete("Profile", "p")
    assert list(store.inventory()) == [("Container", "web1")]
    store.add_event({"type": "lifecycle", "object": "container/a", "action": "created"})
    (pos, first), = store.events()
    assert first["action"] == "created"
    stop = threading.Event()
    seen: list[str] = []

    def watch() -> None:
        for _pos, ev in store.watch_events(pos, stop, poll=0.1):
            seen.append(ev["action"])
            if len(seen) == 2:
                stop.set()

    t = threading.Thread(target=watch)
    t.start()
    store.add_event({"type": "lifecycle", "object": "container/a", "action": "started"})
    store.add_event({"type": "lifecycle", "object": "container/a", "action": "stopped"})
    t.join(30)
    stop.set()
    assert seen == ["started", "stopped"]


def test_etcd_with_client_certificates(etcd_tls, tmp_path) -> None:
    """An etcd that wants client certificates: the store speaks TLS with them; without them
    it is refused (and says why), and `cluster store set` records them."""
    from sysmgr.engine import cluster_store as estore
    from sysmgr.errors import SysmgrError
    from sysmgr.layout import Layout
    from sysmgr.state.cluster_etcd import EtcdClusterStore
    from sysmgr.state.etcd import TLS
    from tests.conftest import run_cli

    certs = etcd_tls.tls
    tls = TLS(certs.ca, certs.client_cert, certs.client_key)
    with EtcdClusterStore(etcd_tls.endpoints, "tls", tls) as st:
        st.add(spec("n1"))
        assert [s.name for s in st.members()] == ["n1"]
    with pytest.raises(SysmgrError):
        with EtcdClusterStore(etcd_tls.endpoints, "tls", TLS(certs.ca)) as st:  # no client cert
            st.members()
    admin = str(tmp_path / "admin")
    res = run_cli("cluster", "store", "set", etcd_tls.url, "--cluster-id", "tls", "--cacert",
                  certs.ca, "--cert", certs.client_cert, "--key", certs.client_key, root=admin)
    assert res.returncode == 0, res
    conf = estore.store_config(Layout(admin))
    assert (conf.kind, conf.cert) == ("etcd", certs.client_cert)
    res = run_cli("cluster", "list", "-f", "json", root=admin, check=True)
    assert [r["name"] for r in __import__("json").loads(res.stdout)] == ["n1"]
