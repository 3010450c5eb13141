"""``sysmgr cluster``: the members of this admin root's cluster (``lxc cluster``): add, list,
show, remove, groups, evacuate and restore.

Members are hosts reached over SSH (``ssh://user@host[:port]``) or roots on this host
(``local:``; the admin host is a member of its own cluster that way). ``add`` checks that the
member answers; an SSH member's unknown host key is shown and must be confirmed (on a
terminal) or given with ``--accept-host-key``.
"""

from __future__ import annotations

from typing import Any, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, Group, aborted, echo_err, format_option, output, parse_assignments, pass_app,
    stdin_is_tty)
from sysmgr.errors import SysmgrError, ValidationError

HEADERS = ("NAME", "URL", "STATE", "VERSION", "CONTAINERS", "MEMORY", "GROUPS")


def member_record(st: Any) -> dict[str, Any]:
    """One member as ``cluster list --format json|yaml`` shows it."""
    return {"name": st.name, "url": st.url, "root": st.root, "state": st.state,
            "reason": st.reason or None, "version": st.version or None,
            "containers": st.containers, "memory_free": st.memory_free,
            "memory_total": st.memory_total, "groups": list(st.groups)}


def memory_cell(free: int | None, total: int | None) -> str:
    if free is None or total is None:
        return ""
    return f"{render.format_size(free)}/{render.format_size(total)}"


def member_row(r: dict[str, Any]) -> list[object]:
    state = r["state"] + (f" ({r['reason']})" if r["state"] == "OFFLINE" and r["reason"] else "")
    return [r["name"], r["url"], state, r["version"] or "",
            "" if r["containers"] is None else r["containers"],
            memory_cell(r["memory_free"], r["memory_total"]), ", ".join(r["groups"])]


def _warn(line: str) -> None:
    echo_err(f"warning: {line}")


@click.group(cls=Group)
def cluster() -> None:
    """Cluster members: add, list, show, remove, groups, evacuate, restore."""


@cluster.command("add")
@click.argument("name")
@click.argument("url", metavar="URL")
@click.option("--key", metavar="FILE", help="SSH private key for the member (default: the "
                                            "user's agent and keys).")
@click.option("--root", "member_root", metavar="DIR",
              help="The member's sysmgr root (default /var/lib/sysmgr; for local: this "
                   "admin root).")
@click.option("-g", "--group", "groups", multiple=True, metavar="GROUP",
              help="Group to put the member in (repeatable).")
@click.option("--sysmgr", "sysmgr_cmd", metavar="COMMAND",
              help="The sysmgr command on the member (default: sysmgr on its PATH).")
@click.option("--accept-host-key", metavar="SHA256:...",
              help="The member's SSH host key fingerprint, checked instead of asking.")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Member config (scheduler.instance, limits.instances, limits.memory...).")
@pass_app
def add(app: AppContext, name: str, url: str, key: str | None, member_root: str | None,
        groups: tuple[str, ...], sysmgr_cmd: str | None, accept_host_key: str | None,
        config: tuple[str, ...]) -> None:
    """Add member NAME at URL: ssh://USER@HOST[:PORT], or local: for a root on this host.
    With an etcd cluster store the member is told to report there (its controller then
    keeps its liveness lease with no options).

    \b
    Examples:
      sysmgr cluster add node2 ssh://root@10.0.0.2 --group web
      sysmgr cluster add node1 local:
    """
    def confirm(fingerprint: str) -> bool:
        if not stdin_is_tty():
            return False
        click.echo(f"The host key of {url} is {fingerprint}")
        return click.confirm("Trust it and add the member?", default=False)

    m = app.client.cluster.members.add(name, url, root=member_root, key=key, groups=groups,
                                       sysmgr=sysmgr_cmd, accept_host_key=accept_host_key,
                                       confirm=confirm, config=parse_assignments(config),
                                       warn=_warn)
    click.echo(f"Member {m.name} added ({m.url}, root {m.root})")


