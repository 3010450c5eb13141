"""The cgroup device policy as a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program (pure: no I/O, no
ctypes; loading and attaching it is :mod:`sysmgr._util.bpf`).

cgroup v1 has ``devices.allow``/``devices.deny``; cgroup v2 has no such files: the kernel
runs eBPF programs attached to the cgroup (and to its ancestors) on every device open and
``mknod``, and the access is refused unless all of them return 1. The rules stay in their v1
form (``(allow, "c 1:3 rwm")``, as :func:`sysmgr.drivers.runtime.bundle.device_rules` and
``V1Cgroup`` use them), so one list means the same on both versions:

1. :func:`policy` replays the rules the way the v1 kernel does (``devcgroup_update_access``):
   a rule of type ``a`` resets the default (allow or deny everything) and clears the
   exceptions; a ``b``/``c`` rule that goes against the default adds an exception (merging
   the access of one with the same type, major and minor), one that goes with it takes its
   access away from such an exception. The start state is *deny everything* (runc and crun
   start there too): a list that does not open with an ``a`` rule cannot allow by omission.
   In v1 a new cgroup starts with its parent's rules instead; sysmgr's lists (and OCI
   bundles rendered by it) always open with ``deny a``, where both agree.
2. :func:`assemble` turns the resulting :class:`Policy` into eBPF: one block per exception,
   each returning the opposite of the default, then the default. Matching is the kernel's:
   against a deny-by-default, an exception allows only when it grants *every* access bit
   asked (``match_exception``); against an allow-by-default, an exception denies as soon as
   it names *any* bit asked (``match_exception_partial``). Exceptions never overlap in
   verdict, so their order in the program does not matter.

Why our own assembler (as for seccomp): a program of a few dozen instructions, deterministic
bytes a golden test compares, no compiler, libbpf or Python package at run time.

The context (``struct bpf_cgroup_dev_ctx``, linux/bpf.h) is three u32: ``access_type`` (the
device type in the low 16 bits: :data:`DEV_BLOCK`, :data:`DEV_CHAR`; the access in the high
16: :data:`ACC_MKNOD`, :data:`ACC_READ`, :data:`ACC_WRITE`), ``major``, ``minor``. Majors and
minors are compared as 32-bit values (``BPF_JMP32``, kernel >= 5.1).
"""

from __future__ import annotations

import re
import struct
from typing import Iterable, NamedTuple

# -- the context and its values (linux/bpf.h) ---------------------------------------------------

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
CTX_ACCESS_TYPE, CTX_MAJOR, CTX_MINOR = 0, 4, 8  # offsets in struct bpf_cgroup_dev_ctx

_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
ANY = None  # ``*`` as a major or minor

# -- eBPF opcodes (linux/bpf_common.h, linux/bpf.h): class | op | source -------------------------

LDX_MEM_W = 0x61     # dst = *(u32 *)(src + off)
ALU32_AND_K = 0x54   # (u32) dst &= imm
ALU32_RSH_K = 0x74   # (u32) dst >>= imm
MOV64_K = 0xB7       # dst = imm
JMP32_JNE_K = 0x56   # if (u32) dst != imm: pc += off
JMP32_JSET_K = 0x46  # if (u32) dst & imm: pc += off
JMP_JA = 0x05        # pc += off
JMP_EXIT = 0x95      # return r0

# registers: r1 = the context on entry; the prologue loads these once
R_CTX, R_TYPE, R_ACCESS, R_MAJOR, R_MINOR, R_RET = 1, 2, 3, 4, 5, 0

_RULE = re.compile(r"([bc]) (\*|[0-9]+):(\*|[0-9]+) ([rwm]{1,3})")
_U32_MAX = 0xFFFFFFFF


class ExceptionEntry(NamedTuple):
    """One exception to the default: device ``kind`` (:data:`DEV_BLOCK`/:data:`DEV_CHAR`),
    ``major``/``minor`` (``None`` = any), ``access`` (``ACC_*`` bits)."""

    kind: int
    major: int | None
    minor: int | None
    access: int

    def key(self) -> tuple[int, int | None, int | None]:
        return (self.kind, self.major, self.minor)

    def matches(self, kind: int, major: int, minor: int) -> bool:
        return (self.kind == kind and self.major in (None, major)
                and self.minor in (None, minor))


class Policy(NamedTuple):
    """The state a v1 devices cgroup would be in: a default and its exceptions."""

    default_allow: bool
    exceptions: tuple[ExceptionEntry, ...]

    def allows(self, kind: int, major: int, minor: int, access: int) -> bool:
        """The v1 kernel's verdict (``devcgroup_legacy_check_permission``)."""
        hits = [e for e in self.exceptions if e.matches(kind, major, minor)]
        if self.default_allow:
            return not any(access & e.access for e in hits)
        return any(not access & ~e.access for e in hits)


def _number(text: str, rule: str) -> int | None:
    if text == "*":
        return ANY
    value = int(text)
    if value >= _U32_MAX:  # the kernel reads ~0 as "*"; nothing real is that large
        raise ValueError(f"device rule {rule!r}: {text} is not a device number")
    return value


