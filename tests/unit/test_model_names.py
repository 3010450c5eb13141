"""Unit tests for sysmgr.model.names: container, object, alias and interface name rules."""

from __future__ import annotations

import pytest

from sysmgr.model.names import (
    alias_problem,
    device_name_problem,
    ifname_problem,
    name_problem,
    object_name_problem,
)

CONTAINER_NAMES = [
    ("web1", None), ("a", None), ("Web-1", None), ("a" * 63, None), ("x-y-z", None),
    ("", "must not be empty"),
    ("a" * 64, "is 64 characters long, at most 63 are allowed"),
    ("../x", "must not contain '/'"),
    ("a/b", "must not contain '/'"),
    ("..", "must not contain '..'"),
    ("a.b", "must not contain '.'"),
    ("a b", "must not contain ' '"),
    ("a_b", "must not contain '_'"),
    ("wéb", "must not contain 'é'"),
    ("1web", None), ("0abc", None),  # LXD allows a digit first
    ("123", "must not be all digits"),
    ("-web", "must not start with a hyphen"),
    ("web-", "must not end with a hyphen"),
]


@pytest.mark.parametrize("name, reason", CONTAINER_NAMES)
def test_container_names(name: str, reason: str | None) -> None:
    got = name_problem(name)
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason), got


OBJECT_NAMES = [
    ("default", None), ("small_2", None), ("my.profile", None), ("1st", None), ("a" * 63, None),
    ("", "must not be empty"), ("a" * 64, "is 64 characters long"),
    (".", "must not be '.'"), ("..", "must not be '..'"), (".hidden", "must not start with '.'"),
    ("a b", "must not contain whitespace"), ("a\tb", "must not contain whitespace"),
    ("a\x00b", "must not contain the control character"),
    ("a/b", "must not contain '/'"), ("../x", "must not start with '.'"),
]


@pytest.mark.parametrize("name, reason", OBJECT_NAMES)
def test_object_names(name: str, reason: str | None) -> None:
    got = object_name_problem(name)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got
    assert device_name_problem(name) == got


ALIASES = [
    ("busybox", None), ("debian/12", None), ("images/debian/bookworm", None), ("a.b/c", None),
    ("/x", "must not start with '/'"), ("x/", "must not end with '/'"),
    ("a//b", "must not contain an empty, '.' or '..' path segment"),
    ("a/../b", "must not contain an empty, '.' or '..' path segment"),
    ("a/./b", "must not contain an empty, '.' or '..' path segment"),
    ("../x", "must not start with '.'"), ("a b", "must not contain whitespace"),
    ("a" * 64, "is 64 characters long"),
]


@pytest.mark.parametrize("name, reason", ALIASES)
def test_image_aliases(name: str, reason: str | None) -> None:
    got = alias_problem(name)
    assert (got is None) if reason is None else (got is not None and got.startswith(reason)), got


@pytest.mark.parametrize("name, ok", [
    ("eth0", True), ("br-lan", True), ("a" * 15, True),
    ("a" * 16, False), ("", False), ("a/b", False), ("a b", False), ("a:1", False), (".", False),
])
def test_interface_names(name: str, ok: bool) -> None:
    assert (ifname_problem(name) is None) is ok
