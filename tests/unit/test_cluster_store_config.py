"""The cluster store's pure parts: store URLs, the recorded setting, member capacity keys and
the capacity rule a reservation applies (no etcd needed here; the stores themselves are in
tests/integration/test_cluster_store.py)."""

from __future__ import annotations

import pytest

from sysmgr.engine import cluster as ecluster
from sysmgr.engine import cluster_store as estore
from sysmgr.errors import ValidationError
from sysmgr.layout import Layout
from sysmgr.model import members as mmembers
from sysmgr.state.cluster import Capacity
from sysmgr.types import MemberSpec


def test_store_urls() -> None:
    assert estore.parse_store("sqlite") == estore.StoreConfig()
    conf = estore.parse_store("etcd://10.0.0.1:2379, 10.0.0.2:2379", cluster_id="c1",
                              cacert="ca.pem")
    assert conf.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379") and conf.cluster_id == "c1"
    assert conf.cacert is not None and conf.cacert.endswith("/ca.pem")   # made absolute
    assert conf.url == "etcd://10.0.0.1:2379,10.0.0.2:2379"
    for bad in ("etcd://", "etcd://host", "etcd://host:port", "http://h:2379", "mysql"):
        with pytest.raises(ValidationError):
            estore.parse_store(bad)


def test_setting_round_trip(tmp_path) -> None:
    layout = Layout(str(tmp_path))
    assert estore.store_config(layout).kind == "sqlite" and not estore.has_store(layout)
    conf = estore.parse_store("etcd://127.0.0.1:2400", cluster_id="x")
    estore.write_config(layout.cluster_store, conf)
    assert estore.store_config(layout) == conf and estore.has_store(layout)
    assert (tmp_path / "cluster-store.json").stat().st_mode & 0o077 == 0
    estore.write_config(layout.cluster_store, estore.StoreConfig())       # back to sqlite
    assert not (tmp_path / "cluster-store.json").exists()


def test_members_cache(tmp_path) -> None:
    layout = Layout(str(tmp_path))
    assert estore.read_cache(layout) is None
    specs = [MemberSpec("n1", "local:", root="/srv/n1", groups=("web",),
                        config=(("limits.instances", "3"),), evacuated=True)]
    estore.write_cache(layout, specs)
    assert estore.read_cache(layout) == specs


def test_member_capacity_keys() -> None:
    spec = MemberSpec("n1", "local:", root="/srv/n1",
                      config=(("limits.instances", "3"), ("limits.memory", "1GiB")))
    assert mmembers.member_problems(spec) == []
    assert ecluster.capacity(spec) == Capacity(3, 1 << 30)
    bare = MemberSpec("n2", "local:", root="/srv/n2")
    assert ecluster.capacity(bare) == Capacity(None, None)
    assert ecluster.capacity(bare, {"facts": {"memory_total": 1000}}) == Capacity(None, 1000)
    bad = MemberSpec("n3", "local:", root="/srv/n3", config=(("limits.instances", "many"),))
    assert any("limits.instances" in str(p) for p in mmembers.member_problems(bad))


def test_capacity_rule_and_known_full() -> None:
    cap = Capacity(containers=2, memory=100)
    assert cap.refusal(1, 50, 50) is None
    assert "full (2/2" in (cap.refusal(2, 0, 0) or "")
    assert "limits.memory" in (cap.refusal(0, 60, 50) or "")
    assert Capacity().refusal(10_000, 1 << 50, 1 << 40) is None
    specs = {n: MemberSpec(n, "local:", root=f"/srv/{n}", config=(("limits.instances", "2"),))
             for n in ("a", "b")}
    assert list(ecluster.known_full(specs, {"a": 2, "b": 1})) == ["a"]
