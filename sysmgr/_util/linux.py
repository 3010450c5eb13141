"""Thin ctypes wrappers for the Linux syscalls Python 3.11 does not expose.

Namespaces (``unshare``, ``setns``), mounts (``mount``, ``umount2``, ``pivot_root``, the
new mount API for idmapped mounts), ``sethostname``, a few ``prctl`` helpers, readers of
``/proc/PID/stat``, and raw ``bpf`` (:mod:`sysmgr._util.bpf` builds its arguments). libc is
loaded once, at import (by soname: ``ctypes.util.find_library`` would spawn ``ldconfig``); a
failing call raises ``OSError`` with the real errno, so callers translate it to a sysmgr
error at their own boundary. Nothing here imports sysmgr but the pure capability table
(:mod:`sysmgr._util.capabilities`).

These functions are also called in forked children between ``fork`` and ``execve``: they
must stay allocation-light and must not take locks or import modules.
"""

from __future__ import annotations

import ctypes
import os
import struct

from sysmgr._util import capabilities

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - non-glibc systems
    import ctypes.util

    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

_c_ulong = ctypes.c_ulong
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, _c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, _c_ulong, _c_ulong, _c_ulong, _c_ulong]
_libc.syscall.restype = ctypes.c_long
# the same libc's syscall(), called with the GIL held: for clone3, whose child must not start
# with the GIL released by a thread it does not have
_syscall_gil = ctypes.PyDLL(_libc._name, use_errno=True).syscall
_syscall_gil.restype = ctypes.c_long

# -- constants --------------------------------------------------------------------------------

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: /proc/PID/ns/<name> -> CLONE_* flag
NS_FLAGS = {
    "cgroup": CLONE_NEWCGROUP, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET,
    "pid": CLONE_NEWPID, "mnt": CLONE_NEWNS, "user": CLONE_NEWUSER, "time": CLONE_NEWTIME,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_FORCE = 1
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38

#: Capability name (lower case, no ``cap_`` prefix) -> number (the one table: _util.capabilities).
CAPABILITIES: dict[str, int] = capabilities.NUMBERS
CAP_NUMBERS: dict[int, str] = {v: k for k, v in CAPABILITIES.items()}

# syscalls glibc 2.36 may not wrap; numbers of the new mount API are the same on every arch
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH, AT_RECURSIVE = -100, 0x100, 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR_IDMAP = 0x00100000
UMOUNT_NOFOLLOW = 8


def _check(ret: int, what: str = "", path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}" if what else os.strerror(err), path)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


# -- namespaces -------------------------------------------------------------------------------

def unshare(flags: int) -> None:
    """unshare(2). CLONE_NEWPID/NEWTIME apply to children created afterwards."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) into the namespace open at ``fd`` (a /proc/PID/ns/* file)."""
    _check(_libc.setns(fd, nstype), "setns")


# -- fork into a cgroup ----------------------------------------------------------------------

CLONE_INTO_CGROUP = 0x200000000
_SYS_CLONE3 = 435  # the same number on every architecture (the generic syscall table)


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, 88 bytes)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def single_threaded() -> bool:
    """Whether this process has one thread (the only kind :func:`fork_into_cgroup` may fork:
    no other thread can hold a libc lock the child would inherit taken)."""
    return len(os.listdir("/proc/self/task")) == 1


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``os.fork()`` whose child is born in the cgroup2 directory ``cgroup_fd``: clone3 with
    CLONE_INTO_CGROUP (Linux 5.7), as systemd and LXC fork into a unit or a container.

    Only from a single-threaded process (:func:`single_threaded`): clone3 goes around libc's
    fork, so libc's own fork handlers do not run. The interpreter's do, as ``os.fork`` runs
    them, and the call holds the GIL throughout (``ctypes.pythonapi`` does not release it).
    Raises OSError where clone3 cannot (ENOSYS before 5.7, EBUSY into a cgroup with
    controllers for its children); the caller then forks and migrates as before."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _syscall_gil(_SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    err = ctypes.get_errno()
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return pid


# -- mounts -----------------------------------------------------------------------------------

def mount(source: str | bytes | None, target: str | bytes, fstype: str | bytes | None = None,
          flags: int = 0, data: str | bytes | None = None) -> None:
    """mount(2); ``target`` names the failing path in the raised OSError."""
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if ret < 0:
        _check(ret, "mount", os.fsdecode(target))


def umount2(target: str | bytes, flags: int = 0) -> None:
    ret = _libc.umount2(_b(target), flags)
    if ret < 0:
        _check(ret, "umount", os.fsdecode(target))


