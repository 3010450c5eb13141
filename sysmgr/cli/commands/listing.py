"""``sysmgr list``: containers as ``lxc list`` shows them (NAME, STATE, IPV4, PROFILES,
MEMORY, DISK, PIDS), or as JSON / YAML / CSV. A privileged container (``security.privileged``,
root inside is root on the host) says so in its STATE.

On an admin root with cluster members every member is asked at once and a LOCATION column
names each container's member (``--target MEMBER`` or ``@GROUP`` narrows the listing); a
member that does not answer is named on stderr with the reason, after the listing of the
others, and the command exits 1.

Usage figures come with the listing (``containers.all(usage=True)``): no per-container
round trip.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, echo_err, format_option, output
from sysmgr.errors import ValidationError

HEADERS = ("NAME", "STATE", "IPV4", "PROFILES", "MEMORY", "DISK", "PIDS")
CLUSTER_HEADERS = HEADERS + ("LOCATION",)


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


def cluster_record(c: Any) -> dict[str, Any]:
    """One container of a cluster listing: its record and its member."""
    return {**container_record(c), "location": c.location}


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
    ] + ([r["location"]] if "location" in r else [])


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


def render_containers(fmt: str, containers: Iterable[Any], *, cluster: bool = False) -> str:
    make = cluster_record if cluster else container_record
    records = [make(c) for c in sorted(containers, key=lambda c: (c.name, getattr(c, "location", "")))]
    return render.listing(fmt, CLUSTER_HEADERS if cluster else HEADERS, records, container_row)


@click.command("list")
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@format_option()
@click.pass_context
def list_(ctx: click.Context, filters: tuple[str, ...], fmt: str) -> None:
    """List containers (on an admin root with cluster members: every member's).

    \b
    Filters (all must match):
      web               names starting with "web" (or a regex on the whole name)
      status=running    containers in that state
      KEY=VALUE         expanded config key equal to VALUE (e.g. user.role=db)
    """
    app = ctx.ensure_object(AppContext)
    app.cluster_wide = True
    client = app.client
    if not getattr(client, "clustered", False):
        if app.target:
            raise ValidationError(f"--target {app.target}: this root has no cluster members")
        containers = [c for c in client.containers.all(usage=True) if matches(c, filters)]
        output(render_containers(fmt, containers))
        return
    members = client.cluster.members_of(app.target) if app.target else None
    survey = client.containers.survey(usage=True, members=members)
    output(render_containers(fmt, [c for c in survey.containers if matches(c, filters)],
                             cluster=True))
    for member, why in sorted(survey.unreachable.items()):
        echo_err(f"Error: member {member} is unreachable: {why}")
    if survey.unreachable:
        ctx.exit(1)
