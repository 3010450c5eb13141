"""``sysmgr top`` and ``sysmgr metrics`` on real busybox containers, checked against the
container's own cgroup files (v1 here; v2 in the guests of ``scripts/test-cgroup2``), and a
Prometheus-style scrape of ``metrics serve`` over loopback. No network (the guest has none):
the nic counters are tested in ``tests/integration/test_top_network.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import REPO, cli_ok, requires_root, run_cli

pytestmark = [pytest.mark.cgroup2, requires_root]


def cgroup_file(pid: int, name: str) -> str:
    """The text of cgroup file ``name`` (e.g. ``pids.current``) of process ``pid``'s cgroup,
    in its controller's v1 hierarchy or the v2 tree."""
    controller = name.split(".")[0]
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [ln.rstrip("\n").split(":", 2) for ln in f]
    v1 = [p for _, ctrls, p in lines if controller in ctrls.split(",")]
    if v1:
        base = next(d for d in os.listdir("/sys/fs/cgroup")
                    if controller in d.split(",") and os.path.isdir(f"/sys/fs/cgroup/{d}"))
        path = f"/sys/fs/cgroup/{base}{v1[0]}/{name}"
    else:
        path = f"/sys/fs/cgroup{next(p for h, _, p in lines if h == '0')}/{name}"
    with open(path) as f:
        return f.read().strip()


def memory_used(pid: int) -> int:
    try:
        return int(cgroup_file(pid, "memory.usage_in_bytes"))
    except (StopIteration, FileNotFoundError):
        return int(cgroup_file(pid, "memory.current"))


@pytest.fixture
def two(busybox_cli_root: str):
    """``burner`` (64 MiB limit, a shell spinning on a CPU) and ``idle``, both running."""
    root = busybox_cli_root
    cli_ok("launch", "busybox", "burner", "-c", "limits.memory=64MiB", root=root)
    cli_ok("launch", "busybox", "idle", root=root)
    cli_ok("exec", "burner", "--", "sh", "-c", "(while :; do :; done) >/dev/null 2>&1 &",
           root=root)
    pids = {c["name"]: c["pid"] for c in json.loads(cli_ok("list", "-f", "json", root=root).stdout)}
    return root, pids


def test_top_once_json_matches_the_cgroup_files(two):
    root, pids = two
    rows = {r["name"]: r for r in json.loads(
        cli_ok("top", "--once", "--format", "json", "--refresh", "1", root=root).stdout)}
    assert set(rows) == {"burner", "idle"}
    burner, idle = rows["burner"], rows["idle"]
    assert burner["cpu_percent"] > 5 and burner["cpu_percent"] > idle["cpu_percent"]
    for name, row in rows.items():
        assert row["status"] == "Running"
        # nothing forks in there: the count is the cgroup's, exactly
        assert row["pids"] == int(cgroup_file(pids[name], "pids.current"))
        # memory moves a little between the two reads
        now = memory_used(pids[name])
        assert abs(row["memory_bytes"] - now) <= max(now // 4, 1 << 20), (name, row, now)
        assert row["disk_bytes"] and row["disk_bytes"] > 1 << 20
    assert burner["memory_limit_bytes"] == 64 << 20
    assert idle["memory_limit_bytes"] > 64 << 20        # no limit: the host's memory
    table = cli_ok("top", "--once", "--refresh", "0.5", "--sort", "name", root=root).stdout
    lines = [ln for ln in table.splitlines() if "burner" in ln or "idle" in ln]
    assert "burner" in lines[0] and "/64.00MiB" in lines[0] and "RUNNING" in lines[0]


def parse(text: str) -> dict[tuple[str, str], list]:
    """(sample name, container) -> samples of that container."""
    out: dict[tuple[str, str], list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault((s.name, s.labels["name"]), []).append(s)
    return out


def test_metrics_match_the_cgroup_files(two):
    root, pids = two
    got = parse(cli_ok("metrics", root=root).stdout)
    pid = pids["burner"]
    procs = got[("sysmgr_procs_total", "burner")][0]
    assert procs.value == int(cgroup_file(pid, "pids.current"))
    assert procs.labels["project"] == "default" and procs.labels["type"] == "container"
    assert procs.labels["member"] == os.uname().nodename
    assert got[("sysmgr_memory_MemTotal_bytes", "burner")][0].value == 64 << 20
    stat = dict(line.split() for line in cgroup_file(pid, "memory.stat").splitlines())
    rss = int(stat.get("total_rss", stat.get("anon", 0)))
    assert abs(got[("sysmgr_memory_RSS_bytes", "burner")][0].value - rss) <= max(rss // 4, 1 << 20)
    cpu = got[("sysmgr_cpu_seconds_total", "burner")]
    assert {s.labels["mode"] for s in cpu} == {"user", "system"}
    later = parse(cli_ok("metrics", root=root).stdout)

    def spent(scrape: dict, name: str) -> float:
        return sum(s.value for s in scrape[("sysmgr_cpu_seconds_total", name)])

    # counters: the spinning one's grows between two scrapes, and more than the idle one's
    grown = {n: spent(later, n) - spent(got, n) for n in ("burner", "idle")}
    assert grown["burner"] > 0 and grown["burner"] > grown["idle"] >= 0, grown
    assert got[("sysmgr_memory_OOM_kills_total", "idle")][0].value == 0
    fs = got[("sysmgr_filesystem_size_bytes", "idle")][0]
    assert fs.labels["mountpoint"] == "/" and fs.labels["fstype"] == "dir" and fs.value > 0
    cli_ok("stop", "--force", "idle", root=root)
    names = {n for _, n in parse(cli_ok("metrics", root=root).stdout)}
    assert names == {"burner"}                         # running containers only


def test_metrics_serve_scrape_over_loopback(two):
    root, _ = two
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "sysmgr", "metrics", "serve", "--listen",
                             "127.0.0.1:0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        req = urllib.request.Request(f"http://{m.group(1)}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            got = parse(resp.read().decode())
        assert got[("sysmgr_procs_total", "burner")][0].value >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        finally:
            proc.kill() if proc.poll() is None else None
            proc.stdout.close()
            proc.stderr.close()
    assert code == 0
    refused = run_cli("metrics", "serve", "--listen", "0.0.0.0:0", root=root)
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr
