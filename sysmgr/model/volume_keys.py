"""Custom storage volumes in the model: their config keys, names, and the ``kind:
StorageVolume`` document (its cerberus schema and builder, the loader's ``KINDS`` entry).

Model layer, pure. A volume is named by its pool and its name (``default/data``): the same
name may be used on two pools, so a document's identity in a manifest is ``POOL/NAME``
(:attr:`~sysmgr.model.objects.StorageVolumeSpec.name`). Config keys: ``size`` (a quota,
live; a dir pool cannot enforce one, which the engine says) and the free-form ``user.*``.

    kind: StorageVolume
    name: data
    pool: default
    config: {size: 1GiB}
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from sysmgr.model.keyrules import (
    Key, Problem, accept, key_table, normalize_table, same, size_key, validate_table)
from sysmgr.model.names import object_name_problem
from sysmgr.model.objects import StorageVolumeSpec

VOLUME_KEYS: dict[str, Key] = key_table(
    Key("size", *size_key(), live=True,
        doc="Quota of the volume (btrfs: a qgroup limit, changed live; dir pools cannot "
            "enforce one)."),
    Key("user.*", accept, same, live=True, doc="Free-form user metadata."),
)
# the pool layout's rule for a volume's directory name (drivers' check_name)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def volume_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a custom volume (None: it can): letters, digits, ``-``,
    ``_`` and ``.``, not starting with ``.`` or ``-``, at most 63 characters."""
    reason = object_name_problem(name)
    if reason:
        return reason
    if not _NAME_RE.fullmatch(name):
        return "use letters, digits, '-', '_' and '.', not starting with '.' or '-'"
    return None


def validate_volume_config(config: Mapping[str, object], *, where: str = "config") -> list[Problem]:
    """Check a volume's config against :data:`VOLUME_KEYS`; one problem per key."""
    return validate_table(VOLUME_KEYS, config, where, "storage volume config")


def normalize_volume_config(config: Mapping[str, object]) -> dict[str, str]:
    """Canonical form for diffs (``1GiB`` == ``1073741824``)."""
    return normalize_table(VOLUME_KEYS, config, drop_managed=False)


def describe_volume_keys() -> list[tuple[str, str, bool]]:
    """``(key, doc, live)`` of every volume key, sorted."""
    return sorted((k.name, k.doc, k.live) for k in VOLUME_KEYS.values())


SCHEMA: dict[str, Any] = {
    "kind": {"type": "string", "required": True},
    "name": {"type": "string", "required": True},
    "pool": {"type": "string", "required": True},
    "config": {"type": "dict", "nullable": True, "keysrules": {"type": "string"},
               "valuesrules": {"type": ["string", "integer", "float", "boolean"]}},
    "description": {"type": ["string", "integer", "float"], "nullable": True},
    "prune": {"type": "boolean"},
}


def build(doc: Mapping[str, Any], ctx: Any) -> StorageVolumeSpec:
    """The builder of ``kind: StorageVolume`` documents (the loader's ``KINDS`` entry)."""
    name = doc.get("name") if isinstance(doc.get("name"), str) else ""
    pool = doc.get("pool") if isinstance(doc.get("pool"), str) else ""
    if name and volume_name_problem(name):
        ctx.problem("name", f"invalid name {name!r}: {volume_name_problem(name)}")
    if pool and object_name_problem(pool):
        ctx.problem("pool", f"invalid pool name {pool!r}: {object_name_problem(pool)}")
    config = ctx.string_map("config", doc.get("config"))
    ctx.problems(validate_volume_config(config))
    description = doc.get("description")
    return StorageVolumeSpec(
        pool=pool, volume=name, config=config,
        description="" if description is None else ctx.string("description", description),
        source=ctx.source)
