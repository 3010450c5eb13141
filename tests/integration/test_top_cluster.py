"""``top`` and ``metrics`` on a cluster's admin root (two local members, busybox on dir
pools): every member's containers, each with its member as LOCATION / label ``member``;
``--target`` narrows ``top`` to one member."""

from __future__ import annotations

import json

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import requires_root, run_cli
from tests.integration.test_cluster_local import cluster  # noqa: F401  (the fixture)

pytestmark = requires_root


def test_top_and_metrics_span_the_members(cluster) -> None:  # noqa: F811
    admin, _roots = cluster
    run_cli("launch", "busybox", "a1", "--target", "n1", root=admin, check=True)
    run_cli("launch", "busybox", "b1", "--target", "n2", root=admin, check=True)
    rows = json.loads(run_cli("top", "--once", "-f", "json", "--refresh", "0.3", "--sort",
                              "name", root=admin, check=True).stdout)
    assert [(r["name"], r["location"], r["status"]) for r in rows] == [
        ("a1", "n1", "Running"), ("b1", "n2", "Running")]
    assert all(r["pids"] and r["memory_bytes"] for r in rows)
    only = json.loads(run_cli("top", "--once", "-f", "json", "--refresh", "0.3", "--target",
                              "n2", root=admin, check=True).stdout)
    assert [(r["name"], r["location"]) for r in only] == [("b1", "n2")]
    text = run_cli("metrics", root=admin, check=True).stdout
    members = {s.labels["name"]: s.labels["member"]
               for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "sysmgr_procs_total"}
    assert members == {"a1": "n1", "b1": "n2"}
