"""What a member root records about the cluster store it reports to (pushed by the admin
host), and how ``controller run``'s options override it (no etcd needed here; the push and
the lease end to end are in tests/integration/test_cluster_storepush.py)."""

from __future__ import annotations

import pytest

from sysmgr.api.cluster_store import reporting
from sysmgr.engine import cluster_store as estore
from sysmgr.errors import ValidationError
from sysmgr.layout import Layout


def _root(tmp_path) -> Layout:
    (tmp_path / "root.id").write_text("test\n")  # what makes a root initialised
    return Layout(str(tmp_path))


def test_record_and_clear(tmp_path) -> None:
    layout = _root(tmp_path)
    conf = estore.parse_store("etcd://127.0.0.1:2400", cluster_id="c1", cacert="/etc/ca.pem")
    pushed = estore.member_config(conf, "n1")
    assert pushed is not None and pushed["member"] == "n1" and pushed["cacert"] == "/etc/ca.pem"
    assert estore.member_config(estore.StoreConfig(), "n1") is None       # sqlite: nothing
    assert estore.record_member(layout, pushed) == "recorded"
    assert estore.record_member(layout, pushed) == "unchanged"            # idempotent
    assert (tmp_path / "cluster-member.json").stat().st_mode & 0o077 == 0
    other = estore.store_id(estore.parse_store("etcd://127.0.0.1:2400", cluster_id="c2"))
    assert estore.record_member(layout, None, only_cluster=other) == "unchanged"
    assert (tmp_path / "cluster-member.json").exists()                    # not that store
    assert estore.record_member(layout, None, only_cluster=estore.store_id(conf)) == "cleared"
    assert not (tmp_path / "cluster-member.json").exists()
    assert estore.record_member(layout, None) == "unchanged"


def test_controller_options_override_the_record(tmp_path) -> None:
    root = str(tmp_path)
    assert reporting(root) is None                               # nothing recorded, no options
    with pytest.raises(ValidationError, match="records no cluster store"):
        reporting(root, member="n1")
    with pytest.raises(ValidationError, match="needs this member's name"):
        reporting(root, store_url="etcd://127.0.0.1:2400")
    conf = estore.parse_store("etcd://127.0.0.1:2400", cluster_id="c1")
    estore.record_member(_root(tmp_path), estore.member_config(conf, "n1"))
    got = reporting(root)
    assert got is not None and (got.url, got.cluster_id, got.member, got.ttl) == \
        ("etcd://127.0.0.1:2400", "c1", "n1", estore.DEFAULT_TTL)
    got = reporting(root, ttl=2.0, member="n9", cert="me.pem")
    assert got is not None and (got.member, got.ttl, got.cluster_id) == ("n9", 2.0, "c1")
    assert got.cert is not None and got.cert.endswith("/me.pem")
    got = reporting(root, store_url="etcd://10.0.0.1:2379")      # another store, same name
    assert got is not None and (got.url, got.member, got.cluster_id) == \
        ("etcd://10.0.0.1:2379", "n1", "default")
