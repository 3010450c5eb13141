"""The runtime's view of a container: its expanded config turned into a
:class:`~sysmgr.drivers.runtime.base.RuntimeSpec` (limits, environment, init, halt signal,
capabilities given back or dropped).

Host facts (CPU count, memory) come from the engine so that the model's conversion stays pure;
they are read at most once per process.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from sysmgr._util import hostinfo, safefs
from sysmgr.drivers.runtime.base import DiskMount, RuntimeSpec
from sysmgr.engine import records
from sysmgr.engine.host import Host
from sysmgr.errors import ValidationError
from sysmgr.model import keys as mkeys
from sysmgr.types import HostFacts, IdMap, Limits


@functools.cache
def host_facts() -> HostFacts:
    return hostinfo.host_facts()


def limits(config: Mapping[str, str]) -> Limits:
    """``limits.*`` of an expanded config in kernel terms, against this host's facts."""
    facts = host_facts()
    return mkeys.limits_from_config(config, host_cpus=facts.cpus, host_mem=facts.memory_bytes)


def init_argv(ex: records.Expanded, meta: Mapping[str, Any], rootfs: str) -> tuple[str, ...]:
    """What the container boots as PID 1: ``boot.init``, else the image's init; a
    ValidationError that says how to give one when its program is not in the root
    filesystem (an OCI image usually has none)."""
    given = ex.config.get("boot.init")
    argv = tuple(mkeys.parse_init(given)) if given else (meta.get("init") or "/sbin/init",)
    if safefs.exists(rootfs, argv[0]):
        return argv
    name = ex.record.name
    entry = (meta.get("properties") or {}).get("oci.entrypoint")
    why = f"{argv[0]} is not in its root filesystem" + (
        " (its boot.init)" if given else " (an OCI image usually has no init)")
    hint = (f"give it one: sysmgr config set {name} boot.init '/path/to/init ARGS' (or a "
            f"profile's boot.init, or launch IMAGE NAME --init /path)")
    if entry:
        hint += f"; the image's OCI entrypoint is: {entry}"
    raise ValidationError(f"container {name!r} has no init: {why}", hint=hint)


def runtime_spec(host: Host, ex: records.Expanded, meta: Mapping[str, Any],
                 idmap: IdMap | None = None, *, idmapped_rootfs: bool = True,
                 disks: tuple[DiskMount, ...] = ()) -> RuntimeSpec:
    """What the runtime needs to start the container ``ex`` (read once by the caller) whose
    image has the metadata ``meta``, in a user namespace with ``idmap`` (None: privileged),
    its root filesystem attached through an idmapped mount or (``idmapped_rootfs`` False)
    as it is, its files shifted on disk, with the bind ``disks`` (:func:`.disks.mounts`)."""
    rec = ex.record
    cap_add, cap_drop = mkeys.capabilities_from_config(ex.config)
    rootfs = host.pool_driver(rec.pool).container_path(rec.name)
    return RuntimeSpec(
        name=rec.name,
        rootfs=rootfs,
        runtime_dir=host.layout.container_dir(rec.name),
        cgroup=records.cgroup_path(host, rec.name),
        init=init_argv(ex, meta, rootfs),
        env={**records.image_environment(rec), **mkeys.env_from_config(ex.config)},
        limits=limits(ex.config),
        halt_signal=records.halt_signal(meta),
        no_new_privs=bool(meta.get("no_new_privs", False)),
        idmap=idmap,
        idmapped_rootfs=idmapped_rootfs,
        cap_add=cap_add,
        cap_drop=cap_drop,
        disks=disks,
    )
