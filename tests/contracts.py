"""An import-linter contract type of this project's own: no module imports a private name
(``_name``) of another module.

A private name is the owning module's business; a name another module needs is public
(``from sysmgr.engine.host import _rmtree`` hid an engine hub's helpers behind an
underscore). Importing a private *module* of one's own package (``from . import _netlink``,
``sysmgr._util``) is fine: a leading underscore on a module marks it private to its package.
Registered in ``pyproject.toml`` (``contract_types``); ``scripts/test`` runs it with the
repository on the path.
"""

from __future__ import annotations

import re

from importlinter import Contract, ContractCheck, fields, output

_FROM = re.compile(r"^\s*from\s+([\w.]+)\s+import\s+\(?(.+?)\)?\s*$")


def private_names(line: str, modules: set[str]) -> list[str]:
    """The private names a ``from X import a, _b`` line takes from the module ``X``
    (submodules of a package, such as ``from pkg import _mod``, are modules, not names)."""
    m = _FROM.match(line)
    if not m:
        return []
    names = [n.strip().split(" as ")[0].strip() for n in m.group(2).split(",")]
    return [n for n in names if n.startswith("_") and not n.startswith("__")
            and f"{m.group(1)}.{n}" not in modules]


class PrivateNamesContract(Contract):
    """No module in ``source_modules`` imports a private name from another module."""

    type_name = "private_names"
    source_modules = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph, verbose: bool) -> ContractCheck:  # noqa: ANN001 - grimp's graph
        found = []
        every = set(graph.modules)
        roots = [m.name for m in self.source_modules]  # type: ignore[attr-defined]
        modules = {m for r in roots for m in graph.find_descendants(r) | {r}}
        for importer in sorted(modules):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported.split(".")[0] not in {r.split(".")[0] for r in roots}:
                    continue
                for d in graph.get_import_details(importer=importer, imported=imported):
                    for name in private_names(d["line_contents"], every):
                        found.append(f"{importer}:{d['line_number']}: {d['line_contents'].strip()}")
        return ContractCheck(kept=not found, metadata={"found": found}, warnings=[])

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["found"]:
            output.print_error(line)
            output.new_line()
