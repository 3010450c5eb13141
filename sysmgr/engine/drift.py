"""Drift: which planned changes put back what the host lost or had changed by hand (pure).

Apply records what it asked of every object its manifests describe (:mod:`sysmgr.state.applied`,
written from :func:`definitions`). A later plan's change whose wanted value is still the one
applied was not made by the manifests: the host drifted, and the change is marked so its
plan line says ``(drift: KEY OLD -> NEW)`` and the apply logs a ``drift`` event. Without a
record (objects applied before sysmgr recorded them) nothing is called drift.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping

from sysmgr.engine.actions import Change
from sysmgr.model import keys as mkeys
from sysmgr.model import network_keys as nkeys
from sysmgr.model.objects import ContainerSpec, Manifest, NetworkSpec, ProfileSpec

Definition = Mapping[str, Any]


def definition(spec: object) -> dict[str, Any] | None:
    """What a manifest asks of one object, normalised as the planner compares it (None for
    kinds that cannot drift: pools and images are created, never updated)."""
    if isinstance(spec, ContainerSpec):
        return {"profiles": list(spec.profiles), "config": mkeys.normalize_config(spec.config),
                "devices": mkeys.normalize_devices(spec.devices),
                "description": spec.description, "state": spec.state}
    if isinstance(spec, ProfileSpec):
        return {"config": mkeys.normalize_config(spec.config),
                "devices": mkeys.normalize_devices(spec.devices), "description": spec.description}
    if isinstance(spec, NetworkSpec):
        return {"config": nkeys.normalize_network_config(spec.type, spec.config),
                "description": spec.description}
    return None


def definitions(manifest: Manifest) -> tuple[tuple[str, str, str], ...]:
    """(kind, name, JSON definition) of every object of ``manifest`` that can drift: what a
    successful apply of it records."""
    out = []
    for spec in manifest.specs:
        d = definition(spec)
        if d is not None:
            out.append((spec.kind, spec.name, json.dumps(d, sort_keys=True)))
    return tuple(out)


def _at(d: Definition, path: str) -> Any:
    """The value at a change's path: ``config.KEY``, ``devices.NAME[.KEY]``, ``profiles``..."""
    head, _, rest = path.partition(".")
    value = d.get(head)
    if not rest:
        return value
    if head == "devices":  # device names have no dots; their keys may (ipv4.address)
        name, _, key = rest.partition(".")
        value = value.get(name) if isinstance(value, Mapping) else None
        if not key:
            return value
        rest = key
    return value.get(rest) if isinstance(value, Mapping) else None


def marked(changes: Iterable[Change], applied: Definition | None, wanted: Definition | None
           ) -> tuple[Change, ...]:
    """``changes`` with ``drift`` set on those whose wanted value is still the applied one."""
    out = tuple(changes)
    if applied is None or wanted is None:
        return out
    return tuple(dataclasses.replace(c, drift=True) if _at(applied, c.path) == _at(wanted, c.path)
                 else c for c in out)
