"""The root command: lazy subcommands, ``--version`` without heavy imports, and the one
exit-code mapper (SysmgrError -> its exit code, usage -> 2, ^C -> 130, bugs -> 1)."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sysmgr.cli import main as climain
from sysmgr.errors import AlreadyExists, Conflict, Issue, NotFound, SysmgrError, ValidationError
from tests.conftest import REPO

HEAVY = ("rich", "yaml", "pyroute2", "paramiko", "cerberus", "sqlite3", "sysmgr.api",
         "sysmgr.engine", "sysmgr.state", "sysmgr.drivers", "sysmgr.model")


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)


def test_version_prints_and_imports_nothing_heavy():
    res = _python(
        "import sys\n"
        "from sysmgr.cli.main import run\n"
        "code = run(['--version'])\n"
        f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(code)\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["sysmgr 0.1.0", "loaded: []"]


def test_python_dash_m_version():
    env = dict(os.environ, PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, "-m", "sysmgr", "--version"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert (res.returncode, res.stdout) == (0, "sysmgr 0.1.0\n")


def test_importing_the_cli_loads_no_command_module():
    res = _python("import sys, sysmgr.cli.main\n"
                  "print(sorted(m for m in sys.modules if m.startswith('sysmgr.cli.commands.')))")
    assert res.stdout.strip() == "['sysmgr.cli.commands._common']"


def test_every_lazy_command_loads():
    ctx = click.Context(climain.cli)
    for name in climain.COMMANDS:
        cmd = climain.cli.get_command(ctx, name)
        assert isinstance(cmd, click.Command) and cmd.help, name
    assert climain.cli.get_command(ctx, "ls") is climain.cli.get_command(ctx, "list")


def test_help_groups_commands_in_sections():
    res = CliRunner().invoke(climain.cli, ["--help"])
    assert res.exit_code == 0
    for title in ("Containers:", "Declarative (GitOps):", "Host:"):
        assert title in res.output
    placed = {n for _, names in climain.SECTIONS for n in names}
    assert placed == set(climain.COMMANDS)


# -- exit codes -------------------------------------------------------------------------------

ERRORS = {
    "validation": ValidationError([Issue("unknown key", file="a.yaml", line=3, path="config.x"),
                                   Issue("bad size", file="a.yaml", line=5, path="config.limits.memory")],
                                  hint="see sysmgr keys"),
    "notfound": NotFound("container 'ghost' not found"),
    "exists": AlreadyExists("container 'c1' already exists"),
    "conflict": Conflict("container 'c1' is running", hint="stop it first or use --force"),
    "plain": SysmgrError("two lines\nof message"),
    "bug": RuntimeError("kaboom"),
    "denied": PermissionError(13, "Permission denied", "/var/lib/sysmgr/sysmgr.db"),
    "interrupt": KeyboardInterrupt(),
}


@click.command("boom")
@click.argument("what")
def boom(what: str) -> None:
    if what.startswith("exit"):
        click.get_current_context().exit(int(what[4:]))
    raise ERRORS[what]


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setitem(climain.cli.commands, "boom", boom)
    return CliRunner()


@pytest.mark.parametrize("what,code", [
    ("validation", 2), ("notfound", 2), ("exists", 2), ("conflict", 1), ("plain", 1), ("bug", 1),
    ("interrupt", 130), ("exit0", 0), ("exit7", 7), ("denied", 1),
])
def test_exit_codes(runner, what, code):
    res = runner.invoke(climain.cli, ["boom", what])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.stderr


def test_validation_error_prints_one_line_per_issue_and_the_hint(runner):
    res = runner.invoke(climain.cli, ["boom", "validation"])
    assert res.stderr.splitlines() == [
        "Error: a.yaml:3: config.x: unknown key",
        "Error: a.yaml:5: config.limits.memory: bad size",
        "Hint: see sysmgr keys",
    ]
    assert res.stdout == ""


def test_error_with_hint_and_multiline_message(runner):
    assert runner.invoke(climain.cli, ["boom", "conflict"]).stderr.splitlines() == [
        "Error: container 'c1' is running", "Hint: stop it first or use --force"]
    assert runner.invoke(climain.cli, ["boom", "plain"]).stderr.splitlines() == [
        "Error: two lines", "Error: of message"]


def test_internal_error_is_one_line_without_debug(runner):
    res = runner.invoke(climain.cli, ["boom", "bug"])
    assert res.stderr.splitlines() == ["Error: internal error: RuntimeError: kaboom",
                                       "Hint: re-run with --debug to see the traceback"]


def test_os_errors_are_reported_plainly(runner):
    assert runner.invoke(climain.cli, ["boom", "denied"]).stderr.splitlines() == [
        "Error: Permission denied: /var/lib/sysmgr/sysmgr.db",
        "Hint: sysmgr manages containers as root (or pass --root DIR)"]


def test_debug_shows_the_traceback(runner):
    res = runner.invoke(climain.cli, ["--debug", "boom", "bug"])
    assert res.exit_code == 1
    assert "Traceback" in res.stderr and "kaboom" in res.stderr
    res = runner.invoke(climain.cli, ["--debug", "boom", "notfound"])
    assert res.exit_code == 2 and "Traceback" in res.stderr


def test_usage_errors_exit_2(runner):
    for args in (["no-such-command"], ["boom"], ["--no-such-option"], ["list", "--format", "xml"]):
        res = runner.invoke(climain.cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert "Error:" in res.stderr


def test_root_option_and_env(monkeypatch):
    seen = []

    @click.command("where")
    @click.pass_obj
    def where(app) -> None:
        seen.append(app.root)

    monkeypatch.setitem(climain.cli.commands, "where", where)
    runner = CliRunner()
    assert runner.invoke(climain.cli, ["--root", "/tmp/x", "where"]).exit_code == 0
    assert runner.invoke(climain.cli, ["where"], env={"SYSMGR_ROOT": "/tmp/y"}).exit_code == 0
    assert runner.invoke(climain.cli, ["where"], env={"SYSMGR_ROOT": None}).exit_code == 0
    assert seen == ["/tmp/x", "/tmp/y", "/var/lib/sysmgr"]


def test_main_is_the_console_entry(monkeypatch, capsys):
    monkeypatch.setitem(climain.cli.commands, "boom", boom)
    with pytest.raises(SystemExit) as e:
        climain.main(["boom", "notfound"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "Error: container 'ghost' not found\n"
