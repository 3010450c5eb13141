"""``sysmgr monitor``: follow the host root's event log, like ``lxc monitor``.

One event per line as it is written (``pretty``: ``2026-11-30 09:40:01 lifecycle
container/web1 started ok``; ``json``: JSON lines; ``yaml``: one document each) until Ctrl-C,
which ends it with exit code 0. ``--since 10m`` shows the last ten minutes first.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import click

from sysmgr.api.events import TYPES
from sysmgr.cli.commands._common import (
    AppContext, add_target_option, duration_callback, format_option, pass_app)

def pretty(e: Any) -> str:
    """``2026-11-30 09:40:01 lifecycle container/web1 started ok`` (local time), then
    ``commit=``, ``member=`` and `` - detail`` when the event has them."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.time))} {e.type} " \
           f"{e.object} {e.action} {e.result}"
    for k in ("commit", "member"):
        if getattr(e, k):
            line += f" {k}={getattr(e, k)}"
    return line + (f" - {e.detail}" if e.detail else "")


def _json(e: Any) -> str:
    import json  # --format json only

    return json.dumps(e.to_dict(), default=str)


def _yaml(e: Any) -> str:
    from sysmgr.cli.render import yaml_text  # --format yaml only

    return "---\n" + yaml_text(e.to_dict())


_RENDER: dict[str, Callable[[Any], str]] = {"pretty": pretty, "json": _json, "yaml": _yaml}


@click.command()
@click.option("-t", "--type", "types", multiple=True, type=click.Choice(TYPES),
              help="Only events of this type (repeatable; default: all).")
@format_option(tuple(_RENDER), default="pretty")
@click.option("--since", metavar="DURATION", callback=duration_callback,
              help="First show the events of the last DURATION (30s, 10m, 2h, 1d).")
@click.option("--all-members", is_flag=True,
              help="Every cluster member's events, watched in the cluster store (etcd) "
                   "instead of tailing each member.")
@pass_app
def monitor(app: AppContext, types: tuple[str, ...], fmt: str, since: float | None,
            all_members: bool) -> None:
    """Follow the event log: lifecycle changes, apply operations, drift (until Ctrl-C).

    Every start, stop, create, delete, copy, move and snapshot any sysmgr command (or the
    controller) makes is an event of the host root; `monitor` prints them as they happen.
    """
    render = _RENDER[fmt]
    start = None if since is None else time.time() - since
    events = app.client.events
    follow = events.follow_cluster if all_members else events.follow
    try:
        for event in follow(types=types or None, since=start):
            click.echo(render(event))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a monitor ends: success, as for lxc monitor


# --target MEMBER follows that member's log (asked over SSH what is new, every second)
monitor = add_target_option(monitor)
