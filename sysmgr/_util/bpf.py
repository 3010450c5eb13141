"""eBPF cgroup-device programs through bpf(2): load, attach to a cgroup, query.

Only what the cgroup-v2 device policy needs (:mod:`sysmgr._util.device_bpf` assembles the
program). Errors are translated here, where they enter: a program the verifier refuses
becomes a :class:`DriverError` carrying the verifier's own reason (the load is retried with
the log on, so a good program costs no log buffer).

Lifetimes: a program lives while something holds it. The fd of a load is closed when its
``with`` block ends; attached to a cgroup, the program stays with the cgroup (the kernel
holds it) and goes when the cgroup is removed. Attaching uses ``BPF_F_ALLOW_MULTI``: the
kernel then keeps our program in the effective list of every cgroup below, next to any
program attached there later (a nested cgroup's adds to ours, never replaces it: only an
ancestor attached *without* the flag drops out once a descendant has its own), and an
access passes only when every program on the list allows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
from typing import Iterator

from sysmgr._util import linux
from sysmgr.errors import DriverError

# linux/bpf.h
BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_QUERY = 5, 8, 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6                # attach type
BPF_F_ALLOW_MULTI = 1 << 1           # attach flag
BPF_F_QUERY_EFFECTIVE = 1 << 0       # query flag: the programs that run, ancestors' included
BPF_LOG_LEVEL1, BPF_LOG_STATS = 1, 4

PROG_NAME = b"sysmgr_devices"        # what bpftool prog shows (at most 15 bytes)
_ATTR_SIZE = 128                     # of union bpf_attr we fill; the kernel zero-fills the rest
_LOG_SIZE = 1 << 18                  # 256 KiB: a refused program's log, or the stats line
_MAX_IDS = 64


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _attr(data: bytes) -> ctypes.Array:  # type: ignore[type-arg]
    return ctypes.create_string_buffer(data, _ATTR_SIZE)


def _prog_load(insns: bytes, log: ctypes.Array | None, log_level: int) -> int:  # type: ignore[type-arg]
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack(
        "<IIQQIIQII16sII",
        BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8, ctypes.addressof(code), ctypes.addressof(lic),
        log_level if log is not None else 0, len(log) if log is not None else 0,
        ctypes.addressof(log) if log is not None else 0,
        0, 0, PROG_NAME, 0, BPF_CGROUP_DEVICE,  # kern_version, prog_flags, name, ifindex, expected
    )
    return linux.bpf(BPF_PROG_LOAD, _attr(attr))


_STATS = ("processed ", "verification time", "stack depth")


def _reason(log: bytes) -> str:
    """The verifier's last words, where it says why (before them it replays the program;
    after them come its statistics)."""
    text = log.split(b"\0", 1)[0].decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(_STATS)]
    return "; ".join(lines[-2:]) or "no verifier log"


@contextlib.contextmanager
def load(insns: bytes) -> Iterator[int]:
    """Load ``insns`` as a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program; yield its fd (closed
    when the block ends).

    Raises:
        DriverError: the kernel refused it (the verifier's reason in the message), or
            bpf(2) is not there or not allowed.
    """
    if not insns or len(insns) % 8:
        raise DriverError(f"a BPF program is a whole number of 8-byte instructions, not {len(insns)} bytes")
    try:
        fd = _prog_load(insns, None, 0)
    except OSError as first:
        if first.errno in (errno.ENOSYS, errno.EPERM):
            raise DriverError(f"cannot load the cgroup device program: {os.strerror(first.errno or 0)} "
                              "(needs bpf(2) and CAP_SYS_ADMIN or CAP_BPF)") from first
        log = ctypes.create_string_buffer(_LOG_SIZE)
        try:  # again, with the log: why it was refused
            fd = _prog_load(insns, log, BPF_LOG_LEVEL1)
        except OSError as e:
            raise DriverError(f"the kernel refused the cgroup device program ({os.strerror(e.errno or 0)}): "
                              f"{_reason(log.raw)}") from e
    with _fd(fd):
        yield fd


def verifier_stats(insns: bytes) -> str:
    """Load ``insns`` with ``BPF_LOG_STATS`` and unload it: the verifier's summary line
    (``processed N insns (limit 1000000) ...``), for tests and reports."""
    log = ctypes.create_string_buffer(_LOG_SIZE)
    try:
        fd = _prog_load(insns, log, BPF_LOG_STATS)
    except OSError as e:
        raise DriverError(f"the kernel refused the program: {_reason(log.raw)}") from e
    os.close(fd)
    return log.raw.split(b"\0", 1)[0].decode(errors="replace").strip()


@contextlib.contextmanager
def _cgroup_fd(cgroup_dir: str) -> Iterator[int]:
    try:
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise DriverError(f"cannot open cgroup {cgroup_dir}: {e.strerror}") from e
    with _fd(fd):
        yield fd


def attach_device_program(cgroup_dir: str, insns: bytes) -> None:
    """Load ``insns`` and attach it to the cgroup at ``cgroup_dir`` (``BPF_F_ALLOW_MULTI``).

    Both fds are closed on return; the program stays attached for the cgroup's lifetime.

    Raises:
        DriverError: the load or the attach failed (naming the reason).
    """
    with _cgroup_fd(cgroup_dir) as cg, load(insns) as prog:
        attr = struct.pack("<IIIII", cg, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0)
        try:
            linux.bpf(BPF_PROG_ATTACH, _attr(attr))
        except OSError as e:
            raise DriverError(f"cannot attach the device policy to cgroup {cgroup_dir}: "
                              f"{os.strerror(e.errno or 0)}") from e


def device_programs(cgroup_dir: str, effective: bool = False) -> tuple[int, ...]:
    """Ids of the device programs attached to ``cgroup_dir`` (``effective``: those that run
    for it, its ancestors' included)."""
    ids = (ctypes.c_uint32 * _MAX_IDS)()
    with _cgroup_fd(cgroup_dir) as cg:
        attr = _attr(struct.pack("<IIIIQI", cg, BPF_CGROUP_DEVICE, BPF_F_QUERY_EFFECTIVE if effective else 0,
                                 0, ctypes.addressof(ids), _MAX_IDS))
        try:
            linux.bpf(BPF_PROG_QUERY, attr)
        except OSError as e:
            raise DriverError(f"cannot query the device programs of cgroup {cgroup_dir}: "
                              f"{os.strerror(e.errno or 0)}") from e
    count = struct.unpack_from("<I", attr, 24)[0]
    return tuple(ids[:min(count, _MAX_IDS)])
