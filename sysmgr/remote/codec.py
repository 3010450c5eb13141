"""JSON encoding of the Backend's arguments, results and errors (both ends of the RPC).

Plain JSON values pass as they are; everything else is a one-key object whose key starts
with ``$``:

- ``{"$bytes": base64}``, ``{"$tuple": [...]}``, ``{"$map": [[key, value], ...]}`` (a dict
  whose keys are not all plain strings, or one with a key starting with ``$``);
- ``{"$rec": "ContainerView", "f": {field: value}}``: a record class of the API's, rebuilt
  only when its name is in :data:`RECORDS` — the explicit list of what the Backend returns.
  A peer never gets a class of its choosing instantiated;
- ``{"$callback": "progress"}``: an argument that was a callback (the server substitutes a
  function that sends notifications back);
- errors (:func:`encode_error`): the nearest class of :mod:`sysmgr.errors`, the message,
  hint and issues, so exit codes stay right on the admin side.

Record classes are imported by name on first use (decoding a listing must not import the
planner).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
from typing import Any, Callable

from sysmgr import errors
from sysmgr.errors import Issue, SysmgrError, ValidationError

#: name -> "module:attribute" of every record the Backend takes or returns
RECORDS: dict[str, str] = {
    # containers as the API shows them (engine views of state records and driver status)
    "ContainerView": "sysmgr.engine.views:ContainerView",
    "ContainerRecord": "sysmgr.state.db:ContainerRecord",
    "ImageRecord": "sysmgr.state.db:ImageRecord",
    "ProfileRecord": "sysmgr.state.db:ProfileRecord",
    "PoolRecord": "sysmgr.state.db:PoolRecord",
    "NetworkRecord": "sysmgr.state.networks:NetworkRecord",
    "SnapshotRecord": "sysmgr.state.snapshots:SnapshotRecord",
    "VolumeView": "sysmgr.engine.custom_volumes:VolumeView",
    "VolumeRecord": "sysmgr.state.volumes:VolumeRecord",
    "VolumeSnapshotRecord": "sysmgr.state.volumes:VolumeSnapshotRecord",
    "Status": "sysmgr.drivers.runtime.base:Status",
    "Usage": "sysmgr.drivers.runtime.base:Usage",
    "PoolUsage": "sysmgr.drivers.storage.base:PoolUsage",
    "FileInfo": "sysmgr.engine.files:FileInfo",
    "DirEntry": "sysmgr.engine.files:DirEntry",
    "ExportResult": "sysmgr.engine.backup:ExportResult",
    "Event": "sysmgr.engine.events:Event",
    # plain value types
    "Limits": "sysmgr.types:Limits",
    "IdMap": "sysmgr.types:IdMap",
    "IdMapEntry": "sysmgr.types:IdMapEntry",
    "HostFacts": "sysmgr.types:HostFacts",
    "HostSecurity": "sysmgr.types:HostSecurity",
    "HostCgroups": "sysmgr.types:HostCgroups",
    "NetworkState": "sysmgr.types:NetworkState",
    "NetworkLease": "sysmgr.types:NetworkLease",
    "MemberSpec": "sysmgr.types:MemberSpec",
    "Outcome": "sysmgr.types:Outcome",
    # manifests: what validate returns, plans (data) and what apply returns
    "Manifest": "sysmgr.model.objects:Manifest",
    "Source": "sysmgr.model.objects:Source",
    "ProfileSpec": "sysmgr.model.objects:ProfileSpec",
    "StoragePoolSpec": "sysmgr.model.objects:StoragePoolSpec",
    "StorageVolumeSpec": "sysmgr.model.objects:StorageVolumeSpec",
    "ImageSpec": "sysmgr.model.objects:ImageSpec",
    "ContainerSpec": "sysmgr.model.objects:ContainerSpec",
    "NetworkSpec": "sysmgr.model.objects:NetworkSpec",
    "Plan": "sysmgr.engine.actions:Plan",
    "Change": "sysmgr.engine.actions:Change",
    "CreatePool": "sysmgr.engine.actions:CreatePool",
    "CreateVolume": "sysmgr.engine.actions:CreateVolume",
    "UpdateVolume": "sysmgr.engine.actions:UpdateVolume",
    "CreateNetwork": "sysmgr.engine.actions:CreateNetwork",
    "UpdateNetwork": "sysmgr.engine.actions:UpdateNetwork",
    "RepairNetwork": "sysmgr.engine.actions:RepairNetwork",
    "PutProfile": "sysmgr.engine.actions:PutProfile",
    "UpdateProfile": "sysmgr.engine.actions:UpdateProfile",
    "BuildImage": "sysmgr.engine.actions:BuildImage",
    "ImportImage": "sysmgr.engine.actions:ImportImage",
    "CreateContainer": "sysmgr.engine.actions:CreateContainer",
    "UpdateContainer": "sysmgr.engine.actions:UpdateContainer",
    "Start": "sysmgr.engine.actions:Start",
    "Stop": "sysmgr.engine.actions:Stop",
    "Restart": "sysmgr.engine.actions:Restart",
    "Prune": "sysmgr.engine.actions:Prune",
    "SetPrune": "sysmgr.engine.actions:SetPrune",
    "ForgetInventory": "sysmgr.engine.actions:ForgetInventory",
    "ApplyResult": "sysmgr.engine.apply:ApplyResult",
    # shipped manifest files (sysmgr.remote.manifests)
    "ManifestFiles": "sysmgr.remote.manifests:ManifestFiles",
}

CALLBACKS = ("progress", "warn")
# attributes of some error classes beyond message, hint and issues
_ERROR_EXTRAS = ("argv", "returncode", "stderr", "fingerprint")


class CodecError(SysmgrError):
    """A value cannot be encoded, or the peer sent something this end does not accept."""


def record_class(name: str) -> type:
    """The registered class ``name`` (CodecError for any other name)."""
    target = RECORDS.get(name)
    if target is None:
        raise CodecError(f"the peer sent an unknown record type {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _fields(value: Any) -> dict[str, Any] | None:
    """The constructor fields of a record (a dataclass or a NamedTuple), else None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return dict(zip(value._fields, value))
    return None


