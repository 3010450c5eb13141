"""``sysmgr storage volume``: custom storage volumes (``lxc storage volume``): create, list,
show, get, set, unset, delete, attach, detach, snapshot, restore, copy, move, rename.

A volume is ``POOL VOLUME`` as two arguments, except for ``copy`` and ``move``, which take
``POOL/VOLUME`` twice (LXD's spelling); ``delete POOL VOLUME/SNAPSHOT`` deletes a snapshot.
"""

from __future__ import annotations

import time
from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, format_option, output, parse_assignments, pass_app, report_pending)
from sysmgr.errors import NotFound, ValidationError

HEADERS = ("POOL", "NAME", "DESCRIPTION", "SIZE", "USED", "USED BY", "SNAPSHOTS")


def volume_record(v: Any) -> dict[str, Any]:
    """What ``show``, ``list --format json|yaml`` print of a volume (LXD's fields)."""
    return {
        "name": v.name,
        "pool": v.pool,
        "type": "custom",
        "description": v.description,
        "config": dict(sorted(v.config.items())),
        "used_by": sorted(v.used_by),
        "profiles": sorted(v.profiles),
        "usage_bytes": v.usage_bytes,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.created_at)),
        "snapshots": [{"name": s.name, "created_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.created)), "config": dict(s.config)}
            for s in v.snapshots],
    }


def _split(ref: str, what: str) -> tuple[str, str]:
    """``POOL/VOLUME`` -> (pool, volume)."""
    pool, sep, name = ref.partition("/")
    if not sep or not pool or not name or "/" in name:
        raise ValidationError(f"{what} {ref!r}: expected POOL/VOLUME")
    return pool, name


@click.group("volume")
def volume() -> None:
    """Manage custom storage volumes (attached to containers as disk devices)."""


