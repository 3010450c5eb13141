"""A seccomp deny-list as data, its OCI ``linux.seccomp`` form, and a classic-BPF assembler
for it (pure: no I/O, no ctypes; loading the program is :func:`sysmgr._util.linux.seccomp_filter`).

Why our own assembler and not libseccomp (``pyseccomp``): the filter is a short deny list
(about fifteen comparisons per architecture), so a hundred lines of Python replace a C library
and a PyPI package, the output is deterministic bytes a golden test compares byte for byte,
and the runtime assembles it once in the caller: the forked children only hand the bytes to
``prctl``.

The program, for each supported architecture (``seccomp_data.arch``):

- x86_64: the native table; x32 calls (``nr >= 0x40000000``) fail with ENOSYS, as on a
  kernel without x32 (this host's), so their different numbers cannot bypass the list;
- i386 (``int 0x80`` or 32-bit binaries on an x86_64 host): its own numbers;
- aarch64: the asm-generic numbers;
- any other architecture (e.g. arm32 compat on arm64) is killed (SECCOMP_RET_KILL_PROCESS):
  a table we cannot check is a table that could be bypassed.

All three are little-endian, so an argument's low 32 bits sit at ``16 + 8*index``. Argument
checks only ever look at those low 32 bits: ``ioctl``'s ``cmd`` and ``umount2``'s ``flags``
are 32-bit in the kernel, which ignores the upper half an attacker could set
(CVE-2019-10063 in flatpak compared 64 bits).

**Not expressible**: seccomp sees syscall numbers and argument *values*, never the strings
pointers point to, so "no ``mount``/``umount`` of ``/proc`` or ``/sys`` paths" cannot be a
seccomp rule. What stops a container remounting them is the user namespace (kernel's
``mount_too_revealing``), not this filter. An unprivileged container's filter denies no
``mount`` flag: systemd in a container legitimately mounts tmpfs, binds, remounts and moves
mounts; only ``umount2`` with ``MNT_FORCE`` goes (LXC's ``reject_force_umount``:
``umount_begin`` acts on the superblock, which a bind mount shares with the host). A
privileged container, which has no user namespace to lock its mounts, gets
:data:`PRIVILEGED_RULES` on top.
"""

from __future__ import annotations

import errno
import functools
import struct
from typing import Any, Iterable, Mapping, NamedTuple

# -- kernel constants (linux/seccomp.h, linux/filter.h, linux/audit.h) -------------------------

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

BPF_LD_W_ABS = 0x20       # A = seccomp_data[k] (32 bits)
BPF_ALU_AND_K = 0x54      # A &= k
BPF_JEQ_K = 0x15          # pc += (A == k) ? jt : jf
BPF_JGE_K = 0x35          # pc += (A >= k) ? jt : jf
BPF_RET_K = 0x06          # return k

OFF_NR, OFF_ARCH = 0, 4   # offsetof(struct seccomp_data, nr / arch)

TIOCSTI = 0x5412          # push a byte into a terminal's input queue
TIOCLINUX = 0x541C        # VT selection/paste: the same "type into a terminal" (CVE-2023-1523)
MNT_FORCE = 1
MS_REMOUNT, MS_BIND = 0x20, 0x1000

