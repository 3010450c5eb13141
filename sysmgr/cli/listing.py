"""``sysmgr list``'s body: containers as ``lxc list`` shows them, with LXD's column letters
(``-c ns4PmDN``), ``--fast``, filters, and JSON / YAML / CSV. A privileged container
(``security.privileged``, root inside is root on the host) says so in its STATE.

Click-free: the click command (``commands/listing.py``) and the fast path
(:mod:`sysmgr.cli.fast`) both run :func:`list_containers`.

On an admin root with cluster members every member is asked at once and a LOCATION column
names each container's member (``--target MEMBER`` or ``@GROUP`` narrows the listing); a
member that does not answer is named on stderr with the reason, after the listing of the
others, and the command exits 1.

Usage figures come with the listing (``containers.all(usage=True)``): no per-container
round trip; ``--fast`` and columns that need no usage skip reading it. The snapshot count
(``S``) costs one call per container, only when asked for.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from sysmgr.cli import render
from sysmgr.cli.app import AppContext, echo_err, output
from sysmgr.errors import Issue, ValidationError

#: sysmgr's default layout: name, state, IPv4, profiles, memory, disk, processes
DEFAULT_COLUMNS = "ns4PmDN"
FAST_COLUMNS = "nsacPt"  # LXD's --fast


def _usage(r: Mapping[str, Any], key: str) -> Any:
    return r[key] if r["status"] != "Stopped" and r.get(key) is not None else None


def _size(n: Any) -> str:
    return render.format_size(n) if n else ""


def _memory_percent(r: Mapping[str, Any]) -> str:
    limit = r["expanded_config"].get("limits.memory", "")
    used = _usage(r, "memory")
    if not used or not limit or limit.endswith("%"):
        return ""
    from sysmgr._util.sizes import parse_size  # only this column parses sizes

    try:
        total = parse_size(limit)
    except ValueError:
        return ""
    return f"{100 * used / total:.1f}%" if total else ""


def _cpu(r: Mapping[str, Any]) -> str:
    ns = _usage(r, "cpu_ns")
    return f"{ns // 1_000_000_000}s" if ns else ""


# letter -> (header, cell of a record, needs usage figures); LXD's letters and headers
COLUMNS: dict[str, tuple[str, Callable[[Mapping[str, Any]], object], bool]] = {
    "4": ("IPV4", lambda r: "\n".join(f"{a['address']} ({a['device']})" for a in r["addresses"]
                                      if a["family"] == "inet"), False),
    "6": ("IPV6", lambda r: "\n".join(f"{a['address']} ({a['device']})" for a in r["addresses"]
                                      if a["family"] == "inet6"), False),
    "a": ("ARCHITECTURE", lambda r: r["architecture"], False),
    "b": ("STORAGE POOL", lambda r: r["pool"], False),
    "c": ("CREATED AT", lambda r: render.format_timestamp(render.parse_iso(r["created_at"])), False),
    "d": ("DESCRIPTION", lambda r: r["description"], False),
    "D": ("DISK USAGE", lambda r: _size(r.get("disk")), True),
    "e": ("PROJECT", lambda r: "default", False),
    "f": ("BASE IMAGE", lambda r: (r["image"]["fingerprint"] or "")[:12], False),
    "F": ("BASE IMAGE", lambda r: r["image"]["fingerprint"] or "", False),
    "l": ("LAST USED AT", lambda r: render.format_timestamp(render.parse_iso(r["last_used_at"])),
          False),
    "m": ("MEMORY USAGE", lambda r: _size(_usage(r, "memory")), True),
    "M": ("MEMORY USAGE%", _memory_percent, True),
    "n": ("NAME", lambda r: r["name"], False),
    "N": ("PROCESSES", lambda r: _usage(r, "pids") if _usage(r, "pids") is not None else "", True),
    "p": ("PID", lambda r: r["pid"] or "", False),
    "P": ("PROFILES", lambda r: "\n".join(r["profiles"]), False),
    "s": ("STATE", lambda r: r["status"].upper() + (" (privileged)" if r.get("privileged") else ""),
          False),
    "S": ("SNAPSHOTS", lambda r: r.get("snapshots", ""), False),
    "t": ("TYPE", lambda r: "CONTAINER", False),
    "u": ("CPU USAGE", _cpu, True),
    "L": ("LOCATION", lambda r: r.get("location", ""), False),
}


class Column:
    """One column of the table: a header and how to read a record's cell."""

    __slots__ = ("header", "cell", "usage", "letter")

    def __init__(self, header: str, cell: Callable[[Mapping[str, Any]], object],
                 usage: bool = False, letter: str = "") -> None:
        self.header, self.cell, self.usage, self.letter = header, cell, usage, letter


