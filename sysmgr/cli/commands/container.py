"""``sysmgr launch`` / ``sysmgr create``: make a container from an image (``lxc launch`` /
``lxc init``); without a name it gets a free one in LXD's style (``fond-cricket``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import click

from sysmgr.cli import render
from sysmgr.cli.commands._common import (
    AppContext, confirm, parse_assignments, pass_app, placement_args)
from sysmgr.errors import Issue, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client

DEFAULT_PROFILES = ("default",)


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.argument("image"),
        click.argument("name", required=False),
        click.option("-p", "--profile", "profiles", multiple=True, metavar="PROFILE",
                     help="Profile to apply (repeatable; default: the default profile)."),
        click.option("--no-profiles", is_flag=True, help="Create the container with no profiles."),
        click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                     help="Config key/value to apply (repeatable)."),
        click.option("-s", "--storage", "pool", metavar="POOL", help="Storage pool for the root disk."),
        click.option("-d", "--device", "device_overrides", multiple=True,
                     metavar="NAME,KEY=VALUE[,...]",
                     help="Override a profile device's keys (e.g. -d root,size=10GiB), or add a "
                          "device (with type=...)."),
        click.option("--description", default="", help="Container description."),
        click.option("--init", "init", metavar="'PATH [ARGS]'",
                     help="What to boot as init (PID 1) instead of the image's /sbin/init: "
                          "sets boot.init (an OCI image usually has no init)."),
    ]):
        f = opt(f)
    return f


def profile_devices(app: AppContext, client: "Client") -> Any:
    """``name -> devices`` of a profile where the new container's profiles are read: this
    root, or on a cluster's admin root the member ``--target`` names (the first member of a
    group, or of the cluster: profiles go to every member alike)."""
    if not getattr(client, "clustered", False):
        return lambda p: client.profiles.get(p).devices
    target = app.target
    members = client.cluster.members_of(target) if target else \
        [s.name for s in client.cluster.specs()]
    backend = client.cluster.backend(members[0])
    return lambda p: backend.profile_get(p).devices


def device_overrides(devices_of: Any, profiles: Sequence[str], items: Sequence[str]
                     ) -> dict[str, dict[str, str]]:
    """LXD's ``-d NAME,KEY=VALUE``: copy device NAME from the last profile that has it and
    change the given keys (a device no profile has is new and needs ``type=``)."""
    devices: dict[str, dict[str, str]] = {}
    for item in items:
        name, _, rest = item.partition(",")
        if not name or not rest:
            raise ValidationError([Issue(f"invalid device override {item!r}: expected "
                                         "NAME,KEY=VALUE[,KEY=VALUE...]", path="--device")])
        changes = parse_assignments(rest.split(","))
        if name not in devices:
            devices[name] = {}
            for p in reversed(list(profiles)):
                devs = devices_of(p)
                if name in devs:
                    devices[name] = dict(devs[name])
                    break
        devices[name].update(changes)
    return devices


def _make(app: AppContext, *, start: bool, image: str, name: str | None, profiles: tuple[str, ...],
          no_profiles: bool, config: tuple[str, ...], pool: str | None,
          device_overrides_: tuple[str, ...], description: str, init: str | None) -> None:
    if no_profiles and profiles:
        raise click.UsageError("--no-profiles cannot be combined with -p/--profile")
    chosen: list[str] | None = [] if no_profiles else (list(profiles) if profiles else None)
    cfg = parse_assignments(config)
    if init is not None:
        if "boot.init" in cfg:
            raise click.UsageError("--init and -c boot.init=... say the same: give one")
        cfg["boot.init"] = init
    progress = render.progress(err=False, indent="  ")  # stdout, as the lines around it
    placing = placement_args(app, progress=progress)
    client = app.client
    devices = device_overrides(profile_devices(app, client),
                               DEFAULT_PROFILES if chosen is None else chosen,
                               device_overrides_) if device_overrides_ else None
    name = name or client.containers.free_name()
    if not placing:  # (a cluster checks on the member it picks)
        client.containers.check(name, image, profiles=chosen, config=cfg, devices=devices,
                                pool=pool)
    click.echo(f"Creating {name}")
    with progress:  # a cluster may first copy the image to the member it picks
        c = client.containers.create(name, image, profiles=chosen, config=cfg,
                                     devices=devices, pool=pool, description=description,
                                     start=start, **placing)
    location = getattr(c, "location", None)
    if location:
        click.echo(f"Placed {name} on {location}")
    confirm("Container", name, "started" if start else "created")


@click.command()
@_options
@pass_app
def launch(app: AppContext, image: str, name: str | None, profiles: tuple[str, ...], no_profiles: bool,
           config: tuple[str, ...], pool: str | None, device_overrides: tuple[str, ...],
           description: str, init: str | None) -> None:
    """Create a container from IMAGE and start it (without NAME: a free name is picked).

    \b
    Examples:
      sysmgr launch busybox c1
      sysmgr launch busybox                (named like fond-cricket)
      sysmgr launch debian/12 web -p default -p web -c limits.memory=512MiB
      sysmgr launch alpine-oci a1 --init '/sbin/tini -- /bin/sh'   (an OCI image: no init)
    """
    _make(app, start=True, image=image, name=name, profiles=profiles, no_profiles=no_profiles,
          config=config, pool=pool, device_overrides_=device_overrides, description=description,
          init=init)


@click.command()
@_options
@pass_app
def create(app: AppContext, image: str, name: str | None, profiles: tuple[str, ...], no_profiles: bool,
           config: tuple[str, ...], pool: str | None, device_overrides: tuple[str, ...],
           description: str, init: str | None) -> None:
    """Create a container from IMAGE without starting it (lxc init; without NAME: a free
    name is picked)."""
    _make(app, start=False, image=image, name=name, profiles=profiles, no_profiles=no_profiles,
          config=config, pool=pool, device_overrides_=device_overrides, description=description,
          init=init)
