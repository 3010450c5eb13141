"""The shape every manager and object of the API shares (podman-py's and pylxd's).

A :class:`Model` is a snapshot of one object taken when it was made: its fields never change
behind the caller's back (no hidden I/O on attribute access); ``refresh()`` re-reads it. A
:class:`Manager` lists, gets and creates objects of one kind. Both reach the host only
through the client's :class:`~sysmgr.api.backend.Backend`.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Protocol, TypeVar

from sysmgr.api.backend import Backend

M = TypeVar("M", bound="Model")


class HasBackend(Protocol):
    """What managers and objects need of their client: its backend."""

    backend: Backend


class Model:
    """One object, as it was when read."""

    def __init__(self, client: HasBackend, record: Any) -> None:
        self._client = client
        self._set(record)

    @property
    def _backend(self) -> Backend:
        return self._client.backend

    def _set(self, record: Any) -> None:
        """Copy the fields of a record read from the backend."""
        raise NotImplementedError

    def _fetch(self) -> Any:
        """Read this object's record again."""
        raise NotImplementedError

    def refresh(self: M) -> M:
        """Re-read the object from the host."""
        self._set(self._fetch())
        return self


class Manager(Generic[M]):
    """The objects of one kind on the client's host: ``all()``, ``get(ref)``, ``exists(ref)``
    through the backend's ``<kind>_list``, ``<kind>_get`` and ``<kind>_exists``."""

    model: type[M]
    kind: str          # the backend's name for the kind: "profile", "image", "pool", ...

    def __init__(self, client: HasBackend) -> None:
        self._client = client

    @property
    def _backend(self) -> Backend:
        return self._client.backend

    def _wrap(self, record: Any) -> M:
        return self.model(self._client, record)

    def all(self) -> list[M]:
        """Every object of this kind."""
        return [self._wrap(r) for r in getattr(self._backend, f"{self.kind}_list")()]

    def get(self, ref: str) -> M:
        """One object by name (images: alias, fingerprint or unique prefix); NotFound."""
        return self._wrap(getattr(self._backend, f"{self.kind}_get")(ref))

    def exists(self, ref: str) -> bool:
        return bool(getattr(self._backend, f"{self.kind}_exists")(ref))


def collect_warnings(into: list[str], warn: Callable[[str], None] | None
                     ) -> Callable[[str], None]:
    """A warn callback for the backend: keeps each warning in ``into`` (for the returned
    object's ``warnings``) and passes it on to the caller's ``warn`` as it happens."""
    def collect(msg: str) -> None:
        into.append(msg)
        if warn is not None:
            warn(msg)
    return collect
