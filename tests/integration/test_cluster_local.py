"""A cluster of two LOCAL members on the real kernel: busybox containers on dir pools, through
the real CLI. The image is built on one member and copied to the other by placement (same
fingerprint, files checked); exec on the container wherever it lives passes stdin, output and
exit code; evacuate with ``cluster.evacuate: stop`` really stops it, restore starts it again.
(The SSH versions of these run against namespaced sshd test hosts.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import sysmgr
from tests.conftest import REPO, requires_root, run_cli

pytestmark = requires_root


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """An admin root with members n1 (has the busybox image) and n2, both without networks
    (nothing to plug a nic into: the containers have loopback only)."""
    base = tmp_path_factory.mktemp("cluster")
    roots = {n: str(base / n) for n in ("n1", "n2")}
    for n, root in roots.items():
        with sysmgr.Client(root=root) as c:
            c.init(storage_driver="dir")
            if n == "n1":
                c.images.build("busybox", alias="busybox")
    admin = str(base / "admin")
    for n, root in roots.items():
        run_cli("cluster", "add", n, "local:", "--root", root, root=admin, check=True)
    yield admin, roots
    for root in roots.values():
        with sysmgr.Client(root=root) as c:
            for ct in c.containers.all():
                ct.delete(force=True)


def test_launch_exec_evacuate_restore(cluster) -> None:
    admin, roots = cluster
    res = run_cli("launch", "busybox", "c1", "--target", "n2", "-c", "cluster.evacuate=stop",
                  root=admin, check=True)
    assert "copying image busybox" in res.stdout and "Placed c1 on n2" in res.stdout
    fps = []
    for root in roots.values():
        with sysmgr.Client(root=root) as c:
            (img,) = c.images.all()
            fps.append(img.fingerprint)
    assert fps[0] == fps[1]
    rows = json.loads(run_cli("list", "-f", "json", root=admin, check=True).stdout)
    assert [(r["name"], r["status"], r["location"]) for r in rows] == [("c1", "Running", "n2")]

    res = run_cli("exec", "c1", "--", "sh", "-c", "hostname; read x; echo got $x; exit 7",
                  root=admin, input="hi\n")
    assert res.returncode == 7 and res.stdout == "c1\ngot hi\n", res
    res = run_cli("exec", "c1", "--target", "n2", "--", "cat", root=admin, input="through")
    assert res.returncode == 0 and res.stdout == "through"
    assert run_cli("exec", "c1", "--target", "n1", "--", "true", root=admin).returncode == 2

    res = run_cli("cluster", "evacuate", "n2", "--yes", root=admin, check=True)
    assert "stopped c1" in res.stdout
    with sysmgr.Client(root=roots["n2"]) as c:
        assert c.containers.get("c1").status == "Stopped"     # really: its init is gone
    res = run_cli("cluster", "restore", "n2", root=admin, check=True)
    assert "started c1" in res.stdout
    assert run_cli("exec", "c1", "--", "hostname", root=admin).stdout == "c1\n"
    run_cli("delete", "--force", "c1", root=admin, check=True)
    assert json.loads(run_cli("list", "-f", "json", root=admin, check=True).stdout) == []


def test_several_names_across_members_in_one_command(cluster) -> None:
    admin, roots = cluster
    run_cli("launch", "busybox", "a1", "--target", "n1", root=admin, check=True)
    run_cli("launch", "busybox", "b1", "--target", "n2", root=admin, check=True)
    run_cli("create", "busybox", "b2", "--target", "n2", root=admin, check=True)
    res = run_cli("stop", "--force", "a1", "b1", root=admin, check=True)
    assert res.stdout.splitlines() == ["Container a1 stopped (killed)",
                                       "Container b1 stopped (killed)"]
    res = run_cli("start", "b2", "ghost", "a1", "b1", root=admin)
    assert res.returncode == 2 and "ghost: " in res.stderr
    assert res.stdout.splitlines() == [f"Container {n} started" for n in ("b2", "a1", "b1")]
    rows = json.loads(run_cli("list", "-f", "json", root=admin, check=True).stdout)
    assert sorted((r["name"], r["status"], r["location"]) for r in rows) == [
        ("a1", "Running", "n1"), ("b1", "Running", "n2"), ("b2", "Running", "n2")]
    res = run_cli("delete", "--force", "a1", "b1", "b2", root=admin, check=True)
    assert len(res.stdout.splitlines()) == 3
    assert json.loads(run_cli("list", "-f", "json", root=admin, check=True).stdout) == []


def test_readme_cluster_walkthrough_runs(tmp_path) -> None:
    """The README's Clusters walkthrough, as written (its temp dir under this test's)."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Clusters"):]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sysmgr").write_text(f"#!/bin/sh\nexec {sys.executable} -m sysmgr \"$@\"\n")
    (shim / "sysmgr").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", PYTHONPATH=REPO,
               TMPDIR=str(tmp_path), NO_COLOR="1")
    env.pop("SYSMGR_ROOT", None)
    res = subprocess.run(["bash", "-euc", script], env=env, text=True, capture_output=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for line in ("Placed web1 on n1", "Placed db1 on n3", "Placed any1 on n2", "stopped db1",
                 "started db1", "Member n3 restored"):
        assert line in res.stdout, res.stdout
