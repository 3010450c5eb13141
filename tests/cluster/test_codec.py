"""The RPC codec: Backend records, values and errors survive the JSON round trip; nothing a
peer names is instantiated unless it is in the registry."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from sysmgr.drivers.runtime.base import Status, Usage
from sysmgr.drivers.storage.base import PoolUsage
from sysmgr.engine import actions
from sysmgr.engine.apply import ApplyResult
from sysmgr.engine.backup import Corrupt, ExportResult
from sysmgr.engine.files import FileInfo
from sysmgr.engine.views import ContainerView
from sysmgr.errors import (AlreadyExists, CommandFailed, Conflict, HostKeyRejected, Issue,
                           MemberUnreachable, NotFound, RemoteRejected, SysmgrError,
                           ValidationError)
from sysmgr.model import objects
from sysmgr.remote import codec
from sysmgr.remote.manifests import ManifestFiles
from sysmgr.state.db import ContainerRecord, ImageRecord, PoolRecord, ProfileRecord
from sysmgr.state.networks import NetworkRecord
from sysmgr.state.snapshots import SnapshotRecord
from sysmgr.types import (HostCgroups, HostFacts, HostSecurity, IdMap, IdMapEntry, Limits,
                          MemberSpec, NetworkLease, NetworkState)


def wire(value: Any) -> Any:
    """``value`` through the codec and a real JSON text, as it travels."""
    return codec.decode(json.loads(json.dumps(codec.encode(value))))


IMAGE = ImageRecord("ab" * 32, {"properties": {"os": "busybox"}, "n": [1, 2.5, None]}, 3 << 20,
                    1.5, "build:busybox", ["busybox", "bb"])
CONTAINER = ContainerRecord("c1", "ab" * 32, "default", ["default", "web"],
                            {"limits.memory": "64MiB"}, {"root": {"type": "disk", "path": "/"}},
                            "a container", {"init.pid": 42, "idmap": "0 100000 65536"}, 2.0)
VIEW = ContainerView(CONTAINER, {"limits.memory": "64MiB"}, {"root": {"type": "disk"}},
                     Status("RUNNING", 42), IMAGE, Usage(1 << 20, 2 << 20, 3, 10**9, 0),
                     {"nics": {"eth0": {"hwaddr": "02:00:00:00:00:01", "ipv4": None}},
                      "ipv4": ["10.0.3.5 (eth0)"], "security": "privileged"}, 4096)
PLAN = actions.Plan((
    actions.CreatePool("p", driver="dir", config={"source": "/srv"}),
    actions.CreateNetwork("n", config={"ipv4.address": "10.1.1.1/24"}),
    actions.UpdateNetwork("n2", changes=(actions.Change("config.mtu", "1500", "1400"),),
                          restart=("c1",)),
    actions.RepairNetwork("n3", problems=("dnsmasq is not running",)),
    actions.PutProfile("web", config={"a": "b"}, devices={"eth0": {"type": "nic"}}),
    actions.UpdateProfile("web2", changes=(actions.Change("devices.eth0", None, {"type": "nic"}),)),
    actions.BuildImage("busybox", builder="busybox", options={"x": "1"}),
    actions.ImportImage("img", path="/tmp/i.tar", fingerprint="cd" * 32),
    actions.CreateContainer("c2", image="busybox", profiles=("default",)),
    actions.UpdateContainer("c1", changes=(actions.Change("profiles", ["a"], ["a", "b"]),),
                            live=True),
    actions.Start("c1"), actions.Stop("c3"), actions.Restart("c4", reason="limits.cpu"),
), "digest", ("a warning",))

SAMPLES = [
    VIEW, IMAGE, CONTAINER, PLAN,
    PoolRecord("default", "dir", {"source": "/x"}, "", 1.0),
    ProfileRecord("default", "d", {"k": "v"}, {"root": {"type": "disk"}}),
    NetworkRecord("n", "bridge", {"ipv4.address": "auto"}, "", "smab12br", 3.0),
    SnapshotRecord("c1", "snap0", 1.0, None, ["default"], {}, {}, "", {"idmap": "x"}),
    PoolUsage(1, 2), FileInfo(0o100644, 0, 0, 12),
    ExportResult("/tmp/c1.tar.zst", 10, ["snap0"], False, "tar"),
    Limits("0-1", 50_000, 100_000, 512, 1 << 30, False, 100),
    IdMap(100000, 65536, (IdMapEntry("both", 1000, 1000, 1),)), HostFacts(2, 1 << 34),
    HostSecurity("not available on this host"), HostCgroups("v1", False, "sysmgr-ab", False),
    NetworkState("Created", "br0", True, 1500, ("10.0.0.1/24",), ("veth1",), 99, True, (),
                 (NetworkLease("c1", "02:00:00:00:00:01", "10.0.0.5", "static"),)),
    MemberSpec("m1", "ssh://root@h", groups=("g",), config=(("k", "v"),)),
    objects.Manifest((objects.ProfileSpec("p", source=objects.Source("a.yaml", 3)),
                      objects.StoragePoolSpec("sp", "dir"), objects.NetworkSpec("n"),
                      objects.ImageSpec("i", build={"builder": "busybox"}),
                      objects.ContainerSpec("c", "i", state="running"))),
    ApplyResult(["create Profile web"]),
    ManifestFiles("/home/u", (("a.yaml", b"kind: Profile\n"), ("gone.yaml", None))),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_records_round_trip(value: Any) -> None:
    back = wire(value)
    assert type(back) is type(value) and back == value


def test_plain_values_round_trip() -> None:
    value = {"bytes": b"\x00\xffbin", "tuple": (1, (2, "x")), "list": [None, True, 1.5],
             "int-keys": {1: "a", 2: "b"}, "dollar": {"$rec": "x", "$bytes": 1},
             "result": (0, b"out", b"err"), "set": {3, 1, 2}}
    back = wire(value)
    assert back == {**value, "set": [1, 2, 3]}
    assert isinstance(back["tuple"], tuple) and isinstance(back["tuple"][1], tuple)


def test_the_registry_names_real_record_classes() -> None:
    for name in codec.RECORDS:
        cls = codec.record_class(name)
        assert cls.__name__ == name
        assert dataclasses.is_dataclass(cls) or hasattr(cls, "_fields"), name


def test_unregistered_classes_neither_travel_nor_are_built() -> None:
    @dataclasses.dataclass
    class Secret:
        x: int = 1

    with pytest.raises(codec.CodecError):
        codec.encode(Secret())
    with pytest.raises(codec.CodecError):
        codec.encode(object())
    for name in ("Popen", "os:system", "subprocess.Popen", "Host", "Secret"):
        with pytest.raises(codec.CodecError):
            codec.decode({"$rec": name, "f": {"args": ["true"]}})
    with pytest.raises(codec.CodecError):  # a registered class with fields it does not have
        codec.decode({"$rec": "Status", "f": {"state": "RUNNING", "evil": 1}})
    with pytest.raises(codec.CodecError):  # a callback marker is not a value
        codec.decode({"$callback": "progress"})


def test_callbacks_travel_as_markers() -> None:
    got: list[str] = []
    wire_args = codec.encode_args({"name": "c1", "progress": got.append, "warn": None})
    assert wire_args == {"name": "c1", "progress": {"$callback": "progress"}, "warn": None}
    back = codec.decode(wire_args, lambda kind: lambda line: got.append(f"{kind}:{line}"))
    back["progress"]("step 1")
    assert got == ["progress:step 1"]
    with pytest.raises(codec.CodecError):
        codec.encode_args({"src": print})


ERRORS = [
    NotFound("container 'ghost' not found", hint="see list"),
    AlreadyExists("container 'c1' already exists"),
    Conflict("container 'c1' is running"),
    ValidationError([Issue("unknown key", "a.yaml", 3, "config.x"), Issue("bad")], hint="h"),
    CommandFailed(["btrfs", "send"], 3, "ERROR: boom\n"),
    HostKeyRejected("unknown host key SHA256:abc", fingerprint="SHA256:abc"),
    RemoteRejected("refused"), MemberUnreachable("m1: cannot reach"),
    SysmgrError("plain"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_keep_class_message_and_exit_code(error: SysmgrError) -> None:
    back = codec.decode_error(json.loads(json.dumps(codec.encode_error(error))))
    assert type(back) is type(error)
    assert (back.message, back.hint, back.exit_code, str(back)) == \
        (error.message, error.hint, error.exit_code, str(error))
    if isinstance(error, ValidationError):
        assert back.issues == error.issues
    for attr in ("argv", "returncode", "stderr", "fingerprint"):
        assert getattr(back, attr, None) == getattr(error, attr, None)


def test_errors_of_other_classes_travel_as_their_public_parent() -> None:
    corrupt = codec.decode_error(codec.encode_error(Corrupt([Issue("truncated")])))
    assert type(corrupt) is ValidationError and corrupt.exit_code == 2
    bug = codec.decode_error(codec.encode_error(KeyError("x")))
    assert type(bug) is SysmgrError and bug.exit_code == 1 and "KeyError" in bug.message
    unknown = codec.decode_error({"class": "os.system", "message": "m", "exit_code": 2})
    assert type(unknown) is SysmgrError and unknown.exit_code == 2
    several = SysmgrError("c1: not found\nc2: not found")
    several.exit_code = 2  # the CLI's for_each raises the highest exit code
    assert codec.decode_error(codec.encode_error(several)).exit_code == 2
