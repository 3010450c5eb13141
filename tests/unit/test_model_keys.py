"""Unit tests for sysmgr.model.keys: config-key rule tables, normalisation, limits, devices."""

from __future__ import annotations

import pytest

from sysmgr.drivers import registry
from sysmgr.drivers.runtime.base import Limits
from sysmgr.errors import ValidationError
from sysmgr.model import keys, pool_keys
from sysmgr.model.keys import (
    CONTAINER_KEYS,
    DEVICE_TYPES,
    POOL_DRIVER_KEYS,
    describe_keys,
    env_from_config,
    is_live,
    is_managed,
    limits_from_config,
    normalize_config,
    normalize_devices,
    parse_assignments,
    validate_config,
    validate_devices,
    validate_pool_config,
)

MiB = 1024 * 1024

# -- validation ------------------------------------------------------------------------------

VALID = [
    ("limits.cpu", "2"), ("limits.cpu", "0-1"), ("limits.cpu", "0,2"), ("limits.cpu", "0-1,3"),
    ("limits.cpu", "3-3"),
    ("limits.cpu.allowance", "50%"), ("limits.cpu.allowance", "25ms/100ms"),
    ("limits.cpu.allowance", "200ms/100ms"), ("limits.cpu.allowance", "1500us/10ms"),
    ("limits.memory", "64MiB"), ("limits.memory", "1GB"), ("limits.memory", "67108864"),
    ("limits.memory", "50%"), ("limits.memory", "4MiB"),
    ("limits.memory.swap", "false"), ("limits.memory.swap", "Yes"), ("limits.memory.swap", "0"),
    ("limits.processes", "100"),
    ("boot.autostart", "on"), ("boot.autostart.priority", "10"), ("boot.autostart.delay", "5"),
    ("boot.host_shutdown_timeout", "60"),
    ("security.protection.delete", "true"), ("security.privileged", "false"),
    ("user.anything", "any string at all"), ("user.a.b.c", ""),
    ("environment.FOO", "bar"), ("environment._X1", ""),
    ("limits.memory", ""),  # empty = unset, as in LXD
    ("limits.cpu", ""),
]


@pytest.mark.parametrize("key, value", VALID)
def test_valid_values(key: str, value: str) -> None:
    assert validate_config({key: value}) == []


INVALID = [
    ("limits.cpu", "0", "must be at least 1 (to pin CPU 0 use the set '0-0')"),
    ("limits.cpu", "two", "invalid CPU limit 'two'"),
    ("limits.cpu", "3-1", "range '3-1' goes backwards"),
    ("limits.cpu", "0-1,", "invalid CPU limit"),
    ("limits.cpu.allowance", "150%", "at most 100%"),
    ("limits.cpu.allowance", "0%", "more than 0%"),
    ("limits.cpu.allowance", "25/100", "expected a percentage such as 50%"),
    ("limits.cpu.allowance", "25ms/2000ms", "the period must be between 1ms and 1000ms"),
    ("limits.cpu.allowance", "0ms/100ms", "at least 1ms"),
    ("limits.memory", "lots", "invalid size 'lots': expected a number with a unit such as 64MiB or 1GB"),
    ("limits.memory", "64MiBs", "unknown unit"),
    ("limits.memory", "1MiB", "memory limit '1MiB' is too small: the minimum is 4MiB"),
    ("limits.memory", "0", "too small"),
    ("limits.memory", "101%", "at most 100%"),
    ("limits.memory.swap", "maybe", "invalid boolean 'maybe'"),
    ("limits.processes", "0", "must be at least 1"),
    ("limits.processes", "1.5", "expected a whole number"),
    ("boot.autostart", "2", "invalid boolean"),
    ("boot.autostart.priority", "-1", "must be at least 0"),
    ("security.privileged", "sure", "invalid boolean"),
    ("environment.1X", "a", "invalid environment variable name '1X'"),
    ("environment.A-B", "a", "invalid environment variable name"),
    ("environment.", "a", "expected a name after 'environment.'"),
    ("user.", "a", "expected a name after 'user.'"),
    ("volatile.eth0.hwaddr", "x", "volatile keys are managed by sysmgr"),
    ("image.os", "debian", "image keys are managed by sysmgr"),
    ("raw.lxc", "x", "raw.* keys are not supported"),
    ("limits.memroy", "64MiB", "unknown config key 'limits.memroy' (did you mean 'limits.memory'?)"),
    ("limits.cpus", "2", "(did you mean 'limits.cpu'?)"),
    ("enviroment.FOO", "x", "(did you mean 'environment.FOO'?)"),
    ("nonsense", "x", "unknown config key 'nonsense'"),
]


