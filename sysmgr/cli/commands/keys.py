"""``sysmgr keys``: the container config keys sysmgr understands, from the model's rule
tables (the same tables that validate manifests and ``-c KEY=VALUE``)."""

from __future__ import annotations

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import format_option, output


@click.command()
@click.argument("prefix", required=False, default="")
@click.option("--network", "network", is_flag=True,
              help="List the keys of managed networks (kind: Network) instead.")
@click.option("--storage", "storage", is_flag=True,
              help="List the keys of storage pools (kind: StoragePool) instead.")
@format_option()
def keys(prefix: str, network: bool, storage: bool, fmt: str) -> None:
    """List the container config keys and what they do.

    PREFIX limits the list, e.g. "sysmgr keys limits." (LIVE: applies without a restart).
    """
    if storage:
        from sysmgr.model.pool_keys import describe_pool_keys  # this command only

        precords = [{"driver": d, "key": k, "description": doc}
                    for d, k, doc in describe_pool_keys() if k.startswith(prefix)]
        output(render.listing(fmt, ("DRIVER", "KEY", "DESCRIPTION"), precords,
                              lambda r: [r["driver"], r["key"], r["description"]]))
        return
    if network:
        from sysmgr.model.network_keys import describe_network_keys  # this command only

        nrecords = [{"type": t, "key": k, "description": doc}
                    for t, k, doc in describe_network_keys() if k.startswith(prefix)]
        output(render.listing(fmt, ("TYPE", "KEY", "DESCRIPTION"), nrecords,
                              lambda r: [r["type"], r["key"], r["description"]]))
        return
    from sysmgr.model.keys import describe_keys  # this command only

    records = [{"key": k, "live": live, "description": doc}
               for k, doc, live in describe_keys() if k.startswith(prefix)]
    output(render.listing(fmt, ("KEY", "LIVE", "DESCRIPTION"), records,
                              lambda r: [r["key"], "yes" if r["live"] else "no", r["description"]]))
