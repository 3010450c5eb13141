"""``client.manifests``: validate, plan (diff) and apply manifest files and directories."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sysmgr.api.base import HasBackend

Progress = Callable[[str], None]


class ManifestManager:
    """``validate`` / ``plan`` (diff) / ``apply`` for manifest files and directories."""

    def __init__(self, client: HasBackend) -> None:
        self._client = client

    def validate(self, paths: Sequence[str]) -> Any:
        """Load and check the manifests, including references to existing objects when the
        host root exists. Raises ValidationError listing every problem."""
        return self._client.backend.manifest_validate(paths)

    def plan(self, paths: Sequence[str]) -> Any:
        """The plan that would make the host match the manifests (what ``diff`` prints)."""
        return self._client.backend.manifest_plan(paths)

    def apply(self, plan: Any, *, progress: Progress | None = None) -> Any:
        """Run a plan; refused (PlanStale) when the host changed since it was made, undone
        when an action fails half-way (ApplyError)."""
        return self._client.backend.manifest_apply(plan, progress=progress)
