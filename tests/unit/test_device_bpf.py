"""The cgroup-v2 device policy: the assembled eBPF program instruction by instruction
(golden), the v1 semantics of a rule list (a hand-written table), a small interpreter of the
program's bytes that must agree with both, and the kernel itself: the verifier, and a real
cgroup2 directory (``/sys/fs/cgroup/unified`` on this hybrid host) where a forked child is
refused the devices the program does not allow.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import stat
import struct
import time
from typing import Iterator, Sequence

import pytest

from sysmgr._util import bpf, device_bpf, linux
from sysmgr._util.device_bpf import ACC_MKNOD as M, ACC_READ as R, ACC_WRITE as W, DEV_BLOCK, DEV_CHAR
from sysmgr.drivers.runtime.cgroup_layout import detect_layout
from sysmgr.drivers.runtime.cgroups import CGROUP_ROOT, DEFAULT_DEVICE_RULES
from sysmgr.errors import DriverError
from tests.conftest import in_forked_child

Rules = Sequence[tuple[bool, str]]

# -- a disassembler and an interpreter of what the assembler emits ------------------------------

_OPS = {0x61: "ldxw", 0x54: "and32", 0x74: "rsh32", 0xB7: "mov", 0x56: "jne32", 0x46: "jset32",
        0x05: "ja", 0x95: "exit"}


def _insns(program: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(pc, code, dst, src, off, imm) per 8-byte ``struct bpf_insn``."""
    for pc in range(len(program) // 8):
        code, regs, off, imm = struct.unpack("<BBhi", program[pc * 8:pc * 8 + 8])
        yield pc, code, regs & 0xF, regs >> 4, off, imm


def disassemble(program: bytes) -> list[str]:
    lines = []
    for pc, code, dst, src, off, imm in _insns(program):
        name = _OPS[code]
        if code == 0x61:
            text = f"{name} r{dst}, [r{src}{off:+d}]"
        elif code in (0x54, 0x74, 0xB7):
            text = f"{name} r{dst}, {imm:#x}"
        elif code in (0x56, 0x46):
            text = f"{name} r{dst}, {imm & 0xFFFFFFFF:#x}, -> {pc + 1 + off}"
        elif code == 0x05:
            text = f"{name} -> {pc + 1 + off}"
        else:
            text = name
        lines.append(f"{pc:2d}: {text}")
    return lines


def run(program: bytes, kind: int, major: int, minor: int, access: int) -> int:
    """Execute ``program`` on a ``struct bpf_cgroup_dev_ctx`` as the kernel would; r0 at exit."""
    ctx = struct.pack("<III", access << 16 | kind, major, minor)
    code_ = list(_insns(program))
    regs = [0] * 11
    pc = 0
    while True:
        _, code, dst, src, off, imm = code_[pc]  # IndexError: ran off the end
        u32 = imm & 0xFFFFFFFF
        jump = False
        if code == 0x61:
            assert src == 1, "loads only from the context"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = regs[dst] & u32
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xB7:
            regs[dst] = imm & 0xFFFFFFFFFFFFFFFF
        elif code == 0x56:
            jump = regs[dst] & 0xFFFFFFFF != u32
        elif code == 0x46:
            jump = bool(regs[dst] & u32)
        elif code == 0x05:
            jump = True
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"opcode {code:#x} at {pc}")
        assert off >= 0 or not jump, "jumps only go forward: the program ends"
        pc += 1 + (off if jump else 0)


# -- golden ------------------------------------------------------------------------------------

#: what every program starts with: access_type split into type (r2) and access (r3)
PROLOGUE = """\
 0: ldxw r2, [r1+0]
 1: and32 r2, 0xffff
 2: ldxw r3, [r1+0]
 3: rsh32 r3, 0x10
 4: ldxw r4, [r1+4]
 5: ldxw r5, [r1+8]
"""
SMALL: Rules = [(False, "a"), (True, "c 1:3 rwm"), (True, "c 136:* rw"), (False, "c 1:3 m")]
SMALL_LISTING = PROLOGUE + """\
 6: jne32 r2, 0x2, -> 12
 7: jne32 r4, 0x1, -> 12
 8: jne32 r5, 0x3, -> 12
 9: jset32 r3, 0xfff9, -> 12
10: mov r0, 0x1
11: exit
12: jne32 r2, 0x2, -> 17
13: jne32 r4, 0x88, -> 17
14: jset32 r3, 0xfff9, -> 17
15: mov r0, 0x1
16: exit
17: mov r0, 0x0
18: exit
"""
SMALL_HEX = (
    "6112000000000000" "54020000ffff0000" "6113000000000000" "7403000010000000"
    "6114040000000000" "6115080000000000" "5602050002000000" "5604040001000000"
    "5605030003000000" "46030200f9ff0000" "b700000001000000" "9500000000000000"
    "5602040002000000" "5604030088000000" "46030200f9ff0000" "b700000001000000"
    "9500000000000000" "b700000000000000" "9500000000000000"
)
ALLOW_DEFAULT_LISTING = PROLOGUE + """\
 6: jne32 r2, 0x1, -> 11
 7: jset32 r3, 0x1, -> 9
 8: ja -> 11
 9: mov r0, 0x0
10: exit
11: mov r0, 0x1
12: exit
"""


