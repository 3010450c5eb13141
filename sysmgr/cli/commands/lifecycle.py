"""Container lifecycle verbs: ``start``, ``stop``, ``restart``, ``freeze``, ``unfreeze``,
``delete``. Each takes several names, tries them all (like ``lxc``) and reports every failure
in one error; each success prints its one-line confirmation (``Container c1 started``).
``start`` and ``stop`` are hot verbs: their bodies are in :mod:`sysmgr.cli.verbs`. ``start``,
``stop`` and ``delete`` hand all their names to one API call (``start_many`` ...), which shares
the kernel work between them (one pass over the networks, one netlink socket, the stops'
signals all sent before any is waited for)."""

from __future__ import annotations

from typing import Any, Callable

import click

from sysmgr.cli import verbs
from sysmgr.cli.commands._common import AppContext, confirm, for_each, pass_app


def _targets(app: AppContext, names: tuple[str, ...], all_: bool,
             running: bool | None = None) -> list[str]:
    """The named containers, or with ``--all`` every container (only the running ones when
    ``running`` is True, only the stopped ones when False)."""
    if all_ and names:
        raise click.UsageError("give container names or --all, not both")
    if not all_:
        if not names:
            raise click.UsageError("missing container name (or --all)")
        return list(names)
    return [c.name for c in app.client.containers.all()
            if running is None or (c.status != "Stopped") == running]


def _all_option(verb: str) -> Callable[[Any], Any]:
    return click.option("--all", "all_", is_flag=True, help=f"{verb} every container.")


_timeout = click.option("--timeout", type=float, metavar="SECONDS",
                        help="Time to wait for a clean shutdown before killing "
                             "(default: boot.stop.timeout, else 30).")


@click.command()
@click.argument("names", nargs=-1, metavar="NAME...")
@_all_option("Start")
@pass_app
def start(app: AppContext, names: tuple[str, ...], all_: bool) -> None:
    """Start containers (a disk with required=false whose source is missing is left out,
    with a warning)."""
    verbs.start(app, _targets(app, names, all_, running=False))


@click.command()
@click.argument("names", nargs=-1, metavar="NAME...")
@_all_option("Stop")
@click.option("-f", "--force", is_flag=True, help="Kill the container instead of shutting it down.")
@_timeout
@pass_app
def stop(app: AppContext, names: tuple[str, ...], all_: bool, force: bool,
         timeout: float | None) -> None:
    """Stop containers (halt signal, then a kill after the timeout)."""
    verbs.stop(app, _targets(app, names, all_, running=True), force=force, timeout=timeout)


@click.command()
@click.argument("names", nargs=-1, metavar="NAME...")
@_all_option("Restart")
@click.option("-f", "--force", is_flag=True, help="Kill the container instead of shutting it down.")
@_timeout
@pass_app
def restart(app: AppContext, names: tuple[str, ...], all_: bool, force: bool,
            timeout: float | None) -> None:
    """Restart running containers (a stopped one is an error, as in LXD: start it)."""
    containers = app.client.containers

    def one(name: str) -> None:
        containers.get(name).restart(timeout=timeout, force=force)
        confirm("Container", name, "restarted")

    for_each(_targets(app, names, all_, running=True), one)


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_app
def freeze(app: AppContext, names: tuple[str, ...]) -> None:
    """Freeze (pause) running containers."""
    containers = app.client.containers

    def one(name: str) -> None:
        containers.get(name).freeze()
        confirm("Container", name, "frozen")

    for_each(names, one)


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_app
def unfreeze(app: AppContext, names: tuple[str, ...]) -> None:
    """Unfreeze (resume) frozen containers (one that is not frozen is an error, as in LXD)."""
    containers = app.client.containers

    def one(name: str) -> None:
        containers.get(name).unfreeze()
        confirm("Container", name, "unfrozen")

    for_each(names, one)


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("-f", "--force", is_flag=True, help="Stop running containers first (kill).")
@click.option("-i", "--interactive", is_flag=True, help="Ask before deleting each container.")
@pass_app
def delete(app: AppContext, names: tuple[str, ...], force: bool, interactive: bool) -> None:
    """Delete containers and their root filesystems."""
    if interactive:
        names = tuple(n for n in names if click.confirm(f"Remove {n}?", default=False))
    if names:
        verbs.report(app.client.containers.delete_many(names, force=force), lambda o: "deleted")
