"""User namespaces of the native runtime: what starter A does before it joins one.

An unprivileged container's namespaces are all owned by its user namespace, and its root
filesystem is an idmapped mount, so files stay on disk with container ids (0 is root) and
nothing is chowned (where the filesystem cannot idmap, the engine has shifted the files on
disk once and the plan says so: the rootfs is then bound plainly). The order matters and is the reason for this module (A runs it as host
root, in the container's cgroups):

1. ``unshare(CLONE_NEWNS)``: a private mount namespace M1, still owned by the host.
2. :func:`make_userns`: a throwaway child U unshares a user namespace, A writes its maps,
   keeps an fd of it, U exits.
3. :func:`stage`: a tmpfs over :data:`STAGE_PARENT` in M1 (so the staging paths have no 0700
   parents the container's root could not walk), the rootfs bound there through an idmapped
   mount, and beside it what B binds in from the host (the console log, device nodes, which a
   user namespace cannot ``mknod``, and the disks, :mod:`.binds`). M1 is private: the host
   sees none of this.
4. (B finds them at the staged paths: bind sources must be mounts of B's own namespace.)
5. :func:`become_root`: ``setns`` into the user namespace, root in it.

Then A unshares the other namespaces (the new mount namespace M2 is owned by the user
namespace, and the mounts copied from M1 are locked: the container cannot unmount them to
reveal what is beneath), and B binds the staged rootfs onto itself, mounts /proc, /sys and /dev
while the host's are still visible in M2 (the kernel requires that in a user namespace),
pivots into it and detaches the rest.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence, TypeVar

from sysmgr._util import linux
from sysmgr.drivers.runtime.native import binds, helper

STAGE_PARENT = "/tmp"                   # any directory every host has; covered in M1 only
STAGE = STAGE_PARENT + "/sysmgr-rootfs"
SOURCES = STAGE_PARENT + "/sysmgr-sources"
BINDS = STAGE_PARENT + "/sysmgr-binds"

IdLines = Sequence[tuple[int, int, int]]
T = TypeVar("T")


def map_text(lines: IdLines) -> str:
    return "".join(f"{ns} {host} {n}\n" for ns, host, n in lines)


def make_userns(uid_map: IdLines, gid_map: IdLines) -> int:
    """A new user namespace with these maps; returns an fd of it (the caller closes it)."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # U: only creates the namespace and waits
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise OSError("the user namespace helper died")
        for name, lines in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(map_text(lines))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)  # U reads EOF and exits
        os.waitpid(pid, 0)


def stage(rootfs: str, userns_fd: int, sources: Iterable[str], *, idmap: bool = True,
          trees: Sequence[int] = ()) -> tuple[str, dict[str, str], list[str]]:
    """The rootfs, idmapped through ``userns_fd``, at :data:`STAGE`, each host file in
    ``sources`` (the console log, device nodes) bound under :data:`SOURCES`, and each detached
    mount in ``trees`` (the disks, :func:`.binds.set_attrs` done) moved under :data:`BINDS`, all
    in a private mount namespace of the caller's. Returns the staged rootfs, ``{source:
    staged path}`` and the staged path of each tree, in order.

    Everything is opened before the tmpfs goes over :data:`STAGE_PARENT`, which may cover
    their own paths (a root under /tmp); the binds are made from ``/proc/self/fd/N`` of those
    fds (a bind's source must be a mount of the caller's own namespace, as these are). The
    trees come out *locked* in the namespace the container's root owns (the kernel locks
    every mount it copies into a less privileged one): a read-only disk stays read-only.

    ``idmap`` False: the rootfs's files were shifted on disk to the container's host ids (a
    filesystem that cannot idmap, see :mod:`sysmgr.engine.idshift`): bound as it is."""
    tree = linux.open_tree(rootfs)
    fds: dict[str, int] = {}
    try:
        # the pool's host mount is nosuid,nodev (no host user may use what is in a volume);
        # inside, the root is the container's whole OS and its setuid programs must work.
        # Cleared here, by host root: in the user namespace these flags are locked.
        linux.mount_setattr_idmap(tree, userns_fd if idmap else None,
                                  clear=linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV)
        for p in sources:
            if p not in fds and os.path.exists(p):
                fds[p] = os.open(p, os.O_PATH | os.O_CLOEXEC)
        linux.mount("tmpfs", STAGE_PARENT, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0755,size=64k")
        os.mkdir(STAGE, 0o755)
        linux.move_mount(tree, STAGE)
        os.mkdir(SOURCES, 0o755)
        staged = {}
        for i, (p, fd) in enumerate(sorted(fds.items())):
            target = f"{SOURCES}/{i}"
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND)
            staged[p] = target
        return STAGE, staged, [binds.park(t, BINDS, i) for i, t in enumerate(trees)]
    finally:
        os.close(tree)
        for fd in fds.values():
            os.close(fd)


def become_root(userns_fd: int) -> None:
    """Join the user namespace and be its root (all capabilities in it, none outside)."""
    linux.setns(userns_fd, linux.CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def delegate(dirs: Iterable[str], uid: int, gid: int) -> None:
    """Give the container's root the cgroup directories its init manages (systemd creates
    sub-cgroups and moves processes there): the directory and the files that let it do so."""
    for d in dirs:
        if not os.path.isdir(d):
            continue
        os.chown(d, uid, gid)
        for f in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks"):
            path = os.path.join(d, f)
            if os.path.exists(path):
                os.chown(path, uid, gid)


def own_userns(pid: int) -> bool:
    """Whether process ``pid`` lives in a user namespace other than ours."""
    return os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino


def call_as_root_of(pid: int, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a forked, non-dumpable child (:func:`.helper.in_helper`) that joined the
    user namespace of ``pid`` as its root; return its result or raise its exception. It
    keeps the host's mount namespace, so ``/proc/PID/root`` paths still resolve."""
    ns_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)

    def as_root() -> T:
        become_root(ns_fd)
        return fn()

    try:
        return helper.in_helper(as_root, what=f"the helper in the user namespace of pid {pid}")
    finally:
        os.close(ns_fd)
