"""Facts about the machine sysmgr runs on, read from the kernel (the engine's source of
:class:`~sysmgr.types.HostFacts`)."""

from __future__ import annotations

import os

from sysmgr.types import HostFacts


def _meminfo(key: str) -> int:
    """A ``/proc/meminfo`` value in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"{key} missing from /proc/meminfo")  # pragma: no cover


def memory_total() -> int:
    """MemTotal in bytes."""
    return _meminfo("MemTotal")


def memory_available() -> int:
    """MemAvailable in bytes: what new containers can still get without swapping (placement's
    "free")."""
    return _meminfo("MemAvailable")


def apparmor_enabled() -> bool:
    """Whether the kernel runs AppArmor (its module parameter says ``Y``)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def boot_id() -> str:
    """This boot's id (a new one at every boot): tells an init that died with the host from
    one that died while the host ran."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - every Linux since 2.6 has it
        return ""


def host_facts() -> HostFacts:
    return HostFacts(cpus=os.cpu_count() or 1, memory_bytes=memory_total())
