"""The declarative verbs: ``validate``, ``diff`` and ``apply`` on manifest files/directories.

``diff`` follows ``kubectl diff``: exit 0 when there is nothing to do, 1 when changes are
pending, 2 or more on errors, so CI can tell "changes" from "failed". ``apply`` shows the same
plan, asks before stopping or restarting running containers (refuses without ``--yes`` when
stdin is not a terminal), then applies it with progress.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, aborted, duration_callback, pass_app, stdin_is_tty)
from sysmgr.errors import SysmgrError

EXIT_CHANGES = 1


def _files_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-f", "--filename", "paths", multiple=True, required=True, metavar="PATH",
                        type=click.Path(), help="Manifest file or directory (repeatable; "
                                                "directories are read recursively).")(f)


def _prune_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--keep-backups", metavar="DURATION", callback=duration_callback,
                     help="With --prune: how long the pruned containers' backups are kept "
                          "(default 30d; older ones are removed at the next prune).")(f)
    f = click.option("--no-backup", is_flag=True,
                     help="With --prune: delete containers without exporting them first.")(f)
    return click.option("--prune", is_flag=True,
                        help="Also delete what was created from these manifests (the same -f "
                             "paths) and left them; a container is stopped and exported to "
                             "<root>/backups/pruned/ first. Objects made by hand or from "
                             "other manifests, and those marked 'prune: false', stay.")(f)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def print_plan(plan: Any) -> None:
    click.echo(render.plan_text(plan, color=render.use_color(sys.stdout)))


_plan_format = click.option("--format", "fmt", type=click.Choice(["text", "json"]),
                            default="text", show_default=True,
                            help="json: the plan as data (one document on stdout; progress "
                                 "and prompts on stderr), with the same exit codes.")


def applied_summary(plan: Any) -> str:
    summary = plan.summary()
    return "applied: " + (summary[len("plan: "):] if summary.startswith("plan: ") else summary)


@click.command()
@_files_option
@pass_app
def validate(app: AppContext, paths: tuple[str, ...]) -> None:
    """Check manifests without changing anything.

    Prints "valid: N documents", or every problem found (exit 2).
    """
    manifest = app.client.manifests.validate(list(paths))
    click.echo(f"valid: {_plural(len(manifest.specs), 'document')}")


@click.command()
@_files_option
@_prune_options
@_plan_format
@click.pass_context
def diff(ctx: click.Context, paths: tuple[str, ...], prune: bool, no_backup: bool,
         keep_backups: float | None, fmt: str) -> None:
    """Show what apply would change. Exit 0: no changes, 1: changes pending, 2+: error."""
    app = ctx.ensure_object(AppContext)
    app.error_floor = 2  # exit 1 means "changes pending" here
    plan = app.client.manifests.plan(list(paths), prune=prune, backup=not no_backup,
                                     keep_backups=keep_backups)
    if fmt == "json":
        click.echo(render.json_text(render.plan_document(plan)))
    else:
        print_plan(plan)
    if not plan.empty:
        ctx.exit(EXIT_CHANGES)


@click.command()
@_files_option
@click.option("--dry-run", is_flag=True, help="Show the plan and stop.")
@click.option("-y", "--yes", is_flag=True,
              help="Do not ask before stopping, restarting or deleting (--prune).")
@_prune_options
@_plan_format
@pass_app
def apply(app: AppContext, paths: tuple[str, ...], dry_run: bool, yes: bool, prune: bool,
          no_backup: bool, keep_backups: float | None, fmt: str) -> None:
    """Make the host match the manifests (--format json: the plan and what was done, as
    data)."""
    as_data = fmt == "json"
    manifests = app.client.manifests
    plan = manifests.plan(list(paths), prune=prune, backup=not no_backup,
                          keep_backups=keep_backups)
    doc = render.plan_document(plan)
    if not as_data:
        print_plan(plan)
    if plan.empty or dry_run:
        if as_data:
            click.echo(render.json_text({**doc, "applied": False, "done": []}))
        return
    if plan.disruptive and not yes:
        names = ", ".join(sorted({a.name for a in plan.disruptive}))
        if not stdin_is_tty():
            raise SysmgrError(f"the plan stops, restarts or deletes ({names}); "
                              "refusing without confirmation", hint="re-run with --yes to apply it")
        if not click.confirm("Apply?", default=False, err=as_data):
            aborted("nothing applied")
    if not as_data:
        click.echo()
    with render.progress(indent="  ", err=as_data) as progress:
        result = manifests.apply(plan, progress=progress)
    if as_data:
        click.echo(render.json_text({**doc, "applied": True,
                                     "done": list(getattr(result, "done", []) or [])}))
        return
    click.echo(applied_summary(plan))
