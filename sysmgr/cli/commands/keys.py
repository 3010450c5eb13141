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
@click.option("--volume", "volume", is_flag=True,
              help="List the keys of custom storage volumes (kind: StorageVolume) instead.")
@click.option("--storage", "storage", is_flag=True,
              help="List the keys of storage pools (kind: StoragePool) instead.")
@format_option()
def keys(prefix: str, network: bool, volume: bool, storage: bool, fmt: str) -> None:
    """List the container config keys and what they do.

    PREFIX limits the list, e.g. "sysmgr keys limits." (LIVE: applies without a restart).
    """
    if volume:
        from sysmgr.model.volume_keys import describe_volume_keys  # this command only

        vrecords = [{"key": k, "live": live, "description": doc}
                    for k, doc, live in describe_volume_keys() if k.startswith(prefix)]
        output(render.listing(fmt, ("KEY", "LIVE", "DESCRIPTION"), vrecords,
                              lambda r: [r["key"], "yes" if r["live"] else "no", r["description"]]))
        return
    if storage or network:
        # (driver or type, key, doc) triples from the model's tables: this command only
        from sysmgr.model.network_keys import describe_network_keys
        from sysmgr.model.pool_keys import describe_pool_keys

        first = "driver" if storage else "type"
        triples = describe_pool_keys() if storage else describe_network_keys()
        records = [{first: t, "key": k, "description": doc}
                   for t, k, doc in triples if k.startswith(prefix)]
        output(render.listing(fmt, (first.upper(), "KEY", "DESCRIPTION"), records,
                              lambda r: [r[first], r["key"], r["description"]]))
        return
    from sysmgr.model.keys import describe_keys  # this command only

    records = [{"key": k, "live": live, "description": doc}
               for k, doc, live in describe_keys() if k.startswith(prefix)]
    output(render.listing(fmt, ("KEY", "LIVE", "DESCRIPTION"), records,
                              lambda r: [r["key"], "yes" if r["live"] else "no", r["description"]]))
