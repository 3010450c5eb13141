"""``sysmgr storage``: storage pools (``lxc storage``): list, info, show, get, set, unset,
edit (``--property description``), create, delete. ``set POOL size=30GiB`` grows a loop pool
while it is in use."""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, Group, confirm, format_option, output, parse_assignments, pass_app)
from sysmgr.cli.commands._keyvalue import Noun, register, save_local_config

HEADERS = ("NAME", "DRIVER", "SOURCE", "DESCRIPTION", "USED BY")


def pool_record(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "driver": p.driver,
        "source": getattr(p, "source", None) or p.config.get("source", ""),
        "description": p.description,
        "config": dict(sorted(p.config.items())),
        "used_by": sorted(p.used_by),
    }


@click.group(cls=Group)
def storage() -> None:
    """Manage storage pools."""


def pool_edit_document(p: Any) -> dict[str, Any]:
    """What ``storage edit`` opens: the name and what can change (driver, source and users
    are the pool's own)."""
    return {"name": p.name, "description": p.description, "config": dict(sorted(p.config.items()))}


POOL = Noun(
    "storage pool",
    fetch=lambda client, name: client.storage_pools.get(name),
    document=lambda p, expanded: pool_record(p),
    edit_document=pool_edit_document,
    edit_fields=("config", "description"),
    set_config=save_local_config("storage pool"),
    properties=("description",),
    help={
        "set": "Set storage pool config keys (KEY=VALUE..., or KEY VALUE): user.*, and size\n"
               "of a loop pool sysmgr made, which grows it while in use (never shrinks):\n\n"
               "\b\n  sysmgr storage set default size=30GiB",
        "edit": "Edit a storage pool's description and config as YAML ($EDITOR, or YAML on\n"
                "stdin); source and driver cannot change.",
    },
    keys_doc="Keys: sysmgr keys --storage",
)
register(storage, POOL)


@storage.command("list")
@format_option()
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List storage pools."""
    records = [pool_record(p) for p in sorted(app.client.storage_pools.all(), key=lambda p: p.name)]
    output(render.listing(fmt, HEADERS, records, lambda r: [
        r["name"], r["driver"], r["source"], r["description"], len(r["used_by"])]))


@storage.command("info")
@click.argument("name")
@format_option(("text", "yaml", "json"), default="text")
@pass_app
def info(app: AppContext, name: str, fmt: str) -> None:
    """Show a storage pool's usage and users."""
    pool = app.client.storage_pools.get(name)
    usage = pool.usage()
    used, total = getattr(usage, "used_bytes", None), getattr(usage, "total_bytes", None)
    record = pool_record(pool)
    if fmt != "text":
        click.echo(render.document(fmt, {**record, "used_bytes": used, "total_bytes": total}))
        return
    about: dict[str, Any] = {"name": record["name"], "driver": record["driver"],
                             "description": record["description"]}
    if record["source"]:
        about["source"] = record["source"]
    if used is not None:
        about["space used"] = render.format_size(used)
    if total is not None:
        about["total space"] = render.format_size(total)
    users = {"containers": record["used_by"]} if record["used_by"] else {}
    click.echo(render.yaml_text({"info": about, "used by": users}))


@storage.command("create")
@click.argument("name")
@click.argument("driver")
@click.argument("config", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--description", default="", help="Pool description.")
@pass_app
def create(app: AppContext, name: str, driver: str, config: tuple[str, ...], description: str) -> None:
    """Create a storage pool: sysmgr storage create fast btrfs size=20GiB"""
    app.client.storage_pools.create(name, driver, parse_assignments(config), description=description)
    confirm("Storage pool", name, "created")


@storage.command("delete")
@click.argument("name")
@pass_app
def delete(app: AppContext, name: str) -> None:
    """Delete a storage pool (it must be unused)."""
    app.client.storage_pools.get(name).delete()
    confirm("Storage pool", name, "deleted")


# `storage volume ...`: a module of its own, loaded with the group (it only imports click)
from sysmgr.cli.commands.storage_volume import volume  # noqa: E402

storage.add_command(volume)
