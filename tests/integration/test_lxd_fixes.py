"""Issue 13's "broken today" list, through the real CLI on the real kernel: ``export NAME -``
and ``import -``; deleting an image its containers came from; and what else an LXD user hit
within minutes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import cli_ok, REPO, requires_root, run_cli

pytestmark = requires_root


@pytest.fixture
def root(busybox_cli_root: str):
    return busybox_cli_root


ok = cli_ok


def cli_bytes(*args: str, root: str, stdin=None, stdout=None) -> subprocess.CompletedProcess:
    """The CLI with binary stdin/stdout (files or pipes)."""
    env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "sysmgr", *args], stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, env=env, timeout=300)


def test_export_to_stdout_and_import_from_stdin(root, tmp_path) -> None:
    ok("launch", "busybox", "c1", root=root)
    ok("exec", "c1", "--", "sh", "-c", "echo precious > /root/data", root=root)
    ok("snapshot", "create", "c1", "s1", root=root)
    backup = tmp_path / "c1.tar.zst"
    with open(backup, "wb") as out:
        res = cli_bytes("export", "c1", "-", root=root, stdout=out)
    assert res.returncode == 0, res.stderr
    assert b"Container c1 exported to stdout" in res.stderr
    assert not os.path.exists("-") and not os.path.exists(os.path.join(root, "-"))
    with open(backup, "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"          # a zstd frame, not text
    with open(backup, "rb") as src:
        res = cli_bytes("import", "-", "c2", root=root, stdin=src, stdout=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    ok("start", "c2", root=root)
    assert ok("exec", "c2", "--", "cat", "/root/data", root=root).stdout == "precious\n"
    assert "s1" in ok("snapshot", "list", "c2", root=root).stdout
    # garbage on stdin: a clear error, nothing half-created
    res = run_cli("import", "-", "c3", root=root, input="not a backup")
    assert res.returncode != 0 and "Error:" in res.stderr
    assert "c3" not in ok("list", root=root).stdout


def test_deleting_an_image_breaks_no_manifest(root, tmp_path) -> None:
    src = tmp_path / "web.yaml"
    src.write_text("kind: Container\nname: web1\nimage: busybox\nstate: running\n")
    ok("apply", "-f", str(src), "--yes", root=root)
    res = ok("image", "delete", "busybox", root=root)
    assert res.stdout == "Image busybox deleted\n"
    assert "made from it (they keep their root filesystems): web1" in res.stderr
    res = run_cli("diff", "-f", str(src), root=root)            # the container is there
    assert (res.returncode, res.stdout.strip()) == (0, "no changes"), res.stderr
    ok("exec", "web1", "--", "true", root=root)
    src.write_text(src.read_text() + "---\nkind: Container\nname: web2\nimage: busybox\n")
    res = run_cli("diff", "-f", str(src), root=root)            # a new one needs the image
    assert res.returncode == 2 and "web.yaml:8: image: image 'busybox' not found" in res.stderr


def test_every_problem_in_one_round_each_at_its_keys_line(root, tmp_path) -> None:
    src = tmp_path / "m.yaml"
    src.write_text("""\
kind: Profile
name: web
config:
  limits.memroy: 1GB
---
kind: Container
name: c1
image: busybx
profiles: [default, web, defualt]
devices:
  eth0: {type: nic, network: lab}
  data: {type: disk, pool: defalt, path: /data}
""")
    for verb in ("validate", "diff", "apply"):
        res = run_cli(verb, "-f", str(src), root=root)
        assert res.returncode == 2, (verb, res.stdout, res.stderr)
        got = [line.split(": ", 2)[0:2] for line in res.stderr.splitlines()]
        assert got == [["Error", f"{src}:4"], ["Error", f"{src}:8"], ["Error", f"{src}:9"],
                       ["Error", f"{src}:11"], ["Error", f"{src}:12"], ["Error", f"{src}:12"]], \
            res.stderr
        for hint in ("did you mean 'limits.memory'?", "did you mean 'busybox'?",
                     "profiles[2]: profile 'defualt' not found (did you mean 'default'?)",
                     "devices.eth0.network: network 'lab' not found",
                     "devices.data.source: a disk device other than the root disk needs a source",
                     "devices.data.pool: storage pool 'defalt' not found (did you mean 'default'?)"):
            assert hint in res.stderr, (hint, res.stderr)
    assert "c1" not in ok("list", root=root).stdout            # and nothing was changed


def test_launch_checks_its_input_before_it_says_creating(root) -> None:
    for args, why in [(("launch", "busybx", "c1"), "image"),
                      (("launch", "busybox", "c1", "-c", "limits.memroy=1GB"), "limits.memroy"),
                      (("launch", "busybox", "c1", "-p", "nope"), "profile 'nope' not found"),
                      (("create", "busybox", "bad_name"), "bad_name")]:
        res = run_cli(*args, root=root)
        assert res.returncode == 2 and why in res.stderr, (args, res.stderr)
        assert "Creating" not in res.stdout, (args, res.stdout)
    ok("launch", "busybox", "c1", root=root)
    res = run_cli("launch", "busybox", "c1", root=root)            # exists: said before too
    assert res.returncode == 2 and "already exists" in res.stderr and res.stdout == ""
