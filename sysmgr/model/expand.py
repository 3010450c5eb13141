"""Profile expansion, exactly as LXD does it (model layer, pure).

A container's *expanded* config and devices are its profiles' applied in order, then its own:

- config keys: later wins per key (an empty value still wins: it unsets the key);
- devices: later wins per device name, *whole* (keys are never merged across definitions);
- a device of ``type: none`` removes an inherited device of that name and does not appear in
  the result.

:func:`validate_expanded` then checks what only makes sense on the whole picture (exactly
one root disk, no two devices claiming the same mount point or interface name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sysmgr.errors import Issue, ValidationError

if TYPE_CHECKING:  # pragma: no cover - annotations only: expand() is on every hot verb's path
    from sysmgr.model.keyrules import Problem
    from sysmgr.model.objects import ContainerSpec, ProfileSpec

ConfigIn = Mapping[str, str]
DevicesIn = Mapping[str, Mapping[str, str]]


def expand(profiles: Sequence[tuple[ConfigIn, DevicesIn]], config: ConfigIn,
           devices: DevicesIn) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Merge profiles and a container's own config/devices (LXD rules).

    Args:
        profiles: ``(config, devices)`` of each profile, in the container's profile order.
        config: the container's own (local) config.
        devices: the container's own (local) devices.

    Returns:
        ``(expanded_config, expanded_devices)``: new dicts, the inputs are not modified.
    """
    out_config: dict[str, str] = {}
    out_devices: dict[str, dict[str, str]] = {}
    for layer_config, layer_devices in [*profiles, (config, devices)]:
        out_config.update(layer_config)
        for name, dev in layer_devices.items():
            if dev.get("type") == "none":
                out_devices.pop(name, None)
            else:
                out_devices[name] = dict(dev)  # whole replacement, never a key merge
    return out_config, out_devices


def env_from_config(expanded: Mapping[str, str]) -> dict[str, str]:
    """The ``environment.*`` keys of an expanded config as ``{NAME: value}`` (here, not
    with the key tables: ``exec`` needs it and nothing else of them)."""
    prefix = "environment."
    return {k[len(prefix):]: str(v) for k, v in expanded.items()
            if k.startswith(prefix) and len(k) > len(prefix)}


def expand_spec(spec: ContainerSpec, profiles: Mapping[str, ProfileSpec]
                ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Expand a :class:`ContainerSpec` against profiles looked up by name.

    Args:
        spec: the container.
        profiles: profile name -> spec (from the manifest and/or the host's state).

    Returns:
        ``(expanded_config, expanded_devices)``.

    Raises:
        ValidationError: one issue per profile the container uses that is not in ``profiles``.
    """
    missing = [p for p in spec.profiles if p not in profiles]
    if missing:
        src = spec.source
        raise ValidationError([
            Issue(f"container {spec.name!r} uses profile {p!r}, which does not exist",
                  file=src.file, line=src.line, path="profiles")
            for p in missing
        ])
    layers = [(profiles[p].config, profiles[p].devices) for p in spec.profiles]
    return expand(layers, spec.config, spec.devices)


def validate_expanded(config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]]
                      ) -> list[Problem]:
    """Check an expanded container as a whole.

    Args:
        config: expanded config (currently no whole-container config rules).
        devices: expanded devices.

    Returns:
        One ``(key path, reason)`` per problem: no root disk, several root disks, two disks on
        the same mount point, two nics with the same interface name.
    """
    # the key rules only here: merging (expand) must stay cheap for exec, start and list
    from sysmgr.model.device_keys import is_root_disk
    from sysmgr.model.keyrules import normalize_path

    problems: list[Problem] = []
    roots = sorted(n for n, d in devices.items() if is_root_disk(d))
    if not roots:
        problems.append(("devices", "no root disk device: add devices.root {type: disk, path: /, "
                                    "pool: NAME} to the container or one of its profiles"))
    elif len(roots) > 1:
        names = ", ".join(repr(n) for n in roots)
        problems.append((f"devices.{roots[1]}",
                         f"more than one root disk (path: /): {names}; keep exactly one"))

    mounts: dict[str, str] = {}
    ifnames: dict[str, str] = {}
    for name in sorted(devices):
        dev = devices[name]
        if dev.get("type") == "disk" and not is_root_disk(dev) and dev.get("path"):
            path = normalize_path(str(dev["path"]))
            if path in mounts:
                problems.append((f"devices.{name}.path",
                                 f"mount point {path!r} is also used by device {mounts[path]!r}"))
            else:
                mounts[path] = name
        elif dev.get("type") == "nic":
            ifname = str(dev.get("name") or name)
            if ifname in ifnames:
                problems.append((f"devices.{name}.name",
                                 f"interface name {ifname!r} is also used by device {ifnames[ifname]!r}"))
            else:
                ifnames[ifname] = name
    return problems
