"""Storage pool config keys: one rule table per pool driver, the only place they are described.

Model layer, pure (stdlib and :mod:`sysmgr._util.sizes`). The loader (manifests) and the engine
(``storage create``) validate a pool's config here before any driver is made; diffs compare
values through the normalisers (``1GiB`` == ``1073741824``, ``/a//b/`` == ``/a/b``); docs come
from :func:`describe_pool_keys`. Drivers never import this (the model sits above them): a
driver only refuses key names it does not read, for when it is used directly.

Values are strings, as in LXD; ``""`` means unset and is always valid. A driver without a table
here (the test-only ``fake``) is the engine's business: nothing is checked for it.

This module does not import :mod:`sysmgr.model.keys`, because ``keys`` re-exports these names
for its existing importers (an import back would be a circle). So the few conventions it shares
with the container key tables are restated here in small: how values become strings (as
``keys.value_to_str``), the unknown-key message and its "did you mean" suggestion.
"""

from __future__ import annotations

import datetime
import difflib
import posixpath
from dataclasses import dataclass
from typing import Callable, Mapping

from sysmgr._util.sizes import parse_size

Problem = tuple[str, str]  # (key path, reason), as in sysmgr.model.keys


@dataclass(frozen=True)
class PoolKey:
    """One pool config key.

    Attributes:
        name: the key, e.g. ``size``.
        parse: the canonical form of a value (compared in diffs); raises ValueError with a
            readable reason for an invalid one.
        doc: one line for docs and ``--help``.
    """

    name: str
    parse: Callable[[str], str]
    doc: str = ""

    def validate(self, value: str) -> str | None:
        """The reason ``value`` is invalid, or None (``""``, unset, is valid)."""
        if value == "":
            return None
        try:
            self.parse(value)
        except ValueError as e:
            return str(e)
        return None

    def normalize(self, value: str) -> str:
        """Canonical form of a *valid* value."""
        return "" if value == "" else self.parse(value)


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"invalid path {value!r}: must be absolute (start with '/')")
    if "\0" in value:
        raise ValueError("invalid path: must not contain NUL")
    n = posixpath.normpath(value)
    # POSIX lets normpath keep a leading "//"; on Linux it is just "/"
    return "/" + n.lstrip("/") if n.startswith("//") else n


def _size(value: str) -> str:
    return str(parse_size(value))


def _table(*keys: PoolKey) -> dict[str, PoolKey]:
    return {k.name: k for k in keys}


POOL_DRIVER_KEYS: dict[str, dict[str, PoolKey]] = {
    "dir": _table(
        PoolKey("source", _path,
                doc="Directory holding the pool (created if missing; an existing one must be "
                    "empty; default: under the sysmgr root)."),
    ),
    "btrfs": _table(
        PoolKey("source", _path,
                doc="An existing btrfs path, or with size: where to create the loop file "
                    "(default: under the sysmgr root)."),
        PoolKey("size", _size,
                doc="Size of the loop file sysmgr creates (e.g. 10GiB; default: 20% of the free "
                    "space, 5GiB to 30GiB)."),
    ),
}


def _as_str(value: object) -> str:
    """A config value as a string, as LXD converts it (``True`` -> ``"true"``); TypeError for
    null, mappings, lists and other non-scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, datetime.date)):  # date: YAML 1.1 resolves 2024-01-01
        return str(value)
    what = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)
    raise TypeError(f"expected a string, number or boolean, got {what}")


def _suggest(key: str, table: Mapping[str, PoolKey]) -> str:
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    what = f"{driver} pool config"
    problems: list[Problem] = []
    for key, raw in config.items():
        path = f"{where}.{key}"
        if not isinstance(key, str):
            problems.append((path, f"{what} keys must be strings, got {type(key).__name__}"))
            continue
        try:
            value = _as_str(raw)
        except TypeError as e:
            problems.append((path, str(e)))
            continue
        rule = table.get(key)
        if rule is None:
            problems.append((path, f"unknown {what} key {key!r}{_suggest(key, table)}"))
            continue
        reason = rule.validate(value)
        if reason:
            problems.append((path, reason))
    return problems


def normalize_pool_config(driver: str, config: Mapping[str, object]) -> dict[str, str]:
    """Canonical form of a pool config (for diffs); unknown drivers keep values as strings.

    Invalid or unknown values are kept as they are (validation reports them).
    """
    table = POOL_DRIVER_KEYS.get(driver, {})
    out: dict[str, str] = {}
    for key, raw in config.items():
        value = _as_str(raw)
        rule = table.get(str(key))
        if rule is not None and rule.validate(value) is None:
            value = rule.normalize(value)
        out[str(key)] = value
    return out


def describe_pool_keys() -> list[tuple[str, str, str]]:
    """``(driver, key, doc)`` for every storage pool driver key, sorted."""
    return sorted((d, k.name, k.doc) for d, tab in POOL_DRIVER_KEYS.items() for k in tab.values())
