"""Id maps of unprivileged containers: which host ids a container's root and users are.

Like IPAM for addresses, and like LXD: the host range comes from root's entries in
``/etc/subuid`` and ``/etc/subgid`` (``sysmgr init`` adds ``root:1000000:1000000000`` when root
has none, as LXD does); unprivileged containers share the first ``security.idmap.size`` ids of
it (65536 by default), and ``security.idmap.isolated`` ones each get a block of their own above
that, kept for the container's life. ``raw.idmap`` entries map extra host ids in.

The map is recorded in the container's volatile state (``volatile.idmap.base``,
``volatile.idmap.size``) when it starts, and re-used while it stays valid. Root filesystems are
attached through idmapped mounts, so the files on disk keep container ids (0 is root) and the
map can change between starts; where a filesystem cannot idmap, :mod:`.idshift` shifts the
files to the map instead and records it (``volatile.last_state.idmap``).

``SYSMGR_SUBUID`` / ``SYSMGR_SUBGID`` name other files (tests use their own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from sysmgr.engine import idshift
from sysmgr.engine.host import Host
from sysmgr.errors import Conflict, DriverUnavailable, ValidationError
from sysmgr.model.idmaps import parse_raw_idmap
from sysmgr.model.keyrules import parse_bool  # not the key tables: list and info describe maps
from sysmgr.state.db import ContainerRecord
from sysmgr.types import IdMap

DEFAULT_RANGE = (1_000_000, 1_000_000_000)     # LXD's root:1000000:1000000000
DEFAULT_SIZE = 65_536
BASE_KEY, SIZE_KEY = "idmap.base", "idmap.size"   # in the container's volatile state


def subid_files() -> tuple[str, str]:
    return (os.environ.get("SYSMGR_SUBUID", "/etc/subuid"),
            os.environ.get("SYSMGR_SUBGID", "/etc/subgid"))


@dataclass(frozen=True)
class HostRange:
    """The host ids sysmgr may hand out: root's subordinate uids and gids (the overlap of the
    first range of each, so one block serves both)."""

    start: int
    size: int


def _root_ranges(path: str) -> list[tuple[int, int]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in ("root", "0"):
            try:
                out.append((int(parts[1]), int(parts[2])))
            except ValueError:
                continue
    return out


def ensure_subids() -> list[str]:
    """Give root a subordinate id range where it has none (``init``); what was done."""
    done = []
    for path in subid_files():
        if _root_ranges(path):
            continue
        start, size = DEFAULT_RANGE
        with open(path, "a") as f:
            f.write(f"root:{start}:{size}\n")
        done.append(f"added root:{start}:{size} to {path} (ids for unprivileged containers)")
    return done


def host_range() -> HostRange:
    """Root's range of subordinate ids (uids and gids alike)."""
    uid_path, gid_path = subid_files()
    uids, gids = _root_ranges(uid_path), _root_ranges(gid_path)
    if not uids or not gids:
        raise DriverUnavailable(f"root has no subordinate ids in {uid_path} and {gid_path}",
                          hint="run 'sysmgr init' (it adds root:1000000:1000000000), or set "
                               "security.privileged=true")
    (us, un), (gs, gn) = uids[0], gids[0]
    start = max(us, gs)
    end = min(us + un, gs + gn)
    if end - start < DEFAULT_SIZE:
        raise DriverUnavailable(f"root's subordinate uids ({us}:{un}) and gids ({gs}:{gn}) do not "
                          f"share {DEFAULT_SIZE} ids", hint="give root one range for both")
    return HostRange(start, end - start)


def is_privileged(config: Mapping[str, str]) -> bool:
    return parse_bool(config.get("security.privileged") or "false")


def idmap_for(host: Host, rec: ContainerRecord, config: Mapping[str, str]) -> IdMap | None:
    """The map container ``rec`` (expanded ``config``) starts with, recorded in its volatile
    state (None: privileged). Call under the root's lock."""
    if is_privileged(config):
        return None
    size = int(config.get("security.idmap.size") or DEFAULT_SIZE)
    extra = parse_raw_idmap(config.get("raw.idmap") or "")
    rng = host_range()
    if size > rng.size:
        raise ValidationError(f"container {rec.name}: security.idmap.size {size} is more than the "
                          f"{rng.size} subordinate ids root has")
    if not parse_bool(config.get("security.idmap.isolated") or "false"):
        base = rng.start
    else:
        base = _isolated_base(host, rec, size, rng)
    _record(host, rec, base, size)
    return IdMap(host_start=base, size=size, extra=extra)


def _isolated_base(host: Host, rec: ContainerRecord, size: int, rng: HostRange) -> int:
    """A block of ``size`` ids of its own: the recorded one while it still fits, else the
    lowest free one above the shared block."""
    taken = []
    for c in host.store.containers():
        if c.name == rec.name or BASE_KEY not in c.volatile:
            continue
        b, n = int(c.volatile[BASE_KEY]), int(c.volatile.get(SIZE_KEY) or DEFAULT_SIZE)
        if b != rng.start:  # the shared block is everyone's
            taken.append((b, b + n))
    shared_end = rng.start + DEFAULT_SIZE
    mine = rec.volatile.get(BASE_KEY)
    if mine is not None and int(mine) >= shared_end and int(rec.volatile.get(SIZE_KEY) or 0) == size \
            and not _overlaps(int(mine), size, taken) and int(mine) + size <= rng.start + rng.size:
        return int(mine)
    candidate = shared_end
    for b, e in sorted(taken):
        if candidate + size <= b:
            break
        candidate = max(candidate, e)
    if candidate + size > rng.start + rng.size:
        raise Conflict(f"no free block of {size} subordinate ids is left for {rec.name} "
                          f"(root has {rng.start}:{rng.size})")
    return candidate


def _overlaps(base: int, size: int, taken: list[tuple[int, int]]) -> bool:
    return any(base < e and b < base + size for b, e in taken)


def _record(host: Host, rec: ContainerRecord, base: int, size: int) -> None:
    vol = dict(host.store.container(rec.name).volatile)  # fresh: never lose a key
    if vol.get(BASE_KEY) == base and vol.get(SIZE_KEY) == size:
        return
    vol[BASE_KEY], vol[SIZE_KEY] = base, size
    with host.store.transaction():
        host.store.set_volatile(rec.name, vol)


def describe(config: Mapping[str, str], volatile: Mapping[str, object]) -> str:
    """``privileged``, or ``unprivileged (host ids 1000000+65536, idmapped)`` for
    ``list``/``info``: the last word says how the root filesystem was attached at the last
    start (``shifted``: its files carry the host ids on disk, see :mod:`.idshift`)."""
    if is_privileged(config):
        return "privileged"
    base = volatile.get(BASE_KEY)
    if base is None:
        return "unprivileged"
    return (f"unprivileged (host ids {base}+{volatile.get(SIZE_KEY) or DEFAULT_SIZE}, "
            f"{idshift.word(volatile)})")

