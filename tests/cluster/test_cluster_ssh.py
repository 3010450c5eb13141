"""The cluster over real SSH, through the CLI, as the issue's scenarios say: three test hosts
(network namespaces with their own sshd and sysmgr root), an admin root that adds them with
their host keys, placement by group and by memory with the image copied between members,
`list` across members with LOCATION, exec with stdin/output/exit code on a remote container,
a member whose sshd stopped reported OFFLINE while the rest list, apply of a manifest
spanning the three members (then empty), and evacuate with ``cluster.evacuate: stop``."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

import pytest

from tests.conftest import requires_root
from tests.monitor import Monitor

pytestmark = [requires_root, pytest.mark.slow]


def ok(cluster, *args: str, input: str | None = None):
    res = cluster.cli(*args, input=input)
    assert res.returncode == 0, f"sysmgr {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def where(cluster) -> dict[str, str]:
    rows = json.loads(ok(cluster, "list", "--format", "json").stdout)
    return {r["name"]: r["location"] for r in rows}


@pytest.fixture
def three(test_cluster):
    cluster = test_cluster(3, trust=False)
    m1, m2, m3 = cluster.members
    # the image exists on m1 only: placement copies it to the others over SSH
    res = subprocess.run(
        m1.ssh_argv(m1.sysmgr, "--root", m1.root, "image", "build", "busybox", "--alias", "busybox"),
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return cluster


def add(cluster, m, *extra: str):
    return cluster.cli("cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
                       "--sysmgr", m.sysmgr, *extra)


def test_a_cluster_over_ssh(three) -> None:
    cluster = three
    m1, m2, m3 = cluster.members
    # an unknown host key is refused, its fingerprint shown, nothing recorded
    res = add(cluster, m1)
    assert res.returncode == 2 and m1.host_key in res.stderr, res.stderr
    assert json.loads(ok(cluster, "cluster", "list", "--format", "json").stdout) == []
    wrong = "SHA256:" + "A" * 43
    res = add(cluster, m1, "--accept-host-key", wrong)
    assert res.returncode == 2 and m1.host_key in res.stderr
    for m, group in ((m1, "web"), (m2, "web"), (m3, "db")):
        ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
           "--sysmgr", m.sysmgr, "--group", group, "--accept-host-key", m.host_key)
    rows = {r["name"]: r for r in json.loads(ok(cluster, "cluster", "list", "--format", "json").stdout)}
    assert {n: r["state"] for n, r in rows.items()} == {"m1": "ONLINE", "m2": "ONLINE", "m3": "ONLINE"}

    # placement: group, then fewest containers; the image is copied where it is missing
    ok(cluster, "launch", "busybox", "w1", "--target", "@web")
    ok(cluster, "launch", "busybox", "w2", "--target", "@web")
    ok(cluster, "launch", "busybox", "d1", "--target", "@db", "-c", "cluster.evacuate=stop")
    assert where(cluster) == {"w1": "m1", "w2": "m2", "d1": "m3"}
    # the image went to m2 and m3 under the same fingerprint (--target on image verbs too)
    fps = {m.name: [i["fingerprint"] for i in json.loads(ok(
        cluster, "image", "list", "--format", "json", "--target", m.name).stdout)] for m in (m1, m2, m3)}
    assert len(fps["m1"]) == 1 and fps["m2"] == fps["m3"] == fps["m1"], fps
    # by memory: no member has that much free, nothing is created anywhere
    res = cluster.cli("launch", "busybox", "huge", "-c", "limits.memory=100000GiB")
    assert res.returncode != 0 and "huge" not in where(cluster)

    # exec on a remote container: stdin in, output and exit code back
    res = cluster.cli("exec", "d1", "--", "sh", "-c", "cat; echo err >&2; exit 3", input="through ssh\n")
    assert res.returncode == 3 and res.stdout == "through ssh\n" and "err" in res.stderr

    # a member whose sshd stopped: reported, while the others still list
    m3.stop_sshd()
    try:
        t = time.monotonic()
        res = cluster.cli("list", "--format", "json")
        took = time.monotonic() - t
        assert res.returncode == 1 and "m3" in res.stderr, res.stderr
        assert {r["name"] for r in json.loads(res.stdout)} == {"w1", "w2"}
        print(f"list with m3 offline took {took:.1f} s")
        rows = {r["name"]: r for r in json.loads(cluster.cli("cluster", "list", "--format", "json").stdout)}
        assert rows["m3"]["state"] == "OFFLINE" and rows["m1"]["state"] == "ONLINE"
    finally:
        m3.start_sshd()

    # evacuate m3 (cluster.evacuate=stop): its container stops, m3 takes no new ones
    ok(cluster, "cluster", "evacuate", "m3", "--yes")
    status = {r["name"]: r["status"] for r in json.loads(ok(cluster, "list", "--format", "json").stdout)}
    assert status["d1"] == "Stopped" and status["w1"] == "Running"
    rows = {r["name"]: r for r in json.loads(ok(cluster, "cluster", "list", "--format", "json").stdout)}
    assert rows["m3"]["state"] == "EVACUATED"
    ok(cluster, "cluster", "restore", "m3")
    status = {r["name"]: r["status"] for r in json.loads(ok(cluster, "list", "--format", "json").stdout)}
    assert status["d1"] == "Running"


def test_monitor_follows_a_members_log(test_cluster) -> None:
    """``monitor --target MEMBER``: the member's events, asked over SSH what is new."""
    cluster = test_cluster(1, trust=False)
    (m1,) = cluster.members
    ok(cluster, "cluster", "add", m1.name, m1.url, "--key", cluster.key, "--root", m1.root,
       "--sysmgr", m1.sysmgr, "--accept-host-key", m1.host_key)
    ok(cluster, "image", "build", "busybox", "--alias", "busybox", "--target", "m1")
    mon = Monitor(cluster.cli_argv("monitor", "--target", "m1", "--format", "json",
                                   "--since", "1h"), cluster.cli_env())
    try:
        ok(cluster, "launch", "busybox", "c1", "--target", "m1")
        ok(cluster, "delete", "--force", "c1")
        assert mon.next_events(4) == [
            ("lifecycle", "container/c1", a) for a in ("created", "started", "stopped", "deleted")]
    finally:
        code, err = mon.interrupt()
    assert code == 0, err


