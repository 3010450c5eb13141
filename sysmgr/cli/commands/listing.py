"""``sysmgr list``: containers as ``lxc list`` shows them (NAME, STATE, IPV4, PROFILES,
MEMORY, DISK, PIDS), or as JSON / YAML / CSV. A privileged container (``security.privileged``,
root inside is root on the host) says so in its STATE.

Usage figures come with the listing (``containers.all(usage=True)``): no per-container
round trip.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, format_option, output, pass_app

HEADERS = ("NAME", "STATE", "IPV4", "PROFILES", "MEMORY", "DISK", "PIDS")


def container_record(c: Any) -> dict[str, Any]:
    """One container as the JSON/YAML listing shows it."""
    usage = getattr(c, "usage", None)
    return {
        "name": c.name,
        "status": c.status,
        "privileged": getattr(c, "security", "") == "privileged",  # the engine's word for it
        "pid": c.pid,
        "description": c.description,
        "image": {"fingerprint": c.image_fingerprint, "aliases": list(c.image_aliases),
                  "os": c.image_os},
        "profiles": list(c.profiles),
        "pool": c.pool,
        "created_at": render.iso_time(c.created_at),
        "ipv4": list(getattr(c, "ipv4", None) or []),
        "memory": getattr(usage, "memory_bytes", None),
        "pids": getattr(usage, "pids", None),
        "disk": getattr(c, "disk_bytes", None),
        "config": dict(sorted(c.config.items())),
        "devices": {k: dict(v) for k, v in sorted(c.devices.items())},
        "expanded_config": dict(sorted(c.expanded_config.items())),
        "expanded_devices": {k: dict(v) for k, v in sorted(c.expanded_devices.items())},
    }


def container_row(r: Mapping[str, Any]) -> list[object]:
    running = r["status"] != "Stopped"
    return [
        r["name"],
        r["status"].upper() + (" (privileged)" if r.get("privileged") else ""),
        "\n".join(r["ipv4"]),
        ", ".join(r["profiles"]),
        render.format_size(r["memory"]) if running else "",
        render.format_size(r["disk"]) if r.get("disk") is not None else "",
        r["pids"] if running and r["pids"] is not None else "",
    ]


def matches(c: Any, filters: Sequence[str]) -> bool:
    """LXD's list filters, all of which must match: ``web`` (name prefix or a regular
    expression on the whole name), ``status=running``, ``KEY=VALUE`` on the expanded config."""
    for f in filters:
        key, eq, value = f.partition("=")
        if eq:
            if key in ("status", "state"):
                if c.status.lower() != value.lower():
                    return False
            elif c.expanded_config.get(key) != value:
                return False
        elif not c.name.startswith(f):
            try:
                if not re.fullmatch(f, c.name):
                    return False
            except re.error:
                return False
    return True


def render_containers(fmt: str, containers: Iterable[Any]) -> str:
    records = [container_record(c) for c in sorted(containers, key=lambda c: c.name)]
    return render.listing(fmt, HEADERS, records, container_row)


@click.command("list")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@format_option()
@pass_app
def list_(app: AppContext, filters: tuple[str, ...], fmt: str) -> None:
    """List containers.

    \b
    Filters (all must match):
      web               names starting with "web" (or a regex on the whole name)
      status=running    containers in that state
      KEY=VALUE         expanded config key equal to VALUE (e.g. user.role=db)
    """
    containers = [c for c in app.client.containers.all(usage=True) if matches(c, filters)]
    output(render_containers(fmt, containers))
