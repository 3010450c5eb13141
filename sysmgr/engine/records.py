"""Container records and what every engine operation derives from them.

Reading a record's expansion (profiles merged), its init record (how to find its running
init), its kernel status, its image's metadata, its cgroup path; the checks shared by the
commands that write records; and the two file-system chores that go with a record (the
container's ``/etc/hostname``, removing its runtime directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from sysmgr.drivers.runtime.base import InitRecord, Status, signal_number
from sysmgr.engine.host import Host
from sysmgr.errors import Issue, NotFound, SysmgrError, ValidationError
from sysmgr.model import expand as mexpand
from sysmgr.state.db import ContainerRecord, ProfileRecord

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.drivers.runtime.base import Runtime
    from sysmgr.types import HostCgroups

# The key tables (sysmgr.model.keys), storage and cgroup-layout helpers are imported by the
# functions that need them: exec, list and stop read records and must not pay for them.

Devices = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True)
class Expanded:
    """A record read once with its expansion: what one command works from."""

    record: ContainerRecord
    config: dict[str, str]
    devices: dict[str, dict[str, str]]


def expanded(host: Host, rec: ContainerRecord, *,
             override: Mapping[str, ProfileRecord] | None = None
             ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The record's config and devices with its profiles merged in (LXD's rules);
    ``override``: profiles to use instead of the recorded ones (a profile being changed)."""
    profs = []
    for p in rec.profiles:
        prof = (override or {}).get(p) or host.store.profile(p)
        profs.append((prof.config, prof.devices))
    return mexpand.expand(profs, rec.config, rec.devices)


def read(host: Host, name: str) -> Expanded:
    """Container ``name``'s record and its expansion (NotFound when there is none)."""
    rec = host.store.container(name)
    cfg, devs = expanded(host, rec)
    return Expanded(rec, cfg, devs)


def init_record(rec: ContainerRecord) -> InitRecord | None:
    """How to find the container's init again (None: not started since it last stopped)."""
    v = rec.volatile
    if "init.pid" not in v:
        return None
    return InitRecord(int(v["init.pid"]), int(v["init.starttime"]), str(v["init.cgroup"]),
                      str(v.get(ENGINE) or ""))


#: volatile key: the runtime engine that started the running init (stop, exec, info use it)
ENGINE = "init.engine"
#: config key choosing the runtime engine a start uses (not live: a restart changes it)
ENGINE_KEY = "runtime.engine"


def status(host: Host, rec: ContainerRecord) -> Status:
    """The container's state as the kernel has it."""
    init = init_record(rec)
    return host.runtime_for(init).status(init)


def engine_name(host: Host, rec: ContainerRecord, config: Mapping[str, str] | None = None) -> str:
    """The engine of container ``rec``: the one that started its init while it has one, else
    its ``runtime.engine`` (``config``: its expanded config, read when not given), else the
    host's default ("")."""
    init = init_record(rec)
    if init is not None:
        return init.engine
    cfg = config if config is not None else expanded(host, rec)[0]
    return str(cfg.get(ENGINE_KEY) or "")


def runtime(host: Host, rec: ContainerRecord, config: Mapping[str, str] | None = None) -> Runtime:
    """The runtime driver of container ``rec`` (:func:`engine_name`), checked to be usable:
    an engine that is not installed is bad input naming the key (exit 2)."""
    name = engine_name(host, rec, config)
    if not name:
        return host.runtime
    rt = host.engine(name)
    why = rt.unavailable_reason()
    if why is not None:
        raise ValidationError(f"{ENGINE_KEY}: {name} cannot run containers here: {why}",
                              hint=f"install {name}, or set {ENGINE_KEY} to native")
    return rt


def cgroup_path(host: Host, name: str) -> str:
    return f"{host.layout.prefix}/{name}"


def host_cgroups(host: Host, root: str = "/sys/fs/cgroup") -> HostCgroups:
    """The host's cgroup layout and where this root's container cgroups live (no subtree
    before ``init`` gave the root its id)."""
    from sysmgr.drivers.runtime import cgroup_layout
    from sysmgr.types import HostCgroups

    found = cgroup_layout.detect_layout(root)
    if not host.layout.exists():
        return HostCgroups(found.kind, found.systemd, None, found.systemd)
    if found.kind != "unified":
        return HostCgroups(found.kind, subtree=f"{root}/<controller>/{host.layout.prefix}")
    if found.systemd:
        return HostCgroups(found.kind, True, cgroup_layout.scope_dir(root, host.layout.prefix), True)
    return HostCgroups(found.kind, subtree=f"{root}/{host.layout.prefix}")