def pivot_root(new_root: str | bytes, put_old: str | bytes) -> None:
    """pivot_root(2); ``pivot_root(".", ".")`` then ``umount2(".", MNT_DETACH)`` needs no put_old dir."""
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) -> int:
    """open_tree(2): a detached copy of the mount at ``path`` (returns an fd)."""
    return _check(_libc.syscall(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_uint(flags)),
                  "open_tree")


def mount_setattr(tree_fd: int, *, attr_set: int = 0, attr_clr: int = 0, propagation: int = 0,
                  userns_fd: int | None = None, recursive: bool = False) -> None:
    """mount_setattr(2) on the mount (tree with ``recursive``) open at ``tree_fd``: set and
    clear ``MOUNT_ATTR_*`` flags, change its propagation (one ``MS_PRIVATE``/``MS_SLAVE``/
    ``MS_SHARED``/``MS_UNBINDABLE``, 0: leave it) and, with ``userns_fd``, idmap it through
    that user namespace (a detached tree only)."""
    if userns_fd is not None:
        attr_set |= MOUNT_ATTR_IDMAP
    attr = ctypes.create_string_buffer(
        struct.pack("QQQQ", attr_set, attr_clr, propagation, userns_fd or 0), 32)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_int(tree_fd), b"", ctypes.c_uint(flags), attr,
                         ctypes.c_size_t(32)), "mount_setattr")


def mount_setattr_idmap(tree_fd: int, userns_fd: int | None, recursive: bool = False,
                        clear: int = 0) -> None:
    """mount_setattr(2) with MOUNT_ATTR_IDMAP: map the detached tree through a user namespace
    (and clear the ``MOUNT_ATTR_*`` flags in ``clear``); ``userns_fd`` None: only clear them
    (a root filesystem whose files were shifted on disk is bound as it is)."""
    mount_setattr(tree_fd, attr_clr=clear, userns_fd=userns_fd, recursive=recursive)


def move_mount(tree_fd: int, target: str) -> None:
    """move_mount(2) of a detached tree (from :func:`open_tree`) onto ``target``."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(tree_fd), b"", ctypes.c_int(AT_FDCWD), _b(target),
                         ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), "move_mount")


def move_mount_fd(tree_fd: int, target_fd: int) -> None:
    """move_mount(2) of a detached tree onto what ``target_fd`` (an ``O_PATH`` fd) is: no
    path is looked up again, so nothing can swap a symlink in between."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, ctypes.c_int(tree_fd), b"", ctypes.c_int(target_fd), b"",
                         ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)),
           "move_mount")


_STATX_MNT_ID, _STATX_MNT_ID_UNIQUE = 0x1000, 0x4000
_STATX_SIZE, _STATX_MNT_ID_OFFSET = 256, 0x90


def mount_id(path: str) -> int:
    """statx(2)'s id of the mount ``path`` is on (not following a last symlink): the unique
    one (Linux 6.8+, never reused) where the kernel has it, else the reusable one."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    _check(_libc.statx(ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_int(AT_SYMLINK_NOFOLLOW),
                       ctypes.c_uint(_STATX_MNT_ID | _STATX_MNT_ID_UNIQUE), buf), "statx", path)
    return int(struct.unpack_from("=Q", buf.raw, _STATX_MNT_ID_OFFSET)[0])


def idmapped_bind(src: str, dst: str, userns_fd: int, recursive: bool = False) -> None:
    """Bind ``src`` onto ``dst`` with ids shifted through the user ns at ``userns_fd``.

    PLATFORM item 1: works on ext4, btrfs and tmpfs; nothing is rewritten on disk.
    """
    fd = open_tree(src)
    try:
        mount_setattr_idmap(fd, userns_fd, recursive)
        move_mount(fd, dst)
    finally:
        os.close(fd)


# -- identity and process attributes -----------------------------------------------------------

def sethostname(name: str | bytes) -> None:
    raw = _b(name) or b""
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def capbset_drop(cap: int) -> None:
    """Drop ``cap`` from the calling thread's bounding set (needs CAP_SETPCAP)."""
    prctl(PR_CAPBSET_DROP, cap)


def capbset_read(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def malloc_trim() -> None:
    """Return free heap memory to the system (glibc's ``malloc_trim(0)``; a no-op elsewhere)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def set_child_subreaper(on: bool = True) -> None:
    """Make the calling process a child subreaper: orphaned descendants (container inits
    whose starter exited) are reparented to it, so it can reap them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def is_child_subreaper() -> bool:
    val = ctypes.c_int(0)
    _check(_libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(val), 0, 0, 0), "prctl")
    return bool(val.value)