def parse_rule(rule: str) -> ExceptionEntry | None:
    """``"c 1:3 rwm"`` -> an exception; ``None`` for an ``a`` rule (all devices: whatever
    follows the ``a`` is ignored, as by the v1 kernel).

    Raises:
        ValueError: the rule is not ``a`` or ``TYPE MAJOR:MINOR ACCESS``.
    """
    if rule.startswith("a"):
        return None
    m = _RULE.fullmatch(rule)
    if not m:
        raise ValueError(f"invalid device rule {rule!r}: expected 'a' or 'b|c MAJOR:MINOR "
                         "ACCESS' (MAJOR/MINOR a number or *, ACCESS of r, w, m)")
    access = 0
    for ch in m.group(4):
        access |= _ACCESS[ch]
    return ExceptionEntry(_TYPES[m.group(1)], _number(m.group(2), rule), _number(m.group(3), rule), access)


def _add(excs: list[ExceptionEntry], ex: ExceptionEntry) -> None:
    """``dev_exception_add``: merge into the exception with the same key, or append."""
    for i, e in enumerate(excs):
        if e.key() == ex.key():
            excs[i] = e._replace(access=e.access | ex.access)
            return
    excs.append(ex)


def _remove(excs: list[ExceptionEntry], ex: ExceptionEntry) -> None:
    """``dev_exception_rm``: take the access bits away from the same key; drop it when none is left."""
    for i, e in enumerate(excs):
        if e.key() == ex.key():
            left = e.access & ~ex.access
            if left:
                excs[i] = e._replace(access=left)
            else:
                del excs[i]
            return


def policy(rules: Iterable[tuple[bool, str]]) -> Policy:
    """Replay ``(allow, rule)`` pairs in order from *deny everything* (see the module doc).

    Raises:
        ValueError: a rule that does not parse.
    """
    default_allow = False
    excs: list[ExceptionEntry] = []
    for allow, text in rules:
        ex = parse_rule(text)
        if ex is None:
            default_allow, excs = allow, []
        elif allow != default_allow:
            _add(excs, ex)
        else:
            _remove(excs, ex)
    return Policy(default_allow, tuple(excs))


# -- the assembler ------------------------------------------------------------------------------

class _Asm:
    """eBPF instructions with symbolic forward jumps (``to``), resolved by :meth:`bytes`."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, int, int, int, str | None]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def op(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
           to: str | None = None) -> None:
        self.code.append((code, dst, src, off, imm, to))

    def bytes(self) -> bytes:
        out = []
        for pc, (code, dst, src, off, imm, to) in enumerate(self.code):
            if to is not None:
                off = self.labels[to] - pc - 1
            imm = imm - (1 << 32) if imm > 0x7FFFFFFF else imm  # a u32 bit pattern as s32
            out.append(struct.pack("<BBhi", code, (src << 4) | dst, off, imm))
        return b"".join(out)


def _block(asm: _Asm, n: int, ex: ExceptionEntry, verdict: int) -> None:
    """Return ``verdict`` when the request matches exception ``ex``; else go on at ``next{n}``."""
    nxt = f"next{n}"
    asm.op(JMP32_JNE_K, R_TYPE, imm=ex.kind, to=nxt)
    if ex.major is not None:
        asm.op(JMP32_JNE_K, R_MAJOR, imm=ex.major, to=nxt)
    if ex.minor is not None:
        asm.op(JMP32_JNE_K, R_MINOR, imm=ex.minor, to=nxt)
    if verdict:  # an allow: every bit asked must be granted (none outside ex.access)
        asm.op(JMP32_JSET_K, R_ACCESS, imm=~ex.access & 0xFFFF, to=nxt)
    else:        # a deny: any bit asked that it names
        asm.op(JMP32_JSET_K, R_ACCESS, imm=ex.access, to=f"hit{n}")
        asm.op(JMP_JA, to=nxt)
        asm.label(f"hit{n}")
    asm.op(MOV64_K, R_RET, imm=verdict)
    asm.op(JMP_EXIT)
    asm.label(nxt)


def assemble(rules: Iterable[tuple[bool, str]]) -> bytes:
    """The ``struct bpf_insn`` array (8 bytes each) enforcing ``rules`` (see the module doc).

    Raises:
        ValueError: a rule that does not parse.
    """
    pol = policy(rules)
    asm = _Asm()
    # the prologue: split access_type, load major and minor, once
    asm.op(LDX_MEM_W, R_TYPE, R_CTX, off=CTX_ACCESS_TYPE)
    asm.op(ALU32_AND_K, R_TYPE, imm=0xFFFF)
    asm.op(LDX_MEM_W, R_ACCESS, R_CTX, off=CTX_ACCESS_TYPE)
    asm.op(ALU32_RSH_K, R_ACCESS, imm=16)
    asm.op(LDX_MEM_W, R_MAJOR, R_CTX, off=CTX_MAJOR)
    asm.op(LDX_MEM_W, R_MINOR, R_CTX, off=CTX_MINOR)
    verdict = 0 if pol.default_allow else 1
    for n, ex in enumerate(pol.exceptions):
        _block(asm, n, ex, verdict)
    asm.op(MOV64_K, R_RET, imm=1 - verdict)
    asm.op(JMP_EXIT)
    return asm.bytes()