@volume.command("create")
@click.argument("pool")
@click.argument("name")
@click.argument("config", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--description", default="", help="Volume description.")
@pass_app
def create(app: AppContext, pool: str, name: str, config: tuple[str, ...], description: str) -> None:
    """Create an empty volume: sysmgr storage volume create default data size=1GiB
    (size: btrfs pools only, a dir pool cannot enforce one)."""
    app.client.storage_volumes.create(pool, name, parse_assignments(config), description=description)
    click.echo(f"Storage volume {name} created")


@volume.command("list")
@click.argument("pool", required=False)
@format_option()
@pass_app
def list_(app: AppContext, pool: str | None, fmt: str) -> None:
    """List volumes (of POOL, when given)."""
    records = [volume_record(v) for v in app.client.storage_volumes.all(pool)]
    output(render.listing(fmt, HEADERS, records, lambda r: [
        r["pool"], r["name"], r["description"], r["config"].get("size", ""),
        render.format_size(r["usage_bytes"]) if r["usage_bytes"] is not None else "",
        len(r["used_by"]) + len(r["profiles"]), len(r["snapshots"])]))


@volume.command("show")
@click.argument("pool")
@click.argument("name")
@format_option(("yaml", "json"), default="yaml")
@pass_app
def show(app: AppContext, pool: str, name: str, fmt: str) -> None:
    """Show a volume: config, users, usage, snapshots."""
    click.echo(render.document(fmt, volume_record(app.client.storage_volumes.get(pool, name))))


@volume.command("get")
@click.argument("pool")
@click.argument("name")
@click.argument("key")
@pass_app
def get(app: AppContext, pool: str, name: str, key: str) -> None:
    """Print a volume's config value (empty when unset)."""
    click.echo(app.client.storage_volumes.get(pool, name).config.get(key, ""))


@volume.command("set")
@click.argument("pool")
@click.argument("name")
@click.argument("config", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_app
def set_(app: AppContext, pool: str, name: str, config: tuple[str, ...]) -> None:
    """Set volume config keys (size applies at once; refused below what it holds)."""
    v = app.client.storage_volumes.get(pool, name)
    v.config.update(parse_assignments(config))
    v.save()


@volume.command("unset")
@click.argument("pool")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_app
def unset(app: AppContext, pool: str, name: str, keys: tuple[str, ...]) -> None:
    """Remove volume config keys (unset size: no limit)."""
    v = app.client.storage_volumes.get(pool, name)
    for k in keys:
        if k not in v.config:
            raise NotFound(f"config key {k!r} is not set on storage volume {pool}/{name}")
        del v.config[k]
    v.save()


@volume.command("delete")
@click.argument("pool")
@click.argument("name", metavar="VOLUME[/SNAPSHOT]")
@pass_app
def delete(app: AppContext, pool: str, name: str) -> None:
    """Delete a volume with its snapshots (refused while attached: says to which
    containers), or one snapshot (VOLUME/SNAPSHOT)."""
    vol, _, snap = name.partition("/")
    v = app.client.storage_volumes.get(pool, vol)
    if snap:
        v.delete_snapshot(snap)
        click.echo(f"Storage volume snapshot {vol}/{snap} deleted")
        return
    v.delete()
    click.echo(f"Storage volume {vol} deleted")


@volume.command("attach")
@click.argument("pool")
@click.argument("name")
@click.argument("container")
@click.argument("rest", nargs=-1, metavar="[DEVICE] PATH")
@click.option("--readonly", is_flag=True, help="Mount it read-only.")
@pass_app
def attach(app: AppContext, pool: str, name: str, container: str, rest: tuple[str, ...],
           readonly: bool) -> None:
    """Attach a volume to a container as a disk device (live into a running one):
    sysmgr storage volume attach default data web1 /srv/data"""
    if len(rest) not in (1, 2):
        raise click.UsageError("give the path inside the container, and optionally a device "
                               "name before it: [DEVICE] PATH")
    device, path = (None, rest[0]) if len(rest) == 1 else rest
    pending = app.client.storage_volumes.get(pool, name).attach(container, path, device,
                                                                readonly=readonly)
    report_pending(container, pending)


@volume.command("detach")
@click.argument("pool")
@click.argument("name")
@click.argument("container")
@click.argument("device", required=False)
@pass_app
def detach(app: AppContext, pool: str, name: str, container: str, device: str | None) -> None:
    """Detach a volume from a container (unmounted live)."""
    report_pending(container, app.client.storage_volumes.get(pool, name).detach(container, device))


@volume.command("snapshot")
@click.argument("pool")
@click.argument("name")
@click.argument("snapshot", required=False)
@pass_app
def snapshot(app: AppContext, pool: str, name: str, snapshot: str | None) -> None:
    """Snapshot a volume (snap0, snap1... unless named)."""
    snap = app.client.storage_volumes.get(pool, name).snapshot(snapshot)
    click.echo(f"Storage volume snapshot {name}/{snap.name} created")


@volume.command("restore")
@click.argument("pool")
@click.argument("name")
@click.argument("snapshot")
@pass_app
def restore(app: AppContext, pool: str, name: str, snapshot: str) -> None:
    """Restore a volume from one of its snapshots (not while a running container has it)."""
    app.client.storage_volumes.get(pool, name).restore(snapshot)


@volume.command("copy")
@click.argument("source", metavar="POOL/VOLUME")
@click.argument("target", metavar="POOL/VOLUME")
@click.option("--volume-only", is_flag=True, help="Copy the volume without its snapshots.")
@pass_app
def copy(app: AppContext, source: str, target: str, volume_only: bool) -> None:
    """Copy a volume, with its snapshots (to another pool too)."""
    (pool, name), (dst_pool, dst) = _split(source, "source"), _split(target, "target")
    app.client.storage_volumes.get(pool, name).copy(dst_pool, dst, volume_only=volume_only)
    click.echo(f"Storage volume {pool}/{name} copied to {dst_pool}/{dst}")


@volume.command("move")
@click.argument("source", metavar="POOL/VOLUME")
@click.argument("target", metavar="POOL/VOLUME")
@pass_app
def move(app: AppContext, source: str, target: str) -> None:
    """Rename a volume, or move it with its snapshots to another pool (not while used)."""
    (pool, name), (dst_pool, dst) = _split(source, "source"), _split(target, "target")
    app.client.storage_volumes.get(pool, name).move(dst_pool, dst)
    click.echo(f"Storage volume {pool}/{name} moved to {dst_pool}/{dst}")


@volume.command("rename")
@click.argument("pool")
@click.argument("name")
@click.argument("new")
@pass_app
def rename(app: AppContext, pool: str, name: str, new: str) -> None:
    """Rename a volume (not while used)."""
    app.client.storage_volumes.get(pool, name).move(pool, new)
    click.echo(f"Storage volume {name} renamed to {new}")