#: Syscall numbers per architecture, for every syscall a rule may name (checked against the
#: kernel headers by tests/unit/test_seccomp.py). ``None``: the arch has no such syscall.
SYSCALLS: dict[str, dict[str, int | None]] = {
    #                   x86_64 (unistd_64.h)  i386 (unistd_32.h)  aarch64 (asm-generic)
    "ioctl":             {"x86_64": 16,  "i386": 54,  "aarch64": 29},
    "umount2":           {"x86_64": 166, "i386": 52,  "aarch64": 39},
    "kexec_load":        {"x86_64": 246, "i386": 283, "aarch64": 104},
    "kexec_file_load":   {"x86_64": 320, "i386": None, "aarch64": 294},
    "init_module":       {"x86_64": 175, "i386": 128, "aarch64": 105},
    "finit_module":      {"x86_64": 313, "i386": 350, "aarch64": 273},
    "delete_module":     {"x86_64": 176, "i386": 129, "aarch64": 106},
    "open_by_handle_at": {"x86_64": 304, "i386": 342, "aarch64": 265},
    "keyctl":            {"x86_64": 250, "i386": 288, "aarch64": 219},
    "add_key":           {"x86_64": 248, "i386": 286, "aarch64": 217},
    "request_key":       {"x86_64": 249, "i386": 287, "aarch64": 218},
    "bpf":               {"x86_64": 321, "i386": 357, "aarch64": 280},
    "perf_event_open":   {"x86_64": 298, "i386": 336, "aarch64": 241},
    "umount":            {"x86_64": None, "i386": 22, "aarch64": None},
    "mount":             {"x86_64": 165, "i386": 21,  "aarch64": 40},
    # the mount API of Linux 5.2+: one number on every architecture
    "open_tree":         {"x86_64": 428, "i386": 428, "aarch64": 428},
    "move_mount":        {"x86_64": 429, "i386": 429, "aarch64": 429},
    "fsopen":            {"x86_64": 430, "i386": 430, "aarch64": 430},
    "fsconfig":          {"x86_64": 431, "i386": 431, "aarch64": 431},
    "fsmount":           {"x86_64": 432, "i386": 432, "aarch64": 432},
    "fspick":            {"x86_64": 433, "i386": 433, "aarch64": 433},
    "mount_setattr":     {"x86_64": 442, "i386": 442, "aarch64": 442},
}
#: Architectures in the order the program tests them: (name, AUDIT_ARCH, OCI name).
ARCHES: tuple[tuple[str, int, str], ...] = (
    ("x86_64", AUDIT_ARCH_X86_64, "SCMP_ARCH_X86_64"),
    ("i386", AUDIT_ARCH_I386, "SCMP_ARCH_X86"),
    ("aarch64", AUDIT_ARCH_AARCH64, "SCMP_ARCH_AARCH64"),
)


class Rule(NamedTuple):
    """Fail ``name`` with ``errno`` (when ``arg`` is given: only if the argument matches).

    ``arg`` is ``(index, mask, value)``: the rule applies when ``(low 32 bits of
    args[index]) & mask == value`` (OCI's ``SCMP_CMP_MASKED_EQ``).
    """

    name: str
    errno: int = errno.EPERM
    arg: tuple[int, int, int] | None = None


_EPERM = errno.EPERM
#: The default for every container (issue 9, point 2): LXC/LXD's default list (kexec,
#: open_by_handle_at, module loading, reject_force_umount), the kernel keyring (not
#: namespaced: shares host root's keys), bpf and perf (host-wide kernel state), and typing
#: into a terminal.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("kexec_load"), Rule("kexec_file_load"),           # replace the host kernel (CAP_SYS_BOOT is kept)
    Rule("open_by_handle_at"),                              # "shocker": any host file by handle
    Rule("init_module"), Rule("finit_module"), Rule("delete_module"),
    Rule("keyctl"), Rule("add_key"), Rule("request_key"),   # host root's user keyring
    Rule("bpf"), Rule("perf_event_open"),
    Rule("ioctl", _EPERM, (1, 0xFFFFFFFF, TIOCSTI)),
    Rule("ioctl", _EPERM, (1, 0xFFFFFFFF, TIOCLINUX)),
    Rule("umount2", _EPERM, (1, MNT_FORCE, MNT_FORCE)),
)
#: A privileged container (no user namespace) also gets these: without a user namespace
#: nothing locks the read-only and masked paths over /proc and /sys, so it may not unmount
#: anything (which would reveal the originals), nor remount a superblock (``mount -o
#: remount,ro /`` would make the host's pool read-only: escape row 9). The mount API of 5.2+
#: (open_tree, move_mount, fsopen, mount_setattr, ...) can do the same without the flags this
#: filter sees, so it fails with ENOSYS and callers (systemd, util-linux) fall back to
#: mount(2). Not denied, because systemd needs them (its credentials and service sandboxes
#: break): ``MS_MOVE`` and propagation changes. What seccomp cannot see or may not deny (a
#: fresh ``mount -t proc``, a bind-remount read-write, moving a mount away) only an LSM
#: stops: a privileged container is root-unsafe without one, as in LXC.
PRIVILEGED_RULES: tuple[Rule, ...] = DEFAULT_RULES + (
    Rule("umount2"), Rule("umount"),
    Rule("mount", _EPERM, (3, MS_REMOUNT | MS_BIND, MS_REMOUNT)),
) + tuple(Rule(n, errno.ENOSYS) for n in ("open_tree", "move_mount", "fsopen", "fsconfig",
                                          "fsmount", "fspick", "mount_setattr"))