def parse_columns(spec: str, *, clustered: bool) -> list[Column]:
    """LXD's ``-c``: comma-separated entries, each a run of letters, or a custom column
    ``[config:|devices:]KEY[:NAME][:MAXWIDTH]`` (an entry with a ``.`` in it)."""
    out: list[Column] = []
    for entry in spec.split(","):
        if not entry:
            raise ValidationError([Issue(f"empty column entry in {spec!r}", path="--columns")])
        if "." not in entry:
            for letter in entry:
                if letter not in COLUMNS or (letter == "L" and not clustered):
                    why = "column L needs cluster members" if letter == "L" else \
                        f"unknown column shorthand char {letter!r} in {entry!r}"
                    raise ValidationError([Issue(why, path="--columns")],
                                          hint=f"letters: {''.join(COLUMNS)}")
                header, cell, usage = COLUMNS[letter]
                out.append(Column(header, cell, usage, letter))
            continue
        out.append(_custom_column(entry))
    return out


def _custom_column(entry: str) -> Column:
    parts = entry.split(":")
    kind = "config"
    if parts[0] in ("config", "devices") and len(parts) > 1:
        kind, parts = parts[0], parts[1:]
    if len(parts) > 3:
        raise ValidationError([Issue(f"invalid column {entry!r}: too many fields",
                                     path="--columns")])
    key = parts[0]
    header = parts[1] if len(parts) > 1 and parts[1] else key
    try:
        width = int(parts[2]) if len(parts) > 2 else -1
    except ValueError:
        width = -2
    if width < -1:
        raise ValidationError([Issue(f"invalid max width in {entry!r}: -1, 0 or more",
                                     path="--columns")])
    width = len(header) if width == 0 else width

    def cell(r: Mapping[str, Any]) -> str:
        if kind == "config":
            value = r["config"].get(key, r["expanded_config"].get(key, ""))
        else:
            dev, _, dkey = key.partition(".")
            value = r["devices"].get(dev, {}).get(dkey) or \
                r["expanded_devices"].get(dev, {}).get(dkey, "")
        return value[:width] if width > 0 else value

    return Column(header.upper() if header == key else header, cell)


def container_record(c: Any) -> dict[str, Any]:
    """One container as the JSON/YAML listing shows it."""
    usage = getattr(c, "usage", None)
    return {
        "name": c.name,
        "status": c.status,
        "type": "container",
        "architecture": os.uname().machine,  # the host's: containers share its kernel
        "privileged": getattr(c, "security", "") == "privileged",  # the engine's word for it
        "pid": c.pid,
        "description": c.description,
        "image": {"fingerprint": c.image_fingerprint, "aliases": list(c.image_aliases),
                  "os": c.image_os},
        "profiles": list(c.profiles),
        "pool": c.pool,
        "created_at": render.iso_time(c.created_at),
        "last_used_at": render.iso_time(getattr(c, "last_used_at", None)),
        # LXD's shape: one object per address, not "10.0.3.5 (eth0)" strings
        "addresses": [dict(a) for a in getattr(c, "addresses", None) or []],
        "memory": getattr(usage, "memory_bytes", None),
        "pids": getattr(usage, "pids", None),
        "cpu_ns": getattr(usage, "cpu_ns", None),
        "disk": getattr(c, "disk_bytes", None),
        "config": dict(sorted(c.config.items())),
        "devices": {k: dict(v) for k, v in sorted(c.devices.items())},
        "expanded_config": dict(sorted(c.expanded_config.items())),
        "expanded_devices": {k: dict(v) for k, v in sorted(c.expanded_devices.items())},
    }


def cluster_record(c: Any) -> dict[str, Any]:
    """One container of a cluster listing: its record and its member."""
    return {**container_record(c), "location": c.location}


# -- filters (LXD's) --------------------------------------------------------------------------

def _anchored(pattern: str) -> re.Pattern[str] | None:
    if "^" not in pattern and "$" not in pattern:
        pattern = f"^{pattern}$"
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _dot_prefix(short: str, full: str) -> bool:
    """``u.blah`` names ``user.blah``: each dotted part a prefix of the key's part."""
    s, f = short.split("."), full.split(".")
    return len(s) == len(f) and all(b.startswith(a) for a, b in zip(s, f))


