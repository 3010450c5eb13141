"""``sysmgr init``: prepare the host root (default storage pool, network and profile), like
``lxd init``."""

from __future__ import annotations

import click

from sysmgr.cli.commands._common import AppContext, pass_app, stdin_is_tty


@click.command()
@click.option("--auto", is_flag=True, help="Use defaults for every question (no prompts).")
@click.option("--storage-driver", metavar="DRIVER",
              help="Driver of the default storage pool (btrfs, dir). Default: $SYSMGR_STORAGE_DRIVER, "
                   "else btrfs on a loop file when the host can run it, else dir.")
@click.option("--network", metavar="NAME|none",
              help="Managed network to create and give the default profile an eth0 nic on "
                   "(default: sysmgrbr0; none: no network).")
@click.option("--runtime", metavar="ENGINE",
              help="Runtime engine for containers: native (default), crun or runc; sets "
                   "runtime.engine in the default profile (a container or profile can still "
                   "choose another). crun and runc run the same bundle and must be installed.")
@click.option("--network-driver", hidden=True, help="Network driver to record (tests: fake).")
@pass_app
def init(app: AppContext, auto: bool, storage_driver: str | None, network: str | None,
         runtime: str | None, network_driver: str | None) -> None:
    """Initialise the host root (default storage pool, network and profile).

    Idempotent: running it again only brings recorded networks back up (after a reboot)
    and starts the containers boot.autostart wants running (true, or unset and running
    when the host went down), in boot order (priority, delay, boot.depends).
    """
    if network is None:
        network = "sysmgrbr0"
        if not auto and stdin_is_tty():
            network = click.prompt("Name of the network to create (none: no network)",
                                   default=network)
    if not auto and storage_driver is None and stdin_is_tty():
        from sysmgr.api.client import default_storage_driver  # only when asking interactively

        storage_driver = click.prompt("Name of the storage backend to use (btrfs, dir)",
                                      default=default_storage_driver())
    done = app.client.init(auto=True, storage_driver=storage_driver, runtime=runtime,
                           network=None if network.lower() == "none" else network,
                           network_driver=network_driver)
    for line in done:
        click.echo(line)
    if not done:
        click.echo(f"Nothing to do: host root {app.client.root} is already initialised")
    from sysmgr.cli.commands.info import cgroup_line

    click.echo(f"cgroups: {cgroup_line(app.client.host_cgroups())}")
