"""Helpers shared by the command modules: the per-run context, option factories, ``KEY=VALUE``
parsing, multi-name actions and terminal checks (the get/set/edit verbs are in ``_keyvalue``).

Only click and the standard library are imported here; ``sysmgr.api`` is imported on
first use so that loading a command module stays cheap.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

import click

from sysmgr.errors import Issue, SysmgrError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client

T = TypeVar("T")

LIST_FORMATS = ("table", "json", "yaml", "csv")
DOC_FORMATS = ("yaml", "json")


def make_client(root: str | None) -> "Client":
    """Create the API client for ``root`` (tests replace this function with a stub)."""
    from sysmgr.api.client import Client  # on first use: --help and --version need none of it

    return Client(root=root)


@dataclass
class AppContext:
    """What the root group knows for one invocation (``ctx.obj``).

    The :class:`~sysmgr.api.client.Client` is created on first use, so ``--help`` and
    ``--version`` never touch the host root.
    """

    root: str | None = None
    debug: bool = False
    # lowest exit code an error may map to: ``diff`` raises it to 2 (1 means "changes")
    error_floor: int = 1
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> "Client":
        if self._client is None:
            self._client = make_client(self.root)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()


pass_app = click.make_pass_decorator(AppContext, ensure=True)


def format_option(choices: Sequence[str] = LIST_FORMATS, default: str = "table") -> Callable[[T], T]:
    """``-f/--format`` as on every ``lxc`` listing."""
    return click.option("-f", "--format", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True, help="Output format.")


# -- KEY=VALUE ----------------------------------------------------------------------------

def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict (the model's parser; ValidationError on bad items)."""
    if not items:
        return {}
    from sysmgr.model.keys import parse_assignments as parse  # the key tables: only with KEY=VALUE

    return parse(items)


def parse_device_args(devname: str, devtype: str | None, items: Sequence[str]) -> dict[str, str]:
    """``TYPE key=value...`` of ``device add`` as a device map."""
    dev = parse_assignments(items)
    if devtype is not None:
        dev = {"type": devtype, **{k: v for k, v in dev.items() if k != "type"}}
    if not dev.get("type"):
        raise ValidationError([Issue(f"device {devname!r} has no type", path=f"devices.{devname}.type")],
                              hint="give a type, e.g. disk or nic")
    return dev


# -- several names ------------------------------------------------------------------------

def for_each(names: Iterable[str], action: Callable[[str], object]) -> None:
    """Run ``action`` on every name (like ``lxc start c1 c2``: one failure does not stop the
    others), then raise one error naming every failure."""
    names = list(names)
    failures: list[tuple[str, SysmgrError]] = []
    for name in names:
        try:
            action(name)
        except SysmgrError as e:
            failures.append((name, e))
    if not failures:
        return
    if len(names) == 1:
        raise failures[0][1]
    err = SysmgrError("\n".join(f"{n}: {e.message}" for n, e in failures),
                      hint=failures[0][1].hint if len(failures) == 1 else None)
    err.exit_code = max(e.exit_code for _, e in failures)
    raise err


def stdin_is_tty() -> bool:
    """Whether a person may be typing on stdin (prompts and editors only then)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def output(text: str) -> None:
    """Print a rendered block; nothing at all when it is empty (a CSV without rows)."""
    if text:
        click.echo(text)


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def report_pending(name: str, pending: Sequence[str]) -> None:
    """Name the changed keys that take effect only after a restart (stderr)."""
    if pending:
        echo_err(f"Restart {name} for these to take effect: {', '.join(pending)}")

