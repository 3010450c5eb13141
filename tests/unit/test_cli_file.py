"""Path rules of ``sysmgr file push`` / ``file pull`` (pure, like ``lxc file``)."""

from __future__ import annotations

import pytest

from sysmgr.cli.commands.file import parse_container_path, pull_target, push_targets
from sysmgr.errors import ValidationError


@pytest.mark.parametrize("spec,expected", [
    ("c1/etc/hosts", ("c1", "/etc/hosts", False)),
    ("c1//etc//hosts", ("c1", "/etc/hosts", False)),
    ("c1/etc/", ("c1", "/etc", True)),
    ("c1/", ("c1", "/", True)),
    ("c1/a/../b", ("c1", "/b", False)),
    ("c1/tmp/with space", ("c1", "/tmp/with space", False)),
])
def test_parse_container_path(spec, expected):
    assert parse_container_path(spec) == expected


@pytest.mark.parametrize("spec", ["c1", "/etc/hosts", ""])
def test_parse_container_path_rejects(spec):
    with pytest.raises(ValidationError) as e:
        parse_container_path(spec)
    assert e.value.exit_code == 2 and "NAME/PATH" in e.value.message


def test_push_to_a_file_path():
    assert push_targets(["./motd"], "/etc/motd", False) == [("./motd", "/etc/motd")]


def test_push_into_a_directory_keeps_basenames():
    assert push_targets(["a.conf", "sub/b.conf"], "/etc/app", True) == [
        ("a.conf", "/etc/app/a.conf"), ("sub/b.conf", "/etc/app/b.conf")]
    assert push_targets(["x"], "/", True) == [("x", "/x")]


def test_push_several_files_needs_a_directory():
    with pytest.raises(ValidationError, match="directory"):
        push_targets(["a", "b"], "/etc/app", False)


def test_push_stdin_needs_a_file_name():
    assert push_targets(["-"], "/tmp/x", False) == [("-", "/tmp/x")]
    with pytest.raises(ValidationError, match="stdin"):
        push_targets(["-"], "/tmp", True)


def test_pull_targets(tmp_path):
    assert pull_target("/etc/hosts", "-", 1) == "-"
    assert pull_target("/etc/hosts", str(tmp_path), 1) == str(tmp_path / "hosts")
    assert pull_target("/etc/hosts", str(tmp_path / "h"), 1) == str(tmp_path / "h")
    with pytest.raises(ValidationError):
        pull_target("/etc/hosts", str(tmp_path / "h"), 2)
