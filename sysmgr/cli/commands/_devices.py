"""The ``device`` subgroup shared by ``sysmgr config`` (a container's devices) and
``sysmgr profile`` (a profile's devices): add, remove, list, show, get, set (alias
``override``) and unset, built once by :func:`device_group` for a getter of the object that
holds the devices.

Containers also have expanded devices (what their profiles contribute), and their ``save()``
returns the keys that need a restart; profiles have neither. ``set``/``unset`` of a device
a container has from a profile copy it into the container first (LXD's ``config device
override``), so the profile itself never changes from a container's command.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    DOC_FORMATS, AppContext, confirm, format_option, output,
    parse_device_args, pass_app, report_pending)
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
    _get_command(device, get, on, noun)
    _set_command(device, get, on, noun)
    _unset_command(device, get, on, noun)
    return device


def _save_device(obj: Any, name: str, devname: str, dev: dict[str, str], what: str) -> None:
    """Store ``dev`` as the object's own device, confirm, and name what waits for a restart."""
    obj.devices[devname] = dev
    pending = obj.save()
    confirm("Device", devname, f"of {name} updated: {what}")
    report_pending(name, pending or [])


def _device_of(obj: Any, devname: str, on: str, name: str) -> dict[str, str]:
    """The device as the object has it: its own, else (containers) the one a profile gives."""
    dev = obj.devices.get(devname)
    if dev is None:
        dev = getattr(obj, "expanded_devices", {}).get(devname)
    if dev is None:
        raise NotFound(f"device {devname!r} not found on {on}{name!r}")
    return dict(dev)


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
        confirm("Device", devname, f"added to {name}")
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
        confirm("Device", ", ".join(devnames), f"removed from {name}")
        report_pending(name, pending or [])


def _list_command(device: click.Group, get: Getter, noun: str, expandable: bool) -> None:
    @device.command("list", help=f"List a {noun}'s {'local ' if expandable else ''}devices "
                                 "(names; json/yaml: each device with its keys).")
    @click.argument("name")
    @format_option(("names", "json", "yaml"), default="names")
    @pass_app
    def device_list(app: AppContext, name: str, fmt: str) -> None:
        devices = get(app, name).devices
        if fmt == "names":
            output("\n".join(sorted(devices)))
            return
        records = [{"name": k, **dict(v)} for k, v in sorted(devices.items())]
        output(render.listing(fmt, (), records, lambda r: []))


def _show_command(device: click.Group, get: Getter, noun: str, expandable: bool) -> None:
    def show(app: AppContext, name: str, fmt: str, expanded: bool = False) -> None:
        obj = get(app, name)
        devices = obj.expanded_devices if expanded else obj.devices
        click.echo(render.document(fmt, {k: dict(v) for k, v in sorted(devices.items())}))

    if expandable:
        show = click.option("-e", "--expanded", is_flag=True,
                            help="Include the devices of the profiles.")(show)
    show = format_option(DOC_FORMATS, default="yaml")(show)
    device.command("show", help=f"Show a {noun}'s devices as YAML (or JSON).")(
        click.argument("name")(pass_app(show)))


def _get_command(device: click.Group, get: Getter, on: str, noun: str) -> None:
    @device.command("get", help=f"Print one key of a {noun}'s device (empty when unset).")
    @click.argument("name")
    @click.argument("devname")
    @click.argument("key")
    @pass_app
    def device_get(app: AppContext, name: str, devname: str, key: str) -> None:
        click.echo(_device_of(get(app, name), devname, on, name).get(key, ""))


def _set_command(device: click.Group, get: Getter, on: str, noun: str) -> None:
    @device.command("set", help=f"Change keys of a {noun}'s device: KEY=VALUE... (or KEY "
                                "VALUE).\n\nA container's device that comes from a profile is "
                                "copied into the container first (LXD's override); the root "
                                "disk's size changes live.")
    @click.argument("name")
    @click.argument("devname")
    @click.argument("options", nargs=-1, required=True, metavar="KEY=VALUE...")
    @pass_app
    def device_set(app: AppContext, name: str, devname: str, options: tuple[str, ...]) -> None:
        from sysmgr.cli.commands._keyvalue import parse_set_args  # KEY VALUE and KEY -

        obj = get(app, name)
        changes = parse_set_args(options)
        _save_device(obj, name, devname, {**_device_of(obj, devname, on, name), **changes},
                     f"{', '.join(changes)} set")

    device.add_command(device_set, "override")


def _unset_command(device: click.Group, get: Getter, on: str, noun: str) -> None:
    @device.command("unset", help=f"Remove keys from a {noun}'s device.")
    @click.argument("name")
    @click.argument("devname")
    @click.argument("keys", nargs=-1, required=True, metavar="KEY...")
    @pass_app
    def device_unset(app: AppContext, name: str, devname: str, keys: tuple[str, ...]) -> None:
        obj = get(app, name)
        dev = _device_of(obj, devname, on, name)
        if "type" in keys:
            raise Conflict(f"a device's type cannot be unset (device {devname!r})",
                           hint=f"remove the device instead: device remove {name} {devname}")
        for key in keys:
            dev.pop(key, None)
        _save_device(obj, name, devname, dev, f"{', '.join(keys)} unset")
