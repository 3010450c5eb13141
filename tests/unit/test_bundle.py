"""Golden-file tests of the OCI ``config.json`` rendering (pure: no kernel, no root).

Regenerate the goldens after an intended change with ``SYSMGR_REGEN_GOLDEN=1`` and review
the diff like code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest

from sysmgr._util import seccomp
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import IdMap, Limits, RuntimeSpec, signal_number

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
ROOT = "/var/lib/sysmgr/containers/web1"

CASES = {
    "basic": RuntimeSpec(
        name="web1", rootfs=ROOT + "/rootfs", runtime_dir=ROOT, cgroup="sysmgr-1a2b3c/web1",
        halt_signal=int(signal.SIGUSR2),
    ),
    "limits": RuntimeSpec(
        name="db", rootfs="/pool/containers/db", runtime_dir="/var/lib/sysmgr/containers/db",
        cgroup="sysmgr-1a2b3c/db", init=("/lib/systemd/systemd", "--log-level=info"),
        env={"LANG": "C.UTF-8", "TERM": "xterm"},
        limits=Limits(cpuset="0-1", cpu_quota_us=50_000, cpu_period_us=100_000, cpu_shares=512,
                      memory_bytes=256 << 20, memory_swap=False, pids_max=500),
        halt_signal=signal_number("SIGRTMIN+3"), no_new_privs=True,
    ),
    "userns": RuntimeSpec(
        name="u1", rootfs="/srv/u1/rootfs", runtime_dir="/srv/u1", cgroup="sysmgr-1a2b3c/u1",
        idmap=IdMap(host_start=100_000, size=65_536), limits=Limits(memory_bytes=64 << 20),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str) -> None:
    rendered = bundle.render(CASES[case])
    path = os.path.join(GOLDEN, f"bundle_{case}.json")
    if os.environ.get("SYSMGR_REGEN_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            json.dump(rendered, f, indent=2)
            f.write("\n")
    with open(path) as f:
        assert rendered == json.load(f)
    json.dumps(rendered)  # serialisable as is


@pytest.mark.parametrize("case", sorted(CASES))
def test_limits_read_back_from_the_bundle(case: str) -> None:
    spec = CASES[case]
    assert bundle.limits_from_resources(bundle.render(spec)["linux"]["resources"]) == spec.limits


def test_render_is_pure_and_deterministic() -> None:
    spec = CASES["limits"]
    assert bundle.render(spec) == bundle.render(spec)
    assert json.dumps(bundle.render(spec)) == json.dumps(bundle.render(spec))


def test_capabilities_are_the_full_set_minus_the_default_drops_in_every_set() -> None:
    caps = bundle.render(CASES["basic"])["process"]["capabilities"]
    dropped = {"CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_SYS_TIME", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
               "CAP_DAC_READ_SEARCH", "CAP_SYSLOG", "CAP_BPF", "CAP_PERFMON", "CAP_AUDIT_CONTROL",
               "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND"}
    assert set(caps["bounding"]) == set(bundle.ALL_CAPABILITIES) - dropped
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == caps["inheritable"] == caps["ambient"]
    assert {"CAP_SYS_ADMIN", "CAP_SYS_BOOT"} <= set(caps["bounding"])
    assert all(reason for _, reason in bundle.DEFAULT_DROPPED)


def test_capabilities_given_back_and_dropped_by_the_spec() -> None:
    spec = dataclasses.replace(CASES["basic"], cap_add=("dac_read_search", "syslog", "chown"),
                               cap_drop=("net_raw", "syslog"))
    caps = bundle.render(spec)["process"]["capabilities"]["bounding"]
    assert "CAP_DAC_READ_SEARCH" in caps and "CAP_CHOWN" in caps
    assert "CAP_SYSLOG" not in caps and "CAP_NET_RAW" not in caps  # drop wins over add
    assert caps == [c for c in bundle.ALL_CAPABILITIES if c in caps]  # kernel order


def test_seccomp_section_is_sysmgrs_deny_list() -> None:
    sec = bundle.render(CASES["userns"])["linux"]["seccomp"]
    assert sec == seccomp.to_oci() and sec["defaultAction"] == "SCMP_ACT_ALLOW"
    assert seccomp.from_oci(sec) == seccomp.DEFAULT_RULES
    # privileged (no id map): the mount rules on top
    privileged = bundle.render(CASES["basic"])["linux"]["seccomp"]
    assert set(seccomp.from_oci(privileged)) == set(seccomp.PRIVILEGED_RULES)


def test_env_defaults_and_overrides() -> None:
    env = bundle.render(CASES["limits"])["process"]["env"]
    assert "container=lxc" in env and "TERM=xterm" in env and "TERM=linux" not in env
    assert env[0].startswith("PATH=")


def test_namespaces_and_user_mappings() -> None:
    basic = bundle.render(CASES["basic"])["linux"]
    assert {n["type"] for n in basic["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert "uidMappings" not in basic
    userns = bundle.render(CASES["userns"])["linux"]
    assert {"type": "user"} in userns["namespaces"]
    assert userns["uidMappings"] == [{"containerID": 0, "hostID": 100_000, "size": 65_536}]
    assert userns["gidMappings"] == userns["uidMappings"]


def test_a_shifted_rootfs_is_annotated_and_the_plan_binds_it_without_idmapping() -> None:
    from sysmgr.drivers.runtime.native.plan import plan_from_spec

    idmapped = CASES["userns"]
    shifted = dataclasses.replace(idmapped, idmapped_rootfs=False)
    cfg = bundle.render(shifted)
    assert cfg["annotations"][bundle.ANNOTATION_ROOTFS_SHIFTED] == "true"
    assert bundle.ANNOTATION_ROOTFS_SHIFTED not in bundle.render(idmapped)["annotations"]
    assert bundle.ANNOTATION_ROOTFS_SHIFTED not in bundle.render(
        dataclasses.replace(CASES["basic"], idmapped_rootfs=False))["annotations"]  # privileged
    assert plan_from_spec(shifted, cfg).idmapped_rootfs is False
    assert plan_from_spec(idmapped, bundle.render(idmapped)).idmapped_rootfs is True


def test_console_is_a_bind_of_the_log_file_and_annotations() -> None:
    cfg = bundle.render(CASES["basic"])
    console = [m for m in cfg["mounts"] if m["destination"] == "/dev/console"]
    assert console == [{"destination": "/dev/console", "type": "bind", "source": ROOT + "/rootfs/dev/.sysmgr-console.log",
                        "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]
    assert cfg["annotations"][bundle.ANNOTATION_HALT_SIGNAL] == "SIGUSR2"
    assert cfg["linux"]["cgroupsPath"] == "/sysmgr-1a2b3c/web1"
    assert cfg["hostname"] == "web1" and cfg["process"]["args"] == ["/sbin/init"]


@pytest.mark.parametrize("sig,name", [(signal.SIGUSR2, "SIGUSR2"), (signal.SIGPWR, "SIGPWR"),
                                      (signal_number("SIGRTMIN+3"), "SIGRTMIN+3"), (signal.SIGRTMIN, "SIGRTMIN")])
def test_signal_names_round_trip(sig: int, name: str) -> None:
    assert bundle.signal_name(int(sig)) == name
    assert signal_number(bundle.signal_name(int(sig))) == int(sig)


def test_device_rules_for_cgroup_v1() -> None:
    rules = bundle.device_rules(bundle.render(CASES["basic"])["linux"]["resources"])
    assert rules[0] == (False, "a *:* rwm")
    assert (True, "c 1:3 rwm") in rules and (True, "c 136:* rwm") in rules
    assert all(allow for allow, _ in rules[1:])


def test_mount_flags() -> None:
    flags, prop, data = bundle.mount_flags(["nosuid", "noexec", "ro", "mode=755", "size=65536k", "rprivate"])
    assert flags == 2 | 8 | 1 and data == "mode=755,size=65536k" and prop == (1 << 18) | 16384
    assert bundle.mount_flags(["ro", "rw"])[0] == 0
    assert bundle.mount_flags(["rbind"])[0] == 4096 | 16384