@pytest.mark.parametrize("key, value, reason", INVALID)
def test_invalid_values(key: str, value: str, reason: str) -> None:
    problems = validate_config({key: value})
    assert len(problems) == 1, problems
    path, got = problems[0]
    assert path == f"config.{key}"
    assert reason in got


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    (_, reason), = validate_config({"zzz.qqq": "1"})
    assert reason == "unknown config key 'zzz.qqq'"


def test_non_string_values_are_converted_as_lxd_does() -> None:
    assert validate_config({"boot.autostart": True, "limits.processes": 10, "user.f": 1.5}) == []
    (path, reason), = validate_config({"user.x": None})
    assert reason == "expected a string, number or boolean, got null"
    (path, reason), = validate_config({"user.x": {"a": 1}})
    assert reason.endswith("got a mapping")


def test_where_prefixes_paths_and_every_problem_is_reported() -> None:
    problems = validate_config({"limits.memory": "x", "user.ok": "1", "limits.cpu": "0"},
                               where="profiles.small.config")
    assert [p for p, _ in problems] == ["profiles.small.config.limits.memory",
                                        "profiles.small.config.limits.cpu"]


# -- normalisation --------------------------------------------------------------------------

EQUAL = [
    ("limits.memory", "64MiB", "67108864"),
    ("limits.memory", "1GB", "1000000000"),
    ("limits.memory", " 64 MiB ", "64MiB"),
    ("limits.memory", "50%", "50.0%"),
    ("limits.memory.swap", "yes", "true"),
    ("limits.memory.swap", "OFF", "false"),
    ("boot.autostart", "1", "True"),
    ("limits.cpu", "02", "2"),
    ("limits.cpu", "0,1,2,5", "0-2,5"),
    ("limits.cpu", "1,0", "0-1"),
    ("limits.cpu", "3-3", "3,3"),
    ("limits.cpu.allowance", "25ms/100ms", "25000us/100000us"),
    ("limits.cpu.allowance", "50%", "50.0%"),
    ("limits.processes", "+100", "100"),
]


@pytest.mark.parametrize("key, a, b", EQUAL)
def test_normalisation_makes_equivalent_values_equal(key: str, a: str, b: str) -> None:
    assert normalize_config({key: a}) == normalize_config({key: b})


@pytest.mark.parametrize("key, a, b", [
    ("limits.cpu", "3", "3-3"),     # a count is not the one-CPU set
    ("limits.memory", "64MiB", "64MB"),
    ("user.a", "yes", "true"),      # free-form: never interpreted
    ("limits.memory", "", "64MiB"),
])
def test_normalisation_keeps_different_values_different(key: str, a: str, b: str) -> None:
    assert normalize_config({key: a}) != normalize_config({key: b})


def test_normalize_config_forms_and_managed_keys() -> None:
    got = normalize_config({
        "limits.memory": "64MiB", "boot.autostart": "yes", "volatile.eth0.hwaddr": "x",
        "image.os": "debian", "limits.cpu": "lots", "user.x": "y", "mystery": "z",
        "limits.memory.swap": True,
    })
    assert got == {
        "limits.memory": str(64 * MiB), "boot.autostart": "true", "limits.cpu": "lots",
        "user.x": "y", "mystery": "z", "limits.memory.swap": "true",
    }
    assert "volatile.eth0.hwaddr" in normalize_config({"volatile.eth0.hwaddr": "x"}, drop_managed=False)


