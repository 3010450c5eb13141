"""AppArmor profiles for containers: rendered per container, loaded with ``apparmor_parser``
(layer: runtime driver support).

Modelled on LXC's ``lxc-container-default-cgns`` and LXD's per-instance profile: everything a
full OS needs is allowed (files, network, capabilities: the bounding set and seccomp already
limit them), and what stays the host's whatever the container's privileges is denied:
writes to ``/proc/sys`` outside the namespaced parts (``core_pattern``, ``modprobe``...),
``/proc/sysrq-trigger``, ``/proc/kcore``, writes to ``/sys`` outside the container's cgroup
and network devices, mounting proc or sysfs anywhere but ``/proc`` and ``/sys`` (a second proc
would slip past the path rules), unmounting the masks over kernel files, and ptrace or signals
to processes outside the profile. A privileged container relies on it most: its root is the
host's root, and the read-only binds over ``/proc/sys`` are only mounts it could undo.

The profile of a container is named ``<root prefix>-<container>`` (``sysmgr-1a2b3c-web1``),
so two host roots never share one. :func:`render` is pure; :func:`load` and :func:`unload` run
``apparmor_parser`` through :func:`sysmgr._util.proc.run` and raise :class:`DriverError`
naming the profile. The runtime applies a loaded profile by name (OCI ``apparmorProfile``).
"""

from __future__ import annotations

import os
from typing import Iterable

from sysmgr._util import hostinfo, proc
from sysmgr.drivers.runtime import bundle
from sysmgr.errors import CommandFailed, DriverError, DriverUnavailable

SECURITYFS = "/sys/kernel/security/apparmor"
PARSER = "apparmor_parser"
PARSER_TIMEOUT = 300.0  # a cold compile on a slow (emulated) machine takes seconds

#: Under /proc/sys, what the kernel namespaces per container (writes allowed); a trailing
#: ``*`` allows every file whose name starts so (but nothing below it).
PROC_SYS_WRITABLE = ("kernel/hostname", "kernel/domainname", "kernel/shm*", "kernel/msg*",
                     "kernel/sem*", "net")
#: Under /sys, what is the container's own: its cgroup tree and its network devices.
SYS_WRITABLE = ("fs/cgroup", "class/net", "devices/virtual/net")
#: Kernel files neither read nor written, whatever else allows them.
NEVER_TOUCHED = ("/proc/kcore", "/proc/kmem", "/proc/mem", "/proc/sysrq-trigger",
                 "/proc/acpi/**", "/sys/kernel/security/{,**}", "/sys/kernel/debug/{,**}",
                 "/sys/kernel/tracing/{,**}", "/sys/kernel/config/{,**}",
                 "/sys/firmware/efi/efivars/{,**}")
#: Kernel filesystems a container may mount, each only at its usual place.
KERNEL_FS_AT = (("proc", "/proc/"), ("sysfs", "/sys/"), ("cgroup", "/sys/fs/cgroup/{,**}"),
                ("cgroup2", "/sys/fs/cgroup/{,**}"), ("binfmt_misc", "/proc/sys/fs/binfmt_misc/"),
                ("securityfs", "/sys/kernel/security/"), ("debugfs", "/sys/kernel/debug/"),
                ("tracefs", "/sys/kernel/tracing/"), ("configfs", "/sys/kernel/config/"),
                ("fusectl", "/sys/fs/fuse/connections/"), ("efivarfs", "/sys/firmware/efi/efivars/"))
#: Filesystems that hold only what the container puts in them: anywhere.
OWN_FS = ("tmpfs", "mqueue", "hugetlbfs", "fuse", "fuse.*")
#: Option sets of the read-only remounts systemd and mount(8) make of bind mounts.
RO_REMOUNTS = ("ro,remount,bind", "ro,remount,bind,nosuid", "ro,remount,bind,nodev",
               "ro,remount,bind,noexec", "ro,remount,bind,nosuid,nodev",
               "ro,remount,bind,nosuid,noexec", "ro,remount,bind,noexec,nodev",
               "ro,remount,bind,nosuid,noexec,nodev", "ro,remount,bind,nosuid,noexec,strictatime")
PROPAGATION = ("slave", "rslave", "shared", "rshared", "private", "rprivate", "unbindable",
               "runbindable")


# -- availability ---------------------------------------------------------------------------

