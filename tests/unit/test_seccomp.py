"""The seccomp deny list: the assembled program byte for byte (golden file), the syscall
numbers per architecture against the kernel headers, and the filter loaded for real in a
forked child (no_new_privs: no root needed).

Regenerate the golden program after an intended change with ``SYSMGR_REGEN_GOLDEN=1`` and
review ``tests/unit/golden/seccomp_default.txt`` (one disassembled instruction per line).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import struct
import termios

import pytest

from sysmgr._util import capabilities, linux, seccomp
from tests.conftest import in_forked_child

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
HEADERS = {
    "x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    "i386": "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
    "aarch64": "/usr/include/asm-generic/unistd.h",
}
_NAMES = {0x20: "ld", 0x54: "and", 0x15: "jeq", 0x35: "jge", 0x06: "ret"}


def disassemble(program: bytes) -> list[str]:
    """One line per instruction: ``pc: op k jt jf`` (a readable golden, compared exactly)."""
    lines = []
    for pc in range(len(program) // 8):
        code, jt, jf, k = struct.unpack("=HBBI", program[pc * 8:pc * 8 + 8])
        lines.append(f"{pc:3d}: {_NAMES.get(code, hex(code)):4s} {k:#010x} {jt} {jf}")
    return lines


def test_default_program_matches_golden() -> None:
    program = seccomp.assemble()
    text = "\n".join(disassemble(program)) + "\n"
    path = os.path.join(GOLDEN, "seccomp_default.txt")
    bin_path = os.path.join(GOLDEN, "seccomp_default.bpf")
    if os.environ.get("SYSMGR_REGEN_GOLDEN"):
        with open(path, "w") as f:
            f.write(text)
        with open(bin_path, "wb") as f:
            f.write(program)
    with open(bin_path, "rb") as f:
        assert program == f.read()  # byte for byte
    with open(path) as f:
        assert text == f.read()


def test_program_shape() -> None:
    lines = disassemble(seccomp.assemble())
    assert lines[0].split()[1:3] == ["ld", "0x00000004"]  # the arch first
    # an unknown arch is killed, x32 gets ENOSYS, denied calls EPERM
    rets = {line.split()[2] for line in lines if line.split()[1] == "ret"}
    assert {"0x80000000", "0x7fff0000", f"{0x50000 | errno.EPERM:#010x}",
            f"{0x50000 | errno.ENOSYS:#010x}"} <= rets


def _header_numbers(path: str) -> dict[str, int]:
    nums = {}
    with open(path) as f:
        for m in re.finditer(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", f.read()):
            nums.setdefault(m.group(1), int(m.group(2)))
    return nums


@pytest.mark.parametrize("arch", sorted(HEADERS))
def test_every_denied_syscall_has_the_kernels_number(arch: str) -> None:
    if not os.path.exists(HEADERS[arch]):
        pytest.skip(f"{HEADERS[arch]} is not installed (linux-libc-dev)")
    want = _header_numbers(HEADERS[arch])
    for rule in seccomp.DEFAULT_RULES:
        assert seccomp.SYSCALLS[rule.name][arch] == want.get(rule.name), (arch, rule.name)


def test_oci_round_trip_and_refusals() -> None:
    assert seccomp.from_oci(seccomp.to_oci()) == seccomp.DEFAULT_RULES
    with pytest.raises(ValueError, match="defaultAction"):
        seccomp.from_oci({"defaultAction": "SCMP_ACT_ERRNO"})
    with pytest.raises(ValueError, match="only SCMP_ACT_ERRNO"):
        seccomp.from_oci({"defaultAction": "SCMP_ACT_ALLOW",
                          "syscalls": [{"names": ["x"], "action": "SCMP_ACT_KILL"}]})
    with pytest.raises(ValueError, match="unknown syscall"):
        seccomp.assemble((seccomp.Rule("reboot"),))


def test_capability_tables_agree() -> None:
    assert capabilities.NUMBERS == linux.CAPABILITIES
    assert capabilities.parse_names(" CAP_SYSLOG,dac_read_search,syslog") == ("dac_read_search", "syslog")
    with pytest.raises(ValueError, match="unknown capability 'bogus'"):
        capabilities.parse_names("chown,bogus")


def _in_filtered_child(checks, rules=seccomp.DEFAULT_RULES) -> dict[str, int]:
    """Run ``checks(libc)`` -> {name: errno or 0} in a forked child under the filter."""
    def child() -> dict[str, int]:
        linux.set_no_new_privs()
        linux.seccomp_filter(seccomp.assemble(rules))
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return checks(libc)

    return in_forked_child(child)


def _errno_of(ret: int) -> int:
    return ctypes.get_errno() if ret < 0 else 0


def _checks(libc: ctypes.CDLL) -> dict[str, int]:
    out = {}
    fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    out["keyctl"] = _errno_of(libc.syscall(250, 0, 0, 0, 0, 0))  # KEYCTL_GET_KEYRING_ID
    out["add_key"] = _errno_of(libc.syscall(248, b"user", b"x", b"y", 1, -3))
    out["open_by_handle_at"] = _errno_of(libc.syscall(304, -100, None, 0))
    out["bpf"] = _errno_of(libc.syscall(321, 0, None, 0))
    out["tiocsti"] = _errno_of(libc.syscall(16, fd, termios.TIOCSTI, b"x"))
    high = ctypes.c_ulong(1 << 32 | termios.TIOCSTI)  # the kernel ignores the upper half
    out["tiocsti_high_bits"] = _errno_of(libc.syscall(16, fd, high, b"x"))
    out["umount_force"] = _errno_of(libc.syscall(166, b"/nonexistent", 1))
    out["umount_plain"] = _errno_of(libc.syscall(166, b"/nonexistent", 0))
    try:
        fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        out["tcgets"] = 0
    except OSError as e:
        out["tcgets"] = e.errno
    out["getpid"] = 0 if os.getpid() > 0 else 1
    return out


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the raw syscall numbers are x86_64's")
def test_filter_denies_in_a_real_child() -> None:
    res = _in_filtered_child(_checks)
    for name in ("keyctl", "add_key", "open_by_handle_at", "bpf", "tiocsti", "tiocsti_high_bits",
                 "umount_force"):
        assert res[name] == errno.EPERM, (name, res)
    assert res["tcgets"] == 0 and res["getpid"] == 0
    if os.geteuid() == 0:  # without MNT_FORCE the call reaches the kernel (and its own checks)
        assert res["umount_plain"] == errno.ENOENT


def _mount_checks(libc: ctypes.CDLL) -> dict[str, int]:
    nowhere = b"/nonexistent-sysmgr"
    return {
        "umount2": _errno_of(libc.syscall(166, nowhere, 0)),
        "remount_sb": _errno_of(libc.syscall(165, None, nowhere, None, ctypes.c_ulong(0x20), None)),
        "remount_sb_high": _errno_of(libc.syscall(165, None, nowhere, None,
                                                  ctypes.c_ulong(1 << 32 | 0x20), None)),
        "remount_bind": _errno_of(libc.syscall(165, None, nowhere, None, ctypes.c_ulong(0x1020), None)),
        "bind": _errno_of(libc.syscall(165, nowhere, nowhere, None, ctypes.c_ulong(0x1000), None)),
        "open_tree": _errno_of(libc.syscall(428, -100, nowhere, 1)),
        "fsopen": _errno_of(libc.syscall(430, b"proc", 0)),
        "mount_setattr": _errno_of(libc.syscall(442, -100, nowhere, 0, None, 0)),
    }


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the raw syscall numbers are x86_64's")
def test_privileged_rules_keep_mounts_and_superblocks() -> None:
    res = _in_filtered_child(_mount_checks, seccomp.PRIVILEGED_RULES)
    assert res["umount2"] == res["remount_sb"] == res["remount_sb_high"] == errno.EPERM, res
    assert res["open_tree"] == res["fsopen"] == res["mount_setattr"] == errno.ENOSYS, res
    if os.geteuid() == 0:  # bind mounts and bind-remounts reach the kernel (ENOENT)
        assert res["remount_bind"] == res["bind"] == errno.ENOENT, res
    default = _in_filtered_child(_mount_checks)  # an unprivileged container's filter: none of it
    assert errno.EPERM not in default.values() and errno.ENOSYS not in default.values(), default
