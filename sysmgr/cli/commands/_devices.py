"""The ``device`` subgroup shared by ``sysmgr config`` (a container's devices) and
``sysmgr profile`` (a profile's devices): add, remove, list and show, built once by
:func:`device_group` for a getter of the object that holds the devices.

Containers also have expanded devices (what their profiles contribute), and their ``save()``
returns the keys that need a restart; profiles have neither.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, parse_device_args, pass_app, report_pending
from sysmgr.errors import AlreadyExists, Conflict, NotFound

Getter = Callable[[AppContext, str], Any]


def device_group(parent: click.Group, *, noun: str, get: Getter,
                 add_example: str, expandable: bool = False) -> click.Group:
    """Add a ``device`` group to ``parent`` for objects of kind ``noun`` fetched by ``get``.

    ``expandable`` (containers) adds ``show --expanded`` and refuses to remove a device that
    only a profile provides. Errors name the object as ``{name!r}`` for containers and
    ``profile {name!r}`` otherwise, as the commands always have.
    """
    on = "" if noun == "container" else f"{noun} "

    @parent.group("device", help=f"Manage a {noun}'s devices.")
    def device() -> None:
        pass

    _add_command(device, get, on, add_example)
    _remove_command(device, get, on, noun, expandable)
    _list_command(device, get, noun, expandable)
    _show_command(device, get, noun, expandable)
    return device


def _add_command(device: click.Group, get: Getter, on: str, example: str) -> None:
    @device.command("add", help=f"Add a device: {example}")
    @click.argument("name")
    @click.argument("devname")
    @click.argument("devtype", metavar="TYPE")
    @click.argument("options", nargs=-1, metavar="[KEY=VALUE]...")
    @pass_app
    def device_add(app: AppContext, name: str, devname: str, devtype: str,
                   options: tuple[str, ...]) -> None:
        obj = get(app, name)
        if devname in obj.devices:
            raise AlreadyExists(f"device {devname!r} already exists on {on}{name!r}")
        obj.devices[devname] = parse_device_args(devname, devtype, options)
        pending = obj.save()
        click.echo(f"Device {devname} added to {name}")
        report_pending(name, pending or [])


def _remove_command(device: click.Group, get: Getter, on: str, noun: str, expandable: bool) -> None:
    @device.command("remove", help=f"Remove devices from a {noun}.")
    @click.argument("name")
    @click.argument("devnames", nargs=-1, required=True, metavar="DEVICE...")
    @pass_app
    def device_remove(app: AppContext, name: str, devnames: tuple[str, ...]) -> None:
        obj = get(app, name)
        for dev in devnames:
            if dev not in obj.devices:
                if expandable and dev in obj.expanded_devices:
                    raise Conflict(f"device {dev!r} of {name!r} comes from a profile",
                                   hint=f"override it: sysmgr config device add {name} {dev} none")
                raise NotFound(f"device {dev!r} not found on {on}{name!r}")
            del obj.devices[dev]
        pending = obj.save()
        click.echo(f"Device {', '.join(devnames)} removed from {name}")
        report_pending(name, pending or [])


def _list_command(device: click.Group, get: Getter, noun: str, expandable: bool) -> None:
    @device.command("list", help=f"List a {noun}'s {'local ' if expandable else ''}devices.")
    @click.argument("name")
    @pass_app
    def device_list(app: AppContext, name: str) -> None:
        for dev in sorted(get(app, name).devices):
            click.echo(dev)


def _show_command(device: click.Group, get: Getter, noun: str, expandable: bool) -> None:
    def show(app: AppContext, name: str, expanded: bool = False) -> None:
        obj = get(app, name)
        devices = obj.expanded_devices if expanded else obj.devices
        click.echo(render.yaml_text({k: dict(v) for k, v in sorted(devices.items())}))

    if expandable:
        show = click.option("-e", "--expanded", is_flag=True,
                            help="Include the devices of the profiles.")(show)
    device.command("show", help=f"Show a {noun}'s devices as YAML.")(
        click.argument("name")(pass_app(show)))