def rules_for(privileged: bool) -> tuple[Rule, ...]:
    return PRIVILEGED_RULES if privileged else DEFAULT_RULES


# -- the assembler ------------------------------------------------------------------------------

class _Asm:
    """Instructions with symbolic jump targets, resolved by :meth:`bytes`."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | None, str | None, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def op(self, code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self.code.append((code, jt, jf, k))

    def bytes(self) -> bytes:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            out.append(struct.pack("=HBBI", code, self._off(pc, jt), self._off(pc, jf), k))
        return b"".join(out)

    def _off(self, pc: int, label: str | None) -> int:
        if label is None:
            return 0
        off = self.labels[label] - pc - 1
        if not 0 <= off <= 255:  # classic BPF: conditional jumps are forward, 8 bits
            raise ValueError(f"seccomp program too long: jump to {label} is {off} instructions")
        return off


def _ret(e: int) -> str:
    return f"ret_errno_{e}"


def _arch_block(asm: _Asm, arch: str, rules: tuple[Rule, ...]) -> None:
    """Compare ``nr`` against this arch's numbers; argument checks in blocks of their own."""
    asm.label(arch)
    asm.op(BPF_LD_W_ABS, OFF_NR)
    if arch == "x86_64":
        asm.op(BPF_JGE_K, X32_SYSCALL_BIT, jt=_ret(errno.ENOSYS))
    plain = {r.name: r.errno for r in rules if r.arg is None}
    checked: dict[str, list[Rule]] = {}
    for r in rules:
        if r.arg is not None and r.name not in plain:  # an unconditional rule wins
            checked.setdefault(r.name, []).append(r)
    for name, e in plain.items():
        nr = SYSCALLS[name][arch]
        if nr is not None:
            asm.op(BPF_JEQ_K, nr, jt=_ret(e))
    blocks = [(name, SYSCALLS[name][arch]) for name in checked]
    for name, nr in blocks:
        if nr is not None:
            asm.op(BPF_JEQ_K, nr, jt=f"{arch}_{name}")
    asm.op(BPF_RET_K, SECCOMP_RET_ALLOW)
    for name, nr in blocks:
        if nr is None:
            continue
        asm.label(f"{arch}_{name}")
        for r in checked[name]:
            index, mask, value = r.arg  # type: ignore[misc]
            asm.op(BPF_LD_W_ABS, 16 + 8 * index)  # the low 32 bits (little-endian)
            if mask != 0xFFFFFFFF:
                asm.op(BPF_ALU_AND_K, mask)
            asm.op(BPF_JEQ_K, value, jt=_ret(r.errno))
        asm.op(BPF_RET_K, SECCOMP_RET_ALLOW)