def test_small_program_byte_for_byte() -> None:
    # "c 1:3 m" against a deny-by-default takes mknod away from the 1:3 exception: rw is left
    program = device_bpf.assemble(SMALL)
    assert program.hex() == SMALL_HEX
    assert "\n".join(disassemble(program)) + "\n" == SMALL_LISTING


def test_allow_by_default_program() -> None:
    # any block device: a deny as soon as mknod is among what is asked
    program = device_bpf.assemble([(True, "a"), (False, "b *:* m")])
    assert "\n".join(disassemble(program)) + "\n" == ALLOW_DEFAULT_LISTING


def test_default_rules_program_shape() -> None:
    lines = disassemble(device_bpf.assemble(DEFAULT_DEVICE_RULES))
    assert len(lines) == 61  # prologue 6, eight 6-instruction blocks, 136:* in 5, the deny 2
    assert lines[-2:] == ["59: mov r0, 0x0", "60: exit"]
    assert sum(line.endswith("mov r0, 0x1") for line in lines) == 9


# -- v1 semantics --------------------------------------------------------------------------------

DEFAULT = DEFAULT_DEVICE_RULES
ONLY_NULL_READ: Rules = [(False, "a"), (True, "c 1:3 r")]
MERGED: Rules = [(False, "a"), (True, "c 1:3 r"), (True, "c 1:3 w")]
TAKEN: Rules = [(False, "a"), (True, "c 1:* rwm"), (False, "c 1:* w")]
NOT_SAME_KEY: Rules = [(False, "a"), (True, "c 1:* rwm"), (False, "c 1:5 rwm")]
ALLOW_ALL_BUT: Rules = [(True, "a"), (False, "c 1:5 w"), (False, "b *:* rwm")]
GIVEN_BACK: Rules = [(True, "a"), (False, "c 1:3 rwm"), (True, "c 1:3 r")]
RESET: Rules = [(True, "c 1:3 rwm"), (False, "a"), (True, "c 1:5 r")]
NO_A_FIRST: Rules = [(True, "c 1:3 rwm")]
ALL_TEXT: Rules = [(False, "a *:* rwm"), (True, "c *:* m")]

C, B = DEV_CHAR, DEV_BLOCK
#: (rules, type, major, minor, access, allowed?) as the v1 kernel decides
TABLE = [
    (DEFAULT, C, 1, 3, R | W, True), (DEFAULT, C, 1, 3, M, True), (DEFAULT, C, 5, 1, W, True),
    (DEFAULT, C, 136, 7, R | W, True), (DEFAULT, C, 1, 4, R, False),     # /dev/port
    (DEFAULT, B, 1, 3, R, False), (DEFAULT, C, 10, 237, R, False),        # same numbers, block; loop-control
    (DEFAULT, B, 7, 0, M, False), (DEFAULT, C, 4, 0, W, False),           # a loop disk; tty0
    (ONLY_NULL_READ, C, 1, 3, R, True), (ONLY_NULL_READ, C, 1, 3, R | W, False),  # all of it, or no
    (ONLY_NULL_READ, C, 1, 3, W, False),
    (MERGED, C, 1, 3, R | W, True), (MERGED, C, 1, 3, M, False),
    (TAKEN, C, 1, 5, R | M, True), (TAKEN, C, 1, 5, W, False), (TAKEN, C, 1, 5, R | W, False),
    (NOT_SAME_KEY, C, 1, 5, R, True),  # v1 removes only an exception with the same key
    (ALLOW_ALL_BUT, C, 1, 5, R, True), (ALLOW_ALL_BUT, C, 1, 5, R | W, False),  # any overlap denies
    (ALLOW_ALL_BUT, B, 8, 0, R, False), (ALLOW_ALL_BUT, C, 10, 237, R | W | M, True),
    (GIVEN_BACK, C, 1, 3, R, True), (GIVEN_BACK, C, 1, 3, R | W, False),
    (RESET, C, 1, 3, R, False), (RESET, C, 1, 5, R, True),
    (NO_A_FIRST, C, 1, 3, R, True), (NO_A_FIRST, C, 1, 5, R, False),    # starts from deny-all
    (ALL_TEXT, C, 7, 9, M, True), (ALL_TEXT, C, 7, 9, R, False),
]


