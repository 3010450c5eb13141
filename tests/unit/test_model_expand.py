"""Unit tests for sysmgr.model.expand: LXD profile expansion and whole-container checks."""

from __future__ import annotations

import copy

import pytest

from sysmgr.errors import ValidationError
from sysmgr.model.expand import expand, expand_spec, validate_expanded
from sysmgr.model.objects import ContainerSpec, ProfileSpec, Source

ROOT = {"type": "disk", "path": "/", "pool": "default"}

EXPAND = [
    # (id, profiles [(config, devices)], own config, own devices, expected config, expected devices)
    ("nothing", [], {}, {}, {}, {}),
    ("profile-only", [({"limits.cpu": "1"}, {"root": ROOT})], {}, {},
     {"limits.cpu": "1"}, {"root": ROOT}),
    ("config-in-profile-order-then-own",
     [({"limits.cpu": "1", "limits.memory": "1GiB", "user.a": "p1"}, {}),
      ({"limits.cpu": "2", "user.b": "p2"}, {})],
     {"limits.memory": "64MiB"}, {},
     {"limits.cpu": "2", "limits.memory": "64MiB", "user.a": "p1", "user.b": "p2"}, {}),
    ("empty-value-still-wins", [({"limits.memory": "1GiB"}, {})], {"limits.memory": ""}, {},
     {"limits.memory": ""}, {}),
    ("later-device-wins-whole-no-key-merge",
     [({}, {"root": {"type": "disk", "path": "/", "pool": "a", "size": "10GiB"}}),
      ({}, {"root": {"type": "disk", "path": "/", "pool": "b"}})],
     {}, {}, {}, {"root": {"type": "disk", "path": "/", "pool": "b"}}),
    ("own-device-wins-whole",
     [({}, {"eth0": {"type": "nic", "network": "br0", "mtu": "9000"}})],
     {}, {"eth0": {"type": "nic", "network": "br1"}},
     {}, {"eth0": {"type": "nic", "network": "br1"}}),
    ("none-removes-inherited-device",
     [({}, {"root": ROOT, "eth0": {"type": "nic", "network": "br0"}})],
     {}, {"eth0": {"type": "none"}}, {}, {"root": ROOT}),
    ("none-without-inherited-device-is-not-in-result", [], {}, {"eth1": {"type": "none"}}, {}, {}),
    ("none-in-a-profile-removes-an-earlier-profiles-device",
     [({}, {"eth0": {"type": "nic", "network": "br0"}}), ({}, {"eth0": {"type": "none"}})],
     {}, {}, {}, {}),
    ("device-readded-after-none",
     [({}, {"eth0": {"type": "nic", "network": "br0"}}), ({}, {"eth0": {"type": "none"}})],
     {}, {"eth0": {"type": "nic", "network": "br2"}}, {}, {"eth0": {"type": "nic", "network": "br2"}}),
    ("devices-of-different-names-accumulate",
     [({}, {"root": ROOT}), ({}, {"eth0": {"type": "nic", "network": "br0"}})],
     {}, {"data": {"type": "disk", "path": "/srv", "source": "/d"}}, {},
     {"root": ROOT, "eth0": {"type": "nic", "network": "br0"},
      "data": {"type": "disk", "path": "/srv", "source": "/d"}}),
]


@pytest.mark.parametrize("profiles, config, devices, want_config, want_devices",
                         [e[1:] for e in EXPAND], ids=[e[0] for e in EXPAND])
def test_expand(profiles, config, devices, want_config, want_devices) -> None:
    before = copy.deepcopy((profiles, config, devices))
    got_config, got_devices = expand(profiles, config, devices)
    assert got_config == want_config
    assert got_devices == want_devices
    assert (profiles, config, devices) == before  # inputs untouched


def test_expand_returns_copies() -> None:
    dev = {"type": "disk", "path": "/", "pool": "p"}
    _, devices = expand([({}, {"root": dev})], {}, {})
    devices["root"]["pool"] = "changed"
    assert dev["pool"] == "p"


def test_expand_spec_uses_profile_order_of_the_container() -> None:
    profiles = {
        "default": ProfileSpec("default", devices={"root": ROOT}, config={"limits.cpu": "1"}),
        "big": ProfileSpec("big", config={"limits.cpu": "4"}),
    }
    spec = ContainerSpec("c", "busybox", profiles=("big", "default"))
    config, devices = expand_spec(spec, profiles)
    assert config == {"limits.cpu": "1"}  # default comes last, so it wins
    assert devices == {"root": ROOT}


def test_expand_spec_reports_every_missing_profile() -> None:
    spec = ContainerSpec("c", "busybox", profiles=("default", "a", "b"), source=Source("c.yaml", 3))
    with pytest.raises(ValidationError) as exc:
        expand_spec(spec, {"default": ProfileSpec("default")})
    assert [str(i) for i in exc.value.issues] == [
        "c.yaml:3: profiles: container 'c' uses profile 'a', which does not exist",
        "c.yaml:3: profiles: container 'c' uses profile 'b', which does not exist",
    ]


VALIDATE = [
    ("ok", {"root": ROOT}, []),
    ("ok-with-others", {"root": ROOT, "data": {"type": "disk", "path": "/srv", "source": "/d"},
                        "eth0": {"type": "nic", "network": "n"}}, []),
    ("no-root-disk", {}, [("devices", "no root disk device: add devices.root {type: disk, path: /, "
                                      "pool: NAME} to the container or one of its profiles")]),
    ("root-removed-by-none", {"eth0": {"type": "nic", "network": "n"}},
     [("devices", "no root disk device: add devices.root {type: disk, path: /, pool: NAME} "
                  "to the container or one of its profiles")]),
    ("two-root-disks", {"root": ROOT, "other": {"type": "disk", "path": "/", "pool": "b"}},
     [("devices.root", "more than one root disk (path: /): 'other', 'root'; keep exactly one")]),
    ("same-mount-point", {"root": ROOT, "a": {"type": "disk", "path": "/srv", "source": "/x"},
                          "b": {"type": "disk", "path": "/srv/", "source": "/y"}},
     [("devices.b.path", "mount point '/srv' is also used by device 'a'")]),
    ("same-interface-name", {"root": ROOT, "eth0": {"type": "nic", "network": "n"},
                             "net1": {"type": "nic", "network": "m", "name": "eth0"}},
     [("devices.net1.name", "interface name 'eth0' is also used by device 'eth0'")]),
]


@pytest.mark.parametrize("devices, problems", [v[1:] for v in VALIDATE], ids=[v[0] for v in VALIDATE])
def test_validate_expanded(devices, problems) -> None:
    assert validate_expanded({}, devices) == problems


def test_expanded_from_profiles_then_validated() -> None:
    config, devices = expand([({}, {"root": ROOT})], {}, {"root": {"type": "none"}})
    assert devices == {}
    assert [p for p, _ in validate_expanded(config, devices)] == ["devices"]
