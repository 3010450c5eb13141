"""Members over real SSH learn the etcd cluster store from the admin host (test hosts:
network namespaces with their own sshd and sysmgr root; etcd on the admin's loopback).

``cluster store migrate --to etcd://...`` writes each member root's ``cluster-member.json``
through the member session; a member whose sshd is down is one warning line (exit 0) and
the next ``cluster store set`` reaches it; ``set sqlite`` clears them.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from sysmgr.layout import Layout
from tests.conftest import requires_root
from tests.etcd import ETCD, EtcdCluster

pytestmark = requires_root


def ok(cluster, *args: str):
    res = cluster.cli(*args)
    assert res.returncode == 0, f"sysmgr {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res


def recorded(m) -> dict | None:
    try:
        with open(Layout(m.root).cluster_member) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def test_store_reaches_members_over_ssh(test_cluster, tmp_path) -> None:
    if not os.path.exists(ETCD):
        pytest.skip("etcd is not installed (scripts/setup installs etcd-server)")
    cluster = test_cluster(2, trust=False)
    # etcd on the loopback of the admin's namespace (the switch), where the admin root runs
    etcd_server = EtcdCluster(str(tmp_path / "etcd"), 1, netns=cluster.switch)
    try:
        etcd_server.start_all()
        _push_and_clear(cluster, etcd_server)
    finally:
        etcd_server.close()


def _push_and_clear(cluster, etcd_server: EtcdCluster) -> None:
    for m in cluster.members:
        ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
           "--sysmgr", m.sysmgr, "--accept-host-key", m.host_key)
    m1, m2 = cluster.members
    cid = uuid.uuid4().hex[:8]
    ok(cluster, "cluster", "store", "migrate", "--to", etcd_server.url, "--cluster-id", cid)
    for m in (m1, m2):
        rec = recorded(m)
        assert rec is not None, m.name
        assert (rec["kind"], rec["member"], rec["cluster_id"], rec["endpoints"]) == \
            ("etcd", m.name, cid, etcd_server.endpoints)

    m2.stop_sshd()                                  # m2 does not answer now
    cluster.kill_muxes()
    try:
        res = ok(cluster, "cluster", "store", "set", "sqlite")
        warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 1 and f"member {m2.name} " in warnings[0], res.stderr
    finally:
        m2.start_sshd()
    assert recorded(m1) is None                     # cleared over m1's session
    assert recorded(m2) is not None                 # m2 missed it...
    res = ok(cluster, "cluster", "store", "set", "sqlite")
    assert "warning" not in res.stderr, res.stderr
    assert recorded(m2) is None                     # ...and the next set reached it
    assert os.path.exists(Layout(m2.root).db)       # the member root itself is untouched
