"""``sysmgr top``: the live view of every container's usage (:mod:`sysmgr.cli.top` draws it);
``--once`` prints one frame (a table, or JSON for scripts) and exits."""

from __future__ import annotations

import time

import click

from sysmgr.cli.app import echo_err, output
from sysmgr.cli.commands._common import AppContext, pass_app
from sysmgr.errors import ValidationError


@click.command()
@click.option("--refresh", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              metavar="SECONDS", help="Seconds between frames (and between --once's samples).")
@click.option("--once", is_flag=True,
              help="Print one frame and exit: two samples --refresh seconds apart.")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format of --once.")
@click.option("-s", "--sort", type=click.Choice(["cpu", "memory", "disk", "net", "name"]),
              default="cpu", show_default=True, help="Sort order (keys c, m, d, n change it).")
@pass_app
def top(app: AppContext, refresh: float, once: bool, fmt: str, sort: str) -> None:
    """Show every container's CPU, memory, disk, network and processes, live.

    On an admin root with cluster members, every member's containers (LOCATION); --target
    narrows to one member or @GROUP. CPU% is of one CPU (200 on two busy CPUs); the network
    rates are what the container received / sent per second.

    \b
    Keys: c sort by CPU, m memory, d disk, n network, q quit.

    \b
    Examples:
      sysmgr top
      sysmgr top --refresh 5 --sort memory
      sysmgr top --once --format json | jq '.[] | {name, cpu_percent}'
    """
    from sysmgr.cli import render, top as view

    if fmt != "table" and not once:
        raise ValidationError("--format json needs --once", hint="sysmgr top --once -f json")
    app.cluster_wide = True
    client = app.client
    members = None
    if app.target:
        if not getattr(client, "clustered", False):
            raise ValidationError(f"--target {app.target}: this root has no cluster members")
        members = client.cluster.members_of(app.target)

    def sample() -> "view.Sample":
        return view.take_sample(client, members)

    if not once:
        view.run_live(sample, refresh, sort)
        return
    first = sample()
    time.sleep(refresh)
    now = sample()
    rows = view.sort_rows(view.frame(first, now), sort)
    output(render.json_text(view.to_records(rows)) if fmt == "json" else view.plain_table(rows))
    for member, why in sorted(now.unreachable.items()):
        echo_err(f"Error: member {member} is unreachable: {why}")
    if now.unreachable:
        raise click.exceptions.Exit(1)