def _shorthand(c: Any, key: str, value: str) -> bool | None:
    """LXD's shorthand filters (``status=running,frozen``; values OR'ed); None: not one."""
    def addresses(family: str) -> list[str]:
        return [a["address"] for a in getattr(c, "addresses", None) or [] if a["family"] == family]

    def one(v: str) -> bool:
        if key in ("status", "state"):
            return c.status.lower() == v.lower()
        if key == "type":
            return v.lower() == "container"
        if key == "location":
            return (getattr(c, "location", None) or "").lower() == v.lower()
        if key == "architecture":
            return os.uname().machine.lower() == v.lower()
        import ipaddress  # ipv4=/ipv6= filters only

        net = ipaddress.ip_network(v, strict=False) if "/" in v else None
        for a in addresses("inet" if key == "ipv4" else "inet6"):
            if a == v or (net is not None and ipaddress.ip_address(a) in net):
                return True
        return False

    if key.lower() not in ("status", "state", "type", "location", "architecture", "ipv4", "ipv6"):
        return None
    key = key.lower()
    return any(one(v) for v in value.split(","))


def matches(c: Any, filters: Sequence[str]) -> bool:
    """LXD's list filters, all of which must match: ``web`` (a name starting with it, or a
    regular expression on the whole name), ``status=running`` (and ``type``, ``location``,
    ``architecture``, ``ipv4``/``ipv6`` with an address or a CIDR; comma-separated values
    are alternatives), ``KEY=VALUE`` on the expanded config (``u.role=db`` abbreviates
    ``user.role``; the value a regular expression on the whole value)."""
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq:
            rx = _anchored(f)
            if not (rx is not None and rx.match(c.name)) and not c.name.startswith(f):
                return False
            continue
        short = _shorthand(c, key, value)
        if short is not None:
            if not short:
                return False
            continue
        rx = _anchored(value)
        hits = [v for k, v in c.expanded_config.items() if _dot_prefix(key, k)]
        if c.expanded_config.get(key) == value:
            continue
        if not any((rx.match(v) if rx is not None else v == value) for v in hits):
            return False
    return True


def render_containers(fmt: str, containers: Iterable[Any], columns: Sequence[Column], *,
                      cluster: bool = False, snapshots: Callable[[Any], int] | None = None
                      ) -> str:
    make = cluster_record if cluster else container_record
    records = []
    for c in sorted(containers, key=lambda c: (c.name, getattr(c, "location", "") or "")):
        r = make(c)
        if snapshots is not None:
            r["snapshots"] = snapshots(c)
        records.append(r)
    return render.listing(fmt, [col.header for col in columns], records,
                          lambda r: [col.cell(r) for col in columns])


def list_containers(app: AppContext, filters: Sequence[str] = (), columns: str | None = None,
                    fast: bool = False, fmt: str = "table") -> int:
    """Print the containers (on an admin root with cluster members: every member's) and
    return the exit code: 1 when a member did not answer (the others are listed)."""
    app.cluster_wide = True
    client = app.client
    clustered = bool(getattr(client, "clustered", False))
    cols = parse_columns(FAST_COLUMNS if fast else columns or DEFAULT_COLUMNS + "L" * clustered,
                         clustered=clustered)
    usage = fmt in ("json", "yaml") or any(c.usage for c in cols)
    count = (lambda c: len(c.snapshots.all())) if any(c.letter == "S" for c in cols) else None
    if not clustered:
        if app.target:
            raise ValidationError(f"--target {app.target}: this root has no cluster members")
        found = [c for c in client.containers.all(usage=usage) if matches(c, filters)]
        output(render_containers(fmt, found, cols, snapshots=count))
        return 0
    members = client.cluster.members_of(app.target) if app.target else None
    survey = client.containers.survey(usage=usage, members=members)
    output(render_containers(fmt, [c for c in survey.containers if matches(c, filters)], cols,
                             cluster=True, snapshots=count))
    for member, why in sorted(survey.unreachable.items()):
        echo_err(f"Error: member {member} is unreachable: {why}")
    if client.cluster.stale:
        echo_err(f"Note: STALE - {client.cluster.stale}; containers as each member has them")
    return 1 if survey.unreachable else 0
