"""Hidden commands an admin host runs on a cluster member over SSH (never typed by people).

``sysmgr --root ROOT _rpc`` serves this host's API as JSON lines on stdin/stdout for as
long as the admin keeps the channel open; ``sysmgr --root ROOT _stream KIND --rpc N REQUEST``
serves one stream (exec, file push/pull, export/import) on a channel of its own.
"""

from __future__ import annotations

import click

from sysmgr.cli.commands._common import AppContext, pass_app


@click.command("_rpc", hidden=True)
@pass_app
def rpc(app: AppContext) -> None:
    """Serve this host's API to an admin host on stdin/stdout (JSON lines)."""
    from sysmgr.api.member import serve_rpc  # the member side only

    serve_rpc(app.root or "/var/lib/sysmgr")


@click.command("_stream", hidden=True)
@click.argument("kind")
@click.argument("request")
@click.option("--rpc", "rpc_version", type=int, required=True, help="The admin's RPC version.")
@click.pass_context
def stream(ctx: click.Context, kind: str, request: str, rpc_version: int) -> None:
    """Serve one stream of an admin host on stdin/stdout/stderr."""
    from sysmgr.api.member import serve_stream  # the member side only

    app = ctx.ensure_object(AppContext)
    ctx.exit(serve_stream(app.root or "/var/lib/sysmgr", kind, request, rpc=rpc_version))
