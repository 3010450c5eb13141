"""The completion engine: which parameter takes which kind of name (read from the command
tree), fuzzy matching, and completions over a stand-in name source (the live names through a
real root and a real shell are tested in tests/integration/test_admin_shell.py)."""

from __future__ import annotations

import click
import pytest

from sysmgr.cli import completion, shell
from sysmgr.cli.main import cli


def _command(path: tuple[str, ...]) -> click.Command:
    ctx = click.Context(cli)
    cmd: click.Command | None = cli
    for word in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, word)
    assert cmd is not None, path
    return cmd


def _slots(*path: str) -> dict[str, completion.Slot | None]:
    from sysmgr.cli.commands._common import add_target_option

    cmd = add_target_option(_command(path))
    return {p.name: completion.slot_of(path, p) for p in cmd.params if p.name != "help"}


S = completion.Slot


@pytest.mark.parametrize("path, expected", [
    (("info",), {"name": S("container"), "cluster_target": S("member")}),
    (("launch",), {"image": S("image"), "name": None, "profiles": S("profile"),
                   "pool": S("pool"), "config": S("keys", "container", assign=True)}),
    (("delete",), {"names": S("container")}),
    (("profile", "show"), {"name": S("profile")}),
    (("profile", "create"), {"name": None}),
    (("profile", "add"), {"container": S("container"), "name": S("profile")}),
    (("profile", "delete"), {"names": S("profile")}),
    (("snapshot", "restore"), {"name": S("container"), "snap": S("snapshot")}),
    (("snapshot", "create"), {"name": S("container"), "snap": None}),
    (("copy",), {"src": S("source"), "dst": None, "to": S("member"), "snapshot": S("snapshot")}),
    (("config", "set"), {"name": S("container"), "assignments": S("keys", "container", True)}),
    (("config", "unset"), {"keys": S("keys", "container")}),
    (("network", "set"), {"name": S("network"), "assignments": S("keys", "network", True)}),
    (("storage", "get"), {"name": S("pool"), "key": S("keys", "pool")}),
    (("storage", "volume", "show"), {"pool": S("pool"), "name": S("volume")}),
    (("file", "pull"), {"sources": S("path"), "target": None}),
    (("file", "push"), {"sources": None, "target": S("path")}),
    (("image", "delete"), {"refs": S("image")}),
    (("cluster", "remove"), {"name": S("member")}),
    (("cluster", "add"), {"name": None}),
    (("config", "device", "remove"), {"name": S("container"), "devnames": S("device", "container")}),
    (("config", "device", "add"), {"name": S("container"), "devname": None}),
    (("profile", "device", "get"), {"name": S("profile"), "devname": S("device", "profile")}),
])
def test_slots_come_from_the_command_tree(path, expected):
    slots = _slots(*path)
    for name, slot in expected.items():
        assert slots[name] == slot, (path, name)


def test_every_slot_of_the_tree_is_one_the_engine_can_fill():
    """A parameter given a slot must name a kind the engine reads or a key table it has."""
    ctx = click.Context(cli)
    kinds = set(completion.FETCH) | {"keys", "source", "path"}

    def walk(cmd: click.Command, path: tuple[str, ...]) -> int:
        if isinstance(cmd, click.Group):
            return sum(walk(cmd.get_command(ctx, n), (*path, n)) for n in cmd.list_commands(ctx)
                       if not cmd.get_command(ctx, n).hidden)
        found = 0
        for p in cmd.params:
            slot = completion.slot_of(path, p)
            if slot is not None:
                assert slot.kind in kinds, (path, p.name, slot)
                if slot.kind == "keys":
                    assert completion.key_items(slot.table, slot.assign), (path, p.name)
                found += 1
        return found

    assert walk(cli, ()) > 60  # most of the tree's name arguments are filled


@pytest.mark.parametrize("want, names, expected", [
    ("c", ["web1", "c1", "cache"], ["c1", "cache"]),       # prefixes, shortest first
    ("wb1", ["web1", "db1", "web2"], ["web1"]),             # a subsequence
    ("eb", ["web1", "ebony"], ["ebony", "web1"]),           # a prefix before a substring
    ("", ["b", "a"], ["b", "a"]),                           # nothing typed: all, in order
    ("C1", ["c1"], ["c1"]),                                 # case-blind
    ("lm", ["limits.cpu", "limits.memory"], ["limits.memory", "limits.cpu"]),  # initials first
    ("lmsw", ["limits.memory", "limits.memory.swap"], ["limits.memory.swap"]),
    ("sp", ["limits.processes", "security.privileged"],
     ["security.privileged", "limits.processes"]),
    ("zz", ["c1"], []),
])
def test_fuzzy(want, names, expected):
    assert [v for v, _ in completion.fuzzy(want, [(n, "") for n in names])] == expected


