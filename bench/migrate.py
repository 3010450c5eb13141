#!/usr/bin/env python3
"""Migration benchmark (issue 11): prints medians (never asserts).

Builds two test hosts (network namespaces with their own sshd and sysmgr root, the test
suite's :mod:`tests.cluster.hosts`) and a ``local:`` member (a root of the admin host, in the
admin's namespace), each with a btrfs loop pool ``bt``; a busybox container on ``m1`` (and
one on ``local``) holds 300 MB of random data. In one run, through the Python API:

1. **Throughput of the first full send**: ``copy`` of the 300 MB container to ``m2`` (bytes
   sent / wall time of the API call: opening both endpoints, the temporary snapshot, the
   send, the target's commit), beside OpenSSH's ``btrfs send SNAP | ssh m2 btrfs receive DIR``
   of a read-only snapshot of the same subvolume (its whole pipeline timed: ssh's connection
   included). Run in turn - sysmgr with the member connections of its muxes (the default,
   ``ssh.persist``), sysmgr with ``SYSMGR_SSH_PERSIST=0`` (a direct connection made for the
   copy), OpenSSH - one warm-up turn not counted; the received copy is deleted and btrfs's
   cleaner waited for after each run. Also printed: the rate while the stream flows (first
   to last byte the mover passes on), which leaves out the fixed costs.

   a. ``m1 -> m2``: sysmgr's mover runs on the admin host, so the stream takes two SSH hops
      (m1 -> admin -> m2) and is decrypted and encrypted once more on the admin; OpenSSH
      runs from m1's namespace (one hop);
   b. ``local -> m2``, the fair comparison (one hop each): the source is a ``local:`` member
      (a root of the admin host; its endpoint is a thread of the mover); OpenSSH runs from
      the admin's namespace.

   Target: sysmgr >= 0.8x OpenSSH's MB/s.
2. **Downtime of a near-live move**: the container running, a loop in it rewriting a 1 MB
   file every 0.5 s, moved ``m1 -> m2`` and back alternately (``--moves``, 5); the medians
   of the three parts of its downtime: the guest's shutdown (busybox init pauses about 2 s
   on halt), **sysmgr's share** (source init exited -> target init runs: the final
   increment, the commit, the start; target <= 0.5 s) and the guest's boot; the rounds and
   their bytes. The loop's 1 MB travels in the pre-copy round after the first; the halt
   ends the loop (busybox init signals every process first), so the final round carries
   what changed between the last pre-copy snapshot and the stop: nothing much, or the
   loop's 1 MB when it rewrote its file in that moment.
3. **copy --refresh**: a full copy (the container with a snapshot ``base``), then refreshes
   after a 1 MB and after a 50 MB change: time and bytes sent (the copy's ``transfer``),
   which follow the change, not the size. A refresh sends the snapshots taken since the
   newest snapshot both sides hold (matched by UUID), each as an increment of the one
   before, then the container's current state as an increment of the newest of them. Both
   ways give a small send: without a new snapshot the common one stays ``base``, so a
   refresh sends everything changed since ``base`` (a rewritten file whole: each row
   rewrites one file, deleted after the row, so a row's refreshes stay at its size, but
   changes pile up between refreshes); with a snapshot taken after the change ("+ a
   snapshot") that snapshot travels as an increment and becomes the next base. With no
   common snapshot at all, a refresh sends the whole container again.

Run as root from a checkout: ``.venv/bin/python bench/migrate.py [--runs N]`` (``--runs``:
the throughput turns and refresh rows, default 3; ``--moves``: the near-live moves, default
5). Everything is deleted at the end (containers, pools and their loop devices, the
namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import teardown  # noqa: E402

MB = 1000 * 1000
DATA = 300 * MB
POOL, POOL_SIZE = "bt", "2GiB"
PERSIST = "SYSMGR_SSH_PERSIST"
CHURN = ("(while :; do head -c 1048576 /dev/urandom > /root/churn; sleep 0.5; done)"
         " </dev/null >/dev/null 2>&1 &")


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<52} {value:>16}   {note}")


def mbps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / MB


def run(argv: list[str]) -> None:
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode:
        raise RuntimeError(f"{shlex.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")


def pool_mnt(root: str) -> str:
    """Where a member's loop pool ``bt`` is mounted (the btrfs driver's layout)."""
    return os.path.join(root, "storage-pools", POOL, "mnt")


def settle_deletes(root: str) -> None:
    """Wait for btrfs's cleaner to free what was deleted: the next run starts even. A
    filesystem sync commits the deletion and wakes the cleaner (else it waits for the next
    periodic commit, up to 30 s)."""
    run(["btrfs", "filesystem", "sync", pool_mnt(root)])
    run(["btrfs", "subvolume", "sync", pool_mnt(root)])


class Rig:
    """The members, the admin client and the two 300 MB containers."""

    def __init__(self, cluster: Any) -> None:
        import sysmgr

        self.cluster = cluster
        self.m1 = cluster.add_member()
        self.m2 = cluster.add_member()
        self.local_root = os.path.join(cluster.dir, "local")
        res = cluster.cli("init", "--auto", "--storage-driver", "dir", "--network", "none",
                          root=self.local_root)
        if res.returncode:
            raise RuntimeError(f"init of the local root failed: {res.stderr}")
        self.roots = {"m1": self.m1.root, "m2": self.m2.root, "local": self.local_root}
        with sysmgr.Client(root=cluster.admin_root) as c:
            for m in (self.m1, self.m2):
                s = m.spec()
                c.cluster.members.add(m.name, s.url, root=s.root, key=s.key, sysmgr=s.sysmgr)
            c.cluster.members.add("local", "local:", root=self.local_root)
        # opened once the members are recorded: its containers are the cluster's
        self.client = sysmgr.Client(root=cluster.admin_root)
        self.big: Any = None

    def backend(self, member: str) -> Any:
        return self.client.cluster.backend(member)

    def setup(self) -> None:
        for member in self.roots:
            c = self.member_client(member)
            try:
                c.storage_pools.create(POOL, "btrfs", config={"size": POOL_SIZE})
            finally:
                c.close()
        self.big = self.container("big", "m1")
        self.container("lbig", "local")

    def member_client(self, member: str) -> Any:
        import sysmgr

        return sysmgr.Client(root=self.cluster.admin_root, member=member)

    def container(self, name: str, member: str) -> Any:
        """A running busybox container on ``member``'s btrfs pool with 300 MB of random data."""
        self.backend(member).image_build("busybox", alias="busybox", options=None, pool=POOL,
                                         progress=None)
        ct = self.client.containers.create(name, "busybox", target=member, pool=POOL,
                                           start=True)
        code, _out, err = ct.execute(["sh", "-c", f"head -c {DATA} /dev/urandom > /root/data"])
        if code:
            raise RuntimeError(f"writing the data in {name} failed: {err!r}")
        return ct

    def other(self, member: str) -> str:
        return "m2" if member == "m1" else "m1"

    def delete_copy(self, member: str, name: str) -> None:
        self.backend(member).container_delete(name, force=True)
        settle_deletes(self.roots[member])

    def close(self) -> None:
        """Delete what the bench made on every member (each step on its own: a failed one
        is said and the rest still runs)."""
        for member in self.roots:
            try:
                c = self.member_client(member)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"bench: cleanup of {member} failed: {e}", file=sys.stderr)
                continue
            try:
                teardown(c)
            except Exception as e:  # noqa: BLE001
                print(f"bench: cleanup of {member} failed: {e}", file=sys.stderr)
            finally:
                c.close()
        self.client.close()


