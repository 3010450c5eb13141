"""A cluster of LOCAL members through the CLI, on the FAKE runtime and storage drivers.

Each member is a root of its own on this machine (``url: local:``), reached through the same
API door an SSH member is; the admin root holds only the cluster record. What is checked:
members added, listed, grouped and removed; placement by group and by memory; a manifest
spanning three members applied, then applied again with no changes; exec and the other
container verbs wherever the container lives, and through ``--target``; evacuate with
``cluster.evacuate`` stop (and auto, which stops and says so) then restore; an unreachable
member reported while the others list; bad input refused with nothing changed anywhere.
"""

from __future__ import annotations

import dataclasses

import json
import re
import os
import shutil
import sqlite3
import textwrap

import pytest

import sysmgr
from sysmgr.api import remote
from sysmgr.api.local import LocalBackend
from sysmgr.errors import DriverError, HostKeyRejected
from tests.unit.cli_runner import CliAt

pytestmark = pytest.mark.skipif(not (shutil.which("busybox") or os.path.exists("/bin/busybox")),
                                reason="needs busybox-static for the image")
GiB = 1 << 30


class Admin(CliAt):
    """``sysmgr --root ADMIN ...`` in-process."""

    def listing(self, *args: str) -> list[dict]:
        return json.loads(self("list", "--format", "json", *args, ok=True).stdout)

    def where(self) -> dict[str, str]:
        return {c["name"]: c["location"] for c in self.listing()}


