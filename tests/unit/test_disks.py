"""Disk devices with a source (host paths): the key rules, the OCI rendering and its
digest, and the engine on the fake runtime (what a start mounts and in which order, what
``required`` does, live add/change/remove, undo on failure, the CLI's messages)."""

from __future__ import annotations

import pytest

import sysmgr
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import DiskMount, RuntimeSpec
from sysmgr.drivers.runtime.fake import FakeRuntime
from sysmgr.drivers.runtime.native.plan import mount_entry, plan_from_spec
from sysmgr.engine import records
from sysmgr.errors import NotFound
from sysmgr.model import keys as mkeys
from tests.unit.cli_runner import CliAt


# -- the model ----------------------------------------------------------------------------------

def test_disk_keys_are_checked_and_name_the_key():
    good = {"h": {"type": "disk", "source": "/etc/hosts", "path": "/mnt2/hosts", "readonly": "yes",
                  "required": "false", "propagation": "rslave", "shift": "true", "recursive": "1"}}
    assert mkeys.validate_devices(good) == []
    bad = {"h": {"type": "disk", "source": "/x", "path": "/y", "propagation": "sideways",
                 "shift": "maybe"},
           "root": {"type": "disk", "path": "/", "pool": "p", "recursive": "true"}}
    problems = dict(mkeys.validate_devices(bad))
    assert "invalid propagation 'sideways'" in problems["devices.h.propagation"]
    assert "invalid boolean 'maybe'" in problems["devices.h.shift"]
    assert "not the root disk" in problems["devices.root.recursive"]
    assert mkeys.normalize_devices(good)["h"]["shift"] == "true"


def test_a_disk_with_a_source_is_hotplugged_anything_else_waits():
    disk = {"type": "disk", "source": "/srv", "path": "/srv"}
    nic = {"type": "nic", "network": "n"}
    root = {"type": "disk", "path": "/", "pool": "p"}
    assert mkeys.device_change_is_live(None, disk) and mkeys.device_change_is_live(disk, None)
    assert mkeys.device_change_is_live(disk, {**disk, "readonly": "true"})
    assert not mkeys.device_change_is_live(None, nic) and not mkeys.device_change_is_live(nic, None)
    assert not mkeys.device_change_is_live(disk, nic)
    assert mkeys.device_change_is_live(root, {**root, "size": "1GiB"})
    assert not mkeys.device_change_is_live(root, {**root, "pool": "q"})


def test_lxd_order_is_shorter_paths_first():
    devs = {"deep": {"type": "disk", "source": "/a", "path": "/srv/a/b"},
            "top": {"type": "disk", "source": "/b", "path": "/srv//"},
            "mid": {"type": "disk", "source": "/c", "path": "/srv/a"},
            "other": {"type": "disk", "source": "/d", "path": "/opt"},
            "root": {"type": "disk", "path": "/", "pool": "p"},
            "eth0": {"type": "nic", "network": "n"}}
    assert mkeys.disk_order(devs) == ["other", "top", "mid", "deep"]


# -- rendering and digest -----------------------------------------------------------------------

def test_a_disk_renders_as_an_oci_bind_and_digests_back():
    d = DiskMount(source="/srv/data", path="/data", readonly=True, shift=True, recursive=True,
                  propagation="rslave")
    entry = bundle.disk_mount(d, userns=True)
    assert entry == {"destination": "/data", "type": "bind", "source": "/srv/data",
                     "options": ["rbind", "ro", "rslave", "ridmap"]}
    m = mount_entry(entry)
    assert m.bind and m.idmap and m.target == "/data" and m.source == "/srv/data"
    assert m.flags & 1 and m.flags & 16384  # MS_RDONLY, MS_REC
    assert m.propagation == (1 << 19) | 16384  # rslave
    # no user namespace: nothing to idmap into
    plain = bundle.disk_mount(DiskMount("/s", "/p", shift=True), userns=False)
    assert plain["options"] == ["bind", "rw", "private"] and not mount_entry(plain).idmap


def test_the_bundle_mounts_disks_after_the_system_mounts_in_the_given_order(tmp_path):
    disks = (DiskMount("/a", "/srv"), DiskMount("/b", "/srv/x", readonly=True))
    spec = RuntimeSpec(name="c1", rootfs=str(tmp_path), runtime_dir=str(tmp_path / "run"),
                       cgroup="sysmgr-x/c1", disks=disks)
    config = bundle.render(spec)
    assert [m["destination"] for m in config["mounts"]][-2:] == ["/srv", "/srv/x"]
    plan = plan_from_spec(spec, config)
    assert [(m.source, m.target) for m in plan.mounts if m.bind] == [("/a", "/srv"), ("/b", "/srv/x")]


# -- the engine on the fake runtime -------------------------------------------------------------

def _cgroup(client: sysmgr.Client, name: str) -> str:
    return records.cgroup_path(client.host, name)