@cluster.command("list")
@format_option()
@click.pass_context
def list_(ctx: click.Context, fmt: str) -> None:
    """List members: state (ONLINE, OFFLINE, EVACUATED), version, containers, memory."""
    app = ctx.ensure_object(AppContext)
    cluster = app.client.cluster
    states = cluster.members.states()
    output(render.listing(fmt, HEADERS, [member_record(s) for s in states], member_row))
    stale_note(cluster)


def stale_note(cluster: Any) -> None:
    """Say so when the members came from the cache (the shared store has no quorum)."""
    if cluster.stale:
        echo_err(f"Note: STALE - {cluster.stale}; members as last recorded, states from the "
                 "members themselves")


@cluster.command("show")
@click.argument("name")
@format_option(("yaml", "json"), default="yaml")
@pass_app
def show(app: AppContext, name: str, fmt: str) -> None:
    """Show a member's record and what it says now."""
    m = app.client.cluster.members.get(name)
    record = {"name": m.name, "url": m.url, "root": m.root, "key": m.key, "sysmgr": m.sysmgr,
              "host_key": m.host_key, "groups": list(m.groups), "config": dict(m.config),
              "evacuated": m.evacuated}
    st = m.state()
    record["status"] = {k: v for k, v in member_record(st).items()
                        if k in ("state", "reason", "version", "containers", "memory_free",
                                 "memory_total")}
    record["status"]["hostname"] = st.hostname or None
    output(render.document(fmt, record))


@cluster.command("remove")
@click.argument("name")
@click.option("-f", "--force", is_flag=True,
              help="Forget the member even if it holds containers or does not answer.")
@pass_app
def remove(app: AppContext, name: str, force: bool) -> None:
    """Forget member NAME. Nothing on the member is touched, except that with an etcd
    cluster store it stops reporting there (when it answers)."""
    app.client.cluster.members.remove(name, force=force, warn=_warn)
    click.echo(f"Member {name} removed")


@cluster.command("evacuate")
@click.argument("name")
@click.option("-y", "--yes", "--force", "yes", is_flag=True,
              help="Do not ask before stopping its containers.")
@pass_app
def evacuate(app: AppContext, name: str, yes: bool) -> None:
    """Take the containers off member NAME (by their cluster.evacuate key) and keep new
    ones away until 'cluster restore NAME'."""
    members = app.client.cluster.members
    members.get(name)
    if not yes:
        if not stdin_is_tty():
            raise SysmgrError(f"evacuating {name} moves or stops its running containers; "
                              "refusing without confirmation", hint="re-run with --yes")
        if not click.confirm(f"Evacuate {name} (its running containers move or stop)?",
                             default=False):
            aborted("nothing evacuated")
    with render.progress(err=False, indent="  ") as progress:  # each move is a long step
        done = app.client.cluster.evacuate(name, progress=progress)
    click.echo(f"Member {name} evacuated: {len(done.moved)} container(s) moved, "
               f"{len(done.stopped)} stopped")


@cluster.command("restore")
@click.argument("name")
@pass_app
def restore(app: AppContext, name: str) -> None:
    """Start what evacuating NAME stopped, move back what it moved, and let new containers
    go there again."""
    with render.progress(err=False, indent="  ") as progress:
        back = app.client.cluster.restore(name, progress=progress)
    click.echo(f"Member {name} restored: {len(back)} container(s) back")


# -- groups -------------------------------------------------------------------------------

@cluster.group("group")
def group() -> None:
    """Member groups (placement targets: --target @GROUP)."""


@group.command("list")
@format_option()
@pass_app
def group_list(app: AppContext, fmt: str) -> None:
    """List groups and their members."""
    groups = app.client.cluster.members.groups()
    records = [{"name": g, "members": members} for g, members in groups.items()]
    output(render.listing(fmt, ("GROUP", "MEMBERS"), records,
                          lambda r: [r["name"], ", ".join(r["members"])]))