# -- 1. throughput of the first full send ----------------------------------------------------

class OpenSSHSend:
    """``btrfs send SNAP | ssh m2 btrfs receive DIR`` of a read-only snapshot of a container's
    subvolume, run in a namespace (``ns_argv``)."""

    def __init__(self, rig: Rig, member: str, name: str,
                 ns_argv: Callable[..., list[str]]) -> None:
        self.rig = rig
        self.dir = os.path.join(pool_mnt(rig.roots[member]), "bench-openssh")
        self.snap = os.path.join(self.dir, "snap")
        self.recv = os.path.join(pool_mnt(rig.m2.root), "bench-openssh")
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.recv, exist_ok=True)
        run(["btrfs", "subvolume", "snapshot", "-r",
             os.path.join(pool_mnt(rig.roots[member]), "containers", name), self.snap])
        ssh = rig.m2.ssh_argv("btrfs", "receive", "-q", self.recv)[3:]  # without the nsenter
        self.argv = ns_argv("sh", "-c", f"btrfs send -q {shlex.quote(self.snap)} | "
                                        f"{shlex.join(ssh)}")
        with subprocess.Popen(["btrfs", "send", "-q", self.snap], stdout=subprocess.PIPE) as p:
            assert p.stdout is not None
            self.bytes = 0
            while chunk := p.stdout.read(1 << 20):
                self.bytes += len(chunk)

    def once(self) -> float:
        t = time.perf_counter()
        run(self.argv)
        took = time.perf_counter() - t
        run(["btrfs", "subvolume", "delete", os.path.join(self.recv, "snap")])
        settle_deletes(self.rig.m2.root)
        return took

    def close(self) -> None:
        for path in (os.path.join(self.recv, "snap"), self.snap):
            if os.path.exists(path):
                run(["btrfs", "subvolume", "delete", path])
        for path in (self.recv, self.dir):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def sysmgr_copy(rig: Rig, ct: Any, new: str) -> tuple[float, int, float]:
    """One API copy of ``ct`` to m2 (deleted afterwards): wall seconds, bytes sent and
    seconds of the stream itself (first to last byte the mover passed on)."""
    seen: list[float] = []
    t = time.perf_counter()
    res = ct.copy(new, target="m2",
                  meter=lambda _label, _sent: seen.append(time.perf_counter())).transfer
    took = time.perf_counter() - t
    rig.delete_copy("m2", new)
    return took, res.bytes, (seen[-1] - seen[0]) if len(seen) > 1 else took


