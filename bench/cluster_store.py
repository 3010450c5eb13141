#!/usr/bin/env python3
"""Cluster store benchmark: etcd beside SQLite; prints medians (never asserts).

Starts a throw-away etcd on loopback ports it picks (data in a temporary directory, killed
at the end), and an admin root per store holding 200 simulated members (records, and for
each a liveness lease with its facts, as a member's controller keeps them). Then:

  - ``cluster list`` for 200 members from etcd: the CLI end to end (``sysmgr cluster list
    -f json``: Python start, one range for the records, one for the leases; target <= 200 ms)
    and the store reads alone (members + liveness), beside the same reads from SQLite;
  - placement of 1000 containers across the 200 members by 4 concurrent clients
    (processes), each container as ``launch`` does it: a lease, the usage read, the choice
    (fewest containers), a compare-and-swap reservation against the member's capacity
    (``limits.instances`` 4: room for 800, so 200 are refused), the commit, the lease
    revoked. Afterwards the store is checked for double-booking (no member above 4, exactly
    800 placed). Throughput for etcd and SQLite.

Run as root or not: ``.venv/bin/python bench/cluster_store.py [--runs N]`` (the package is
byte-compiled first, as ``scripts/setup`` leaves it: the CLI's start is part of the figure).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms  # noqa: E402

from sysmgr.engine import cluster as ecluster  # noqa: E402
from sysmgr.engine import cluster_store as estore  # noqa: E402
from sysmgr.layout import Layout  # noqa: E402
from sysmgr.types import MemberSpec  # noqa: E402
from tests.etcd import EtcdCluster  # noqa: E402

MEMBERS = 200
CONTAINERS = 1000
CLIENTS = 4
PER_MEMBER = 4


def populate(root: str, conf: estore.StoreConfig) -> None:
    """200 members with limits.instances, each alive under a lease of its own."""
    layout = Layout(root)
    os.makedirs(root, exist_ok=True)
    estore.write_config(layout.cluster_store, conf)
    facts = {"version": "0.1.0", "rpc": 1, "hostname": "sim", "containers": 0,
             "facts": {"cpus": 4, "memory_total": 8 << 30, "memory_free": 6 << 30}}
    with estore.open_store(layout) as st:
        for i in range(MEMBERS):
            name = f"m{i:03d}"
            st.add(MemberSpec(name, f"ssh://root@10.0.{i // 250}.{i % 250 + 1}",
                              config=(("limits.instances", str(PER_MEMBER)),)))
            st.set_alive(name, st.grant(600), {**facts, "hostname": name})


def cli_list(root: str, runs: int) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": REPO}
    argv = [sys.executable, "-m", "sysmgr", "--root", root, "cluster", "list", "-f", "json"]
    samples, rows = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        samples.append(time.perf_counter() - t0)
        rows = sum(1 for r in json.loads(out) if r["state"] == "ONLINE")
    return median_ms(samples), rows


def store_reads(root: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with estore.open_store(Layout(root)) as st:
            specs, alive = st.members(), st.alive()
        samples.append(time.perf_counter() - t0)
        assert len(specs) == MEMBERS
    return median_ms(samples)


def _client(root: str, names: list[str], out: "multiprocessing.Queue[tuple[int, int]]") -> None:
    placed = refused = 0
    with estore.open_store(Layout(root)) as st:
        specs = {s.name: s for s in st.members()}
        alive = st.alive()
        base = [ecluster.candidate(s, ecluster.facts_of(alive[m])) for m, s in specs.items()]
        for name in names:
            lease = st.grant(estore.COMMAND_TTL)
            counts = st.usage_counts()
            cands = [ecluster.with_count(c, counts.get(c.name, 0)) for c in base]
            full = set(ecluster.known_full(specs, counts))
            while True:
                choice = ecluster.place([c for c in cands if c.name not in full],
                                        group=None, memory=None).member
                if choice is None:
                    refused += 1
                    break
                if st.reserve(choice, name, memory=0, lease=lease, holder="bench",
                              capacity=ecluster.capacity(specs[choice])) is None:
                    st.commit(name, choice)
                    placed += 1
                    break
                full.add(choice)
            st.revoke(lease)
    out.put((placed, refused))


def placement(root: str) -> tuple[float, int, int, int]:
    """(seconds, placed, refused, most on one member) for 1000 launches by 4 clients."""
    names = [f"c{i:04d}" for i in range(CONTAINERS)]
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_client, args=(root, names[i::CLIENTS], queue))
             for i in range(CLIENTS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    with estore.open_store(Layout(root)) as st:
        per = st.usage_counts()
    placed = sum(r[0] for r in results)
    assert sum(per.values()) == placed, (per, results)
    return seconds, placed, sum(r[1] for r in results), max(per.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    multiprocessing.set_start_method("fork")
    # the CLI's start is part of the figure: byte-compiled, as scripts/setup leaves it
    subprocess.run([sys.executable, "-m", "compileall", "-q", f"{REPO}/sysmgr"],
                   stdout=subprocess.DEVNULL, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        etcd = EtcdCluster(f"{tmp}/etcd", 1)
        try:
            etcd.start_all()
            roots = {"etcd": f"{tmp}/etcd-admin", "sqlite": f"{tmp}/sqlite-admin"}
            populate(roots["etcd"], estore.parse_store(etcd.url, cluster_id=uuid.uuid4().hex[:8]))
            populate(roots["sqlite"], estore.StoreConfig())
            ms, online = cli_list(roots["etcd"], args.runs)
            print(f"cluster list, {MEMBERS} members from etcd (CLI end to end): {ms:.1f} ms "
                  f"median ({online} ONLINE by lease; target <= 200 ms)")
            for kind, root in roots.items():
                print(f"  store reads (members + liveness) from {kind}: "
                      f"{store_reads(root, args.runs):.1f} ms median")
            for kind, root in roots.items():
                seconds, placed, refused, most = placement(root)
                ok = "no double-booking" if most <= PER_MEMBER and \
                    placed == MEMBERS * PER_MEMBER else "DOUBLE-BOOKED"
                print(f"placement, {CONTAINERS} containers on {MEMBERS} members by {CLIENTS} "
                      f"clients, {kind}: {CONTAINERS / seconds:.0f} launches/s ({seconds:.1f} s; "
                      f"{placed} placed, {refused} refused, at most {most} a member: {ok})")
        finally:
            etcd.close()


if __name__ == "__main__":
    main()
