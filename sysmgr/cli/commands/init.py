"""``sysmgr init``: prepare the host root (default storage pool and profile), like
``lxd init``."""

from __future__ import annotations

import click

from sysmgr.cli.commands._common import AppContext, pass_app, stdin_is_tty


@click.command()
@click.option("--auto", is_flag=True, help="Use defaults for every question (no prompts).")
@click.option("--storage-driver", metavar="DRIVER",
              help="Driver of the default storage pool (dir, btrfs...). Default: dir.")
@click.option("--runtime", hidden=True, help="Runtime driver to record (tests: fake).")
@pass_app
def init(app: AppContext, auto: bool, storage_driver: str | None, runtime: str | None) -> None:
    """Initialise the host root (default storage pool and profile).

    Idempotent: running it again only starts containers marked boot.autostart.
    """
    if not auto and storage_driver is None and stdin_is_tty():
        storage_driver = click.prompt("Name of the storage backend to use", default="dir")
    done = app.client.init(auto=True, storage_driver=storage_driver, runtime=runtime)
    for line in done:
        click.echo(line)
    if not done:
        click.echo(f"Nothing to do: host root {app.client.root} is already initialised")
