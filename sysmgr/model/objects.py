"""Typed specs for the ``kind:`` documents a manifest can hold.

Each spec carries its :class:`Source` (file and line) so later errors (a missing profile, a
conflicting name) can point at the document that caused them. Config values are strings;
devices are ``{name: {key: str}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

Config = Mapping[str, str]
Devices = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Source:
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if not self.file:
            return "<input>"
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    description: str = ""
    config: Config = field(default_factory=dict)
    devices: Devices = field(default_factory=dict)
    source: Source = Source()
    kind = "Profile"


@dataclass(frozen=True)
class StoragePoolSpec:
    name: str
    driver: str
    config: Config = field(default_factory=dict)
    description: str = ""
    source: Source = Source()
    kind = "StoragePool"


@dataclass(frozen=True)
class ImageSpec:
    """An image known by ``name`` (its alias). Exactly one of ``build`` or ``path``:

    - ``build``: a builder name and its options, e.g. ``{"builder": "busybox"}`` or
      ``{"builder": "debian", "release": "bookworm"}``;
    - ``path``: an image tarball or directory to import (resolved relative to the manifest).
    """

    name: str
    build: Mapping[str, str] | None = None
    path: str | None = None
    description: str = ""
    source: Source = Source()
    kind = "Image"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str                       # alias or fingerprint (prefix)
    profiles: tuple[str, ...] = ("default",)
    config: Config = field(default_factory=dict)
    devices: Devices = field(default_factory=dict)
    state: str | None = None         # "running" | "stopped" | None (leave as is)
    description: str = ""
    source: Source = Source()
    kind = "Container"


@dataclass(frozen=True)
class NetworkSpec:
    """A managed network (LXD's ``lxc network``): ``type: bridge`` and its config keys
    (:mod:`sysmgr.model.network_keys`)."""

    name: str
    type: str = "bridge"
    config: Config = field(default_factory=dict)
    description: str = ""
    source: Source = Source()
    kind = "Network"


Spec = Union[ProfileSpec, StoragePoolSpec, NetworkSpec, ImageSpec, ContainerSpec]

KIND_ORDER = ("StoragePool", "Network", "Profile", "Image", "Container")


@dataclass(frozen=True)
class Manifest:
    """All documents read from a set of files, in dependency order of kinds."""

    specs: tuple[Spec, ...] = ()

    def of(self, kind: str) -> list[Spec]:
        return [s for s in self.specs if s.kind == kind]
