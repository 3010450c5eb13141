"""Moving containers between cluster members over real SSH (issue 11), through the CLI as
the admin. One two-member cluster serves the module (test hosts: network namespaces with
their own sshd and sysmgr root, :mod:`tests.cluster.hosts`); both members have a btrfs loop
pool ``bt``, m2 also a small one (``small``, 128 MiB) and m1 a dir pool only it has.

- a cold move with two snapshots (received read-only, with a received UUID) and a near-live
  move of a container written to without pause (no acknowledged write lost);
- a move cut short mid-stream: the target's sshd and sessions killed, the target's sysmgr
  killed, the target pool filling up; the mover killed at two steps, then settled by
  ``sysmgr move NAME``;
- bad input refused before anything changes.

After each failure nothing changed on either host (:func:`assert_unchanged`). Each test
deletes its containers (the ``cl`` fixture), so the next starts from two empty members.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

import pytest

import sysmgr
from sysmgr.errors import SysmgrError
from tests.cluster.hosts import TestCluster, TestMember
from tests.conftest import REPO, requires_root

pytestmark = [requires_root, pytest.mark.slow]

POOL = "bt"
SMALL = "small"   # on m2: 128 MiB, about 47 MiB of it writable
SOLO = "solo"     # on m1 only (dir)
BIG_MB = 150      # a container bigger than SMALL, slow enough to be cut mid-stream


@pytest.fixture(scope="module")
def pair(module_cluster) -> TestCluster:
    cluster = module_cluster(2)
    for m in cluster.members:
        ok(cluster, "cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
           "--sysmgr", m.sysmgr)
        m.create_btrfs_pool(POOL, "1GiB")
    m1, m2 = cluster.members
    m2.create_btrfs_pool(SMALL, "128MiB")
    res = m1.run_sysmgr("storage", "create", SOLO, "dir")
    assert res.returncode == 0, res.stderr
    res = m1.run_sysmgr("image", "build", "busybox", "--alias", "busybox", "-s", POOL)
    assert res.returncode == 0, res.stderr
    return cluster


@pytest.fixture
def cl(pair: TestCluster) -> Iterator[TestCluster]:
    """The module's cluster; afterwards both members' sshd run and their containers are
    gone (a failed test may have left them half-moved)."""
    yield pair
    for m in pair.members:
        if m.sshd is None:
            m.start_sshd()
    wait_quiet(pair)
    for m in pair.members:
        m.clear()
    for name in journal(pair):
        os.unlink(os.path.join(pair.admin_root, "cluster", "migrations", name))


# -- helpers -----------------------------------------------------------------------------------

def ok(cluster: TestCluster, *args: str, **kw) -> subprocess.CompletedProcess:
    res = cluster.cli(*args, **kw)
    assert res.returncode == 0, \
        f"sysmgr {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def launch(cluster: TestCluster, name: str, member: str = "m1", *, mb: int = 0) -> None:
    """A running container on ``member``'s pool ``bt`` with a file /root/f (and ``mb`` MB
    of random data in /root/big, its checksum in /root/big.md5)."""
    ok(cluster, "launch", "busybox", name, "--target", member, "-s", POOL)
    script = "echo hello > /root/f"
    if mb:
        script += (f"; dd if=/dev/urandom of=/root/big bs=1M count={mb} 2>/dev/null"
                   "; md5sum /root/big > /root/big.md5")
    sh(cluster, name, script)


def sh(cluster: TestCluster, name: str, script: str) -> str:
    return ok(cluster, "exec", name, "--", "sh", "-c", script).stdout


def placed(cluster: TestCluster) -> list[tuple[str, str, str]]:
    """(name, member, status) of every container of the cluster (a name twice if two
    members hold it)."""
    rows = json.loads(ok(cluster, "list", "--format", "json").stdout)
    return sorted((r["name"], r["location"], r["status"]) for r in rows)


def volumes_of(m: TestMember, name: str) -> list[str]:
    """What the member's pools hold of container ``name`` (its volume, its snapshots) and
    any volume half-made or half-deleted."""
    found = []
    for pool in (POOL, SMALL):
        base = m.pool_path(pool)
        if not os.path.isdir(base):
            continue
        found += [os.path.join(base, n) for n in os.listdir(base)
                  if n.startswith((".staging-", ".deleting-"))]
        if os.path.lexists(os.path.join(base, "containers", name)):
            found.append(os.path.join(base, "containers", name))
        snaps = os.path.join(base, "snapshots", name)
        if os.path.isdir(snaps):
            found += [os.path.join(snaps, n) for n in sorted(os.listdir(snaps))]
    return found


def snapshots_on_disk(m: TestMember, name: str) -> list[str]:
    d = os.path.join(m.pool_path(POOL), "snapshots", name)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def intents(m: TestMember) -> list[str]:
    d = os.path.join(m.root, "tmp", "intents")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def journal(cluster: TestCluster) -> list[str]:
    d = os.path.join(cluster.admin_root, "cluster", "migrations")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def wait_quiet(cluster: TestCluster, limit: float = 60) -> None:
    """Until no migration endpoint runs on any member (one whose mover went away cleans up
    after itself before it exits), nor a ``btrfs send``/``receive`` (a killed endpoint's
    outlives it until it reads the end of its pipe)."""
    def busy() -> dict[str, list[int]]:
        return {m.name: pids for m in cluster.members
                if (pids := m.pids("_stream") + m.pids("btrfs send") + m.pids("btrfs receive"))}

    deadline = time.monotonic() + limit
    while busy():
        assert time.monotonic() < deadline, busy()
        time.sleep(0.05)


def assert_one_copy(cluster: TestCluster, name: str, where: str, status: str = "Running",
                    *, check: str = "cat /root/f") -> str:
    """``name`` is on member ``where`` only, in ``status``, with its data (``check`` runs in
    it and must succeed); no trace of a move is left: nothing of it on the other member, no
    temporary snapshot, no intent on either member, no journal entry on the admin."""
    wait_quiet(cluster)
    assert [r for r in placed(cluster) if r[0] == name] == [(name, where, status)]
    for m in cluster.members:
        assert intents(m) == [], m.name
        if m.name != where:
            assert volumes_of(m, name) == [], m.name
    here = next(m for m in cluster.members if m.name == where)
    assert [s for s in snapshots_on_disk(here, name) if s.startswith("mig-")] == []
    assert journal(cluster) == []
    if status == "Running":
        return sh(cluster, name, check)
    return ""


def assert_unchanged(cluster: TestCluster, name: str, status: str = "Running", *,
                     check: str = "cat /root/f") -> None:
    """Nothing changed on either host: ``name`` still on m1 alone, as it was."""
    assert_one_copy(cluster, name, "m1", status, check=check)


def record_volatile(m: TestMember, name: str) -> dict:
    """The volatile keys of ``name``'s record on member ``m`` (read in its namespace)."""
    code = ("import json, sys, sysmgr\n"
            "with sysmgr.Client(root=sys.argv[1]) as c:\n"
            "    print(json.dumps(c.host.store.container(sys.argv[2]).volatile))\n")
    res = subprocess.run(m.ns.argv(sys.executable, "-c", code, m.root, name),
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO),
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def one_error(res: subprocess.CompletedProcess, *words: str, codes=(1, 2)) -> str:
    """The command failed with ``codes`` (1: failed, 2: bad input) and said why in one line
    naming ``words`` (other stderr lines: progress, what the rollback did, a hint)."""
    assert res.returncode in codes, f"{res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], res.stderr
    return errors[0]


