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
              help="Report this member's liveness (a lease kept alive) and its events to the "
                   "cluster's shared store; needs --member.")
@click.option("--member", "member_name", metavar="NAME",
              help="This member's name in the cluster (with --cluster-store).")
@click.option("--lease-ttl", default="10s", show_default=True, metavar="DURATION",
              help="With --cluster-store: the member is OFFLINE this long after the "
                   "controller stops renewing its lease.")
@click.option("--cluster-id", metavar="ID", help="The cluster's id in the store (default).")
@click.option("--cacert", metavar="FILE", help="CA certificate of the etcd servers.")
@click.option("--cert", metavar="FILE", help="Client certificate for etcd (TLS).")
@click.option("--key", metavar="FILE", help="The client certificate's key.")
@pass_app
def run(app: AppContext, sources: tuple[str, ...], interval: str, no_self_heal: bool,
        prune: bool, keep_backups: float | None, once: bool, cluster_store: str | None,
        member_name: str | None, lease_ttl: str, **tls: str | None) -> None:
    """Reconcile the root on every manifest change and every interval, until SIGTERM.

    Each pass plans and applies exactly as 'sysmgr apply' does (the plan's lines are logged),
    then takes the snapshots that are due and deletes expired ones. One controller runs per
    root; a second one says which pid holds it. 'sysmgr controller suspend' makes it change
    nothing until 'resume'.
    """
    from sysmgr.controller.loop import Controller
    from sysmgr.controller.sources import Source, parse_interval

    every = parse_interval(interval)
    parsed = [Source.parse(s) for s in sources]
    ctl = Controller(app.client, parsed, interval=every, self_heal=not no_self_heal,
                     prune=prune, keep_backups=keep_backups)
    if cluster_store is None:
        raise SystemExit(ctl.run(once=once))
    if not member_name:
        raise click.UsageError("--cluster-store needs --member NAME (this member's name)")
    from sysmgr.api import cluster_store as cstore
    from sysmgr.api.member import root_hello

    root = app.client.root
    with cstore.heartbeat(cluster_store, member_name, root=root, ttl=parse_interval(lease_ttl),
                          facts=lambda: root_hello(root), log=ctl.log, **tls):
        code = ctl.run(once=once)
    raise SystemExit(code)


@controller.command("status")
@click.option("-f", "--format", "fmt", type=click.Choice(["text", "json", "yaml"]),
              default="text", show_default=True, help="Output format.")
@pass_app
def status(app: AppContext, fmt: str) -> None:
    """The controller: running or not, its sources and applied revisions, its last pass,
    pending changes, suspended or not."""
    from sysmgr.controller import state

    st = state.read_status(app.client.layout.root)
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
