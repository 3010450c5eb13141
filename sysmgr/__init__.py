"""sysmgr: a declarative manager for long-lived, full-OS system containers.

The public surface is :class:`Client` (imported lazily so ``sysmgr --version`` stays fast),
the exception hierarchy in :mod:`sysmgr.errors`, and ``__version__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sysmgr.errors import SysmgrError
from sysmgr.version import __version__
__all__ = ["Client", "SysmgrError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from sysmgr.api.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":
        from sysmgr.api.client import Client  # on first use: `sysmgr --version` needs none of it

        return Client
    raise AttributeError(name)