def move_cut_short(cluster: TestCluster, name: str, cut: Callable[[], None],
                   *args: str) -> subprocess.CompletedProcess:
    """``sysmgr move NAME --target m2`` run in the background; ``cut()`` once its first
    round streams into m2's pool (a subvolume being received there)."""
    m2 = cluster.members[1]
    argv = cluster.cli_argv("move", name, "--target", "m2", *args)
    with subprocess.Popen(argv, env=cluster.cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            while not snapshots_on_disk(m2, name):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "nothing arrived on m2"
                time.sleep(0.01)
            time.sleep(0.3)  # some of the data, not all (150 MB take over a second)
            assert proc.poll() is None, "the move ended before it could be cut short"
            cut()
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


# -- moves that succeed ------------------------------------------------------------------------

def test_cold_move_with_two_snapshots(cl: TestCluster) -> None:
    import btrfsutil

    m1, m2 = cl.members
    launch(cl, "c1")
    ok(cl, "snapshot", "create", "c1", "s1")
    sh(cl, "c1", "echo second > /root/g")
    ok(cl, "snapshot", "create", "c1", "s2")
    sh(cl, "c1", "echo third > /root/h")

    res = ok(cl, "move", "c1", "--target", "m2", "--stateless")
    assert "Container c1 moved from m1 to m2: stopped first" in res.stdout, res.stdout
    out = assert_one_copy(cl, "c1", "m2", check="cat /root/f /root/g /root/h")
    assert out == "hello\nsecond\nthird\n"
    assert volumes_of(m1, "c1") == []
    snaps = json.loads(ok(cl, "snapshot", "list", "c1", "--format", "json").stdout)
    assert [s["name"] for s in snaps] == ["s1", "s2"]
    # on m2: the snapshots as btrfs received them (read-only, a received UUID: the next
    # copy --refresh finds its base by it), each with its own content; the volume writable
    base = m2.pool_path(POOL)
    for snap, files in (("s1", {"f"}), ("s2", {"f", "g"})):
        path = os.path.join(base, "snapshots", "c1", snap)
        info = btrfsutil.subvolume_info(path)
        assert any(info.received_uuid), snap
        assert btrfsutil.get_subvolume_read_only(path), snap
        assert set(os.listdir(os.path.join(path, "root"))) == files
    vol = os.path.join(base, "containers", "c1")
    assert btrfsutil.is_subvolume(vol) and not btrfsutil.get_subvolume_read_only(vol)
    assert snapshots_on_disk(m2, "c1") == ["s1", "s2"]


def _writer(cluster: TestCluster, name: str, acked: list[int], stop: threading.Event) -> None:
    """Append 1, 2, 3... to /root/log in ``name`` on m1, one exec each, until an exec fails
    (the container stopped for the last round); ``acked``: the numbers acknowledged."""
    with cluster.admin(), sysmgr.Client(root=cluster.admin_root, member="m1") as client:
        ct = client.containers.get(name)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                res = ct.execute(["sh", "-c", f"echo {n} >> /root/log"])
            except SysmgrError:
                return
            if res.exit_code != 0:
                return
            acked.append(n)


def test_near_live_move_loses_no_acknowledged_write(cl: TestCluster) -> None:
    launch(cl, "w1")
    acked: list[int] = []
    stop = threading.Event()
    t = threading.Thread(target=_writer, args=(cl, "w1", acked, stop), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 3:
            assert t.is_alive() and time.monotonic() < deadline, acked
            time.sleep(0.01)
        before = acked[-1]
        res = cl.cli("move", "w1", "--target", "m2")
    finally:
        stop.set()
        t.join(60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "near-live" in res.stdout, res.stdout
    m = re.search(r"Downtime ([\d.]+) s: the guest's shutdown ([\d.]+) s, sysmgr ([\d.]+) s",
                  res.stdout)
    assert m and float(m[1]) > 0 and float(m[3]) > 0, res.stdout
    assert acked[-1] > before, "no write was acknowledged while the move ran"
    log = [int(x) for x in assert_one_copy(cl, "w1", "m2", check="cat /root/log").split()]
    last = record_volatile(cl.members[1], "w1")["last_migration"]  # kept with the record
    assert (last["from"], last["to"]) == ("m1", "m2") and set(last["downtime"]) == \
        {"shutdown", "sysmgr", "boot"}, last
    # every acknowledged write, in order; at most one more (done, its answer lost)
    assert log == list(range(1, len(log) + 1)), log
    assert acked[-1] <= log[-1] <= acked[-1] + 1, (acked[-1], log[-1:])


# -- moves cut short ---------------------------------------------------------------------------

def test_target_sshd_killed_mid_stream(cl: TestCluster) -> None:
    m2 = cl.members[1]
    launch(cl, "k1", mb=BIG_MB)
    res = move_cut_short(cl, "k1", m2.kill_sshd)
    one_error(res, codes=(1,))
    m2.start_sshd()
    # the target's endpoint lost its mover and removed what had arrived on its own
    assert_unchanged(cl, "k1", check="md5sum -c /root/big.md5")


def test_target_sysmgr_killed_mid_stream(cl: TestCluster) -> None:
    m2 = cl.members[1]

    def kill_target() -> None:
        pids = m2.pids("_stream migrate")
        assert pids, m2.ns.strays()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    launch(cl, "k2", mb=BIG_MB)
    res = move_cut_short(cl, "k2", kill_target)
    one_error(res, codes=(1,))
    # the killed endpoint's partial copy went when the mover settled the move on m2; if its
    # `btrfs receive` outlived it long enough to keep that settle from deleting the partial
    # snapshot, the endpoint's intent covers it and m2's next recovery removes it
    wait_quiet(cl)
    if volumes_of(m2, "k2"):
        assert intents(m2), volumes_of(m2, "k2")
        recovered = m2.run_sysmgr("init", "--auto", "--network", "none")
        assert "unfinished import of container k2" in recovered.stdout, recovered.stdout
    assert_unchanged(cl, "k2", check="md5sum -c /root/big.md5")
    # and nothing it left stands in the way of the next try
    ok(cl, "move", "k2", "--target", "m2")
    assert_one_copy(cl, "k2", "m2", check="md5sum -c /root/big.md5")


def test_target_pool_fills_up_mid_stream(cl: TestCluster) -> None:
    # the space a container needs is known from its volume: a snapshot holding 60 MB the
    # volume no longer has passes the check, and fills the small pool (about 47 MB hold data)
    launch(cl, "p1", mb=60)
    ok(cl, "snapshot", "create", "p1", "s1")
    sh(cl, "p1", "rm /root/big")
    res = cl.cli("move", "p1", "--target", "m2", "-s", SMALL)
    one_error(res, repr(SMALL), "full", codes=(1,))
    assert_unchanged(cl, "p1")
    snaps = json.loads(ok(cl, "snapshot", "list", "p1", "--format", "json").stdout)
    assert [s["name"] for s in snaps] == ["s1"]


@pytest.mark.parametrize("point, where", [("stopped", "m1"), ("committed", "m2")])
def test_mover_killed_then_settled(cl: TestCluster, point: str, where: str) -> None:
    name = f"f{point[:4]}"
    launch(cl, name)
    res = cl.cli("move", name, "--target", "m2", env={"SYSMGR_FAULT": point})
    assert res.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), res.stderr
    assert len(journal(cl)) == 1
    wait_quiet(cl)
    # stopped for the last round, running nowhere until the move is settled; the target
    # keeps a copy only once it committed it
    held = [(name, "m1", "Stopped")] + ([(name, "m2", "Stopped")] if where == "m2" else [])
    assert [r for r in placed(cl) if r[0] == name] == held
    res = ok(cl, "move", name)
    assert f"settled the interrupted move of {name}" in res.stdout, res.stdout
    assert assert_one_copy(cl, name, where) == "hello\n"


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input_changes_nothing(cl: TestCluster) -> None:
    m2 = cl.members[1]
    launch(cl, "b1", mb=BIG_MB)
    check = "md5sum -c /root/big.md5"

    one_error(cl.cli("move", "b1", "--target", "nosuch"), "nosuch")
    assert_unchanged(cl, "b1", check=check)
    one_error(cl.cli("move", "b1", "--target", "m2", "-s", "nosuch"), "'nosuch'")
    assert_unchanged(cl, "b1", check=check)

    # the source's pool is missing on the target
    ok(cl, "create", "busybox", "b2", "--target", "m1", "-s", SOLO)
    one_error(cl.cli("move", "b2", "--target", "m2"), repr(SOLO))
    assert_unchanged(cl, "b2", "Stopped", check="")

    # the name is taken there
    ok(cl, "create", "busybox", "b3", "--target", "m2", "-s", POOL)
    one_error(cl.cli("move", "b1", "m2:b3"), "b3", "m2")
    assert [r for r in placed(cl) if r[0] == "b3"] == [("b3", "m2", "Stopped")]
    assert_unchanged(cl, "b1", check=check)

    # protected: a move deletes it here
    ok(cl, "config", "set", "b1", "security.protection.delete=true")
    one_error(cl.cli("move", "b1", "--target", "m2"), "protected")
    assert_unchanged(cl, "b1", check=check)
    ok(cl, "config", "unset", "b1", "security.protection.delete")

    # too little space on the target: refused before anything is sent
    res = cl.cli("move", "b1", "--target", "m2", "-s", SMALL)
    one_error(res, repr(SMALL), "free", codes=(1,))
    assert "sent" not in res.stderr + res.stdout, res.stderr  # not one round began
    assert_unchanged(cl, "b1", check=check)

    # the target offline
    m2.kill_sshd()
    try:
        one_error(cl.cli("move", "b1", "--target", "m2"), "m2")
    finally:
        m2.start_sshd()
    assert_unchanged(cl, "b1", check=check)


def test_static_address_and_mac_kept_on_the_same_network(cl: TestCluster) -> None:
    """Both members have a managed network ``lan`` with the same subnet (each host its own
    bridge and dnsmasq, in its own namespace): a moved container keeps its static address
    and its MAC, and answers there (and no longer on the source)."""
    m1, m2 = cl.members
    for m in (m1, m2):
        ok(cl, "network", "create", "lan", "ipv4.address=10.99.0.1/24", "ipv4.nat=false",
           "--target", m.name)
    try:
        ok(cl, "launch", "busybox", "n1", "--target", "m1", "-s", POOL, "-d",
           "eth0,type=nic,network=lan,ipv4.address=10.99.0.50")
        before = json.loads(ok(cl, "info", "n1", "-f", "json").stdout)["network"]["eth0"]
        assert m1.ns.ping("10.99.0.50", 2)
        res = ok(cl, "move", "n1", "--target", "m2")
        assert "new address" not in res.stdout, res.stdout
        after = json.loads(ok(cl, "info", "n1", "-f", "json").stdout)["network"]["eth0"]
        assert (after["ipv4"], after["hwaddr"]) == ("10.99.0.50", before["hwaddr"])
        assert m2.ns.ping("10.99.0.50", 2) and not m1.ns.ping("10.99.0.50")
        out = sh(cl, "n1", "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0")
        assert before["hwaddr"] in out and "10.99.0.50/24" in out
    finally:
        for m in (m1, m2):
            m.clear()
            cl.cli("network", "delete", "lan", "--target", m.name)
