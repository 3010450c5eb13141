"""Helpers shared by the command modules: the pass decorator, the group class, option
factories (``--target``, ``--format``, durations), device arguments and terminal checks (the
get/set/edit verbs are in ``_keyvalue``). The per-run context, ``KEY=VALUE`` parsing,
multi-name actions and the output helpers are click-free, in :mod:`sysmgr.cli.app`, and
re-exported here.

Only click and the standard library are imported here; ``sysmgr.api`` is imported on
first use so that loading a command module stays cheap.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import click

# the click-free part, shared with the hot verbs' fast path; re-exported for the commands
from sysmgr.cli.app import (  # noqa: F401
    DOC_FORMATS, LIST_FORMATS, AppContext, confirm, echo_err, for_each, output, parse_assignments)
from sysmgr.errors import Issue, ValidationError

T = TypeVar("T")


pass_app = click.make_pass_decorator(AppContext, ensure=True)


class Group(click.Group):
    """A command group that answers a mistyped subcommand with the closest ones
    (``sysmgr lsit``: did you mean 'list'?), whatever click's version; its subgroups are
    of the same class."""

    group_class = type  # ``@group.group()`` makes another Group

    def visible_names(self, ctx: click.Context) -> list[str]:
        """The names a user may type (hidden commands left out)."""
        return [n for n in self.list_commands(ctx)
                if (c := self.get_command(ctx, n)) is not None and not c.hidden]

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing \
                and self.get_command(ctx, name) is None:
            import difflib  # only on a mistake

            close = difflib.get_close_matches(name, self.visible_names(ctx), n=3, cutoff=0.6)
            aliases: dict[str, str] = getattr(self, "aliases", {})  # ls and list: one answer
            close = list(dict.fromkeys(aliases.get(c, c) for c in close))
            raise NoSuchCommand(name, close, ctx)
        return super().resolve_command(ctx, args)


class NoSuchCommand(click.UsageError):
    """A mistyped (sub)command: its ``name`` and the ``close`` names a user may have meant
    (the admin shell words it its own way)."""

    def __init__(self, name: str, close: list[str], ctx: click.Context) -> None:
        self.name, self.close = name, close
        super().__init__(f"No such command {name!r}.{self.did_you_mean}", ctx)

    @property
    def did_you_mean(self) -> str:
        return f" Did you mean {' or '.join(repr(c) for c in self.close)}?" if self.close else ""


# -- --target -----------------------------------------------------------------------------

def _set_target(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).target = value


TARGET_HELP = "Cluster member to act on (LXD's --target); launch/create also take @GROUP."


def add_target_option(cmd: click.Command) -> click.Command:
    """Give ``cmd`` (and every subcommand of a group) ``--target MEMBER`` (once)."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_target_option(sub)
        return cmd
    if not any("--target" in getattr(p, "opts", ()) for p in cmd.params):
        # its own parameter name: `file push`/`pull` have a TARGET argument of their own
        cmd.params.append(click.Option(["--target", "cluster_target"], metavar="MEMBER",
                                       expose_value=False, callback=_set_target,
                                       help=TARGET_HELP))
    return cmd


def format_option(choices: Sequence[str] = LIST_FORMATS, default: str = "table") -> Callable[[T], T]:
    """``-f/--format`` as on every ``lxc`` listing."""
    return click.option("-f", "--format", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True, help="Output format.")


def placement_args(app: AppContext, progress: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """The keyword arguments that place a new container (``--target``, and a progress
    callback for the image copy placement may need), for the cluster's
    ``containers.create``/``import_``; none on a single host, where ``--target`` is refused."""
    app.cluster_wide = True
    if not getattr(app.client, "clustered", False):
        if app.target:
            raise ValidationError(f"--target {app.target}: this root has no cluster members",
                                  hint="sysmgr cluster add NAME URL adds one")
        return {}
    if app.target:
        app.client.cluster.members_of(app.target)  # naming nothing: fails before any output
    return {"target": app.target, "progress": progress}


# -- KEY=VALUE ----------------------------------------------------------------------------

def parse_device_args(devname: str, devtype: str | None, items: Sequence[str]) -> dict[str, str]:
    """``TYPE key=value...`` of ``device add`` as a device map."""
    dev = parse_assignments(items)
    if devtype is not None:
        dev = {"type": devtype, **{k: v for k, v in dev.items() if k != "type"}}
    if not dev.get("type"):
        raise ValidationError([Issue(f"device {devname!r} has no type", path=f"devices.{devname}.type")],
                              hint="give a type, e.g. disk or nic")
    return dev


# -- terminals ---------------------------------------------------------------------------

def stdin_is_tty() -> bool:
    """Whether a person may be typing on stdin (prompts and editors only then)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def report_pending(name: str, pending: Sequence[str]) -> None:
    """Name the changed keys that take effect only after a restart (stderr)."""
    if pending:
        echo_err(f"Restart {name} for these to take effect: {', '.join(pending)}")



def duration_callback(_ctx: click.Context, _param: click.Parameter, value: str | None
                      ) -> float | None:
    """A ``DURATION`` option (``30s``, ``10m``, ``2d``) as seconds; a bad one is a usage error."""
    if value is None:
        return None
    from sysmgr._util.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def aborted(what: str) -> NoReturn:
    """The user answered no at a confirmation: say so (not an error) and exit 1."""
    click.echo(f"aborted, {what}")
    raise SystemExit(1)
