"""The inventory: which objects were created from manifests, from which origin (the
manifest paths) and revision (a git commit, when known), and whether they may be pruned.

``apply --prune`` (and the controller's ``--prune``) deletes only objects recorded here
with the origin being applied, that left its manifests, and whose ``prune`` flag is set: an
object made by hand, or from other manifests, is never pruned.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from sysmgr.state.db import Store


@dataclass(frozen=True)
class InventoryRecord:
    kind: str          # Container, Profile, Network, StoragePool, Image
    name: str
    origin: str
    revision: str = ""
    prune: bool = True
    created: float = 0.0


def _from_row(r: sqlite3.Row) -> InventoryRecord:
    return InventoryRecord(r["kind"], r["name"], r["origin"], r["revision"], bool(r["prune"]),
                           r["created"])


def all_records(st: Store) -> list[InventoryRecord]:
    return [_from_row(r) for r in st.conn.execute("SELECT * FROM inventory ORDER BY kind, name")]


def put(st: Store, rec: InventoryRecord) -> None:
    st.conn.execute(
        "INSERT OR REPLACE INTO inventory(kind, name, origin, revision, prune, created) "
        "VALUES (?,?,?,?,?,?)",
        (rec.kind, rec.name, rec.origin, rec.revision, int(rec.prune), rec.created or time.time()))


def set_prune(st: Store, kind: str, name: str, prune: bool) -> None:
    st.conn.execute("UPDATE inventory SET prune=? WHERE kind=? AND name=?",
                    (int(prune), kind, name))


def delete(st: Store, kind: str, name: str) -> None:
    st.conn.execute("DELETE FROM inventory WHERE kind=? AND name=?", (kind, name))
