"""Copying and moving containers between two LOCAL cluster members, on the real kernel: btrfs
loop pools on both (and dir), busybox containers, the real CLI for the verbs.

Checked: a cold move with snapshots and data; a near-live move loses no acknowledged write;
copy and ``copy --refresh`` (only the change travels); dir <-> btrfs moves (tar); a target
pool that fills up mid-stream; the mover killed (SIGKILL) or interrupted (SIGINT) at every
step, then settled by ``move NAME`` again or ``init`` on the admin root — each time exactly
one copy is left, on one member, with its data, running as before; bad input changes
nothing on either member; evacuate moves and restore moves back. (The same over SSH, with a
member's sshd or sysmgr killed mid-stream, is tests/cluster/test_migration_ssh.py.)
"""

from __future__ import annotations

import json
import os
import threading

import pytest

import sysmgr
from sysmgr.api.mover import FAULT_POINTS
from tests.conftest import requires_root, run_cli

pytestmark = requires_root


def _btrfs_ok() -> bool:
    try:
        from sysmgr.drivers.storage.btrfs import BtrfsPool

        BtrfsPool.check_host()
        return True
    except Exception:  # noqa: BLE001 - any reason means: skip
        return False


needs_btrfs = pytest.mark.skipif(not _btrfs_ok(), reason="btrfs-progs or btrfsutil missing")


class Pair:
    """An admin root with local members n1 (the busybox image) and n2, each with the default
    dir pool and a btrfs loop pool ``bt``."""

    def __init__(self, base: str) -> None:
        self.roots = {n: os.path.join(base, n) for n in ("n1", "n2")}
        self.admin = os.path.join(base, "admin")
        for n, root in self.roots.items():
            with sysmgr.Client(root=root) as c:
                c.init(storage_driver="dir")
                c.storage_pools.create("bt", "btrfs", config={"size": "1GiB"})
                if n == "n1":
                    c.images.build("busybox", alias="busybox", pool="bt")
        for n, root in self.roots.items():
            self.cli("cluster", "add", n, "local:", "--root", root)

    def cli(self, *args: str, ok: bool = True, env: dict | None = None, root: str | None = None):
        res = run_cli(*args, root=root or self.admin, env=env)
        if ok:
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    def client(self, member: str | None = None) -> sysmgr.Client:
        return sysmgr.Client(root=self.roots[member]) if member else sysmgr.Client(root=self.admin)

    def launch(self, name: str, pool: str = "bt", start: bool = True, **config: str):
        with self.client("n1") as c:
            c.containers.create(name, "busybox", start=start, config=config or None,
                                devices={"root": {"type": "disk", "path": "/", "pool": pool}})

    def where(self, name: str) -> list[tuple[str, str]]:
        """(member, status) of every copy of ``name``."""
        out = []
        for m in self.roots:
            with self.client(m) as c:
                if c.containers.exists(name):
                    out.append((m, c.containers.get(name).status))
        return out

    def run(self, member: str, name: str, script: str) -> str:
        with self.client(member) as c:
            code, out, err = c.containers.get(name).execute(["sh", "-c", script])
        assert code == 0, err
        return out

    def leftovers(self, member: str, name: str) -> list[str]:
        """Anything of ``name`` on ``member`` besides a container record: volumes,
        snapshots (temporary ones too), intents; and the admin's unsettled moves."""
        root = self.roots[member]
        found = []
        for pool in ("bt", "default"):
            for sub in ("containers", "snapshots"):
                for base in (os.path.join(root, "storage-pools", pool, "mnt", sub),
                             os.path.join(root, "storage-pools", pool, sub)):
                    p = os.path.join(base, name)
                    if os.path.exists(p):
                        found.append(p)
        intents = os.path.join(root, "tmp", "intents")
        found += [os.path.join(intents, n) for n in os.listdir(intents)] \
            if os.path.isdir(intents) else []
        moves = os.path.join(self.admin, "cluster", "migrations")
        found += os.listdir(moves) if os.path.isdir(moves) else []
        return found

    def temp_snapshots(self, member: str, name: str) -> list[str]:
        d = os.path.join(self.roots[member], "storage-pools", "bt", "mnt", "snapshots", name)
        return [n for n in os.listdir(d) if n.startswith("mig-")] if os.path.isdir(d) else []

    def close(self) -> None:
        for root in self.roots.values():
            with sysmgr.Client(root=root) as c:
                for ct in c.containers.all():
                    for key in ("security.protection.delete",):
                        if ct.config.get(key):
                            ct.set_config({}, unset=[key])
                    ct.delete(force=True)
                for img in c.images.all():
                    img.delete()
                c.storage_pools.get("bt").delete()


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory):
    if not _btrfs_ok():
        pytest.skip("btrfs-progs or btrfsutil missing")
    p = Pair(str(tmp_path_factory.mktemp("mig")))
    try:
        yield p
    finally:
        p.close()


