"""Typed specs for the ``kind:`` documents a manifest can hold.

Each spec carries its :class:`Source` (file and line) so later errors (a missing profile, a
conflicting name) can point at the document that caused them. Config values are strings;
devices are ``{name: {key: str}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from sysmgr.errors import Issue
from sysmgr.types import MemberSpec

Config = Mapping[str, str]
Devices = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Source:
    file: str | None = None
    line: int | None = None
    # (dotted key path, line) of the keys that name other objects (profiles, image, devices,
    # target): a reference that is not found is reported at its own line
    keys: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        if not self.file:
            return "<input>"
        return f"{self.file}:{self.line}" if self.line else self.file

    def line_of(self, path: str | None) -> int | None:
        """The line of the key at ``path`` (``profiles[1]``, ``devices.root.pool``), of its
        nearest recorded parent, or of the document."""
        lines = dict(self.keys)
        dotted = (path or "").replace("[", ".").replace("]", "")
        while dotted:
            if dotted in lines:
                return lines[dotted]
            dotted = dotted.rpartition(".")[0]
        return self.line


def issue_at(spec: object, path: str | None, message: str) -> Issue:
    """An issue about ``spec`` at its key ``path``: its file and that key's line."""
    src = getattr(spec, "source", None)
    line = src.line_of(path) if isinstance(src, Source) else None
    return Issue(message, file=getattr(src, "file", None), line=line, path=path)


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

    ``copied_from`` is never written in YAML: a cluster plan sets it on the share of a member
    that lacks an image its containers use, naming the member the image is copied from
    before that member's plan runs (the member's planner then counts the image as present
    and plans nothing for it).
    """

    name: str
    build: Mapping[str, str] | None = None
    path: str | None = None
    description: str = ""
    source: Source = Source()
    copied_from: str | None = None
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
    target: str | None = None        # cluster member, or "@group" for placement in a group
    # ``ignore:``: config keys (fnmatch patterns, e.g. user.*) and device names changed by
    # hand without the manifests (or the controller) putting them back
    ignore_config: tuple[str, ...] = ()
    ignore_devices: tuple[str, ...] = ()
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


@dataclass(frozen=True)
class StorageVolumeSpec:
    """A custom storage volume (LXD's ``storage volume``) on ``pool``: its config keys
    (:mod:`sysmgr.model.volume_keys`). Its identity in a manifest is ``POOL/VOLUME``."""

    pool: str
    volume: str
    config: Config = field(default_factory=dict)
    description: str = ""
    source: Source = Source()
    kind = "StorageVolume"

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.volume}"


@dataclass(frozen=True)
class MemberDoc:
    """A ``kind: Member`` document: how the admin host reaches one cluster member
    (:mod:`sysmgr.model.members`). Applied into the admin root's cluster store, never sent
    to a member."""

    member: MemberSpec
    description: str = ""
    source: Source = Source()
    kind = "Member"

    @property
    def name(self) -> str:
        return self.member.name


Spec = Union[ProfileSpec, StoragePoolSpec, StorageVolumeSpec, NetworkSpec, ImageSpec,
             ContainerSpec, MemberDoc]

# Member documents go to the admin root's cluster store, apart from the rest (a cluster plan
# records them before anything is placed on them), so their rank here does not matter
KIND_ORDER = ("StoragePool", "StorageVolume", "Network", "Profile", "Image", "Container", "Member")


@dataclass(frozen=True)
class Manifest:
    """All documents read from a set of files, in dependency order of kinds.

    ``origin`` names where they were read from (the sorted absolute paths given): objects
    created from them are recorded with it, and only those are pruned when they leave.
    ``keep``: ``(kind, name)`` of the documents saying ``prune: false``. ``declared``: on a
    cluster member's share, ``(kind, name)`` of every object of the whole manifest (what
    prune must not delete although this share lacks it); empty on a whole manifest."""

    specs: tuple[Spec, ...] = ()
    origin: str = ""
    keep: tuple[tuple[str, str], ...] = ()
    declared: tuple[tuple[str, str], ...] = ()
    # (kind, name) of documents that did not load (a partial manifest of a failed load):
    # a reference to one is not reported again as missing
    broken: tuple[tuple[str, str], ...] = ()

    def of(self, kind: str) -> list[Spec]:
        return [s for s in self.specs if s.kind == kind]
