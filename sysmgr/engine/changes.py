"""The changed keys of a plan (pure): what the planner compares, and what a plan line shows.

Values are compared normalised (``64MiB`` == ``67108864``). A plan shows a device key by key
(``~ devices.eth0.ipv4.address: 10.0.0.50 -> 10.0.0.51``), and where a container's own key
was, or will be, absent, the value in effect and the profile it comes from
(``~ config.limits.memory: 256MiB (profile small) -> 512MiB``): the user sees what the
container had and will have, not only what its record stores.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from sysmgr.engine.actions import Change
from sysmgr.model import keys as mkeys

Devices = Mapping[str, Mapping[str, str]]
#: a container's profiles in order: (name, config, devices)
Layers = Sequence[tuple[str, Mapping[str, str], Devices]]


def config_changes(prefix: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """One change per key whose normalised value differs."""
    o, n = mkeys.normalize_config(old), mkeys.normalize_config(new)
    return [Change(f"{prefix}.{k}", old.get(k), new.get(k))
            for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]


def device_changes(old: Devices, new: Devices) -> list[Change]:
    """One change per device that differs (normalised), whole."""
    o, n = mkeys.normalize_devices(old), mkeys.normalize_devices(new)
    return [Change(f"devices.{k}", old.get(k), new.get(k))
            for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]


def live_device(change: Change, old: Devices, new: Devices) -> bool:
    """A device change a running container takes without a restart (root disk ``size``)."""
    name = change.path[len("devices."):]
    return mkeys.device_change_is_live(old.get(name), new.get(name))


def _key_from(layers: Layers, key: str) -> tuple[str | None, str]:
    """The value of config ``key`` the profiles give, and the profile that gives it."""
    for name, config, _ in reversed(layers):
        if key in config:
            return config[key], name
    return None, ""


def _device_from(layers: Layers, dev: str) -> tuple[Mapping[str, str] | None, str]:
    for name, _, devices in reversed(layers):
        if dev in devices:
            d = devices[dev]
            return (None, "") if d.get("type") == "none" else (d, name)
    return None, ""


def shown_config(old: Mapping[str, str], new: Mapping[str, str], old_layers: Layers = (),
                 new_layers: Layers = ()) -> list[Change]:
    """:func:`config_changes` of the own keys, an absent side shown as the profiles' value."""
    out = []
    for c in config_changes("config", old, new):
        key = c.path[len("config."):]
        if c.old is None:
            value, src = _key_from(old_layers, key)
            c = dataclasses.replace(c, old=value, old_from=src) if src else c
        if c.new is None:
            value, src = _key_from(new_layers, key)
            c = dataclasses.replace(c, new=value, new_from=src) if src else c
        out.append(c)
    return out


def shown_devices(old: Devices, new: Devices, old_layers: Layers = (),
                  new_layers: Layers = ()) -> list[Change]:
    """The own devices that differ, key by key where a device stays of the same type; an
    absent side is the profiles' device of that name (and says so)."""
    out: list[Change] = []
    for c in device_changes(old, new):
        name = c.path[len("devices."):]
        od, of = (old[name], "") if name in old else _device_from(old_layers, name)
        nd, nf = (new[name], "") if name in new else _device_from(new_layers, name)
        if od is None or nd is None or od.get("type") != nd.get("type"):
            out.append(Change(c.path, od, nd, old_from=of, new_from=nf))
            continue
        on = mkeys.normalize_devices({name: od})[name]
        nn = mkeys.normalize_devices({name: nd})[name]
        out += [Change(f"{c.path}.{k}", od.get(k), nd.get(k),
                       old_from=of if k in od else "", new_from=nf if k in nd else "")
                for k in sorted(set(on) | set(nn)) if on.get(k) != nn.get(k)]
    return out