# -- table facts ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, live", [
    ("limits.cpu", True), ("limits.cpu.allowance", True), ("limits.memory", True),
    ("limits.memory.swap", True), ("limits.processes", True), ("user.x", True),
    ("environment.FOO", False), ("security.protection.delete", True),
    ("security.privileged", False), ("no.such.key", False),
])
def test_is_live(key: str, live: bool) -> None:
    assert is_live(key) is live


def test_is_managed() -> None:
    assert is_managed("volatile.x") and is_managed("image.os")
    assert not is_managed("user.x") and not is_managed("limits.cpu")


def test_describe_keys_covers_the_table_sorted() -> None:
    described = describe_keys()
    assert [k for k, _, _ in described] == sorted(CONTAINER_KEYS)
    assert all(doc for _, doc, _ in described)
    assert ("limits.memory" in dict((k, d) for k, d, _ in described))


def test_defaults() -> None:
    assert CONTAINER_KEYS["security.privileged"].default == "false"  # unprivileged by default, as LXD
    assert CONTAINER_KEYS["limits.memory.swap"].default == "true"
    assert CONTAINER_KEYS["limits.memory"].default is None


@pytest.mark.parametrize("items, expected", [
    (["a=b"], {"a": "b"}),
    (["limits.memory=64MiB", "user.x=a=b"], {"limits.memory": "64MiB", "user.x": "a=b"}),
    (["user.x="], {"user.x": ""}),
    (["a=1", "a=2"], {"a": "2"}),
    ([], {}),
])
def test_parse_assignments(items: list[str], expected: dict[str, str]) -> None:
    assert parse_assignments(items) == expected


def test_parse_assignments_rejects_every_bad_item() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_assignments(["limits.memory", "ok=1", "=x"])
    assert [i.message for i in exc.value.issues] == [
        "expected KEY=VALUE, got 'limits.memory'", "missing key before '=' in '=x'"]
    assert exc.value.hint


# -- limits_from_config ----------------------------------------------------------------------

LIMITS = [
    ({}, Limits()),
    ({"limits.cpu": "2"}, Limits(cpuset="0-1")),
    ({"limits.cpu": "1"}, Limits(cpuset="0")),
    ({"limits.cpu": "16"}, Limits(cpuset="0-3")),          # clamped to the host's 4 CPUs
    ({"limits.cpu": "0-1,3"}, Limits(cpuset="0-1,3")),
    ({"limits.cpu": "2,0,1"}, Limits(cpuset="0-2")),
    ({"limits.cpu": "2-2"}, Limits(cpuset="2")),
    ({"limits.cpu.allowance": "50%"}, Limits(cpu_shares=512)),
    ({"limits.cpu.allowance": "100%"}, Limits(cpu_shares=1024)),
    ({"limits.cpu.allowance": "25ms/100ms"}, Limits(cpu_quota_us=25_000, cpu_period_us=100_000)),
    ({"limits.cpu.allowance": "50ms/200ms"}, Limits(cpu_quota_us=50_000, cpu_period_us=200_000)),
    ({"limits.memory": "64MiB"}, Limits(memory_bytes=64 * MiB)),
    ({"limits.memory": "1GB"}, Limits(memory_bytes=10**9)),
    ({"limits.memory": "50%"}, Limits(memory_bytes=512 * MiB)),   # of host_mem = 1GiB
    ({"limits.memory.swap": "no"}, Limits(memory_swap=False)),
    ({"limits.memory.swap": "true"}, Limits(memory_swap=True)),
    ({"limits.processes": "100"}, Limits(pids_max=100)),
    ({"limits.memory": "", "limits.cpu": ""}, Limits()),           # empty = unset
    ({"user.x": "1", "environment.A": "b"}, Limits()),
    ({"limits.cpu": "2", "limits.cpu.allowance": "10%", "limits.memory": "256MiB",
      "limits.memory.swap": "false", "limits.processes": "50"},
     Limits(cpuset="0-1", cpu_shares=102, memory_bytes=256 * MiB, memory_swap=False, pids_max=50)),
]


