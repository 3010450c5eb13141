"""Which host ids a container's files carry on disk, and shifting them where a filesystem
cannot be idmapped (LXD's ``volatile.last_state.idmap``).

An unprivileged container's root filesystem is normally attached through an idmapped mount:
its files keep container ids on disk (0 is root) and nothing is rewritten. Where the
filesystem (or the kernel) cannot do that (ramfs, tmpfs before Linux 6.3, NFS, most FUSE:
asked of the runtime, :meth:`~sysmgr.drivers.runtime.base.Runtime.can_idmap`), the start
shifts the files once, as LXD did before idmapped mounts, and the runtime binds the root
filesystem as it is. The volatile state records it:

- ``last_state.idmap``: the map the files on disk carry (``1000000:65536``, with the
  ``raw.idmap`` entries after ``;``); absent or ``""``: container ids (never shifted, or
  shifted back).
- ``last_state.idmap.shifting``: only while a walk runs, the map the files not yet walked
  still carry. Both are written *before* the walk, so a start killed half-way is seen by the
  next one, which finishes the walk (ids already in the target map are left alone; a map pair
  where that would be ambiguous, possible with ``raw.idmap`` entries, is walked in two legs
  through a parking range no map uses) before anything else.

Each start compares what is on disk with what it needs (the container's map where the
filesystem cannot idmap; container ids where it can, and for a privileged container) and
walks from one to the other directly, so changing ``security.idmap.isolated``, moving to an
idmapping pool or switching ``security.privileged`` on costs one walk, and a second start
none. Ids outside the source map (files the container could only see as ``nobody``) become
the container's ``nobody`` (65534), as an idmapped mount would show them.

The two keys travel with the files: a snapshot keeps them in its record and a restore brings
them back, a copy takes its source's (or its snapshot's), a backup's index has them for the
container and each snapshot and an import records them; whatever they say, the next start
shifts from there. Host paths (``disk`` devices with a ``source``) are never shifted: bound
as they are (their files show as nobody inside), or with ``shift=true`` idmapped, which a
filesystem that cannot idmap refuses (:mod:`sysmgr.engine.disks`).

Layer: engine.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from sysmgr._util import hostinfo, linux
from sysmgr._util import idshift as walker
from sysmgr.engine.host import Host
from sysmgr.errors import DriverError, ValidationError
from sysmgr.model.idmaps import MAX_ID, format_idmap, parse_idmap
from sysmgr.types import IdMap

KEY = "last_state.idmap"
SHIFTING = "last_state.idmap.shifting"
TRAVEL = (KEY, SHIFTING)            # what describes the files on disk: it goes where they go
PARK = 3_000_000_000                # host ids no subordinate range hands out (two-leg walks)
KINDS = ("uid", "gid")


# -- the recorded state ------------------------------------------------------------------------

def disk_state(volatile: Mapping[str, Any]) -> dict[str, str]:
    """The keys of ``volatile`` that describe the files on disk (for a snapshot, a copy, a
    backup's index)."""
    return {k: str(volatile[k] or "") for k in TRAVEL if k in volatile}


def checked_state(state: Any) -> dict[str, str]:
    """:func:`disk_state` of an untrusted mapping (a backup's index).

    Raises:
        ValueError: a value that is not a map.
    """
    if not isinstance(state, Mapping):
        return {}
    out = disk_state(state)
    for value in out.values():
        parse_idmap(value)
    return out


def with_state(volatile: Mapping[str, Any], state: Mapping[str, str]) -> dict[str, Any]:
    """``volatile`` with its disk state replaced by ``state`` (a restored snapshot's)."""
    out = {k: v for k, v in volatile.items() if k not in TRAVEL}
    out.update(disk_state(state))
    return out


def on_disk(volatile: Mapping[str, Any]) -> IdMap | None:
    """The map the container's files carry on disk (None: container ids)."""
    return parse_idmap(str(volatile.get(KEY) or ""))


def word(volatile: Mapping[str, Any]) -> str:
    """``shifted`` or ``idmapped``: how the root filesystem of the last start was attached."""
    return "idmapped" if on_disk(volatile) is None else "shifted"


# -- ids of single files (push, stat) --------------------------------------------------------

def disk_ids(volatile: Mapping[str, Any], uid: int, gid: int) -> tuple[int, int]:
    """The ids a stopped container's file owned by container ids ``uid``/``gid`` carries on
    disk."""
    m = on_disk(volatile)
    if m is None:
        return uid, gid
    hu, hg = m.host_id("uid", uid), m.host_id("gid", gid)
    if hu is None or hg is None:
        raise ValidationError(f"owner {uid}:{gid} is outside the container's id map "
                              f"({format_idmap(m)})", hint="give ids the container maps")
    return hu, hg


def container_ids(volatile: Mapping[str, Any], uid: int, gid: int) -> tuple[int, int]:
    """Inverse of :func:`disk_ids` (ids outside the map are ``nobody``, as inside)."""
    m = on_disk(volatile)
    if m is None:
        return uid, gid
    to_uid, to_gid = (walker.translator(m.mappings(k), walker.identity(m.mappings(k))) for k in KINDS)
    return to_uid(uid), to_gid(gid)


# -- start -------------------------------------------------------------------------------------

def prepare(host: Host, name: str, devices: Mapping[str, Mapping[str, str]], pool: str,
            ids: IdMap | None, *, idmapped_mounts: bool = True) -> bool:
    """Before container ``name`` starts with ``ids`` (None: privileged): make its files carry
    the ids the start needs. Returns whether the runtime attaches the root filesystem through
    an idmapped mount (never when it attaches none: ``idmapped_mounts`` False, crun's and
    runc's case). Call under the root's lock."""
    rootfs = host.pool_driver(pool).container_path(name)
    idmapped = ids is not None and idmapped_mounts and _can_idmap(host, pool, rootfs)
    reshift(host, name, rootfs, None if idmapped else ids)
    return idmapped


def _can_idmap(host: Host, pool: str, path: str) -> bool:
    """:meth:`Runtime.can_idmap` of the pool's filesystem, remembered in the root's state for
    this boot and this mount (its unique id): the runtime's probe makes a user namespace (a
    fork, milliseconds), which every start through the CLI, a process of its own, would pay
    again. Call under the root's lock."""
    try:
        where = f"{hostinfo.boot_id()} {os.stat(path).st_dev} {linux.mount_id(path)}"
    except OSError:
        return host.runtime.can_idmap(path)  # the runtime says why
    key = f"idmap.probe.{pool}"
    known = (host.store.get_meta(key) or "").rpartition(" ")
    if known[0] == where:
        return known[2] == "yes"
    answer = host.runtime.can_idmap(path)
    with host.store.transaction():
        host.store.set_meta(key, f"{where} {'yes' if answer else 'no'}")
    return answer


def reshift(host: Host, name: str, tree: str, want: IdMap | None) -> None:
    """Make the files of ``tree`` (container ``name``'s volume) carry ``want`` (None:
    container ids): finish an interrupted walk, then walk from what the record says is on
    disk. Nothing is walked when they agree."""
    vol = host.store.container(name).volatile
    if SHIFTING in vol:
        _walk(host, name, tree, parse_idmap(str(vol[SHIFTING])), on_disk(vol), resume=True)
    current = on_disk(host.store.container(name).volatile)
    if current == want:
        return
    for src, dst in legs(current, want):
        _walk(host, name, tree, src, dst)


def _lines(m: IdMap | None, other: IdMap | None, kind: str) -> list[tuple[int, int, int]]:
    """``m``'s lines; container ids on disk (None) are the identity over ``other``'s."""
    if m is not None:
        return m.mappings(kind)
    assert other is not None
    return walker.identity(other.mappings(kind))


def _consistent(src: IdMap | None, dst: IdMap | None) -> bool:
    return all(walker.consistent(_lines(src, dst, k), _lines(dst, src, k)) for k in KINDS)


def legs(src: IdMap | None, dst: IdMap | None) -> list[tuple[IdMap | None, IdMap | None]]:
    """The walks from ``src`` to ``dst``: one, or two through :data:`PARK` when a walk
    interrupted half-way could not be told apart from one not started."""
    if _consistent(src, dst):
        return [(src, dst)]
    top = max(ns + n for m in (src, dst) if m is not None for k in KINDS
              for ns, _h, n in m.mappings(k))
    park = IdMap(PARK, top)
    if PARK + top - 1 > MAX_ID or not (_consistent(src, park) and _consistent(park, dst)):
        raise DriverError(f"cannot shift ids from {format_idmap(src) or 'container ids'} to "
                          f"{format_idmap(dst) or 'container ids'}: an interrupted walk could "
                          f"not be finished, and the parking range from {PARK} does not fit")
    return [(src, park), (park, dst)]


def _walk(host: Host, name: str, tree: str, src: IdMap | None, dst: IdMap | None, *,
          resume: bool = False) -> None:
    """One walk from ``src`` to ``dst``, recorded before it starts and after it ends."""
    _set(host, name, {KEY: format_idmap(dst), SHIFTING: format_idmap(src)})
    if src != dst:
        uid, gid = (walker.translator(_lines(src, dst, k), _lines(dst, src, k), resume=resume)
                    for k in KINDS)
        walker.shift_tree(tree, uid, gid)
    _set(host, name, {KEY: format_idmap(dst)}, drop=SHIFTING)


def _set(host: Host, name: str, values: Mapping[str, str], drop: str | None = None) -> None:
    vol = dict(host.store.container(name).volatile)  # fresh: never lose a key
    vol.update(values)
    if drop:
        vol.pop(drop, None)
    if not vol.get(KEY):
        vol.pop(KEY, None)  # container ids: what a record without the key means
    with host.store.transaction():
        host.store.set_volatile(name, vol)