def _subvol(path: str):
    import btrfsutil

    return btrfsutil.subvolume_info(path), btrfsutil.get_subvolume_read_only(path)


# -- moves ------------------------------------------------------------------------------------

def test_cold_move_keeps_data_and_snapshots(pair: Pair) -> None:
    pair.launch("c1", **{"security.idmap.isolated": "true"})
    with pair.client("n1") as c:
        security = c.containers.get("c1").security
    pair.run("n1", "c1", "echo first > /root/f")
    pair.cli("snapshot", "create", "c1", "s1")
    pair.run("n1", "c1", "echo second > /root/g")
    pair.cli("snapshot", "create", "c1", "s2")
    res = pair.cli("move", "c1", "--target", "n2", "--stateless")
    assert "Container c1 moved from n1 to n2: stopped first, " in res.stdout and "as a btrfs stream" in res.stdout
    assert "Downtime" in res.stdout
    assert pair.where("c1") == [("n2", "Running")]
    assert pair.run("n2", "c1", "cat /root/f /root/g") == "first\nsecond\n"
    # its id map block travelled (free on n2), and its files are root's inside
    assert "isolated" not in security and "host ids 1065536+65536" in security, security
    with pair.client("n2") as c:
        assert c.containers.get("c1").security == security
    assert pair.run("n2", "c1", "stat -c %u:%g /root/f") == "0:0\n"
    rows = json.loads(pair.cli("snapshot", "list", "c1", "-f", "json").stdout)
    assert [r["name"] for r in rows] == ["s1", "s2"]
    snaps = os.path.join(pair.roots["n2"], "storage-pools", "bt", "mnt", "snapshots", "c1")
    for s in ("s1", "s2"):  # received: read-only, with the sender's UUID as received UUID
        info, ro = _subvol(os.path.join(snaps, s))
        assert ro and any(info.received_uuid)
    assert sorted(os.listdir(snaps)) == ["s1", "s2"]              # no temporary snapshot
    assert pair.leftovers("n1", "c1") == []                       # the source's copy is gone
    with pair.client("n2") as c:
        assert c.images.all() == []                               # the image was not needed
        assert c.containers.get("c1").last_migration["from"] == "n1"
    info = pair.cli("info", "c1").stdout
    assert "Last move: from n1 to n2" in info and "Downtime:" in info
    # each member's event log says which way it went
    for member, way, peer in (("n1", "moved-out", "n2"), ("n2", "moved-in", "n1")):
        with pair.client(member) as c:
            moved = [(e.action, e.member) for e in c.events.all() if e.action.startswith("moved")]
        assert moved == [(way, peer)], member
    # back, near-live this time; the snapshots' received identities let it go as increments
    res = pair.cli("move", "c1", "n1:")
    assert "near-live" in res.stdout and pair.where("c1") == [("n1", "Running")]
    assert pair.run("n1", "c1", "cat /root/f") == "first\n"


def test_near_live_move_loses_no_acknowledged_write(pair: Pair) -> None:
    pair.launch("w1", **{"migration.precopy.threshold": "64KiB"})
    # churn: ~256 KiB rewritten every 0.1 s, so that rounds have something to send
    pair.run("n1", "w1", "(while :; do head -c 262144 /dev/urandom > /root/churn; sleep 0.1; "
                         "done) >/dev/null 2>&1 &")
    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with pair.client("n1") as c:
            ct = c.containers.get("w1")
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    code, _, _ = ct.execute(["sh", "-c", f"echo {n} >> /root/log"])
                except sysmgr.SysmgrError:
                    return  # stopped (or gone): no more acknowledgements
                if code != 0:
                    return
                acked.append(n)

    t = threading.Thread(target=writer)
    t.start()
    try:
        with pair.client() as admin:
            r = admin.containers.get("w1").migrate("n2")
    finally:
        stop.set()
        t.join()
    assert r.kind == "live" and len(r.rounds) >= 2 and r.downtime is not None
    assert r.downtime.sysmgr > 0 and r.downtime.shutdown > 0
    assert acked, "the writer never got an acknowledgement"
    lines = [int(x) for x in pair.run("n2", "w1", "cat /root/log").split()]
    assert lines[:len(acked)] == acked                  # every acknowledged write is there
    assert lines[-1] >= acked[-1]                       # ... up to the last one
    assert pair.where("w1") == [("n2", "Running")] and pair.leftovers("n1", "w1") == []