@contextlib.contextmanager
def direct_ssh(rig: Rig) -> Iterator[None]:
    """The block's member connections made by this process itself, afresh
    (``SYSMGR_SSH_PERSIST=0``: no mux, as with ``ssh.persist: 0``)."""
    os.environ[PERSIST] = "0"
    rig.client.cluster.forget_members()
    try:
        yield
    finally:
        del os.environ[PERSIST]
        rig.client.cluster.forget_members()  # back to the muxes


def compare_send(rig: Rig, label: str, name: str, member: str,
                 ns_argv: Callable[..., list[str]], runs: int) -> None:
    """sysmgr's copy through the mux, the same with a direct connection, OpenSSH: run in
    turn, ``runs`` times after a warm-up turn."""
    ossh = OpenSSHSend(rig, member, name, ns_argv)
    mux: list[tuple[float, int, float]] = []
    direct: list[tuple[float, int, float]] = []
    theirs: list[float] = []
    try:
        for i in range(runs + 1):  # turn 0 warms the caches and starts the muxes
            a = sysmgr_copy(rig, rig.client.containers.get(name), f"{name}-copy")
            with direct_ssh(rig):
                d = sysmgr_copy(rig, rig.client.containers.get(name), f"{name}-copy")
            b = ossh.once()
            if i:
                mux.append(a)
                direct.append(d)
                theirs.append(b)
    finally:
        ossh.close()
    their_rate = statistics.median(mbps(ossh.bytes, s) for s in theirs)
    print(f"\n{label}")
    for what, ours in (("sysmgr API: container.copy(target=m2)", mux),
                       ("  the same, SYSMGR_SSH_PERSIST=0 (no mux)", direct)):
        rate = statistics.median(mbps(n, s) for s, n, _ in ours)
        row(what, f"{rate:6.1f} MB/s",
            f"{rate / their_rate:4.2f}x OpenSSH (target >= 0.8x); "
            f"{statistics.median(s for s, _, _ in ours):.2f} s: streaming at "
            f"{statistics.median(mbps(n, f) for _, n, f in ours):.0f} MB/s, "
            f"{statistics.median(s - f for s, _, f in ours):.2f} s around it")
    row("OpenSSH: btrfs send | ssh m2 btrfs receive", f"{their_rate:6.1f} MB/s",
        f"{statistics.median(theirs):.2f} s; stream {ossh.bytes / MB:.0f} MB, sysmgr sent "
        f"{statistics.median(n for _, n, _ in mux) / MB:.0f} MB")


# -- 2. downtime of a near-live move -----------------------------------------------------------

def near_live(rig: Rig, moves: int) -> None:
    ct = rig.big
    parts: dict[str, list[float]] = {"shutdown": [], "sysmgr": [], "boot": []}
    rounds, firsts, middles, finals, totals = [], [], [], [], []
    for _ in range(moves):
        code, _out, err = ct.execute(["sh", "-c", CHURN])
        if code:
            raise RuntimeError(f"starting the churn loop failed: {err!r}")
        time.sleep(1.0)  # the loop has rewritten its file a few times
        source = ct.location
        t = time.perf_counter()
        res = ct.migrate(rig.other(source))
        totals.append(time.perf_counter() - t)
        settle_deletes(rig.roots[source])
        d = res.downtime
        if d is None or res.kind != "live":
            raise RuntimeError(f"the move was not near-live: {res}")
        for k in parts:
            parts[k].append(getattr(d, k))
        rounds.append(len(res.rounds))
        firsts.append(res.rounds[0])
        middles += res.rounds[1:-1]
        finals.append(res.rounds[-1])
    print(f"\nnear-live move of the running 300 MB container, 1 MB rewritten every 0.5 s "
          f"(m1 <-> m2, {moves} moves, medians)")
    row("downtime: the guest's shutdown (busybox init)",
        f"{statistics.median(parts['shutdown']) * 1000:7.0f} ms")
    row("downtime: sysmgr's share (init exit -> init runs)",
        f"{statistics.median(parts['sysmgr']) * 1000:7.0f} ms",
        "target <= 500 ms; each: " + ", ".join(f"{s * 1000:.0f}" for s in parts["sysmgr"]))
    row("downtime: the guest's boot (init runs -> answers)",
        f"{statistics.median(parts['boot']) * 1000:7.0f} ms")
    row("rounds (incl. the final one)", f"{statistics.median(rounds):7.0f}",
        "each: " + ", ".join(map(str, rounds)))
    row("bytes of the first round", f"{statistics.median(firsts) / MB:7.1f} MB")
    row("bytes of a pre-copy round after the first",
        f"{statistics.median(middles) / MB:7.2f} MB" if middles else "none")
    row("bytes of the final round (after the stop)", f"{statistics.median(finals) / 1000:7.1f} kB",
        "each: " + ", ".join(f"{n / 1000:.1f}" for n in finals))
    row("whole move (call to return)", f"{statistics.median(totals):7.2f} s")


