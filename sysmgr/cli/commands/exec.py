"""Getting inside a container: ``exec``, ``shell`` and ``console --show-log``.

``exec`` and ``shell`` exit with the command's own exit code, as ``lxc exec`` does; their
bodies are in :mod:`sysmgr.cli.verbs` (shared with the fast path).
"""

from __future__ import annotations

import click

from sysmgr.cli import verbs
from sysmgr.cli.commands._common import AppContext, pass_app
from sysmgr.errors import ValidationError


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- COMMAND...")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Environment variable to set (repeatable).")
@click.option("--cwd", metavar="DIR", help="Directory to run the command in (default: /root).")
@click.option("--user", type=click.IntRange(0), metavar="UID",
              help="User id to run the command as (default: 0; others keep no capability).")
@click.option("--group", type=click.IntRange(0), metavar="GID",
              help="Group id to run the command as (default: 0).")
@click.option("-t", "--force-interactive", is_flag=True, help="Force a pseudo-terminal.")
@click.option("-T", "--force-noninteractive", is_flag=True, help="Never allocate a pseudo-terminal.")
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...], env: tuple[str, ...],
          cwd: str | None, user: int | None, group: int | None, force_interactive: bool,
          force_noninteractive: bool) -> None:
    """Run a command in a container; exit with its exit code.

    A terminal is used when stdin and stdout are terminals (-t / -T force it either way).
    Put the command after "--" when it has options of its own:

    \b
    Examples:
      sysmgr exec c1 -- ls -la /etc
    """
    if force_interactive and force_noninteractive:
        raise click.UsageError("-t/--force-interactive and -T/--force-noninteractive are exclusive")
    tty = True if force_interactive else False if force_noninteractive else None
    ctx.exit(verbs.exec_command(ctx.ensure_object(AppContext), name, command, env=env, cwd=cwd,
                                user=user, group=group, tty=tty))


@click.command()
@click.argument("name", required=False)
@click.option("--keep-going", is_flag=True,
              help="Admin shell reading a script: run every line, then exit with the first "
                   "failure's code (default: stop at the first failure).")
@click.pass_context
def shell(ctx: click.Context, name: str | None, keep_going: bool) -> None:
    """Open a login shell inside container NAME (like lxc shell); without NAME, the admin shell.

    The admin shell runs every sysmgr verb without the "sysmgr" prefix, with completion of
    verbs, options, config keys and live names (containers, images, snapshots...), history,
    "help VERB" and "use MEMBER". Fed a file (sysmgr shell < script) it runs the lines and
    stops at the first failure, with its exit code.
    """
    app = ctx.ensure_object(AppContext)
    if name is None:
        from sysmgr.cli import shell as admin  # the admin shell: only here

        ctx.exit(admin.run(app, keep_going=keep_going))
    if keep_going:
        raise click.UsageError("--keep-going is for the admin shell (sysmgr shell < FILE)")
    ctx.exit(verbs.shell(app, name))


@click.command()
@click.argument("name")
@click.option("--show-log", is_flag=True, help="Print the container's console log.")
@pass_app
def console(app: AppContext, name: str, show_log: bool) -> None:
    """Show the console of a container (its console log)."""
    if not show_log:
        raise ValidationError(
            "only 'sysmgr console NAME --show-log' is supported: a container's console is "
            "written to a log file, there is no interactive console to attach to",
            hint=f"sysmgr console {name} --show-log, or sysmgr shell {name} for a shell")
    log = app.client.containers.get(name).console_log()
    click.echo(log, nl=not log.endswith("\n") and bool(log))