def unavailable_reason() -> str | None:
    """Why sysmgr cannot load profiles here (None: it can): the kernel runs no AppArmor,
    securityfs is not mounted, or ``apparmor_parser`` is not installed."""
    if not hostinfo.apparmor_enabled():
        return "not available on this host"
    if not os.path.isdir(SECURITYFS):
        return f"enabled, but securityfs is not mounted ({SECURITYFS} is missing)"
    if proc.which(PARSER) is None:
        return f"enabled, but {PARSER} is not installed (the apparmor package)"
    return None


def loaded(prefix: str) -> list[str]:
    """The names of the loaded profiles that start with ``prefix`` (sorted)."""
    try:
        with open(os.path.join(SECURITYFS, "profiles")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    names = (line.rsplit(" (", 1)[0] for line in lines)
    return sorted(n for n in names if n.startswith(prefix))


# -- the profile (pure) ---------------------------------------------------------------------

def profile_name(prefix: str, container: str) -> str:
    """``sysmgr-1a2b3c`` + ``web1`` -> ``sysmgr-1a2b3c-web1``."""
    return f"{prefix}-{container}"


def render(name: str, *, privileged: bool, raw: str = "") -> str:
    """The profile text for one container; ``raw`` (``raw.apparmor``) goes in at the end."""
    kind = "privileged" if privileged else "unprivileged"
    lines = [f"# AppArmor profile of a sysmgr container ({kind}), written at each start:",
             "# change raw.apparmor, not this file.",
             f"profile {name} flags=(attach_disconnected,mediate_deleted) {{"]
    lines += _base(name) + _kernel_files() + _mounts()
    if not privileged:
        lines += _unprivileged()
    if raw.strip():
        lines += ["", "  # raw.apparmor"] + ["  " + line.strip() for line in raw.strip().splitlines()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _base(name: str) -> list[str]:
    """A full OS, among its own processes."""
    return ["  # files, network and capabilities (the capability sets bound them)",
            "  capability,", "  file,", "  network,", "  dbus,", "  umount,", "",
            "  # signals from anywhere (the host stops init), to the container's own processes",
            "  signal (receive),", f"  signal peer={name},",
            "  # ptrace and unix sockets among the container's processes only",
            "  ptrace (readby, tracedby),", f"  ptrace peer={name},",
            "  unix (receive),", f"  unix peer=(label={name}),"]


def _kernel_files() -> list[str]:
    """The host's kernel interfaces under /proc and /sys."""
    out = ["", "  # kernel interfaces that are the host's"]
    out += [f"  deny {p} rwklx," for p in NEVER_TOUCHED]
    out += ["  deny /proc/bus/** wklx,", "",
            "  # /proc/sys: writable only where the kernel namespaces it (not core_pattern, modprobe...)"]
    out += [f"  deny {p} wklx," for p in all_but("/proc/sys/", PROC_SYS_WRITABLE)]
    out += ["", "  # /sys: writable only the container's cgroup tree and network devices"]
    out += [f"  deny {p} wklx," for p in all_but("/sys/", SYS_WRITABLE)]
    out += ["", "  # the masks and read-only binds over kernel files stay in place"]
    out += [f"  deny umount {p}{{,/}}," for p in (*bundle.MASKED_PATHS, *bundle.READONLY_PATHS)]
    return out


def _mounts() -> list[str]:
    """Mounts any container may make: no second proc or sysfs, which the path rules above
    would not cover, and no bind of anything from /proc or /sys."""
    out = ["", "  # kernel filesystems only at their usual place"]
    out += [f"  mount fstype={fs} -> {at}," for fs, at in KERNEL_FS_AT]
    out += ["  mount options=(rw, nosuid, nodev, noexec, remount) -> /sys/,",
            "  mount options=(ro, nosuid, nodev, noexec, remount, strictatime) -> /sys/fs/cgroup/,",
            "  deny mount fstype=devpts,",
            "  # read-only remounts of / (shutdown scripts) would reach the pool's filesystem",
            "  deny mount options=(ro, remount) -> /,", "  deny mount options=(ro, remount, silent) -> /,",
            "", "  # filesystems holding only the container's own data, anywhere"]
    out += [f"  mount fstype={fs}," for fs in OWN_FS]
    out += ["", "  # bind, move and read-only remounts of anything but /proc and /sys; propagation of /"]
    for src in all_but("/", ("proc", "sys")):
        out += [f"  mount options=({o}) {src}," for o in ("rw,bind", "rw,rbind", "rw,move", *RO_REMOUNTS)]
    out += [f"  mount options=(rw,{p}) -> /," for p in PROPAGATION]
    return out


def _unprivileged() -> list[str]:
    """What an unprivileged container may do beyond: the kernel already locks the host's
    mounts in its user namespace, so its own mount tree is its business (LXD's rules)."""
    return ["", "  # unprivileged: the user namespace locks the host's mounts; the rest is its own",
            "  pivot_root,",
            *(f"  mount options=(rw,{p}) -> **," for p in PROPAGATION),
            "  mount options=(rw,bind) /** -> /**,", "  mount options=(rw,rbind) /** -> /**,",
            "  mount options=(ro,remount) /**,",
            *(f"  mount options=({opts}) -> /**," for opts in RO_REMOUNTS)]


def all_but(base: str, allowed: Iterable[str]) -> list[str]:
    """Globs matching every path below ``base`` except the ``allowed`` ones (relative,
    ``/``-separated; a trailing ``*`` allows a name prefix, files only). AppArmor has no
    "except": a deny always wins over an allow, so "deny all but" is spelled as denials of
    every name that differs from an allowed one at some character (``/sys/c{,[^l]*}``...)."""
    tree: dict[str, dict] = {}
    for path in allowed:
        node = tree
        for part in path.strip("/").split("/"):
            node = node.setdefault(part, {})
        node["\0leaf"] = {}
    out: list[str] = []
    _deny_level(base, tree, out)
    return out


def _deny_level(prefix: str, tree: dict[str, dict], out: list[str]) -> None:
    """Deny every name in the directory ``prefix`` (ends with ``/``) not in ``tree``."""
    _deny_chars(prefix, [(name, sub) for name, sub in sorted(tree.items()) if name != "\0leaf"],
                out, top=True)


def _deny_chars(p: str, cands: list[tuple[str, dict]], out: list[str], top: bool = False) -> None:
    """``p``: a directory prefix plus the first characters of a name; ``cands``: the rest
    of the allowed names that start so, with their subtrees."""
    if any(rest == "*" for rest, _ in cands):  # a name prefix: its files, nothing below
        out.append(f"{p}*/**")
        return
    longer = [(rest, sub) for rest, sub in cands if rest]
    firsts = "".join(sorted({rest[0] for rest, _ in longer}))
    exact = next((sub for rest, sub in cands if not rest), None)
    if exact is None and not top:  # the partial name itself is no allowed name either
        out.append(f"{p}{{,[^{firsts}]*}}{{,/**}}")
    elif longer:
        out.append(f"{p}[^{firsts}]*{{,/**}}")
    else:
        out.append(f"{p}?*{{,/**}}")
    for c in firsts:
        _deny_chars(p + c, [(rest[1:], sub) for rest, sub in longer if rest[0] == c], out)
    if exact is not None and "\0leaf" not in exact:
        _deny_level(p + "/", exact, out)


# -- loading --------------------------------------------------------------------------------

def load(name: str, text: str, directory: str) -> None:
    """Load (or replace) profile ``name`` from ``text``, kept as ``<directory>/<name>`` with
    the compiled cache in ``<directory>/cache`` (rewritten only when the text changed, so an
    unchanged profile loads from the cache)."""
    path = os.path.join(directory, name)
    try:
        os.makedirs(os.path.join(directory, "cache"), mode=0o700, exist_ok=True)
        if _read(path) != text:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
    except OSError as e:
        raise DriverError(f"cannot write AppArmor profile {name} to {path}: {e.strerror}") from e
    _parser(name, "load", ["-r", "-W", "-L", os.path.join(directory, "cache"), path])


def unload(name: str) -> None:
    """Remove profile ``name`` from the kernel; not loaded (or no AppArmor) is success."""
    if unavailable_reason() is not None or name not in loaded(name):
        return
    # the parser only needs the name to remove a profile: no file has to survive
    _parser(name, "unload", ["-R"], stdin=f"profile {name} {{}}\n".encode())


def _parser(name: str, what: str, args: list[str], stdin: bytes | None = None) -> None:
    try:
        proc.run([PARSER, *args], input=stdin, timeout=PARSER_TIMEOUT)
    except CommandFailed as e:  # the parser's own words say which rule is wrong
        detail = " ".join(e.stderr.split()) or str(e)
        raise DriverError(f"cannot {what} AppArmor profile {name}: {detail}") from e
    except DriverUnavailable as e:
        raise DriverError(f"cannot {what} AppArmor profile {name}: {e}") from e


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
