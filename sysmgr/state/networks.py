"""Managed network records (table ``networks``, schema migration 3).

A record keeps the network's config as the user gave it, except that ``ipv4.address: auto``
is replaced by the subnet picked at creation (as LXD does), and the host bridge name the
engine chose (``smb<rootid><index>``), so both stay stable for the network's life. Container
nic allocations (MAC, host interface, address) live in each container's volatile state.

Writes happen inside the caller's ``Store.transaction()``.

Layer: state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from sysmgr.errors import AlreadyExists, NotFound
from sysmgr.state.db import Store


@dataclass
class NetworkRecord:
    name: str
    type: str
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    bridge: str = ""                 # host bridge interface name
    created: float = 0.0


def _from_row(r: sqlite3.Row) -> NetworkRecord:
    return NetworkRecord(r["name"], r["type"], json.loads(r["config"]), r["description"],
                         r["bridge"], r["created"])


def all_networks(st: Store) -> list[NetworkRecord]:
    return [_from_row(r) for r in st.conn.execute("SELECT * FROM networks ORDER BY name")]


def get(st: Store, name: str) -> NetworkRecord:
    r = st.conn.execute("SELECT * FROM networks WHERE name=?", (name,)).fetchone()
    if r is None:
        raise NotFound(f"network {name!r} not found", hint="see 'sysmgr network list'")
    return _from_row(r)


def exists(st: Store, name: str) -> bool:
    return st.conn.execute("SELECT 1 FROM networks WHERE name=?", (name,)).fetchone() is not None


def add(st: Store, rec: NetworkRecord) -> None:
    if exists(st, rec.name):
        raise AlreadyExists(f"network {rec.name!r} already exists")
    st.conn.execute(
        "INSERT INTO networks(name, type, config, description, bridge, created) "
        "VALUES (?,?,?,?,?,?)",
        (rec.name, rec.type, json.dumps(rec.config, sort_keys=True), rec.description, rec.bridge,
         rec.created or time.time()))


def update(st: Store, rec: NetworkRecord) -> None:
    st.conn.execute("UPDATE networks SET config=?, description=? WHERE name=?",
                    (json.dumps(rec.config, sort_keys=True), rec.description, rec.name))


def rename(st: Store, name: str, new: str) -> None:
    if exists(st, new):
        raise AlreadyExists(f"network {new!r} already exists")
    st.conn.execute("UPDATE networks SET name=? WHERE name=?", (new, name))


def delete(st: Store, name: str) -> None:
    st.conn.execute("DELETE FROM networks WHERE name=?", (name,))
