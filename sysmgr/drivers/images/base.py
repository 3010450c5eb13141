"""The image builder interface and the metadata every image carries.

A builder fills an empty directory with a root filesystem (``build``) and returns an
:class:`ImageMetadata`. Importers (``unpack.py``) do the same from a tarball or directory.
The engine stores the result in a storage pool and records it by sha256 fingerprint.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageMetadata:
    """What sysmgr needs to know about an image (LXD ``metadata.yaml`` shape, plus two keys).

    ``init`` and ``halt_signal`` come from ``metadata.yaml`` keys ``sysmgr.init`` /
    ``sysmgr.halt_signal`` (or the builder); defaults suit a sysvinit/busybox-style init.
    """

    properties: Mapping[str, str] = field(default_factory=dict)  # os, release, description, architecture...
    init: str = "/sbin/init"
    halt_signal: str = "SIGPWR"
    no_new_privs: bool = False
    #: the image's default environment (an OCI config's ``Env``); the container's own
    #: ``environment.*`` keys win over it
    environment: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "properties": dict(self.properties),
            "init": self.init,
            "halt_signal": self.halt_signal,
            "no_new_privs": self.no_new_privs,
        }
        if self.environment:
            d["environment"] = dict(self.environment)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "ImageMetadata":
        return cls(
            properties={str(k): str(v) for k, v in dict(d.get("properties") or {}).items()},  # type: ignore[arg-type]
            init=str(d.get("init") or "/sbin/init"),
            halt_signal=str(d.get("halt_signal") or "SIGPWR"),
            no_new_privs=bool(d.get("no_new_privs", False)),
            environment={str(k): str(v) for k, v in dict(d.get("environment") or {}).items()},  # type: ignore[arg-type]
        )


class ImageBuilder(abc.ABC):
    name: ClassVar[str]
    options: ClassVar[Mapping[str, str]] = {}    # option -> one-line doc; others rejected

    @abc.abstractmethod
    def build(self, dest: str, options: Mapping[str, str], progress: Progress | None = None) -> ImageMetadata:
        """Fill the empty directory ``dest`` with a root filesystem."""
