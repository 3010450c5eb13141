"""``sysmgr profile``: profiles as ``lxc profile`` manages them: list, show, create, copy,
rename, edit, delete, get/set/unset (``--property description``), add/remove/assign on a
container, and ``profile device`` (add/remove/list/show/get/set/unset)."""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, Group, confirm, format_option, output, parse_assignments, pass_app,
    report_pending)
from sysmgr.cli.commands._devices import device_group
from sysmgr.cli.commands._keyvalue import Noun, register, save_local_config
from sysmgr.errors import Conflict, NotFound


def profile_document(p: Any, used_by: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": p.name,
        "description": p.description,
        "config": dict(sorted(p.config.items())),
        "devices": {k: dict(v) for k, v in sorted(p.devices.items())},
    }
    if used_by is not None:
        doc["used_by"] = sorted(used_by)
    return doc


@click.group(cls=Group)
def profile() -> None:
    """Manage profiles (config and devices shared by containers)."""


PROFILE = Noun(
    "profile",
    fetch=lambda client, name: client.profiles.get(name),
    document=lambda p, expanded: profile_document(p, p.used_by),
    edit_document=profile_document,  # without used_by: it is not the profile's to edit
    edit_fields=("config", "devices", "description"),
    set_config=save_local_config("profile"),
    properties=("description",),
    help={
        "set": "Set profile config keys (KEY=VALUE..., or KEY VALUE); live keys reach running\n"
               "containers at once.",
        "edit": "Edit a profile as YAML ($EDITOR, or YAML on stdin: sysmgr profile edit p < p.yaml).",
    },
    keys_doc="Keys: sysmgr keys [PREFIX]",
)
register(profile, PROFILE)


@profile.command("list")
@format_option()
@pass_app
def list_(app: AppContext, fmt: str) -> None:
    """List profiles."""
    records = [profile_document(p, p.used_by) for p in sorted(app.client.profiles.all(),
                                                                key=lambda p: p.name)]
    output(render.listing(fmt, ("NAME", "DESCRIPTION", "USED BY"), records,
                              lambda r: [r["name"], r["description"], len(r["used_by"])]))


@profile.command("create")
@click.argument("name")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Config key/value (repeatable).")
@click.option("--description", default="", help="Profile description.")
@pass_app
def create(app: AppContext, name: str, config: tuple[str, ...], description: str) -> None:
    """Create a profile."""
    app.client.profiles.create(name, config=parse_assignments(config), description=description)
    confirm("Profile", name, "created")


@profile.command("copy")
@click.argument("source")
@click.argument("target")
@pass_app
def copy(app: AppContext, source: str, target: str) -> None:
    """Copy a profile."""
    p = app.client.profiles.get(source)
    app.client.profiles.create(target, config=p.config, devices=p.devices, description=p.description)
    confirm("Profile", source, f"copied to {target}")


@profile.command("rename")
@click.argument("name")
@click.argument("new")
@pass_app
def rename(app: AppContext, name: str, new: str) -> None:
    """Rename a profile (not the default one); the containers using it follow."""
    app.client.profiles.get(name).rename(new)
    confirm("Profile", name, f"renamed to {new}")


@profile.command("delete")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_app
def delete(app: AppContext, names: tuple[str, ...]) -> None:
    """Delete profiles (not the default profile, not one in use)."""
    for name in names:
        app.client.profiles.get(name).delete()
        confirm("Profile", name, "deleted")


def _set_profiles(app: AppContext, container: str, change: Any, kind: str, name: str,
                  what: str) -> None:
    """Give a container the profile list ``change(current)`` returns, confirm, and name on
    stderr what waits for a restart."""
    c = app.client.containers.get(container)
    c.profiles = change(list(c.profiles))
    pending = c.save()
    confirm(kind, name, what)
    report_pending(container, pending)


@profile.command("add")
@click.argument("container")
@click.argument("name", metavar="PROFILE")
@pass_app
def add(app: AppContext, container: str, name: str) -> None:
    """Apply a profile to a container (appended: it wins over earlier profiles)."""
    def added(profiles: list[str]) -> list[str]:
        if name in profiles:
            raise Conflict(f"profile {name!r} is already applied to {container!r}")
        return profiles + [name]

    _set_profiles(app, container, added, "Profile", name, f"added to {container}")


@profile.command("remove")
@click.argument("container")
@click.argument("name", metavar="PROFILE")
@pass_app
def remove(app: AppContext, container: str, name: str) -> None:
    """Remove a profile from a container."""
    def removed(profiles: list[str]) -> list[str]:
        if name not in profiles:
            raise NotFound(f"profile {name!r} is not applied to {container!r}")
        return [p for p in profiles if p != name]

    _set_profiles(app, container, removed, "Profile", name, f"removed from {container}")


@profile.command("assign")
@click.argument("container")
@click.argument("names", metavar="PROFILES")
@pass_app
def assign(app: AppContext, container: str, names: str) -> None:
    """Set a container's profiles, in order: PROFILES is comma-separated ('' for none).

    \b
    Examples:
      sysmgr profile assign c1 default,web
    """
    _set_profiles(app, container, lambda _old: [p for p in names.split(",") if p],
                  "Profiles", names or "(none)", f"assigned to {container}")


# -- devices --------------------------------------------------------------------------------

device = device_group(profile, noun="profile", get=lambda app, name: app.client.profiles.get(name),
                      add_example="sysmgr profile device add web eth0 nic network=br0 name=eth0")
