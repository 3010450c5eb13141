"""Render a :class:`RuntimeSpec` as an OCI runtime-spec ``config.json`` (pure, no I/O).

The bundle is the runtime's input: the native driver writes it to ``<runtime_dir>/config.json``
and starts the container from the rendered data, so another OCI runtime (crun, runc) could run
the same bundle. Values follow LXC's choices for a privileged system container: init as the
process, the full capability set minus LXC's default drop list and the drops of issue 9
(:data:`DEFAULT_DROPPED`, every OCI capability set explicit and equal), sysmgr's seccomp deny
list (:mod:`sysmgr._util.seccomp`), all namespaces but user (unless an id map is given), a
tmpfs ``/dev`` with the standard nodes, a device allow list, and ``/dev/console`` bound to the
regular file :data:`~sysmgr.drivers.runtime.base.CONSOLE_LOG` on the container's own volume.

The inverse helpers (:func:`limits_from_resources`, :func:`device_rules`, :func:`mount_flags`,
:func:`signal_name`) let consumers read the bundle back without knowing the spec.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Mapping, Sequence

from sysmgr._util import capabilities, seccomp
from sysmgr.drivers.runtime.base import CONSOLE_LOG, DiskMount, Limits, RuntimeSpec

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ANNOTATION_HALT_SIGNAL = "org.sysmgr.halt-signal"
ANNOTATION_NAME = "org.sysmgr.name"
# "true": the root filesystem's files carry the container's host ids on disk (shifted where the
# filesystem cannot idmap): bind it as it is. OCI runtimes expect exactly that of a rootfs in
# a user namespace; the native runtime otherwise attaches it through an idmapped mount.
ANNOTATION_ROOTFS_SHIFTED = "org.sysmgr.rootfs-shifted"

#: OCI capability names in kernel order (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
ALL_CAPABILITIES: tuple[str, ...] = tuple(capabilities.oci_name(n) for n in capabilities.NAMES)
#: What a container does not get by default, one reason each (issue 9, point 2; rows of its table):
#: ``security.capabilities.add`` gives one back, ``security.capabilities.drop`` drops more.
#: Kept on purpose: SYS_ADMIN (a system container mounts), SYS_BOOT (reboot() in the pid ns
#: signals the container's init, the stop path relies on it; kexec is denied by seccomp),
#: NET_ADMIN (its own netns), SYS_PTRACE/SYS_PACCT (pid ns), MKNOD (the devices cgroup
#: decides), AUDIT_WRITE/AUDIT_READ (login, journald), CHECKPOINT_RESTORE.
DEFAULT_DROPPED: tuple[tuple[str, str], ...] = (
    ("CAP_SYS_MODULE", "loads code into the host kernel (LXC default)"),
    ("CAP_SYS_RAWIO", "I/O ports, /dev/mem, raw SCSI: the host's hardware (LXC default)"),
    ("CAP_SYS_TIME", "sets the host's clock: there is no clock namespace for it (LXC default)"),
    ("CAP_MAC_ADMIN", "changes the host's LSM policy (LXC default)"),
    ("CAP_MAC_OVERRIDE", "bypasses the host's LSM policy (LXC default)"),
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at: any host file from a guessed handle (rows 4-5)"),
    ("CAP_SYSLOG", "reads and clears the host's kernel log despite dmesg_restrict (row 6)"),
    ("CAP_BPF", "loads BPF programs and maps into the host kernel"),
    ("CAP_PERFMON", "perf events of the whole host, kernel addresses"),
    ("CAP_AUDIT_CONTROL", "changes the host's audit rules (audit is not namespaced)"),
    ("CAP_WAKE_ALARM", "sets the host's RTC wake-up alarms"),
    ("CAP_BLOCK_SUSPEND", "keeps the host from suspending"),
)
DROPPED_CAPABILITIES: tuple[str, ...] = tuple(name for name, _ in DEFAULT_DROPPED)

#: Device nodes created in the container's tmpfs /dev: (path, type, major, minor).
DEVICE_NODES: tuple[tuple[str, str, int, int], ...] = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)
#: Devices cgroup allow list (after denying everything): the nodes above, the console,
#: the devpts multiplexer and every pty slave (major 136). ``None`` minor = any.
ALLOWED_DEVICES: tuple[tuple[str, int, int | None], ...] = (
    ("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9),
    ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, None),
)

#: Same defaults as runc: kernel interfaces a container must not write (sysrq-trigger would
#: reboot the host) or read (kcore, keys).
READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)


def signal_name(sig: int) -> str:
    """``10`` -> ``"SIGUSR2"``-style name; real-time signals as ``"SIGRTMIN+3"``."""
    rtmin, rtmax = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if rtmin < sig < rtmax:
        return f"SIGRTMIN+{sig - rtmin}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _mounts(console_log: str) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        # cgroup2 only (PLATFORM item 8): mounted inside the cgroup namespace it shows the
        # container's own cgroup as its root; systemd runs in unified mode on it.
        {"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2",
         "options": ["nosuid", "noexec", "nodev", "rw"]},
        # The console is a plain log file: nothing has to read it, nothing ever blocks.
        # Read-only inside: init's stdout/stderr (the runtime's O_APPEND fd, opened through
        # the host's mount) still append to it, but a re-open in the container (a shell's
        # `> /dev/console` would truncate, a non-append open would overwrite) gets EROFS.
        # nodev: the volume may be on a nodev mount (a btrfs pool), which a remount in a
        # user namespace must keep (runc's read-only remount without it: EPERM)
        {"destination": "/dev/console", "type": "bind", "source": console_log,
         "options": ["bind", "ro", "nosuid", "nodev", "noexec"]},
    ]


def disk_mount(disk: DiskMount, userns: bool) -> dict[str, Any]:
    """One disk as an OCI bind mount; ``idmap`` (runc's option, OCI 1.1: the mount is
    idmapped with the container's own maps) only where there is a user namespace."""
    options = ["rbind" if disk.recursive else "bind", "ro" if disk.readonly else "rw",
               disk.propagation or "private"]
    if disk.shift and userns:
        options.append("ridmap" if disk.recursive else "idmap")
    return {"destination": disk.path, "type": "bind", "source": disk.source, "options": options}


def resources(limits: Limits) -> dict[str, Any]:
    res: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}]
        + [
            {"allow": True, "type": t, "major": ma, **({"minor": mi} if mi is not None else {}), "access": "rwm"}
            for t, ma, mi in ALLOWED_DEVICES
        ],
    }
    memory: dict[str, int] = {}
    if limits.memory_bytes is not None:
        memory["limit"] = limits.memory_bytes
        if not limits.memory_swap:
            memory["swap"] = limits.memory_bytes  # OCI swap = memory+swap, so no swap at all
    if memory:
        res["memory"] = memory
    cpu: dict[str, Any] = {}
    if limits.cpu_shares is not None:
        cpu["shares"] = limits.cpu_shares
    if limits.cpu_quota_us is not None:
        cpu["quota"] = limits.cpu_quota_us
        cpu["period"] = limits.cpu_period_us
    if limits.cpuset is not None:
        cpu["cpus"] = limits.cpuset
    if cpu:
        res["cpu"] = cpu
    if limits.pids_max is not None:
        res["pids"] = {"limit": limits.pids_max}
    return res


