"""``sysmgr config``: a container's local configuration (``lxc config``): show, get, set,
unset, edit (``--property`` for its description and profiles), ``config show|edit NAME/SNAP``
for a snapshot (its expiry and description), and ``config device``
add/remove/list/show/get/set/unset.

Changes apply live when they can; keys that need a restart are named on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from sysmgr.cli.commands._common import Group

from sysmgr.cli.commands._devices import device_group
from sysmgr.cli.commands._keyvalue import (
    Noun, devices_map, is_snapshot, parse_edited, register, str_map, to_str)
from sysmgr.errors import Issue, ValidationError


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


@click.group(cls=Group)
def config() -> None:
    """Show and change a container's configuration (NAME/SNAP: a snapshot's)."""


def _fetch(client: Any, name: str) -> Any:
    """Container NAME, or snapshot SNAP of it for ``NAME/SNAP`` (as ``lxc config``)."""
    if "/" in name:
        container, _, snap = name.partition("/")
        return client.containers.get(container).snapshots.get(snap)
    return client.containers.get(name)


def _document(obj: Any, expanded: bool = False) -> dict[str, Any]:
    if is_snapshot(obj):
        from sysmgr.cli.commands.snapshot import snapshot_record  # the snapshot's own shape

        return snapshot_record(obj)
    return container_document(obj, expanded=expanded)


def _parse_edit(noun: Noun, obj: Any, name: str, doc: Any) -> dict[str, Any]:
    """A container's edited fields, or a snapshot's: only its ``expires_at`` (LXD's RFC
    3339, ``0001-01-01T00:00:00Z`` or empty for never) and ``description`` change; the
    definition it recorded is history."""
    if not is_snapshot(obj):
        return parse_edited(noun, obj, name, doc)
    from sysmgr.model.schedule import parse_timestamp

    if not isinstance(doc, dict):
        raise ValidationError("expected a YAML mapping with expires_at and description")
    recorded = _document(obj)
    edited = {"name": str(doc.get("name", obj.name)),
              "profiles": [str(p) for p in doc.get("profiles", recorded["profiles"]) or []],
              "config": str_map(doc.get("config", recorded["config"]), "config"),
              "devices": devices_map(doc.get("devices", recorded["devices"]))}
    changed = [k for k, v in edited.items() if v != recorded[k]]
    if changed:
        raise ValidationError([Issue("a snapshot keeps the definition it recorded: only "
                                     "expires_at and description can change", path=k)
                               for k in changed])
    try:
        expires = parse_timestamp(to_str(doc.get("expires_at"), "expires_at"))
    except ValueError as e:
        raise ValidationError([Issue(str(e), path="expires_at")]) from None
    return {"expires_at": expires, "description": to_str(doc.get("description"), "description")}


def _set_config(obj: Any, values: Any, unset: Any) -> list[str]:
    if is_snapshot(obj):
        raise ValidationError("a snapshot's config is the one it recorded",
                              hint="sysmgr config edit NAME/SNAP changes its expiry")
    # the API applies live keys at once and returns those that need a restart
    return obj.set_config(values, list(unset))


CONTAINER = Noun(
    "container",
    fetch=_fetch,
    document=_document,
    edit_document=_document,
    edit_fields=("config", "devices", "profiles", "description"),
    set_config=_set_config,
    properties=("description", "profiles"),
    parse_edit=_parse_edit,
    expandable=True,
    help={
        "get": "Print the value of a config key (empty when unset).",
        "set": "Set config keys (KEY=VALUE..., or KEY VALUE).\n\n"
               "\b\n  sysmgr config set c1 limits.memory=256MiB limits.cpu=1\n"
               "  sysmgr config set c1 boot.autostart true",
        "edit": "Edit a container's configuration as YAML ($EDITOR, or YAML on stdin);\n"
                "NAME/SNAP edits a snapshot's expires_at and description.",
        "show": "Show a container's configuration (NAME/SNAP: a snapshot's).",
    },
    keys_doc="Keys: sysmgr keys [PREFIX]",
)
register(config, CONTAINER)


# -- devices --------------------------------------------------------------------------------

device = device_group(config, noun="container", get=lambda app, name: app.client.containers.get(name),
                      add_example="sysmgr config device add c1 data disk source=/srv path=/srv",
                      expandable=True)
