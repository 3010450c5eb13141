"""The ``sysmgr`` root command and the one place where exceptions become exit codes.

Subcommands are imported lazily from ``COMMANDS`` (name -> ``module:function``), so
``sysmgr --help`` loads click and nothing else, and ``sysmgr list`` loads only its own
module. This module must never import rich, pyroute2, paramiko, yaml or the API at import
time (``tests/unit/test_cli_main.py`` checks it). The console script enters through
:mod:`sysmgr.cli.fast`, which runs the common forms of the hot verbs without click and hands
everything else to :func:`main` here.

Exit codes: :mod:`sysmgr.cli.exits` maps every exception (:func:`run` turns click's own usage
errors and aborts into codes first).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn, Sequence

import click

from sysmgr import __version__
from sysmgr.cli import exits
from sysmgr.cli.commands._common import AppContext, Group, add_target_option

_PKG = "sysmgr.cli.commands"

# name -> "module:function" below sysmgr.cli.commands; one module per noun
COMMANDS: dict[str, str] = {
    "init": "init:init",
    "launch": "container:launch",
    "create": "container:create",
    "start": "lifecycle:start",
    "stop": "lifecycle:stop",
    "restart": "lifecycle:restart",
    "freeze": "lifecycle:freeze",
    "unfreeze": "lifecycle:unfreeze",
    "delete": "lifecycle:delete",
    "list": "listing:list_",
    "info": "info:info",
    "exec": "exec:exec_",
    "shell": "exec:shell",
    "console": "exec:console",
    "config": "config:config",
    "file": "file:file",
    "profile": "profile:profile",
    "image": "image:image",
    "storage": "storage:storage",
    "network": "network:network",
    "snapshot": "snapshot:snapshot",
    "copy": "copy:copy",
    "move": "copy:move",
    "rename": "copy:rename",
    "export": "backup:export",
    "import": "backup:import_",
    "validate": "manifest:validate",
    "diff": "manifest:diff",
    "apply": "manifest:apply",
    "keys": "keys:keys",
    "cluster": "cluster:cluster",
    "controller": "controller:controller",
    "monitor": "monitor:monitor",
    "completion": "completion:completion",
}

# the verbs that take --target MEMBER (LXD's flag), added where they are loaded: the container
# verbs, and the image, profile, network and storage verbs (on that member's root); copy and
# move have their own (the member to copy or move to)
TARGETED = frozenset({
    "launch", "create", "start", "stop", "restart", "freeze", "unfreeze", "delete", "list",
    "info", "exec", "shell", "console", "config", "file", "snapshot", "rename",
    "export", "import", "image", "profile", "network", "storage"})

# commands an admin host runs on a cluster member over SSH; hidden from --help
HIDDEN_COMMANDS: dict[str, str] = {
    "_rpc": "remote:rpc",
    "_stream": "remote:stream",
}

# LXD's short spellings
ALIASES: dict[str, str] = {"ls": "list", "rm": "delete"}

SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Containers", ("launch", "create", "list", "info", "start", "stop", "restart", "freeze",
                    "unfreeze", "delete", "exec", "shell", "console", "config", "file")),
    ("Storage", ("snapshot", "copy", "move", "rename", "export", "import")),
    ("Declarative (GitOps)", ("validate", "diff", "apply")),
    ("Host", ("init", "profile", "image", "storage", "network", "keys", "completion")),
    ("Cluster", ("cluster",)),
    ("Controller (GitOps)", ("controller", "monitor")),
)


class LazyGroup(Group):
    """A group whose subcommands are imported the first time they are needed (a mistyped
    one gets the closest names, aliases included)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.aliases = dict(aliases or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def visible_names(self, ctx: click.Context) -> list[str]:
        # the names, not the commands: suggesting must not import every command module
        return [n for n in self.list_commands(ctx) if n not in HIDDEN_COMMANDS] + \
            list(self.aliases)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = self.aliases.get(cmd_name, cmd_name)
        if cmd_name in self.lazy:
            cmd = self._load(cmd_name)
            if ctx.resilient_parsing and cmd_name in COMMANDS:
                # completing (a shell's TAB, the admin shell): live names and config keys
                from sysmgr.cli import completion

                completion.annotate(cmd, (cmd_name,))
            return cmd
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        module, _, attr = self.lazy[name].partition(":")
        cmd = getattr(importlib.import_module(f"{_PKG}.{module}"), attr)
        if not isinstance(cmd, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{module}:{attr} is not a click command")
        return add_target_option(cmd) if name in TARGETED else cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the sections of SECTIONS, then anything not placed in one; one column width for all
        names = self.list_commands(ctx)
        width = max(len(n) for n in names)
        limit = formatter.width - 6 - width
        placed = {n for _, members in SECTIONS for n in members}
        for title, members in (*SECTIONS, ("Other commands", tuple(n for n in names if n not in placed))):
            rows = [(n.ljust(width), cmd.get_short_help_str(limit)) for n in members
                    for cmd in [self.get_command(ctx, n)] if cmd is not None and not cmd.hidden]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        # Standalone calls (the console script, click's CliRunner) go through the exit-code
        # mapper; run() itself calls back here with standalone_mode=False.
        if standalone_mode:
            sys.exit(run(args, prog_name=prog_name or "sysmgr", **extra))
        return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)


@click.group(cls=LazyGroup, lazy={**COMMANDS, **HIDDEN_COMMANDS}, aliases=ALIASES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", metavar="DIR", envvar="SYSMGR_ROOT", default="/var/lib/sysmgr",
              show_default=True, show_envvar=True, help="Host root directory (state, images, pools).")
@click.option("--debug", is_flag=True, envvar="SYSMGR_DEBUG",
              help="Show tracebacks of errors.")
@click.version_option(__version__, "--version", prog_name="sysmgr", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, root: str, debug: bool) -> None:
    """sysmgr: declarative manager for full-OS system containers.

    LXD's verbs for day-to-day work (launch, list, exec, config, profile...), YAML manifests
    for GitOps (validate, diff, apply).
    """
    app = ctx.ensure_object(AppContext)
    app.root = root
    app.debug = debug
    ctx.call_on_close(app.close)


# -- exit codes -----------------------------------------------------------------------------

def run(argv: Sequence[str] | None = None, *, prog_name: str = "sysmgr", **extra: Any) -> int:
    """Run the CLI and return its exit code (click's usage errors: 2; everything else is
    mapped by :func:`sysmgr.cli.exits.guarded`)."""
    app = extra.pop("obj", None) or AppContext()
    args = list(sys.argv[1:] if argv is None else argv)
    if exits.debug_wanted(args):
        app.debug = True  # known before the group callback runs, for errors while parsing

    def command() -> int:
        try:
            rv = cli.main(args, prog_name, standalone_mode=False, obj=app, **extra)
        except click.exceptions.Abort as e:
            if isinstance(e.__context__, KeyboardInterrupt) or \
                    isinstance(e.__cause__, KeyboardInterrupt):
                return 130
            click.echo("Aborted!", err=True)
            return 1
        except click.ClickException as e:  # usage errors: exit 2
            e.show()
            return e.exit_code
        return rv if isinstance(rv, int) else 0

    return exits.guarded(app, command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the whole command tree (the console script goes through
    :func:`sysmgr.cli.fast.main`, which calls this for all but the hot verbs' common forms)."""
    sys.exit(run(argv))