def image_meta(host: Host, rec: ContainerRecord) -> dict[str, Any]:
    """The metadata of the container's image: recorded with the container when it came from
    a backup or another host, else the image's (empty once the image is deleted)."""
    meta = dict(rec.volatile.get("image.meta") or {})
    if not meta:
        try:
            meta = host.store.image(rec.image).metadata
        except NotFound:
            meta = {}
    return meta


#: volatile key: the default environment of the container's image (an OCI image's ``Env``),
#: recorded when the container is made, so it outlives the image
IMAGE_ENVIRONMENT = "image.environment"


def image_environment(rec: ContainerRecord) -> dict[str, str]:
    """The container's image's default environment; its ``environment.*`` keys win over it."""
    return dict(rec.volatile.get(IMAGE_ENVIRONMENT) or {})


def halt_signal(meta: Mapping[str, Any]) -> int:
    """The halt signal of an image with metadata ``meta`` (:func:`image_meta`; busybox init:
    SIGUSR2, systemd: SIGRTMIN+3; SIGPWR else)."""
    return signal_number(meta.get("halt_signal") or "SIGPWR")


def need_restart(host: Host, name: str, reasons: Sequence[str]) -> None:
    """Record ``reasons`` a running container needs a restart for (merged with those
    recorded; cleared by its next start)."""
    if not reasons:
        return
    from sysmgr.model.restart import RESTART_NEEDED

    rec = host.store.container(name)
    vol = dict(rec.volatile)
    vol[RESTART_NEEDED] = sorted(set(vol.get(RESTART_NEEDED) or []) | set(reasons))
    with host.store.transaction():
        host.store.set_volatile(name, vol)


def root_pool(devices: Devices) -> str:
    """The pool of the root disk of an expanded devices map."""
    from sysmgr.model import keys as mkeys

    pool = mkeys.root_disk_pool(devices)
    if pool:
        return pool
    raise ValidationError("no root disk device",
                          hint="add devices.root {type: disk, path: /, pool: default}")


def has_nics(devices: Devices) -> bool:
    return any(d.get("type") == "nic" for d in devices.values())


# -- checks ----------------------------------------------------------------------------------

def name_issues(what: str, name: str, check: Callable[[str], str | None]) -> list[Issue]:
    reason = check(name)
    return [Issue(f"invalid {what} name {name!r}: {reason}", path="name")] if reason else []


def config_issues(config: Mapping[str, Any], devices: Mapping[str, Mapping[str, Any]]) -> list[Issue]:
    from sysmgr.model import keys as mkeys

    issues = [Issue(reason, path=path) for path, reason in mkeys.validate_config(config)]
    issues += [Issue(reason, path=path) for path, reason in mkeys.validate_devices(devices)]
    return issues


def expansion_issues(cfg: Mapping[str, str], devs: Devices, who: str = "") -> list[Issue]:
    """What is wrong with an expanded definition (``who``: prefix naming the container)."""
    prefix = f"container {who}: " if who else ""
    return [Issue(prefix + r, path=p) for p, r in mexpand.validate_expanded(cfg, devs)]


def stringify(config: Mapping[str, Any] | None, devices: Mapping[str, Mapping[str, Any]] | None
              ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Config and devices with every value as the string LXD stores (``true``, ``64MiB``)."""
    from sysmgr.model import keys as mkeys

    cfg = {k: mkeys.value_to_str(v) for k, v in (config or {}).items()}
    devs = {k: {dk: mkeys.value_to_str(dv) for dk, dv in d.items()}
            for k, d in (devices or {}).items()}
    return cfg, devs


# -- files that go with a record ----------------------------------------------------------------

def remove_tree(path: str, ignore_errors: bool = False) -> None:
    """Remove a container's directory tree (never following a link, never into a mount)."""
    from sysmgr.drivers.storage import base as storage_base

    try:
        storage_base.remove_tree(path)
    except (OSError, SysmgrError):
        if not ignore_errors:
            raise


def write_hostname(rootfs: str, name: str) -> None:
    """systemd takes the hostname from /etc/hostname; write it without following symlinks
    out of the container."""
    from sysmgr._util import safefs

    try:
        safefs.write_file(rootfs, "/etc/hostname", (name + "\n").encode(), mode=0o644)
    except NotFound:
        pass  # an image without /etc: nothing to template


def free_name(taken: Callable[[str], bool]) -> str:
    """A container name ``taken`` says is free, in LXD's ``adjective-noun`` style (what a
    launch without a name gets; ``taken`` may ask every member of a cluster)."""
    from sysmgr.model import names as mnames

    return mnames.pick_name(taken)
