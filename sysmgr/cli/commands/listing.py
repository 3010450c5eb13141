"""``sysmgr list``: the click command; the listing itself (columns, filters, cluster
members) is :mod:`sysmgr.cli.listing`, which the fast path runs too."""

from __future__ import annotations

import click

from sysmgr.cli import verbs
from sysmgr.cli.commands._common import AppContext, format_option
from sysmgr.cli.listing import DEFAULT_COLUMNS, FAST_COLUMNS


@click.command("list")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@click.option("-c", "--columns", metavar="COLUMNS",
              help=f"Columns, as LXD's letters (default {DEFAULT_COLUMNS}; see below) or "
                   "[config:|devices:]KEY[:NAME][:MAXWIDTH].")
@click.option("--fast", is_flag=True, help=f"Fast mode: --columns {FAST_COLUMNS}, no usage read.")
@format_option()
@click.pass_context
def list_(ctx: click.Context, filters: tuple[str, ...], columns: str | None, fast: bool,
          fmt: str) -> None:
    """List containers (on an admin root with cluster members: every member's).

    \b
    Filters (all must match):
      web                 names starting with "web" (or a regex on the whole name)
      status=running      containers in that state (also type=, location=, ipv4=CIDR)
      KEY=VALUE           expanded config key (u.role=db abbreviates user.role=db)
    \b
    Columns (-c, LXD's letters; default ns4PmDN, with LOCATION on a cluster):
      n name  s state  4 IPv4  6 IPv6  P profiles  m memory  M memory %  D disk
      N processes  p PID  u CPU time  S snapshots  c created  l last used
      d description  b storage pool  t type  a architecture  f/F base image
      e project  L location (cluster)
      user.team:TEAM      a config key as a column (devices:eth0.parent: a device key)
    """
    if fast and columns:
        raise click.UsageError("--fast and --columns cannot be combined")
    ctx.exit(verbs.list_(ctx.ensure_object(AppContext), filters, columns, fast, fmt))
