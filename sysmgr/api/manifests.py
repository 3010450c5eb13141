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
        """The loaded manifests; when some documents have problems, the references of the
        others are checked against the host in the same round, so one run reports every
        problem (each at its key's line, in file order)."""
        from sysmgr.engine import manifests  # YAML and cerberus: only for manifests
        from sysmgr.errors import ValidationError

        try:
            return manifests.load(paths)
        except manifests.ManifestError as e:
            if self._cluster(e.partial) is not None:
                raise  # (a cluster checks references member by member, once it loads)
            try:
                self._client.backend.manifest_validate(e.partial)
            except ValidationError as more:
                raise ValidationError(_merged(e.issues, more.issues)) from None
            except Exception:  # noqa: BLE001 - a draft the checks cannot take: its own issues
                raise e from None
            raise

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


def _merged(first: Sequence[Any], more: Sequence[Any]) -> list[Any]:
    """Both rounds' issues in file order (files as first met), by line; one per key."""
    order = {f: i for i, f in enumerate(dict.fromkeys(i.file for i in first))}
    seen: set[tuple[Any, Any, Any]] = set()
    out = []
    for i in sorted([*first, *more], key=lambda i: (order.get(i.file, len(order)),
                                                    i.file or "", i.line or 0)):
        if (i.file, i.line, i.path) not in seen or i.path is None:
            seen.add((i.file, i.line, i.path))
            out.append(i)
    return out
