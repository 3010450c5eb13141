"""``sysmgr info NAME``: one container's status, image, resources, limits, expanded config
and devices, laid out like ``lxc info``; ``sysmgr info`` alone: the host section (the host
root and its cgroup layout)."""

from __future__ import annotations

from typing import Any, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, format_option, pass_app


def info_record(c: Any, st: Any, snapshots: Sequence[Any] = ()) -> dict[str, Any]:
    """The container, its ``state()`` and its snapshots as one document (``--format
    yaml|json``)."""
    from sysmgr.cli.commands.snapshot import lxd_time  # LXD's times for the snapshots

    exp = c.expanded_config
    return {
        "name": c.name,
        "description": c.description,
        "status": st.status,
        "image": {"fingerprint": c.image_fingerprint, "aliases": list(c.image_aliases),
                  "os": c.image_os},
        "profiles": list(c.profiles),
        "pool": c.pool,
        "created_at": render.iso_time(c.created_at),
        "last_used_at": render.iso_time(getattr(c, "last_used_at", None)),
        "pid": st.pid,
        "security": getattr(c, "security", ""),
        "resource_views": getattr(c, "resource_views", ""),
        "engine": getattr(c, "engine", ""),
        "resources": {
            "processes": st.pids,
            "memory_bytes": st.memory_bytes,
            "memory_peak_bytes": st.memory_peak_bytes,
            "cpu_seconds": None if st.cpu_ns is None else round(st.cpu_ns / 1e9, 3),
            "oom_kills": st.oom_kills,
            "disk_bytes": st.disk_bytes,
        },
        "limits": {k: exp[k] for k in sorted(exp) if k.startswith("limits.") and exp[k] != ""},
        # per nic: name inside, host end (stable), MAC, network or parent, recorded address
        "network": {k: dict(v) for k, v in sorted((getattr(c, "nics", None) or {}).items())},
        "addresses": [dict(a) for a in getattr(c, "addresses", None) or []],
        "last_move": getattr(c, "last_migration", None),
        "moving": getattr(c, "migration", None),
        "expanded_config": dict(sorted(exp.items())),
        "expanded_devices": {k: dict(v) for k, v in sorted(c.expanded_devices.items())},
        "snapshots": [{"name": s.name, "created_at": lxd_time(s.created_at),
                       "expires_at": lxd_time(s.expires_at), "stateful": False}
                      for s in snapshots],
    }


def _move_lines(r: dict[str, Any]) -> list[str]:
    out = []
    m = r.get("moving")
    if m:
        where = "to" if m.get("role") == "out" else "from"
        out += ["", f"Being moved {where} {m.get('peer')} (move {m.get('id')}, {m.get('phase')}): "
                    f"'sysmgr move {r['name']}' finishes or rolls it back"]
    last = r.get("last_move")
    if last:
        rounds = last.get("rounds") or []
        line = (f"Last move: from {last.get('from')} to {last.get('to')} on "
                f"{render.format_timestamp(last.get('at'))}, {len(rounds)} round(s), "
                f"{render.format_size(sum(rounds))} as a {last.get('stream')} stream")
        out += ["", line]
        d = last.get("downtime")
        if d:
            out.append(f"  Downtime: {sum(d.values()):.2f} s (the guest's shutdown "
                       f"{d['shutdown']:.2f} s, sysmgr {d['sysmgr']:.2f} s, the guest "
                       f"answering {d['boot']:.2f} s)")
    return out


