"""Config-key rule machinery shared by every key table (containers, devices, pools, networks).

Model layer, pure (stdlib only). A table maps a key name to a :class:`Key`: its validator,
normaliser, default, doc and whether a change is live. This module holds the :class:`Key`
type, the builders that turn raising parsers into validators/normalisers, the value rules
several tables share (booleans, integers, sizes, paths, MTU), and the generic table
operations (:func:`lookup_key`, :func:`validate_table`, :func:`normalize_table`). The tables
themselves live with their objects: :mod:`sysmgr.model.keys` (container config),
:mod:`sysmgr.model.device_keys`, :mod:`sysmgr.model.network_keys`.

Values are strings, as in LXD; the empty string means "unset", hence every validator built
by :func:`check` accepts ``""``. Key families (``user.*``...) are entries whose name ends in
``.*``.
"""

from __future__ import annotations

import datetime
import difflib
import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from sysmgr._util.sizes import parse_size

Validator = Callable[[str], str | None]
Normalizer = Callable[[str], str]
Problem = tuple[str, str]  # (key path, reason)


def same(value: str) -> str:
    """The identity normaliser: the value is already canonical."""
    return value


def accept(value: str) -> None:
    """The validator of free-form keys: every value is valid."""
    return None


@dataclass(frozen=True)
class Key:
    """One config key (or a key family when ``name`` ends in ``.*``).

    Attributes:
        name: the key, e.g. ``limits.memory``, or a family such as ``user.*``.
        validate: returns the reason a value is invalid, or None. Gets a string.
        normalize: canonical form of a *valid* value, used to compare values in diffs.
        live: a change can be applied to a running container without a restart.
        doc: one line for docs and ``--help``.
        default: the value that applies when the key is unset (None: no default/unlimited).
        managed: server-generated (``volatile.*``, ``image.*``): rejected in manifests,
            ignored by diffs.
        suffix_check: families only: checks the part of the key after the prefix.
        listable: a manifest may give the value as a YAML list, stored comma-separated
            (``boot.depends: [db1, cache1]``).
    """

    name: str
    validate: Validator = accept
    normalize: Normalizer = same
    live: bool = False
    doc: str = ""
    default: str | None = None
    managed: bool = False
    suffix_check: Callable[[str], str | None] | None = None
    listable: bool = False

    @property
    def is_family(self) -> bool:
        return self.name.endswith(".*")

    @property
    def prefix(self) -> str:
        """``user.`` for ``user.*``; the name itself for a plain key."""
        return self.name[:-1] if self.is_family else self.name


# -- value parsers shared by several tables (raise ValueError with the reason) ------------------

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_bool(value: str) -> bool:
    """Parse an LXD-style boolean (true/false, yes/no, on/off, 1/0, any case).

    Raises:
        ValueError: with a readable reason when ``value`` is not a boolean.
    """
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"invalid boolean {value!r}: expected true or false (or yes/no, on/off, 1/0)")


def parse_int(value: str, *, minimum: int | None = None, maximum: int | None = None,
              what: str = "integer") -> int:
    """Parse a whole number within ``minimum``..``maximum``; ``what`` names it in errors.

    Raises:
        ValueError: with a readable reason.
    """
    v = value.strip()
    if not re.fullmatch(r"[+-]?\d+", v):
        raise ValueError(f"invalid {what} {value!r}: expected a whole number")
    n = int(v)
    if minimum is not None and n < minimum:
        raise ValueError(f"invalid {what} {value!r}: must be at least {minimum}")
    if maximum is not None and n > maximum:
        raise ValueError(f"invalid {what} {value!r}: must be at most {maximum}")
    return n


def abs_path(value: str) -> None:
    """Check that ``value`` is an absolute path.

    Raises:
        ValueError: with a readable reason.
    """
    if not value.startswith("/"):
        raise ValueError(f"invalid path {value!r}: must be absolute (start with '/')")
    if "\0" in value:
        raise ValueError("invalid path: must not contain NUL")


def normalize_path(value: str) -> str:
    """``/srv//pool/`` -> ``/srv/pool`` (same directory, same string; ``//x`` -> ``/x``)."""
    n = posixpath.normpath(value)
    # POSIX lets normpath keep a leading "//"; on Linux it is just "/"
    return "/" + n.lstrip("/") if n.startswith("//") else n


# -- validator/normaliser builders -------------------------------------------------------------

def check(parse: Callable[[str], object]) -> Validator:
    """Turn a raising parser into a validator; ``""`` (unset) is always valid."""

    def validate(value: str) -> str | None:
        if value == "":
            return None
        try:
            parse(value)
        except ValueError as e:
            return str(e)
        return None

    return validate


def norm(fn: Normalizer) -> Normalizer:
    """Wrap a normaliser so that ``""`` (unset) stays ``""``."""

    def normalize(value: str) -> str:
        return "" if value == "" else fn(value)

    return normalize