@pytest.mark.parametrize("config, expected", LIMITS)
def test_limits_from_config(config: dict[str, str], expected: Limits) -> None:
    assert limits_from_config(config, host_cpus=4, host_mem=1024 * MiB) == expected


def test_limits_memory_percentage_is_refused_without_host_memory() -> None:
    # the model never reads the host: the caller passes the host facts
    with pytest.raises(TypeError, match="host_mem"):
        limits_from_config({"limits.memory": "100%"}, host_cpus=1)
    with pytest.raises(TypeError, match="host_cpus"):
        limits_from_config({"limits.cpu": "2"}, host_mem=1024 * MiB)  # type: ignore[call-arg]


def test_limits_reject_invalid_values_and_missing_cpus() -> None:
    with pytest.raises(ValidationError) as exc:
        limits_from_config({"limits.memory": "lots", "limits.cpu": "0-7"}, host_cpus=4)
    assert sorted(i.path or "" for i in exc.value.issues) == ["config.limits.cpu", "config.limits.memory"]
    assert any("CPU 4 does not exist on this host (it has 4 CPUs: 0-3)" in i.message
               for i in exc.value.issues)


def test_env_from_config() -> None:
    expanded = {"environment.FOO": "bar", "environment.EMPTY": "", "user.x": "y",
                "limits.cpu": "1"}
    assert env_from_config(expanded) == {"FOO": "bar", "EMPTY": ""}


# -- devices ---------------------------------------------------------------------------------

GOOD_DEVICES = [
    {"root": {"type": "disk", "path": "/", "pool": "default"}},
    {"root": {"type": "disk", "path": "/", "pool": "default", "size": "10GiB"}},
    {"data": {"type": "disk", "path": "/srv", "source": "/host/data", "readonly": "yes",
              "required": "false"}},
    {"vol": {"type": "disk", "path": "/vol", "source": "myvol", "pool": "default"}},
    {"eth0": {"type": "nic", "network": "sysmgrbr0"}},
    {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0", "name": "eth0",
              "hwaddr": "00:16:3E:12:34:56", "mtu": "1500"}},
    {"eth0": {"type": "nic", "network": "lab", "ipv4.address": "10.0.3.5", "ipv4.dhcp": "true"}},
    {"eth1": {"type": "none"}},
]


@pytest.mark.parametrize("devices", GOOD_DEVICES)
def test_valid_devices(devices: dict) -> None:
    assert validate_devices(devices) == []