def info_text(r: dict[str, Any]) -> str:
    img = r["image"]
    fp = (img["fingerprint"] or "")[:12]
    about = ", ".join(x for x in [f"fingerprint {fp}" if img["aliases"] else "",
                                  f"os {img['os']}" if img["os"] else ""] if x)
    image = (img["aliases"][0] if img["aliases"] else fp) + (f" ({about})" if about else "")
    head = [("Name", r["name"]), ("Description", r["description"]),
            ("Status", r["status"].upper()), ("Type", "container"), ("Image", image),
            ("Profiles", ", ".join(r["profiles"])), ("Storage pool", r["pool"]),
            ("Created", render.format_timestamp(render.parse_iso(r["created_at"]))),
            ("Last Used", render.format_timestamp(render.parse_iso(r.get("last_used_at")))),
            ("Init PID", r["pid"]), ("Runtime", r.get("engine")), ("Security", r.get("security")),
            ("Resource views", r.get("resource_views"))]
    out = [f"{k}: {v}" for k, v in head if v not in (None, "")]
    res = r["resources"]
    if any(v is not None for v in res.values()):
        out += ["", "Resources:"]
        if res["processes"] is not None:
            out.append(f"  Processes: {res['processes']}")
        if res["disk_bytes"] is not None:
            out += ["  Disk usage:", f"    root: {render.format_size(res['disk_bytes'])}"]
        if res["cpu_seconds"] is not None:
            out += ["  CPU usage:", f"    CPU usage (in seconds): {res['cpu_seconds']:.2f}"]
        if res["memory_bytes"] is not None or res["memory_peak_bytes"] is not None:
            out.append("  Memory usage:")
            if res["memory_bytes"] is not None:
                out.append(f"    Memory (current): {render.format_size(res['memory_bytes'])}")
            if res["memory_peak_bytes"] is not None:
                out.append(f"    Memory (peak): {render.format_size(res['memory_peak_bytes'])}")
            if res.get("oom_kills") is not None:
                out.append(f"    OOM kills: {res['oom_kills']}")
    if r.get("network"):
        out += ["", "Network:"]
        for dev, nic in r["network"].items():
            where = f"network {nic['network']}" if nic.get("network") else \
                f"bridge {nic.get('parent') or '?'}"
            addr = nic.get("ipv4") or "-"
            how = "DHCP" if nic.get("dhcp") or not nic.get("network") else "static"
            out.append(f"  {dev} ({nic.get('name') or dev}): {addr} ({how}) on {where}, "
                       f"host interface {nic.get('host_name') or '-'}, MAC {nic.get('hwaddr') or '-'}")
        now = [f"{a['address']} ({a['device']})" for a in r.get("addresses") or []]
        if now:
            out.append(f"  Addresses now: {', '.join(now)}")
    out += _move_lines(r)
    for title, items in (("Limits", r["limits"]), ("Expanded config", r["expanded_config"])):
        if items:
            out += ["", f"{title}:"] + [f"  {k}: {v}" for k, v in items.items()]
    if r["expanded_devices"]:
        out += ["", "Devices:"]
        for name, dev in r["expanded_devices"].items():
            ordered = {"type": dev["type"], **dev} if "type" in dev else dev
            out.append(f"  {name}: {render.inline_map(ordered)}")
    if r.get("snapshots"):  # as lxc info: a table of name, taken at, expires at, stateful
        rows = [[s["name"], _when(s["created_at"]), _when(s["expires_at"]),
                 "YES" if s["stateful"] else "NO"] for s in r["snapshots"]]
        out += ["", "Snapshots:", render.table(("NAME", "TAKEN AT", "EXPIRES AT", "STATEFUL"),
                                               rows)]
    return "\n".join(out)


def _when(iso: str) -> str:
    from sysmgr.model.schedule import parse_timestamp

    return render.format_timestamp(parse_timestamp(iso))


def host_record(root: str, cg: Any, sec: Any = None) -> dict[str, Any]:
    """The host section: the root, its cgroup layout (a ``HostCgroups``) and what confines
    containers (a ``HostSecurity``)."""
    record = {"root": root, "cgroups": {"layout": cg.layout, "systemd": cg.systemd,
                                        "subtree": cg.subtree, "delegated": cg.delegated}}
    if sec is not None:
        record["security"] = {"apparmor": sec.apparmor}
    return record


def cgroup_line(cg: Any) -> str:
    """One line on the cgroup layout (also printed by ``sysmgr init``)."""
    how = {"v1": "cgroup v1", "hybrid": "cgroup v1 (hybrid: controllers on v1, cgroup2 only tracks processes)",
           "unified": "cgroup v2 (unified)"}.get(cg.layout, cg.layout)
    if cg.delegated:
        return f"{how}, owned by systemd: containers in the delegated scope {cg.subtree}"
    return f"{how}: containers under {cg.subtree}"


def host_text(r: dict[str, Any]) -> str:
    cg = r["cgroups"]
    lines = ["Host:", f"  Root: {r['root']}", f"  Cgroup layout: {cg['layout']}"]
    if cg["layout"] == "unified":
        lines.append(f"  systemd owns the cgroup root: {'yes' if cg['systemd'] else 'no'}")
    where = cg["subtree"] or "- (the host root is not initialised)"
    lines.append(f"  Containers' cgroups: {where}" + (" (delegated, Delegate=yes)" if cg["delegated"] else ""))
    if r.get("security"):
        lines.append("  Confinement: user namespaces (unless security.privileged), seccomp, "
                     "explicit capabilities")
        lines.append(f"  AppArmor: {r['security']['apparmor']}")
    return "\n".join(lines)


@click.command()
@click.argument("name", required=False)
@format_option(("text", "yaml", "json"), default="text")
@pass_app
def info(app: AppContext, name: str | None, fmt: str) -> None:
    """Show a container's status, resources and configuration; without NAME, the host's."""
    if name is None:
        record = host_record(app.client.root, app.client.host_cgroups(), app.client.host_security())
        click.echo(host_text(record) if fmt == "text" else render.document(fmt, record))
        return
    c = app.client.containers.get(name)
    record = info_record(c, c.state(), c.snapshots.all())
    click.echo(info_text(record) if fmt == "text" else render.document(fmt, record))