# -- 3. copy --refresh -------------------------------------------------------------------------

def refresh(rig: Rig, runs: int) -> None:
    ct = rig.big
    dest, new = rig.other(ct.location), "big-rc"
    snaps = iter(range(1_000_000))

    def change(path: str, n: int, snapshot: bool) -> None:
        code, _o, err = ct.execute(["sh", "-c", f"head -c {n} /dev/urandom > {path}"])
        if code:
            raise RuntimeError(f"writing {path} failed: {err!r}")
        if snapshot:
            ct.snapshots.create(f"r{next(snaps)}")

    def refreshed(path: str, n: int, snapshot: bool) -> tuple[float, float]:
        secs, sent = [], []
        for _ in range(runs):
            change(path, n, snapshot)
            t = time.perf_counter()
            res = ct.copy(new, target=dest, refresh=True).transfer
            secs.append(time.perf_counter() - t)
            sent.append(res.bytes)
            settle_deletes(rig.roots[dest])  # the copy it replaced: free its space
        ct.execute(["rm", "-f", path])  # the next rows change only what they write
        return statistics.median(secs), statistics.median(sent)

    ct.snapshots.create("base")
    t = time.perf_counter()
    res = ct.copy(new, target=dest).transfer
    full = (time.perf_counter() - t, res.bytes)
    rows = [("full copy (with snapshot 'base')", full),
            ("refresh after a 1 MB change", refreshed("/root/delta", MB, False)),
            ("refresh after a 50 MB change", refreshed("/root/delta50", 50 * MB, False)),
            ("refresh after a 1 MB change + a snapshot", refreshed("/root/delta", MB, True)),
            ("refresh after a 50 MB change + a snapshot",
             refreshed("/root/delta50", 50 * MB, True))]
    rig.delete_copy(dest, new)
    print(f"\ncopy --refresh of the 300 MB container {ct.location} -> {dest} (medians of {runs})")
    for label, (secs, sent) in rows:
        row(label, f"{secs * 1000:7.0f} ms",
            f"{sent / MB:7.2f} MB sent, {secs / full[0]:.2f}x the full copy's time")


# -- main ----------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="throughput turns, refresh rows (3)")
    ap.add_argument("--moves", type=int, default=5, help="near-live moves (5)")
    args = ap.parse_args()
    from tests.cluster.hosts import TestCluster  # after sys.path: this checkout

    base = tempfile.mkdtemp(prefix="sysmgr-bench-migrate-")
    cluster = TestCluster(base)
    rig: Rig | None = None
    try:
        with cluster.admin():  # every SSH connection (and the local endpoints) from the admin
            rig = Rig(cluster)
            rig.setup()
            print(f"sysmgr migration bench: 300 MB of random data in a busybox container, "
                  f"btrfs loop pools, {args.runs} runs")
            compare_send(rig, "first full send, m1 -> m2 (sysmgr relays through the admin: "
                         "two SSH hops; OpenSSH from m1: one)", "big", "m1", rig.m1.ns.argv,
                         args.runs)
            compare_send(rig, "first full send, local -> m2 (one SSH hop each; OpenSSH from "
                         "the admin)", "lbig", "local", cluster.argv, args.runs)
            rig.big = rig.client.containers.get("big")  # its member's connection was renewed
            near_live(rig, args.moves)
            refresh(rig, args.runs)
    finally:
        with cluster.admin():
            if rig is not None:
                rig.close()
        cluster.close()
        mounted = subprocess.run(["grep", "-c", base, "/proc/self/mountinfo"],
                                 capture_output=True, text=True).stdout.strip()
        if mounted in ("", "0"):
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"bench: {base} still has mounts; not removed", file=sys.stderr)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/migrate.py: run as root (network namespaces, sshd, loop devices)")
    main()