BAD_DEVICES = [
    # an unmanaged bridge has no address management: the guest configures itself
    ({"eth0": {"type": "nic", "nictype": "bridged", "parent": "br0", "ipv4.address": "10.0.3.5"}},
     "devices.eth0.ipv4.address", "needs a managed network"),
    ({"eth0": {"type": "nic", "network": "lab", "ipv4.dhcp": "maybe"}},
     "devices.eth0.ipv4.dhcp", "invalid boolean"),
    ({"root": {"path": "/"}}, "devices.root.type", "a device needs a type"),
    ({"root": {"type": "dsk"}}, "devices.root.type", "unknown device type 'dsk' (did you mean 'disk'?)"),
    ({"root": "disk"}, "devices.root", "a device must be a mapping"),
    ({"a/b": {"type": "none"}}, "devices.a/b", "invalid device name 'a/b'"),
    ({"root": {"type": "disk", "path": "/"}}, "devices.root.pool", "the root disk (path: /) needs a pool"),
    ({"root": {"type": "disk", "path": "/", "pool": "p", "source": "/x"}}, "devices.root.source",
     "remove source"),
    ({"d": {"type": "disk", "path": "srv", "source": "/x"}}, "devices.d.path", "must be absolute"),
    ({"d": {"type": "disk", "source": "/x"}}, "devices.d.path", "a disk device needs a path"),
    ({"d": {"type": "disk", "path": "/srv"}}, "devices.d.source", "needs a source"),
    ({"d": {"type": "disk", "path": "/srv", "source": "rel"}}, "devices.d.source",
     "a host path must be absolute"),
    ({"d": {"type": "disk", "path": "/srv", "source": "/x", "size": "1GiB"}}, "devices.d.size",
     "only supported on the root disk"),
    ({"d": {"type": "disk", "path": "/srv", "source": "/x", "readonly": "kinda"}},
     "devices.d.readonly", "invalid boolean"),
    ({"d": {"type": "disk", "path": "/", "pool": "p", "size": "big"}}, "devices.d.size",
     "invalid size 'big'"),
    ({"d": {"type": "disk", "path": "/", "pool": "a/b"}}, "devices.d.pool", "invalid pool name 'a/b'"),
    ({"d": {"type": "disk", "path": "/", "pool": "p", "mode": "0755"}}, "devices.d.mode",
     "unknown disk device key 'mode'"),
    ({"e": {"type": "nic", "network": "n", "mtuu": "1500"}}, "devices.e.mtuu", "(did you mean 'mtu'?)"),
    ({"e": {"type": "nic", "network": "n", "mtu": "100"}}, "devices.e.mtu", "must be at least 576"),
    ({"e": {"type": "nic", "network": "n", "mtu": "9001"}}, "devices.e.mtu", "must be at most 9000"),
    ({"e": {"type": "nic", "network": "n", "mtu": "big"}}, "devices.e.mtu", "expected a whole number"),
    ({"e": {"type": "nic", "network": "n", "hwaddr": "00:16:3e:12:34"}}, "devices.e.hwaddr",
     "invalid MAC address"),
    ({"e": {"type": "nic", "network": "n", "hwaddr": "01:16:3e:12:34:56"}}, "devices.e.hwaddr",
     "multicast"),
    ({"e": {"type": "nic", "network": "n", "ipv4.address": "10.0.3.256"}}, "devices.e.ipv4.address",
     "invalid IPv4 address"),
    ({"e": {"type": "nic", "network": "n", "ipv4.address": "10.0.3.0/24"}}, "devices.e.ipv4.address",
     "invalid IPv4 address"),
    ({"e": {"type": "nic", "network": "n", "name": "a-very-long-ifname"}}, "devices.e.name",
     "interface names have at most 15"),
    ({"e": {"type": "nic", "nictype": "macvlan", "parent": "x"}}, "devices.e.nictype",
     "only 'bridged' is supported"),
    ({"e": {"type": "nic", "nictype": "bridged"}}, "devices.e.parent", "needs parent"),
    ({"e": {"type": "nic"}}, "devices.e.network", "a nic needs a network"),
    ({"e": {"type": "nic", "network": "n", "parent": "br0"}}, "devices.e.parent",
     "cannot be used with network"),
    ({"e": {"type": "none", "path": "/"}}, "devices.e.path", "a device of type none takes no other keys"),
]


@pytest.mark.parametrize("devices, path, reason", BAD_DEVICES)
def test_invalid_devices(devices: dict, path: str, reason: str) -> None:
    problems = validate_devices(devices)
    assert len(problems) == 1, problems
    assert problems[0][0] == path
    assert reason in problems[0][1], problems[0][1]


def test_every_device_problem_is_reported() -> None:
    problems = validate_devices({
        "e": {"type": "nic", "mtu": "1", "hwaddr": "x"},   # 3: mtu, hwaddr, no network
        "d": {"type": "disk", "path": "/"},                # 1: no pool
    })
    assert sorted(p for p, _ in problems) == ["devices.d.pool", "devices.e.hwaddr", "devices.e.mtu",
                                              "devices.e.network"]