def container_capabilities(spec: RuntimeSpec) -> list[str]:
    """The container's capability set, OCI names in kernel order: everything but the default
    drops, plus ``spec.cap_add``, minus ``spec.cap_drop`` (a name in both is dropped)."""
    dropped = set(DROPPED_CAPABILITIES) - {capabilities.oci_name(n) for n in spec.cap_add}
    dropped |= {capabilities.oci_name(n) for n in spec.cap_drop}
    return [c for c in ALL_CAPABILITIES if c not in dropped]


def render(spec: RuntimeSpec) -> dict[str, Any]:
    """The OCI runtime-spec configuration for ``spec`` (deterministic: golden-file tested)."""
    env = {"PATH": DEFAULT_PATH, "TERM": "linux", "container": "lxc"}
    env.update(spec.env)
    caps = container_capabilities(spec)
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "devices": [
            {"path": p, "type": t, "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
            for p, t, ma, mi in DEVICE_NODES
        ],
        "resources": resources(spec.limits),
        "cgroupsPath": "/" + spec.cgroup.strip("/"),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "seccomp": seccomp.to_oci(seccomp.rules_for(privileged=spec.idmap is None)),
    }
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": list(spec.init),
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": "/",
        # every set explicit and equal: nothing is left to what the launcher happened to hold
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted",
                                                 "inheritable", "ambient")},
        "noNewPrivileges": bool(spec.no_new_privs),
    }
    if spec.apparmor_profile:  # OCI's field: loaded by the manager, applied by the runtime
        process["apparmorProfile"] = spec.apparmor_profile
    if spec.idmap is not None:
        namespaces.append({"type": "user"})
        for kind, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
            linux[key] = [{"containerID": ns, "hostID": h, "size": n}
                          for ns, h, n in spec.idmap.mappings(kind)]
    annotations = {ANNOTATION_HALT_SIGNAL: signal_name(spec.halt_signal), ANNOTATION_NAME: spec.name}
    if spec.idmap is not None and not spec.idmapped_rootfs:
        annotations[ANNOTATION_ROOTFS_SHIFTED] = "true"
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": spec.rootfs, "readonly": False},
        "hostname": spec.name,
        "mounts": _mounts(os.path.join(spec.rootfs, CONSOLE_LOG.lstrip("/")))
        + [disk_mount(d, spec.idmap is not None) for d in spec.disks],
        "linux": linux,
        "annotations": annotations,
    }