def test_moves_between_dir_and_btrfs(pair: Pair) -> None:
    pair.launch("d1", pool="default")
    pair.run("n1", "d1", "echo on-dir > /root/f")
    pair.cli("snapshot", "create", "d1", "s1")
    res = pair.cli("move", "d1", "--target", "n2", "-s", "bt")
    assert "tar stream" in res.stdout and "moved stopped" in res.stdout   # no live move on dir
    with pair.client("n2") as c:
        ct = c.containers.get("d1")
        assert ct.pool == "bt" and [s.name for s in ct.snapshots.all()] == ["s1"]
    assert pair.run("n2", "d1", "cat /root/f") == "on-dir\n"
    pair.cli("move", "d1", "--target", "n1", "-s", "default")
    assert pair.where("d1") == [("n1", "Running")]
    assert pair.run("n1", "d1", "cat /root/f") == "on-dir\n"
    assert pair.leftovers("n2", "d1") == []


# -- copies -----------------------------------------------------------------------------------

def test_copy_and_refresh_send_only_the_change(pair: Pair) -> None:
    pair.launch("src")
    pair.run("n1", "src", "head -c 20000000 /dev/urandom > /root/big")
    pair.cli("snapshot", "create", "src", "base")
    with pair.client() as admin:
        src = admin.containers.get("src")
        copied = src.copy("dst", target="n2")
        full = copied.transfer.bytes
        assert copied.location == "n2" and copied.status == "Stopped" and full > 20_000_000
        pair.run("n1", "src", "head -c 1048576 /dev/urandom > /root/change")
        sent = src.copy("dst", target="n2", refresh=True).transfer.bytes
    assert 1_048_576 < sent < 1_048_576 + 512 * 1024, sent       # the change, not the 20 MB
    res = pair.cli("copy", "src", "n2:dst", "--refresh")
    assert res.stdout.startswith("Container n2:dst refreshed from src")
    pair.cli("snapshot", "delete", "src", "base")
    pair.cli("snapshot", "create", "src", "later")
    pair.cli("copy", "src", "n2:dst", "--refresh")
    with pair.client("n2") as c:
        dst = c.containers.get("dst")
        assert [s.name for s in dst.snapshots.all()] == ["later"]  # follows the source's set
        dst.start()
        assert dst.execute(["hostname"]).stdout == "dst\n"          # its own identity
    assert pair.run("n2", "dst", "wc -c < /root/change").strip() == "1048576"
    with pair.client("n2") as c:
        arrivals = [e.action for e in c.events.all() if e.object == "container/dst"]
    assert arrivals[:4] == ["copied", "refreshed", "refreshed", "refreshed"], arrivals
    assert pair.where("src") == [("n1", "Running")]                 # the source untouched


# -- failures ---------------------------------------------------------------------------------

