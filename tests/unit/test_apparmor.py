"""The AppArmor profile of a container, as text (pure: no kernel, no apparmor_parser), and
the way its name travels: ``raw.apparmor`` validation, the OCI ``apparmorProfile`` field and
the native runtime's plan. Loading and enforcing are tested in the systemd guest of
``scripts/test-cgroup2`` (tests/cgroup2/test_apparmor.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sysmgr.drivers.runtime import apparmor, bundle
from sysmgr.drivers.runtime.base import IdMap, RuntimeSpec
from sysmgr.drivers.runtime.native.plan import plan_from_spec
from sysmgr.model import keys

NAME = "sysmgr-1a2b3c-web1"


def _regex(glob: str) -> re.Pattern[str]:
    """An AppArmor path glob as a regex (``**``, ``*``, ``?``, ``[^..]``, ``{a,b}``)."""
    out, i = "", 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "[":
            end = glob.index("]", i)
            body = glob[i + 1:end]
            out += "[^/" + re.escape(body[1:]) + "]" if body.startswith("^") else "[" + re.escape(body) + "]"
            i = end + 1
            continue
        out += {"*": "[^/]*", "?": "[^/]", "{": "(?:", "}": ")", ",": "|"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + r"\Z")


def _denied(globs: list[str], path: str) -> bool:
    return any(_regex(g).match(path) for g in globs)


PROC_SYS = apparmor.all_but("/proc/sys/", apparmor.PROC_SYS_WRITABLE)
SYS = apparmor.all_but("/sys/", apparmor.SYS_WRITABLE)


@pytest.mark.parametrize("path", [
    "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/sysrq",
    "/proc/sys/kernel/shmmax/x", "/proc/sys/fs/binfmt_misc/register", "/proc/sys/vm/drop_caches",
    "/proc/sys/kernelx", "/proc/sys/k", "/proc/sys/kernel/hostnamex", "/proc/sys/netx/a",
])
def test_proc_sys_is_denied_outside_the_namespaced_files(path: str) -> None:
    assert _denied(PROC_SYS, path)


@pytest.mark.parametrize("path", [
    "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", "/proc/sys/kernel/shmmax",
    "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/kernel/msgmnb", "/proc/sys/kernel/sem",
    "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net",
])
def test_proc_sys_namespaced_files_stay_writable(path: str) -> None:
    assert not _denied(PROC_SYS, path)


def test_sys_is_denied_but_the_containers_cgroup_and_network_devices() -> None:
    for path in ("/sys/kernel/mm/ksm/run", "/sys/class/block/sda/x", "/sys/devices/system/cpu/x",
                 "/sys/fs/ext4/x", "/sys/power/state", "/sys/fs/cgroupx", "/sys/class/netx"):
        assert _denied(SYS, path), path
    for path in ("/sys/fs/cgroup/memory.max", "/sys/class/net/eth0/mtu",
                 "/sys/devices/virtual/net/eth0/mtu"):
        assert not _denied(SYS, path), path


def test_profile_names_the_container_and_denies_the_hosts_interfaces() -> None:
    text = apparmor.render(NAME, privileged=True)
    assert f"profile {NAME} flags=(attach_disconnected,mediate_deleted) {{" in text
    assert text.rstrip().endswith("}") and text.count("{\n") == 1
    for rule in ("deny /proc/sysrq-trigger rwklx,", "deny /proc/kcore rwklx,",
                 "deny umount /proc/sys{,/},", "deny umount /proc/sysrq-trigger{,/},",
                 f"ptrace peer={NAME},", f"signal peer={NAME},", "deny mount fstype=devpts,"):
        assert f"\n  {rule}\n" in text, rule
    for glob in PROC_SYS + SYS:
        assert f"\n  deny {glob} wklx,\n" in text
    # proc and sysfs mount only at /proc and /sys: nothing else names them
    assert re.findall(r"mount fstype=(proc|sysfs)\b.*", text) == ["proc", "sysfs"]
    assert "mount fstype=proc -> /proc/," in text and "mount fstype=sysfs -> /sys/," in text
    # no general mount or ptrace allowance, no change_profile out of it
    assert not re.search(r"^\s*(mount|ptrace|change_profile)\s*,", text, re.M)
    assert "change_profile" not in text


def test_bind_sources_exclude_proc_and_sys() -> None:
    sources = re.findall(r"mount options=\(rw,bind\) (\S+),", apparmor.render(NAME, privileged=True))
    assert sources and all(not _denied(sources, p) for p in ("/proc", "/proc/sys", "/sys/kernel", "/"))
    assert all(_denied(sources, p) for p in ("/srv/data", "/dev/shm", "/process", "/sysx", "/p"))


def test_unprivileged_profile_adds_its_own_mount_tree_only() -> None:
    priv, unpriv = (apparmor.render(NAME, privileged=p) for p in (True, False))
    assert "pivot_root," not in priv and "\n  pivot_root,\n" in unpriv
    assert unpriv.startswith(priv.split("\n", 1)[0].replace("privileged", "unprivileged"))
    for rule in ("deny /proc/sysrq-trigger rwklx,", "deny umount /proc/sys{,/},"):
        assert rule in unpriv


def test_raw_apparmor_goes_inside_the_profile_at_the_end() -> None:
    text = apparmor.render(NAME, privileged=False, raw="deny /data/** w,\n  audit /etc/shadow r,\n")
    assert text.endswith("  # raw.apparmor\n  deny /data/** w,\n  audit /etc/shadow r,\n}\n")
    assert "# raw.apparmor" not in apparmor.render(NAME, privileged=False, raw="  \n")


def test_raw_apparmor_key_is_validated_and_normalised() -> None:
    assert keys.lookup("raw.apparmor") is not None and not keys.is_live("raw.apparmor")
    assert keys.validate_config({"raw.apparmor": "deny /data/{a,b}/** w,\n# a } in a comment"}) == []
    for bad in ("} profile evil { capability,", "deny /x w, }", "/data/{a,b w,"):
        problems = keys.validate_config({"raw.apparmor": bad})
        assert problems and "raw.apparmor" in str(problems[0]), bad
    assert keys.parse_raw_apparmor("  deny /x w,\n\n   deny /y r,  \n") == "deny /x w,\ndeny /y r,"
    assert keys.validate_config({"raw.lxc": "x"}) != []  # other raw.* keys stay refused


def test_profile_name_travels_through_config_json_into_the_init_plan() -> None:
    spec = RuntimeSpec(name="web1", rootfs="/srv/web1/rootfs", runtime_dir="/srv/web1",
                       cgroup="sysmgr-1a2b3c/web1", idmap=IdMap(host_start=100_000, size=65_536))
    assert "apparmorProfile" not in bundle.render(spec)["process"]
    assert plan_from_spec(spec, bundle.render(spec)).apparmor == ""
    confined = dataclasses.replace(spec, apparmor_profile=apparmor.profile_name("sysmgr-1a2b3c", "web1"))
    config = bundle.render(confined)
    assert config["process"]["apparmorProfile"] == NAME
    assert plan_from_spec(confined, config).apparmor == NAME
