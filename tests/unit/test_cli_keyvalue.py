"""The noun-generic get/set/unset/show/edit verbs (``sysmgr.cli.commands._keyvalue``) through
the real API and engine on the FAKE runtime, storage and network drivers: ``edit`` from stdin
and in an editor, and that a rejected edit changes nothing.

Skipped, like ``test_cli_engine.py``, while the engine or the fake drivers are missing.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3

import click
import pytest
import yaml

from sysmgr.cli.commands import _keyvalue
from tests.unit.cli_runner import CliAt

_NEEDED = ("sysmgr.drivers.runtime.fake", "sysmgr.drivers.storage.fake",
           "sysmgr.drivers.network.fake", "sysmgr.engine.apply")


def _missing() -> list[str]:
    missing = []
    for mod in _NEEDED:
        try:
            if importlib.util.find_spec(mod) is None:
                missing.append(mod)
        except ModuleNotFoundError:
            missing.append(mod)
    return missing


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"needs the engine and fake drivers: {_missing()}")

NET = "sysmgrbr0"  # the network `init --auto` makes (fake driver under the fake runtime)


class Sysmgr(CliAt):
    """``sysmgr --root ROOT ...`` in-process, through the exit-code mapper."""

    def doc(self, *args: str) -> dict:
        return yaml.safe_load(self(*args, ok=True).stdout)

    def records(self) -> tuple:
        """Every row of the state database: what a refused edit must leave as it was."""
        con = sqlite3.connect(os.path.join(self.root, "sysmgr.db"))
        try:
            tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))
            return tuple(tuple(sorted(map(repr, con.execute(f"SELECT * FROM {t}")))) for t in tables)
        finally:
            con.close()


@pytest.fixture
def sysmgr(sysmgr_root: str):
    s = Sysmgr(sysmgr_root)
    s("init", "--auto", "--runtime", "fake", "--storage-driver", "fake", ok=True)
    return s


# -- edit from stdin ----------------------------------------------------------------------

def test_network_edit_from_stdin(sysmgr):
    text = "description: lab net\nconfig:\n  ipv4.address: 10.77.0.1/24\n  ipv4.nat: false\n"
    res = sysmgr("network", "edit", NET, input=text, ok=True)
    assert res.stdout == f"Network {NET} updated\n"
    doc = sysmgr.doc("network", "show", NET)
    assert doc["description"] == "lab net"
    assert doc["config"] == {"ipv4.address": "10.77.0.1/24", "ipv4.nat": "false"}
    assert sysmgr("network", "get", NET, "ipv4.nat", ok=True).stdout == "false\n"
    # what `show` prints can be fed back unchanged: its read-only fields are ignored
    shown = sysmgr("network", "show", NET, ok=True).stdout
    sysmgr("network", "edit", NET, input=shown, ok=True)
    assert sysmgr.doc("network", "show", NET) == doc


@pytest.mark.parametrize("text, error", [
    ("config:\n  ipv4.nat: maybe\n", "Error: config.ipv4.nat: invalid boolean 'maybe'"),
    ("config:\n  foo: bar\n", "foo"),
    ("name: other\n", "Error: name: renaming a network is not supported here"),
    ("- a list\n", "Error: expected a YAML mapping with config, description"),
    ("config: [unclosed\n", "Error: <stdin>:"),
    ("config:\n  user.x: {nested: map}\n", "Error: config.user.x: expected a string, got dict"),
])
def test_network_edit_refused_changes_nothing(sysmgr, text, error):
    before = sysmgr.records()
    res = sysmgr("network", "edit", NET, input=text)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("Error: ") and error in res.stderr
    assert "Traceback" not in res.stderr
    assert sysmgr.records() == before


def test_profile_edit_from_stdin_and_refused(sysmgr):
    sysmgr("profile", "create", "web", "-c", "limits.cpu=1", ok=True)
    before = sysmgr.records()
    res = sysmgr("profile", "edit", "web", input="config:\n  limits.memroy: 1GiB\n")
    assert res.exit_code == 2 and "limits.memroy" in res.stderr
    res = sysmgr("profile", "edit", "web", input="devices:\n  data: {path: /srv}\n")
    assert res.exit_code == 2  # a device without a type
    assert sysmgr.records() == before
    sysmgr("profile", "edit", "web", input="description: web tier\nconfig:\n  limits.memory: 64MiB\n"
                                           "devices:\n  data: {type: disk, source: /srv, path: /srv}\n",
           ok=True)
    doc = sysmgr.doc("profile", "show", "web")
    assert doc == {"name": "web", "description": "web tier", "config": {"limits.memory": "64MiB"},
                   "devices": {"data": {"type": "disk", "source": "/srv", "path": "/srv"}},
                   "used_by": []}
    sysmgr("profile", "delete", "web", ok=True)


# -- edit in an editor --------------------------------------------------------------------

@pytest.fixture
def editor(monkeypatch):
    """A terminal on stdin and an editor that returns the texts queued in the list, one a call."""
    monkeypatch.setattr(_keyvalue, "stdin_is_tty", lambda: True)
    queue: list[str | None] = []
    opened: list[str] = []

    def edit(text: str, **kw) -> str | None:
        opened.append(text)
        return queue.pop(0)

    monkeypatch.setattr(click, "edit", edit)
    monkeypatch.setattr(click, "prompt", lambda *a, **k: "")
    return queue, opened


def test_edit_in_editor_reopens_until_valid(sysmgr, editor):
    queue, opened = editor
    bad = f"name: {NET}\ndescription: x\nconfig:\n  ipv4.nat: maybe\n"
    queue += [bad, bad.replace("maybe", "false")]
    res = sysmgr("network", "edit", NET, ok=True)
    assert "invalid boolean 'maybe'" in res.stderr
    assert yaml.safe_load(opened[0])["name"] == NET and opened[1] == bad  # re-opened on what was typed
    assert sysmgr("network", "get", NET, "ipv4.nat", ok=True).stdout == "false\n"


def test_edit_in_editor_without_changes(sysmgr, editor):
    queue, opened = editor
    queue.append(None)  # closed without saving
    before = sysmgr.records()
    res = sysmgr("profile", "edit", "default", ok=True)
    assert res.stderr == "No changes\n" and sysmgr.records() == before
    assert set(yaml.safe_load(opened[0])) == {"name", "description", "config", "devices"}


# -- set / unset / get --------------------------------------------------------------------

def test_network_set_unset_through_the_generic_verbs(sysmgr):
    sysmgr("network", "set", NET, "user.owner", "ops", ok=True)
    sysmgr("network", "set", NET, "dns.domain=lab", "user.x=1", ok=True)
    assert sysmgr.doc("network", "show", NET)["config"]["user.owner"] == "ops"
    sysmgr("network", "unset", NET, "user.owner", "user.x", ok=True)
    assert sysmgr("network", "get", NET, "user.owner", ok=True).stdout == "\n"
    res = sysmgr("network", "unset", NET, "user.owner")
    assert (res.exit_code, res.stderr) == (2, f"Error: config key 'user.owner' is not set on network '{NET}'\n")


def test_storage_pools_are_read_only(sysmgr):
    assert sysmgr("storage", "get", "default", "nothing", ok=True).stdout == "\n"
    assert sysmgr.doc("storage", "show", "default")["name"] == "default"
    assert sysmgr("storage", "get", "ghost", "size").exit_code == 2
    for verb in ("set", "unset", "edit"):  # the API cannot save a pool
        assert sysmgr("storage", verb, "default", "x=1").exit_code == 2
