"""The commands against a stub API client: what each verb asks the API and what it prints.

No engine and no host root: ``sysmgr.cli.app.make_client`` is replaced by a
stub recording the calls. (End-to-end runs through the real engine with the fake drivers are
in ``test_cli_engine.py``.)
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sysmgr.cli import main as climain
from sysmgr.cli import app as cliapp
from sysmgr.engine.actions import Change, CreateContainer, Plan, Restart, Start, UpdateContainer
from sysmgr.errors import Conflict, Issue, NotFound, SysmgrError, ValidationError
from sysmgr.types import HostCgroups, HostSecurity, Outcome

ROOT_DEV = {"type": "disk", "path": "/", "pool": "default"}


class StubFiles:
    def __init__(self) -> None:
        self.store: dict[str, tuple[bytes, int | None, int, int, bool]] = {}

    def put(self, path: str, data: Any, *, mode: int | None = None, uid: int = 0, gid: int = 0,
            mkdir: bool = False) -> None:
        body = data if isinstance(data, bytes) else data.read()
        self.store[path] = (body, mode, uid, gid, mkdir)

    def pull(self, path: str, dst: Any) -> None:
        if path not in self.store:
            raise NotFound(f"{path}: no such file in the container")
        dst.write(self.store[path][0])


class StubContainer:
    def __init__(self, name: str, status: str = "Running", **kw: Any) -> None:
        self.name = name
        self.status = status
        self.location = None  # a single host's (as sysmgr.Container)
        self.pid = 4242 if status != "Stopped" else None
        self.description = ""
        self.profiles = list(kw.get("profiles", ["default"]))
        self.config = dict(kw.get("config", {}))
        self.devices = dict(kw.get("devices", {}))
        self.expanded_config = dict(self.config)
        self.expanded_devices = {"root": dict(ROOT_DEV), **self.devices}
        self.pool = "default"
        self.created_at = 1764331080.0
        self.image_fingerprint = "ab" * 32
        self.image_aliases = ["busybox"]
        self.image_os = "busybox"
        self.usage = SimpleNamespace(memory_bytes=2 * 1024 * 1024, pids=3) if status != "Stopped" else None
        self.disk_bytes = 3 * 1024 * 1024
        self.files = StubFiles()
        self.snapshots = SimpleNamespace(all=lambda: [])
        self.calls: list[tuple] = []
        self.exit_code = 0
        self.pending: list[str] = []
        self.warnings: tuple[str, ...] = ()

    def _call(self, *call: Any) -> Any:
        self.calls.append(call)
        if isinstance(self.fail, Exception):
            raise self.fail

    fail: Exception | None = None

    def start(self) -> None:
        self._call("start")

    def stop(self, timeout=None, force=False) -> None:
        self._call("stop", timeout, force)

    def restart(self, timeout=None, force=False) -> None:
        self._call("restart", timeout, force)

    def freeze(self) -> None:
        self._call("freeze")

    def unfreeze(self) -> None:
        self._call("unfreeze")

    def delete(self, force=False) -> None:
        self._call("delete", force)

    def interactive(self, argv, *, env=None, cwd=None, tty=None, user=None, group=None) -> int:
        self._call("interactive", list(argv), env, cwd, tty, *([user, group] if user or group else []))
        return self.exit_code

    def shell(self) -> int:
        self._call("shell")
        return self.exit_code

    def console_log(self) -> str:
        return "booting\nready\n"

    def set_config(self, values, unset=()) -> list[str]:
        self._call("set_config", dict(values), list(unset))
        return self.pending

    def save(self) -> list[str]:
        self._call("save", dict(self.config), {k: dict(v) for k, v in self.devices.items()},
                   list(self.profiles))
        return self.pending

    def state(self):
        return SimpleNamespace(status=self.status, pid=self.pid, memory_bytes=2 * 1024 * 1024,
                               memory_peak_bytes=5 * 1024 * 1024, pids=3, cpu_ns=1_500_000_000,
                               disk_bytes=4096, oom_kills=1)


class StubContainers:
    def __init__(self, *containers: StubContainer) -> None:
        self.by_name = {c.name: c for c in containers}
        self.created: list[dict] = []
        self.checked: list[str] = []

    def all(self, *, usage: bool = False) -> list[StubContainer]:
        return list(self.by_name.values())

    def get(self, name: str) -> StubContainer:
        if name not in self.by_name:
            raise NotFound(f"container {name!r} not found")
        return self.by_name[name]

    def interactive(self, name, argv, *, env=None, cwd=None, tty=None, user=None, group=None) -> int:
        return self.get(name).interactive(argv, env=env, cwd=cwd, tty=tty, user=user, group=group)

    # the by-name verbs of the real manager, on the named container
    def shell(self, name) -> int:
        return self.get(name).shell()

    def start(self, name) -> list[str]:
        c = self.get(name)
        c.start()
        return list(c.warnings)

    def stop(self, name, *, timeout=None, force=False):
        return self.get(name).stop(timeout, force)

    def check(self, name, image, **kw):
        self.checked.append(name)

    def create(self, name, image, **kw):
        self.created.append({"name": name, "image": image, **kw})
        self.by_name[name] = StubContainer(name, "Running" if kw.get("start") else "Stopped")
        return self.by_name[name]

    def _many(self, names, act) -> list[Outcome]:
        out = []
        for name in names:
            try:
                out.append(Outcome(name, **(act(self.get(name)) or {})))
            except SysmgrError as e:
                out.append(Outcome(name, error=e.message, hint=e.hint, exit_code=e.exit_code))
        return out

    def start_many(self, names) -> list[Outcome]:
        return self._many(names, lambda c: c.start())

    def stop_many(self, names, *, timeout=None, force=False) -> list[Outcome]:
        return self._many(names, lambda c: {"graceful": c.stop(timeout=timeout, force=force)})

    def delete_many(self, names, *, force=False) -> list[Outcome]:
        return self._many(names, lambda c: c.delete(force=force))


class StubProfiles:
    def __init__(self) -> None:
        self.by_name = {"default": SimpleNamespace(name="default", description="", config={},
                                                   devices={"root": dict(ROOT_DEV)}, used_by=[])}

    def get(self, name: str):
        if name not in self.by_name:
            raise NotFound(f"profile {name!r} not found")
        return self.by_name[name]


class StubManifests:
    def __init__(self, plan: Plan | Exception) -> None:
        self._plan = plan
        self.applied: list[Plan] = []

    def plan(self, paths, *, prune=False, backup=True, keep_backups=None, revision=""):
        if isinstance(self._plan, Exception):
            raise self._plan
        return self._plan

    def validate(self, paths):
        if isinstance(self._plan, Exception):
            raise self._plan
        return SimpleNamespace(specs=(1, 2, 3))

    def apply(self, plan, *, progress=None):
        self.applied.append(plan)
        for line in plan.lines():
            if not line.startswith(" ") and progress:
                progress(line)
        return SimpleNamespace(done=plan.lines())


class StubClient:
    def __init__(self, *containers: StubContainer, plan: Plan | Exception = Plan()) -> None:
        self.containers = StubContainers(*containers)
        self.profiles = StubProfiles()
        self.manifests = StubManifests(plan)
        self.root = "/stub"
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "StubClient":  # as sysmgr.Client (the shell's name cache uses it)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_cgroups(self):
        return HostCgroups("unified", True, "/sys/fs/cgroup/sysmgr.slice/sysmgr-1a2b3c.scope", True)

    def host_security(self):
        return HostSecurity("not available on this host")


@pytest.fixture
def client(monkeypatch) -> StubClient:
    stub = StubClient(StubContainer("c1"), StubContainer("c2", "Stopped"))
    monkeypatch.setattr(cliapp, "make_client", lambda root: stub)
    return stub


def sysmgr(*args: str, input: str | None = None):
    return CliRunner().invoke(climain.cli, list(args), input=input)


# -- containers -------------------------------------------------------------------------------

def test_client_is_created_lazily_and_closed(client):
    assert sysmgr("list").exit_code == 0
    assert client.closed


def test_launch_defaults_and_options(client):
    client.profiles.by_name["big"] = SimpleNamespace(
        name="big", description="", config={}, devices={"root": {**ROOT_DEV, "size": "1GiB"}}, used_by=[])
    assert sysmgr("launch", "busybox", "n1").exit_code == 0
    assert sysmgr("create", "busybox", "n2", "-p", "default", "-p", "big", "-c", "limits.memory=64MiB",
                  "-s", "fast", "-d", "root,size=10GiB").exit_code == 0
    assert sysmgr("create", "busybox", "n3", "--no-profiles").exit_code == 0
    first, second, third = client.containers.created
    assert first == {"name": "n1", "image": "busybox", "profiles": None, "config": {}, "devices": None,
                     "pool": None, "description": "", "start": True}
    assert second["profiles"] == ["default", "big"] and second["start"] is False
    assert second["config"] == {"limits.memory": "64MiB"} and second["pool"] == "fast"
    assert second["devices"] == {"root": {**ROOT_DEV, "size": "10GiB"}}  # from the last profile
    assert third["profiles"] == []


def test_launch_output_and_bad_input(client):
    res = sysmgr("launch", "busybox", "n1")
    assert res.stdout == "Creating n1\nContainer n1 started\n"
    assert sysmgr("launch", "busybox", "n2", "-c", "novalue").exit_code == 2
    assert sysmgr("launch", "busybox", "n2", "--no-profiles", "-p", "x").exit_code == 2
    assert sysmgr("launch", "busybox", "n2", "-d", "root").exit_code == 2


def test_lifecycle_verbs_call_the_api(client):
    c1, c2 = client.containers.get("c1"), client.containers.get("c2")
    assert sysmgr("stop", "c1", "--force", "--timeout", "5").exit_code == 0
    assert sysmgr("start", "c2").exit_code == 0
    assert sysmgr("restart", "c1").exit_code == 0
    assert sysmgr("freeze", "c1").exit_code == 0
    assert sysmgr("unfreeze", "c1").exit_code == 0
    assert sysmgr("delete", "-f", "c2").exit_code == 0
    assert c1.calls == [("stop", 5.0, True), ("restart", None, False), ("freeze",), ("unfreeze",)]
    assert c2.calls == [("start",), ("delete", True)]


def test_stop_all_picks_running_containers(client):
    assert sysmgr("stop", "--all").exit_code == 0
    assert client.containers.get("c1").calls == [("stop", None, False)]
    assert client.containers.get("c2").calls == []
    assert sysmgr("stop").exit_code == 2


def test_several_names_try_all_and_report_every_failure(client):
    client.containers.get("c1").fail = Conflict("container 'c1' is already running")
    res = sysmgr("start", "c1", "ghost", "c2")
    assert res.exit_code == 2  # the worst of: conflict (1), not found (2)
    assert res.stderr.splitlines() == ["Error: c1: container 'c1' is already running",
                                       "Error: ghost: container 'ghost' not found"]
    assert client.containers.get("c2").calls == [("start",)]


def test_list_formats(client):
    table = sysmgr("list").stdout
    assert "| c1   | RUNNING |      | default  | 2.00MiB      | 3.00MiB    | 3         |" in table
    assert "| c2   | STOPPED |      | default  |              | 3.00MiB    |           |" in table
    data = json.loads(sysmgr("list", "--format", "json").stdout)
    assert [(c["name"], c["status"], c["pid"], c["memory"]) for c in data] == [
        ("c1", "Running", 4242, 2 * 1024 * 1024), ("c2", "Stopped", None, None)]
    assert yaml.safe_load(sysmgr("list", "-f", "yaml").stdout) == data
    assert sysmgr("list", "-f", "csv", "c2").stdout == "c2,STOPPED,,default,,3.00MiB,\n"


def test_info_text_and_yaml(client):
    client.containers.get("c1").expanded_config = {"limits.memory": "64MiB", "user.x": "1"}
    out = sysmgr("info", "c1").stdout
    for line in ("Name: c1", "Status: RUNNING", "Image: busybox (fingerprint abababababab, os busybox)",
                 "Init PID: 4242", "  Processes: 3", "    Memory (current): 2.00MiB",
                 "    Memory (peak): 5.00MiB", "    CPU usage (in seconds): 1.50", "    root: 4.00KiB",
                 "Limits:\n  limits.memory: 64MiB", "  root: {type: disk, path: /, pool: default}",
                 "Created: 2025/11/28 11:58 UTC"):
        assert line in out, line
    doc = yaml.safe_load(sysmgr("info", "c1", "--format", "yaml").stdout)
    assert doc["limits"] == {"limits.memory": "64MiB"} and doc["resources"]["processes"] == 3
    assert sysmgr("info", "ghost").exit_code == 2
    assert "    OOM kills: 1" in out and doc["resources"]["oom_kills"] == 1


def test_info_without_a_name_shows_the_hosts_cgroup_layout(client):
    out = sysmgr("info").stdout
    for line in ("Host:", "  Root: /stub", "  Cgroup layout: unified", "  systemd owns the cgroup root: yes",
                 "  Containers' cgroups: /sys/fs/cgroup/sysmgr.slice/sysmgr-1a2b3c.scope (delegated, Delegate=yes)"):
        assert line in out, line
    doc = json.loads(sysmgr("info", "--format", "json").stdout)
    assert doc["cgroups"] == {"layout": "unified", "systemd": True, "delegated": True,
                              "subtree": "/sys/fs/cgroup/sysmgr.slice/sysmgr-1a2b3c.scope"}
    assert "  AppArmor: not available on this host" in out
    assert doc["security"] == {"apparmor": "not available on this host"}


def test_exec_passes_argv_env_tty_and_exit_code(client):
    c1 = client.containers.get("c1")
    c1.exit_code = 7
    res = sysmgr("exec", "c1", "--env", "A=1", "--cwd", "/tmp", "-T", "--", "sh", "-c", "exit 7")
    assert res.exit_code == 7
    assert c1.calls[-1] == ("interactive", ["sh", "-c", "exit 7"], {"A": "1"}, "/tmp", False)
    c1.exit_code = 0
    assert sysmgr("exec", "c1", "ls", "-la").exit_code == 0
    assert c1.calls[-1] == ("interactive", ["ls", "-la"], None, None, None)
    assert sysmgr("exec", "c1", "-t", "--", "top").exit_code == 0
    assert c1.calls[-1][-1] is True
    assert sysmgr("exec", "c1", "-t", "-T", "--", "top").exit_code == 2
    assert sysmgr("exec", "c1").exit_code == 2


def test_shell_and_console(client):
    client.containers.get("c1").exit_code = 3
    assert sysmgr("shell", "c1").exit_code == 3
    # no name: the admin shell, here reading its lines from stdin (not a terminal)
    assert sysmgr("shell", input="# a login shell in c1, from the admin shell\nshell c1\n"
                  ).exit_code == 3
    assert sysmgr("shell", input="").exit_code == 0
    res = sysmgr("shell", "c1", "--keep-going")
    assert res.exit_code == 2 and "admin shell" in res.stderr
    assert sysmgr("console", "c1", "--show-log").stdout == "booting\nready\n"
    res = sysmgr("console", "c1")
    assert res.exit_code == 2 and "--show-log" in res.stderr


def test_config_set_forms_and_restart_notice(client):
    c1 = client.containers.get("c1")
    c1.pending = ["limits.cpu"]
    res = sysmgr("config", "set", "c1", "limits.cpu=2", "user.a=b=c")
    assert res.exit_code == 0 and res.stdout == "Container c1 updated: limits.cpu, user.a set\n"
    assert res.stderr == "Restart c1 for these to take effect: limits.cpu\n"
    assert c1.calls[-1] == ("set_config", {"limits.cpu": "2", "user.a": "b=c"}, [])
    assert sysmgr("config", "set", "c1", "boot.autostart", "true").exit_code == 0
    assert c1.calls[-1] == ("set_config", {"boot.autostart": "true"}, [])
    assert sysmgr("config", "unset", "c1", "user.a").exit_code == 0
    assert c1.calls[-1] == ("set_config", {}, ["user.a"])
    assert sysmgr("config", "set", "c1", "a", "b", "c").exit_code == 2


def test_config_show_and_get(client):
    c1 = client.containers.get("c1")
    c1.config = {"limits.memory": "64MiB"}
    doc = yaml.safe_load(sysmgr("config", "show", "c1").stdout)
    assert doc == {"name": "c1", "description": "", "profiles": ["default"],
                   "config": {"limits.memory": "64MiB"}, "devices": {}}
    assert yaml.safe_load(sysmgr("config", "show", "c1", "--expanded").stdout)["devices"] == {"root": ROOT_DEV}
    assert sysmgr("config", "get", "c1", "limits.memory").stdout == "64MiB\n"
    assert sysmgr("config", "get", "c1", "nothing").stdout == "\n"


def test_config_device_add_remove(client):
    c1 = client.containers.get("c1")
    assert sysmgr("config", "device", "add", "c1", "data", "disk", "source=/srv", "path=/srv").exit_code == 0
    assert c1.devices == {"data": {"type": "disk", "source": "/srv", "path": "/srv"}}
    assert sysmgr("config", "device", "add", "c1", "data", "disk").exit_code == 2
    res = sysmgr("config", "device", "remove", "c1", "root")
    assert res.exit_code == 1 and "profile" in res.stderr
    assert sysmgr("config", "device", "remove", "c1", "data").exit_code == 0
    assert c1.devices == {}


def test_config_edit_from_stdin(client):
    c1 = client.containers.get("c1")
    text = "config:\n  limits.cpu: 2\n  boot.autostart: true\ndevices: {}\nprofiles: [default]\n"
    assert sysmgr("config", "edit", "c1", input=text).exit_code == 0
    assert c1.calls[-1] == ("save", {"limits.cpu": "2", "boot.autostart": "true"}, {}, ["default"])
    # values stay the text as written, as in manifests
    assert sysmgr("config", "edit", "c1", input="config:\n  user.mode: 0755\n  user.t: 1:30\n").exit_code == 0
    assert c1.calls[-1] == ("save", {"user.mode": "0755", "user.t": "1:30"}, {}, ["default"])
    res = sysmgr("config", "edit", "c1", input="config: [unclosed\n")
    assert res.exit_code == 2 and "<stdin>:" in res.stderr


def test_file_push_and_pull(client, tmp_path):
    files = client.containers.get("c1").files
    local = tmp_path / "motd"
    local.write_bytes(b"hello\n")
    os.chmod(local, 0o640)
    assert sysmgr("file", "push", str(local), "c1/etc/motd").exit_code == 0
    st = os.stat(local)
    assert files.store["/etc/motd"] == (b"hello\n", 0o640, st.st_uid, st.st_gid, False)
    assert sysmgr("file", "push", "--mode", "0755", "--uid", "5", "-p", str(local), "c1/srv/").exit_code == 0
    assert files.store["/srv/motd"] == (b"hello\n", 0o755, 5, st.st_gid, True)
    assert sysmgr("file", "push", "-", "c1/tmp/in", input="from stdin").exit_code == 0
    assert files.store["/tmp/in"][:4] == (b"from stdin", 0o644, 0, 0)
    assert sysmgr("file", "pull", "c1/etc/motd", "-").stdout == "hello\n"
    assert sysmgr("file", "pull", "c1/etc/motd", str(tmp_path / "back")).exit_code == 0
    assert (tmp_path / "back").read_bytes() == b"hello\n"
    assert sysmgr("file", "push", str(tmp_path / "missing"), "c1/x").exit_code == 2
    assert sysmgr("file", "push", str(tmp_path), "c1/x").exit_code == 2
    assert sysmgr("file", "push", str(local), "c1/x", "--mode", "999").exit_code == 2
    res = sysmgr("file", "pull", "c1/nope", str(tmp_path / "nope"))
    assert res.exit_code == 2 and not (tmp_path / "nope").exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# -- manifests ----------------------------------------------------------------------------------

CHANGES = Plan((CreateContainer("a1", image="busybox", profiles=("default",)), Start("a1")))
DISRUPTIVE = Plan((UpdateContainer("a1", changes=(Change("config.limits.cpu", "1", "2"),)),
                   Restart("a1", reason="config.limits.cpu")))


def use_plan(monkeypatch, plan) -> StubClient:
    stub = StubClient(plan=plan)
    monkeypatch.setattr(cliapp, "make_client", lambda root: stub)
    return stub


def test_validate(monkeypatch):
    use_plan(monkeypatch, Plan())
    assert sysmgr("validate", "-f", "x.yaml").stdout == "valid: 3 documents\n"
    use_plan(monkeypatch, ValidationError([Issue("unknown key", file="x.yaml", line=4, path="config.y")]))
    res = sysmgr("validate", "-f", "x.yaml")
    assert res.exit_code == 2 and res.stderr == "Error: x.yaml:4: config.y: unknown key\n"


def test_diff_exit_codes(monkeypatch):
    use_plan(monkeypatch, Plan())
    res = sysmgr("diff", "-f", "m.yaml")
    assert (res.exit_code, res.stdout) == (0, "no changes\n")
    use_plan(monkeypatch, CHANGES)
    res = sysmgr("diff", "-f", "m.yaml")
    assert res.exit_code == 1
    assert res.stdout.splitlines()[0] == "+ create Container a1"
    assert res.stdout.splitlines()[-1] == "plan: 1 to create, 1 to start"
    use_plan(monkeypatch, ValidationError([Issue("bad", file="m.yaml", line=2)]))
    assert sysmgr("diff", "-f", "m.yaml").exit_code == 2
    # a failure that is normally exit 1 must not read as "changes pending"
    use_plan(monkeypatch, Conflict("the host root is locked"))
    assert sysmgr("diff", "-f", "m.yaml").exit_code == 2
    use_plan(monkeypatch, RuntimeError("bug"))
    assert sysmgr("diff", "-f", "m.yaml").exit_code == 2
    assert sysmgr("diff").exit_code == 2  # -f is required


def test_apply_dry_run_changes_nothing(monkeypatch):
    stub = use_plan(monkeypatch, DISRUPTIVE)
    res = sysmgr("apply", "-f", "m.yaml", "--dry-run")
    assert res.exit_code == 0 and "! restart Container a1" in res.stdout
    assert stub.manifests.applied == []


def test_apply_empty_plan(monkeypatch):
    stub = use_plan(monkeypatch, Plan())
    res = sysmgr("apply", "-f", "m.yaml")
    assert (res.exit_code, res.stdout) == (0, "no changes\n")
    assert stub.manifests.applied == []


def test_apply_refuses_disruptive_plan_without_yes_when_not_a_tty(monkeypatch):
    stub = use_plan(monkeypatch, DISRUPTIVE)
    res = sysmgr("apply", "-f", "m.yaml", input="y\n")  # stdin is not a terminal
    assert res.exit_code == 1
    assert "a1" in res.stderr and "Hint: re-run with --yes" in res.stderr
    assert stub.manifests.applied == []


def test_apply_disruptive_with_yes(monkeypatch):
    stub = use_plan(monkeypatch, DISRUPTIVE)
    res = sysmgr("apply", "-f", "m.yaml", "--yes")
    assert res.exit_code == 0, res.output
    assert stub.manifests.applied == [DISRUPTIVE]
    assert res.stdout.splitlines()[-1] == "applied: 1 to update, 1 to restart"


def test_apply_non_disruptive_needs_no_confirmation(monkeypatch):
    stub = use_plan(monkeypatch, CHANGES)
    res = sysmgr("apply", "-f", "m.yaml")
    assert res.exit_code == 0, res.output
    assert stub.manifests.applied == [CHANGES]
    assert "  create Container a1\n  start Container a1\napplied: 1 to create, 1 to start\n" in res.stdout


def test_apply_asks_on_a_terminal(monkeypatch):
    stub = use_plan(monkeypatch, DISRUPTIVE)
    asked = []
    monkeypatch.setattr("sysmgr.cli.commands.manifest.stdin_is_tty", lambda: True)
    monkeypatch.setattr("click.confirm", lambda *a, **k: asked.append(a) or False)
    res = sysmgr("apply", "-f", "m.yaml")
    assert res.exit_code == 1 and stub.manifests.applied == [] and asked == [("Apply?",)]
    assert res.stdout.endswith("aborted, nothing applied\n") and "Error" not in res.stderr
    monkeypatch.setattr("click.confirm", lambda *a, **k: True)
    assert sysmgr("apply", "-f", "m.yaml").exit_code == 0 and stub.manifests.applied == [DISRUPTIVE]
