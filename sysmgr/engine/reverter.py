"""Undo completed steps when a multi-step operation fails (incus's ``Reverter``).

    with Reverter() as r:
        create_volume(); r.add(delete_volume)
        record(); r.add(unrecord)
        r.success()          # keep everything

On an exception before ``success()`` the registered undos run in reverse order; an undo that
fails itself is logged into ``errors`` and does not hide the original exception.
"""

from __future__ import annotations

from typing import Callable


class Reverter:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self._ok = False
        self.errors: list[str] = []
        self.reverted: list[str] = []

    def add(self, fn: Callable[[], object], what: str = "") -> None:
        self._undo.append((what or getattr(fn, "__name__", "step"), fn))

    def success(self) -> None:
        self._ok = True

    def __enter__(self) -> "Reverter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._ok or exc_type is None:
            return  # success() called, or the block ended without an error
        for what, fn in reversed(self._undo):
            try:
                fn()
                self.reverted.append(what)
            except Exception as e:  # keep undoing; the original error is what matters
                self.errors.append(f"{what}: {e}")