# -- reading a bundle back ---------------------------------------------------------------------

def limits_from_resources(resources: Mapping[str, Any]) -> Limits:
    """Inverse of the ``linux.resources`` rendering (``memory_swap=False`` without a memory
    limit cannot be expressed in OCI and reads back as True)."""
    mem = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    pids = resources.get("pids") or {}
    limit = mem.get("limit")
    swap = mem.get("swap")
    return Limits(
        cpuset=cpu.get("cpus"),
        cpu_quota_us=cpu.get("quota"),
        cpu_period_us=int(cpu.get("period") or 100_000),
        cpu_shares=cpu.get("shares"),
        memory_bytes=limit,
        memory_swap=not (limit is not None and swap is not None and swap <= limit),
        pids_max=pids.get("limit"),
    )


def device_rules(resources: Mapping[str, Any]) -> list[tuple[bool, str]]:
    """``linux.resources.devices`` as cgroup-v1 rules: ``[(allow, "c 1:3 rwm"), ...]``."""
    rules = []
    for d in resources.get("devices") or ():
        kind = d.get("type", "a")
        access = d.get("access", "rwm")
        if kind == "a":
            rule = f"a *:* {access}"
        else:
            ma = "*" if d.get("major") is None else str(d["major"])
            mi = "*" if d.get("minor") is None else str(d["minor"])
            rule = f"{kind} {ma}:{mi} {access}"
        rules.append((bool(d.get("allow")), rule))
    return rules


_FLAG_OPTS = {
    # option -> (flags to set, flags to clear); numbers from linux/mount.h
    "ro": (1, 0), "rw": (0, 1), "nosuid": (2, 0), "suid": (0, 2), "nodev": (4, 0), "dev": (0, 4),
    "noexec": (8, 0), "exec": (0, 8), "sync": (16, 0), "async": (0, 16), "remount": (32, 0),
    "dirsync": (128, 0), "noatime": (1024, 0), "atime": (0, 1024), "nodiratime": (2048, 0),
    "diratime": (0, 2048), "bind": (4096, 0), "rbind": (4096 | 16384, 0), "relatime": (1 << 21, 0),
    "norelatime": (0, 1 << 21), "strictatime": (1 << 24, 0), "nosymfollow": (256, 0),
}
_PROPAGATION_OPTS = {
    "private": 1 << 18, "rprivate": (1 << 18) | 16384, "slave": 1 << 19, "rslave": (1 << 19) | 16384,
    "shared": 1 << 20, "rshared": (1 << 20) | 16384, "unbindable": 1 << 17, "runbindable": (1 << 17) | 16384,
}


#: OCI 1.1 / runc: the bind is idmapped with the container's maps (``ridmap``: recursively)
IDMAP_OPTS = ("idmap", "ridmap")


def mount_flags(options: Sequence[str]) -> tuple[int, int, str]:
    """OCI mount options -> ``(mount flags, propagation flags, data string)``; the idmap
    options (:data:`IDMAP_OPTS`) are the caller's to read."""
    flags = prop = 0
    data = []
    for opt in options:
        if opt in IDMAP_OPTS:
            continue
        if opt in _FLAG_OPTS:
            set_, clear = _FLAG_OPTS[opt]
            flags = (flags | set_) & ~clear
        elif opt in _PROPAGATION_OPTS:
            prop |= _PROPAGATION_OPTS[opt]
        else:
            data.append(opt)
    return flags, prop, ",".join(data)