@pytest.fixture
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three initialised member roots (n1 has the busybox image), not yet in a cluster."""
    base = tmp_path_factory.mktemp("cluster")
    roots = {n: str(base / n) for n in ("n1", "n2", "n3")}
    for n, root in roots.items():
        with sysmgr.Client(root=root, runtime="fake") as c:
            c.init(storage_driver="fake", runtime="fake")
            if n == "n1":
                c.images.build("busybox", alias="busybox")
    yield roots
    for root in roots.values():
        if os.path.exists(os.path.join(root, "root.id")):
            with sysmgr.Client(root=root) as c:
                for ct in c.containers.all():
                    ct.delete(force=True)


@pytest.fixture
def admin(members: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Admin:
    """An admin root with n1 and n2 in group web, n3 in group db."""
    a = Admin(str(tmp_path_factory.mktemp("admin")))
    for n, root in members.items():
        a("cluster", "add", n, "local:", "--root", root, "--group", "db" if n == "n3" else "web",
          ok=True)
    return a


def state_of(root: str) -> tuple:
    """Records and files of a root: what must not change on a refusal."""
    tables = {}
    for db in ("sysmgr.db", "cluster.db"):
        path = os.path.join(root, db)
        if os.path.exists(path):
            con = sqlite3.connect(path)
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            tables[db] = {t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}"))) for t in names}
            con.close()
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, fs in os.walk(root)
                   for f in fs + dirs if not f.startswith(("sysmgr.db", "cluster.db", "lock")))
    return tables, files


# -- members -----------------------------------------------------------------------------------

def test_add_list_show_groups_remove(admin: Admin, members: dict[str, str]) -> None:
    rows = json.loads(admin("cluster", "list", "--format", "json", ok=True).stdout)
    assert [(r["name"], r["state"], r["groups"], r["containers"]) for r in rows] == [
        ("n1", "ONLINE", ["web"], 0), ("n2", "ONLINE", ["web"], 0), ("n3", "ONLINE", ["db"], 0)]
    assert rows[0]["memory_total"] > rows[0]["memory_free"] > 0 and rows[0]["version"]
    table = admin("cluster", "list", ok=True).stdout
    assert "| NAME |" in table and "ONLINE" in table and "/" in table  # MEMORY free/total

    shown = admin("cluster", "show", "n2", ok=True).stdout
    assert f"root: {members['n2']}" in shown and "state: ONLINE" in shown

    res = admin("cluster", "add", "n2", "local:", "--root", members["n2"])
    assert res.exit_code == 2 and "already exists" in res.output
    res = admin("cluster", "add", "n4", "http://x")
    assert res.exit_code == 2 and "invalid member URL" in res.output

    admin("cluster", "group", "add", "n3", "web", ok=True)
    admin("cluster", "group", "assign", "n1", "web,edge", ok=True)
    groups = json.loads(admin("cluster", "group", "list", "--format", "json", ok=True).stdout)
    assert groups == [{"name": "db", "members": ["n3"]}, {"name": "edge", "members": ["n1"]},
                      {"name": "web", "members": ["n1", "n2", "n3"]}]
    admin("cluster", "group", "remove", "n3", "web", ok=True)
    assert admin("cluster", "group", "remove", "n3", "web").exit_code == 2

    admin("launch", "busybox", "c1", "--target", "n2", ok=True)
    res = admin("cluster", "remove", "n2")
    assert res.exit_code == 1 and "holds 1 container" in res.output
    admin("cluster", "remove", "n3", ok=True)
    assert admin("cluster", "remove", "n3").exit_code == 2
    assert [r["name"] for r in json.loads(
        admin("cluster", "list", "-f", "json", ok=True).stdout)] == ["n1", "n2"]
    # forgetting a member touches nothing there
    assert os.path.exists(os.path.join(members["n3"], "root.id"))


def test_single_host_root_is_unchanged(members: dict[str, str]) -> None:
    single = Admin(members["n1"])
    single("launch", "busybox", "solo", ok=True)
    out = single("list", ok=True).stdout
    assert "LOCATION" not in out and "solo" in out
    assert "location" not in single.listing()[0]
    before = state_of(members["n1"])
    for args in (("list", "--target", "n2"), ("exec", "solo", "--target", "n2", "--", "true"),
                 ("launch", "busybox", "x", "--target", "n2")):
        res = single(*args)
        assert res.exit_code == 2, res.output
        assert len([line for line in res.output.splitlines() if line.startswith("Error:")]) == 1
    assert not os.path.exists(os.path.join(members["n1"], "cluster.db"))
    assert state_of(members["n1"]) == before


# -- placement ---------------------------------------------------------------------------------

def test_placement_by_group_and_fewest_containers(admin: Admin, members: dict[str, str]) -> None:
    admin("launch", "busybox", "a1", ok=True)                       # n1 (fewest, then name)
    admin("launch", "busybox", "a2", ok=True)                       # n2
    res = admin("launch", "busybox", "a3", ok=True)                 # n3, its image copied there
    assert "copying image busybox" in res.output and "Placed a3 on n3" in res.output
    admin("launch", "busybox", "w1", "--target", "@web", ok=True)   # n1 or n2: n1 by name
    admin("launch", "busybox", "w2", "--target", "@web", ok=True)   # then n2
    admin("launch", "busybox", "d1", "--target", "@db", ok=True)
    assert admin.where() == {"a1": "n1", "a2": "n2", "a3": "n3", "w1": "n1", "w2": "n2",
                             "d1": "n3"}
    fps = set()
    for root in members.values():   # the image is one image across the cluster
        with sysmgr.Client(root=root) as c:
            fps |= {i.fingerprint for i in c.images.all()}
    assert len(fps) == 1
    res = admin("launch", "busybox", "a1")
    assert res.exit_code == 2 and "already exists on n1" in res.output


def test_placement_by_memory(admin: Admin, members: dict[str, str], monkeypatch) -> None:
    real = remote.hello

    def hello(spec, **kw):   # n1 and n2 report 512MiB free; n3 the machine's real figure
        h = real(spec, **kw)
        return dataclasses.replace(h, memory_free=GiB // 2) if spec.name != "n3" else h

    monkeypatch.setattr(remote, "hello", hello)
    res = admin("launch", "busybox", "big", "-c", "limits.memory=1GiB", ok=True)
    assert "Placed big on n3" in res.output
    admin("launch", "busybox", "small", "-c", "limits.memory=64MiB", ok=True)
    assert admin.where() == {"big": "n3", "small": "n1"}
    before = [state_of(r) for r in members.values()]
    res = admin("launch", "busybox", "huge", "-c", "limits.memory=1024GiB")
    assert res.exit_code == 1
    assert "no cluster member can take container 'huge'" in res.output
    assert "n1: limits.memory 1024GiB needs 1024GiB, 512MiB free" in res.output
    assert [state_of(r) for r in members.values()] == before


# -- manifests ---------------------------------------------------------------------------------

SITE = """\
    kind: Member
    name: {name}
    url: "local:"
    root: {root}
    groups: [{group}]
    """

APPS = """\
    kind: Profile
    name: small
    config: {limits.memory: 64MiB}
    ---
    kind: Container
    name: web1
    image: busybox
    profiles: [default, small]
    target: "@web"
    state: running
    ---
    kind: Container
    name: web2
    image: busybox
    profiles: [default, small]
    target: "@web"
    state: running
    ---
    kind: Container
    name: db1
    image: busybox
    target: n3
    state: running
    """


def test_apply_spanning_three_members(members: dict[str, str], tmp_path) -> None:
    admin = Admin(str(tmp_path / "admin"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "cluster.yaml").write_text("---\n".join(
        textwrap.dedent(SITE).format(name=n, root=r, group="db" if n == "n3" else "web")
        for n, r in members.items()))
    (site / "apps.yaml").write_text(textwrap.dedent(APPS))
    diff = admin("diff", "-f", str(site))
    assert diff.exit_code == 1, diff.output
    lines = [line for line in diff.stdout.splitlines() if line and line[0] in "+~><!-"]
    assert lines and all(line.split()[1].startswith("[") for line in lines)  # a member each
    assert "+ [cluster] create Member n3" in diff.stdout
    assert "+ [n3] copy Image busybox from n1" in diff.stdout
    assert "> [n3] start Container db1" in diff.stdout
    res = admin("apply", "-f", str(site))
    assert res.exit_code == 0, res.output
    assert admin.where() == {"web1": "n1", "web2": "n2", "db1": "n3"}
    assert all(c["status"] == "Running" for c in admin.listing())
    again = admin("apply", "-f", str(site))
    assert again.exit_code == 0 and again.stdout.strip() == "no changes", again.output
    assert admin("diff", "-f", str(site)).exit_code == 0
    # a placed container stays put, whatever its target says now
    (site / "apps.yaml").write_text(textwrap.dedent(APPS).replace("target: n3", "target: n1"))
    assert admin("diff", "-f", str(site)).exit_code == 0
    with sysmgr.Client(root=admin.root) as c:
        plan = c.manifests.plan([str(site)])
    assert plan.empty
    assert any("db1 stays on n3 (target: n1)" in w for w in plan.warnings)


def test_manifest_target_naming_no_member_changes_nothing(admin: Admin, members, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(APPS).replace("target: n3", "target: nowhere"))
    roots = [admin.root, *members.values()]
    before = [state_of(r) for r in roots]
    for verb in ("validate", "diff", "apply"):
        res = admin(verb, "-f", str(bad))
        assert res.exit_code == 2, res.output
        errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert errors == [f"Error: {bad}:22: target: no cluster member named 'nowhere' "
                          "(members: n1, n2, n3)"]
    assert [state_of(r) for r in roots] == before


# -- containers wherever they live ---------------------------------------------------------------

def test_container_verbs_find_the_member(admin: Admin, capfd) -> None:
    admin("launch", "busybox", "c1", "--target", "n2", ok=True)
    capfd.readouterr()
    res = admin("exec", "c1", "--", "echo", "hello")   # exec writes to the real stdout
    assert res.exit_code == 0 and capfd.readouterr().out == "hello\n"
    res = admin("exec", "c1", "--target", "n2", "--", "echo", "there")
    assert res.exit_code == 0 and capfd.readouterr().out == "there\n"
    res = admin("exec", "c1", "--target", "n1", "--", "echo", "x")
    assert res.exit_code == 2 and "'c1' not found" in res.output
    res = admin("exec", "c1", "--target", "n9", "--", "echo", "x")
    assert res.exit_code == 2 and "no cluster member named 'n9'" in res.output
    assert json.loads(admin("info", "c1", "-f", "json", ok=True).stdout)["name"] == "c1"
    admin("config", "set", "c1", "user.role=web", ok=True)
    assert admin("config", "get", "c1", "user.role", ok=True).stdout.strip() == "web"
    admin("snapshot", "list", "c1", ok=True)          # the fake pool takes no snapshots
    admin("file", "push", "-p", "-", "c1/etc/motd", input="hi\n", ok=True)
    assert admin("file", "pull", "c1/etc/motd", "-", "--target", "n2", ok=True).stdout == "hi\n"
    assert admin("console", "c1", "--show-log").exit_code == 0
    admin("stop", "c1", ok=True)
    admin("start", "c1", ok=True)
    with sysmgr.Client(root=admin.root, member="n2") as c:
        (ct,) = c.containers.all()
        assert (ct.name, ct.location, ct.config["user.role"]) == ("c1", "n2", "web")
    admin("delete", "--force", "c1", ok=True)
    assert admin.listing() == []


# -- evacuate and restore ---------------------------------------------------------------------

def test_evacuate_stop_then_restore(admin: Admin) -> None:
    admin("launch", "busybox", "keep", "--target", "n1", ok=True)
    for name in ("s1", "a1", "off"):
        admin("launch", "busybox", name, "--target", "n2", ok=True)
    admin("config", "set", "s1", "cluster.evacuate=stop", ok=True)
    admin("stop", "off", ok=True)
    res = admin("cluster", "evacuate", "n2")
    assert res.exit_code == 1 and "refusing without confirmation" in res.output
    res = admin("cluster", "evacuate", "n2", "--yes")
    assert res.exit_code == 0, res.output
    # a1 (cluster.evacuate=auto) moved to a member placement chose (the fake pools stream
    # as tar: stopped first, started there); s1 stopped; off (stopped) stays
    assert re.search(r"moved a1 to n[13] \(down [0-9.]+ s\)", res.output), res.output
    assert "1 container(s) moved, 1 stopped" in res.output
    status = {c["name"]: c["status"] for c in admin.listing()}
    assert status == {"keep": "Running", "s1": "Stopped", "a1": "Running", "off": "Stopped"}
    assert admin.where()["a1"] != "n2"
    rows = {r["name"]: r["state"] for r in
            json.loads(admin("cluster", "list", "-f", "json", ok=True).stdout)}
    assert rows["n2"] == "EVACUATED"
    admin("launch", "busybox", "new", "--target", "@web", ok=True)   # not on n2
    assert admin.where()["new"] == "n1"
    res = admin("launch", "busybox", "nope", "--target", "n2")
    assert res.exit_code == 1 and "n2 is evacuated" in res.output
    res = admin("cluster", "restore", "n2", ok=True)
    assert "2 container(s) back" in res.output and "moved a1 back to n2" in res.output
    status = {c["name"]: c["status"] for c in admin.listing()}
    assert status["s1"] == status["a1"] == "Running" and status["off"] == "Stopped"
    assert admin.where()["a1"] == "n2"
    rows = {r["name"]: r["state"] for r in
            json.loads(admin("cluster", "list", "-f", "json", ok=True).stdout)}
    assert rows["n2"] == "ONLINE"


# -- a member that does not answer ------------------------------------------------------------

def test_unreachable_member_is_reported_while_the_others_list(admin: Admin, members,
                                                             capfd) -> None:
    admin("launch", "busybox", "c1", "--target", "n1", ok=True)
    admin("launch", "busybox", "c3", "--target", "n3", ok=True)
    gone = members["n3"] + ".away"
    os.rename(members["n3"], gone)
    try:
        res = admin("list")
        assert res.exit_code == 1
        assert "c1" in res.stdout and "c3" not in res.stdout
        (err,) = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
        assert err.startswith("Error: member n3 is unreachable: ") and len(err) > 35
        rows = {r["name"]: r for r in
                json.loads(admin("cluster", "list", "-f", "json").stdout)}
        assert rows["n3"]["state"] == "OFFLINE" and rows["n3"]["reason"]
        assert rows["n1"]["state"] == "ONLINE"
        res = admin("exec", "c3", "--", "echo", "x")
        assert res.exit_code == 1 and "not answering: n3" in res.output
        capfd.readouterr()
        admin("exec", "c1", "--", "echo", "x", ok=True)
        assert capfd.readouterr().out == "x\n"
    finally:
        os.rename(gone, members["n3"])


# -- host keys (the SSH transport faked at hello; the real one is tested on sshd hosts) --------

FP = "SHA256:" + "k" * 43


def fake_ssh_hello(real):
    def hello(spec, **kw):
        if spec.is_local:
            return real(spec, **kw)
        if spec.host_key != FP:
            raise HostKeyRejected(f"unknown host key {FP} for {spec.url}")
        return {"rpc": 1, "version": "0.1.0", "containers": 0,
                "facts": {"memory_total": 4 * GiB, "memory_free": 2 * GiB}}
    return hello


def test_add_checks_the_host_key(admin: Admin, monkeypatch) -> None:
    monkeypatch.setattr(remote, "hello", fake_ssh_hello(remote.hello))
    accepted = []
    monkeypatch.setattr(remote, "accept_host_key", lambda root, url, fp, **kw: accepted.append((url, fp)))
    before = state_of(admin.root)
    res = admin("cluster", "add", "far", "ssh://root@192.0.2.9")      # no terminal: refused
    assert res.exit_code == 2
    assert f"Error: unknown host key {FP} for ssh://root@192.0.2.9: refused" in res.output
    assert f"--accept-host-key {FP}" in res.output
    other = "SHA256:" + "x" * 43
    res = admin("cluster", "add", "far", "ssh://root@192.0.2.9", "--accept-host-key", other)
    assert res.exit_code == 2 and f"is {FP}, not {other}" in res.output
    assert state_of(admin.root) == before
    admin("cluster", "add", "far", "ssh://192.0.2.9:2222", "--accept-host-key", FP, ok=True)
    with sysmgr.Client(root=admin.root) as c:
        far = c.cluster.members.get("far")
        assert (far.url, far.host_key, far.root) == ("ssh://root@192.0.2.9:2222", FP,
                                                     "/var/lib/sysmgr")
    rows = {r["name"]: r for r in json.loads(admin("cluster", "list", "-f", "json", ok=True).stdout)}
    assert rows["far"]["state"] == "ONLINE" and rows["far"]["memory_total"] == 4 * GiB


def test_the_admin_root_as_a_member_of_its_own_cluster(members: dict[str, str]) -> None:
    here = Admin(members["n1"])
    here("launch", "busybox", "mine", ok=True)
    here("cluster", "add", "self", "local:", ok=True)        # root: the admin root itself
    here("cluster", "add", "n2", "local:", "--root", members["n2"], ok=True)
    here("launch", "busybox", "other", ok=True)               # fewest containers: n2
    assert here.where() == {"mine": "self", "other": "n2"}
    here("stop", "mine", ok=True)
    assert {c["name"]: c["status"] for c in here.listing()}["mine"] == "Stopped"


def test_evacuation_that_fails_half_way(admin: Admin, monkeypatch) -> None:
    for name in ("a", "stuck", "z"):
        admin("launch", "busybox", name, "--target", "n2", "-c", "cluster.evacuate=stop", ok=True)
    real = LocalBackend.container_stop

    def stop(self, name, **kw):
        if name == "stuck":
            raise DriverError("the init would not die")
        return real(self, name, **kw)

    monkeypatch.setattr(LocalBackend, "container_stop", stop)
    res = admin("cluster", "evacuate", "n2", "--yes")
    assert res.exit_code == 1
    assert ("Error: evacuating n2: not moved, still running there: stuck (the init would not "
            "die); stopped: a, z") in res.output
    status = {c["name"]: c["status"] for c in admin.listing()}
    assert status == {"a": "Stopped", "stuck": "Running", "z": "Stopped"}   # all somewhere
    rows = {r["name"]: r["state"] for r in
            json.loads(admin("cluster", "list", "-f", "json", ok=True).stdout)}
    assert rows["n2"] == "EVACUATED"
    monkeypatch.undo()
    res = admin("cluster", "restore", "n2", ok=True)
    assert "2 container(s) back" in res.output
    assert all(c["status"] == "Running" for c in admin.listing())


def test_image_profile_network_and_storage_verbs_take_target(admin: Admin, members) -> None:
    """LXD's --target on the non-container verbs too: they act on that member's root."""
    images = json.loads(admin("image", "list", "--format", "json", "--target", "n1", ok=True).stdout)
    assert len(images) == 1 and "busybox" in json.dumps(images[0]["aliases"])
    assert json.loads(admin("image", "list", "--format", "json", "--target", "n2", ok=True).stdout) == []
    admin("profile", "create", "only-n2", "--target", "n2", ok=True)
    for n, root in members.items():
        with sysmgr.Client(root=root) as c:
            assert c.profiles.exists("only-n2") == (n == "n2")
    admin("profile", "delete", "only-n2", "--target", "n2", ok=True)
    pools = json.loads(admin("storage", "list", "--format", "json", "--target", "n3", ok=True).stdout)
    assert [p["name"] for p in pools] == ["default"]
    assert admin("network", "list", "--target", "n3", ok=True).exit_code == 0
    res = admin("image", "list", "--target", "nowhere")
    assert res.exit_code == 2 and "nowhere" in res.output