def test_apply_spanning_three_members_then_empty(three, tmp_path) -> None:
    cluster = three
    for m in cluster.members:
        ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
           "--sysmgr", m.sysmgr, "--accept-host-key", m.host_key)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(textwrap.dedent("""\
        kind: Profile
        name: small
        config:
          limits.memory: 64MiB
        ---
        kind: Container
        name: a1
        image: busybox
        profiles: [default, small]
        target: m1
        ---
        kind: Container
        name: a2
        image: busybox
        profiles: [default, small]
        target: m2
        ---
        kind: Container
        name: a3
        image: busybox
        profiles: [default, small]
        target: m3
        """))
    res = cluster.cli("diff", "-f", str(manifest))
    assert res.returncode == 1, res.stderr   # like diff(1): 1 when there are changes
    plan = res.stdout
    for m in ("m1", "m2", "m3"):
        assert f"[{m}]" in plan, plan
    ok(cluster, "apply", "-f", str(manifest), "--yes")
    assert where(cluster) == {"a1": "m1", "a2": "m2", "a3": "m3"}
    again = ok(cluster, "apply", "-f", str(manifest), "--yes").stdout
    assert "no changes" in again, again
    res = cluster.cli("diff", "-f", str(manifest))
    assert res.returncode == 0, res.stdout
    # a3 leaves the manifests: prune deletes it on its member (backed up there), nothing else
    manifest.write_text(manifest.read_text().split("---\nkind: Container\nname: a3")[0])
    res = cluster.cli("diff", "-f", str(manifest), "--prune")
    assert res.returncode == 1, res.stderr
    deletes = [line for line in res.stdout.splitlines() if "delete" in line]
    assert deletes == ["- [m3] delete Container a3"], res.stdout
    ok(cluster, "apply", "-f", str(manifest), "--prune", "--yes")
    assert where(cluster) == {"a1": "m1", "a2": "m2"}
    m3 = cluster.members[2]
    assert [n.split("-")[0] for n in os.listdir(os.path.join(m3.root, "backups", "pruned"))] \
        == ["a3"]
