"""``sysmgr uninit``: tear a whole host root down (the API's ``client.uninit``), after a
confirmation on a terminal; ``--yes`` for scripts, which are refused without it."""

from __future__ import annotations

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, aborted, pass_app, stdin_is_tty
from sysmgr.errors import Conflict, ValidationError


@click.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed when stdin is not a terminal).")
@pass_app
def uninit(app: AppContext, yes: bool) -> None:
    """Delete everything of this host root, then the root itself.

    In order: containers (with their snapshots), the profiles' devices, custom storage
    volumes, networks, images, storage pools (a loop pool is unmounted and its file and
    loop device released), and the root directory. On a cluster's admin root only the
    admin root's own objects go: members keep theirs (run uninit on each member's root).
    A running controller for this root is refused: stop it first.

    \b
    Examples:
      sysmgr uninit
      sysmgr --root /srv/lab uninit --yes
    """
    from sysmgr.controller.state import holder  # the controller's lock file: no engine

    root = app.root or ""
    pid = holder(root)
    if pid is not None:
        raise Conflict(f"a controller runs for {root} (pid {pid}): it would make things again",
                       hint=f"stop it first (kill {pid})")
    if not yes:
        if not stdin_is_tty():
            raise ValidationError(f"uninit deletes every container, volume, network, image and "
                                  f"pool of {root}, and the root itself",
                                  hint="confirm with --yes when stdin is not a terminal")
        if not click.confirm(f"Delete everything of {root} (containers, volumes, networks, "
                             "images, pools) and the root itself?", default=False):
            aborted("nothing was deleted")
    with render.progress(err=False) as progress:
        app.client.uninit(progress=progress)