def test_a_start_mounts_the_disks_in_order_shift_where_asked(fake_client, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    c = fake_client.containers.create("c1", "img", devices={
        "inner": {"type": "disk", "source": str(b), "path": "/srv/inner", "readonly": "true"},
        "outer": {"type": "disk", "source": str(a) + "/", "path": "/srv", "shift": "true"}})
    c.start()
    assert c.warnings == ()
    spec = FakeRuntime.running()[_cgroup(fake_client, "c1")]
    assert spec.disks == (DiskMount(str(a), "/srv", shift=True),
                          DiskMount(str(b), "/srv/inner", readonly=True))


def test_required_false_skips_a_missing_source_with_a_warning(fake_client, tmp_path):
    gone = str(tmp_path / "gone")
    c = fake_client.containers.create("c1", "img", devices={
        "opt": {"type": "disk", "source": gone, "path": "/opt", "required": "false"}})
    c.start()
    assert c.status == "Running"
    assert FakeRuntime.running()[_cgroup(fake_client, "c1")].disks == ()
    (w,) = c.warnings
    assert "disk device 'opt'" in w and gone in w and "required=false" in w
    c.stop(force=True)
    c.devices["opt"]["required"] = "true"
    c.save()
    with pytest.raises(NotFound, match=f"disk device 'opt': its source {gone} does not"):
        c.start()
    assert c.refresh().status == "Stopped"


def test_live_add_change_and_remove_on_a_running_container(fake_client, tmp_path):
    src = tmp_path / "hosts"
    src.write_text("1.2.3.4 x\n")
    c = fake_client.containers.create("c1", "img", start=True)
    cg = _cgroup(fake_client, "c1")
    c.devices["hosts"] = {"type": "disk", "source": str(src), "path": "/mnt2/hosts"}
    assert c.save() == []  # nothing waits for a restart
    assert FakeRuntime.mounts(cg) == {"/mnt2/hosts": DiskMount(str(src), "/mnt2/hosts")}
    c.devices["hosts"]["readonly"] = "true"
    assert c.save() == []
    assert FakeRuntime.mounts(cg)["/mnt2/hosts"].readonly
    del c.devices["hosts"]
    assert c.save() == []
    assert FakeRuntime.mounts(cg) == {}


def test_a_live_add_that_fails_changes_nothing(fake_client, tmp_path):
    c = fake_client.containers.create("c1", "img", start=True)
    ok = tmp_path / "ok"
    ok.mkdir()
    c.devices["ok"] = {"type": "disk", "source": str(ok), "path": "/ok"}
    c.devices["gone"] = {"type": "disk", "source": str(tmp_path / "gone"), "path": "/gone"}
    with pytest.raises(NotFound, match="disk device 'gone'"):
        c.save()
    assert "ok" not in c.refresh().devices and "gone" not in c.devices
    assert FakeRuntime.mounts(_cgroup(fake_client, "c1")) == {}


def test_a_profile_disk_reaches_its_running_containers_live(fake_client, tmp_path):
    src = tmp_path / "shared"
    src.mkdir()
    c = fake_client.containers.create("c1", "img", start=True)
    prof = fake_client.profiles.create("extra", devices={
        "shared": {"type": "disk", "source": str(src), "path": "/shared"}})
    c.profiles = ["default", prof.name]
    assert c.save() == []
    assert "/shared" in FakeRuntime.mounts(_cgroup(fake_client, "c1"))
    prof.devices = {}
    prof.save()
    assert FakeRuntime.mounts(_cgroup(fake_client, "c1")) == {}


@pytest.fixture
def cli(tmp_path):
    """The CLI on a root of the fake runtime, with the tiny image ``img`` of ``fake_client``."""
    img = tmp_path / "img"
    (img / "sbin").mkdir(parents=True)
    (img / "sbin" / "init").write_text("#!/bin/sh\n")
    FakeRuntime.reset()
    at = CliAt(str(tmp_path / "root"))
    at("init", "--auto", "--runtime", "fake", "--storage-driver", "dir", ok=True)
    at("image", "import", str(img), "--alias", "img", ok=True)
    yield at
    FakeRuntime.reset()


def test_cli_device_add_on_a_running_container_needs_no_restart(cli, tmp_path):
    src = tmp_path / "hosts"
    src.write_text("x\n")
    cli("launch", "img", "c1", ok=True)
    cg = next(cg for cg in FakeRuntime.running() if cg.endswith("/c1"))
    res = cli("config", "device", "add", "c1", "hosts", "disk", f"source={src}",
              "path=/mnt2/hosts", ok=True)
    assert "Device hosts added to c1" in res.output and "Restart" not in res.output
    assert "/mnt2/hosts" in FakeRuntime.mounts(cg)
    res = cli("config", "device", "add", "c1", "bad", "disk", f"source={src}", "path=/x",
              "propagation=sideways")
    assert res.exit_code == 2 and "devices.bad.propagation" in res.output
    cli("config", "device", "remove", "c1", "hosts", ok=True)
    assert FakeRuntime.mounts(cg) == {}
    cli("stop", "--force", "c1", ok=True)
    cli("config", "device", "add", "c1", "opt", "disk", f"source={tmp_path}/gone", "path=/opt",
        "required=false", ok=True)
    res = cli("start", "c1", ok=True)
    assert "warning: container c1: disk device 'opt'" in res.output


def test_a_profile_change_whose_disk_cannot_be_mounted_changes_nothing(fake_client, tmp_path):
    c = fake_client.containers.create("c1", "img", profiles=["default"], start=True)
    prof = fake_client.profiles.create("extra")
    c.profiles = ["default", "extra"]
    c.save()
    prof.devices = {"gone": {"type": "disk", "source": str(tmp_path / "gone"), "path": "/g"}}
    with pytest.raises(NotFound, match="container c1: disk device 'gone'"):
        prof.save()
    assert fake_client.profiles.get("extra").devices == {}
    assert FakeRuntime.mounts(_cgroup(fake_client, "c1")) == {}
