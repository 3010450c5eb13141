"""What a native start or exec will do, as data (layer: runtime driver, no side effects).

The caller (P) digests the spec, or a bundle's ``config.json``, into an :class:`InitPlan`
before it forks, so the children in :mod:`.child` only execute a ready-made list of steps.
:class:`ExecPlan` is the same for a process run inside a running container.

The OCI rendering itself belongs to :mod:`sysmgr.drivers.runtime.bundle`; this module reads
the parts of a rendered configuration that the children need (mounts, devices, capabilities,
namespaces, masked paths). A normal start digests the configuration it has just rendered, in
memory, and takes the limits from the spec (:func:`plan_from_spec`); only a start from an
existing bundle dir recovers the limits from ``linux.resources`` (:func:`plan_from_config`).
"""

from __future__ import annotations

import os
import stat
from typing import Any, Mapping, NamedTuple

from sysmgr._util import capabilities, linux, seccomp
from sysmgr.drivers.runtime import bundle
from sysmgr.drivers.runtime.base import Limits, RuntimeSpec
from sysmgr.errors import DriverError

#: Symlinks every /dev gets (the OCI runtime spec's default set).
DEV_SYMLINKS: tuple[tuple[str, str], ...] = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)
#: OCI namespace type -> unshare(2) flag.
NS_CLONE: dict[str, int] = {
    "pid": linux.CLONE_NEWPID, "network": linux.CLONE_NEWNET, "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS, "mount": linux.CLONE_NEWNS, "cgroup": linux.CLONE_NEWCGROUP,
    "user": linux.CLONE_NEWUSER,
}
_DEVICE_KIND = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

#: A device node to create: (path, mode incl. file type, rdev, permissions, uid, gid).
Device = tuple[str, int, int, int, int, int]


# -- what the children need (NamedTuples: cheap to define, immutable across the fork) -----------

class Mount(NamedTuple):
    source: str
    target: str          # path inside the container
    fstype: str | None
    flags: int
    propagation: int
    data: str | None
    bind: bool
    idmap: bool = False  # a bind idmapped through the container's user namespace


class CapSets(NamedTuple):
    """A process's capability sets as bit masks (set explicitly with capset(2) and
    PR_CAP_AMBIENT; the bounding set is what ``drop_caps`` leaves)."""

    effective: int
    permitted: int
    inheritable: int
    ambient: int


class InitPlan(NamedTuple):
    """The bundle, pre-digested into exactly what A and B execute."""

    name: str
    rootfs: str
    readonly_root: bool
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    hostname: str | None
    unshare_starter: int          # A: every namespace but cgroup and user (A joins that first)
    unshare_init: int             # B: the cgroup ns, once it sits in its cgroup
    userns: bool
    mounts: tuple[Mount, ...]
    devices: tuple[Device, ...]
    dev_symlinks: tuple[tuple[str, str], ...]
    masked: tuple[str, ...]
    readonly: tuple[str, ...]
    drop_caps: tuple[int, ...]
    no_new_privs: bool
    cgroup: str
    limits: Limits
    device_rules: tuple[tuple[bool, str], ...]
    procs_files: tuple[str, ...] = ()
    #: with ``userns``: (container id, host id, count) lines of the uid and gid maps
    uid_map: tuple[tuple[int, int, int], ...] = ()
    gid_map: tuple[tuple[int, int, int], ...] = ()
    caps: CapSets | None = None   # None: leave the sets as inherited (bounding drops only)
    seccomp: bytes = b""          # assembled BPF (sock_filter array); empty: no filter
    #: the console log's path relative to ``rootfs`` (bound on /dev/console); "": none
    console: str = ""
    #: with ``userns``: attach the rootfs through an idmapped mount (False: shifted on disk)
    idmapped_rootfs: bool = True
    apparmor: str = ""            # AppArmor profile init is exec'ed under; empty: none


