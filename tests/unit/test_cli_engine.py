"""The CLI through the real API and engine, on the FAKE runtime and storage drivers.

DEPENDS ON THE ENGINE: these tests need ``sysmgr.drivers.runtime.fake``,
``sysmgr.drivers.storage.fake``, the busybox builder (``/bin/busybox`` from busybox-static)
and a working engine (host, planner, apply). They are skipped while those modules are
missing; a failure here with the modules present is an engine or CLI bug.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import textwrap

import pytest
import yaml
from tests.unit.cli_runner import CliAt


_NEEDED = ("sysmgr.drivers.runtime.fake", "sysmgr.drivers.storage.fake",
           "sysmgr.drivers.images.busybox", "sysmgr.engine.planner", "sysmgr.engine.apply")


def _missing() -> list[str]:
    missing = []
    for mod in _NEEDED:
        try:
            if importlib.util.find_spec(mod) is None:
                missing.append(mod)
        except ModuleNotFoundError:
            missing.append(mod)
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        missing.append("/bin/busybox")
    return missing


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"needs the engine and fake drivers: {_missing()}")


class Sysmgr(CliAt):
    """``sysmgr --root ROOT ...`` in-process, through the exit-code mapper."""

    def containers(self) -> list[dict]:
        return json.loads(self("list", "--format", "json", ok=True).stdout)


@pytest.fixture
def sysmgr(sysmgr_root: str):
    s = Sysmgr(sysmgr_root)
    s("init", "--auto", "--runtime", "fake", "--storage-driver", "fake", ok=True)
    s("image", "build", "busybox", "--alias", "busybox", ok=True)
    yield s
    for c in s.containers():
        s("delete", "--force", c["name"])


def snapshot(root: str) -> tuple:
    """Records and files of a root: what must not change on a dry run or a refusal."""
    con = sqlite3.connect(os.path.join(root, "sysmgr.db"))
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    rows = tuple(tuple(sorted(map(tuple, con.execute(f"SELECT * FROM {t}")))) for t in sorted(tables))
    con.close()
    files = tuple(sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, fs in os.walk(root)
                         for f in fs + dirs if not f.startswith(("sysmgr.db", "events.log"))
                         and f != "lock"))  # the event log records refusals too
    return rows, files


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_init_reports_and_is_idempotent(sysmgr_root):
    s = Sysmgr(sysmgr_root)
    first = s("init", "--auto", "--runtime", "fake", "--storage-driver", "fake", ok=True).stdout
    assert "storage pool 'default'" in first and "profile 'default'" in first
    assert "Nothing to do" in s("init", "--auto", ok=True).stdout


def test_image_list_and_show(sysmgr):
    table = sysmgr("image", "list", ok=True).stdout
    assert "| busybox |" in table and "UPLOAD DATE" in table
    doc = yaml.safe_load(sysmgr("image", "show", "busybox", ok=True).stdout)
    assert doc["aliases"] == [{"name": "busybox", "description": ""}] and len(doc["fingerprint"]) == 64


def test_launch_list_info_stop_delete(sysmgr):
    assert sysmgr("launch", "busybox", "c1", "-c", "limits.memory=64MiB", ok=True).stdout.startswith("Creating c1")
    assert [(c["name"], c["status"]) for c in sysmgr.containers()] == [("c1", "Running")]
    assert "| c1   | RUNNING |" in sysmgr("list", ok=True).stdout
    info = sysmgr("info", "c1", ok=True).stdout
    assert "Status: RUNNING" in info and "limits.memory: 64MiB" in info
    sysmgr("stop", "c1", "--force", ok=True)
    assert sysmgr.containers()[0]["status"] == "Stopped"
    sysmgr("delete", "c1", ok=True)
    assert sysmgr.containers() == []


def test_cli_exit_codes_from_the_engine(sysmgr):
    assert sysmgr("launch", "busybox", "../x").exit_code == 2
    assert sysmgr("launch", "busybox", "c5", "-c", "limits.memory=lots").exit_code == 2
    assert sysmgr("launch", "ghost", "c5").exit_code == 2
    assert sysmgr("launch", "busybox", "c5", "-p", "ghost").exit_code == 2
    assert sysmgr("start", "ghost").exit_code == 2
    assert sysmgr.containers() == []
    sysmgr("launch", "busybox", "c6", ok=True)
    res = sysmgr("delete", "c6")  # running, no --force: a conflict
    assert res.exit_code == 1 and "Hint:" in res.stderr
    assert sysmgr("launch", "busybox", "c6").exit_code == 2  # already exists


def test_config_and_profiles(sysmgr):
    sysmgr("create", "busybox", "c2", ok=True)
    sysmgr("config", "set", "c2", "limits.memory=64MiB", ok=True)
    sysmgr("config", "set", "c2", "user.role", "db", ok=True)
    assert sysmgr("config", "get", "c2", "limits.memory", ok=True).stdout == "64MiB\n"
    doc = yaml.safe_load(sysmgr("config", "show", "c2", ok=True).stdout)
    assert doc["config"] == {"limits.memory": "64MiB", "user.role": "db"}
    sysmgr("config", "unset", "c2", "user.role", ok=True)
    assert sysmgr("config", "get", "c2", "user.role", ok=True).stdout == "\n"
    sysmgr("profile", "create", "small", "-c", "limits.processes=100", ok=True)
    sysmgr("profile", "add", "c2", "small", ok=True)
    assert sysmgr("config", "get", "c2", "limits.processes", "--expanded", ok=True).stdout == "100\n"
    listing = json.loads(sysmgr("profile", "list", "-f", "json", ok=True).stdout)
    assert {p["name"]: p["used_by"] for p in listing} == {"default": ["c2"], "small": ["c2"]}
    assert sysmgr("profile", "delete", "small").exit_code == 1  # in use
    sysmgr("profile", "remove", "c2", "small", ok=True)
    sysmgr("profile", "delete", "small", ok=True)


def test_file_push_pull(sysmgr, tmp_path):
    sysmgr("create", "busybox", "c4", ok=True)
    local = tmp_path / "motd"
    local.write_text("hi from host\n")
    sysmgr("file", "push", str(local), "c4/etc/motd", "-p", ok=True)  # a fake volume has no /etc
    sysmgr("file", "push", str(local), "c4/srv/new/", "-p", ok=True)
    assert sysmgr("file", "pull", "c4/etc/motd", "-", ok=True).stdout == "hi from host\n"
    sysmgr("file", "pull", "c4/srv/new/motd", str(tmp_path / "back"), ok=True)
    assert (tmp_path / "back").read_text() == "hi from host\n"
    assert sysmgr("file", "pull", "c4/nope", str(tmp_path / "x")).exit_code == 2


MANIFEST = """
    kind: Container
    name: a1
    image: busybox
    config:
      limits.memory: 64MiB
    state: running
    """


def test_diff_exit_codes(sysmgr, tmp_path):
    path = write(tmp_path, "m.yaml", MANIFEST)
    res = sysmgr("diff", "-f", path)
    assert res.exit_code == 1 and "+ create Container a1" in res.stdout
    sysmgr("apply", "-f", path, ok=True)
    assert (sysmgr("diff", "-f", path).exit_code, sysmgr("diff", "-f", path).stdout) == (0, "no changes\n")
    bad = write(tmp_path, "bad.yaml", "kind: Container\nname: [unclosed\n")
    res = sysmgr("diff", "-f", bad)
    assert res.exit_code == 2 and "bad.yaml:" in res.stderr and "Traceback" not in res.stderr


def test_validate(sysmgr, tmp_path):
    path = write(tmp_path, "m.yaml", MANIFEST)
    assert sysmgr("validate", "-f", path, ok=True).stdout == "valid: 1 document\n"
    bad = write(tmp_path, "bad.yaml", MANIFEST.replace("limits.memory", "limits.memroy"))
    res = sysmgr("validate", "-f", bad)
    assert res.exit_code == 2 and "limits.memroy" in res.stderr and "bad.yaml:" in res.stderr


def test_apply_dry_run_changes_nothing(sysmgr, tmp_path):
    path = write(tmp_path, "m.yaml", MANIFEST)
    before = snapshot(sysmgr.root)
    res = sysmgr("apply", "-f", path, "--dry-run", ok=True)
    assert "+ create Container a1" in res.stdout
    assert snapshot(sysmgr.root) == before


def test_apply_refuses_disruptive_plan_without_yes(sysmgr, tmp_path):
    path = write(tmp_path, "m.yaml", MANIFEST)
    first = sysmgr("apply", "-f", path, ok=True)
    assert first.stdout.splitlines()[-1].startswith("applied: ")
    assert "no changes" in sysmgr("apply", "-f", path, ok=True).stdout
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace("state: running", "state: stopped"))
    before = snapshot(sysmgr.root)
    res = sysmgr("apply", "-f", path, input="")  # stdin is not a terminal
    assert res.exit_code == 1 and "--yes" in res.stderr, res.output
    assert snapshot(sysmgr.root) == before
    assert sysmgr.containers()[0]["status"] == "Running"
    sysmgr("apply", "-f", path, "--yes", ok=True)
    assert sysmgr.containers()[0]["status"] == "Stopped"
