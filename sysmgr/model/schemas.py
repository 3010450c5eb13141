"""Cerberus schemas for the structure of each ``kind:`` document (model layer, pure).

The schemas check shape only: which top-level fields exist, their types, required fields and
enumerations such as ``state: running|stopped``. ``config`` is just "a mapping of scalars"
here; its keys and values are checked by :mod:`sysmgr.model.keys` rule tables. Cerberus
errors are translated into ``(document path, reason)`` pairs with readable reasons; the
loader attaches file and line.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

import cerberus

from sysmgr.model.suggest import did_you_mean

Path = tuple[Any, ...]

# YAML 1.1 also resolves dates and timestamps; the loader keeps their text as written
SCALAR = ["string", "integer", "float", "boolean", "date", "datetime"]

_KIND = {"type": "string", "required": True}
_NAME = {"type": "string", "required": True}
# free text: numbers are accepted and kept as written ("2024")
_DESCRIPTION = {"type": SCALAR, "nullable": True}
# prune: false keeps an object created from manifests when it leaves them (apply --prune)
_PRUNE = {"type": "boolean"}
# an empty "config:" (every entry commented out) is an empty map, not an error
# (a list only where the key table says so: checked by the loader, which knows the key)
_CONFIG = {
    "type": "dict",
    "nullable": True,
    "keysrules": {"type": "string"},
    "valuesrules": {"type": [*SCALAR, "list"], "schema": {"type": SCALAR}},
}
_DEVICES = {
    "type": "dict",
    "nullable": True,
    "keysrules": {"type": "string"},
    "valuesrules": {
        "type": "dict",
        "keysrules": {"type": "string"},
        "schema": {"type": {"type": "string", "required": True}},
        "allow_unknown": {"type": SCALAR},
    },
}

STORAGE_POOL: dict[str, Any] = {
    "kind": _KIND,
    "name": _NAME,
    "driver": {"type": "string", "required": True},
    "config": _CONFIG,
    "description": _DESCRIPTION,
    "prune": _PRUNE,
}

PROFILE: dict[str, Any] = {
    "kind": _KIND,
    "name": _NAME,
    "description": _DESCRIPTION,
    "config": _CONFIG,
    "devices": _DEVICES,
    "prune": _PRUNE,
}

IMAGE: dict[str, Any] = {
    "kind": _KIND,
    "name": _NAME,
    # "busybox" is shorthand for {builder: busybox}
    "build": {
        "type": ["string", "dict"],
        "keysrules": {"type": "string"},
        "valuesrules": {"type": SCALAR},
    },
    "path": {"type": "string"},
    "description": _DESCRIPTION,
    "prune": _PRUNE,
}

NETWORK: dict[str, Any] = {
    "kind": _KIND,
    "name": _NAME,
    "type": {"type": "string", "nullable": True},
    "config": _CONFIG,
    "description": _DESCRIPTION,
    "prune": _PRUNE,
}

CONTAINER: dict[str, Any] = {
    "kind": _KIND,
    "name": _NAME,
    "image": {"type": "string", "required": True},
    "profiles": {"type": "list", "schema": {"type": "string"}},
    "config": _CONFIG,
    "devices": _DEVICES,
    "state": {"type": "string", "nullable": True, "allowed": ["running", "stopped"]},
    "description": _DESCRIPTION,
    # a cluster member, or "@group": where a new container is placed
    "target": {"type": "string"},
    # keys and devices people may change by hand: never compared, never put back
    "ignore": {"type": "dict", "schema": {
        "config": {"type": "list", "schema": {"type": "string"}},
        "devices": {"type": "list", "schema": {"type": "string"}}}},
    "prune": _PRUNE,
}

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "float": "a number",
    "boolean": "a boolean",
    "dict": "a mapping",
    "list": "a list",
}

_validators: dict[int, cerberus.Validator] = {}


def _validator(schema: Mapping[str, Any]) -> cerberus.Validator:
    # building a Validator compiles the schema: do it once per schema
    v = _validators.get(id(schema))
    if v is None:
        v = _validators[id(schema)] = cerberus.Validator(dict(schema))
    return v


def describe_type(value: object) -> str:
    """``"a mapping"``, ``"a list"``, ``"null"``... for messages about a value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _expected(constraint: object) -> str:
    types = [constraint] if isinstance(constraint, str) else list(constraint)  # type: ignore[call-overload]
    if set(types) >= {"string", "integer", "float", "boolean"}:
        return "a string, number or boolean"
    words = [_TYPE_WORDS.get(t, t) for t in types]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _leaves(errors: Iterable[Any]) -> Iterable[Any]:
    for e in errors:
        if e.is_group_error:
            yield from _leaves(e.child_errors)
        else:
            yield e


def _reason(err: Any, schema: Mapping[str, Any]) -> str:
    rule = err.rule
    if err.code == cerberus.errors.UNKNOWN_FIELD.code:
        field = err.document_path[-1]
        known = sorted(schema) if len(err.document_path) == 1 else []
        hint = did_you_mean(field, known)
        listing = f"; known fields: {', '.join(known)}" if known else ""
        return f"unknown field {field!r}{hint}{listing}"
    if rule == "required":
        return "required field is missing"
    if rule == "nullable":
        if err.document_path and err.document_path[0] in ("config", "devices", "build"):
            return 'a value must not be null (write "" for an empty string)'
        return "must not be empty (null)"
    if rule == "type":
        if "keysrules" in err.schema_path:
            return f"keys must be strings, got {describe_type(err.document_path[-1])}"
        return f"expected {_expected(err.constraint)}, got {describe_type(err.value)}"
    if rule == "allowed":
        allowed = [str(a) for a in err.constraint]
        hint = did_you_mean(err.value, allowed)
        return f"invalid value {err.value!r}{hint}: expected one of {', '.join(allowed)}"
    # any other rule: cerberus's own wording
    return str(cerberus.errors.BasicErrorHandler.messages.get(err.code, rule or "invalid value")
               ).format(constraint=err.constraint, value=err.value, field=err.field)


def check(schema: Mapping[str, Any], document: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Validate a document's structure against a kind's schema.

    Args:
        schema: one of :data:`STORAGE_POOL`, :data:`PROFILE`, :data:`IMAGE`, :data:`CONTAINER`
            (or a schema registered later).
        document: the YAML document as Python data.

    Returns:
        One ``(document path, reason)`` per problem, the path as a tuple of keys/indices
        (e.g. ``("devices", "root", "type")``); empty when the structure is valid.
    """
    v = _validator(schema)
    if v.validate(dict(document)):
        return []
    leaves = list(_leaves(v._errors))
    out = [(tuple(e.document_path), _reason(e, schema)) for e in leaves]
    # a misspelt required field ("nme:") is one problem, not "unknown nme" + "missing name"
    missing = {e.document_path[0] for e in leaves if e.rule == "required" and len(e.document_path) == 1}
    covered = set()
    for e in leaves:
        if e.code == cerberus.errors.UNKNOWN_FIELD.code and len(e.document_path) == 1:
            close = difflib.get_close_matches(str(e.document_path[0]), sorted(missing), n=1, cutoff=0.6)
            covered.update(close)
    return [(path, reason) for path, reason in out
            if not (len(path) == 1 and path[0] in covered and reason == "required field is missing")]
