"""Storage pool config keys: one rule table per pool driver, the only place they are described.

Model layer, pure. The loader (manifests) and the engine (``storage create``) validate a pool's
config here before any driver is made; diffs compare values through the normalisers (``1GiB`` ==
``1073741824``, ``/a//b/`` == ``/a/b``); docs come from :func:`describe_pool_keys`. Drivers never
import this (the model sits above them): a driver only refuses key names it does not read, for
when it is used directly. The rule machinery is :mod:`sysmgr.model.keyrules`'.

Values are strings, as in LXD; ``""`` means unset and is always valid. A driver without a table
here (the test-only ``fake``) is the engine's business: nothing is checked for it.
"""

from __future__ import annotations

from typing import Mapping

from sysmgr.model.keyrules import (
    Key, Problem, abs_path, accept, check, key_table, norm, normalize_path, normalize_table, same,
    size_key, validate_table)

_PATH = (check(abs_path), norm(normalize_path))
_SIZE = size_key()
_USER = Key("user.*", accept, same, doc="Free-form user metadata.")

POOL_DRIVER_KEYS: dict[str, dict[str, Key]] = {
    "dir": key_table(
        Key("source", *_PATH,
            doc="Directory holding the pool (created if missing; an existing one must be "
                "empty; default: under the sysmgr root)."),
        _USER,
    ),
    "btrfs": key_table(
        Key("source", *_PATH,
            doc="An existing btrfs path, or with size: where to create the loop file "
                "(default: under the sysmgr root)."),
        Key("size", *_SIZE,
            doc="Size of the loop file sysmgr creates (e.g. 10GiB; default: 20% of the free "
                "space, 5GiB to 30GiB); 'storage set POOL size=' grows it in use."),
        _USER,
    ),
}


def validate_pool_config(driver: str, config: Mapping[str, object], *,
                         where: str = "config") -> list[Problem]:
    """Check a storage pool's config against its driver's key table.

    Drivers without a table here (the test ``fake`` driver, drivers registered later) are
    left to the engine, which knows the registered drivers: the result is then empty.

    Returns:
        One ``(key path, reason)`` per problem.
    """
    table = POOL_DRIVER_KEYS.get(driver)
    if table is None:
        return []
    return validate_table(table, config, where, f"{driver} pool config")


def normalize_pool_config(driver: str, config: Mapping[str, object]) -> dict[str, str]:
    """Canonical form of a pool config (for diffs); unknown drivers keep values as strings.

    Invalid or unknown values are kept as they are (validation reports them).
    """
    return normalize_table(POOL_DRIVER_KEYS.get(driver, {}), config, drop_managed=False)


def describe_pool_keys() -> list[tuple[str, str, str]]:
    """``(driver, key, doc)`` for every storage pool driver key, sorted."""
    return sorted((d, k.name, k.doc) for d, tab in POOL_DRIVER_KEYS.items() for k in tab.values())
