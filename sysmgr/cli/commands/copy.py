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


def _copy_changes(app: AppContext, c: Any, profiles: tuple[str, ...], no_profiles: bool,
                  config: tuple[str, ...], devices: tuple[str, ...]) -> dict[str, Any] | None:
    """What ``-p``, ``--no-profiles``, ``-c`` and ``-d NAME,KEY=VALUE`` change in the copy
    (as ``lxc copy``): a device to change is the source's own, else the one its new
    profiles give; a copy whose new profiles give no root disk keeps the one it had."""
    from sysmgr.cli.commands._common import parse_assignments
    from sysmgr.cli.commands.container import device_overrides, profile_devices

    if no_profiles and profiles:
        raise click.UsageError("--no-profiles cannot be combined with -p/--profile")
    if not (profiles or no_profiles or config or devices):
        return None
    new = [] if no_profiles else (list(profiles) if profiles else None)
    chosen = list(c.profiles) if new is None else new
    of_profile = profile_devices(app, app.client)

    def devices_of(p: str) -> Any:
        sources = {"\0local": c.devices, "\0now": c.expanded_devices}
        return sources[p] if p in sources else of_profile(p)

    # searched from the end: the source's own devices, its new profiles', what it has now
    changed = device_overrides(devices_of, ["\0now", *chosen, "\0local"], devices) \
        if devices else {}
    # KEY= (empty) removes the key: -d root,size= lets a copy onto a dir pool go unlimited
    changed = {k: {dk: dv for dk, dv in d.items() if dv != ""} for k, d in changed.items()}
    if new is not None:
        given = {**{k: v for p in chosen for k, v in of_profile(p).items()}, **c.devices,
                 **changed}
        if not any(d.get("type") == "disk" and d.get("path") == "/" for d in given.values()):
            root = next(((k, d) for k, d in c.expanded_devices.items()
                         if d.get("type") == "disk" and d.get("path") == "/"), None)
            if root is not None:
                changed.setdefault(root[0], dict(root[1]))
    return {"profiles": new, "config": parse_assignments(config), "devices": changed}


def _printer(quiet: bool) -> Any:
    from sysmgr.cli import render

    return render.progress(quiet)


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
@click.option("--instance-only", is_flag=True, help="Copy the container without its snapshots.")
@click.option("-p", "--profile", "profiles", multiple=True, metavar="PROFILE",
              help="Profile of the copy (repeatable; default: SRC's).")
@click.option("--no-profiles", is_flag=True, help="The copy has no profiles.")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Config key of the copy (repeatable).")
@click.option("-d", "--device", "devices", multiple=True, metavar="NAME,KEY=VALUE[,...]",
              help="Change a device's keys in the copy (e.g. -d root,size=10GiB).")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@pass_app
def copy(app: AppContext, src: str, dst: str | None, snapshot: str | None, pool: str | None,
         to: str | None, refresh: bool, instance_only: bool, profiles: tuple[str, ...],
         no_profiles: bool, config: tuple[str, ...], devices: tuple[str, ...],
         quiet: bool) -> None:
    """Copy container SRC to a new, stopped container DST, with its snapshots (as LXD).

    The copy gets its own hostname and MAC addresses. With --instance-only (or from one
    snapshot, SRC/SNAP) it goes without snapshots, and on the same btrfs pool in constant
    time; with its snapshots it is streamed (btrfs send between btrfs pools, else tar). To
    another cluster member: MEMBER:DST or --target MEMBER; the image is not needed there.
    --refresh updates such a copy (stopped) to SRC's state: snapshots SRC no longer has
    are deleted from it. -p, --no-profiles, -c and -d change the copy's definition and its
    snapshots' (a copy whose new profiles give no root disk keeps the one it had).

    \b
    Examples:
      sysmgr copy web1 web2
      sysmgr copy web1/before-upgrade web1-old      (same as --snapshot before-upgrade)
      sysmgr copy web1 web1-dir -s slow -d root,size=
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
    if refresh and (instance_only or profiles or no_profiles or config or devices):
        raise click.UsageError("--refresh brings a copy up to date: it takes no --instance-only, "
                               "-p, --no-profiles, -c or -d")
    app.cluster_wide = True
    c = app.client.containers.get(src)
    changes = _copy_changes(app, c, profiles, no_profiles, config, devices)
    with _printer(quiet) as progress:
        copied = c.copy(name, snapshot=snapshot, pool=pool, target=member, refresh=refresh,
                        instance_only=instance_only, changes=changes, progress=progress,
                        meter=progress.meter)
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
              help="Storage pool on the target (default: one named as the source's); "
                   "without a member, move it to that pool here (copied first, the old "
                   "copy deleted only once the new one is in place).")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@click.option("--wait", is_flag=True,
              help="When another move holds the container, wait for it instead of being "
                   "refused.")
@pass_app
def move(app: AppContext, name: str, dst: str | None, to: str | None, stateless: bool,
         pool: str | None, quiet: bool, wait: bool) -> None:
    """Move container NAME to another cluster member, to another storage pool, or rename it.

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
      sysmgr move web1 -s fast           (to pool fast here, with its snapshots; stopped)
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
        if pool is not None:
            c = client.containers.get(name)
            with _printer(quiet) as progress:
                progress(f"Moving {name} to storage pool {pool}")
                c.move_to_pool(pool)
            confirm("Container", name, f"moved to storage pool {pool}")
        if new is not None:
            client.containers.get(name).rename(new)
            confirm("Container", name, f"renamed to {new}")
        elif pool is None and not said:
            raise click.UsageError("name where to: sysmgr move NAME --target MEMBER (or "
                                   "MEMBER:NEWNAME), NEWNAME to rename it, or -s POOL")
        return
    c = client.containers.get(name)
    source = c.location
    with _printer(quiet) as progress:
        r = c.migrate(member, live=not stateless, name=new, pool=pool, progress=progress,
                      meter=progress.meter, wait=wait)
    source = r.source
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
