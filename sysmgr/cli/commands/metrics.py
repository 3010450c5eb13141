"""``sysmgr metrics``: the containers' figures as OpenMetrics text (:mod:`sysmgr.cli.metrics`
makes it); ``sysmgr metrics serve`` answers Prometheus scrapes over HTTP."""

from __future__ import annotations

import click

from sysmgr.cli.app import echo, echo_err
from sysmgr.cli.commands._common import AppContext, Group, pass_app


@click.group(cls=Group, invoke_without_command=True)
@pass_app
@click.pass_context
def metrics(ctx: click.Context, app: AppContext) -> None:
    """Print every running container's metrics (OpenMetrics, LXD's names: sysmgr_cpu_seconds_total,
    sysmgr_memory_RSS_bytes, sysmgr_network_receive_bytes_total, ...).

    On an admin root with cluster members: every member's containers (label member).

    \b
    Examples:
      sysmgr metrics
      sysmgr metrics | grep '^sysmgr_memory_RSS_bytes'
      sysmgr metrics serve --listen 127.0.0.1:9472
    """
    if ctx.invoked_subcommand is not None:
        return
    from sysmgr.cli import metrics as om

    app.cluster_wide = True
    click.echo(om.text(app.client), nl=False)


@metrics.command()
@click.option("--listen", default="127.0.0.1:9472", show_default=True, metavar="HOST:PORT",
              help="Address to serve on (port 0: any free port).")
@click.option("--allow-remote", is_flag=True,
              help="Allow an address that is not loopback (anyone reaching it reads the "
                   "metrics: put a firewall or a proxy with authentication in front).")
@pass_app
def serve(app: AppContext, listen: str, allow_remote: bool) -> None:
    """Serve the metrics over HTTP for Prometheus (GET /metrics) until interrupted.

    \b
    Examples:
      sysmgr metrics serve
      sysmgr metrics serve --listen [::1]:9472
      sysmgr metrics serve --listen 0.0.0.0:9472 --allow-remote
    """
    from sysmgr.cli import metrics as om

    host, port = om.listen_address(listen, allow_remote)
    app.cluster_wide = True
    client = app.client
    om.serve(client, host, port, lambda where: echo(f"Serving metrics on http://{where}/metrics"))
    echo_err("Stopped")
