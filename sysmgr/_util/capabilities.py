"""Linux capability names and their parsing (pure: no ctypes, no I/O).

The model validates ``security.capabilities.*`` values with :func:`parse_names`, the OCI
rendering spells them with :func:`oci_name`. Numbers are the kernel's (linux/capability.h);
:data:`sysmgr._util.linux.CAPABILITIES` is this table, for the syscall wrappers.
"""

from __future__ import annotations

#: Capability names in kernel order (index = number), lower case without ``cap_``.
NAMES: tuple[str, ...] = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
NUMBERS: dict[str, int] = {n: i for i, n in enumerate(NAMES)}


def canonical(name: str) -> str:
    """``"CAP_SYSLOG"``, ``" syslog "`` -> ``"syslog"`` (not checked)."""
    return name.strip().lower().removeprefix("cap_")


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list (``"dac_read_search, CAP_SYSLOG"``) -> canonical names in
    kernel order, without duplicates; empty for ``""``.

    Raises:
        ValueError: naming the first unknown capability.
    """
    names = {canonical(p) for p in value.split(",") if p.strip()}
    unknown = sorted(n for n in names if n not in NUMBERS)
    if unknown:
        raise ValueError(f"unknown capability {unknown[0]!r} (known: chown, dac_override, ... "
                         f"checkpoint_restore; see capabilities(7))")
    return tuple(sorted(names, key=NUMBERS.__getitem__))


def oci_name(name: str) -> str:
    """``"syslog"`` -> ``"CAP_SYSLOG"``."""
    return "CAP_" + canonical(name).upper()


def mask(names: tuple[str, ...] | list[str]) -> int:
    """Bit mask of capability names (OCI or plain spelling).

    Raises:
        ValueError: an unknown name.
    """
    bits = 0
    for n in names:
        num = NUMBERS.get(canonical(n))
        if num is None:
            raise ValueError(f"unknown capability {n!r}")
        bits |= 1 << num
    return bits