def test_target_pool_filling_up_mid_stream_changes_nothing(pair: Pair) -> None:
    with pair.client("n2") as c:
        c.storage_pools.create("tiny", "btrfs", config={"size": "200MiB"})
    try:
        pair.launch("f1")
        # the live tree is small (the space check passes), a snapshot holds 150 MB more
        pair.run("n1", "f1", "head -c 150000000 /dev/urandom > /root/big")
        pair.cli("snapshot", "create", "f1", "fat")
        pair.run("n1", "f1", "rm /root/big")
        res = pair.cli("move", "f1", "--target", "n2", "-s", "tiny", ok=False)
        assert res.returncode == 1 and "is full" in res.stderr, res.stderr
        assert pair.where("f1") == [("n1", "Running")]
        assert pair.leftovers("n2", "f1") == [] and pair.temp_snapshots("n1", "f1") == []
        import btrfsutil

        mnt = os.path.join(pair.roots["n2"], "storage-pools", "tiny", "mnt")
        assert [p for p, _ in btrfsutil.SubvolumeIterator(mnt) if "f1" in p] == []
    finally:
        with pair.client("n2") as c:
            c.storage_pools.get("tiny").delete()


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_mover_killed_at_each_step_leaves_one_good_copy(pair: Pair, point: str) -> None:
    pair.launch("k1")
    pair.run("n1", "k1", "echo precious > /root/data")
    res = pair.cli("move", "k1", "--target", "n2", ok=False, env={"SYSMGR_FAULT": point})
    assert res.returncode == -9, (res.stdout, res.stderr)
    # settled by the same move again, or by init on the admin root
    if FAULT_POINTS.index(point) % 2:
        res = pair.cli("move", "k1")
    else:
        res = pair.cli("init", "--auto", "--storage-driver", "dir", "--network", "none")
    assert "settled the interrupted move of k1" in res.stdout, res.stdout
    home = "n2" if point in ("committed", "started", "released") else "n1"
    assert pair.where("k1") == [(home, "Running")]
    assert pair.run(home, "k1", "cat /root/data") == "precious\n"
    other = "n1" if home == "n2" else "n2"
    assert pair.leftovers(other, "k1") == [] and pair.temp_snapshots(home, "k1") == []
    with pair.client(home) as c:
        assert c.containers.get("k1").migration is None          # no mark left


def test_ctrl_c_rolls_the_move_back(pair: Pair) -> None:
    pair.launch("i1")
    res = pair.cli("move", "i1", "--target", "n2", ok=False, env={"SYSMGR_FAULT": "copied:INT"})
    assert res.returncode == 130 and "interrupted" in res.stderr.lower(), res.stderr
    assert pair.where("i1") == [("n1", "Running")]
    assert pair.leftovers("n2", "i1") == [] and pair.temp_snapshots("n1", "i1") == []
    with pair.client("n1") as c:
        assert c.containers.get("i1").migration is None


def test_bad_input_changes_nothing(pair: Pair) -> None:
    pair.launch("b1")
    pair.launch("taken", start=False)
    cases = [
        (("move", "b1", "--target", "nosuch"), "nosuch"),
        (("move", "b1", "--target", "n2", "-s", "nopool"), "no storage pool 'nopool'"),
        (("move", "b1", "n1:taken"), "already exists on n1"),
        (("copy", "b1", "n2:b1x", "--refresh"), "no copy b1x to refresh"),
    ]
    for args, says in cases:
        res = pair.cli(*args, ok=False)
        assert res.returncode in (1, 2) and says in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) <= 2, res.stderr   # one line (and a hint)
    pair.cli("config", "set", "b1", "security.protection.delete=true")
    res = pair.cli("move", "b1", "--target", "n2", ok=False)
    assert res.returncode == 1 and "protected" in res.stderr
    pair.cli("cluster", "evacuate", "n2", "--yes")
    res = pair.cli("move", "b1", "--target", "n2", ok=False)
    assert res.returncode == 1 and "n2 is evacuated" in res.stderr
    pair.cli("cluster", "restore", "n2")
    assert pair.where("b1") == [("n1", "Running")] and pair.where("b1x") == []
    assert pair.leftovers("n2", "b1") == [] and pair.temp_snapshots("n1", "b1") == []
    with pair.client("n1") as c:
        assert c.containers.get("b1").migration is None


def test_evacuate_moves_and_restore_moves_back(pair: Pair) -> None:
    pair.launch("e1", **{"cluster.evacuate": "migrate"})
    pair.launch("e2", **{"cluster.evacuate": "stop"})
    pair.run("n1", "e1", "echo kept > /root/f")
    res = pair.cli("cluster", "evacuate", "n1", "--yes")
    assert "moved e1 to n2" in res.stdout and "stopped e2" in res.stdout
    assert pair.where("e1") == [("n2", "Running")] and pair.where("e2") == [("n1", "Stopped")]
    res = pair.cli("cluster", "restore", "n1")
    assert "moved e1 back to n1" in res.stdout and "started e2" in res.stdout
    assert pair.where("e1") == [("n1", "Running")] and pair.where("e2") == [("n1", "Running")]
    assert pair.run("n1", "e1", "cat /root/f") == "kept\n"