def test_device_tables_have_docs() -> None:
    assert set(DEVICE_TYPES) == {"disk", "nic", "none"}
    assert all(k.doc for table in DEVICE_TYPES.values() for k in table.values())
    assert keys.describe_device_keys()[0][0] == "disk"


def test_normalize_devices() -> None:
    a = normalize_devices({"root": {"type": "disk", "path": "/", "pool": "p", "size": "1GiB",
                                    "readonly": "no"},
                           "e": {"type": "nic", "network": "n", "hwaddr": "00:16:3E:AA:BB:CC"}})
    b = normalize_devices({"root": {"type": "disk", "path": "/", "pool": "p",
                                    "size": str(1024**3), "readonly": "false"},
                           "e": {"type": "nic", "network": "n", "hwaddr": "00:16:3e:aa:bb:cc"}})
    assert a == b


# -- storage pools ---------------------------------------------------------------------------

@pytest.mark.parametrize("driver, config, problems", [
    ("dir", {}, []),
    ("dir", {"source": "/srv/pool"}, []),
    ("dir", {"source": "srv/pool"}, [("config.source", "invalid path 'srv/pool': must be absolute (start with '/')")]),
    ("dir", {"size": "1GiB"}, [("config.size", "unknown dir pool config key 'size'")]),
    ("btrfs", {"source": "/var/lib/pool.img", "size": "10GiB"}, []),
    ("btrfs", {"size": "huge"}, [("config.size", "invalid size 'huge': expected a number with a unit such as 64MiB or 1GB")]),
    ("fake", {"anything": "x"}, []),   # drivers without a table are the engine's business
])
def test_pool_config(driver: str, config: dict, problems: list) -> None:
    assert validate_pool_config(driver, config) == problems


def test_pool_tables() -> None:
    assert set(POOL_DRIVER_KEYS) == {"dir", "btrfs"}
    # the drivers a manifest may name are the registry's (the test-only fake aside)
    assert set(POOL_DRIVER_KEYS) == set(registry.names("storage")) - {"fake"}
    assert pool_keys.driver_problem("btrfs") is None
    assert pool_keys.driver_problem("zfs9") == "unknown storage pool driver 'zfs9' (known: btrfs, dir)"
    # the model cannot import the driver (layers): the smallest loop file is kept in both
    from sysmgr.drivers.storage.btrfs import MIN_LOOP_SIZE
    assert pool_keys.MIN_BTRFS_LOOP == MIN_LOOP_SIZE
    assert keys.normalize_pool_config("btrfs", {"size": "1GiB", "source": "/a//b/"}) == {
        "size": str(1024**3), "source": "/a/b"}


# -- security.capabilities.* ------------------------------------------------------------------

def test_capability_keys_validate_normalise_and_need_a_restart() -> None:
    assert validate_config({"security.capabilities.add": "CAP_SYSLOG, dac_read_search"}) == []
    assert normalize_config({"security.capabilities.add": "syslog,CAP_DAC_READ_SEARCH,syslog"}) == {
        "security.capabilities.add": "dac_read_search,syslog"}
    (path, reason), = validate_config({"security.capabilities.drop": "net_raw,cap_bogus"})
    assert path == "config.security.capabilities.drop" and "unknown capability 'bogus'" in reason
    assert not is_live("security.capabilities.add") and not is_live("security.capabilities.drop")


def test_capabilities_from_config() -> None:
    assert keys.capabilities_from_config({}) == ((), ())
    assert keys.capabilities_from_config({"security.capabilities.add": "syslog",
                                          "security.capabilities.drop": "NET_RAW,chown"}) == (
        ("syslog",), ("chown", "net_raw"))
    with pytest.raises(ValidationError):
        keys.capabilities_from_config({"security.capabilities.add": "nope"})
