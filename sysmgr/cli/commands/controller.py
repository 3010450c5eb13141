"""``sysmgr controller``: run the reconcile controller of a host root, see its status,
suspend and resume it, write its systemd unit."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from sysmgr.cli.commands._common import AppContext, Group, duration_callback, pass_app


@click.group(cls=Group)
def controller() -> None:
    """The reconcile controller: keeps this root matching its manifests."""


@controller.command("run")
@click.option("--source", "sources", multiple=True, metavar="DIR|git:DIR[@BRANCH]",
              help="Manifests to keep applied: a directory (watched) or a git working tree "
                   "(fetched and reset every interval). Repeatable.")
@click.option("--interval", default="60s", show_default=True, metavar="DURATION",
              help="Reconcile at least this often (30s, 5m, 1h), besides every change.")
@click.option("--no-self-heal", is_flag=True,
              help="Report what differs from the manifests; change nothing.")
@click.option("--prune", is_flag=True,
              help="Also delete what was created from the sources and left them (as "
                   "'apply --prune': a container is backed up first; an empty source prunes "
                   "nothing).")
@click.option("--keep-backups", metavar="DURATION", callback=duration_callback,
              help="With --prune: how long pruned containers' backups are kept (default 30d).")
@click.option("--once", is_flag=True, help="One pass, then exit (1 if it failed).")
@click.option("--cluster-store", metavar="etcd://HOST:PORT[,...]",
              help="Report this member's liveness (a lease kept alive) and its events to "
                   "this store. Default: the store the admin host recorded in this root "
                   "(cluster-member.json, pushed by 'cluster store set' and 'cluster add').")
@click.option("--member", "member_name", metavar="NAME",
              help="This member's name in the cluster (default: the recorded one).")
@click.option("--lease-ttl", metavar="DURATION",
              help="The member is OFFLINE this long after the controller stops renewing "
                   "its lease (default: the recorded one, else 10s).")
@click.option("--cluster-id", metavar="ID", help="The cluster's id in the store (default: "
                                                 "the recorded one, else default).")
@click.option("--cacert", metavar="FILE", help="CA certificate of the etcd servers (a file "
                                               "on this member).")
@click.option("--cert", metavar="FILE", help="Client certificate for etcd (TLS; a file on "
                                             "this member).")
@click.option("--key", metavar="FILE", help="The client certificate's key (on this member).")
@pass_app
def run(app: AppContext, sources: tuple[str, ...], interval: str, no_self_heal: bool,
        prune: bool, keep_backups: float | None, once: bool, cluster_store: str | None,
        member_name: str | None, lease_ttl: str | None, **tls: str | None) -> None:
    """Reconcile the root on every manifest change and every interval, until SIGTERM.

    Each pass plans and applies exactly as 'sysmgr apply' does (the plan's lines are logged),
    then takes the snapshots that are due and deletes expired ones. One controller runs per
    root; a second one says which pid holds it. 'sysmgr controller suspend' makes it change
    nothing until 'resume'.

    On a cluster member whose admin host uses an etcd store, it also keeps the member's
    liveness lease and writes the events the store missed while it was away; the store
    is the one the admin host recorded in this root, followed when the admin host switches
    it (the options above override the record).
    """
    from sysmgr.api.member import root_hello
    from sysmgr.api.store_follow import following
    from sysmgr.controller.loop import Controller
    from sysmgr.controller.sources import Source, parse_interval

    every = parse_interval(interval)
    parsed = [Source.parse(s) for s in sources]
    root = app.client.root
    ctl = Controller(app.client, parsed, interval=every, self_heal=not no_self_heal,
                     prune=prune, keep_backups=keep_backups)
    # the lease follows the store the root records (the admin host may switch it while this
    # runs); the options pin what they name
    with following(root, facts=lambda: root_hello(root), log=ctl.log,
                   store_url=cluster_store, member=member_name,
                   ttl=parse_interval(lease_ttl) if lease_ttl else None, **tls):
        code = ctl.run(once=once)
    raise SystemExit(code)


@controller.command("status")
@click.option("-f", "--format", "fmt", type=click.Choice(["text", "json", "yaml"]),
              default="text", show_default=True, help="Output format.")
@pass_app
def status(app: AppContext, fmt: str) -> None:
    """The controller: running or not, its sources and applied revisions, its last pass,
    pending changes, suspended or not; on a cluster member, the store it reports to and
    the state of its liveness lease."""
    from sysmgr.api.cluster_store import member_report
    from sysmgr.controller import state

    st = state.read_status(app.client.layout.root)
    st["cluster_store"] = member_report(app.client.layout.root) or None
    if fmt == "json":
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    if fmt == "yaml":
        from sysmgr.cli import render

        click.echo(render.document("yaml", st))
        return
    click.echo(_status_text(st))


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _status_text(st: dict[str, Any]) -> str:
    running = st.get("running")
    lines = [f"Controller: {'running, pid ' + str(running) if running else 'not running'}"
             + (" (suspended: changes nothing)" if st.get("suspended") else "")]
    lines += _store_lines(st.get("cluster_store"), running)
    if not st.get("pid"):
        return "\n".join(lines)
    lines.append(f"Since: {_when(st.get('since'))}" if running else
                 f"Last run began: {_when(st.get('since'))}")
    lines.append(f"Sources: {', '.join(st.get('sources') or []) or '(none)'}; every "
                 f"{st.get('interval', 0):g} s" + ("" if st.get("self_heal", True)
                                                 else "; report only"))
    for src, rev in sorted((st.get("applied_revisions") or {}).items()):
        lines.append(f"Applied: {src} at {rev}")
    last = st.get("last")
    if last:
        lines.append(f"Last reconcile: {_when(last.get('time'))}, {last.get('seconds', 0):.2f} s, "
                     f"{last.get('result')}")
    snap = (last or {}).get("next_snapshot")
    if snap:
        lines.append(f"Next scheduled: {snap[1]} at {_when(snap[0])}")
    if st.get("containers"):
        lines.append("Containers:")
        lines += [f"  {c}" for c in st["containers"]]
    pending = st.get("pending") or []
    if pending:
        drift = len(st.get("drift") or [])
        lines.append("Pending (not applied" + (f"; {drift} put back drift" if drift else "") + "):")
        lines += [f"  {p}" for p in pending]
    return "\n".join(lines)


def _store_lines(rep: dict[str, Any] | None, running: Any) -> list[str]:
    """The cluster store a member reports to, and its controller's lease."""
    if not rep:
        return []
    lines = [f"Cluster store: {rep['url']} (cluster {rep['cluster_id']}), as member "
             f"{rep['member']}"]
    lease = rep.get("lease")
    if not running or not lease or lease.get("pid") != running:
        lines.append("Lease: none (the controller keeps it while it runs: the member is "
                     "OFFLINE)")
    elif lease.get("state") == "alive":
        lines.append(f"Lease: alive, id {lease.get('lease')}, TTL {lease.get('ttl', 0):g} s, "
                     f"renewed {_when(lease.get('time'))}")
    else:
        lines.append(f"Lease: not renewed: {lease.get('error')} (last try "
                     f"{_when(lease.get('time'))}; retrying)")
    if rep.get("backlog"):
        lines.append(f"Backlog: {rep['backlog']} event(s) waiting for the store")
    return lines


@controller.command("suspend")
@pass_app
def suspend(app: AppContext) -> None:
    """Make the controller change nothing (it keeps reporting) until 'resume'."""
    from sysmgr.controller import state

    state.set_suspended(app.client.layout.root, True)
    click.echo("Controller suspended: it reports but changes nothing until "
               "'sysmgr controller resume'")


@controller.command("resume")
@pass_app
def resume(app: AppContext) -> None:
    """Let the controller change the host again (and reconcile at once if it runs)."""
    from sysmgr.controller import state

    root = app.client.layout.root
    state.set_suspended(root, False)
    pid = state.holder(root)
    if pid and pid > 0:
        os.kill(pid, 1)  # SIGHUP: reconcile now
    click.echo("Controller resumed" + (f" (pid {pid} reconciles now)" if pid else ""))


@controller.command("install-unit")
@click.option("--source", "sources", multiple=True, required=True, metavar="DIR|git:DIR[@BRANCH]")
@click.option("--interval", default=None, metavar="DURATION")
@click.option("--no-self-heal", is_flag=True)
@click.option("--path", "unit_dir", default=None, metavar="DIR",
              help="Where to write the unit (default /etc/systemd/system).")
@pass_app
def install_unit(app: AppContext, sources: tuple[str, ...], interval: str | None,
                 no_self_heal: bool, unit_dir: str | None) -> None:
    """Write the systemd unit that runs this root's controller (then: systemctl
    daemon-reload && systemctl enable --now UNIT)."""
    from sysmgr.controller import unit
    from sysmgr.controller.sources import Source, parse_interval

    for s in sources:
        Source.parse(s)  # checked before anything is written
    if interval:
        parse_interval(interval)
    root = app.client.layout.root
    path = os.path.join(unit_dir or unit.UNIT_DIR, unit.unit_name(root))
    with open(path, "w") as f:
        f.write(unit.unit_text(root, [os.path.abspath(s) if not s.startswith("git:") else s
                                      for s in sources], interval=interval,
                               self_heal=not no_self_heal))
    click.echo(f"Wrote {path}; start it with: systemctl daemon-reload && systemctl enable "
               f"--now {os.path.basename(path)}")
