"""``sysmgr top`` and ``sysmgr metrics`` without a kernel: frames from two samples, the sort
keys, the terminal mode, the metric families (parsed back with prometheus_client's own
OpenMetrics parser) and the listen address rule; then both verbs end to end on the fake
runtime (``fake_client``)."""

from __future__ import annotations

import os
import pty
import termios
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from sysmgr.cli import app as cliapp
from sysmgr.cli import main as climain
from sysmgr.cli import metrics as om
from sysmgr.cli import top
from sysmgr.drivers.network._rtnl import STATS_FIELDS, attr, attr_str, parse_stats
from sysmgr.drivers.network.base import inside_counters
from sysmgr.drivers.runtime.cgroup_base import memory_stat
from sysmgr.errors import ValidationError


def reading(name: str, at: float, cpu: int, *, rx: int | None = None, tx: int | None = None,
            mem: int = 0, disk: int | None = None, location: str | None = None) -> top.Reading:
    return top.Reading(name, location, "Running", at, cpu_ns=cpu, memory=mem, memory_limit=1 << 30,
                       disk=disk, rx_bytes=rx, tx_bytes=tx, pids=1)


def sample(*rs: top.Reading) -> top.Sample:
    return top.Sample({r.key: r for r in rs})


def test_frame_rates_from_two_samples():
    before = sample(reading("a", 10.0, 1_000_000_000, rx=1000, tx=0),
                    reading("b", 10.0, 0), reading("gone", 10.0, 5))
    now = sample(reading("a", 12.0, 3_000_000_000, rx=5000, tx=2000),
                 reading("b", 12.0, 500_000_000), reading("new", 12.0, 7))
    rows = {r.now.name: r for r in top.frame(before, now)}
    assert rows["a"].cpu_percent == pytest.approx(100.0)      # 2 s of CPU in 2 s: one CPU
    assert rows["a"].rx_rate == 2000 and rows["a"].tx_rate == 1000
    assert rows["b"].cpu_percent == pytest.approx(25.0) and rows["b"].net_rate is None
    assert rows["new"].cpu_percent is None and "gone" not in rows
    # a restart resets the counters: no negative rate
    again = sample(reading("a", 14.0, 10, rx=0, tx=0))
    assert top.frame(now, again)[0].cpu_percent is None
    # one sample only (the first frame of the live view): no rates
    assert top.frame(None, now)[0].cpu_percent is None


def test_same_name_on_two_members_are_two_rows():
    before = sample(reading("c", 0.0, 0, location="m1"), reading("c", 0.0, 0, location="m2"))
    now = sample(reading("c", 1.0, 10**9, location="m1"), reading("c", 1.0, 0, location="m2"))
    got = {r.now.location: r.cpu_percent for r in top.frame(before, now)}
    assert got == {"m1": pytest.approx(100.0), "m2": 0.0}


def test_sort_keys():
    rows = [top.Row(reading("x", 1, 0, mem=5, disk=1), cpu_percent=1.0, rx_rate=9.0),
            top.Row(reading("y", 1, 0, mem=9, disk=None), cpu_percent=50.0),
            top.Row(reading("z", 1, 0, mem=1, disk=7), cpu_percent=None, tx_rate=1.0)]
    names = lambda by: [r.now.name for r in top.sort_rows(rows, by)]  # noqa: E731
    assert names("cpu") == ["y", "x", "z"]       # unknown last
    assert names("memory") == ["y", "x", "z"]
    assert names("disk") == ["z", "x", "y"]
    assert names("net") == ["x", "z", "y"]
    assert names("name") == ["x", "y", "z"]
    sort = "cpu"
    for key, want in (("m", "memory"), ("d", "disk"), ("n", "net"), ("C", "cpu"), ("x", "cpu")):
        sort, done = top.on_key(sort, key)
        assert sort == want and not done
    assert top.on_key("disk", "q") == ("disk", True)
    assert top.on_key("disk", "\x04")[1]