def encode(value: Any) -> Any:
    """``value`` as JSON-able data (CodecError for what cannot travel)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [encode(v) for v in value]
    fields = _fields(value)
    if fields is not None:
        name = type(value).__name__
        if name not in RECORDS or record_class(name) is not type(value):
            raise CodecError(f"{type(value).__module__}.{name} is not a registered record")
        return {"$rec": name, "f": {k: encode(v) for k, v in fields.items()}}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, dict) or hasattr(value, "items"):
        items = list(value.items())
        if all(isinstance(k, str) and not k.startswith("$") for k, _ in items):
            return {k: encode(v) for k, v in items}
        return {"$map": [[encode(k), encode(v)] for k, v in items]}
    if isinstance(value, (set, frozenset)):
        return [encode(v) for v in sorted(value, key=repr)]
    if callable(value):
        raise CodecError("a callback can only travel as a progress or warn argument")
    raise CodecError(f"a {type(value).__name__} cannot be sent to a member")


def encode_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a request: callbacks become ``{"$callback": name}`` markers."""
    out: dict[str, Any] = {}
    for k, v in kwargs.items():
        if callable(v) and not isinstance(v, type):
            if k not in CALLBACKS:
                raise CodecError(f"argument {k!r}: only progress and warn may be callbacks")
            out[k] = {"$callback": k}
        else:
            out[k] = encode(v)
    return out


def decode(data: Any, callback: Callable[[str], Callable[[str], None]] | None = None) -> Any:
    """The value ``data`` encodes. ``callback(name)`` supplies the function for a callback
    marker (a request's arguments on the server); without it a marker is refused."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, callback) for v in data]
    if not isinstance(data, dict):
        raise CodecError(f"cannot decode a {type(data).__name__}")
    if any(k.startswith("$") for k in data):
        return _decode_tagged(data, callback)
    return {k: decode(v, callback) for k, v in data.items()}


def _decode_tagged(data: dict[str, Any], callback: Callable[[str], Any] | None) -> Any:
    if "$bytes" in data:
        return base64.b64decode(data["$bytes"])
    if "$tuple" in data:
        return tuple(decode(v, callback) for v in data["$tuple"])
    if "$map" in data:
        return {_hashable(decode(k, callback)): decode(v, callback) for k, v in data["$map"]}
    if "$rec" in data:
        cls = record_class(str(data["$rec"]))
        fields = data.get("f") or {}
        if not isinstance(fields, dict):
            raise CodecError(f"record {data['$rec']!r} without fields")
        try:
            return cls(**{str(k): decode(v, callback) for k, v in fields.items()})
        except TypeError as e:
            raise CodecError(f"record {data['$rec']!r} does not fit this sysmgr: {e}") from None
    if "$callback" in data and callback is not None and data["$callback"] in CALLBACKS:
        return callback(data["$callback"])
    raise CodecError(f"cannot decode {sorted(data)!r}")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# -- errors ------------------------------------------------------------------------------------

def _public_class(e: BaseException) -> type[SysmgrError]:
    """The nearest class of ``e`` that :mod:`sysmgr.errors` defines (engine errors such as a
    corrupt backup travel as their documented parent, ValidationError)."""
    for cls in type(e).__mro__:
        if getattr(errors, cls.__name__, None) is cls and issubclass(cls, SysmgrError):
            return cls
    return SysmgrError


def encode_error(e: BaseException) -> dict[str, Any]:
    """An exception as an error reply. A foreign one (a bug on the member) travels as a
    plain failure (exit 1) naming its type."""
    if not isinstance(e, SysmgrError):
        return {"class": "SysmgrError", "message": f"internal error on the member: "
                f"{type(e).__name__}: {e}", "hint": "see the member's log, or re-run there "
                "with --debug", "exit_code": 1}
    out: dict[str, Any] = {"class": _public_class(e).__name__, "message": e.message,
                           "hint": e.hint, "exit_code": e.exit_code}
    if isinstance(e, ValidationError):
        out["issues"] = [[i.message, i.file, i.line, i.path] for i in e.issues]
    for attr in _ERROR_EXTRAS:
        value = getattr(e, attr, None)
        if isinstance(value, (str, int, list)) and not isinstance(value, bool):
            out[attr] = value
    return out


def decode_error(data: Any) -> SysmgrError:
    """The exception an error reply describes: the same class of :mod:`sysmgr.errors` (a
    plain SysmgrError for a name this end does not know), message, hint, issues, exit code.
    Built without calling the class's ``__init__``: the peer picks no constructor path."""
    if not isinstance(data, dict):
        return SysmgrError(f"the member sent a malformed error: {data!r}")
    cls = getattr(errors, str(data.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, SysmgrError)):
        cls = SysmgrError
    message = str(data.get("message") or cls.__name__)
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    e.message = message
    e.hint = data.get("hint") if isinstance(data.get("hint"), str) else None
    if isinstance(e, ValidationError):
        raw = data.get("issues") or [[message, None, None, None]]
        e.issues = [Issue(*(list(i) + [None] * 4)[:4]) for i in raw if isinstance(i, list)]
    for attr in _ERROR_EXTRAS:
        if attr in data:
            setattr(e, attr, data[attr])
    code = data.get("exit_code")
    if isinstance(code, int) and code != cls.exit_code:
        e.exit_code = code
    return e
