"""The mark a move leaves on the container's record on both members, and how a move that
was cut short is settled.

While a container moves, its record on the source (``role`` ``out``) and, once committed,
its record on the target (``role`` ``in``) carry ``volatile["migration"]``: the move's id,
the other member, its phase and whether the container ran before. A marked container is
neither started nor deleted by anything but its move (:func:`refuse`), so the name never
runs on two members, and an interrupted move keeps both halves until it is settled:

- **moved** (the target committed its copy): the source's copy is deleted, the target's
  mark cleared and the container started there if it ran before;
- **stayed** (the target has no committed copy): the target's copy (if any) is deleted,
  the source's mark cleared and the container started again if it ran before.

Which of the two is decided by the mover (:mod:`sysmgr.api.migration`) from the target's
state; :func:`sysmgr.engine.migration.settling.settle` carries it out on one member.
Both are idempotent.

Layer: engine.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sysmgr.engine.host import Host
from sysmgr.errors import Conflict, DriverError, NotFound
from sysmgr.state.db import ContainerRecord
from sysmgr.state.snapshots import SnapshotStore

KEY = "migration"
OUT, IN = "out", "in"
#: temporary snapshots of a move or copy are called ``mig-<id>-<round>``
TEMP_PREFIX = "mig-"


def temp_name(mid: str, label: str | int) -> str:
    return f"{TEMP_PREFIX}{mid}-{label}"


def marker(rec: ContainerRecord) -> dict[str, Any] | None:
    m = rec.volatile.get(KEY)
    return dict(m) if isinstance(m, dict) else None


def set_marker(host: Host, name: str, value: dict[str, Any] | None) -> None:
    """Write (or with None clear) the mark, keeping every other volatile key."""
    st = host.store
    vol = dict(st.container(name).volatile)  # fresh: never lose a key
    if value is None:
        if KEY not in vol:
            return
        vol.pop(KEY)
    else:
        vol[KEY] = value
    with st.transaction():
        st.set_volatile(name, vol)


def refuse(rec: ContainerRecord, action: str, *, allow: str | None = None) -> None:
    """Raise Conflict when ``rec`` is marked by a move other than ``allow``."""
    m = marker(rec)
    if m is None or (allow is not None and m.get("id") == allow):
        return
    raise refusal(rec.name, m, action)


def refusal(name: str, m: dict[str, Any], action: str) -> Conflict:
    """The error for ``action`` on ``name`` while move ``m`` marks it."""
    where = "to" if m.get("role") == OUT else "from"
    return Conflict(f"cannot {action} {name}: it is being moved {where} member "
                    f"{m.get('peer')} (move {m.get('id')}, {m.get('phase')})",
                    hint=f"run 'sysmgr move {name}' on the admin host again: it finishes "
                         "the move or rolls it back")


def temp_snapshots(host: Host, rec: ContainerRecord, mid: str | None = None) -> list[str]:
    """The pool's temporary snapshots of ``rec`` (of move ``mid`` only, when given) that no
    snapshot record names."""
    drv = host.pool_driver(rec.pool)
    if not drv.info.snapshots:
        return []
    try:
        names = drv.list_snapshots(rec.name)
    except NotFound:
        return []
    recorded = {s.name for s in SnapshotStore(host.store).all(rec.name)}
    prefix = temp_name(mid, "") if mid else TEMP_PREFIX
    return [n for n in names if n.startswith(prefix) and n not in recorded]


def drop_temp_snapshots(host: Host, name: str, mid: str | None = None) -> None:
    """Delete the temporary snapshots of ``name`` (of move ``mid``). One that cannot go yet
    is left: the source endpoint of a move cut short may still be sending it (btrfs refuses
    to delete a snapshot being sent), and that endpoint deletes it when its send ends (its
    intent, should it die first)."""
    if not host.store.has_container(name):
        return
    rec = host.store.container(name)
    drv = host.pool_driver(rec.pool)
    for snap in temp_snapshots(host, rec, mid):
        with contextlib.suppress(NotFound, DriverError):
            drv.delete_snapshot(name, snap)