class StandIn(completion.NameSource):
    """Names of a pretend host (the pure completion logic; no root)."""

    NAMES = {("container", None): [("c1", "Running"), ("web1", "Stopped")],
             ("image", None): [("busybox", "image 0123")],
             ("profile", None): [("default", ""), ("small", "")],
             ("snapshot", "c1"): [("snap0", "snapshot of c1")],
             ("member", None): [("node1", "ssh://node1")],
             ("device", "container/c1"): [("eth0", "nic device"), ("root", "disk device")]}

    def __init__(self) -> None:
        super().__init__(None)

    def names(self, kind, owner=None):
        return list(self.NAMES.get((kind, owner), []))


@pytest.fixture
def stand_in():
    completion.use_source(StandIn())
    yield
    completion.use_source(None)


@pytest.mark.parametrize("line, expected", [
    ("info c", ["c1"]),
    ("info wb", ["web1"]),
    ("start c1 ", ["c1", "web1"]),
    ("launch bu", ["busybox"]),
    ("launch busybox new -p sm", ["small"]),
    ("snapshot restore c1 ", ["snap0"]),
    ("copy c1/", ["c1/snap0"]),
    ("file pull w", ["web1/"]),
    ("config set c1 limits.mem", ["limits.memory=", "limits.memory.swap="]),
    ("config unset c1 user", ["user."]),
    ("ls --format ", ["table", "json", "yaml", "csv"]),
    ("config device remove c1 ", ["eth0", "root"]),
    ("config device set c1 r", ["root"]),
    ("inf", ["info"]),
    ("profile sh", ["show"]),
    ("lst", ["list"]),
    ("use n", ["node1"]),
    ("help sna", ["snapshot"]),
    ("he", ["help"]),
])
def test_complete_line(stand_in, line, expected):
    incomplete, found = shell.complete_line(cli, line, StandIn())
    values = [v for v, _ in found]
    assert values[:len(expected)] == expected, values
    assert line.endswith(incomplete)


def test_config_keys_carry_their_docs(stand_in):
    _, found = shell.complete_line(cli, "config set c1 limits.memory", StandIn())
    assert dict(found)["limits.memory="].startswith("Memory limit")


def test_an_open_quote_completes_nothing(stand_in):
    assert shell.complete_line(cli, "info 'c", StandIn()) == ("", [])


def test_name_sources_read_the_root(fake_client):
    """The shells' protocol reads names alone; the admin shell's cache, in its background
    thread, reads them with their states (for the toolbar)."""
    fake_client.containers.create("web1", image="img")
    fake_client.containers.create("db1", image="img")
    assert fake_client.containers.names() == ["db1", "web1"]
    direct = completion.NameSource(fake_client.root)
    assert direct.names("container") == [("db1", "container"), ("web1", "container")]
    fingerprint = fake_client.images.get("img").fingerprint
    assert direct.names("image")[0] == ("img", "image " + fingerprint[:12])
    cached = shell.CachedSource(fake_client.root)
    assert cached.names("container") == []          # never waits: read in the background
    cached.wait()
    assert cached.names("container") == [("db1", "Stopped"), ("web1", "Stopped")]
    session = shell.Session(fake_client.root)
    session.source = cached
    assert session.toolbar() == "containers: 0/2 running"  # (running ones: the pty tests)


def test_name_source_of_a_root_never_initialised(tmp_path):
    assert completion.NameSource(str(tmp_path / "none")).names("container") == []


def test_shell_words_and_script_mode(fake_client, capsys):
    session = shell.Session(fake_client.root)
    assert session.run_line("use nosuch") == 2                # no cluster here: refused
    assert "no cluster member" in capsys.readouterr().err
    assert session.member is None and session.prompt_text().startswith("sysmgr [")
    assert session.run_line("info 'open") == 2                # an open quote: an error
    assert session.run_line("  # only a comment") == 0
    assert session.run_line("shell") == 2                     # the admin shell already
    assert shell.run_script(session, ["keys limits.cpu", "exit", "info nosuch"]) == 0
    assert "limits.cpu" in capsys.readouterr().out
    assert shell.run_script(session, ["info nosuch", "keys limits.cpu"]) == 2
    assert "limits.cpu" not in capsys.readouterr().out        # stopped at the failure
    assert shell.run_script(session, ["info nosuch", "bogus", "keys limits.cpu"],
                            keep_going=True) == 2              # the first failure's code
    assert "limits.cpu" in capsys.readouterr().out


def test_toolbar_says_the_controller(tmp_path):
    import os

    from sysmgr.controller import state

    root = str(tmp_path)
    assert shell.controller_state(root) == ""                 # none ever ran: not shown
    with state.locked(root):                                  # what a running controller holds
        state.write_status(root, {"pid": os.getpid()})
        assert shell.controller_state(root) == f"running (pid {os.getpid()})"
        source = shell.CachedSource(root)
        source.refresh()
        source.wait()
        session = shell.Session(root)
        session.source = source
        assert session.toolbar().endswith(f"controller: running (pid {os.getpid()})")
    assert shell.controller_state(root) == "stopped"
