"""``client.manifests``: validate, plan (diff) and apply manifest files and directories.

On a single host the host plans them, as ever. On an admin root with cluster members (or
manifests that declare ``kind: Member`` documents) the plan spans the members
(:mod:`sysmgr.api.cluster_manifests`): the same calls return a cluster plan whose every line
names the member it runs on.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sysmgr.api.base import HasBackend

Progress = Callable[[str], None]


class ManifestManager:
    """``validate`` / ``plan`` (diff) / ``apply`` for manifest files and directories."""

    def __init__(self, client: HasBackend) -> None:
        self._client = client

    def _load(self, paths: Sequence[str]) -> Any:
        from sysmgr.engine import manifests  # YAML and cerberus: only for manifests

        return manifests.load(paths)

    def _cluster(self, manifest: Any) -> Any:
        """The cluster's manifest manager when the plan spans members, else None (a single
        host; or a client of one member, which plans for that member alone)."""
        if not hasattr(self._client, "clustered") or getattr(self._client, "member", None):
            return None
        if not self._client.clustered and not any(s.kind == "Member" for s in manifest.specs):
            from sysmgr.engine import cluster_plan  # a target on a single host: say so

            cluster_plan.check_targets(manifest, [])
            return None
        from sysmgr.api.cluster_manifests import ClusterManifests

        return ClusterManifests(getattr(self._client, "cluster"))

    def validate(self, paths: Sequence[str]) -> Any:
        """Load and check the manifests, including references to existing objects when the
        host root exists. Raises ValidationError listing every problem."""
        manifest = self._load(paths)
        cluster = self._cluster(manifest)
        if cluster is not None:
            return cluster.validate(manifest)
        return self._client.backend.manifest_validate(manifest)

    def plan(self, paths: Sequence[str], *, prune: bool = False, backup: bool = True,
             keep_backups: float | None = None,
             revision: str = "") -> Any:
        """The plan that would make the host (or the cluster) match the manifests (what
        ``diff`` prints). ``prune``: also delete the objects created from these manifests
        (the same paths) that left them — a container stopped and exported to
        ``backups/pruned/`` first unless not ``backup``; refused when the manifests hold no
        object. ``revision`` (a git commit) is recorded with the objects created."""
        manifest = self._load(paths)
        cluster = self._cluster(manifest)
        if cluster is not None:
            return cluster.plan(manifest, prune=prune, backup=backup, keep_backups=keep_backups,
                                revision=revision)
        return self._client.backend.manifest_plan(manifest, prune=prune, backup=backup,
                                                  keep_backups=keep_backups,
                                                  revision=revision)

    def apply(self, plan: Any, *, progress: Progress | None = None) -> Any:
        """Run a plan; refused (PlanStale) when the host changed since it was made, undone
        when an action fails half-way (ApplyError)."""
        if hasattr(plan, "members"):  # a cluster plan
            from sysmgr.api.cluster_manifests import ClusterManifests

            return ClusterManifests(getattr(self._client, "cluster")).apply(plan, progress=progress)
        return self._client.backend.manifest_apply(plan, progress=progress)

    def report(self, plan: Any) -> int:
        """Log the drift ``plan`` found, without applying it (``drift`` events that say
        ``detected``); how many of its actions put drift back. Cluster plans: per member."""
        if hasattr(plan, "members"):
            return sum(self._client.cluster.backend(mp.member).manifest_report(mp.plan)
                       for mp in plan.members)
        return self._client.backend.manifest_report(plan)