def set_pdeathsig(sig: int) -> None:
    """Have the kernel send ``sig`` to the caller when its parent (thread) dies."""
    prctl(PR_SET_PDEATHSIG, sig)


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (readable once the process exited); raises ProcessLookupError."""
    return os.pidfd_open(pid)


def cap_last_cap() -> int:
    """Highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAP_NUMBERS)


# -- /proc readers ----------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; the comm may contain spaces and ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rfind(b")") + 2:].decode().split()


def proc_starttime(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (field 22), or None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def proc_state(pid: int) -> str | None:
    """One-letter state of ``pid`` (``R``, ``S``, ``D``, ``Z``...), or None if it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def proc_status_field(pid: int, key: str) -> str | None:
    """Value of ``key`` in /proc/PID/status (e.g. ``CapBnd``, ``NoNewPrivs``), or None."""
    prefix = key + ":"
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# -- capability sets and seccomp (called by the children right before execve) ----------------

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPGET, _SYS_CAPSET = {"x86_64": (125, 126), "aarch64": (90, 91)}.get(os.uname().machine, (125, 126))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_filter(program: bytes) -> None:
    """Install the classic-BPF ``program`` (``struct sock_filter`` array) as this thread's
    seccomp filter; inherited by children and kept across execve. Needs no_new_privs or
    CAP_SYS_ADMIN."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")


def capget() -> tuple[int, int, int]:
    """capget(2) of the calling thread: ``(effective, permitted, inheritable)`` masks."""
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)
    _check(_libc.syscall(_SYS_CAPGET, header, data), "capget")
    e0, p0, i0, e1, p1, i1 = struct.unpack("=6I", data.raw)
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of the calling thread's three sets (64-bit masks, two 32-bit words each)."""
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    lo, hi = 0xFFFFFFFF, 32
    data = struct.pack("=6I", effective & lo, permitted & lo, inheritable & lo,
                       effective >> hi & lo, permitted >> hi & lo, inheritable >> hi & lo)
    _check(_libc.syscall(_SYS_CAPSET, header, data), "capset")


def set_ambient_caps(mask: int) -> None:
    """Make the ambient set exactly ``mask`` (each cap must be permitted and inheritable)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(mask.bit_length()):
        if mask >> cap & 1:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


# -- bpf ----------------------------------------------------------------------------------------

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)


def bpf(cmd: int, attr: ctypes.Array) -> int:  # type: ignore[type-arg]
    """bpf(2) ``cmd`` with ``attr``, a ``union bpf_attr`` buffer (the kernel may write into
    it: a query's counts, a load's verifier log through the pointer it holds)."""
    return _check(_libc.syscall(SYS_BPF, ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))), "bpf")


# -- AppArmor (the label of a process; the profile of the next execve) -------------------------

def apparmor_label(pid: int) -> str:
    """The AppArmor profile ``pid`` runs under (``"name"`` of ``"name (enforce)"``), or ``""``
    when it is unconfined or the kernel has no AppArmor. ``attr/apparmor/`` (Linux 5.8+) is
    AppArmor's own; the shared ``attr/current`` is read only where AppArmor is the active LSM
    (older kernels, where no other major LSM can run beside it)."""
    paths = [f"/proc/{pid}/attr/apparmor/current"]
    if os.path.isdir("/sys/kernel/security/apparmor"):
        paths.append(f"/proc/{pid}/attr/current")
    for path in paths:
        try:
            with open(path) as f:
                label = f.read().strip("\0\n ")
        except FileNotFoundError:
            continue
        except OSError:  # EINVAL: AppArmor built in but not enabled; ESRCH: pid gone
            return ""
        name = label.rsplit(" (", 1)[0] if label.endswith(")") else label
        return "" if name == "unconfined" else name
    return ""


def apparmor_exec_open() -> int:
    """This process's "profile of the next execve" file, opened for writing (the caller
    closes it). Opened while /proc is still the host's: a process that joined a container's
    mount namespace but not its pid namespace has no /proc/self there."""
    try:
        return os.open("/proc/self/attr/apparmor/exec", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # before Linux 5.8: the shared file (AppArmor was the only LSM)
        return os.open("/proc/self/attr/exec", os.O_WRONLY | os.O_CLOEXEC)


def apparmor_exec(profile: str, fd: int = -1) -> None:
    """Make the next execve of this process switch to the AppArmor ``profile`` (which must be
    loaded): nothing before the exec is confined, everything after it is. Allowed to any
    unconfined process, root of a user namespace included. ``fd``: from
    :func:`apparmor_exec_open` of this same process (else it is opened here)."""
    own = fd < 0
    if own:
        fd = apparmor_exec_open()
    try:
        os.write(fd, b"exec " + profile.encode())
    finally:
        if own:
            os.close(fd)