class ExecPlan(NamedTuple):
    """What C and D execute to run one process in a running container."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    procs_files: tuple[str, ...]
    ns_fds: tuple[int, ...]       # in setns order
    joins_userns: bool
    drop_caps: tuple[int, ...]
    no_new_privs: bool
    pty: bool
    stdio: tuple[int, int, int] = (0, 1, 2)
    caps: CapSets | None = None   # init's sets (a root command gets what init has)
    seccomp: bytes = b""          # the container's filter, when init runs under one
    apparmor: str = ""            # init's AppArmor profile, when it runs under one
    window: tuple[int, int] | None = None  # the pty's (rows, columns)


# -- building an InitPlan ------------------------------------------------------------------------

def plan_from_spec(spec: RuntimeSpec, config: Mapping[str, Any]) -> InitPlan:
    """The plan to start ``spec``; ``config`` is ``bundle.render(spec)``, still in memory.

    The limits are the spec's own: reading them back from ``linux.resources`` would lose
    what OCI cannot express (``memory_swap=False`` without a memory limit).
    """
    return _digest(config, spec.runtime_dir, spec.limits)


def plan_from_config(config: Mapping[str, Any], bundle_dir: str) -> InitPlan:
    """The plan to start an existing bundle (``config`` read from ``<bundle_dir>/config.json``);
    the limits are recovered from ``linux.resources``."""
    return _digest(config, bundle_dir, None)


def _digest(config: Mapping[str, Any], bundle_dir: str, limits: Limits | None) -> InitPlan:
    """Validate the configuration and digest it; errors name the bad field."""
    try:
        proc = config["process"]
        linux_cfg = config.get("linux") or {}
        rootfs = _rootfs(config, bundle_dir)
        args = tuple(proc["args"])
        if not args:
            raise ValueError("process.args is empty")
        env = _env(proc)
        ns_types = _namespace_types(linux_cfg)
        mounts, console = _mounts(config, rootfs)
        devices = _devices(linux_cfg)
        drop_caps = _dropped_caps(proc)
        resources = linux_cfg.get("resources") or {}
        annotations = config.get("annotations") or {}
        return InitPlan(
            name=str(annotations.get(bundle.ANNOTATION_NAME) or config.get("hostname") or ""),
            rootfs=rootfs,
            readonly_root=bool(config["root"].get("readonly")),
            args=args,
            env=env,
            cwd=proc.get("cwd") or "/",
            hostname=config.get("hostname"),
            unshare_starter=_starter_flags(ns_types),
            unshare_init=linux.CLONE_NEWCGROUP if "cgroup" in ns_types else 0,
            userns="user" in ns_types,
            mounts=mounts,
            console=console,
            devices=devices,
            dev_symlinks=_dev_symlinks(mounts),
            masked=tuple(linux_cfg.get("maskedPaths") or ()),
            readonly=tuple(linux_cfg.get("readonlyPaths") or ()),
            drop_caps=drop_caps,
            no_new_privs=bool(proc.get("noNewPrivileges")),
            cgroup=str(linux_cfg.get("cgroupsPath") or "").strip("/"),
            limits=limits if limits is not None else bundle.limits_from_resources(resources),
            device_rules=tuple(bundle.device_rules(resources)),
            uid_map=_id_map(linux_cfg.get("uidMappings")),
            gid_map=_id_map(linux_cfg.get("gidMappings")),
            caps=_cap_sets(proc),
            seccomp=_seccomp_program(linux_cfg),
            idmapped_rootfs=annotations.get(bundle.ANNOTATION_ROOTFS_SHIFTED) != "true",
            apparmor=str(proc.get("apparmorProfile") or ""),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DriverError(f"invalid bundle {os.path.join(bundle_dir, 'config.json')}: {e}") from e


def _rootfs(config: Mapping[str, Any], bundle_dir: str) -> str:
    root = config["root"]["path"]
    if not os.path.isabs(root):
        root = os.path.join(bundle_dir, root)  # OCI: relative to the bundle
    return os.path.realpath(root)


def _env(proc: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in proc.get("env") or ():
        k, _, v = item.partition("=")
        env[k] = v
    return env


def _namespace_types(linux_cfg: Mapping[str, Any]) -> list[str]:
    ns_types = [n["type"] for n in linux_cfg.get("namespaces") or ()]
    unknown = [t for t in ns_types if t not in NS_CLONE]
    if unknown:
        raise ValueError(f"unsupported namespace {unknown[0]!r}")
    return ns_types


def _id_map(entries: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((int(e["containerID"]), int(e["hostID"]), int(e["size"])) for e in entries or ())


def _starter_flags(ns_types: list[str]) -> int:
    """What A unshares: everything but cgroup (B, once in its cgroup) and user (A joins the
    container's user namespace first, and the others are then owned by it)."""
    flags = 0
    for t in ns_types:
        if t not in ("cgroup", "user"):
            flags |= NS_CLONE[t]
    return flags


def _mounts(config: Mapping[str, Any], rootfs: str) -> tuple[tuple[Mount, ...], str]:
    """The mounts, and the console log when /dev/console is a bind of a file inside the
    rootfs (B binds that one itself: /dev's tmpfs hides the source once mounted)."""
    mounts, console = [], ""
    for m in config.get("mounts") or ():
        mount = mount_entry(m)
        if mount.bind and mount.target == "/dev/console" \
                and mount.source.startswith(rootfs.rstrip("/") + "/"):
            console = os.path.relpath(mount.source, rootfs)
            continue
        mounts.append(mount)
    return tuple(mounts), console


def mount_entry(m: Mapping[str, Any]) -> Mount:
    """One OCI ``mounts`` entry, digested (a disk mounted live goes through here too)."""
    flags, prop, data = bundle.mount_flags(m.get("options") or ())
    fstype = m.get("type")
    is_bind = bool(flags & linux.MS_BIND) or fstype == "bind"
    return Mount(
        source=m.get("source") or fstype or "none", target=m["destination"],
        fstype=None if is_bind else fstype, flags=flags,
        propagation=prop, data=data or None, bind=is_bind,
        idmap=is_bind and any(o in bundle.IDMAP_OPTS for o in m.get("options") or ()),
    )


def _devices(linux_cfg: Mapping[str, Any]) -> tuple[Device, ...]:
    devices = []
    for d in linux_cfg.get("devices") or ():
        kind = _DEVICE_KIND[d["type"]]
        perm = int(d.get("fileMode", 0o666)) & 0o7777
        devices.append((d["path"], kind | perm, os.makedev(d.get("major", 0), d.get("minor", 0)), perm,
                        int(d.get("uid", 0)), int(d.get("gid", 0))))
    return tuple(devices)


def _dropped_caps(proc: Mapping[str, Any]) -> tuple[int, ...]:
    """Every capability the kernel knows that is not in ``process.capabilities.bounding``."""
    keep = set()
    for name in (proc.get("capabilities") or {}).get("bounding") or ():
        num = capabilities.NUMBERS.get(capabilities.canonical(name))
        if num is None:
            raise ValueError(f"unknown capability {name!r}")
        keep.add(num)
    return tuple(c for c in range(linux.cap_last_cap() + 1) if c not in keep)


def _cap_sets(proc: Mapping[str, Any]) -> CapSets:
    """``process.capabilities`` as masks; a missing set is empty (the OCI meaning)."""
    caps = proc.get("capabilities") or {}
    known = (1 << (linux.cap_last_cap() + 1)) - 1  # PR_CAP_AMBIENT_RAISE refuses newer caps
    return CapSets(*(capabilities.mask(caps.get(k) or ()) & known
                     for k in ("effective", "permitted", "inheritable", "ambient")))


def _seccomp_program(linux_cfg: Mapping[str, Any]) -> bytes:
    """``linux.seccomp`` assembled once here, in P (cached): the children only load it."""
    section = linux_cfg.get("seccomp")
    return seccomp.assemble(seccomp.from_oci(section)) if section else b""


def exec_cap_sets(status: Mapping[str, str]) -> CapSets:
    """The sets a root command run in the container gets: init's (``CapPrm`` etc. from
    ``/proc/<init>/status``), effective = permitted as for any root process."""
    prm = int(status.get("CapPrm") or "0", 16)
    return CapSets(effective=prm, permitted=prm, inheritable=int(status.get("CapInh") or "0", 16),
                   ambient=int(status.get("CapAmb") or "0", 16))


def _dev_symlinks(mounts: tuple[Mount, ...]) -> tuple[tuple[str, str], ...]:
    """The /dev symlinks, only when the bundle mounts its own /dev."""
    if not any(m.target == "/dev" for m in mounts):
        return ()
    symlinks = list(DEV_SYMLINKS)
    if any(m.target == "/dev/pts" and "newinstance" in (m.data or "") for m in mounts):
        symlinks.append(("pts/ptmx", "/dev/ptmx"))
    return tuple(symlinks)
