"""What crun and runc are given (sysmgr.drivers.runtime.oci.config): the native rendering with
its paths staged, its capabilities as held, and runc's cgroup one level down. Pure."""

from __future__ import annotations

import signal

from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import DiskMount, Limits, ProcessSpec, RuntimeSpec
from sysmgr.drivers.runtime.oci import config as oconfig
from sysmgr.types import IdMap

ALL = (1 << 64) - 1


def spec(**kw) -> RuntimeSpec:
    return RuntimeSpec(name="c1", rootfs="/var/lib/sysmgr/storage-pools/p/containers/c1",
                       runtime_dir="/var/lib/sysmgr/containers/c1", cgroup="sysmgr-abc123/c1",
                       halt_signal=int(signal.SIGUSR2), limits=Limits(memory_bytes=64 << 20),
                       **kw)


def test_paths_are_staged_and_binds_carry_their_lockable_flags() -> None:
    rendered = bundle.render(spec(disks=(DiskMount("/srv/data", "/data", readonly=True),)))
    given, binds = oconfig.adapt(rendered, ALL)
    assert given["root"]["path"] == oconfig.STAGED_ROOTFS
    assert binds[0] == (rendered["root"]["path"], oconfig.STAGED_ROOTFS, 0)
    by_dest = {m["destination"]: m for m in given["mounts"]}
    staged = {dst: (src, flags) for src, dst, flags in binds[1:]}
    console = staged[by_dest["/dev/console"]["source"]]
    assert console[0] == ""  # the caller's fd, never a path through the tenant's volume
    assert console[1] == 1 | 2 | 4 | 8  # ro nosuid nodev noexec
    data = staged[by_dest["/data"]["source"]]
    assert data == ("/srv/data", 1)  # read-only, locked in the container's user namespace
    assert all(m["source"].startswith(oconfig.STAGE + "/") for m in given["mounts"]
               if m["type"] == "bind")
    assert rendered["root"]["path"] != oconfig.STAGED_ROOTFS  # the rendering is left alone


def test_capabilities_are_what_the_launcher_holds_unless_a_user_namespace_gives_all() -> None:
    sys_resource = bundle.ALL_CAPABILITIES.index("CAP_SYS_RESOURCE")
    held = ALL & ~(1 << sys_resource)
    given, _ = oconfig.adapt(bundle.render(spec()), held)
    assert "CAP_SYS_RESOURCE" not in given["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" in given["process"]["capabilities"]["effective"]
    given, _ = oconfig.adapt(bundle.render(spec(idmap=IdMap(), idmapped_rootfs=False)), held)
    assert "CAP_SYS_RESOURCE" in given["process"]["capabilities"]["bounding"]


def test_a_cgroup_leaf_holds_the_device_rules_and_no_limits() -> None:
    rendered = bundle.render(spec())
    given, _ = oconfig.adapt(rendered, ALL, ".payload")
    assert given["linux"]["cgroupsPath"] == "/sysmgr-abc123/c1/.payload"
    assert given["linux"]["resources"] == {"devices": rendered["linux"]["resources"]["devices"]}
    same, _ = oconfig.adapt(rendered, ALL)
    assert same["linux"]["cgroupsPath"] == "/sysmgr-abc123/c1"
    assert same["linux"]["resources"]["memory"] == {"limit": 64 << 20}


def test_an_exec_process_is_inits_with_the_commands_own() -> None:
    cfg = bundle.render(spec())
    p = oconfig.exec_process(cfg, ProcessSpec(argv=("sh", "-c", "x"), env={"A": "1"}, cwd="/etc",
                                              uid=5, gid=6, window=(40, 100)), terminal=True)
    assert p["args"] == ["sh", "-c", "x"] and p["cwd"] == "/etc"
    assert p["user"] == {"uid": 5, "gid": 6} and p["terminal"] is True
    assert p["env"] == ["A=1", f"PATH={bundle.DEFAULT_PATH}"]
    assert p["consoleSize"] == {"height": 40, "width": 100}
    assert p["capabilities"] == cfg["process"]["capabilities"]
    assert oconfig.exec_process(cfg, ProcessSpec(argv=("true",)), terminal=False).get("consoleSize") is None
