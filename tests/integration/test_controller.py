"""The reconcile controller as a real process against a real root (busybox containers on a
dir pool): a manifest change in a watched directory is applied; a limit changed by hand is
put back on the next pass (and left alone while suspended); a broken source changes
nothing; a git source moved to a new commit is applied and the commit recorded; one
controller per root; SIGTERM stops it cleanly; it reaps the container inits it outlives.

No wall-clock assertions: each test waits (with a generous limit) for the state it expects.
The figures (change to applied, idle cost) are bench/controller.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import cli_ok, REPO, requires_root, run_cli

pytestmark = requires_root

MANIFEST = """\
kind: Container
name: {name}
image: busybox
state: {state}
config:
  limits.memory: {memory}
"""


@pytest.fixture
def root(busybox_cli_root: str):
    return busybox_cli_root


ok = cli_ok


class Ctl:
    """A controller process of the test's root; stopped (SIGTERM) at the end."""

    def __init__(self, root: str, *args: str) -> None:
        self.root = root
        self.log = os.path.join(root, "..", f"controller-{os.getpid()}-{time.time_ns()}.log")
        env = dict(os.environ, SYSMGR_ROOT=root, PYTHONPATH=REPO, NO_COLOR="1")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sysmgr", "controller", "run",
                                          *args], stdout=out, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        with open(self.log) as f:
            return f.read()

    def wait_for(self, what, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while not what():
            assert self.proc.poll() is None, f"the controller exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"gave up waiting:\n{self.text()}"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture
def controller(root: str):
    started: list[Ctl] = []

    def start(*args: str) -> Ctl:
        c = Ctl(root, *args)
        started.append(c)
        return c
    yield start
    for c in started:
        c.stop()


def write(path: str, **values: str) -> None:
    v = {"name": "k1", "state": "running", "memory": "64MiB", **values}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(MANIFEST.format(**v))
    os.rename(tmp, path)


def config(root: str, name: str, key: str) -> str:
    return ok("config", "get", name, key, root=root).stdout.strip()


def drift_events(root: str) -> list[dict]:
    with open(os.path.join(root, "events.log")) as f:
        return [e for e in map(json.loads, f) if e["type"] == "drift"]


def status(root: str) -> dict:
    return json.loads(ok("controller", "status", "-f", "json", root=root).stdout)


def test_changes_applied_and_drift_put_back(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write(str(src / "k1.yaml"))
    ctl = controller("--source", str(src), "--interval", "1s")
    ctl.wait_for(lambda: [c["status"] for c in json.loads(run_cli("list", "-f", "json", root=root).stdout or "[]")] == ["Running"])
    assert config(root, "k1", "limits.memory") == "64MiB"
    res = run_cli("controller", "run", "--source", str(src), root=root)   # one per root
    assert res.returncode == 1 and f"pid {ctl.proc.pid}" in res.stderr
    write(str(src / "k1.yaml"), memory="96MiB")                      # a change in the source
    ctl.wait_for(lambda: config(root, "k1", "limits.memory") == "96MiB")
    assert "sources changed" in ctl.text()
    ok("config", "set", "k1", "limits.memory=128MiB", root=root)     # drift, by hand
    ctl.wait_for(lambda: config(root, "k1", "limits.memory") == "96MiB")
    assert "~ config.limits.memory: 128MiB -> 96MiB" in ctl.text()
    assert "update (live) Container k1 (drift: limits.memory 128MiB -> 96MiB)" in ctl.text()
    ok("stop", "k1", root=root)                                       # stopped by hand
    ctl.wait_for(lambda: '"Running"' in run_cli("list", "-f", "json", root=root).stdout)
    assert "start Container k1 (drift: state stopped -> running)" in ctl.text()
    drift = drift_events(root)
    assert [(e["object"], e["action"], e["detail"]) for e in drift] == [
        ("container/k1", "corrected", "limits.memory 128MiB -> 96MiB"),
        ("container/k1", "corrected", "state stopped -> running")]
    st = status(root)
    assert st["running"] == ctl.proc.pid and str(src) in st["applied_revisions"]
    assert ctl.stop() == 0 and "controller stopped" in ctl.text()
    assert status(root)["running"] is None


def test_report_only_logs_drift_once_and_changes_nothing(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write(str(src / "k1.yaml"))
    ok("apply", "-f", str(src), "--yes", root=root)
    ctl = controller("--source", str(src), "--interval", "1s", "--no-self-heal")
    ctl.wait_for(lambda: status(root).get("passes", 0) >= 1)
    ok("config", "set", "k1", "limits.memory=128MiB", root=root)     # drift, by hand
    ctl.wait_for(lambda: status(root)["drift"] == [
        "update (live) Container k1 (drift: limits.memory 128MiB -> 64MiB)"])
    passes = status(root)["passes"]
    ctl.wait_for(lambda: status(root)["passes"] >= passes + 2)       # reported, not repeated
    assert config(root, "k1", "limits.memory") == "128MiB"
    assert "1 put back drift" in ok("controller", "status", root=root).stdout
    drift = drift_events(root)
    assert [(e["action"], e["detail"]) for e in drift] == [
        ("detected", "limits.memory 128MiB -> 64MiB")]


def test_suspend_and_a_broken_source_change_nothing(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write(str(src / "k1.yaml"))
    ctl = controller("--source", str(src), "--interval", "1s")
    ctl.wait_for(lambda: '"Running"' in run_cli("list", "-f", "json", root=root).stdout)
    ok("controller", "suspend", root=root)
    ok("config", "set", "k1", "limits.memory=128MiB", root=root)
    passes = status(root)["passes"]
    ctl.wait_for(lambda: status(root)["passes"] >= passes + 2)         # it ran, reporting
    assert config(root, "k1", "limits.memory") == "128MiB"
    st = status(root)
    assert st["suspended"] and "~ config.limits.memory: 128MiB -> 64MiB" in \
        "\n".join(st["pending"])
    assert any("(suspended)" in line and "Container k1" in line
               for line in ctl.text().splitlines())
    ok("controller", "resume", root=root)
    ctl.wait_for(lambda: config(root, "k1", "limits.memory") == "64MiB")
    # a YAML error: the pass fails, nothing changes, the error is in the status
    (src / "k1.yaml").write_text("kind: Container\nname: [k1\n")
    ctl.wait_for(lambda: status(root)["last"]["error"] != "")
    assert "k1.yaml" in status(root)["last"]["error"]
    assert json.loads(ok("list", "-f", "json", root=root).stdout)[0]["status"] == "Running"
    write(str(src / "k1.yaml"), memory="80MiB")
    ctl.wait_for(lambda: config(root, "k1", "limits.memory") == "80MiB")


def test_git_source_applies_new_commits_and_records_them(root, controller, tmp_path) -> None:
    upstream, work = tmp_path / "upstream", tmp_path / "work"

    def git(cwd, *args: str) -> str:
        return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                              text=True, env=dict(os.environ, GIT_AUTHOR_NAME="t",
                                                  GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                                                  GIT_COMMITTER_EMAIL="t@t")).stdout.strip()

    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write(str(upstream / "k1.yaml"))
    git(upstream, "add", ".")
    git(upstream, "commit", "-qm", "one")
    subprocess.run(["git", "clone", "-q", str(upstream), str(work)], check=True)
    ctl = controller("--source", f"git:{work}@main", "--interval", "1s")
    first = git(upstream, "rev-parse", "HEAD")
    ctl.wait_for(lambda: status(root).get("applied_revisions", {}).get(f"git:{work}@main")
                 == first)
    write(str(upstream / "k1.yaml"), memory="72MiB")
    git(upstream, "commit", "-qam", "two")
    second = git(upstream, "rev-parse", "HEAD")
    ctl.wait_for(lambda: config(root, "k1", "limits.memory") == "72MiB")
    ctl.wait_for(lambda: status(root)["applied_revisions"][f"git:{work}@main"] == second)
    assert git(work, "rev-parse", "HEAD") == second
    with open(os.path.join(root, "events.log")) as f:       # the events name the commit
        applied = [e for e in map(json.loads, f) if e["type"] == "operation"]
    assert any(e.get("commit") == second and "k1" in e["object"] for e in applied), applied


def _zombies_of(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(p))
    return out


def test_no_zombie_inits_while_it_runs(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write(str(src / "k1.yaml"))
    ctl = controller("--source", str(src), "--interval", "1h")      # no pass but the first
    ctl.wait_for(lambda: '"Running"' in run_cli("list", "-f", "json", root=root).stdout)
    ok("stop", "k1", root=root)      # the init the controller started exits
    ctl.wait_for(lambda: not _zombies_of(ctl.proc.pid), limit=10)
    assert ctl.proc.poll() is None


def test_killed_mid_apply_a_new_controller_converges(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        write(str(src / f"k{i}.yaml"), name=f"k{i}")
    ctl = controller("--source", str(src), "--interval", "1h")
    # as soon as the first container exists, the apply is under way: kill -9 there
    ctl.wait_for(lambda: os.path.isdir(os.path.join(root, "containers", "k0"))
                 or "create Container" in ctl.text(), limit=60)
    ctl.proc.kill()
    ctl.proc.wait(10)
    ctl2 = controller("--source", str(src), "--interval", "1h")
    ctl2.wait_for(lambda: sorted((c["name"], c["status"]) for c in json.loads(
        run_cli("list", "-f", "json", root=root).stdout)) ==
        [(f"k{i}", "Running") for i in range(6)], limit=120)
    assert status(root)["last"]["error"] == ""
    assert not os.listdir(os.path.join(root, "tmp", "intents")) \
        if os.path.isdir(os.path.join(root, "tmp", "intents")) else True


def test_a_crashed_container_is_restarted_with_backoff(root, controller, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "r1.yaml").write_text(MANIFEST.format(name="r1", state="running", memory="64MiB")
                                 + "  boot.restart: always\n")
    ctl = controller("--source", str(src), "--interval", "1h")

    def pid() -> int | None:
        rows = json.loads(run_cli("info", "r1", "-f", "json", root=root).stdout or "{}")
        return rows.get("pid")

    ctl.wait_for(lambda: pid() is not None)
    for crash in (1, 2):
        first = pid()
        os.kill(first, signal.SIGKILL)                         # the init dies
        ctl.wait_for(lambda: pid() not in (None, first), limit=60)
        assert "crashed: r1: killed by SIGKILL" in ctl.text() and "restarted r1" in ctl.text()
    st = status(root)
    (line,) = [c for c in st["containers"] if c.startswith("r1:")]
    assert "2 crashes in a row (last: killed by SIGKILL (137)), backoff 2s" in line, line
    info = json.loads(ok("info", "r1", "-f", "json", root=root).stdout)
    assert info["status"] == "Running"


def test_a_scheduled_expiry_wakes_the_controller_before_its_interval(root, controller,
                                                                      tmp_path) -> None:
    import sqlite3

    src = tmp_path / "src"
    src.mkdir()
    write(str(src / "k1.yaml"))
    ok("apply", "-f", str(src), "--yes", root=root)
    ok("snapshot", "create", "k1", "s1", "--expiry", "1d", root=root)
    with contextlib.closing(sqlite3.connect(os.path.join(root, "sysmgr.db"))) as db, db:
        db.execute("UPDATE snapshots SET expires=? WHERE name='s1'", (time.time() + 4,))
    ctl = controller("--source", str(src), "--interval", "1h")
    ctl.wait_for(lambda: status(root).get("passes", 0) >= 1)
    assert "Next scheduled: expire k1/s1 at" in ok("controller", "status", root=root).stdout
    ctl.wait_for(lambda: "s1" not in ok("snapshot", "list", "k1", root=root).stdout)
    assert status(root)["passes"] == 2 and "expired k1/s1" in ctl.text()
