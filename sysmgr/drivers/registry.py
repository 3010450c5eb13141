"""Name -> driver class tables, loaded lazily by dotted path."""

from __future__ import annotations

import importlib
from typing import Any

from sysmgr.errors import ValidationError

_TABLES: dict[str, dict[str, str]] = {
    "runtime": {
        "native": "sysmgr.drivers.runtime.native:NativeRuntime",
        "crun": "sysmgr.drivers.runtime.oci:CrunRuntime",
        "runc": "sysmgr.drivers.runtime.oci:RuncRuntime",
        "fake": "sysmgr.drivers.runtime.fake:FakeRuntime",
    },
    "image": {
        "busybox": "sysmgr.drivers.images.busybox:BusyboxBuilder",
        "debian": "sysmgr.drivers.images.debian:DebianBuilder",
    },
    "network": {
        "bridge": "sysmgr.drivers.network.bridge:BridgeNetwork",
        "fake": "sysmgr.drivers.network.fake:FakeNetwork",
    },
    "storage": {
        "dir": "sysmgr.drivers.storage.dir:DirPool",
        "btrfs": "sysmgr.drivers.storage.btrfs:BtrfsPool",
        "fake": "sysmgr.drivers.storage.fake:FakePool",
    },
}


def names(kind: str) -> list[str]:
    return sorted(_TABLES[kind])


def load(kind: str, name: str) -> Any:
    """Return the driver class registered as ``name`` for ``kind``."""
    try:
        target = _TABLES[kind][name]
    except KeyError:
        known = ", ".join(n for n in names(kind) if n != "fake")
        raise ValidationError(f"unknown {kind} driver {name!r} (known: {known})") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