def test_records_and_cells():
    row = top.Row(reading("a", 1, 2_000_000, rx=10, tx=20, mem=1 << 20), cpu_percent=12.345,
                  rx_rate=1024.0, tx_rate=0.0)
    rec = top.to_records([row])[0]
    assert rec["cpu_percent"] == 12.35 and rec["memory_bytes"] == 1 << 20
    assert rec["network_rx_bytes_per_second"] == 1024.0 and rec["pids"] == 1
    cells = top.cells(row)
    assert cells[:4] == ["a", "(local)", "RUNNING", "12.3"]
    assert cells[4] == "1.00MiB/1.00GiB" and cells[6] == "1.00KiB/s / 0B/s"


def test_cbreak_restores_the_terminal():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON
        with top.cbreak(slave) as keys:
            assert keys
            inside = termios.tcgetattr(slave)
            assert not inside[3] & termios.ICANON and not inside[3] & termios.ECHO
            os.write(master, b"m")
            assert top.wait_key(slave, 1.0) == "m"    # one key, no Enter needed
            assert top.wait_key(slave, 0.01) is None
        assert termios.tcgetattr(slave) == before
        with pytest.raises(RuntimeError):              # restored on the way out of an error too
            with top.cbreak(slave):
                raise RuntimeError("boom")
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
    r, w = os.pipe()
    try:
        with top.cbreak(r) as keys:  # not a terminal: no key reading, nothing to restore
            assert not keys
    finally:
        os.close(r)
        os.close(w)


# -- figures from the kernel's files (pure parsers) --------------------------------------------

def test_memory_stat_names():
    v1 = "cache 4096\nrss 8192\ntotal_cache 40960\ntotal_rss 81920\ntotal_active_anon 100\n" \
         "total_inactive_anon 20\ntotal_inactive_file 3\nmapped_file 1\n"
    got = memory_stat(v1, 1)
    assert got["RSS"] == 81920 and got["Cached"] == 40960   # hierarchical (systemd's cgroups)
    assert got["Mapped"] == 1 and got["Active"] == 100 and got["Inactive"] == 23
    v2 = "anon 5\nfile 6\nfile_mapped 7\nshmem 8\nactive_file 1\ninactive_file 2\n"
    got = memory_stat(v2, 2)
    assert (got["RSS"], got["Cached"], got["Mapped"], got["Shmem"]) == (5, 6, 7, 8)
    assert got["Active"] == 1 and "Dirty" not in got


def test_link_stats_from_netlink_and_as_seen_inside():
    import struct

    stats = struct.pack("=8Q", 1, 2, 300, 400, 5, 6, 7, 8) + bytes(8 * 16)
    payload = struct.pack("=BxHiII", 0, 1, 3, 0, 0) + attr_str(3, "smv1") + attr(23, stats)
    name, got = parse_stats(payload)
    assert name == "smv1" and got == dict(zip(STATS_FIELDS, (1, 2, 300, 400, 5, 6, 7, 8)))
    inside = inside_counters(got)
    # what the host end sent, the container received
    assert inside["receive_bytes"] == 400 and inside["transmit_bytes"] == 300
    assert inside["receive_drop"] == 8 and inside["transmit_errs"] == 5


# -- metrics ----------------------------------------------------------------------------------

def fake_container(name: str, **extra):
    use = SimpleNamespace(memory_bytes=1000, memory_limit_bytes=4000, swap_bytes=0, pids=3,
                          oom_kills=1, memory_stat={"RSS": 600, "Inactive_file": 100},
                          cpu_modes={"0": {"user": 2_000_000_000, "system": 500_000_000}})
    return SimpleNamespace(name=name, status="Running", usage=use, location=None,
                           network={"eth0": {"receive_bytes": 10, "transmit_packets": 2}},
                           filesystem={"device": "root", "mountpoint": "/", "fstype": "btrfs",
                                       "size": 100, "free": 60, "avail": 50}, **extra)


def families(containers) -> dict:
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(om.ContainerCollector(lambda: containers))
    text = generate_latest(reg).decode()
    assert text.endswith("# EOF\n")
    return {s.name: s for f in text_string_to_metric_families(text) for s in f.samples
            if s.labels.get("name") == "c1" and s.labels.get("mode") != "system"}