def reject(reason: str) -> Validator:
    """A validator refusing every value with ``reason`` (server-managed, unsupported keys)."""

    def validate(value: str) -> str | None:
        return reason

    return validate


BOOL = check(parse_bool)
NORM_BOOL = norm(lambda v: "true" if parse_bool(v) else "false")


def int_key(minimum: int | None = None, maximum: int | None = None, what: str = "integer"
            ) -> tuple[Validator, Normalizer]:
    """Validator and normaliser of an integer key (``"+5"`` normalises to ``"5"``)."""

    def parse(v: str) -> int:
        return parse_int(v, minimum=minimum, maximum=maximum, what=what)

    return check(parse), norm(lambda v: str(parse(v)))


def size_key() -> tuple[Validator, Normalizer]:
    """Validator and normaliser of a size key (``64MiB`` normalises to bytes)."""
    return check(parse_size), norm(lambda v: str(parse_size(v)))


def choice_key(*values: str, what: str = "value") -> tuple[Validator, Normalizer]:
    """Validator and normaliser of a key taking one of ``values`` (any case)."""

    def parse(v: str) -> str:
        word = v.strip().lower()
        if word not in values:
            raise ValueError(f"invalid {what} {v!r}: expected one of {', '.join(values)}")
        return word

    return check(parse), norm(parse)


#: nic devices and network bridges share the kernel's sensible MTU bounds
MTU = int_key(minimum=576, maximum=9000, what="MTU")


# -- tables ------------------------------------------------------------------------------------

def key_table(*keys: Key) -> dict[str, Key]:
    """A rule table: key name -> :class:`Key`."""
    return {k.name: k for k in keys}


def lookup_key(table: Mapping[str, Key], key: str) -> Key | None:
    """The rule of ``key`` in ``table``: the exact key, else the longest matching family."""
    k = table.get(key)
    if k is not None and not k.is_family:
        return k
    best: Key | None = None
    for cand in table.values():
        if cand.is_family and key.startswith(cand.prefix):
            if best is None or len(cand.prefix) > len(best.prefix):
                best = cand
    return best


def _suggest(key: str, table: Mapping[str, Key]) -> str:
    plain = [k for k in table if not k.endswith(".*")]
    close = difflib.get_close_matches(key, plain, n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]!r}?)"
    head, dot, rest = key.partition(".")
    if dot:
        prefixes = [k[:-2] for k in table if k.endswith(".*")]
        close = difflib.get_close_matches(head, prefixes, n=1, cutoff=0.75)
        if close:
            return f" (did you mean {close[0] + '.' + rest!r}?)"
    return ""


def value_to_str(value: object) -> str:
    """Convert a config value to its string form as LXD does (``True`` -> ``"true"``).

    Raises:
        TypeError: for None, mappings, lists and other non-scalars.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, datetime.date)):  # date: YAML 1.1 resolves 2024-01-01
        return str(value)
    what = {dict: "a mapping", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)
    raise TypeError(f"expected a string, number or boolean, got {what}")


def validate_table(table: Mapping[str, Key], config: Mapping[str, object], where: str,
                   what: str) -> list[Problem]:
    """Check ``config`` against ``table``: unknown keys (with a suggestion), non-string
    values, family keys without a name or with a bad suffix, invalid values.

    Args:
        where: prefix of the returned key paths (``config``, ``devices.eth0``).
        what: names the table in messages (``config``, ``nic device``).

    Returns:
        One ``(key path, reason)`` per problem; empty when valid.
    """
    problems: list[Problem] = []
    for key, raw in config.items():
        path = f"{where}.{key}"
        if not isinstance(key, str):
            problems.append((path, f"{what} keys must be strings, got {type(key).__name__}"))
            continue
        try:
            value = value_to_str(raw)
        except TypeError as e:
            problems.append((path, str(e)))
            continue
        rule = lookup_key(table, key)
        if rule is None:
            problems.append((path, f"unknown {what} key {key!r}{_suggest(key, table)}"))
            continue
        if rule.is_family and not rule.managed and key == rule.prefix:
            problems.append((path, f"expected a name after {rule.prefix!r}, e.g. {rule.prefix}NAME"))
            continue
        if rule.is_family and rule.suffix_check is not None:
            reason = rule.suffix_check(key[len(rule.prefix):])
            if reason:
                problems.append((path, reason))
                continue
        reason = rule.validate(value)
        if reason:
            problems.append((path, reason))
    return problems


def normalize_table(table: Mapping[str, Key], config: Mapping[str, object],
                    drop_managed: bool) -> dict[str, str]:
    """Canonical form of ``config`` for diffs: valid values normalised through ``table``,
    invalid or unknown ones kept as strings; managed keys dropped when ``drop_managed``."""
    out: dict[str, str] = {}
    for key, raw in config.items():
        value = value_to_str(raw)
        rule = lookup_key(table, str(key))
        if rule is not None and rule.managed and drop_managed:
            continue
        if rule is not None and rule.validate(value) is None:
            value = rule.normalize(value)
        out[str(key)] = value
    return out
