"""``sysmgr copy`` and ``sysmgr rename``: duplicate a container (or one of its snapshots)
with a new identity, or rename a stopped one (``lxc copy`` / ``lxc move OLD NEW``)."""

from __future__ import annotations

import click

from sysmgr.cli.commands._common import AppContext, pass_app


@click.command()
@click.argument("src", metavar="SRC[/SNAP]")
@click.argument("dst")
@click.option("--snapshot", metavar="SNAP", help="Copy this snapshot of SRC instead of its current state.")
@click.option("-s", "--storage", "pool", metavar="POOL", help="Storage pool of the copy (default: SRC's).")
@pass_app
def copy(app: AppContext, src: str, dst: str, snapshot: str | None, pool: str | None) -> None:
    """Copy container SRC to a new, stopped container DST.

    The copy gets its own hostname and MAC addresses, and no snapshots. On the same btrfs
    pool it takes constant time.

    \b
    Examples:
      sysmgr copy web1 web2
      sysmgr copy web1/before-upgrade web1-old      (same as --snapshot before-upgrade)
      sysmgr copy web1 web1-dir -s slow
    """
    if "/" in src:
        src, _, snap = src.partition("/")
        if snapshot is not None and snapshot != snap:
            raise click.UsageError("give the snapshot as SRC/SNAP or --snapshot, not both")
        snapshot = snap
    app.client.containers.get(src).copy(dst, snapshot=snapshot, pool=pool)
    click.echo(f"Copied {src}{'/' + snapshot if snapshot else ''} to {dst}")


@click.command()
@click.argument("old")
@click.argument("new")
@pass_app
def rename(app: AppContext, old: str, new: str) -> None:
    """Rename the stopped container OLD to NEW (its snapshots follow)."""
    app.client.containers.get(old).rename(new)
    click.echo(f"Renamed {old} to {new}")
