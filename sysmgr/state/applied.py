"""What the last apply asked of each object its manifests describe (kubectl's
last-applied-configuration, kept in the store instead of on the object).

The planner compares it with the manifests and the host: a difference the manifests did not
make (they still say what was applied) is *drift*, and the plan line says so.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from sysmgr.state.db import Store


def all_specs(st: Store) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the definition last applied (normalised, as :mod:`sysmgr.engine.drift`
    writes it)."""
    return {(r["kind"], r["name"]): json.loads(r["spec"])
            for r in st.conn.execute("SELECT kind, name, spec FROM applied")}


def put_all(st: Store, specs: Iterable[tuple[str, str, str]]) -> None:
    """Record (kind, name, spec JSON) rows; call inside a transaction."""
    st.conn.executemany("INSERT OR REPLACE INTO applied(kind, name, spec) VALUES (?,?,?)",
                        list(specs))


def delete(st: Store, kind: str, name: str) -> None:
    st.conn.execute("DELETE FROM applied WHERE kind=? AND name=?", (kind, name))
