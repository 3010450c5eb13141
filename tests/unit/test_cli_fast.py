"""The hot verbs' fast path: it parses each form it accepts as click does, declines every
other, and a verb prints and exits the same through either front end."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from sysmgr.cli import app as cliapp
from sysmgr.cli import fast
from sysmgr.cli import main as climain
from tests.unit.test_cli_commands import StubClient, StubContainer


def _click_params(verb: str, args: list[str]) -> dict:
    """What click's command ``verb`` parses from ``args``, in the fast path's terms."""
    cmd = climain.cli.get_command(click.Context(climain.cli), verb)
    p = cmd.make_context(verb, list(args)).params
    if verb == "exec":
        tty = True if p["force_interactive"] else False if p["force_noninteractive"] else None
        return {"name": p["name"], "command": p["command"], "env": p["env"], "cwd": p["cwd"],
                "user": p["user"], "group": p["group"], "tty": tty}
    if verb == "stop":
        return {"names": p["names"], "force": p["force"], "timeout": p["timeout"]}
    if verb == "start":
        return {"names": p["names"]}
    if verb in ("list", "ls"):
        return {"filters": p["filters"], "columns": p["columns"], "fast": p["fast"],
                "fmt": p["fmt"]}
    return {"name": p["name"]}


ACCEPTED = [
    ["exec", "c1", "--", "true"],
    ["exec", "c1", "true"],
    ["exec", "c1", "--", "ls", "-la", "--", "/etc"],
    ["exec", "c1", "ls", "/etc"],
    ["exec", "--cwd", "/tmp", "c1", "--", "pwd"],
    ["exec", "c1", "--env", "A=1", "--env=B=2", "-T", "--user", "5", "--group=6", "--", "id"],
    ["exec", "c1", "-t", "--", "sh"],
    ["exec", "c1", "--force-noninteractive", "--cwd", "/root", "--", "sh", "-c", "echo $A"],
    ["exec", "--", "c1", "ls", "-l"],
    ["shell", "c1"],
    ["start", "c1"],
    ["start", "c1", "c2", "c3"],
    ["stop", "c1"],
    ["stop", "-f", "c1", "c2"],
    ["stop", "c1", "--force", "--timeout", "5"],
    ["stop", "--timeout=2.5", "c1"],
    ["list"], ["ls"], ["list", "web", "status=running"], ["list", "-c", "ns4", "-f", "csv"],
    ["list", "--fast"], ["list", "--format=json", "u.role=db"], ["list", "--columns=nsP", "c"],
]

DECLINED = [
    [], ["--help"], ["-h"], ["launch", "busybox", "c1"], ["lsit"], ["info", "c1"],
    ["list", "--fast", "-c", "ns"], ["list", "-f", "xml"], ["list", "--target", "m1"],
    ["list", "--help"], ["list", "--", "web"], ["list", "-c"], ["list", "--all"],
    ["exec", "c1"],                          # no command: click's usage error
    ["exec", "c1", "ls", "-la"],             # an option of the command's before "--"
    ["exec", "c1", "-t", "-T", "--", "sh"],  # exclusive: click says so
    ["exec", "c1", "--user", "-1", "--", "id"],
    ["exec", "c1", "--user", "root", "--", "id"],
    ["exec", "c1", "--target", "m1", "--", "true"],
    ["exec", "c1", "--help"],
    ["exec", "c1", "--cwd"],
    ["shell"], ["shell", "c1", "c2"], ["shell", "--help"],
    ["start"], ["start", "--all"], ["start", "--target", "m1", "c1"], ["start", "--", "c1"],
    ["stop"], ["stop", "--all"], ["stop", "-f"], ["stop", "--timeout", "soon", "c1"],
    ["stop", "-fT", "c1"], ["stop", "--force=yes", "c1"], ["stop", "--", "c1"],
    ["--root", "/x"], ["--bogus", "exec", "c1", "--", "true"],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_accepted_forms_parse_as_click_parses_them(argv: list[str]) -> None:
    form = fast.parse(argv)
    assert form is not None and form.verb == argv[0]
    assert form.params == _click_params(argv[0], argv[1:])


@pytest.mark.parametrize("argv", DECLINED, ids=lambda a: " ".join(a) or "(nothing)")
def test_other_forms_go_to_click(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_root_options(monkeypatch) -> None:
    monkeypatch.delenv("SYSMGR_DEBUG", raising=False)
    assert fast.parse(["start", "c1"]).root is None  # the client's default: SYSMGR_ROOT, ...
    form = fast.parse(["--root", "/a", "--debug", "--root=/b", "start", "c1"])
    assert (form.root, form.debug) == ("/b", True)
    assert fast.parse(["--root", "/a", "--version", "whatever"]).verb == "--version"


def test_version(capsys) -> None:
    assert fast.run(fast.parse(["--version"])) == 0
    assert capsys.readouterr().out == "sysmgr 0.1.0\n"


@pytest.mark.parametrize("argv", [
    ["stop", "--force", "c1", "--timeout", "5"],
    ["start", "c2"],
    ["start", "c2", "ghost", "c1"],          # every name tried, one error naming each failure
    ["stop", "ghost"],
    ["exec", "c1", "--env", "A=1", "--", "sh"],
    ["exec", "ghost", "--", "true"],
    ["exec", "c1", "--env", "=1", "--", "sh"],  # a bad KEY=VALUE: the model's error
    ["shell", "c1"],
    ["list"], ["list", "-f", "csv", "c2"], ["list", "--format", "json"], ["list", "-c", "nsb"],
])
def test_a_verb_prints_and_exits_the_same_either_way(monkeypatch, capsys, argv) -> None:
    def outcome(run) -> tuple:
        stub = StubClient(StubContainer("c1"), StubContainer("c2", "Stopped"))
        stub.containers.get("c1").exit_code = 3
        monkeypatch.setattr(cliapp, "make_client", lambda root: stub)
        code, out, err = run()
        calls = {n: c.calls for n, c in stub.containers.by_name.items()}
        return code, out, err, calls, stub.closed

    def through_click() -> tuple:
        res = CliRunner().invoke(climain.cli, argv)
        return res.exit_code, res.stdout, res.stderr

    def through_fast() -> tuple:
        code = fast.run(fast.parse(argv))
        got = capsys.readouterr()
        return code, got.out, got.err

    assert outcome(through_fast) == outcome(through_click)