def _set_groups(app: AppContext, name: str, groups: Sequence[str]) -> None:
    m = app.client.cluster.members.set_groups(name, groups)
    click.echo(f"Member {name} groups: {', '.join(m.groups) or '(none)'}")


@group.command("assign")
@click.argument("name")
@click.argument("groups", metavar="GROUP[,GROUP...]")
@pass_app
def group_assign(app: AppContext, name: str, groups: str) -> None:
    """Put member NAME in exactly these groups."""
    _set_groups(app, name, groups.split(","))


@group.command("add")
@click.argument("name")
@click.argument("group_name", metavar="GROUP")
@pass_app
def group_add(app: AppContext, name: str, group_name: str) -> None:
    """Add member NAME to GROUP."""
    _set_groups(app, name, [*app.client.cluster.members.get(name).groups, group_name])


@group.command("remove")
@click.argument("name")
@click.argument("group_name", metavar="GROUP")
@pass_app
def group_remove(app: AppContext, name: str, group_name: str) -> None:
    """Take member NAME out of GROUP."""
    current = app.client.cluster.members.get(name).groups
    if group_name not in current:
        raise ValidationError(f"member {name} is not in group {group_name!r}")
    _set_groups(app, name, [g for g in current if g != group_name])


@cluster.group("store")
def store() -> None:
    """Where the cluster's record lives: sqlite (the admin root, default) or etcd."""


def _tls_options(fn: Any) -> Any:
    for opt in reversed([
            click.option("--cacert", metavar="FILE", help="CA certificate of the etcd servers."),
            click.option("--cert", metavar="FILE", help="Client certificate (TLS)."),
            click.option("--key", metavar="FILE", help="Client certificate's key."),
            click.option("--cluster-id", metavar="ID",
                         help="Keys go under /sysmgr/ID/ (default: default); admin hosts "
                              "sharing a cluster use the same id.")]):
        fn = opt(fn)
    return fn


@store.command("show")
@format_option(("yaml", "json"), default="yaml")
@pass_app
def store_show(app: AppContext, fmt: str) -> None:
    """The store in use and whether it answers."""
    output(render.document(fmt, app.client.cluster.store_admin.show()))


@store.command("set")
@click.argument("url", metavar="sqlite|etcd://HOST:PORT[,HOST:PORT...]")
@_tls_options
@pass_app
def store_set(app: AppContext, url: str, cacert: str | None, cert: str | None,
              key: str | None, cluster_id: str | None) -> None:
    """Use the store at URL from now on (checked first; nothing is copied: see migrate).
    With TLS: --cacert CA.pem --cert ME.pem --key ME.key.

    Every member it reaches is told (its cluster-member.json): with etcd, its controller
    keeps its liveness lease and its events go to the store, with no options on the
    member; with sqlite, that stops. TLS file paths are passed as given: each member
    needs the files at the same paths (keys are never copied). A member that does not
    answer is named in a warning; running this again tells it."""
    conf = app.client.cluster.store_admin.set(url, cluster_id=cluster_id, cacert=cacert,
                                              cert=cert, key=key, warn=_warn)
    click.echo(f"Cluster store: {conf.url}")


@store.command("migrate")
@click.option("--to", "url", required=True, metavar="sqlite|etcd://HOST:PORT[,...]")
@_tls_options
@pass_app
def store_migrate(app: AppContext, url: str, cacert: str | None, cert: str | None,
                  key: str | None, cluster_id: str | None) -> None:
    """Copy the cluster's record into another store, then use it.

    Members (with evacuation records), container locations and the manifest inventory are
    copied; leases, reservations and locks belong to running commands and are not. The
    members are told, as with 'cluster store set'.
    """
    counts = app.client.cluster.store_admin.migrate(url, cluster_id=cluster_id, cacert=cacert,
                                                    cert=cert, key=key, warn=_warn)
    click.echo(f"Cluster store: {url} (copied " +
               ", ".join(f"{n} {k}" for k, n in counts.items()) + ")")