@functools.lru_cache(maxsize=8)
def assemble(rules: tuple[Rule, ...] = DEFAULT_RULES) -> bytes:
    """The ``struct sock_filter`` array (8 bytes per instruction) for ``rules``.

    Raises:
        ValueError: a rule names a syscall missing from :data:`SYSCALLS`, or a bad argument.
    """
    for r in rules:
        if r.name not in SYSCALLS:
            raise ValueError(f"unknown syscall {r.name!r} (not in the seccomp syscall table)")
        if r.arg is not None and not (0 <= r.arg[0] <= 5 and 0 <= r.arg[1] <= 0xFFFFFFFF
                                      and r.arg[2] & ~r.arg[1] == 0):
            raise ValueError(f"unsupported argument check for {r.name}: {r.arg}")
    asm = _Asm()
    asm.op(BPF_LD_W_ABS, OFF_ARCH)
    for name, audit_arch, _ in ARCHES:
        asm.op(BPF_JEQ_K, audit_arch, jt=name)
    asm.op(BPF_RET_K, SECCOMP_RET_KILL_PROCESS)
    for name, _, _ in ARCHES:
        _arch_block(asm, name, rules)
    # the shared returns, after every block: conditional jumps only go forward
    for e in sorted({r.errno for r in rules} | {errno.ENOSYS}):
        asm.label(_ret(e))
        asm.op(BPF_RET_K, SECCOMP_RET_ERRNO | e)
    return asm.bytes()


def count_rules(rules: Iterable[Rule] = DEFAULT_RULES) -> int:
    """How many (syscall, condition) rules the list has (for ``sysmgr info``)."""
    return len(tuple(rules))


# -- the OCI form (linux.seccomp) ---------------------------------------------------------------

def to_oci(rules: tuple[Rule, ...] = DEFAULT_RULES) -> dict[str, Any]:
    """OCI ``linux.seccomp`` for ``rules`` (runc/crun enforce the same with libseccomp; the
    32-bit argument compare is a MASKED_EQ with mask 0xffffffff, so they ignore the upper
    half as the kernel does)."""
    plain: dict[int, list[str]] = {}
    for r in rules:
        if r.arg is None:
            plain.setdefault(r.errno, []).append(r.name)
    syscalls: list[dict[str, Any]] = [
        {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": e} for e, names in plain.items()
    ]
    for r in rules:
        if r.arg is not None:
            index, mask, value = r.arg
            syscalls.append({"names": [r.name], "action": "SCMP_ACT_ERRNO", "errnoRet": r.errno,
                             "args": [{"index": index, "value": mask, "valueTwo": value,
                                       "op": "SCMP_CMP_MASKED_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [oci for _, _, oci in ARCHES],
            "syscalls": syscalls}


def from_oci(section: Mapping[str, Any]) -> tuple[Rule, ...]:
    """Inverse of :func:`to_oci`, for the subset it renders (a bundle from elsewhere with
    other actions or operators is refused: we would enforce something else than it says).

    Raises:
        ValueError: naming the unsupported part.
    """
    if section.get("defaultAction") != "SCMP_ACT_ALLOW":
        raise ValueError(f"linux.seccomp.defaultAction {section.get('defaultAction')!r}: "
                         "only SCMP_ACT_ALLOW (a deny list) is supported")
    rules: list[Rule] = []
    for entry in section.get("syscalls") or ():
        if entry.get("action") != "SCMP_ACT_ERRNO":
            raise ValueError(f"linux.seccomp action {entry.get('action')!r}: only SCMP_ACT_ERRNO")
        e = int(entry.get("errnoRet", errno.EPERM))
        args = entry.get("args") or ()
        if len(args) > 1 or any(a.get("op") != "SCMP_CMP_MASKED_EQ" or
                                int(a.get("value", 0)) > 0xFFFFFFFF for a in args):
            raise ValueError("linux.seccomp args: only one 32-bit SCMP_CMP_MASKED_EQ per rule")
        arg = None
        if args:
            arg = (int(args[0]["index"]), int(args[0]["value"]), int(args[0].get("valueTwo", 0)))
        rules.extend(Rule(name, e, arg) for name in entry.get("names") or ())
    return tuple(rules)
