"""Members learn the etcd cluster store from the admin host, and their events survive a store
outage — through the real CLI, local members on dir pools, a real etcd on loopback.

- ``cluster store migrate|set etcd://...`` writes every member root's ``cluster-member.json``;
  a ``controller run`` with no options there keeps the member's lease (ONLINE in ``cluster
  list``, OFFLINE within the TTL once killed); ``cluster store set sqlite`` clears them;
- ``cluster add`` to an etcd cluster tells the new member; a member that does not answer is
  a warning (exit 0) and the next ``cluster store set`` tells it; ``cluster remove`` clears;
- a member's events written while etcd is down wait in the member's backlog and reach the
  store, in order and once each, with the next event (or the controller's heartbeat); a
  flush cut off half-way and run again, or two at once, writes no event twice.
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
from sysmgr.engine import store_events
from sysmgr.layout import Layout
from tests.conftest import REPO, requires_root, run_cli
from tests.etcd import EtcdCluster, etcd_server  # noqa: F401  (fixtures)

pytestmark = requires_root


class Site:
    """An admin root and member roots (``local:``, dir pools, no containers)."""

    def __init__(self, base: str, etcd: EtcdCluster, names: tuple[str, ...]) -> None:
        self.base, self.etcd = base, etcd
        self.admin = f"{base}/admin"
        self.cluster_id = uuid.uuid4().hex[:8]
        self.roots = {n: f"{base}/{n}" for n in names}
        self.controllers: dict[str, subprocess.Popen] = {}
        for root in self.roots.values():
            with sysmgr.Client(root=root) as c:
                c.init(storage_driver="dir")

    def cli(self, *argv: str, root: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        return run_cli(*argv, root=root or self.admin, check=check)

    def add(self, n: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.cli("cluster", "add", n, "local:", "--root", self.roots[n], check=check)

    def store_set(self, url: str | None = None, check: bool = True
                  ) -> subprocess.CompletedProcess:
        url = url or self.etcd.url
        extra = ("--cluster-id", self.cluster_id) if url.startswith("etcd") else ()
        return self.cli("cluster", "store", "set", url, *extra, check=check)

    def recorded(self, n: str) -> dict[str, Any] | None:
        try:
            with open(Layout(self.roots[n]).cluster_member) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def start_controller(self, n: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": REPO}
        self.controllers[n] = subprocess.Popen(      # no options: what the root records
            [sys.executable, "-m", "sysmgr", "--root", self.roots[n], "controller", "run"],
            env=env, stdout=subprocess.DEVNULL,
            stderr=open(f"{self.base}/controller-{n}.log", "ab"))
        return self.controllers[n]

    def stop_controller(self, n: str, sig: int = signal.SIGTERM) -> None:
        proc = self.controllers.pop(n)
        proc.send_signal(sig)
        proc.wait(60)

    def states(self) -> dict[str, str]:
        res = self.cli("cluster", "list", "-f", "json")
        return {r["name"]: r["state"] for r in json.loads(res.stdout)}

    def wait(self, cond: Any, deadline: float = 30) -> None:
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < deadline, f"not within {deadline} s"
            time.sleep(0.2)

    def store(self) -> Any:
        from sysmgr.state.cluster_etcd import EtcdClusterStore
        return EtcdClusterStore(self.etcd.endpoints, self.cluster_id)

    def events(self, member: str) -> list[str]:
        """The objects of ``member``'s events in the store, in the store's order."""
        with self.store() as st:
            return [e["object"] for _, e in st.events() if e.get("member") == member]

    def close(self) -> None:
        for n in list(self.controllers):
            self.stop_controller(n, signal.SIGKILL)


@pytest.fixture
def site(etcd_server: EtcdCluster, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    s = Site(str(tmp_path_factory.mktemp("storepush")), etcd_server, ("n1", "n2"))
    try:
        yield s
    finally:
        s.close()


def test_store_set_tells_members_and_controller_needs_no_options(site: Site) -> None:
    site.add("n1")
    site.add("n2")
    assert site.recorded("n1") is None                      # sqlite: nothing to report to
    site.cli("cluster", "store", "migrate", "--to", site.etcd.url, "--cluster-id",
             site.cluster_id)
    for n in ("n1", "n2"):
        rec = site.recorded(n)
        assert rec is not None, n
        assert (rec["kind"], rec["member"], rec["cluster_id"], rec["endpoints"]) == \
            ("etcd", n, site.cluster_id, site.etcd.endpoints)
        os.unlink(Layout(site.roots[n]).cluster_member)
    res = site.store_set()                                   # set (again) tells them again
    assert "warning" not in res.stderr, res.stderr
    assert site.recorded("n1")["member"] == "n1" and site.recorded("n2")["member"] == "n2"

    ctl = site.start_controller("n1")
    site.wait(lambda: site.states() == {"n1": "ONLINE", "n2": "OFFLINE"})
    with site.store() as st:
        assert st.alive()["n1"]["pid"] == ctl.pid          # its lease, from the store
    status = site.cli("controller", "status", root=site.roots["n1"]).stdout
    assert f"Cluster store: {site.etcd.url} (cluster {site.cluster_id}), as member n1" \
        in status, status
    assert "Lease: alive" in status, status

    site.stop_controller("n1", signal.SIGKILL)              # no revoke: the lease expires
    t0 = time.monotonic()
    site.wait(lambda: site.states()["n1"] == "OFFLINE", deadline=10 + 5)
    assert time.monotonic() - t0 <= 10 + 5                   # the recorded TTL (10 s)
    status = site.cli("controller", "status", root=site.roots["n1"]).stdout
    assert "Lease: none" in status, status

    site.store_set("sqlite")
    assert site.recorded("n1") is None and site.recorded("n2") is None


def test_a_running_controller_follows_the_store_the_admin_switches_to(site: Site) -> None:
    """Started while the cluster used SQLite, the controller begins reporting once the admin
    host moves to etcd, moves its lease when the store's cluster id changes, and stops
    (its lease revoked) when the admin goes back to SQLite: no restart."""
    site.add("n1")
    ctl = site.start_controller("n1")                       # nothing to report to yet
    site.cli("cluster", "store", "migrate", "--to", site.etcd.url, "--cluster-id",
             site.cluster_id)
    site.wait(lambda: site.states()["n1"] == "ONLINE")
    first = site.cluster_id
    site.cluster_id = second = uuid.uuid4().hex[:8]          # another cluster in the same etcd
    site.cli("cluster", "store", "migrate", "--to", site.etcd.url, "--cluster-id",
             site.cluster_id)
    site.wait(lambda: site.states()["n1"] == "ONLINE")
    with site.store() as st:
        assert st.alive()["n1"]["pid"] == ctl.pid
    site.cluster_id = first
    with site.store() as st:                                 # the old one's lease was revoked
        site.wait(lambda: "n1" not in st.alive(), deadline=5)
    site.store_set("sqlite")

    def log() -> str:
        with open(f"{site.base}/controller-n1.log") as f:
            return f.read()

    site.wait(lambda: "this root reports to no store now" in log())
    assert ctl.poll() is None                                # the same controller throughout
    said = [ln.split("cluster store: ", 1)[1] for ln in log().splitlines()
            if "cluster store: " in ln]
    url = site.etcd.url
    assert said == [f"now reporting to {url} (cluster {first}) as n1",
                    f"now reporting to {url} (cluster {second}) as n1",
                    "this root reports to no store now"], said


def test_cluster_add_tells_and_an_unreachable_member_is_a_warning(site: Site) -> None:
    site.store_set()
    site.add("n1")                                           # an etcd cluster: told at once
    assert site.recorded("n1")["member"] == "n1"
    site.add("n2")
    os.unlink(Layout(site.roots["n2"]).cluster_member)
    away = site.roots["n2"] + ".away"
    os.rename(site.roots["n2"], away)                        # n2 does not answer now
    try:
        res = site.store_set()
        assert res.returncode == 0
        warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "member n2 " in warnings[0], res.stderr
        assert "cluster store set" in warnings[0]
    finally:
        os.rename(away, site.roots["n2"])
    assert site.recorded("n2") is None
    res = site.store_set()                                   # the next set tells it
    assert "warning" not in res.stderr and site.recorded("n2")["member"] == "n2"

    site.cli("cluster", "remove", "n1", "--force")          # removed: reports no more
    assert site.recorded("n1") is None and site.recorded("n2") is not None


def _volume(site: Site, n: str, name: str) -> None:
    """One event on member ``n`` (a custom volume made: ``storage-volume/default/NAME``)."""
    site.cli("storage", "volume", "create", "default", name, root=site.roots[n])


def test_events_written_while_the_store_is_away_arrive_once_in_order(site: Site) -> None:
    site.store_set()
    site.add("n1")
    layout = Layout(site.roots["n1"])
    _volume(site, "n1", "before")
    assert site.events("n1") == ["storage-volume/default/before"]

    site.etcd.kill(0)                                        # the store is away
    for name in ("a", "b", "c"):
        _volume(site, "n1", name)                            # each command still succeeds
    assert [e["object"] for e in store_events.backlog(layout)] == \
        [f"storage-volume/default/{x}" for x in "abc"]
    site.etcd.start(0)
    site.etcd.wait_healthy()
    assert site.events("n1") == ["storage-volume/default/before"]   # nothing until a write

    _volume(site, "n1", "d")                                 # the backlog first, then d
    assert site.events("n1") == [f"storage-volume/default/{x}" for x in
                                 ("before", "a", "b", "c", "d")]
    assert store_events.backlog(layout) == [] and not os.path.exists(layout.cluster_backlog)
    _monitor_sees(site, [f"storage-volume/default/{x}" for x in "abcd"])


def _monitor_sees(site: Site, objects: list[str]) -> None:
    """``monitor --all-members`` shows ``objects`` (n1's), each once, in this order."""
    env = {**os.environ, "PYTHONPATH": REPO}
    mon = subprocess.Popen([sys.executable, "-m", "sysmgr", "--root", site.admin, "monitor",
                            "--all-members", "--since", "10m", "--format", "json"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, mon.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        assert mon.stdout is not None
        for line in mon.stdout:
            e = json.loads(line)
            if e.get("member") == "n1":
                seen.append(e["object"])
            if seen[-1:] == objects[-1:]:
                break
    finally:
        watchdog.cancel()
        mon.send_signal(signal.SIGINT)
        mon.communicate(timeout=30)
    assert [o for o in seen if o in objects] == objects, seen


def test_the_heartbeat_flushes_the_backlog(site: Site) -> None:
    site.store_set()
    site.add("n1")
    site.etcd.kill(0)
    _volume(site, "n1", "while-away")
    layout = Layout(site.roots["n1"])
    assert len(store_events.backlog(layout)) == 1
    site.start_controller("n1")                              # its lease cannot be had yet
    site.etcd.start(0)
    site.etcd.wait_healthy()
    site.wait(lambda: not os.path.exists(layout.cluster_backlog))   # a beat flushed it
    assert site.events("n1").count("storage-volume/default/while-away") == 1
    site.wait(lambda: site.states()["n1"] == "ONLINE")


def _events(n: int, tag: str) -> list[dict[str, Any]]:
    t = time.time()
    return [{"time": t + i / 1000, "type": "lifecycle", "object": f"{tag}/{i}",
             "action": "created", "member": "n1", "id": uuid.uuid4().hex} for i in range(n)]


def test_a_flush_cut_off_or_run_twice_writes_each_event_once(site: Site) -> None:
    layout = Layout(site.roots["n1"])
    evs = _events(40, "cut")
    store_events.append(layout, evs)
    with site.store() as st:
        for e in evs[:15]:                 # written before a flush was killed, still queued
            st.add_event(e)
        assert store_events.flush(layout, st) == 40
    assert not os.path.exists(layout.cluster_backlog)
    assert site.events("n1") == [e["object"] for e in evs]

    more = _events(200, "two")
    store_events.append(layout, more)
    counts: list[int] = []

    def one() -> None:
        with site.store() as st:
            counts.append(store_events.flush(layout, st))
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while os.path.exists(layout.cluster_backlog):  # (the loser left what it saw to the winner)
        with site.store() as st:
            store_events.flush(layout, st)
    got = [o for o in site.events("n1") if o.startswith("two/")]
    assert got == [e["object"] for e in more]          # once each, in order


def test_the_backlog_is_bounded(tmp_path: Any) -> None:
    layout = Layout(str(tmp_path))
    store_events.append(layout, _events(store_events.BACKLOG_MAX, "old"))
    store_events.append(layout, _events(5, "new"))
    kept = store_events.backlog(layout)
    assert len(kept) == store_events.BACKLOG_KEEP                  # the oldest went
    assert [e["object"] for e in kept[-5:]] == [f"new/{i}" for i in range(5)]
