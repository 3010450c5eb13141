"""Device rule tables: the keys of each device type (``disk``, ``nic``, ``none``) and the
cross-key rules of a device (the root disk needs a pool, a nic a network or a parent...).

Model layer, pure. Built on :mod:`sysmgr.model.keyrules`; re-exported by
:mod:`sysmgr.model.keys`, where the rest of the code has always found them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Mapping

from sysmgr._util.sizes import parse_size
from sysmgr.model.keyrules import (
    BOOL, MTU, NORM_BOOL, Key, Problem, Validator, abs_path, accept, check, choice_key,
    key_table, norm,
    normalize_path, normalize_table, same, size_key, validate_table)
from sysmgr.model.names import device_name_problem, ifname_problem, object_name_problem
from sysmgr.model.suggest import did_you_mean


def _mac(value: str) -> None:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", value.strip()):
        raise ValueError(f"invalid MAC address {value!r}: expected six hex pairs such as 00:16:3e:12:34:56")
    if int(value.strip()[:2], 16) & 1:
        raise ValueError(f"invalid MAC address {value!r}: a multicast address cannot be a nic's address")


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise ValueError(f"invalid IPv4 address {value!r}: expected an address such as 10.0.3.5") from None


def _path_key(doc: str) -> Key:
    return Key("path", check(abs_path), norm(normalize_path), doc=doc)


def _name_check(fn: Callable[[str], str | None], what: str) -> Validator:
    def parse(v: str) -> None:
        reason = fn(v)
        if reason:
            raise ValueError(f"invalid {what} {v!r}: {reason}")

    return check(parse)


def _nictype(value: str) -> None:
    if value != "bridged":
        raise ValueError(f"invalid nictype {value!r}: only 'bridged' is supported")


_DISK_SIZE = size_key()
#: LXD's propagation modes of a bind (the kernel's shared subtrees); "private" is LXD's default
PROPAGATIONS = ("private", "shared", "slave", "unbindable",
                "rprivate", "rshared", "rslave", "runbindable")
_PROPAGATION = choice_key(*PROPAGATIONS, what="propagation")
#: keys only a disk with a source has (a bind), never the root disk
_BIND_ONLY = ("propagation", "recursive", "shift")

DEVICE_TYPES: dict[str, dict[str, Key]] = {
    "disk": key_table(
        _path_key("Mount point inside the container; '/' is the root disk."),
        Key("source", accept, same,
            doc="Host path to mount (absolute), or a volume name when pool is set."),
        Key("pool", _name_check(object_name_problem, "pool name"), same,
            doc="Storage pool (required for the root disk)."),
        Key("size", _DISK_SIZE[0], _DISK_SIZE[1], live=True,
            doc="Quota of the root disk (64MiB, 10GB...)."),
        Key("readonly", BOOL, NORM_BOOL, default="false", doc="Mount read-only."),
        Key("required", BOOL, NORM_BOOL, default="true",
            doc="Fail to start when the source is missing (false: skip it with a warning)."),
        Key("propagation", *_PROPAGATION, default="private",
            doc="How mounts under it propagate between host and container: private, slave, "
                "shared, unbindable, or rprivate, rslave, rshared, runbindable."),
        Key("recursive", BOOL, NORM_BOOL, default="false",
            doc="Also mount what is mounted under the source (a recursive bind)."),
        Key("shift", BOOL, NORM_BOOL, default="false",
            doc="Idmap the source into an unprivileged container: the host's root-owned files "
                "are root's inside (else they show as nobody)."),
    ),
    "nic": key_table(
        Key("name", _name_check(ifname_problem, "interface name"), same,
            doc="Interface name inside the container (default: the device name)."),
        Key("network", _name_check(object_name_problem, "network name"), same,
            doc="Managed network to attach to."),
        Key("nictype", check(_nictype), same,
            doc="How to attach when no network is given: bridged (to parent)."),
        Key("parent", _name_check(ifname_problem, "interface name"), same,
            doc="Host bridge for nictype bridged."),
        Key("hwaddr", check(_mac), norm(lambda v: v.strip().lower()),
            doc="MAC address (default: generated and kept in volatile state)."),
        Key("ipv4.address", check(_ipv4), norm(lambda v: str(ipaddress.IPv4Address(v.strip()))),
            doc="Static IPv4 address on the managed network (default: sysmgr allocates one "
                "from the subnet and keeps it for the container's life)."),
        Key("ipv4.dhcp", BOOL, NORM_BOOL, default="false",
            doc="true: the guest's DHCP client configures the nic (it is served the reserved "
                "address); false: sysmgr configures address and default route before init."),
        Key("mtu", MTU[0], MTU[1], doc="MTU (576..9000)."),
    ),
    "none": {},
}


def _disk_rules(dev: Mapping[str, str]) -> list[Problem]:
    path = dev.get("path", "")
    if not path:
        return [("path", "a disk device needs a path (the mount point; '/' for the root disk)")]
    out: list[Problem] = []
    is_root = path.startswith("/") and normalize_path(path) == "/"
    if is_root:
        if not dev.get("pool"):
            out.append(("pool", "the root disk (path: /) needs a pool"))
        if dev.get("source"):
            out.append(("source", "the root disk comes from its pool: remove source"))
        out += [(k, f"{k} is for disks with a source, not the root disk")
                for k in _BIND_ONLY if dev.get(k)]
    else:
        if dev.get("size"):
            out.append(("size", "size is only supported on the root disk (path: /)"))
        src = dev.get("source", "")
        if not src:
            out.append(("source", "a disk device other than the root disk needs a source"))
        elif not dev.get("pool") and not src.startswith("/"):
            out.append(("source", f"invalid source {src!r}: a host path must be absolute"))
        elif dev.get("pool") and (src.startswith("/") or "/" in src or src.startswith(".")):
            out.append(("source", f"invalid source {src!r}: with a pool, the source is the "
                                  "name of a storage volume in it"))
    return out


def _nic_rules(dev: Mapping[str, str]) -> list[Problem]:
    if dev.get("network"):
        out = [(k, f"{k} cannot be used with network (the network decides how to attach)")
               for k in ("nictype", "parent") if dev.get(k)]
        return out
    # an unmanaged bridge has no sysmgr address management: the guest configures itself
    unmanaged = [(k, f"{k} needs a managed network (network: NAME); on nictype bridged the "
                     "guest configures its own address") for k in ("ipv4.address", "ipv4.dhcp")
                 if dev.get(k)]
    if unmanaged:
        return unmanaged
    if not dev.get("nictype"):
        return [("network", "a nic needs a network, or nictype: bridged with a parent bridge")]
    if not dev.get("parent"):
        return [("parent", "nictype bridged needs parent (the host bridge)")]
    return []


_DEVICE_RULES: dict[str, Callable[[Mapping[str, str]], list[Problem]]] = {
    "disk": _disk_rules,
    "nic": _nic_rules,
}


def validate_devices(devices: Mapping[str, object], *, where: str = "devices") -> list[Problem]:
    """Check a ``devices`` map against :data:`DEVICE_TYPES` (each device on its own).

    Args:
        devices: device name -> {key: value}, each with a ``type``.
        where: prefix of the returned key paths.

    Returns:
        One ``(key path, reason)`` per problem, e.g. ``("devices.eth0.mtu", "invalid MTU ...")``.
    """
    problems: list[Problem] = []
    for name, dev in devices.items():
        dpath = f"{where}.{name}"
        if not isinstance(name, str):
            problems.append((dpath, f"device names must be strings, got {type(name).__name__}"))
            continue
        reason = device_name_problem(name)
        if reason:
            problems.append((dpath, f"invalid device name {name!r}: {reason}"))
        if not isinstance(dev, Mapping):
            problems.append((dpath, "a device must be a mapping with a type, e.g. {type: disk, ...}"))
            continue
        dtype = dev.get("type")
        if not isinstance(dtype, str) or not dtype:
            problems.append((f"{dpath}.type", "a device needs a type (one of "
                             + ", ".join(sorted(DEVICE_TYPES)) + ")"))
            continue
        table = DEVICE_TYPES.get(dtype)
        if table is None:
            hint = did_you_mean(dtype, DEVICE_TYPES)
            problems.append((f"{dpath}.type", f"unknown device type {dtype!r}{hint}; known: "
                             + ", ".join(sorted(DEVICE_TYPES))))
            continue
        rest = {k: v for k, v in dev.items() if k != "type"}
        if dtype == "none" and rest:
            for k in rest:
                problems.append((f"{dpath}.{k}", "a device of type none takes no other keys "
                                 "(it only removes an inherited device)"))
            continue
        found = validate_table(table, rest, dpath, f"{dtype} device")
        problems.extend(found)
        rules = _DEVICE_RULES.get(dtype)
        if rules:
            strs = {str(k): v if isinstance(v, str) else str(v) for k, v in rest.items()}
            # one problem per key: a key already reported invalid is not reported again
            seen = {p for p, _ in found}
            problems.extend((f"{dpath}.{k}", r) for k, r in rules(strs) if f"{dpath}.{k}" not in seen)
    return problems


def normalize_devices(devices: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, str]]:
    """Canonical form of a devices map for diffs (values normalised per device type).

    Returns:
        A new ``{name: {key: str}}``; unknown types and keys are kept as strings.
    """
    out: dict[str, dict[str, str]] = {}
    for name, dev in devices.items():
        dtype = str(dev.get("type", ""))
        table = DEVICE_TYPES.get(dtype, {})
        rest = {k: v for k, v in dev.items() if k != "type"}
        values = normalize_table(table, rest, drop_managed=False)
        out[str(name)] = {"type": dtype, **values}
    return out


def device_change_is_live(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> bool:
    """Whether changing a device from ``old`` to ``new`` applies to a running container
    without a restart: a disk with a source comes and goes live (LXD's hotplug: a change is
    an unmount and a mount); otherwise same type, and every changed key is a live one (the
    root disk's ``size`` is). Adding or removing any other device is not live."""
    if (old is not None or new is not None) and all(d is None or is_bind_disk(d) for d in (old, new)):
        return True
    if old is None or new is None or old.get("type") != new.get("type"):
        return False
    table = DEVICE_TYPES.get(str(new.get("type", "")))
    if table is None:
        return False
    o = normalize_devices({"d": old})["d"]
    n = normalize_devices({"d": new})["d"]
    changed = {k for k in set(o) | set(n) if o.get(k) != n.get(k)}
    return all(k in table and table[k].live for k in changed)


def root_disk_size(devices: Mapping[str, Mapping[str, str]]) -> int | None:
    """Bytes of the root disk's ``size`` in an expanded devices map, None when unset."""
    for dev in devices.values():
        if is_root_disk(dev) and dev.get("size"):
            return parse_size(str(dev["size"]))
    return None


def root_disk_pool(devices: Mapping[str, Mapping[str, str]]) -> str | None:
    """The pool of the root disk in an expanded devices map, None without one."""
    for dev in devices.values():
        if is_root_disk(dev):
            return dev.get("pool")
    return None


def is_bind_disk(device: Mapping[str, str]) -> bool:
    """Whether a device is a disk mounted from a source: a host path, or a custom volume
    (``pool`` + ``source``); not the root disk."""
    return device.get("type") == "disk" and bool(device.get("source")) and not is_root_disk(device)


def disk_order(devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The names of the bind disks of ``devices`` in the order LXD mounts them: shorter
    container paths (fewer components) first, so a disk on ``/srv`` is there before one on
    ``/srv/data``; then by path and name, so the order never depends on the map's."""
    def key(name: str) -> tuple[int, str, str]:
        path = normalize_path(str(devices[name].get("path", "/")))
        return len([p for p in path.split("/") if p]), path, name
    return sorted((n for n, d in devices.items() if is_bind_disk(d)), key=key)


def is_root_disk(device: Mapping[str, str]) -> bool:
    """Whether a device is the root disk (``type: disk`` with ``path: /``)."""
    path = str(device.get("path", ""))
    return device.get("type") == "disk" and path.startswith("/") and normalize_path(path) == "/"


def describe_device_keys() -> list[tuple[str, str, str, bool]]:
    """``(device type, key, doc, live)`` for every device key, sorted, for docs and --help."""
    return sorted((t, k.name, k.doc, k.live) for t, tab in DEVICE_TYPES.items() for k in tab.values())
