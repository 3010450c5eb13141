"""``sysmgr keys``: the container config keys sysmgr understands, from the model's rule
tables (the same tables that validate manifests and ``-c KEY=VALUE``)."""

from __future__ import annotations

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import format_option, output


@click.command()
@click.argument("prefix", required=False, default="")
@format_option()
def keys(prefix: str, fmt: str) -> None:
    """List the container config keys and what they do.

    PREFIX limits the list, e.g. "sysmgr keys limits." (LIVE: applies without a restart).
    """
    from sysmgr.model.keys import describe_keys

    records = [{"key": k, "live": live, "description": doc}
               for k, doc, live in describe_keys() if k.startswith(prefix)]
    output(render.listing(fmt, ("KEY", "LIVE", "DESCRIPTION"), records,
                              lambda r: [r["key"], "yes" if r["live"] else "no", r["description"]]))
