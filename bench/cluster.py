#!/usr/bin/env python3
"""Cluster benchmark: prints medians (never asserts).

Builds one test host (a network namespace with its own sshd and sysmgr root, the test suite's
:mod:`tests.cluster.hosts`), starts a busybox container on it, then measures ``exec NAME --
true`` on that remote member, in the same run:

  - through sysmgr's SSH transport, per command: connect (host key checked, key login),
    the exec, close — ``exec_capture`` (an RPC call: the member's ``sysmgr _rpc`` starts and
    says hello first) and ``exec_interactive`` (one ``_stream exec`` channel only);
  - the same exec on a connection already open (what each further call of one command costs);
  - OpenSSH doing the same: ``ssh member sysmgr exec NAME -- true``; the ratio to it is printed;
  - the member's own ``sysmgr exec`` run there without SSH (the single-host figure).

Then, through the CLI on the admin host (an admin root with the members added; each
member's connection is kept between commands by its mux, as with ``ssh.persist``'s default):

  - ``sysmgr exec --target m1 NAME -- true`` beside OpenSSH (target: within 1.2x), and the
    same with ``SYSMGR_SSH_PERSIST=0`` (a new SSH connection for the command);
  - ``sysmgr list`` across 3 members holding 10 running containers each, beside a single-host
    ``sysmgr list`` of 10 run on a member itself (target: at most 1.5x);
  - ``sysmgr launch busybox NAME`` with placement (the member chosen, the container created
    and started there over SSH).

Run as root: ``.venv/bin/python bench/cluster.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import median_ms  # noqa: E402


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def row(name: str, ms: float, note: str = "") -> None:
    print(f"  {name:<58} {ms:9.1f} ms   {note}")


def _run(argv: list[str]) -> None:
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    from sysmgr.api import remote  # after sys.path: this checkout
    from tests.cluster.hosts import TestCluster

    base = tempfile.mkdtemp(prefix="sysmgr-bench-cluster-")
    cluster = TestCluster(base)
    # the API rows connect afresh each time (no kept connection): the transport itself
    os.environ["SYSMGR_SSH_PERSIST"] = "0"
    try:
        m = cluster.add_member()
        spec = m.spec()
        with cluster.admin():
            backend = remote.connect(spec, admin_root=cluster.admin_root)
        backend.image_build("busybox", alias="busybox", options=None, pool=None, progress=None)
        backend.container_create("b1", "busybox", profiles=None, config=None, devices=None,
                                 pool=None, description="", start=True)

        def per_command() -> None:
            with cluster.admin():
                b = remote.connect(spec, admin_root=cluster.admin_root)
            try:
                assert b.exec_capture("b1", ["true"], env=None, cwd=None, stdin=None)[0] == 0
            finally:
                b.close()

        def per_command_stream() -> None:
            with cluster.admin():
                b = remote.connect(spec, admin_root=cluster.admin_root)
            try:
                with open(os.devnull, "r+b") as null:
                    fd = null.fileno()
                    assert b.exec_interactive("b1", ["true"], env=None, cwd=None, tty=False,
                                              stdin=fd, stdout=fd, stderr=fd) == 0
            finally:
                b.close()

        def warm() -> None:
            assert backend.exec_capture("b1", ["true"], env=None, cwd=None, stdin=None)[0] == 0

        openssh_argv = m.ssh_argv(m.sysmgr, "--root", m.root, "exec", "b1", "--", "true")[3:]
        local_argv = m.ns.argv(m.sysmgr, "--root", m.root, "exec", "b1", "--", "true")

        def openssh() -> None:
            with cluster.admin():  # ssh itself in the admin namespace: no nsenter in the figure
                _run(openssh_argv)

        for fn in (per_command, per_command_stream, warm, openssh):  # warm caches once
            fn()
        print(f"remote exec on one member ({args.runs} runs each, medians)")
        theirs = median_ms(timed(openssh, args.runs))
        ours = median_ms(timed(per_command, args.runs))
        row("sysmgr API: connect + exec_capture(true) + close", ours,
            f"{ours / theirs:5.2f}x OpenSSH (RPC server started on the member)")
        ours = median_ms(timed(per_command_stream, args.runs))
        row("sysmgr API: connect + exec_interactive(true) + close", ours,
            f"{ours / theirs:5.2f}x OpenSSH (one exec stream, no RPC server)")
        row("sysmgr API: exec_capture(true) on an open connection", median_ms(timed(warm, args.runs)))
        row("OpenSSH: ssh member sysmgr exec b1 -- true", theirs)
        row("single host: sysmgr exec b1 -- true on the member itself",
            median_ms(timed(lambda: _run(local_argv), args.runs)))
        del os.environ["SYSMGR_SSH_PERSIST"]
        cli_rows(cluster, backend, args.runs, openssh)
        backend.close()
    finally:
        cluster.close()
        subprocess.run(["rm", "-rf", base])


def cli_rows(cluster, backend, runs: int, openssh) -> None:
    """The CLI figures: exec --target, list across 3 members, launch with placement."""
    for _ in range(2):
        cluster.add_member()
    for m in cluster.members:
        res = cluster.cli("cluster", "add", m.name, m.url, "--key", cluster.key, "--root", m.root,
                          "--sysmgr", m.sysmgr, "--accept-host-key", m.host_key)
        assert res.returncode == 0, res.stderr

    def cli(*argv: str) -> None:
        with cluster.admin():
            subprocess.run([sys.executable, "-m", "sysmgr", *argv], stdout=subprocess.DEVNULL,
                           env=dict(os.environ, SYSMGR_ROOT=cluster.admin_root, PYTHONPATH=REPO),
                           check=True)

    print(f"\nthrough the CLI on the admin host ({runs} runs each, medians; member "
          "connections kept between commands, ssh.persist)")
    theirs = median_ms(timed(openssh, runs))
    ours = median_ms(timed(lambda: cli("exec", "--target", "m1", "b1", "--", "true"), runs))
    row("sysmgr exec --target m1 b1 -- true", ours, f"{ours / theirs:5.2f}x OpenSSH ({theirs:.1f} ms)"
        "  target <= 1.2x")
    os.environ["SYSMGR_SSH_PERSIST"] = "0"
    direct = median_ms(timed(lambda: cli("exec", "--target", "m1", "b1", "--", "true"), runs))
    del os.environ["SYSMGR_SSH_PERSIST"]
    row("  the same, SYSMGR_SSH_PERSIST=0 (a new connection)", direct,
        f"{direct / theirs:5.2f}x OpenSSH")
    backend.container_delete("b1", force=True)
    for i in range(10):   # 10 running containers on each member, placed by the CLI
        for m in cluster.members:
            cli("launch", "busybox", f"{m.name}c{i}", "--target", m.name)
    m1 = cluster.members[0]
    single = median_ms(timed(lambda: _run(m1.ns.argv(m1.sysmgr, "--root", m1.root, "list")), runs))
    ours = median_ms(timed(lambda: cli("list"), runs))
    row("sysmgr list: 3 members x 10 containers", ours,
        f"{ours / single:5.2f}x a single-host list of 10 ({single:.1f} ms)  target <= 1.5x")
    names = iter(range(1000))

    def launch() -> None:
        cli("launch", "busybox", f"p{next(names)}")

    row("sysmgr launch busybox NAME (placement, remote member)", median_ms(timed(launch, runs)))
    cli("delete", "--force", *[f"{m.name}c{i}" for m in cluster.members for i in range(10)])


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/cluster.py: run as root (network namespaces, sshd)")
    main()
