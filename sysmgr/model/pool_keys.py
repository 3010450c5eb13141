"""Storage pool config keys: one rule table per pool driver, the only place they are described.

Model layer, pure. The loader (manifests) and the engine (``storage create``) validate a pool's
config here before any driver is made; diffs compare values through the normalisers (``1GiB`` ==
``1073741824``, ``/a//b/`` == ``/a/b``); docs come from :func:`describe_pool_keys`. Drivers never
import this (the model sits above them): a driver only refuses key names it does not read, for
when it is used directly. The rule machinery is :mod:`sysmgr.model.keyrules`'.

Values are strings, as in LXD; ``""`` means unset and is always valid. The drivers a manifest
may name are the tables' (:func:`driver_problem`; ``tests/unit/test_model_keys.py`` keeps them
equal to the driver registry's, test-only ``fake`` aside): a manifest naming another is refused
at validate time, with its file and line. A driver without a table (the test-only ``fake``,
used through the API) is the engine's business: nothing is checked for it.
"""

from __future__ import annotations

from typing import Mapping

from sysmgr._util.sizes import format_size, parse_size
from sysmgr.model.keyrules import (
    Key, Problem, abs_path, accept, check, key_table, norm, normalize_path, normalize_table, same,
    validate_table)
from sysmgr.model.suggest import did_you_mean

#: mkfs.btrfs refuses devices under ~109 MiB; the btrfs driver refuses a loop file under this
MIN_BTRFS_LOOP = 128 * 1024**2


def _loop_size(value: str) -> int:
    size = parse_size(value)
    if size < MIN_BTRFS_LOOP:
        raise ValueError(f"size {value} is too small for a btrfs loop file "
                         f"(at least {format_size(MIN_BTRFS_LOOP)})")
    return size


_PATH = (check(abs_path), norm(normalize_path))
_LOOP_SIZE = (check(_loop_size), norm(lambda v: str(parse_size(v))))
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
        Key("size", *_LOOP_SIZE,
            doc="Size of the loop file sysmgr creates (e.g. 10GiB; default: 20% of the free "
                "space, 5GiB to 30GiB); 'storage set POOL size=' grows it in use."),
        _USER,
    ),
}


def driver_problem(driver: str) -> str | None:
    """Why a manifest cannot name storage pool driver ``driver`` (None: it can)."""
    if driver in POOL_DRIVER_KEYS:
        return None
    known = ", ".join(sorted(POOL_DRIVER_KEYS))
    return f"unknown storage pool driver {driver!r}{did_you_mean(driver, POOL_DRIVER_KEYS)} " \
           f"(known: {known})"


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