@pytest.mark.parametrize("rules,kind,major,minor,access,allowed", TABLE)
def test_v1_semantics_table(rules: Rules, kind: int, major: int, minor: int, access: int, allowed: bool) -> None:
    assert device_bpf.policy(rules).allows(kind, major, minor, access) is allowed
    assert run(device_bpf.assemble(rules), kind, major, minor, access) == int(allowed)


@pytest.mark.parametrize("rules", [DEFAULT, ONLY_NULL_READ, MERGED, TAKEN, NOT_SAME_KEY, ALLOW_ALL_BUT,
                                   GIVEN_BACK, RESET, NO_A_FIRST, ALL_TEXT, SMALL])
def test_program_agrees_with_the_policy_everywhere(rules: Rules) -> None:
    program = device_bpf.assemble(rules)
    pol = device_bpf.policy(rules)
    for kind, major, minor, access in itertools.product(
            (B, C), (0, 1, 5, 136, 0xFFFFFFFE), (0, 3, 5, 7, 0x80000000), range(1, 8)):
        assert run(program, kind, major, minor, access) == int(pol.allows(kind, major, minor, access)), \
            (kind, major, minor, access)


def test_a_large_number_is_compared_as_32_bits() -> None:
    program = device_bpf.assemble([(False, "a"), (True, "c 4294967294:2147483648 r")])
    assert run(program, C, 0xFFFFFFFE, 0x80000000, R) == 1
    assert run(program, C, 0xFFFFFFFE, 0x7FFFFFFF, R) == 0


@pytest.mark.parametrize("bad", ["", "x 1:3 rwm", "c 1:3", "c 1:3 rwx", "c 1-3 rwm", "c  1:3 rwm",
                                 "c a:3 r", "c 4294967295:1 r", "c 1:3 rwmr"])
def test_bad_rules_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="device"):
        device_bpf.assemble([(False, "a"), (True, bad)])


# -- the kernel -----------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) program loads need root")


@needs_root
def test_the_verifier_accepts_the_default_program() -> None:
    program = device_bpf.assemble(DEFAULT_DEVICE_RULES)
    stats = bpf.verifier_stats(program)
    processed = int(stats.split("processed ", 1)[1].split()[0])
    assert processed >= len(program) // 8, stats
    print(f"default device program: {len(program) // 8} instructions; verifier: {stats.splitlines()[-1]}")


@needs_root
@pytest.mark.parametrize("insns,reason", [
    ("9500000000000000", "R0 !read_ok"),                      # exit without a verdict
    ("b700000001000000", "last insn is not an exit or jmp"),  # no exit at all
    ("61120c0000000000" "b700000001000000" "9500000000000000", "invalid bpf_context access"),
])
def test_a_refused_program_names_the_verifiers_reason(insns: str, reason: str) -> None:
    with pytest.raises(DriverError, match=f"refused the cgroup device program .*{reason}"):
        with bpf.load(bytes.fromhex(insns)):
            pass


def _cgroup2_root() -> str:
    layout = detect_layout()
    if layout.kind == "unified" and not layout.systemd:
        return CGROUP_ROOT
    if layout.kind == "hybrid":
        return os.path.join(CGROUP_ROOT, "unified")
    pytest.skip(f"no cgroup2 tree of our own here ({layout.kind} layout)")


@contextlib.contextmanager
def cgroup2(name: str) -> Iterator[str]:
    path = os.path.join(_cgroup2_root(), f"sysmgr-{name}")
    os.mkdir(path)
    try:
        yield path
    finally:
        for sub, _, _ in os.walk(path, topdown=False):
            os.rmdir(sub)


