"""``sysmgr export`` / ``sysmgr import``: backups of containers (``lxc export`` / ``lxc
import``): config, snapshots and root filesystem in one zstd-compressed tarball."""

from __future__ import annotations

import sys
import time

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import AppContext, confirm, echo_err, pass_app, placement_args
from sysmgr.errors import ValidationError


@click.command("export")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--optimized", "--optimized-storage", "optimized", is_flag=True,
              help="Store the pool's own streams (btrfs send): faster and keeps shared blocks, "
                   "but imports only onto a pool of the same kind.")
@click.option("--volumes", is_flag=True,
              help="Also carry the custom storage volumes its disks name (their current "
                   "files; import makes them again).")
@click.option("--instance-only", is_flag=True, help="Leave the snapshots out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@pass_app
def export(app: AppContext, name: str, file: str, optimized: bool, volumes: bool,
           instance_only: bool, quiet: bool) -> None:
    """Back up container NAME (config, snapshots, root filesystem) to FILE ('-': stdout).

    \b
    Examples:
      sysmgr export web1 web1.tar.zst
      sysmgr export web1 web1.btrfs.tar.zst --optimized
      sysmgr export web1 web1.tar.zst --volumes
      sysmgr export web1 - | ssh backup 'cat > web1.tar.zst'
    """
    t0 = time.monotonic()
    to_stdout = file == "-"
    if to_stdout and sys.stdout.isatty():
        raise ValidationError("refusing to write a backup to a terminal",
                              hint="redirect stdout to a file or a pipe")
    target = sys.stdout.buffer if to_stdout else file
    with render.progress(quiet) as progress:
        res = app.client.containers.get(name).export(target, optimized=optimized,
                                                     volumes=volumes, instance_only=instance_only,
                                                     progress=progress)
    kind = f"optimized, {res.stream_format} streams" if res.optimized else "portable tar streams"
    snaps = f", {len(res.snapshots)} snapshot(s)" if res.snapshots else ""
    snaps += f", volumes {', '.join(res.volumes)}" if res.volumes else ""
    size = f"{render.format_size(res.size)}, " if res.size >= 0 else ""
    what = (f"exported to {'stdout' if to_stdout else res.path} ({size}{kind}{snaps}) "
            f"in {time.monotonic() - t0:.1f}s")
    if to_stdout:  # stdout is the backup: the confirmation goes with the progress
        if not quiet:
            echo_err(f"Container {name} {what}")
    else:
        confirm("Container", name, what)


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("name", required=False)
@click.option("-s", "--storage", "pool", metavar="POOL",
              help="Storage pool to import into (default: the original pool's name if it "
                   "exists here, else default).")
@click.option("--allow-devices", is_flag=True,
              help="Keep the device nodes the backup holds (dropped by default, with a "
                   "warning: the container gets its own /dev).")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@pass_app
def import_(app: AppContext, file: str, name: str | None, pool: str | None,
            allow_devices: bool, quiet: bool) -> None:
    """Create a stopped container from the backup FILE ('-': stdin) (as NAME, default its
    old name).

    Device nodes in it are dropped, and a warning names them, unless --allow-devices.
    """
    placing = placement_args(app)
    placing.pop("progress", None)
    src = sys.stdin.buffer if file == "-" else file
    with render.progress(quiet) as progress:
        c = app.client.containers.import_(src, name=name, pool=pool, progress=progress,
                                          allow_devices=allow_devices,
                                          warn=progress.warn, **placing)
    where = f" on {c.location}" if getattr(c, "location", None) else ""
    confirm("Container", c.name, f"imported into storage pool {c.pool}{where}")
