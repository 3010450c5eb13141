"""``sysmgr config``: a container's local configuration (``lxc config``): show, get, set,
unset, edit, and ``config device`` add/remove/list/show/set.

Changes apply live when they can; keys that need a restart are named on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli.commands._common import AppContext, parse_assignments, pass_app, report_pending
from sysmgr.cli.commands._devices import device_group
from sysmgr.cli.commands._keyvalue import Noun, register
from sysmgr.errors import NotFound


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


CONTAINER = Noun(
    "container",
    fetch=lambda client, name: client.containers.get(name),
    document=lambda c, expanded: container_document(c, expanded=expanded),
    edit_document=container_document,
    edit_fields=("config", "devices", "profiles", "description"),
    # the API applies live keys at once and returns those that need a restart
    set_config=lambda c, values, unset: c.set_config(values, list(unset)),
    expandable=True,
    help={
        "show": "Show a container's configuration as YAML.",
        "get": "Print the value of a config key (empty when unset).",
        "set": "Set config keys (KEY=VALUE..., or KEY VALUE).\n\n"
               "\b\n  sysmgr config set c1 limits.memory=256MiB limits.cpu=1\n"
               "  sysmgr config set c1 boot.autostart true",
        "edit": "Edit a container's configuration as YAML ($EDITOR, or YAML on stdin).",
    },
    keys_doc="Keys: sysmgr keys [PREFIX]",
)
register(config, CONTAINER)


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
    c = app.client.containers.get(name)
    dev = c.devices.get(devname) or c.expanded_devices.get(devname)
    if dev is None:
        raise NotFound(f"device {devname!r} not found on {name!r}")
    c.devices[devname] = {**dev, **parse_assignments(options)}
    pending = c.save()
    click.echo(f"Device {devname} of {name} changed")
    report_pending(name, pending)


device.add_command(device_set, "override")