def in_cgroup(cgroup_dir: str, ops: list[tuple]) -> list[str]:
    """Fork a child, move it into ``cgroup_dir``, run ``ops`` there: ``("open", path, flags)``
    or ``("mknod", path, mode, major, minor)``; each gives ``ok`` or the errno's name."""
    def child() -> list[str]:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        out = []
        for op in ops:
            try:
                if op[0] == "open":
                    os.close(os.open(op[1], op[2] | os.O_NONBLOCK | os.O_CLOEXEC))
                else:
                    os.mknod(op[1], op[2], os.makedev(op[3], op[4]))
                out.append("ok")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
        return out

    return in_forked_child(child)


def _loop0() -> str:
    if not os.path.exists("/dev/loop0") or not stat.S_ISBLK(os.stat("/dev/loop0").st_mode):
        pytest.skip("no /dev/loop0 here")
    return "/dev/loop0"


#: (rules, [(op, expected in the child)]): for real, against the hand-written verdicts
KERNEL_RULES: Rules = [(False, "a"), (True, "c 1:3 rwm"), (True, "c 1:5 r"), (True, "c 1:* m"),
                       (True, "b 7:0 r")]


def _kernel_ops(tmp: str, loop: str) -> list[tuple[tuple, str, tuple[int, int, int, int]]]:
    """(op, expected, the (type, major, minor, access) the kernel asks about) for
    :data:`KERNEL_RULES`."""
    chr_, blk = stat.S_IFCHR | 0o600, stat.S_IFBLK | 0o600
    ma, mi = os.major(os.stat(loop).st_rdev), os.minor(os.stat(loop).st_rdev)
    return [
        (("open", "/dev/null", os.O_RDWR), "ok", (C, 1, 3, R | W)),
        (("open", "/dev/zero", os.O_RDONLY), "ok", (C, 1, 5, R)),
        (("open", "/dev/zero", os.O_WRONLY), "EPERM", (C, 1, 5, W)),
        (("open", "/dev/zero", os.O_RDWR), "EPERM", (C, 1, 5, R | W)),  # r is not enough for rw
        (("open", "/dev/full", os.O_RDONLY), "EPERM", (C, 1, 7, R)),
        (("mknod", f"{tmp}/zero", chr_, 1, 5), "ok", (C, 1, 5, M)),     # c 1:* m
        (("mknod", f"{tmp}/loopctl", chr_, 10, 237), "EPERM", (C, 10, 237, M)),
        (("open", loop, os.O_RDONLY), "ok", (B, ma, mi, R)),
        (("open", loop, os.O_WRONLY), "EPERM", (B, ma, mi, W)),
        (("mknod", f"{tmp}/loop", blk, ma, mi), "EPERM", (B, ma, mi, M)),
    ]


@needs_root
def test_the_kernel_enforces_the_program_in_a_real_cgroup(tmp_path) -> None:
    cases = _kernel_ops(str(tmp_path), _loop0())
    pol = device_bpf.policy(KERNEL_RULES)
    for op, want, asked in cases:  # the hand-written verdicts are the v1 semantics
        assert pol.allows(*asked) is (want == "ok"), op
    with cgroup2(f"bpftest{os.getpid()}") as cg:
        assert in_cgroup(cg, [op for op, _, _ in cases if op[0] == "open"]) == ["ok"] * 7  # no program yet
        bpf.attach_device_program(cg, device_bpf.assemble(KERNEL_RULES))
        ours = bpf.device_programs(cg)
        assert len(ours) == 1  # attached, and stays with the cgroup once our fds are closed
        assert in_cgroup(cg, [op for op, _, _ in cases]) == [want for _, want, _ in cases]
        # a nested cgroup's allow-everything program adds to ours, it does not replace it
        nested = os.path.join(cg, "nested")
        os.mkdir(nested)
        bpf.attach_device_program(nested, device_bpf.assemble([(True, "a")]))
        effective = bpf.device_programs(nested, effective=True)
        assert len(effective) == 2 and ours[0] in effective
        assert in_cgroup(nested, [("open", "/dev/full", os.O_RDONLY), ("open", "/dev/null", os.O_RDWR)]) \
            == ["EPERM", "ok"]
    assert not _prog_alive(ours[0], wait=True)  # it went with the cgroup


def _prog_alive(prog_id: int, wait: bool = False) -> bool:
    """Whether program ``prog_id`` still exists (BPF_PROG_GET_FD_BY_ID); with ``wait``, give
    the kernel's deferred cgroup release its time, polling."""
    for _ in range(500 if wait else 1):
        attr = ctypes.create_string_buffer(struct.pack("<I", prog_id), 128)
        try:
            os.close(linux.bpf(13, attr))
        except OSError as e:
            assert e.errno == errno.ENOENT, e
            return False
        time.sleep(0.01)
    return True
