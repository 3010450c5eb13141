"""User-namespace support of the native runtime, as far as it exists today (layer: runtime driver).

Not on any start path yet: :meth:`NativeRuntime.start` refuses an id map
(``RuntimeInfo.user_namespaces`` is False). What is here is the piece P will run between A's
``unshare(CLONE_NEWUSER)`` and the "go" (see :func:`.process.launch`); the rootfs then goes
through :func:`sysmgr._util.linux.idmapped_bind`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from sysmgr.errors import DriverError


def write_id_maps(pid: int, uid_mappings: Sequence[Mapping[str, int]],
                  gid_mappings: Sequence[Mapping[str, int]]) -> None:
    """Write a process's uid/gid maps from the bundle's ``linux.uidMappings``/``gidMappings``
    (PLATFORM item 1: host root writes them, no ``setgroups`` needed)."""
    for name, maps in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        text = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as e:
            raise DriverError(f"cannot write /proc/{pid}/{name}: {e.strerror}") from e
