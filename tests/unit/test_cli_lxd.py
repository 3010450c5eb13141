"""LXD's verbs and behaviours (issue 13) through the real CLI, API and engine, on the FAKE
runtime and network drivers and a real ``dir`` pool (it keeps snapshots): lifecycle
errors and confirmations, names, ``KEY -``, snapshots (rename, restore in place, expiry in
LXD's format, ``config edit NAME/SNAP``), properties, device keys, profile rename/assign,
``--format`` on show, launch without a name.

Skipped, like ``test_cli_engine.py``, while the engine or the fake drivers are missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat

import pytest
import yaml

from tests.unit.cli_runner import CliAt

_NEEDED = ("sysmgr.drivers.runtime.fake", "sysmgr.drivers.network.fake", "sysmgr.engine.apply")


def _missing() -> list[str]:
    return [m for m in _NEEDED if importlib.util.find_spec(m) is None]


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"needs the fake drivers: {_missing()}")


class Sysmgr(CliAt):
    def doc(self, *args: str) -> dict:
        return yaml.safe_load(self(*args, ok=True).stdout)

    def fails(self, *args: str, input: str | None = None, code: int = 1) -> str:
        res = self(*args, input=input)
        assert res.exit_code == code, (args, res.output)
        return res.stderr


@pytest.fixture
def sysmgr(sysmgr_root: str, tmp_path):
    img = tmp_path / "img"
    (img / "sbin").mkdir(parents=True)
    (img / "sbin" / "init").write_text("#!/bin/sh\n")
    (img / "etc").mkdir()
    s = Sysmgr(sysmgr_root)
    s("init", "--auto", "--runtime", "fake", "--storage-driver", "dir", ok=True)
    s("image", "import", str(img), "--alias", "img", ok=True)
    yield s
    for c in json.loads(s("list", "--format", "json", ok=True).stdout):
        s("delete", "--force", c["name"])


# -- lifecycle ----------------------------------------------------------------------------------

def test_lifecycle_confirmations_and_lxd_errors(sysmgr):
    assert sysmgr("create", "img", "c1", ok=True).stdout == "Creating c1\nContainer c1 created\n"
    # restart of a stopped container is an error (LXD: start it), and changes nothing
    assert "is not running" in sysmgr.fails("restart", "c1")
    assert sysmgr("start", "c1", ok=True).stdout == "Container c1 started\n"
    # unfreeze of a running container is an error too; freeze of a frozen one as well
    assert "is not frozen" in sysmgr.fails("unfreeze", "c1")
    assert sysmgr("freeze", "c1", ok=True).stdout == "Container c1 frozen\n"
    assert "already frozen" in sysmgr.fails("freeze", "c1")
    assert sysmgr("unfreeze", "c1", ok=True).stdout == "Container c1 unfrozen\n"
    assert sysmgr("restart", "c1", ok=True).stdout == "Container c1 restarted\n"
    assert sysmgr("stop", "c1", ok=True).stdout.startswith("Container c1 stopped")
    assert sysmgr("delete", "c1", ok=True).stdout == "Container c1 deleted\n"


def test_names_may_start_with_a_digit(sysmgr):
    sysmgr("create", "img", "0abc", ok=True)
    assert "0abc" in sysmgr("list", "-c", "n", "-f", "csv", ok=True).stdout.split()
    assert "must not be all digits" in sysmgr.fails("create", "img", "1234", code=2)


def test_launch_without_a_name_picks_a_free_one(sysmgr):
    out = sysmgr("launch", "img", ok=True).stdout
    name = re.fullmatch(r"Creating ([a-z]+-[a-z]+)\nContainer \1 started\n", out).group(1)
    listed = json.loads(sysmgr("list", "--format", "json", ok=True).stdout)
    assert [(c["name"], c["status"]) for c in listed] == [(name, "Running")]


def test_config_value_from_stdin_and_properties(sysmgr):
    sysmgr("create", "img", "c1", ok=True)
    # `KEY -` reads the value from stdin (one trailing newline dropped)
    res = sysmgr("config", "set", "c1", "user.motd", "-", input="line 1\nline 2\n", ok=True)
    assert res.stdout == "Container c1 updated: user.motd set\n"
    assert sysmgr.doc("config", "show", "c1")["config"]["user.motd"] == "line 1\nline 2"
    # --property reaches the container's own fields, not config keys
    sysmgr("config", "set", "c1", "description=web server", "--property", ok=True)
    assert sysmgr("config", "get", "c1", "description", "--property", ok=True).stdout == "web server\n"
    assert sysmgr.doc("config", "show", "c1")["description"] == "web server"
    assert "user.motd" not in sysmgr.doc("config", "show", "c1")["description"]
    sysmgr("config", "unset", "c1", "description", "-p", ok=True)
    assert sysmgr.doc("config", "show", "c1")["description"] == ""
    assert "has no property 'size'" in sysmgr.fails("config", "set", "c1", "size=1", "-p", code=2)
    sysmgr("profile", "set", "default", "description", "the default", "--property", ok=True)
    assert sysmgr.doc("profile", "show", "default")["description"] == "the default"


def test_show_takes_json(sysmgr):
    sysmgr("create", "img", "c1", ok=True)
    assert json.loads(sysmgr("config", "show", "c1", "--format", "json", ok=True).stdout)["name"] == "c1"
    assert json.loads(sysmgr("profile", "show", "default", "-f", "json", ok=True).stdout)["name"] == "default"
    devs = json.loads(sysmgr("config", "device", "show", "c1", "-e", "-f", "json", ok=True).stdout)
    assert devs["root"]["path"] == "/"


# -- devices --------------------------------------------------------------------------------------

def test_device_get_set_unset(sysmgr):
    sysmgr("create", "img", "c1", ok=True)
    sysmgr("config", "device", "add", "c1", "data", "disk", "source=/tmp", "path=/srv", ok=True)
    assert sysmgr("config", "device", "get", "c1", "data", "path", ok=True).stdout == "/srv\n"
    res = sysmgr("config", "device", "set", "c1", "data", "path=/data", ok=True)
    assert res.stdout == "Device data of c1 updated: path set\n"
    assert sysmgr("config", "device", "get", "c1", "data", "path", ok=True).stdout == "/data\n"
    # a profile's device is read through, and copied into the container to change it
    assert sysmgr("config", "device", "get", "c1", "root", "pool", ok=True).stdout == "default\n"
    assert "root" not in sysmgr("config", "device", "list", "c1", ok=True).stdout.split()
    sysmgr("config", "device", "set", "c1", "root", "readonly", "false", ok=True)
    listed = json.loads(sysmgr("config", "device", "list", "c1", "-f", "json", ok=True).stdout)
    assert {d["name"] for d in listed} == {"data", "root"}
    assert sysmgr.doc("config", "device", "show", "c1")["root"]["readonly"] == "false"
    sysmgr("config", "device", "unset", "c1", "root", "readonly", ok=True)
    assert "readonly" not in sysmgr.doc("config", "device", "show", "c1")["root"]
    assert "cannot be unset" in sysmgr.fails("config", "device", "unset", "c1", "root", "type")
    assert "readonly" not in sysmgr.doc("profile", "show", "default")["devices"]["root"]
    # the same verbs on a profile
    sysmgr("profile", "device", "set", "default", "root", "required=true", ok=True)
    assert sysmgr("profile", "device", "get", "default", "root", "required", ok=True).stdout == "true\n"
    sysmgr("profile", "device", "unset", "default", "root", "required", ok=True)
    assert "required" not in sysmgr.doc("profile", "show", "default")["devices"]["root"]
    assert "not found" in sysmgr.fails("profile", "device", "get", "default", "nope", "x", code=2)


# -- profiles -------------------------------------------------------------------------------------

def test_profile_rename_and_assign(sysmgr):
    sysmgr("profile", "create", "web", "-c", "user.role=web", ok=True)
    sysmgr("create", "img", "c1", "-p", "default", "-p", "web", ok=True)
    sysmgr("snapshot", "create", "c1", "s0", ok=True)
    res = sysmgr("profile", "rename", "web", "www", ok=True)
    assert res.stdout == "Profile web renamed to www\n"
    assert sysmgr.doc("config", "show", "c1")["profiles"] == ["default", "www"]
    assert sysmgr.doc("snapshot", "show", "c1", "s0")["profiles"] == ["default", "www"]
    assert sysmgr.doc("config", "show", "c1", "-e")["config"]["user.role"] == "web"
    assert "cannot be renamed" in sysmgr.fails("profile", "rename", "default", "d2")
    sysmgr("profile", "assign", "c1", "www,default", ok=True)
    assert sysmgr.doc("config", "show", "c1")["profiles"] == ["www", "default"]
    assert "not found" in sysmgr.fails("profile", "assign", "c1", "default,nope", code=2)
    assert sysmgr.doc("config", "show", "c1")["profiles"] == ["www", "default"]


# -- snapshots ------------------------------------------------------------------------------------

def test_snapshot_rename_expiry_and_info(sysmgr):
    sysmgr("launch", "img", "c1", ok=True)
    sysmgr("snapshot", "create", "c1", "before", "--expiry", "2d", ok=True)
    sysmgr("snapshot", "create", "c1", "keep", "--no-expiry", ok=True)
    res = sysmgr("snapshot", "rename", "c1", "before", "pre-upgrade", ok=True)
    assert res.stdout == "Snapshot c1/before renamed to pre-upgrade\n"
    names = [s["name"] for s in json.loads(sysmgr("snapshot", "list", "c1", "-f", "json", ok=True).stdout)]
    assert names == ["pre-upgrade", "keep"]
    assert "already exists" in sysmgr.fails("snapshot", "rename", "c1", "keep", "pre-upgrade", code=2)
    # LXD's times: RFC 3339, and Go's zero time for "never"
    snap = sysmgr.doc("snapshot", "show", "c1", "keep")
    assert snap["expires_at"] == "0001-01-01T00:00:00Z" and snap["stateful"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", sysmgr.doc(
        "config", "show", "c1/pre-upgrade")["expires_at"])
    # config edit NAME/SNAP changes its expiry (and description), nothing else
    doc = sysmgr.doc("config", "show", "c1/keep")
    doc["expires_at"] = "2031-01-02T03:04:05Z"
    res = sysmgr("config", "edit", "c1/keep", input=yaml.safe_dump(doc), ok=True)
    assert res.stdout == "Snapshot c1/keep updated\n"
    assert sysmgr.doc("snapshot", "show", "c1", "keep")["expires_at"] == "2031-01-02T03:04:05Z"
    doc["config"] = {"limits.memory": "1GiB"}
    assert "only expires_at and description" in sysmgr.fails(
        "config", "edit", "c1/keep", input=yaml.safe_dump(doc), code=2)
    assert "recorded" in sysmgr.fails("config", "set", "c1/keep", "user.x=1", code=2)
    # info lists the snapshots as lxc info does
    info = sysmgr("info", "c1", ok=True).stdout
    table = info[info.index("Snapshots:"):]
    assert "NAME" in table and "TAKEN AT" in table and "EXPIRES AT" in table and "STATEFUL" in table
    assert "pre-upgrade" in table and "2031/01/02 03:04 UTC" in table and "| NO " in table
    listed = json.loads(sysmgr("info", "c1", "-f", "json", ok=True).stdout)["snapshots"]
    assert [s["name"] for s in listed] == ["pre-upgrade", "keep"]


def test_restore_of_a_running_container_in_place(sysmgr):
    sysmgr("launch", "img", "c1", "-c", "user.v=1", ok=True)
    sysmgr("snapshot", "create", "c1", "s0", ok=True)
    sysmgr("config", "set", "c1", "user.v=2", ok=True)
    res = sysmgr("snapshot", "restore", "c1", "s0", ok=True)
    assert res.stdout == "Container c1 restored from snapshot s0 (stopped and started again)\n"
    shown = json.loads(sysmgr("list", "c1", "-f", "json", ok=True).stdout)[0]
    assert shown["status"] == "Running" and shown["config"]["user.v"] == "1"
    sysmgr("stop", "c1", ok=True)
    res = sysmgr("snapshot", "restore", "c1", "s0", ok=True)
    assert res.stdout == "Container c1 restored from snapshot s0\n"
    assert json.loads(sysmgr("list", "c1", "-f", "json", ok=True).stdout)[0]["status"] == "Stopped"


# -- list -----------------------------------------------------------------------------------------

def test_list_columns_fast_filters_and_json(sysmgr):
    sysmgr("launch", "img", "web1", "-c", "user.team=infra", ok=True)
    sysmgr("create", "img", "web2", ok=True)
    sysmgr("create", "img", "db1", "-c", "user.team=data", ok=True)
    sysmgr("snapshot", "create", "web1", ok=True)
    csv = sysmgr("list", "-c", "ns,S,user.team:TEAM", "-f", "csv", ok=True).stdout
    assert csv.splitlines() == ["db1,STOPPED,0,data", "web1,RUNNING,1,infra", "web2,STOPPED,0,"]
    table = sysmgr("list", "-c", "nbt,user.team:TEAM", ok=True).stdout
    assert "| NAME | STORAGE POOL |   TYPE    | TEAM  |" in table
    assert "CONTAINER" in table
    fast = sysmgr("list", "--fast", ok=True).stdout.splitlines()[1]
    assert [h.strip() for h in fast.split("|")[1:-1]] == [
        "NAME", "STATE", "ARCHITECTURE", "CREATED AT", "PROFILES", "TYPE"]  # LXD's nsacPt
    assert "unknown column shorthand char 'z'" in sysmgr.fails("list", "-c", "nz", code=2)
    assert sysmgr("list", "--fast", "-c", "n").exit_code == 2
    # LXD's filters: a name prefix, status=, a config key (abbreviated), all of them together
    def names(*filters: str) -> list[str]:
        return sysmgr("list", *filters, "-c", "n", "-f", "csv", ok=True).stdout.split()
    assert names("web") == ["web1", "web2"]
    assert names("status=running") == ["web1"]
    assert names("user.team=infra") == ["web1"]
    assert names("u.team=d.*") == ["db1"]
    assert names("web", "status=stopped") == ["web2"]
    # JSON: created_at and last_used_at (set by the first start, kept after a stop), and
    # the addresses as data
    sysmgr("stop", "web1", ok=True)
    rows = {c["name"]: c for c in json.loads(sysmgr("list", "-f", "json", ok=True).stdout)}
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(iso, rows["web1"]["created_at"])
    assert re.fullmatch(iso, rows["web1"]["last_used_at"]) and rows["web2"]["last_used_at"] is None
    assert rows["web1"]["addresses"] == [] and rows["web1"]["type"] == "container"


# -- images ---------------------------------------------------------------------------------------

def test_image_info_export_edit_and_aliases(sysmgr, tmp_path):
    listed = json.loads(sysmgr("image", "list", "-f", "json", ok=True).stdout)
    assert listed[0]["aliases"] == [{"name": "img", "description": ""}]  # LXD's shape
    fp = listed[0]["fingerprint"]
    info = sysmgr("image", "info", "img", ok=True).stdout
    assert f"Fingerprint: {fp}" in info and "Aliases:\n    - img" in info
    # edit: the properties change, the fingerprint cannot
    doc = sysmgr.doc("image", "show", "img")
    res = sysmgr("image", "edit", "img", input=yaml.safe_dump(
        {"fingerprint": fp, "properties": {"os": "tiny", "description": "test image"}}), ok=True)
    assert res.stdout == f"Image {fp[:12]} updated\n"
    assert sysmgr.doc("image", "show", "img")["properties"] == {"os": "tiny", "description": "test image"}
    assert "os: tiny" in sysmgr("image", "info", "img", ok=True).stdout
    assert "cannot change" in sysmgr.fails("image", "edit", "img", input="fingerprint: abc\n", code=2)
    assert doc["fingerprint"] == fp
    # aliases: create, rename (the image keeps it), list, delete
    assert sysmgr("image", "alias", "create", "tiny", fp[:12], ok=True).stdout == "Image alias tiny created\n"
    assert sysmgr("image", "alias", "rename", "tiny", "tiny/1", ok=True).stdout == \
        "Image alias tiny renamed to tiny/1\n"
    aliases = json.loads(sysmgr("image", "alias", "list", "-f", "json", ok=True).stdout)
    assert [(a["name"], a["target"]) for a in aliases] == [("img", fp), ("tiny/1", fp)]
    assert "already exists" in sysmgr.fails("image", "alias", "rename", "tiny/1", "img", code=2)
    assert "not found" in sysmgr.fails("image", "alias", "rename", "nope", "x", code=2)
    sysmgr("image", "alias", "delete", "tiny/1", ok=True)
    # export writes a unified tarball that imports back as the same tree
    out = tmp_path / "out"
    out.mkdir()
    res = sysmgr("image", "export", "img", str(out), ok=True)
    tarball = out / f"{fp}.tar.zst"
    assert res.stdout == f"Image {fp[:12]} exported to {tarball}\n" and tarball.stat().st_size > 0
    sysmgr("image", "delete", "img", ok=True)
    sysmgr("image", "import", str(tarball), "--alias", "again", ok=True)
    again = sysmgr.doc("image", "show", "again")
    assert again["properties"]["os"] == "tiny"


# -- exec and files -------------------------------------------------------------------------------

def test_file_trees_edit_and_delete(sysmgr, tmp_path):
    sysmgr("create", "img", "c1", ok=True)  # stopped: the files are its volume's
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("<h1>hi</h1>\n")
    (site / "css" / "main.css").write_text("body {}\n")
    (site / "run.sh").write_text("#!/bin/sh\n")
    (site / "run.sh").chmod(0o750)
    (site / "latest").symlink_to("index.html")
    os.mkfifo(site / "fifo")
    res = sysmgr("file", "push", "-r", "-p", str(site), "c1/srv/", "--uid", "33", "--gid", "33", ok=True)
    assert "skipped" in res.stderr and "fifo" in res.stderr
    assert res.stdout == f"Directory c1/srv/site pushed from {site}\n"
    back = tmp_path / "back"
    res = sysmgr("file", "pull", "-r", "c1/srv/site", str(back), ok=True)
    assert (back / "index.html").read_text() == "<h1>hi</h1>\n"
    assert (back / "css" / "main.css").read_text() == "body {}\n"
    assert os.readlink(back / "latest") == "index.html"
    assert stat.S_IMODE((back / "run.sh").stat().st_mode) == 0o750
    assert not (back / "fifo").exists()
    # into an existing local directory: the tree keeps its name; -p makes parents
    sysmgr("file", "pull", "-r", "c1/srv/site/css", str(back), ok=True)
    assert (back / "css" / "main.css").exists()
    sysmgr("file", "pull", "-p", "c1/srv/site/index.html", str(tmp_path / "a" / "b" / "i.html"), ok=True)
    assert (tmp_path / "a" / "b" / "i.html").read_text() == "<h1>hi</h1>\n"
    # edit: new content from stdin, mode and owner kept
    sysmgr("file", "edit", "c1/srv/site/run.sh", input="#!/bin/sh\necho new\n", ok=True)
    assert sysmgr("file", "pull", "c1/srv/site/run.sh", "-", ok=True).stdout == "#!/bin/sh\necho new\n"
    sysmgr("file", "pull", "c1/srv/site/run.sh", str(tmp_path / "run2"), ok=True)
    # delete: a file, an empty directory; a full one only with --force
    assert sysmgr("file", "delete", "c1/srv/site/index.html", ok=True).stdout == \
        "File c1/srv/site/index.html deleted\n"
    assert "not found" in sysmgr.fails("file", "pull", "c1/srv/site/index.html", "-", code=2)
    assert "not empty" in sysmgr.fails("file", "delete", "c1/srv/site", code=2)
    sysmgr("file", "delete", "-f", "c1/srv/site", ok=True)
    assert "not found" in sysmgr.fails("file", "pull", "-r", "c1/srv/site", str(tmp_path / "x"), code=2)
    assert "root directory" in sysmgr.fails("file", "delete", "-f", "c1/", code=2)


def test_exec_user_and_group_options(sysmgr):
    sysmgr("launch", "img", "c1", ok=True)
    bad = sysmgr("exec", "c1", "--user", "-1", "--", "true")
    assert bad.exit_code == 2


# -- copy and export ------------------------------------------------------------------------------

def test_copy_keeps_snapshots_unless_instance_only(sysmgr, tmp_path):
    sysmgr("create", "img", "c1", ok=True)
    res = sysmgr("file", "push", "-", "c1/etc/marker", input="v1\n", ok=True)
    assert res.stdout == "File c1/etc/marker pushed\n"
    sysmgr("snapshot", "create", "c1", "s0", ok=True)
    sysmgr("file", "push", "-", "c1/etc/marker", input="v2\n", ok=True)
    res = sysmgr("copy", "c1", "c2", "-q", ok=True)
    assert res.stdout.startswith("Container c1 copied to c2")
    assert [s["name"] for s in json.loads(sysmgr("snapshot", "list", "c2", "-f", "json", ok=True).stdout)] == ["s0"]
    assert sysmgr("file", "pull", "c2/etc/marker", "-", ok=True).stdout == "v2\n"
    sysmgr("snapshot", "restore", "c2", "s0", ok=True)  # the copy's snapshot has s0's files
    assert sysmgr("file", "pull", "c2/etc/marker", "-", ok=True).stdout == "v1\n"
    sysmgr("copy", "c1", "c3", "--instance-only", ok=True)
    assert json.loads(sysmgr("snapshot", "list", "c3", "-f", "json", ok=True).stdout) == []
    assert sysmgr("file", "pull", "c3/etc/marker", "-", ok=True).stdout == "v2\n"
    # export: with the snapshots, or without
    full, bare = tmp_path / "full.tar.zst", tmp_path / "bare.tar.zst"
    assert "1 snapshot(s)" in sysmgr("export", "c1", str(full), "-q", ok=True).stdout
    assert "snapshot(s)" not in sysmgr("export", "c1", str(bare), "-q", "--instance-only", ok=True).stdout
    sysmgr("import", str(bare), "c4", "-q", ok=True)
    assert json.loads(sysmgr("snapshot", "list", "c4", "-f", "json", ok=True).stdout) == []


def test_copy_changes_profiles_config_and_devices(sysmgr):
    sysmgr("profile", "create", "web", "-c", "user.role=web", ok=True)
    sysmgr("create", "img", "c1", "-p", "default", "-p", "web", ok=True)
    sysmgr("snapshot", "create", "c1", ok=True)  # streamed copies take the changes too
    for args in ((), ("--instance-only",)):
        name = "n" + str(len(args))
        sysmgr("copy", "c1", name, "--no-profiles", "-c", "user.x=1", "-d", "root,readonly=false",
               *args, ok=True)
        doc = sysmgr.doc("config", "show", name)
        assert doc["profiles"] == [] and doc["config"]["user.x"] == "1"
        # no profile gives it a root disk any more: it keeps the one it had, locally
        assert doc["devices"]["root"]["path"] == "/" and doc["devices"]["root"]["readonly"] == "false"
        assert doc["devices"]["root"]["pool"] == "default"
    sysmgr("copy", "c1", "p1", "-p", "default", ok=True)
    assert sysmgr.doc("config", "show", "p1")["profiles"] == ["default"]
    assert "user.role" not in sysmgr.doc("config", "show", "p1", "-e")["config"]
    assert "not found" in sysmgr.fails("copy", "c1", "p2", "-p", "nope", code=2)
    assert sysmgr("copy", "c1", "p3", "--refresh", "-p", "default").exit_code == 2


# -- move -----------------------------------------------------------------------------------------

def test_move_renames_and_changes_pool(sysmgr, sysmgr_root, tmp_path):
    sysmgr("storage", "create", "other", "dir", f"source={tmp_path / 'other'}", ok=True)
    sysmgr("create", "img", "c1", ok=True)
    sysmgr("file", "push", "-", "c1/etc/marker", input="v1\n", ok=True)
    sysmgr("snapshot", "create", "c1", "s0", ok=True)
    sysmgr("file", "push", "-", "c1/etc/marker", input="v2\n", ok=True)
    before = sysmgr.doc("config", "show", "c1")
    assert sysmgr("move", "c1", "c2", ok=True).stdout == "Container c1 renamed to c2\n"
    old = os.path.join(sysmgr_root, "storage-pools", "default", "containers", "c2")
    assert os.path.isdir(old)
    res = sysmgr("move", "c2", "-s", "other", ok=True)
    assert res.stdout == "Container c2 moved to storage pool other\n"
    rows = json.loads(sysmgr("list", "c2", "-f", "json", ok=True).stdout)
    assert rows[0]["pool"] == "other" and rows[0]["expanded_devices"]["root"]["pool"] == "other"
    assert sysmgr("file", "pull", "c2/etc/marker", "-", ok=True).stdout == "v2\n"
    sysmgr("snapshot", "restore", "c2", "s0", ok=True)
    assert sysmgr("file", "pull", "c2/etc/marker", "-", ok=True).stdout == "v1\n"
    assert sysmgr.doc("config", "show", "c2")["profiles"] == before["profiles"]
    # the old pool keeps nothing of it
    assert not os.path.exists(old)
    assert "already" in sysmgr.fails("move", "c2", "-s", "other")
    sysmgr("start", "c2", ok=True)
    assert "is running" in sysmgr.fails("move", "c2", "-s", "default")
    assert json.loads(sysmgr("list", "c2", "-f", "json", ok=True).stdout)[0]["pool"] == "other"


def test_a_failed_pool_move_leaves_the_container_where_it_was(sysmgr, tmp_path):
    # the fake pool fails half-way (its temporary image cannot be deleted again)
    sysmgr("storage", "create", "broken", "fake", f"source={tmp_path / 'broken'}",
           "fail=delete_image", ok=True)
    sysmgr("create", "img", "c1", ok=True)
    sysmgr("file", "push", "-", "c1/etc/marker", input="kept\n", ok=True)
    assert "injected failure" in sysmgr.fails("move", "c1", "-s", "broken")
    assert json.loads(sysmgr("list", "c1", "-f", "json", ok=True).stdout)[0]["pool"] == "default"
    assert sysmgr("file", "pull", "c1/etc/marker", "-", ok=True).stdout == "kept\n"
    assert not os.path.exists(tmp_path / "broken" / "containers" / "c1")  # the partial copy went


# -- networks and storage pools ---------------------------------------------------------------------

NET = "sysmgrbr0"  # the network `init --auto` makes (the fake driver, under the fake runtime)


def test_network_attach_detach_rename_and_listings(sysmgr):
    sysmgr("network", "create", "lab", "ipv4.address=10.99.0.1/24", ok=True)
    sysmgr("create", "img", "c1", "--no-profiles", "-d", "root,type=disk,path=/,pool=default",
           ok=True)
    res = sysmgr("network", "attach", "lab", "c1", ok=True)
    assert res.stdout == "Network lab attached to c1 (device lab)\n"
    assert sysmgr.doc("config", "device", "show", "c1")["lab"] == {
        "type": "nic", "network": "lab", "name": "lab"}
    sysmgr("network", "attach", NET, "c1", "eth1", "eth1", ok=True)
    assert "already exists" in sysmgr.fails("network", "attach", "lab", "c1", code=2)
    assert "in use by c1" in sysmgr.fails("network", "rename", "lab", "lab2")
    sysmgr("start", "c1", ok=True)
    allocs = json.loads(sysmgr("network", "list-allocations", "-f", "json", ok=True).stdout)
    mine = [a for a in allocs if a["used_by"] == "container/c1"]
    assert {a["network"] for a in mine} == {"lab", NET} and all(a["hwaddr"] for a in mine)
    assert {"used_by": "network/lab", "address": "10.99.0.1/24", "type": "network", "nat": True,
            "hwaddr": "", "network": "lab"} in allocs
    lab = next(a for a in mine if a["network"] == "lab")
    leases = json.loads(sysmgr("network", "list-leases", "lab", "-f", "json", ok=True).stdout)
    assert [(lz["hwaddr"], lz["address"]) for lz in leases if lz["hostname"] == "c1"] == [
        (lab["hwaddr"], lab["address"].split("/")[0])]
    assert "HOSTNAME" in sysmgr("network", "list-leases", "lab", ok=True).stdout
    sysmgr("stop", "c1", ok=True)
    assert sysmgr("network", "detach", "lab", "c1", ok=True).stdout == \
        "Network lab detached from c1 (device lab)\n"
    assert "lab" not in sysmgr.doc("config", "device", "show", "c1")
    assert "no nic of its own" in sysmgr.fails("network", "detach", "lab", "c1", code=2)
    assert sysmgr("network", "rename", "lab", "lab2", ok=True).stdout == "Network lab renamed to lab2\n"
    names = [n["name"] for n in json.loads(sysmgr("network", "list", "-f", "json", ok=True).stdout)]
    assert "lab2" in names and "lab" not in names
    sysmgr("network", "set", "lab2", "description=the lab", "--property", ok=True)
    assert sysmgr.doc("network", "show", "lab2")["description"] == "the lab"


def test_storage_set_edit_and_properties(sysmgr):
    sysmgr("storage", "set", "default", "user.tier=fast", ok=True)
    assert sysmgr("storage", "get", "default", "user.tier", ok=True).stdout == "fast\n"
    sysmgr("storage", "set", "default", "description", "main pool", "-p", ok=True)
    doc = sysmgr.doc("storage", "show", "default", "-f", "json")
    assert doc["description"] == "main pool" and doc["config"]["user.tier"] == "fast"
    source = doc["config"].get("source", "")
    assert "cannot change" in sysmgr.fails("storage", "set", "default", "source=/elsewhere", code=2)
    text = yaml.safe_dump({"name": "default", "description": "edited",
                           "config": {"user.tier": "slow", **({"source": source} if source else {})}})
    assert sysmgr("storage", "edit", "default", input=text, ok=True).stdout == \
        "Storage pool default updated\n"
    doc = sysmgr.doc("storage", "show", "default")
    assert doc["description"] == "edited" and doc["config"]["user.tier"] == "slow"
    sysmgr("storage", "unset", "default", "user.tier", ok=True)
    assert "user.tier" not in sysmgr.doc("storage", "show", "default")["config"]
    # a dir pool has no size of sysmgr's to change
    assert sysmgr("storage", "set", "default", "size=10GiB").exit_code == 2


# -- plans as data ----------------------------------------------------------------------------------

def test_diff_and_apply_print_the_plan_as_json(sysmgr, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("kind: Container\nname: web1\nimage: img\nconfig:\n  user.team: infra\n"
                 "state: running\n")
    res = sysmgr("diff", "-f", str(m), "--format", "json")
    assert res.exit_code == 1  # changes pending, as in text
    doc = json.loads(res.stdout)
    assert doc["changes"] is True and doc["summary"].startswith("plan: ")
    create = next(a for a in doc["actions"] if a["type"] == "CreateContainer")
    assert create["kind"] == "Container" and create["name"] == "web1" and create["effect"] == "create"
    assert create["line"] == "create Container web1" and create["fields"]["image"] == "img"
    assert create["fields"]["config"] == {"user.team": "infra"}
    res = sysmgr("apply", "-f", str(m), "--format", "json", "--yes", ok=True)
    applied = json.loads(res.stdout)  # one document on stdout: progress went to stderr
    assert applied["applied"] is True and applied["actions"] == doc["actions"]
    res = sysmgr("diff", "-f", str(m), "--format", "json", ok=True)
    assert json.loads(res.stdout) == {"changes": False, "summary": "no changes", "actions": [],
                                      "warnings": [], "revision": ""}
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Container\nname: x\n")
    assert sysmgr("diff", "-f", str(bad), "--format", "json").exit_code == 2


def test_a_mistyped_verb_gets_a_suggestion(sysmgr):
    res = sysmgr("lsit")
    assert res.exit_code == 2 and "No such command 'lsit'. Did you mean 'list'?" in res.output
    res = sysmgr("snapshot", "renam", "c1", "a", "b")
    assert res.exit_code == 2 and "Did you mean 'rename'?" in res.output
    res = sysmgr("config", "device", "unste", "c1", "root", "size")
    assert res.exit_code == 2 and "Did you mean 'unset'?" in res.output
    assert "Did you mean" not in sysmgr("xyzzy").output
    assert "_rpc" not in sysmgr("_rp").output  # hidden commands are never suggested