def test_metric_names_and_values():
    got = families([(fake_container("c1"), "node1"), (fake_container("c2"), "node2")])
    labels = {"name": "c1", "member": "node1", "project": "default", "type": "container"}
    assert got["sysmgr_cpu_seconds_total"].labels == {**labels, "cpu": "0", "mode": "user"}
    assert got["sysmgr_cpu_seconds_total"].value == 2.0
    assert got["sysmgr_memory_RSS_bytes"].value == 600
    assert got["sysmgr_memory_MemTotal_bytes"].value == 4000
    assert got["sysmgr_memory_MemFree_bytes"].value == 3000
    assert got["sysmgr_memory_MemAvailable_bytes"].value == 3100
    assert got["sysmgr_memory_Swap_bytes"].value == 0
    assert got["sysmgr_memory_OOM_kills_total"].value == 1
    assert got["sysmgr_procs_total"].value == 3
    assert got["sysmgr_network_receive_bytes_total"].labels["device"] == "eth0"
    assert got["sysmgr_network_receive_bytes_total"].value == 10
    assert got["sysmgr_network_transmit_packets_total"].value == 2
    fs = got["sysmgr_filesystem_avail_bytes"]
    assert fs.value == 50 and fs.labels["mountpoint"] == "/" and fs.labels["fstype"] == "btrfs"
    assert got["sysmgr_filesystem_size_bytes"].value == 100


@pytest.mark.parametrize("listen,allowed", [
    ("127.0.0.1:9472", True), ("[::1]:9472", True), ("localhost:0", True),
    ("0.0.0.0:9472", False), ("10.1.2.3:9472", False), ("[::]:80", False)])
def test_listen_address_loopback_unless_allowed(listen, allowed):
    if allowed:
        assert om.listen_address(listen, False)[1] == int(listen.rpartition(":")[2])
    else:
        with pytest.raises(ValidationError, match="not a loopback") as e:
            om.listen_address(listen, False)
        assert "--allow-remote" in (e.value.hint or "")
        host, port = om.listen_address(listen, True)
        assert (host, port) == (listen.rpartition(":")[0].strip("[]"),
                                int(listen.rpartition(":")[2]))
    for bad in ("9472", "host:", "127.0.0.1:99999"):
        with pytest.raises(ValidationError, match="HOST:PORT"):
            om.listen_address(bad, False)


# -- both verbs on the fake runtime ------------------------------------------------------------

@pytest.fixture
def cli(fake_client, monkeypatch):
    monkeypatch.setattr(cliapp, "make_client", lambda root, **kw: fake_client)
    monkeypatch.setattr(fake_client, "close", lambda: None)

    def run(*args: str):
        return CliRunner().invoke(climain.cli, ["--root", fake_client.root, *args])
    return run


def test_top_once_and_metrics_through_the_api(fake_client, cli):
    import json

    fake_client.containers.create("c1", "img", start=True, config={"limits.memory": "4MiB"})
    fake_client.containers.create("c2", "img")
    res = cli("top", "--once", "--refresh", "0.1", "-f", "json", "--sort", "name")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["name"], r["status"]) for r in rows] == [("c1", "Running"), ("c2", "Stopped")]
    assert rows[0]["memory_bytes"] == 4 << 20 and rows[0]["memory_limit_bytes"] == 4 << 20
    assert rows[0]["pids"] == 2 and rows[1]["pids"] is None
    assert "c1" in cli("top", "--once", "--refresh", "0.1").output
    assert cli("top", "-f", "json").exit_code == 2   # json needs --once
    res = cli("metrics")
    assert res.exit_code == 0, res.output
    samples = [s for f in text_string_to_metric_families(res.output) for s in f.samples]
    assert {s.labels["name"] for s in samples} == {"c1"}    # running containers only
    assert any(s.name == "sysmgr_procs_total" and s.value == 2 for s in samples)
    refused = cli("metrics", "serve", "--listen", "0.0.0.0:9472")
    assert refused.exit_code == 2 and "--allow-remote" in refused.output
