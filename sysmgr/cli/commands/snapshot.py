"""``sysmgr snapshot``: container snapshots (``lxc snapshot`` / ``lxc restore`` / ``lxc info``'s
snapshot list): create, list, show, rename, restore, delete, prune, auto.

Times in documents are LXD's: RFC 3339 in UTC, and ``0001-01-01T00:00:00Z`` (Go's zero
time) for a snapshot that never expires; ``sysmgr config edit NAME/SNAP`` changes the expiry.
"""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, Group, confirm, for_each, format_option, output, pass_app)

HEADERS = ("NAME", "TAKEN AT", "EXPIRES AT", "STATEFUL", "PROFILES")


def lxd_time(ts: float | None) -> str:
    """LXD's RFC 3339 (Go's zero time for "never")."""
    from sysmgr.model.schedule import format_timestamp  # pure; only documents need it

    return format_timestamp(ts)


def snapshot_record(s: Any) -> dict[str, Any]:
    return {
        "container": s.container,
        "name": s.name,
        "created_at": lxd_time(s.created_at),
        "expires_at": lxd_time(s.expires_at),
        "stateful": False,  # no checkpointing here (CRIU does not run on this kernel)
        "profiles": list(s.profiles),
        "description": s.description,
        "config": dict(sorted(s.config.items())),
        "devices": {k: dict(v) for k, v in sorted(s.devices.items())},
    }


def snapshot_row(s: Any) -> list[object]:
    """NAME, TAKEN AT, EXPIRES AT, STATEFUL as ``lxc info`` lists snapshots."""
    return [s.name, render.format_timestamp(s.created_at), render.format_timestamp(s.expires_at),
            "NO"]


@click.group(cls=Group)
def snapshot() -> None:
    """Manage container snapshots (filesystem + configuration)."""


@snapshot.command("create")
@click.argument("name")
@click.argument("snap", required=False)
@click.option("--expiry", metavar="EXPIRY",
              help="Lifetime of this snapshot (2w, 3d, 12H...; overrides snapshots.expiry).")
@click.option("--no-expiry", is_flag=True, help="This snapshot never expires.")
@pass_app
def create(app: AppContext, name: str, snap: str | None, expiry: str | None, no_expiry: bool) -> None:
    """Snapshot container NAME as SNAP (default snap0, snap1...).

    \b
    Examples:
      sysmgr snapshot create web1 before-upgrade --expiry 2w
    """
    if expiry is not None and no_expiry:
        raise click.UsageError("--expiry and --no-expiry cannot be combined")
    s = app.client.containers.get(name).snapshots.create(snap, expiry="" if no_expiry else expiry)
    click.echo(f"Snapshot {name}/{s.name} created")


@snapshot.command("list")
@click.argument("name")
@format_option()
@pass_app
def list_(app: AppContext, name: str, fmt: str) -> None:
    """List the snapshots of container NAME, oldest first."""
    snaps = {s.name: s for s in app.client.containers.get(name).snapshots.all()}
    records = [snapshot_record(s) for s in snaps.values()]
    output(render.listing(fmt, HEADERS, records, lambda r: [
        *snapshot_row(snaps[r["name"]]), ", ".join(r["profiles"])]))


@snapshot.command("show")
@click.argument("name")
@click.argument("snap")
@format_option(("yaml", "json"), default="yaml")
@pass_app
def show(app: AppContext, name: str, snap: str, fmt: str) -> None:
    """Show snapshot SNAP of NAME: when it was taken and the configuration it recorded."""
    click.echo(render.document(fmt, snapshot_record(app.client.containers.get(name).snapshots.get(snap))))


@snapshot.command("rename")
@click.argument("name")
@click.argument("snap")
@click.argument("new")
@pass_app
def rename(app: AppContext, name: str, snap: str, new: str) -> None:
    """Rename snapshot SNAP of container NAME to NEW."""
    app.client.containers.get(name).snapshots.rename(snap, new)
    confirm("Snapshot", f"{name}/{snap}", f"renamed to {new}")


@snapshot.command("restore")
@click.argument("name")
@click.argument("snap")
@click.option("-f", "--force", is_flag=True, hidden=True,
              help="Accepted for older scripts: a running container is restored in place.")
@pass_app
def restore(app: AppContext, name: str, snap: str, force: bool) -> None:
    """Restore container NAME's filesystem and configuration from snapshot SNAP.

    A running container is restored in place, as LXD does: stopped (its processes are
    killed: their state is what the restore throws away), restored and started again.
    """
    from sysmgr.cli import render  # the restore of a big tree takes a while: show it runs

    with render.progress() as progress:
        progress(f"Restoring {name} from snapshot {snap}")
        steps = app.client.containers.get(name).snapshots.restore(snap, force=force)
    again = any(s.startswith("started") for s in steps)
    confirm("Container", name, f"restored from snapshot {snap}"
            + (" (stopped and started again)" if again else ""))


@snapshot.command("delete")
@click.argument("name")
@click.argument("snaps", nargs=-1, required=True, metavar="SNAP...")
@pass_app
def delete(app: AppContext, name: str, snaps: tuple[str, ...]) -> None:
    """Delete snapshots of container NAME."""
    c = app.client.containers.get(name)

    def one(snap: str) -> None:
        c.snapshots.delete(snap)
        confirm("Snapshot", f"{name}/{snap}", "deleted")

    for_each(snaps, one)


@snapshot.command("prune")
@click.argument("name", required=False)
@pass_app
def prune(app: AppContext, name: str | None) -> None:
    """Delete expired snapshots now (of NAME, or of every container)."""
    if name:
        gone = app.client.containers.get(name).snapshots.prune()
    else:
        from sysmgr.api import snapshots  # the API on first use, as every command does

        gone = snapshots.prune_all(app.client)
    for g in gone:
        confirm("Snapshot", g, "deleted (expired)")


@snapshot.command("auto")
@pass_app
def auto(app: AppContext) -> None:
    """Take the snapshots snapshots.schedule says are due, then delete expired ones.

    Run it every minute from a timer, e.g. a cron line:
    * * * * * root sysmgr snapshot auto
    """
    from sysmgr.api import snapshots  # the API on first use, as every command does

    for line in snapshots.auto(app.client):  # "snapshot c1/snap3", "expired c1/snap0"
        what, _, snap = line.partition(" ")
        confirm("Snapshot", snap, "created" if what == "snapshot" else "deleted (expired)")
