"""``sysmgr config``: a container's local configuration (``lxc config``): show, get, set,
unset, edit, and ``config device`` add/remove/list/show/set.

Changes apply live when they can; keys that need a restart are named on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, devices_map, edit_document, parse_set_args, pass_app, report_pending, str_map)
from sysmgr.cli.commands._devices import device_group
from sysmgr.errors import Issue, NotFound, ValidationError


def container_document(c: Any, *, expanded: bool = False) -> dict[str, Any]:
    """The YAML of ``config show`` / ``config edit`` (``lxc config show``'s shape)."""
    config = c.expanded_config if expanded else c.config
    devices = c.expanded_devices if expanded else c.devices
    return {
        "name": c.name,
        "description": c.description,
        "profiles": list(c.profiles),
        "config": dict(sorted(config.items())),
        "devices": {k: dict(v) for k, v in sorted(devices.items())},
    }


@click.group()
def config() -> None:
    """Show and change a container's configuration."""


@config.command("show")
@click.argument("name")
@click.option("-e", "--expanded", is_flag=True, help="Include what the profiles contribute.")
@pass_app
def show(app: AppContext, name: str, expanded: bool) -> None:
    """Show a container's configuration as YAML."""
    click.echo(render.yaml_text(container_document(app.client.containers.get(name), expanded=expanded)))


@config.command("get")
@click.argument("name")
@click.argument("key")
@click.option("-e", "--expanded", is_flag=True, help="Read the expanded config (profiles included).")
@pass_app
def get(app: AppContext, name: str, key: str, expanded: bool) -> None:
    """Print the value of a config key (empty when unset)."""
    c = app.client.containers.get(name)
    click.echo((c.expanded_config if expanded else c.config).get(key, ""))


@config.command("set")
@click.argument("name")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_app
def set_(app: AppContext, name: str, assignments: tuple[str, ...]) -> None:
    """Set config keys (KEY=VALUE..., or KEY VALUE).

    \b
      sysmgr config set c1 limits.memory=256MiB limits.cpu=1
      sysmgr config set c1 boot.autostart true
    """
    values = parse_set_args(assignments)
    report_pending(name, app.client.containers.get(name).set_config(values))


@config.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@pass_app
def unset(app: AppContext, name: str, keys: tuple[str, ...]) -> None:
    """Remove config keys from a container."""
    report_pending(name, app.client.containers.get(name).set_config({}, list(keys)))


@config.command("edit")
@click.argument("name")
@pass_app
def edit(app: AppContext, name: str) -> None:
    """Edit a container's configuration as YAML ($EDITOR, or YAML on stdin)."""
    c = app.client.containers.get(name)

    def apply(doc: Any) -> None:
        if doc in (None, ""):
            doc = {}
        if not isinstance(doc, dict):
            raise ValidationError("expected a YAML mapping with config, devices, profiles, description")
        if doc.get("name", name) != name:
            raise ValidationError([Issue("renaming a container is not supported here", path="name")])
        profiles = doc.get("profiles", c.profiles) or []
        if not isinstance(profiles, list):
            raise ValidationError([Issue("expected a list of profile names", path="profiles")])
        c.config = str_map(doc.get("config"), "config")
        c.devices = devices_map(doc.get("devices"))
        c.profiles = [str(p) for p in profiles]
        c.description = str(doc.get("description") or "")
        report_pending(name, c.save())

    edit_document(render.yaml_text(container_document(c)) + "\n", f"{name}.yaml", apply)


# -- devices --------------------------------------------------------------------------------

device = device_group(config, noun="container", get=lambda app, name: app.client.containers.get(name),
                      add_example="sysmgr config device add c1 data disk source=/srv path=/srv",
                      expandable=True)


@device.command("set")
@click.argument("name")
@click.argument("devname")
@click.argument("options", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_app
def device_set(app: AppContext, name: str, devname: str, options: tuple[str, ...]) -> None:
    """Change device keys: sysmgr config device set c1 root size=4GiB

    A device that comes from a profile is copied into the container first (LXD's
    "config device override"). The root disk's size changes live.
    """
    from sysmgr.cli.commands._common import parse_assignments

    c = app.client.containers.get(name)
    dev = c.devices.get(devname) or c.expanded_devices.get(devname)
    if dev is None:
        raise NotFound(f"device {devname!r} not found on {name!r}")
    c.devices[devname] = {**dev, **parse_assignments(options)}
    pending = c.save()
    click.echo(f"Device {devname} of {name} changed")
    report_pending(name, pending)


device.add_command(device_set, "override")
