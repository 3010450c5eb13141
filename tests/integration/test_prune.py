"""``apply --prune`` on a real root (busybox containers, dir pool), through the CLI: only
objects created from the same manifests and gone from them are deleted; a container is
stopped and exported first (and the export imports again); a container made by hand, one
marked ``prune: false`` and a profile still in use stay; an emptied source or a manifest
that does not load prunes nothing; the controller's ``--prune`` behaves the same.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import cli_ok, requires_root, run_cli

pytestmark = requires_root


@pytest.fixture
def root(busybox_cli_root: str):
    return busybox_cli_root


ok = cli_ok


def names(root: str) -> list[str]:
    return sorted(c["name"] for c in json.loads(ok("list", "-f", "json", root=root).stdout))


def container(path, name: str, *extra: str) -> None:
    path.write_text("\n".join(["kind: Container", f"name: {name}", "image: busybox",
                               "state: running", *extra]) + "\n")


def test_prune_deletes_only_what_left_its_manifests(root, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    container(src / "a.yaml", "a1")
    container(src / "b.yaml", "b1", "profiles: [default, extra]")
    (src / "extra.yaml").write_text("kind: Profile\nname: extra\nconfig:\n  user.x: '1'\n")
    container(src / "k.yaml", "k1", "prune: false")
    (src / "shared.yaml").write_text("kind: Profile\nname: shared\n")
    ok("apply", "-f", str(src), "--yes", root=root)
    ok("launch", "busybox", "byhand", "-p", "default", "-p", "shared", root=root)
    ok("exec", "b1", "--", "sh", "-c", "echo keep me > /root/data", root=root)
    for f in ("b.yaml", "extra.yaml", "k.yaml", "shared.yaml"):
        os.unlink(src / f)
    res = run_cli("diff", "-f", str(src), "--prune", root=root)
    assert res.returncode == 1
    assert "delete Container b1" in res.stdout and "delete Profile extra" in res.stdout
    deletes = [line for line in res.stdout.splitlines() if line.startswith("- delete")]
    assert deletes == ["- delete Container b1", "- delete Profile extra"], res.stdout
    assert "Container k1 left the manifests and is kept (prune: false)" in res.stdout
    assert "Profile shared left the manifests but is not pruned: used by container byhand" \
        in res.stdout
    res = run_cli("apply", "-f", str(src), "--prune", root=root)      # not without --yes
    assert res.returncode == 1 and "refusing without confirmation" in res.stderr
    assert names(root) == ["a1", "b1", "byhand", "k1"]
    pruned = os.path.join(root, "backups", "pruned")
    os.makedirs(pruned)
    stale = os.path.join(pruned, "old-20260101T000000.tar.zst")   # kept longer than asked
    open(stale, "w").close()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    res = run_cli("diff", "-f", str(src), "--prune", "--keep-backups", "1d", root=root)
    assert "exported to backups/pruned/ first (kept 1 day)" in res.stdout, res.stdout
    ok("apply", "-f", str(src), "--prune", "--yes", "--keep-backups", "1d", root=root)
    assert names(root) == ["a1", "byhand", "k1"] and not os.path.exists(stale)
    profiles = [p["name"] for p in json.loads(ok("profile", "list", "-f", "json", root=root).stdout)]
    assert "extra" not in profiles and "shared" in profiles
    backups = os.listdir(os.path.join(root, "backups", "pruned"))
    assert len(backups) == 1 and backups[0].startswith("b1-")
    ok("profile", "create", "extra", root=root)       # pruned too: the backup names it
    ok("import", os.path.join(root, "backups", "pruned", backups[0]), "b1", root=root)
    ok("start", "b1", root=root)
    assert ok("exec", "b1", "--", "cat", "/root/data", root=root).stdout == "keep me\n"
    # b1 came back by hand: not in the inventory, never pruned
    assert "b1" not in run_cli("diff", "-f", str(src), "--prune", root=root).stdout


def test_an_empty_or_broken_source_prunes_nothing(root, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    container(src / "a.yaml", "a1")
    ok("apply", "-f", str(src), "--yes", root=root)
    (src / "a.yaml").write_text("kind: Container\nname: [a1\n")         # a YAML error
    res = run_cli("apply", "-f", str(src), "--prune", "--yes", root=root)
    assert res.returncode == 2 and "a.yaml" in res.stderr
    os.unlink(src / "a.yaml")                                            # emptied
    res = run_cli("apply", "-f", str(src), "--prune", "--yes", root=root)
    assert res.returncode == 2 and "hold no objects: refusing to prune" in res.stderr
    assert names(root) == ["a1"]
    res = run_cli("controller", "run", "--once", "--prune", "--source", str(src), root=root)
    assert res.returncode == 1 and "refusing to prune" in res.stderr
    assert names(root) == ["a1"]
