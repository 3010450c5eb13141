"""``sysmgr copy``, ``sysmgr move`` and ``sysmgr rename``: duplicate a container (here, or
onto another cluster member with its snapshots, or refresh such a copy), move it between
members, or rename a stopped one (``lxc copy`` / ``lxc move``)."""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli.commands._common import AppContext, confirm, pass_app


def _member_and_name(dst: str | None, target: str | None) -> tuple[str | None, str | None]:
    """``[MEMBER:]NAME`` and ``--target MEMBER`` as (member, name)."""
    member, name = None, dst
    if dst is not None and ":" in dst:
        member, _, name = dst.partition(":")
        member = member or None
    if target is not None:
        if member is not None and member != target:
            raise click.UsageError(f"{dst} names member {member}, --target names {target}")
        member = target
    return member, name or None


def _printer(quiet: bool) -> Any:
    from sysmgr.cli.render import ProgressPrinter

    return ProgressPrinter(err=True, live=False if quiet else None)


def _summary(r: Any) -> str:
    """``near-live, 3 rounds, 302MiB as a btrfs stream in 2.5 s`` (what and how it was sent)."""
    from sysmgr.cli.render import format_size

    how = {"live": f"near-live, {len(r.rounds)} rounds, ",
           "cold": "stopped first, " if r.downtime else ""}.get(r.kind, "")
    return f"{how}{format_size(r.bytes)} as a {r.stream} stream in {r.seconds:.1f} s"


def _downtime(r: Any) -> str:
    d = r.downtime
    return (f"Downtime {d.total:.2f} s: the guest's shutdown {d.shutdown:.2f} s, sysmgr "
            f"{d.sysmgr:.2f} s (last increment, switch, start), the guest answering "
            f"{d.boot:.2f} s")


@click.command()
@click.argument("src", metavar="SRC[/SNAP]")
@click.argument("dst", metavar="[MEMBER:]DST", required=False)
@click.option("--snapshot", metavar="SNAP", help="Copy this snapshot of SRC instead of its current state.")
@click.option("-s", "--storage", "pool", metavar="POOL", help="Storage pool of the copy (default: SRC's).")
@click.option("--target", "to", metavar="MEMBER",
              help="Cluster member to copy to (LXD's --target; same as MEMBER:DST).")
@click.option("--refresh", is_flag=True,
              help="Bring the existing copy DST up to date: only what changed since their "
                   "newest common snapshot travels.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@pass_app
def copy(app: AppContext, src: str, dst: str | None, snapshot: str | None, pool: str | None,
         to: str | None, refresh: bool, quiet: bool) -> None:
    """Copy container SRC to a new, stopped container DST.

    On the same member the copy gets its own hostname and MAC addresses, and no snapshots;
    on the same btrfs pool it takes constant time. To another cluster member (MEMBER:DST
    or --target MEMBER) it goes with its snapshots, as btrfs send streams between btrfs
    pools (else tar), and the image is not needed there. --refresh updates such a copy
    (stopped) to SRC's state: snapshots SRC no longer has are deleted from it.

    \b
    Examples:
      sysmgr copy web1 web2
      sysmgr copy web1/before-upgrade web1-old      (same as --snapshot before-upgrade)
      sysmgr copy web1 web1-dir -s slow
      sysmgr copy web1 node2:web1-standby           (to cluster member node2)
      sysmgr copy web1 node2:web1-standby --refresh (later: only the changes)
    """
    if "/" in src:
        src, _, snap = src.partition("/")
        if snapshot is not None and snapshot != snap:
            raise click.UsageError("give the snapshot as SRC/SNAP or --snapshot, not both")
        snapshot = snap
    member, name = _member_and_name(dst, to)
    if name is None:
        if member is None:
            raise click.UsageError("name the copy: sysmgr copy SRC DST (or MEMBER:DST)")
        name = src
    app.cluster_wide = True
    c = app.client.containers.get(src)
    with _printer(quiet) as progress:
        copied = c.copy(name, snapshot=snapshot, pool=pool, target=member, refresh=refresh,
                        progress=progress, meter=progress.meter)
    r = copied.transfer
    where = f"{copied.location}:{name}" if copied.location else name
    what = f"{src}{'/' + snapshot if snapshot else ''}"
    said = f"refreshed from {what}" if refresh else f"copied to {where}"
    confirm("Container", where if refresh else what,
            said + (f": {_summary(r)}" if r is not None else ""))
    for note in (r.notes if r is not None else ()):
        click.echo(f"  {note}")


@click.command()
@click.argument("name")
@click.argument("dst", metavar="[[MEMBER:]NEWNAME]", required=False)
@click.option("--target", "to", metavar="MEMBER",
              help="Cluster member to move to (LXD's --target; same as MEMBER:).")
@click.option("--stateless", is_flag=True,
              help="Stop the container first and send it whole (default: a running "
                   "container on btrfs pools is copied while it runs and stopped only for "
                   "the last increment).")
@click.option("-s", "--storage", "pool", metavar="POOL",
              help="Storage pool on the target (default: one named as the source's).")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@pass_app
def move(app: AppContext, name: str, dst: str | None, to: str | None, stateless: bool,
         pool: str | None, quiet: bool) -> None:
    """Move container NAME to another cluster member, or rename it.

    A running container on btrfs pools on both members moves near-live: copied while it
    runs (rounds of increments), stopped only for the last increment, started on the
    target; only then is it deleted here. Its MAC and static address stay when the target
    has the same managed network. The downtime is printed in its parts. If anything fails
    (or Ctrl-C), it stays where it was, running if it ran, and the partial copy goes.
    Running 'sysmgr move NAME' again finishes or rolls back a move that was cut short.

    \b
    Examples:
      sysmgr move web1 --target node2
      sysmgr move web1 node2:web1-new
      sysmgr move web1 web1-old          (a rename, as 'lxc move OLD NEW')
      sysmgr move web1                   (settle an interrupted move of web1)
    """
    from sysmgr.api import migration

    member, new = _member_and_name(dst, to)
    app.cluster_wide = True
    client = app.client
    cluster = migration.cluster_of(client)
    # a move of it cut short before is settled first (finished or rolled back)
    said = migration.settle_pending(cluster, name) if cluster is not None else []
    for line in said:
        click.echo(line)
    if member is None:
        if new is not None:
            client.containers.get(name).rename(new)
            confirm("Container", name, f"renamed to {new}")
        elif not said:
            raise click.UsageError("name where to: sysmgr move NAME --target MEMBER (or "
                                   "MEMBER:NEWNAME), or NEWNAME to rename it")
        return
    c = client.containers.get(name)
    source = c.location
    with _printer(quiet) as progress:
        r = c.migrate(member, live=not stateless, name=new, pool=pool, progress=progress,
                      meter=progress.meter)
    confirm("Container", name, f"moved from {source} to {member}"
            + (f" as {r.new_name}" if r.new_name != name else "") + f": {_summary(r)}")
    if r.downtime is not None:
        click.echo(_downtime(r))
    for note in r.notes:
        click.echo(f"  {note}")


@click.command()
@click.argument("old")
@click.argument("new")
@pass_app
def rename(app: AppContext, old: str, new: str) -> None:
    """Rename the stopped container OLD to NEW (its snapshots follow)."""
    app.client.containers.get(old).rename(new)
    confirm("Container", old, f"renamed to {new}")
